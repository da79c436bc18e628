//! `camlime explain` and `camlime compare`: arguments become an
//! [`ExplainConfig`](camlime_core::ExplainConfig), checked against the model before any work; the
//! core explains on every core with a progress bar, and the results are written as a record
//! (JSON), an overlay, a mask and the weight–feature plot — or, for `compare`, one labelled grid.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use camlime_core::detection::BoundingBox;
use camlime_core::engine::EngineChoice;
use camlime_core::explanation::{IdentityChoice, TaskConfig, TaskRecord, image_sha256};
use camlime_core::preprocess::{DecodeOptions, ExifOrientation, ResizeMode};
use camlime_core::region::{Region, RegionChoice, RegionShape};
use camlime_core::render::{
    GridCell, MaskOptions, PREDICTED, REGION, cam_overlay, comparison_grid, draw_detections,
    mask_picture, outline_region, tint_region, weight_plot_png, weight_plot_svg,
};
use camlime_core::spec::Task;
use camlime_core::{ExplanationRecord, Method, decode_image};
use clap::Args;
use image::RgbImage;

use crate::flags::{ConfigFlags, defaults};
use crate::models::{Bundle, DeviceArgs, LoadedModel, read_image};
use crate::parallel::{Threads, available_threads};

/// What the command line adds to the settings: threads, the decode limit, the mask's size.
#[derive(Clone, Debug, Args)]
pub struct RunFlags {
    /// Segments shown in masks.
    #[arg(long, default_value_t = MaskOptions::default().num_features)]
    pub features: usize,
    /// Threads (default: every core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Largest accepted image, in pixels (decompression-bomb guard).
    #[arg(long, default_value_t = DecodeOptions::default().max_pixels)]
    pub max_pixels: u64,
    /// EXIF orientation: `ignore` (as Pillow and torchvision) or `apply` (as
    /// `ImageOps.exif_transpose`).
    #[arg(long, default_value_t = ExifOrientation::Ignore)]
    pub exif_orientation: ExifOrientation,
}

impl RunFlags {
    /// How images are decoded.
    pub fn decoding(&self) -> DecodeOptions {
        DecodeOptions {
            max_pixels: self.max_pixels,
            exif_orientation: self.exif_orientation,
        }
    }

    fn runtime(&self) -> Threads {
        Threads::new(self.threads.unwrap_or_else(available_threads)).with_progress_bar()
    }

    fn mask_options(&self) -> MaskOptions {
        MaskOptions {
            num_features: self.features,
            ..Default::default()
        }
    }
}

/// Arguments of `explain`.
#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// The image to explain (or, with --replay, an override for the recorded one).
    #[arg(value_name = "IMAGE", required_unless_present = "replay")]
    pub image: Option<PathBuf>,
    /// A bundled model name or a path to an ONNX classifier.
    #[arg(long, default_value = "mobilenet_v2")]
    pub model: String,
    /// camlime, lime, a CAM method (gradcam, hirescam, gradcam++, xgradcam, layercam,
    /// eigengradcam, gradcamelementwise, fullgrad, eigencam, scorecam, ablationcam, random) or an
    /// input attribution (saliency, inputxgradient, integratedgradients, guidedbackprop,
    /// guidedgradcam, occlusion).
    #[arg(long, default_value_t = defaults().method)]
    pub method: Method,
    /// Where the record and pictures go.
    #[arg(long, default_value = "camlime-out", value_name = "DIR")]
    pub out: PathBuf,
    /// Print the record as JSON on stdout instead of a summary.
    #[arg(long)]
    pub json: bool,
    /// A face model explains this face of the photo (best first; default the best), cropped
    /// around the box its face detector finds.
    #[arg(long, value_name = "K")]
    pub face: Option<usize>,
    /// A face embedding explains the cosine similarity of the face to this photo's face (its
    /// best face, cropped as the explained one is).
    #[arg(long, value_name = "FACE")]
    pub reference: Option<PathBuf>,
    /// A segmenter explains its logits summed over this box of the photo (pixels) instead of
    /// over its predicted mask.
    #[arg(
        long,
        value_name = "X0,Y0,X1,Y1",
        value_delimiter = ',',
        conflicts_with = "region_mask"
    )]
    pub region: Option<Vec<f32>>,
    /// A segmenter explains its logits summed over the non-black pixels of this picture (a mask
    /// of the photo, any size) instead of over its predicted mask.
    #[arg(long, value_name = "MASK")]
    pub region_mask: Option<PathBuf>,
    /// Re-run a recorded explanation and check that it reproduces exactly.
    #[arg(long, value_name = "RECORD.json")]
    pub replay: Option<PathBuf>,
    /// What runs the model: `auto` (the lowered CNN plan when it covers the model, else
    /// tract), `cnn` or `tract`.
    #[arg(long, default_value = "auto")]
    pub engine: EngineChoice,
    /// Where forward passes run, and the GPU's arithmetic.
    #[command(flatten)]
    pub device: DeviceArgs,
    /// Explanation settings.
    #[command(flatten)]
    pub config: ConfigFlags,
    /// Threads, decode limit, mask size.
    #[command(flatten)]
    pub run: RunFlags,
}

