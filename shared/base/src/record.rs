//! An explanation's typed description and its record: the wire format the CLI writes, the
//! server returns, the page draws and `--replay` re-runs (model and sha256, preprocessing,
//! method and every parameter, seed, target, segment map, CAM, coefficients, R², timings). The
//! pipeline that produces a record is the core's `explanation`.

use image::RgbImage;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::attribution::AttributionConfig;
use crate::cam::{AblationValue, CamMap, CamMethod};
use crate::camlime::CamLimeMode;
use crate::lime::{HideColor, LabelExplanation, LimeConfig};
use crate::preprocess::Preprocessing;
use crate::render::WeightCurve;
use crate::segment::{Segmentation, SegmenterConfig};
use crate::{Error, Result};

/// What kind of explanation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Method {
    /// LIME with the design reweighted by a CAM (the paper's method).
    CamLime,
    /// Plain LIME.
    Lime,
    /// A CAM alone.
    Cam(CamMethod),
}

impl Method {
    /// The name the CLI and records use.
    pub fn name(self) -> &'static str {
        match self {
            Self::CamLime => "camlime",
            Self::Lime => "lime",
            Self::Cam(method) => method.name(),
        }
    }

    /// The name people write in figure labels.
    pub fn title(self) -> &'static str {
        match self {
            Self::CamLime => "CamLIME",
            Self::Lime => "LIME",
            Self::Cam(method) => method.title(),
        }
    }

    /// Parse `camlime`, `lime` or a CAM method's name.
    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "camlime" => Ok(Self::CamLime),
            "lime" => Ok(Self::Lime),
            other => CamMethod::from_name(other).map(Self::Cam).map_err(|_| {
                let cams: Vec<_> = CamMethod::ALL.iter().map(|m| m.name()).collect();
                Error::Parameter(format!(
                    "unknown method `{other}`; available: camlime, lime, {}",
                    cams.join(", ")
                ))
            }),
        }
    }
}

impl TryFrom<String> for Method {
    type Error = Error;
    fn try_from(name: String) -> Result<Self> {
        Self::from_name(&name)
    }
}

impl From<Method> for String {
    fn from(method: Method) -> Self {
        method.name().to_owned()
    }
}

/// Every parameter of an explanation; `Default` is the project's defaults (METHOD.md).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExplainConfig {
    /// The method.
    pub method: Method,
    /// The CAM CamLIME reweights with.
    pub cam: CamMethod,
    /// Target layers; empty = the model's defaults.
    pub layers: Vec<String>,
    /// The explained class; `None` = the predicted one.
    pub target: Option<usize>,
    /// Seeds segmentation noise, sampling and random CAMs.
    pub seed: u64,
    /// Superpixels.
    pub segmenter: SegmenterConfig,
    /// LIME's sampling and surrogate.
    pub lime: LimeConfig,
    /// How CamLIME applies the CAM.
    pub mode: CamLimeMode,
    /// Ablation-CAM's ablated value.
    pub ablation: AblationValue,
    /// CAMs: principal component of the weighted activations instead of their sum.
    pub eigen_smooth: bool,
    /// CAMs: average over flips × scales (6 passes).
    pub aug_smooth: bool,
    /// CAMs: keep maps at the layers' resolution (the paper's Grad-CAM quirk).
    pub feature_resolution: bool,
    /// Input attributions' parameters.
    pub attribution: AttributionConfig,
    /// Images per classification chunk (a unit of progress and of cancellation).
    pub chunk: usize,
}

impl Default for ExplainConfig {
    fn default() -> Self {
        Self {
            method: Method::CamLime,
            cam: CamMethod::EigenCam,
            layers: Vec::new(),
            target: None,
            seed: 0,
            segmenter: SegmenterConfig::default(),
            lime: LimeConfig::default(),
            mode: CamLimeMode::default(),
            ablation: AblationValue::Zero,
            eigen_smooth: false,
            aug_smooth: false,
            feature_resolution: false,
            attribution: AttributionConfig::default(),
            chunk: 64,
        }
    }
}

/// The model an explanation ran on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// Name (bundled name or file stem).
    pub name: String,
    /// sha256 of the ONNX bytes.
    pub sha256: String,
}

/// The explained image.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImageInfo {
    /// Where it came from (a path or URL), if the caller said.
    pub source: Option<String>,
    /// Base-image width (after resize and crop).
    pub width: u32,
    /// Base-image height.
    pub height: u32,
    /// sha256 of the base image's RGB bytes: replay checks it.
    pub sha256: String,
}

/// The explained class.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TargetInfo {
    /// Class index.
    pub class: usize,
    /// Class name.
    pub label: String,
    /// Softmax probability on the base image.
    pub probability: f32,
    /// Raw logit.
    pub logit: f32,
}

/// A segment map in compact form.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SegmentsRecord {
    /// Segmenter name.
    pub algorithm: String,
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
    /// Number of segments.
    pub count: usize,
    /// Run-length labels, `[label, run, …]` row-major.
    pub runs: Vec<u32>,
}

