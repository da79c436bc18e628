//! `camlime explain` and `camlime compare`: arguments become an [`ExplainConfig`], the core
//! explains on every core with a progress bar, and the results are written as a record (JSON),
//! an overlay, a mask and the weight–feature plot — or, for `compare`, one labelled grid.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use camlime_core::attribution::{
    AttributionConfig, Integration, NoiseKind, NoiseTunnel, Occlusion,
};
use camlime_core::cam::{AblationValue, CamMethod};
use camlime_core::camlime::CamLimeMode;
use camlime_core::engine::EngineChoice;
use camlime_core::explanation::image_sha256;
use camlime_core::lime::{HideColor, MAX_SAMPLES};
use camlime_core::preprocess::DecodeLimits;
use camlime_core::render::{
    GridCell, MaskOptions, cam_overlay, comparison_grid, mask_picture, weight_plot_png,
    weight_plot_svg,
};
use camlime_core::surrogate::FeatureSelection;
use camlime_core::{ExplainConfig, ExplanationRecord, Method, SegmenterConfig, decode_image};
use clap::{Args, Parser};
use image::RgbImage;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::models::{Bundle, DeviceArgs, LoadedModel, read_image};
use crate::parallel::{Threads, available_threads};

/// Parameters shared by `explain`, `compare` and the server's `params` (JSON names are the field
/// names; defaults are the flags' defaults; `features`, `threads` and `max_pixels` are the
/// command line's own).
#[derive(Clone, Debug, Args, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ExplainOptions {
    /// Target layer(s) for CAMs (repeat for multi-layer fusion); default: the model's.
    #[arg(long = "layer", value_name = "NAME")]
    pub layers: Vec<String>,
    /// The CAM that CamLIME reweights with.
    #[arg(long, default_value = "eigencam", value_name = "METHOD")]
    pub cam: String,
    /// Perturbed samples for LIME and CamLIME.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(2..=MAX_SAMPLES as i64))]
    pub samples: u32,
    /// Superpixel algorithm: quickshift, slic, felzenszwalb or grid.
    #[arg(long, default_value = "quickshift")]
    pub segmenter: String,
    /// CamLIME mode: segment (mean pooling), segment-max, grid (the paper's code) or vector.
    #[arg(long, default_value = "segment")]
    pub mode: String,
    /// Seed of segmentation noise, sampling and random CAMs.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Class to explain (index); default: the predicted class.
    #[arg(long)]
    pub target: Option<usize>,
    /// Fill of hidden segments: `mean` or a grey level 0–255.
    #[arg(long, default_value = "0")]
    pub hide_color: String,
    /// LIME kernel width on cosine distances.
    #[arg(long, default_value_t = 0.25)]
    pub kernel_width: f64,
    /// Feature selection: auto, highest_weights, forward_selection, lasso_path or none.
    #[arg(long, default_value = "auto")]
    pub selection: String,
    /// Features the selection keeps.
    #[arg(long, default_value_t = 100_000)]
    pub selection_features: usize,
    /// Classes LIME explains (the top ones).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub top_labels: u16,
    /// Ablation-CAM's ablated value: zero, or pytorch-grad-cam's (for parity).
    #[arg(long, default_value = "zero", value_parser = ["zero", "pytorch-grad-cam"])]
    pub ablation: String,
    /// CAMs: principal component of the weighted activations instead of their sum.
    #[arg(long)]
    pub eigen_smooth: bool,
    /// CAMs: average over horizontal flips × input scales 0.9, 1, 1.1 (6 passes).
    #[arg(long)]
    pub aug_smooth: bool,
    /// CAMs: keep maps at the layers' resolution (the paper's Grad-CAM quirk).
    #[arg(long)]
    pub feature_resolution: bool,
    /// Saliency: signed gradients instead of absolute ones.
    #[arg(long)]
    pub signed: bool,
    /// Integrated Gradients: steps.
    #[arg(long, default_value_t = 50)]
    pub steps: usize,
    /// Integrated Gradients: gausslegendre, riemann_trapezoid, riemann_left, riemann_right or
    /// riemann_middle.
    #[arg(long, default_value = "gausslegendre")]
    pub integration: String,
    /// Integrated Gradients: constant baseline in input-tensor units.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub ig_baseline: f32,
    /// Occlusion: window as channels,height,width.
    #[arg(
        long,
        default_value = "3,16,16",
        value_delimiter = ',',
        value_name = "C,H,W"
    )]
    pub occlusion_window: Vec<usize>,
    /// Occlusion: strides as channels,height,width.
    #[arg(
        long,
        default_value = "3,8,8",
        value_delimiter = ',',
        value_name = "C,H,W"
    )]
    pub occlusion_stride: Vec<usize>,
    /// Occlusion: the occluded value in input-tensor units.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub occlusion_baseline: f32,
    /// Input attributions: average over noisy inputs (smoothgrad, smoothgrad_sq or vargrad).
    #[arg(long, value_name = "KIND")]
    pub noise_tunnel: Option<String>,
    /// Noise tunnel: noisy samples.
    #[arg(long, default_value_t = 5)]
    pub noise_samples: usize,
    /// Noise tunnel: noise standard deviation in input-tensor units.
    #[arg(long, default_value_t = 1.0)]
    pub noise_stdev: f32,
    /// Segments shown in masks.
    #[arg(long, default_value_t = 5)]
    #[serde(skip)]
    pub features: usize,
    /// Threads (default: every core).
    #[arg(long)]
    #[serde(skip)]
    pub threads: Option<usize>,
    /// Largest accepted image, in pixels (decompression-bomb guard).
    #[arg(long, default_value_t = DecodeLimits::default().max_pixels)]
    #[serde(skip)]
    pub max_pixels: u64,
}