/// Arguments of `compare`.
#[derive(Debug, Args)]
pub struct CompareArgs {
    /// Images: one grid row per image and model.
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<PathBuf>,
    /// Methods, comma-separated: one grid column each.
    #[arg(long, default_value = "lime,camlime,eigencam", value_delimiter = ',')]
    pub methods: Vec<Method>,
    /// Models, comma-separated (bundled names or ONNX paths).
    #[arg(long, default_value = "mobilenet_v2", value_delimiter = ',')]
    pub models: Vec<String>,
    /// The grid PNG to write.
    #[arg(long, default_value = "camlime-out/compare.png", value_name = "FILE")]
    pub out: PathBuf,
    /// Explanation settings.
    #[command(flatten)]
    pub config: ConfigFlags,
    /// Threads, decode limit, mask size.
    #[command(flatten)]
    pub run: RunFlags,
}

fn load_image(path: &Path, options: &DecodeOptions) -> Result<RgbImage> {
    decode_image(&read_image(path)?, options).with_context(|| format!("{}", path.display()))
}

fn stem(path: &Path) -> String {
    path.file_stem()
        .map_or_else(|| "image".into(), |s| s.to_string_lossy().into_owned())
}

/// Run `explain`.
pub fn explain(bundle: &Bundle, args: &ExplainArgs, out: &mut dyn Write) -> Result<()> {
    let (record, model, image_path, image) = match &args.replay {
        Some(path) => replay(bundle, args, path)?,
        None => {
            let image_path = args.image.clone().context("an image is required")?;
            let mut config = args.config.config(args.method)?;
            let image = load_image(&image_path, &args.run.decoding())?;
            let model = bundle
                .load(&args.model)?
                .on_device(args.device, &args.engine)?;
            if let Some(path) = &args.reference {
                config.task = reference_task(bundle, &model, path, &args.run.decoding())?;
            }
            if let Some(region) = photo_region(args, &image, &model)? {
                config.task = TaskConfig::Segmentation(RegionChoice {
                    region: Some(region),
                });
            }
            let (image, face) = match bundle.face_of(&model, &image, args.face)? {
                Some((crop, info)) => (crop, Some(info)),
                None => (image, None),
            };
            let runtime = args.run.runtime();
            let record = camlime_core::explain(
                &model.classifier,
                &image,
                Some(image_path.display().to_string()),
                &config,
                &runtime,
            );
            runtime.finish();
            let mut record = record?;
            record.image.face = face;
            (record, model, image_path, image)
        }
    };
    let base = model.classifier.spec().preprocessing.base_image(&image)?;
    let written = write_outputs(&record, &base, &stem(&image_path), &args.out, &args.run)?;
    if args.json {
        serde_json::to_writer(&mut *out, &record)?;
        writeln!(out)?;
    } else {
        summary(&record, &written, out)?;
    }
    Ok(())
}

/// The identity task of `--reference`: the embedding of that photo's best face.
fn reference_task(
    bundle: &Bundle,
    model: &LoadedModel,
    path: &Path,
    decoding: &DecodeOptions,
) -> Result<TaskConfig> {
    ensure!(
        model.classifier.spec().task == Task::Embedding,
        "--reference compares faces; `{}` is {} model, not a face embedding",
        model.name,
        model.classifier.spec().task.with_article()
    );
    let photo = load_image(path, decoding)?;
    let face = match bundle
        .face_of(model, &photo, None)
        .with_context(|| format!("the reference {}", path.display()))?
    {
        Some((face, _)) => face,
        None => photo,
    };
    let base = model.classifier.spec().preprocessing.base_image(&face)?;
    Ok(TaskConfig::Identity(IdentityChoice {
        reference: camlime_core::task::embed(&model.classifier, &base)?,
    }))
}

