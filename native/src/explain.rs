//! `camlime explain` and `camlime compare`: arguments become an [`ExplainConfig`], the core
//! explains on every core with a progress bar, and the results are written as a record (JSON),
//! an overlay, a mask and the weight–feature plot — or, for `compare`, one labelled grid.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use camlime_core::attribution::{
    AttributionConfig, Integration, NoiseKind, NoiseTunnel, Occlusion,
};
use camlime_core::cam::{AblationValue, CamConfig, CamMethod};
use camlime_core::camlime::CamLimeMode;
use camlime_core::engine::EngineChoice;
use camlime_core::explanation::image_sha256;
use camlime_core::lime::{HideColor, LimeConfig};
use camlime_core::preprocess::DecodeLimits;
use camlime_core::render::{
    GridCell, MaskOptions, cam_overlay, comparison_grid, mask_picture, weight_plot_png,
    weight_plot_svg,
};
use camlime_core::surrogate::FeatureSelection;
use camlime_core::{ExplainConfig, ExplanationRecord, Method, SegmenterConfig, decode_image};
use clap::{Args, CommandFactory, Parser};
use image::RgbImage;

use crate::models::{Bundle, DeviceArgs, LoadedModel, read_image};
use crate::parallel::{Threads, available_threads};

/// The explanation's settings as flags, shared by `explain`, `compare`, `eval` and the server's
/// multipart form fields: each flag is typed by the core's own parser and its default is
/// `ExplainConfig::default()`'s, so a new setting is added to the schema and, at most, here.
#[derive(Clone, Debug, Args)]
pub struct ConfigFlags {
    /// Target layer(s) for CAMs (repeat for multi-layer fusion); default: the model's.
    #[arg(long = "layer", value_name = "NAME")]
    pub layers: Vec<String>,
    /// The CAM that CamLIME reweights with.
    #[arg(long, default_value_t = defaults().cam.method, value_name = "METHOD")]
    pub cam: CamMethod,
    /// Perturbed samples for LIME and CamLIME.
    #[arg(long, default_value_t = defaults().lime.num_samples)]
    pub samples: usize,
    /// Superpixels: quickshift, slic, felzenszwalb or grid, with changed parameters as
    /// `name:key=value,…` (e.g. `slic:n_segments=50`).
    #[arg(long, default_value_t = defaults().segmenter)]
    pub segmenter: SegmenterConfig,
    /// CamLIME mode: segment (mean pooling), segment-max, grid (the paper's code) or vector.
    #[arg(long, default_value_t = defaults().mode)]
    pub mode: CamLimeMode,
    /// Seed of segmentation noise, sampling, random CAMs and attribution noise.
    #[arg(long, default_value_t = defaults().seed)]
    pub seed: u64,
    /// Class to explain (index); default: the predicted class.
    #[arg(long)]
    pub target: Option<usize>,
    /// Images per classification chunk (the unit of progress and cancellation).
    #[arg(long, default_value_t = defaults().chunk)]
    pub chunk: usize,
    /// Fill of hidden segments: `mean` or a grey level 0–255.
    #[arg(long, default_value_t = defaults().lime.hide_color)]
    pub hide_color: HideColor,
    /// LIME kernel width on cosine distances.
    #[arg(long, default_value_t = defaults().lime.kernel_width)]
    pub kernel_width: f64,
    /// Feature selection: auto, highest_weights, forward_selection, lasso_path or none.
    #[arg(long, default_value_t = defaults().lime.feature_selection)]
    pub selection: FeatureSelection,
    /// Features the selection keeps.
    #[arg(long, default_value_t = defaults().lime.num_features)]
    pub selection_features: usize,
    /// Classes LIME explains (the top ones).
    #[arg(long, default_value_t = defaults().lime.top_labels)]
    pub top_labels: usize,
    /// Ablation-CAM's ablated value: zero, or pytorch-grad-cam's (for parity).
    #[arg(long, default_value_t = defaults().cam.ablation)]
    pub ablation: AblationValue,
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
    #[arg(long, default_value_t = defaults().cam.attribution.steps)]
    pub steps: usize,
    /// Integrated Gradients: gausslegendre, riemann_trapezoid, riemann_left, riemann_right or
    /// riemann_middle.
    #[arg(long, default_value_t = defaults().cam.attribution.integration)]
    pub integration: Integration,
    /// Integrated Gradients: constant baseline in input-tensor units.
    #[arg(long, default_value_t = defaults().cam.attribution.baseline, allow_negative_numbers = true)]
    pub ig_baseline: f32,
    /// Occlusion: window as channels,height,width.
    #[arg(
        long,
        default_values_t = defaults().cam.attribution.occlusion.window,
        value_delimiter = ',',
        value_name = "C,H,W"
    )]
    pub occlusion_window: Vec<usize>,
    /// Occlusion: strides as channels,height,width.
    #[arg(
        long,
        default_values_t = defaults().cam.attribution.occlusion.strides,
        value_delimiter = ',',
        value_name = "C,H,W"
    )]
    pub occlusion_stride: Vec<usize>,
    /// Occlusion: the occluded value in input-tensor units.
    #[arg(
        long,
        default_value_t = defaults().cam.attribution.occlusion.baseline,
        allow_negative_numbers = true
    )]
    pub occlusion_baseline: f32,
    /// Input attributions: average over noisy inputs (smoothgrad, smoothgrad_sq or vargrad).
    #[arg(long, value_name = "KIND")]
    pub noise_tunnel: Option<NoiseKind>,
    /// Noise tunnel: noisy samples.
    #[arg(long, default_value_t = NoiseTunnel::default().samples)]
    pub noise_samples: usize,
    /// Noise tunnel: noise standard deviation in input-tensor units.
    #[arg(long, default_value_t = NoiseTunnel::default().stdev)]
    pub noise_stdev: f32,
}

