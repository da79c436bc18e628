//! The subcommands: arguments (clap) and what each one does.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use camlime_core::detection::{BoundingBox, Detection};
use camlime_core::model::Task;
use camlime_core::preprocess::{DecodeOptions, ExifOrientation};
use camlime_core::render::draw_detections;
use camlime_core::{Layer, Prediction, decode_image, task};
use clap::{Args, Parser, Subcommand};
use serde::Serialize;

use crate::bench::{BenchArgs, bench};
use crate::eval::{EvalArgs, eval};
use crate::explain::{CompareArgs, ExplainArgs, compare, explain};
use crate::models::{Bundle, models_dir, read_image};
use crate::serve::{Role, ServeArgs, add_token, serve};

use crate::parallel::{Threads, available_threads};

/// Explain what convolutional image classifiers look at (CamLIME, LIME, the CAM family).
#[derive(Debug, Parser)]
#[command(name = "camlime", version, about)]
pub struct Cli {
    /// Folder of the bundled models (default: `models/` of the installation or source tree).
    #[arg(long, global = true, value_name = "DIR")]
    pub models_dir: Option<PathBuf>,
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Classify images: the top classes with their probabilities.
    Predict(PredictArgs),
    /// Detect objects with a detector: boxes, classes and scores (and the boxes drawn).
    Detect(DetectArgs),
    /// List the bundled models.
    Models(JsonFlag),
    /// List the layers of a model that explanations can target.
    Layers(LayersArgs),
    /// Explain one image: CamLIME (default), LIME or a CAM; writes a record and pictures.
    Explain(Box<ExplainArgs>),
    /// Explain images with several methods (and models) into one labelled grid.
    Compare(Box<CompareArgs>),
    /// Score explanation methods with evaluation metrics (Quantus's) over a folder of images.
    Eval(Box<EvalArgs>),
    /// Time CamLIME end to end with a per-stage breakdown (and Score-CAM).
    Bench(BenchArgs),
    /// Serve the JSON API (/v1), asynchronous jobs and the web app over HTTP.
    Serve(Box<ServeArgs>),
    /// Manage the server's bearer tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Show what work can run on: the CPU's threads and any usable NVIDIA GPU (CUDA libraries,
    /// driver, GPUs).
    Devices(DevicesArgs),
}

/// `token`'s actions.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a token: print it (once) and append its name, role and hash to the tokens file.
    New(NewTokenArgs),
}

/// Arguments of `token new`.
#[derive(Debug, Args)]
pub struct NewTokenArgs {
    /// Its name, which owns the jobs it submits (1–64 letters, digits or `_.@-`).
    #[arg(long)]
    pub name: String,
    /// What it may do: `user` (its own jobs) or `admin` (every job, /metrics).
    #[arg(long, value_enum, default_value_t = Role::User)]
    pub role: Role,
    /// The tokens file `camlime serve --tokens` reads (created readable by its owner only).
    #[arg(long, default_value = "camlime-tokens.txt", value_name = "FILE")]
    pub file: PathBuf,
}

/// `devices`' options.
#[derive(Debug, Args)]
pub struct DevicesArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Check the GPU: every bundled model's logits against the CPU engine in strict FP32 and
    /// TF32, then its throughput at each of `--batches`.
    #[arg(long)]
    pub check: bool,
    /// Batch sizes the check times.
    #[arg(long, value_delimiter = ',', default_value = "1,256,1024")]
    pub batches: Vec<usize>,
    /// Timed runs per batch size (the median is reported).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub runs: u32,
}