/// The region `--region` or `--region-mask` give in photo pixels, on the model's input (the
/// preprocessing must resize the whole photo to the input, as a segmenter's does).
fn photo_region(
    args: &ExplainArgs,
    image: &RgbImage,
    model: &LoadedModel,
) -> Result<Option<RegionShape>> {
    if args.region.is_none() && args.region_mask.is_none() {
        return Ok(None);
    }
    let spec = model.classifier.spec();
    ensure!(
        matches!(spec.task, Task::Segmentation(_)),
        "--region and --region-mask choose a region of a segmenter's mask; `{}` is {} model",
        model.name,
        spec.task.with_article()
    );
    ensure!(
        matches!(args.config.task.as_deref(), None | Some("segmentation")),
        "--region and --region-mask need --task segmentation"
    );
    let preprocessing = &spec.preprocessing;
    ensure!(
        preprocessing.resize == ResizeMode::Exact(preprocessing.crop),
        "--region and --region-mask are photo pixels: they need a model whose preprocessing \
         resizes the whole photo to its input without cropping"
    );
    let photo = [image.height(), image.width()];
    if let Some(values) = &args.region {
        let [x0, y0, x1, y1] = values[..] else {
            bail!("--region takes x0,y0,x1,y1");
        };
        let bbox = BoundingBox { x0, y0, x1, y1 }.scaled(photo, preprocessing.crop);
        let shape = RegionShape::Box(bbox);
        RegionChoice {
            region: Some(shape.clone()),
        }
        .validate()?;
        return Ok(Some(shape));
    }
    let Some(path) = &args.region_mask else {
        return Ok(None);
    };
    let mask = load_image(path, &args.run.decoding())?;
    let inside: Vec<bool> = mask.pixels().map(|p| p.0 != [0, 0, 0]).collect();
    Ok(Some(RegionShape::Mask(Region::from_mask(
        [mask.height() as usize, mask.width() as usize],
        &inside,
    ))))
}

fn replay(
    bundle: &Bundle,
    args: &ExplainArgs,
    path: &Path,
) -> Result<(ExplanationRecord, LoadedModel, PathBuf, RgbImage)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let recorded: ExplanationRecord = serde_json::from_str(&text)
        .with_context(|| format!("{} is not an explanation record", path.display()))?;
    let model_name = if args.model != "mobilenet_v2" {
        args.model.clone()
    } else {
        recorded.model.name.clone()
    };
    let model = bundle
        .load(&model_name)?
        .on_device(args.device, &args.engine)?;
    ensure!(
        model.classifier.sha256() == recorded.model.sha256,
        "model `{model_name}` differs from the recorded one (sha256 {} vs {})",
        model.classifier.sha256(),
        recorded.model.sha256
    );
    let image_path = match (&args.image, &recorded.image.source) {
        (Some(p), _) => p.clone(),
        (None, Some(source)) => PathBuf::from(source),
        (None, None) => bail!("the record names no image: pass one"),
    };
    let mut image = load_image(&image_path, &args.run.decoding())?;
    if let Some(face) = &recorded.image.face {
        let c = face.crop;
        ensure!(
            c.x0 < c.x1 && c.y0 < c.y1 && c.x1 <= image.width() && c.y1 <= image.height(),
            "the record's face crop ({}, {})–({}, {}) does not fit {}",
            c.x0,
            c.y0,
            c.x1,
            c.y1,
            image_path.display()
        );
        let (width, height) = c.size();
        image = image::imageops::crop_imm(&image, c.x0, c.y0, width, height).to_image();
    }
    let base = model.classifier.spec().preprocessing.base_image(&image)?;
    ensure!(
        image_sha256(&base) == recorded.image.sha256,
        "{} is not the recorded image (its base image's sha256 differs)",
        image_path.display()
    );
    let runtime = args.run.runtime();
    let record = camlime_core::explain(
        &model.classifier,
        &image,
        recorded.image.source.clone(),
        &recorded.config,
        &runtime,
    );
    runtime.finish();
    let mut record = record?;
    record.image.face = recorded.image.face.clone();
    ensure!(
        record.same_results(&recorded),
        "replay of {} did not reproduce the recorded results",
        path.display()
    );
    eprintln!("camlime: replay reproduced {} exactly", path.display());
    Ok((record, model, image_path, image))
}