impl SegmentsRecord {
    /// Back to a [`Segmentation`].
    pub fn segmentation(&self) -> Result<Segmentation> {
        Segmentation::from_runs(self.height, self.width, &self.runs)
    }
}

/// One layer's CAM at the layer's own resolution (ReLU'd, before scaling).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerMap {
    /// Layer.
    pub layer: String,
    /// The map.
    pub map: CamMap,
}

/// The CAM part of a record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CamRecord {
    /// Method.
    pub method: CamMethod,
    /// Per-layer maps at feature resolution.
    pub layers: Vec<LayerMap>,
    /// The fused map at input resolution, in [0, 1].
    pub map: CamMap,
}

/// CamLIME explained with one layer's CAM (multi-layer fusion explains the same samples with
/// each layer and with the fused map).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerExplanations {
    /// Layer.
    pub layer: String,
    /// Per explained label.
    pub explanations: Vec<LabelExplanation>,
}

/// Wall-clock milliseconds of each stage (0 where the runtime has no clock).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    /// Segmentation.
    pub segmentation_ms: f64,
    /// Classifying the perturbed samples.
    pub sampling_ms: f64,
    /// CAM computation.
    pub cam_ms: f64,
    /// Surrogate fits.
    pub surrogate_ms: f64,
    /// Everything.
    pub total_ms: f64,
}

/// The explanation record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExplanationRecord {
    /// Format tag.
    pub format: String,
    /// camlime version that wrote it.
    pub version: String,
    /// Model.
    pub model: ModelInfo,
    /// Preprocessing applied to the image.
    pub preprocessing: Preprocessing,
    /// Image.
    pub image: ImageInfo,
    /// Method and every parameter, seed included.
    pub config: ExplainConfig,
    /// Explained class.
    pub target: TargetInfo,
    /// Target layers used (CAM and CamLIME).
    pub layers: Vec<String>,
    /// Segments (LIME and CamLIME).
    pub segments: Option<SegmentsRecord>,
    /// CAM (CAM methods and CamLIME).
    pub cam: Option<CamRecord>,
    /// The surrogate per explained label (LIME, CamLIME): intercept, ranked weights, R²,
    /// local prediction.
    pub explanations: Vec<LabelExplanation>,
    /// CamLIME only: plain LIME on the same samples (the weight–feature curve's other line).
    pub lime_baseline: Vec<LabelExplanation>,
    /// CamLIME with several layers: the same samples explained with each layer's CAM.
    pub layer_explanations: Vec<LayerExplanations>,
    /// Stage timings.
    pub timings: Timings,
    /// The engine that ran the forward passes (`cnn`, `tract`, …; empty in older records).
    #[serde(default)]
    pub engine: String,
}

/// The record's format tag.
pub const RECORD_FORMAT: &str = "camlime-explanation/1";

impl ExplanationRecord {
    /// The explanation of the target class (the first one for LIME and CamLIME).
    pub fn main_explanation(&self) -> Option<&LabelExplanation> {
        self.explanations
            .iter()
            .find(|e| e.label == self.target.class)
            .or(self.explanations.first())
    }

    /// The weight–feature plot's curves: every segment's coefficient in the main explanation
    /// and, for CamLIME, in plain LIME on the same samples (empty without segments).
    pub fn weight_curves(&self) -> Vec<WeightCurve> {
        let Some(segments) = &self.segments else {
            return Vec::new();
        };
        let main = self.main_explanation();
        let baseline = self
            .lime_baseline
            .iter()
            .find(|e| Some(e.label) == main.map(|m| m.label));
        [
            (Method::Lime.title(), baseline),
            (self.config.method.title(), main),
        ]
        .into_iter()
        .filter_map(|(name, explanation)| {
            explanation.map(|e| WeightCurve {
                name: name.into(),
                weights: e.weights(segments.count),
            })
        })
        .collect()
    }

    /// Whether another record holds the same results (timings and version ignored).
    pub fn same_results(&self, other: &Self) -> bool {
        let strip = |r: &Self| Self {
            timings: Timings::default(),
            engine: String::new(),
            version: String::new(),
            image: ImageInfo {
                source: None,
                ..r.image.clone()
            },
            ..r.clone()
        };
        strip(self) == strip(other)
    }
}

/// sha256 of an image's RGB bytes.
pub fn image_sha256(image: &RgbImage) -> String {
    format!("{:x}", Sha256::digest(image.as_raw()))
}

/// What a process needs, besides the model and the base image, to classify a share of the
/// perturbed samples. The design is redrawn from the seed, so the job stays small.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SampleJob {
    /// Segments of the base image.
    pub segments: SegmentsRecord,
    /// Rows of the design (samples).
    pub num_samples: usize,
    /// The design's seed.
    pub seed: u64,
    /// Hidden segments' colour.
    pub hide_color: HideColor,
    /// Explained labels, in the order of the returned columns.
    pub labels: Vec<usize>,
    /// Samples per classification chunk (the unit of progress and cancellation).
    pub chunk: usize,
}