/// [`ConfigFlags`] alone, parsed from flags without a program name.
#[derive(Parser)]
#[command(no_binary_name = true, disable_help_flag = true)]
struct Flags {
    #[command(flatten)]
    flags: ConfigFlags,
}

fn defaults() -> ExplainConfig {
    ExplainConfig::default()
}

impl Default for ConfigFlags {
    /// No flags given: every default is `ExplainConfig::default()`'s.
    fn default() -> Self {
        Flags::parse_from(std::iter::empty::<String>()).flags
    }
}

impl ConfigFlags {
    /// Parse flags given as `(name, value)` pairs without the leading `--` (the server's
    /// multipart fields: `samples=500`, `layer=features.18`, `eigen_smooth=true`); flags that
    /// take no value accept `true` or `false`.
    pub fn parse_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self> {
        let mut argv = Vec::new();
        for (name, value) in pairs {
            let flag = format!("--{}", name.replace('_', "-"));
            let switch = Flags::command()
                .get_arguments()
                .find(|a| a.get_long() == Some(&flag[2..]))
                .is_some_and(|a| !a.get_action().takes_values());
            match (switch, value) {
                (true, "true") => argv.push(flag),
                (true, "false") => {}
                (true, other) => bail!("`{name}` is true or false, got `{other}`"),
                (false, _) => argv.extend([flag, value.to_owned()]),
            }
        }
        let parsed = Flags::try_parse_from(argv).map_err(|e| {
            let message = e.render().to_string();
            anyhow::anyhow!(
                "{}",
                message
                    .lines()
                    .next()
                    .unwrap_or("invalid field")
                    .trim_start_matches("error: ")
            )
        })?;
        Ok(parsed.flags)
    }

    /// The configuration of one method, checked without a model ([`ExplainConfig::check`]).
    pub fn config(&self, method: Method) -> Result<ExplainConfig> {
        let triple = |values: &[usize], what: &str| -> Result<[usize; 3]> {
            values
                .try_into()
                .map_err(|_| anyhow::anyhow!("--{what} takes channels,height,width"))
        };
        let config = ExplainConfig {
            method,
            target: self.target,
            seed: self.seed,
            chunk: self.chunk,
            cam: CamConfig {
                method: self.cam,
                layers: self.layers.clone(),
                ablation: self.ablation,
                eigen_smooth: self.eigen_smooth,
                aug_smooth: self.aug_smooth,
                feature_resolution: self.feature_resolution,
                attribution: AttributionConfig {
                    absolute: !self.signed,
                    steps: self.steps,
                    integration: self.integration,
                    baseline: self.ig_baseline,
                    occlusion: Occlusion {
                        window: triple(&self.occlusion_window, "occlusion-window")?,
                        strides: triple(&self.occlusion_stride, "occlusion-stride")?,
                        baseline: self.occlusion_baseline,
                    },
                    noise_tunnel: self.noise_tunnel.map(|kind| NoiseTunnel {
                        kind,
                        samples: self.noise_samples,
                        stdev: self.noise_stdev,
                    }),
                },
            },
            segmenter: self.segmenter.clone(),
            lime: LimeConfig {
                num_samples: self.samples,
                hide_color: self.hide_color,
                kernel_width: self.kernel_width,
                feature_selection: self.selection,
                num_features: self.selection_features,
                top_labels: self.top_labels,
            },
            mode: self.mode,
        };
        config.check()?;
        Ok(config)
    }
}

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
    #[arg(long, default_value_t = DecodeLimits::default().max_pixels)]
    pub max_pixels: u64,
}