/// The picture of an explanation: the CAM overlay for CAM methods, the mask for LIME/CamLIME.
fn picture(record: &ExplanationRecord, base: &RgbImage, options: &MaskOptions) -> Result<RgbImage> {
    match (&record.segments, record.main_explanation(), &record.cam) {
        (Some(segments), Some(explanation), _) => Ok(mask_picture(
            base,
            &segments.segmentation()?,
            explanation,
            options,
        )?),
        (_, _, Some(cam)) => Ok(cam_overlay(base, &cam.map, 0.5)?),
        _ => bail!("the record holds neither a mask nor a CAM"),
    }
}

fn write_outputs(
    record: &ExplanationRecord,
    base: &RgbImage,
    stem: &str,
    dir: &Path,
    run: &RunFlags,
) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let prefix = format!("{stem}.{}", record.config.method.name());
    let mut written = Vec::new();
    let json_path = dir.join(format!("{prefix}.json"));
    std::fs::write(&json_path, serde_json::to_vec(record)?)
        .with_context(|| format!("cannot write {}", json_path.display()))?;
    written.push(json_path);
    let mut save = |name: String, image: &RgbImage| -> Result<()> {
        let path = dir.join(name);
        image
            .save(&path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        written.push(path);
        Ok(())
    };
    // A detection's pictures show the explained box.
    // A segmentation's pictures outline the explained region.
    let boxed = |image: RgbImage| -> Result<RgbImage> {
        Ok(match &record.task {
            Some(TaskRecord::Detection { target, .. }) => draw_detections(
                &image,
                std::slice::from_ref(&target.detection),
                [base.height(), base.width()],
                Some(&target.detection),
            ),
            Some(TaskRecord::Segmentation(target)) => {
                outline_region(&image, &target.region, REGION, 2)?
            }
            Some(TaskRecord::Identity(_)) | None => image,
        })
    };
    if let Some(TaskRecord::Segmentation(target)) = &record.task {
        let tinted = tint_region(base, &target.predicted, PREDICTED, 0.45)?;
        save(
            format!("{prefix}.segmentation.png"),
            &outline_region(&tinted, &target.region, REGION, 2)?,
        )?;
    }
    if let Some(TaskRecord::Detection { detections, target }) = &record.task {
        save(
            format!("{prefix}.detections.png"),
            &draw_detections(
                base,
                detections,
                [base.height(), base.width()],
                Some(&target.detection),
            ),
        )?;
    }
    if let Some(cam) = &record.cam {
        save(
            format!("{prefix}.overlay.png"),
            &boxed(cam_overlay(base, &cam.map, 0.5)?)?,
        )?;
    }
    if record.segments.is_some() {
        save(
            format!("{prefix}.mask.png"),
            &boxed(picture(record, base, &run.mask_options())?)?,
        )?;
        let curves = record.weight_curves();
        let title = format!("{} — {}", stem, record.target.label);
        save(
            format!("{prefix}.weights.png"),
            &weight_plot_png(&curves, &title, 900, 480)?,
        )?;
        let svg_path = dir.join(format!("{prefix}.weights.svg"));
        std::fs::write(&svg_path, weight_plot_svg(&curves, &title)?)
            .with_context(|| format!("cannot write {}", svg_path.display()))?;
        written.push(svg_path);
    }
    Ok(written)
}

