//! The explanation's settings as flags: one parser for the command line (`explain`, `compare`,
//! `eval`) and the server's multipart form fields. Each flag is typed by the core's own parser
//! and defaults to `ExplainConfig::default()`'s value, so a new setting is added to the schema
//! and here (and the settings fixture the tests read), nowhere else.

use anyhow::{Result, bail};
use camlime_core::attribution::{
    AttributionConfig, Integration, NoiseKind, NoiseTunnel, Occlusion,
};
use camlime_core::cam::{AblationValue, CamConfig, CamMethod};
use camlime_core::camlime::CamLimeMode;
use camlime_core::detection::BoxChoice;
use camlime_core::explanation::TaskConfig;
use camlime_core::lime::{HideColor, LimeConfig};
use camlime_core::region::RegionChoice;
use camlime_core::surrogate::FeatureSelection;
use camlime_core::{ExplainConfig, Method, SegmenterConfig};
use clap::{Args, CommandFactory, Parser};

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
    /// `name:key=value,…` (e.g. `slic:n_segments=50`); `faces` is the paper's face setting
    /// (slic with 100 segments, compactness 1, sigma 1).
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
    /// What is explained: `classification` (a class), `detection` (one box of a detector;
    /// implied by --box and --class, and by a detector model) or `segmentation` (a segmenter's
    /// logits summed over a region: its predicted mask unless `explain --region` says otherwise;
    /// implied by a segmenter model).
    #[arg(long, value_name = "TASK", value_parser = ["classification", "detection", "segmentation"])]
    pub task: Option<String>,
    /// The detection to explain, best first (with --class, among that class's); default 0.
    #[arg(long = "box", value_name = "K")]
    pub box_index: Option<usize>,
    /// Explain a detection of this class (index; 0 = person for COCO detectors).
    #[arg(long = "class", value_name = "C")]
    pub box_class: Option<usize>,
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

/// A clap message with its flags (`'--noise-samples <NOISE_SAMPLES>'`) named as the form's fields
/// (`` `noise_samples` ``).
fn field_names(message: &str) -> String {
    let mut named = String::new();
    let mut rest = message;
    while let Some(start) = rest.find("'--") {
        let after = &rest[start + 3..];
        let Some(end) = after.find('\'') else {
            break;
        };
        let flag = after[..end].split(' ').next().unwrap_or_default();
        named.push_str(&rest[..start]);
        named.push_str(&format!("`{}`", flag.replace('-', "_")));
        rest = &after[end + 1..];
    }
    named.push_str(rest);
    named
}

/// [`ConfigFlags`] alone, parsed from flags without a program name.
#[derive(Parser)]
#[command(no_binary_name = true, disable_help_flag = true)]
struct Flags {
    #[command(flatten)]
    flags: ConfigFlags,
}

/// The schema's defaults.
pub(crate) fn defaults() -> ExplainConfig {
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
        let command = Flags::command();
        let mut argv = Vec::new();
        for (name, value) in pairs {
            let flag = format!("--{}", name.replace('_', "-"));
            let switch = command
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
            let first = message.lines().next().unwrap_or("invalid field");
            anyhow::anyhow!("{}", field_names(first.trim_start_matches("error: ")))
        })?;
        Ok(parsed.flags)
    }

    /// The task from `--task`, `--box` and `--class`.
    fn task_config(&self) -> Result<TaskConfig> {
        let choice = BoxChoice {
            index: self.box_index,
            class: self.box_class,
        };
        let chosen = choice != BoxChoice::default();
        match self.task.as_deref() {
            Some("detection") => Ok(TaskConfig::Detection(choice)),
            None if chosen => Ok(TaskConfig::Detection(choice)),
            Some(_) if chosen => {
                bail!("--box and --class choose a detection: they need --task detection")
            }
            Some("segmentation") => Ok(TaskConfig::Segmentation(RegionChoice::default())),
            _ => Ok(TaskConfig::Classification),
        }
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
            task: self.task_config()?,
        };
        config.check()?;
        Ok(config)
    }
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
        // The one tag shared by both: `mode` is `segment` in each, with another pooling. The
        // task must fit the model, and the fixture's is a classifier: the detection settings
        // are checked on the detector (`detection_settings_reach_the_config` here, the CLI's
        // and the server's detection tests).
        let same: Vec<_> = default
            .iter()
            .filter(|(path, value)| {
                path != "mode.mode"
                    && path != "task.kind"
                    && custom.iter().any(|(p, v)| p == path && v == value)
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
    fn detection_settings_reach_the_config() {
        let flags: Vec<String> = ["--box", "2", "--class", "0"].map(String::from).to_vec();
        let expected = TaskConfig::Detection(BoxChoice {
            index: Some(2),
            class: Some(0),
        });
        assert_eq!(cli_config(&flags).task, expected);
        let request = ExplainRequest::from_fields(&fields(&flags)).unwrap();
        assert_eq!(request.config.task, expected);
        let json =
            serde_json::json!({"config": {"task": {"kind": "detection", "box": 2, "class": 0}}});
        let request: ExplainRequest = serde_json::from_value(json).unwrap();
        assert_eq!(request.config.task, expected);
        let plain = ["--task", "detection"].map(String::from).to_vec();
        assert_eq!(
            cli_config(&plain).task,
            TaskConfig::Detection(BoxChoice::default())
        );
        let argv = [
            "camlime",
            "explain",
            "x.png",
            "--task",
            "classification",
            "--box",
            "1",
        ];
        let Command::Explain(args) = Cli::try_parse_from(argv).unwrap().command else {
            panic!("not an explain command");
        };
        let error = args.config.config(args.method).unwrap_err().to_string();
        assert!(error.contains("--task detection"), "{error}");
        let unknown: Result<ExplainRequest, _> = serde_json::from_value(
            serde_json::json!({"config": {"task": {"kind": "detection", "boxes": 1}}}),
        );
        assert!(unknown.is_err());
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
        let many = error(&[("samples", "many")]);
        assert!(
            many.contains("'many' for `samples`") && !many.contains("--"),
            "{many}"
        );
        let stdev = error(&[("noise_stdev", "x")]);
        assert!(stdev.contains("`noise_stdev`"), "{stdev}");
        assert!(error(&[("samples", "1")]).contains("num_samples"));
        assert!(error(&[("smaples", "10")]).contains("smaples"));
        assert!(error(&[("cam", "nope")]).contains("available"));
        assert!(error(&[("method", "nope")]).contains("unknown method"));
        assert!(error(&[("eigen_smooth", "maybe")]).contains("true or false"));
        // Segmenter parameters are checked with the settings, before any image is read.
        assert!(error(&[("segmenter", "slic:compactness=-1")]).contains("slic parameters"));
        assert!(error(&[("segmenter", "grid:rows=0")]).contains("at least one row"));
        assert!(error(&[("segmenter", "quickshift:ratio=2")]).contains("ratio"));
    }
}