impl Default for ExplainOptions {
    /// The command line's defaults, so that the server's defaults cannot drift from them.
    fn default() -> Self {
        #[derive(Parser)]
        struct Defaults {
            #[command(flatten)]
            options: ExplainOptions,
        }
        Defaults::parse_from(["camlime"]).options
    }
}

impl ExplainOptions {
    /// The core configuration for one method.
    pub fn config(&self, method: Method) -> Result<ExplainConfig> {
        let mut config = ExplainConfig {
            method,
            cam: CamMethod::from_name(&self.cam)?,
            layers: self.layers.clone(),
            target: self.target,
            seed: self.seed,
            segmenter: SegmenterConfig::from_name(&self.segmenter)?,
            mode: CamLimeMode::from_name(&self.mode)?,
            ablation: match self.ablation.as_str() {
                "pytorch-grad-cam" => AblationValue::PytorchGradCam,
                "zero" => AblationValue::Zero,
                other => bail!("ablation must be `zero` or `pytorch-grad-cam`, got `{other}`"),
            },
            eigen_smooth: self.eigen_smooth,
            aug_smooth: self.aug_smooth,
            feature_resolution: self.feature_resolution,
            attribution: self.attribution()?,
            ..Default::default()
        };
        config.lime.num_samples = self.samples as usize;
        config.lime.hide_color =
            match self.hide_color.as_str() {
                "mean" => HideColor::Mean,
                level => HideColor::Value(level.parse().with_context(|| {
                    format!("--hide-color must be `mean` or 0–255, got `{level}`")
                })?),
            };
        config.lime.kernel_width = self.kernel_width;
        config.lime.feature_selection = FeatureSelection::from_name(&self.selection)?;
        config.lime.num_features = self.selection_features;
        config.lime.top_labels = usize::from(self.top_labels);
        config.lime.validate()?;
        Ok(config)
    }