fn summary(record: &ExplanationRecord, written: &[PathBuf], out: &mut dyn Write) -> Result<()> {
    let config = &record.config;
    let method = match config.method {
        Method::CamLime => format!(
            "camlime ({} @ {}, {} mode)",
            config.cam.method,
            record.layers.join("+"),
            config.mode
        ),
        Method::Cam(m) => format!("{} @ {}", m.name(), record.layers.join("+")),
        Method::Lime => "lime".into(),
    };
    writeln!(
        out,
        "{} — {} — {method} — engine {}",
        record.image.source.as_deref().unwrap_or("image"),
        record.model.name,
        record.engine
    )?;
    if let Some(face) = &record.image.face {
        let c = face.crop;
        writeln!(
            out,
            "face {} of the {} {} found (score {:.4}), cropped at ({}, {})–({}, {}) of the photo",
            face.face, face.found, face.detector, face.detection.score, c.x0, c.y0, c.x1, c.y1
        )?;
    }
    match &record.task {
        None => writeln!(
            out,
            "target: {} {} (p={:.4})",
            record.target.class, record.target.label, record.target.probability
        )?,
        Some(TaskRecord::Detection { detections, target }) => writeln!(
            out,
            "target: box {} {} (score {:.4}; in each perturbed image, the best box of its class \
             with IoU ≥ 0.5, 0 when gone)",
            detections
                .iter()
                .position(|d| d == &target.detection)
                .map_or_else(|| "?".into(), |k| k.to_string()),
            target.detection.label,
            target.detection.score
        )?,
        Some(TaskRecord::Identity(target)) => writeln!(
            out,
            "target: cosine similarity of the face's {}-d embedding to the reference face's = \
             {:.4} (1: the same direction); positive weights raise the similarity",
            target.embedding.len(),
            target.similarity
        )?,
        Some(TaskRecord::Segmentation(target)) => {
            let [h, w] = target.predicted.size;
            writeln!(
                out,
                "target: {} = {:.2} (the region is {} of the {}×{} map; the predicted mask {} \
                 pixels, {:.1}%); positive weights raise the logits there",
                record.target.label,
                target.score,
                if target.region == target.predicted {
                    "the predicted mask"
                } else {
                    "the given region"
                },
                h,
                w,
                target.predicted.area(),
                100.0 * target.predicted.area() as f64 / (h * w) as f64
            )?;
        }
    }
    if let Some(cam) = &record.cam
        && let Some(stability) = cam.stability.as_ref().filter(|s| s.is_unstable())
    {
        writeln!(
            out,
            "warning: the {} map is {}; another correct implementation may show a visibly different map",
            cam.method,
            stability.describe()
        )?;
    }
    if let (Some(segments), Some(main)) = (&record.segments, record.main_explanation()) {
        writeln!(
            out,
            "{} segments ({}), {} samples; R² {:.4}, local prediction {:.4}, intercept {:.4}",
            segments.count,
            segments.algorithm,
            config.lime.num_samples,
            main.score,
            main.local_pred,
            main.intercept
        )?;
        let top: Vec<String> = main
            .ranked
            .iter()
            .take(5)
            .map(|(segment, weight)| format!("{segment} ({weight:+.4})"))
            .collect();
        writeln!(out, "top segments: {}", top.join(", "))?;
    }
    let t = &record.timings;
    writeln!(
        out,
        "timings: segmentation {:.0} ms, samples {:.0} ms, cam {:.0} ms, surrogate {:.0} ms, total {:.0} ms",
        t.segmentation_ms, t.sampling_ms, t.cam_ms, t.surrogate_ms, t.total_ms
    )?;
    for path in written {
        writeln!(out, "wrote {}", path.display())?;
    }
    Ok(())
}

/// Run `compare`.
pub fn compare(bundle: &Bundle, args: &CompareArgs, out: &mut dyn Write) -> Result<()> {
    let methods = &args.methods;
    ensure!(!methods.is_empty(), "--methods lists no method");
    let configs = methods
        .iter()
        .map(|&method| args.config.config(method))
        .collect::<Result<Vec<_>>>()?;
    let images = args
        .images
        .iter()
        .map(|p| load_image(p, &args.run.decoding()))
        .collect::<Result<Vec<_>>>()?;
    let runtime = args.run.runtime();
    let mut rows = Vec::new();
    let mut row_labels = Vec::new();
    for model_name in &args.models {
        let model = bundle.load(model_name.trim())?;
        for config in &configs {
            camlime_core::explanation::validate(&model.classifier, config)?;
        }
        for (path, image) in args.images.iter().zip(&images) {
            let base = model.classifier.spec().preprocessing.base_image(image)?;
            let mut row = Vec::with_capacity(methods.len());
            for config in &configs {
                let record = camlime_core::explain(
                    &model.classifier,
                    image,
                    Some(path.display().to_string()),
                    config,
                    &runtime,
                )?;
                let caption = match record.main_explanation() {
                    Some(e) => format!("R²={:.2}", e.score),
                    None => format!("p={:.2}", record.target.probability),
                };
                row.push(GridCell {
                    image: picture(&record, &base, &args.run.mask_options())?,
                    caption,
                });
            }
            row_labels.push(if args.models.len() > 1 {
                format!("{} / {}", stem(path), model.name)
            } else {
                stem(path)
            });
            rows.push(row);
        }
    }
    runtime.finish();
    let columns: Vec<String> = methods.iter().map(|m| m.name().to_owned()).collect();
    let grid = comparison_grid(&rows, &row_labels, &columns)?;
    if let Some(parent) = args.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    grid.save(&args.out)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    writeln!(
        out,
        "wrote {} ({} rows × {} methods)",
        args.out.display(),
        rows.len(),
        methods.len()
    )?;
    Ok(())
}