impl RunFlags {
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
            let config = args.config.config(args.method)?;
            let image = load_image(&image_path, args.run.max_pixels)?;
            let model = bundle
                .load(&args.model)?
                .on_device(args.device, &args.engine)?;
            camlime_core::explanation::validate(&model.classifier, &config)?;
            let runtime = args.run.runtime();
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
    let written = write_outputs(&record, &base, &stem(&image_path), &args.out, &args.run)?;
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
    let image = load_image(&image_path, args.run.max_pixels)?;
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
    if let Some(cam) = &record.cam {
        save(
            format!("{prefix}.overlay.png"),
            &cam_overlay(base, &cam.map, 0.5)?,
        )?;
    }
    if record.segments.is_some() {
        save(
            format!("{prefix}.mask.png"),
            &picture(record, base, &run.mask_options())?,
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
    let methods = &args.methods;
    ensure!(!methods.is_empty(), "--methods lists no method");
    let configs = methods
        .iter()
        .map(|&method| args.config.config(method))
        .collect::<Result<Vec<_>>>()?;
    let images = args
        .images
        .iter()
        .map(|p| load_image(p, args.run.max_pixels))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::{Cli, Command};
    use crate::serve::input::{ExplainRequest, WithImage};
    use serde_json::Value;

    /// `shared/tests/fixtures/config/every_setting.json`: every setting off its default.
    fn every_setting() -> (ExplainConfig, Vec<String>) {
        let fixture: Value = serde_json::from_str(include_str!(
            "../../shared/tests/fixtures/config/every_setting.json"
        ))
        .unwrap();
        let config = serde_json::from_value(fixture["config"].clone()).unwrap();
        let flags = serde_json::from_value(fixture["flags"].clone()).unwrap();
        (config, flags)
    }

    /// Every leaf of a JSON value by path (`cam.attribution.steps`, `cam.layers.0`).
    fn leaves(value: &Value, path: String, out: &mut Vec<(String, Value)>) {
        let join = |key: &str| {
            if path.is_empty() {
                key.to_owned()
            } else {
                format!("{path}.{key}")
            }
        };
        match value {
            Value::Object(fields) => fields.iter().for_each(|(k, v)| leaves(v, join(k), out)),
            Value::Array(items) if !items.is_empty() => items
                .iter()
                .enumerate()
                .for_each(|(i, v)| leaves(v, join(&i.to_string()), out)),
            other => out.push((path, other.clone())),
        }
    }

    /// The form fields of command-line flags: names without `--`, switches as `true`.
    fn fields(flags: &[String]) -> Vec<(String, String)> {
        let mut fields = Vec::new();
        let mut iter = flags.iter().peekable();
        while let Some(flag) = iter.next() {
            let name = flag.trim_start_matches("--").replace('-', "_");
            match iter.peek() {
                Some(value) if !value.starts_with("--") => {
                    fields.push((name, iter.next().unwrap().clone()));
                }
                _ => fields.push((name, "true".to_owned())),
            }
        }
        fields
    }

    fn cli_config(flags: &[String]) -> ExplainConfig {
        let argv = ["camlime", "explain", "image.png"]
            .into_iter()
            .map(str::to_owned)
            .chain(flags.iter().cloned());
        let Command::Explain(args) = Cli::try_parse_from(argv).unwrap().command else {
            panic!("not an explain command");
        };
        args.config.config(args.method).unwrap()
    }

    #[test]
    fn the_fixture_moves_every_setting_off_its_default() {
        let (config, _) = every_setting();
        let (mut custom, mut default) = (Vec::new(), Vec::new());
        leaves(
            &serde_json::to_value(&config).unwrap(),
            String::new(),
            &mut custom,
        );
        leaves(
            &serde_json::to_value(ExplainConfig::default()).unwrap(),
            String::new(),
            &mut default,
        );
        // The one tag shared by both: `mode` is `segment` in each, with another pooling.
        let same: Vec<_> = default
            .iter()
            .filter(|(path, value)| {
                path != "mode.mode" && custom.iter().any(|(p, v)| p == path && v == value)
            })
            .collect();
        assert!(
            same.is_empty(),
            "settings at their default in the fixture: {same:?}"
        );
        assert!(custom.len() >= 38, "{} settings", custom.len());
    }

    #[test]
    fn every_setting_reaches_the_config_from_flags_and_form_fields() {
        let (config, flags) = every_setting();
        assert_eq!(cli_config(&flags), config);
        let request = ExplainRequest::from_fields(&fields(&flags)).unwrap();
        assert_eq!(request.config, config);
        let json = serde_json::json!({ "config": config });
        let request: ExplainRequest = serde_json::from_value(json).unwrap();
        assert_eq!(request.config, config);
    }

    #[test]
    fn defaults_are_the_schemas_everywhere() {
        assert_eq!(cli_config(&[]), ExplainConfig::default());
        assert_eq!(
            ConfigFlags::default().config(Method::CamLime).unwrap(),
            ExplainConfig::default()
        );
        assert_eq!(
            ExplainRequest::from_fields(&[]).unwrap().config,
            ExplainConfig::default()
        );
        let empty: ExplainRequest = serde_json::from_str("{}").unwrap();
        assert_eq!(empty.config, ExplainConfig::default());
    }

    #[test]
    fn form_fields_are_checked_as_flags() {
        let error = |pairs: &[(&str, &str)]| {
            let owned: Vec<(String, String)> = pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            ExplainRequest::from_fields(&owned)
                .unwrap_err()
                .detail
                .message
        };
        assert!(error(&[("samples", "many")]).contains("many"));
        assert!(error(&[("samples", "1")]).contains("num_samples"));
        assert!(error(&[("smaples", "10")]).contains("smaples"));
        assert!(error(&[("cam", "nope")]).contains("available"));
        assert!(error(&[("method", "nope")]).contains("unknown method"));
        assert!(error(&[("eigen_smooth", "maybe")]).contains("true or false"));
    }
}