    fn attribution(&self) -> Result<AttributionConfig> {
        let triple = |values: &[usize], what: &str| -> Result<[usize; 3]> {
            values
                .try_into()
                .map_err(|_| anyhow::anyhow!("--{what} takes channels,height,width"))
        };
        Ok(AttributionConfig {
            absolute: !self.signed,
            steps: self.steps,
            integration: Integration::from_name(&self.integration)?,
            baseline: self.ig_baseline,
            occlusion: Occlusion {
                window: triple(&self.occlusion_window, "occlusion-window")?,
                strides: triple(&self.occlusion_stride, "occlusion-stride")?,
                baseline: self.occlusion_baseline,
            },
            noise_tunnel: match &self.noise_tunnel {
                None => None,
                Some(kind) => Some(NoiseTunnel {
                    kind: NoiseKind::from_name(kind)?,
                    samples: self.noise_samples,
                    stdev: self.noise_stdev,
                }),
            },
        })
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
    #[arg(long, default_value = "camlime")]
    pub method: String,
    /// Where the record and pictures go.
    #[arg(long, default_value = "camlime-out", value_name = "DIR")]
    pub out: PathBuf,
    /// Print the record as JSON on stdout instead of a summary.
    #[arg(long)]
    pub json: bool,
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
    /// Explanation parameters.
    #[command(flatten)]
    pub options: ExplainOptions,
}

/// Arguments of `compare`.
#[derive(Debug, Args)]
pub struct CompareArgs {
    /// Images: one grid row per image and model.
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<PathBuf>,
    /// Methods, comma-separated: one grid column each.
    #[arg(long, default_value = "lime,camlime,eigencam", value_delimiter = ',')]
    pub methods: Vec<String>,
    /// Models, comma-separated (bundled names or ONNX paths).
    #[arg(long, default_value = "mobilenet_v2", value_delimiter = ',')]
    pub models: Vec<String>,
    /// The grid PNG to write.
    #[arg(long, default_value = "camlime-out/compare.png", value_name = "FILE")]
    pub out: PathBuf,
    /// Explanation parameters.
    #[command(flatten)]
    pub options: ExplainOptions,
}

fn load_image(path: &Path, max_pixels: u64) -> Result<RgbImage> {
    decode_image(&read_image(path)?, &DecodeLimits { max_pixels })
        .with_context(|| format!("{}", path.display()))
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
            let model = bundle
                .load(&args.model)?
                .on_device(args.device, &args.engine)?;
            let config = args.options.config(Method::from_name(&args.method)?)?;
            let image = load_image(&image_path, args.options.max_pixels)?;
            let runtime = args.options.runtime();
            let record = camlime_core::explain(
                &model.classifier,
                &image,
                Some(image_path.display().to_string()),
                &config,
                &runtime,
            );
            runtime.finish();
            (record?, model, image_path, image)
        }
    };
    let base = model.classifier.spec().preprocessing.base_image(&image)?;
    let written = write_outputs(&record, &base, &stem(&image_path), &args.out, &args.options)?;
    if args.json {
        serde_json::to_writer(&mut *out, &record)?;
        writeln!(out)?;
    } else {
        summary(&record, &written, out)?;
    }
    Ok(())
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
    let image = load_image(&image_path, args.options.max_pixels)?;
    let base = model.classifier.spec().preprocessing.base_image(&image)?;
    ensure!(
        image_sha256(&base) == recorded.image.sha256,
        "{} is not the recorded image (its base image's sha256 differs)",
        image_path.display()
    );
    let runtime = args.options.runtime();
    let record = camlime_core::explain(
        &model.classifier,
        &image,
        recorded.image.source.clone(),
        &recorded.config,
        &runtime,
    );
    runtime.finish();
    let record = record?;
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
    options: &ExplainOptions,
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
    if let Some(cam) = &record.cam {
        save(
            format!("{prefix}.overlay.png"),
            &cam_overlay(base, &cam.map, 0.5)?,
        )?;
    }
    if record.segments.is_some() {
        save(
            format!("{prefix}.mask.png"),
            &picture(record, base, &options.mask_options())?,
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
            config.cam.name(),
            record.layers.join("+"),
            serde_json::to_value(config.mode)?["mode"]
                .as_str()
                .unwrap_or("segment")
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
    writeln!(
        out,
        "target: {} {} (p={:.4})",
        record.target.class, record.target.label, record.target.probability
    )?;
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
    let methods = args
        .methods
        .iter()
        .map(|m| Method::from_name(m.trim()))
        .collect::<Result<Vec<_>, _>>()?;
    ensure!(!methods.is_empty(), "--methods lists no method");
    let images = args
        .images
        .iter()
        .map(|p| load_image(p, args.options.max_pixels))
        .collect::<Result<Vec<_>>>()?;
    let runtime = args.options.runtime();
    let mut rows = Vec::new();
    let mut row_labels = Vec::new();
    for model_name in &args.models {
        let model = bundle.load(model_name.trim())?;
        for (path, image) in args.images.iter().zip(&images) {
            let base = model.classifier.spec().preprocessing.base_image(image)?;
            let mut row = Vec::with_capacity(methods.len());
            for &method in &methods {
                let record = camlime_core::explain(
                    &model.classifier,
                    image,
                    Some(path.display().to_string()),
                    &args.options.config(method)?,
                    &runtime,
                )?;
                let caption = match record.main_explanation() {
                    Some(e) => format!("R²={:.2}", e.score),
                    None => format!("p={:.2}", record.target.probability),
                };
                row.push(GridCell {
                    image: picture(&record, &base, &args.options.mask_options())?,
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