/// `--json`.
#[derive(Debug, Args)]
pub struct JsonFlag {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `predict`.
#[derive(Debug, Args)]
pub struct PredictArgs {
    /// Image files (PNG, JPEG, WebP, BMP, GIF, TIFF).
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<PathBuf>,
    /// A bundled model name or a path to an ONNX classifier.
    #[arg(long, default_value = "mobilenet_v2")]
    pub model: String,
    /// How many classes to show per image.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub top: u16,
    /// A face model predicts on this face of each photo (best first; default the best).
    #[arg(long, value_name = "K")]
    pub face: Option<usize>,
    /// How images are decoded.
    #[command(flatten)]
    pub decode: DecodeFlags,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// How `predict` and `detect` decode images.
#[derive(Debug, Args)]
pub struct DecodeFlags {
    /// Largest accepted image, in pixels (decompression-bomb guard).
    #[arg(long, default_value_t = DecodeOptions::default().max_pixels)]
    pub max_pixels: u64,
    /// EXIF orientation: `ignore` (as Pillow and torchvision) or `apply` (as
    /// `ImageOps.exif_transpose`).
    #[arg(long, default_value_t = ExifOrientation::Ignore)]
    pub exif_orientation: ExifOrientation,
}

impl DecodeFlags {
    /// The decoder's options.
    pub fn options(&self) -> DecodeOptions {
        DecodeOptions {
            max_pixels: self.max_pixels,
            exif_orientation: self.exif_orientation,
        }
    }
}

/// Arguments of `detect`.
#[derive(Debug, Args)]
pub struct DetectArgs {
    /// Image files (PNG, JPEG, WebP, BMP, GIF, TIFF).
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<PathBuf>,
    /// A bundled detector's name.
    #[arg(long, default_value = "nanodet")]
    pub model: String,
    /// Show detections scoring above this (default: the model's threshold).
    #[arg(long, value_name = "SCORE")]
    pub score_threshold: Option<f32>,
    /// Draw each image's boxes into `DIR/<stem>.detections.png`.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// How images are decoded.
    #[command(flatten)]
    pub decode: DecodeFlags,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `layers`.
#[derive(Debug, Args)]
pub struct LayersArgs {
    /// A bundled model name or a path to an ONNX classifier.
    #[arg(long, default_value = "mobilenet_v2")]
    pub model: String,
    /// List every 4-D tensor, not only the named layers.
    #[arg(long)]
    pub all: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Run a parsed command line, writing results to `out`.
pub fn run(cli: Cli, out: &mut dyn Write) -> Result<()> {
    // Tokens need no models.
    if let Command::Token(TokenCommand::New(args)) = &cli.command {
        let token = add_token(&args.file, &args.name, args.role)?;
        writeln!(out, "{token}")?;
        eprintln!(
            "token `{}` ({}) added to {}: its hash is kept there; the token is shown only now",
            args.name,
            args.role,
            args.file.display()
        );
        return Ok(());
    }
    let bundle = Bundle::open(&models_dir(cli.models_dir.as_deref())?)?;
    match cli.command {
        Command::Predict(args) => predict(&bundle, &args, out),
        Command::Detect(args) => detect(&bundle, &args, out),
        Command::Models(flag) => models(&bundle, flag.json, out),
        Command::Layers(args) => layers(&bundle, &args, out),
        Command::Explain(args) => explain(&bundle, &args, out),
        Command::Compare(args) => compare(&bundle, &args, out),
        Command::Eval(args) => eval(&bundle, &args, out),
        Command::Bench(args) => bench(&bundle, &args, out),
        Command::Serve(args) => serve(&bundle, &args, out),
        Command::Devices(args) if args.check => {
            if args.batches.iter().any(|&b| b == 0 || b > 4096) {
                anyhow::bail!("--batches must lie in 1..=4096");
            }
            crate::cuda::check::check(&bundle, &args.batches, args.runs as usize, out)
        }
        Command::Devices(args) => devices(&bundle, args.json, out),
        Command::Token(_) => unreachable!("answered before the bundle is opened"),
    }
}

/// `devices`.
fn devices(bundle: &Bundle, json: bool, out: &mut dyn Write) -> Result<()> {
    let threads = available_threads();
    let cuda = crate::cuda::probe();
    // Which engine runs each bundled model's forward pass, and why any engine before it declined.
    let mut engines = Vec::new();
    for entry in &bundle.manifest.models {
        let report = bundle.load(&entry.name)?.classifier.engine_report().clone();
        engines.push((entry.name.clone(), report));
    }
    if json {
        let models: serde_json::Map<_, _> = engines
            .iter()
            .map(|(name, report)| (name.clone(), serde_json::to_value(report)))
            .map(|(name, value)| value.map(|v| (name, v)))
            .collect::<Result<_, _>>()?;
        let report = serde_json::json!({
            "cpu": {"threads": threads, "engines": ["cnn", "tract"]},
            "models": models,
            "cuda": cuda,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
        return Ok(());
    }
    writeln!(
        out,
        "cpu: {threads} threads; engines: cnn (the lowered CNN plan), tract (any ONNX graph, \
         gradients)"
    )?;
    for (name, report) in &engines {
        writeln!(out, "  {name:<20} forward on {report}")?;
    }
    match &cuda.problem {
        None => writeln!(
            out,
            "cuda: driver {}",
            cuda.driver_version.as_deref().unwrap_or("?")
        )?,
        Some(problem) => writeln!(out, "cuda: not usable: {problem}")?,
    }
    for gpu in &cuda.gpus {
        writeln!(
            out,
            "  gpu {}: {}, {:.1} GiB, compute capability {}.{}",
            gpu.ordinal,
            gpu.name,
            gpu.memory_bytes as f64 / f64::from(1u32 << 30),
            gpu.compute_capability.0,
            gpu.compute_capability.1
        )?;
    }
    for library in &cuda.libraries {
        let found = if library.present { "found" } else { "missing" };
        writeln!(out, "  {:<9} {found:<8} {}", library.name, library.title)?;
    }
    Ok(())
}

#[derive(Serialize)]
struct ImagePredictions<'a> {
    image: String,
    model: &'a str,
    predictions: Vec<Prediction>,
}

fn predict(bundle: &Bundle, args: &PredictArgs, out: &mut dyn Write) -> Result<()> {
    let limits = args.decode.options();
    let mut inputs = Vec::with_capacity(args.images.len());
    for path in &args.images {
        let image = decode_image(&read_image(path)?, &limits)
            .with_context(|| format!("{}", path.display()))?;
        inputs.push(image);
    }
    let model = bundle.load(&args.model)?;
    match model.classifier.spec().task {
        Task::Detection(_) => bail!(
            "`{}` is a detector: list its boxes with `camlime detect`, explain one with \
             `camlime explain --model {} --box K`",
            model.name,
            model.name
        ),
        Task::Segmentation(_) => bail!(
            "`{}` is a segmenter: explain a region of its mask with `camlime explain --model {} \
             --task segmentation [--region X0,Y0,X1,Y1 | --region-mask MASK.png]`",
            model.name,
            model.name
        ),
        Task::Embedding => bail!(
            "`{}` is a face embedding: explain its similarity to a reference face with \
             `camlime explain --model {} --reference FACE.jpg`",
            model.name,
            model.name
        ),
        Task::Classification => {}
    }
    // A face model sees each photo's face.
    for (input, path) in inputs.iter_mut().zip(&args.images) {
        if let Some((face, _)) = bundle
            .face_of(&model, input, args.face)
            .with_context(|| format!("{}", path.display()))?
        {
            *input = face;
        }
    }
    let preprocessing = &model.classifier.spec().preprocessing;
    let base_images = inputs
        .iter()
        .map(|i| preprocessing.base_image(i))
        .collect::<Result<Vec<_>, _>>()?;
    let tensor = preprocessing.tensor(&base_images)?;
    let threads = Threads::new(available_threads());
    let logits = model
        .classifier
        .forward_with(&threads, tensor.view(), &[])?
        .logits;
    let predictions = logits
        .rows()
        .into_iter()
        .map(|row| model.classifier.top_k(&row.to_vec(), usize::from(args.top)))
        .collect::<Result<Vec<_>, _>>()?;
    let results: Vec<_> = args
        .images
        .iter()
        .zip(predictions)
        .map(|(path, predictions)| ImagePredictions {
            image: path.display().to_string(),
            model: &model.name,
            predictions,
        })
        .collect();
    if args.json {
        serde_json::to_writer_pretty(&mut *out, &results)?;
        writeln!(out)?;
        return Ok(());
    }
    for result in results {
        writeln!(out, "{} ({})", result.image, result.model)?;
        for (rank, p) in result.predictions.iter().enumerate() {
            writeln!(
                out,
                "  {:>2}. {:>4} {:<40} {:.4}",
                rank + 1,
                p.class,
                p.label,
                p.probability
            )?;
        }
    }
    Ok(())
}

/// One detection in the JSON of `detect`: the core's, plus its box in the photo's pixels.
#[derive(Serialize)]
struct DetectionOutput<'a> {
    #[serde(flatten)]
    detection: &'a Detection,
    /// The box in the original photo's pixels.
    image_box: BoundingBox,
}

#[derive(Serialize)]
struct ImageDetections<'a> {
    image: String,
    model: &'a str,
    /// The photo's `[height, width]`.
    image_size: [u32; 2],
    /// The model input's `[height, width]` (where `box` lies).
    input_size: [u32; 2],
    detections: Vec<DetectionOutput<'a>>,
}

fn detect(bundle: &Bundle, args: &DetectArgs, out: &mut dyn Write) -> Result<()> {
    let options = args.decode.options();
    let model = bundle.load(&args.model)?;
    let classifier = &model.classifier;
    let [h, w] = classifier.input_size().map(|d| d as u32);
    for path in &args.images {
        let image = decode_image(&read_image(path)?, &options)
            .with_context(|| format!("{}", path.display()))?;
        let base = classifier.spec().preprocessing.base_image(&image)?;
        let detections = task::detect(classifier, &base, args.score_threshold)?;
        let image_size = [image.height(), image.width()];
        if let Some(dir) = &args.out {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            let stem = path
                .file_stem()
                .map_or_else(|| "image".into(), |s| s.to_string_lossy().into_owned());
            let file = dir.join(format!("{stem}.detections.png"));
            draw_detections(&image, &detections, [h, w], None)
                .save(&file)
                .with_context(|| format!("cannot write {}", file.display()))?;
        }
        let result = ImageDetections {
            image: path.display().to_string(),
            model: &model.name,
            image_size,
            input_size: [h, w],
            detections: detections
                .iter()
                .map(|d| DetectionOutput {
                    detection: d,
                    image_box: d.bbox.scaled([h, w], image_size),
                })
                .collect(),
        };
        if args.json {
            serde_json::to_writer(&mut *out, &result)?;
            writeln!(out)?;
            continue;
        }
        writeln!(
            out,
            "{} ({}): {} detection{}",
            result.image,
            result.model,
            detections.len(),
            if detections.len() == 1 { "" } else { "s" }
        )?;
        for (i, d) in result.detections.iter().enumerate() {
            let b = d.image_box;
            writeln!(
                out,
                "  box {i:>2}: {:>3} {:<16} {:.4}  [{:.0}, {:.0}, {:.0}, {:.0}]",
                d.detection.class, d.detection.label, d.detection.score, b.x0, b.y0, b.x1, b.y1
            )?;
        }
    }
    Ok(())
}

fn models(bundle: &Bundle, json: bool, out: &mut dyn Write) -> Result<()> {
    if json {
        serde_json::to_writer_pretty(&mut *out, &bundle.manifest.models)?;
        writeln!(out)?;
        return Ok(());
    }
    for m in &bundle.manifest.models {
        writeln!(out, "{:<20} {}", m.name, m.title)?;
        writeln!(
            out,
            "{:<20} input {}×{}, default layer {}, {} named layers; licence: {}",
            "",
            m.input.size[0],
            m.input.size[1],
            m.default_layers.join(", "),
            m.layers.len(),
            m.licence
        )?;
    }
    Ok(())
}

#[derive(Serialize)]
struct LayerListing<'a> {
    model: &'a str,
    default_layers: &'a [String],
    layers: &'a [Layer],
}

fn layers(bundle: &Bundle, args: &LayersArgs, out: &mut dyn Write) -> Result<()> {
    let model = bundle.load(&args.model)?;
    let classifier = &model.classifier;
    let layers = if args.all {
        classifier.tensor_layers()
    } else {
        classifier.layers()
    };
    if args.json {
        let listing = LayerListing {
            model: &model.name,
            default_layers: classifier.default_layers(),
            layers,
        };
        serde_json::to_writer_pretty(&mut *out, &listing)?;
        writeln!(out)?;
        return Ok(());
    }
    for layer in layers {
        let mark = if classifier.default_layers().contains(&layer.name) {
            "  (default)"
        } else {
            ""
        };
        let [c, h, w] = layer.shape;
        writeln!(out, "{:<32} {c}×{h}×{w}{mark}", layer.name)?;
    }
    Ok(())
}
