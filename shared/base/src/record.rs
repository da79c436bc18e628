//! An explanation's typed description and its record: the wire format the CLI writes, the
//! server returns, the page draws and `--replay` re-runs (model and sha256, preprocessing,
//! method and every parameter, seed, target, segment map, CAM, coefficients, R², timings). The
//! pipeline that produces a record is the core's `explanation`.

use image::RgbImage;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::cam::{CamConfig, CamMap, CamMethod, Stability};
use crate::camlime::CamLimeMode;
use crate::detection::{BoxChoice, BoxTarget, Detection};
use crate::face::FaceInfo;
use crate::lime::{HideColor, LabelExplanation, LimeConfig};
use crate::preprocess::Preprocessing;
use crate::region::{RegionChoice, RegionTarget};
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

    /// Every method: CamLIME, LIME, then each CAM and input attribution.
    pub fn all() -> impl Iterator<Item = Method> {
        [Self::CamLime, Self::Lime]
            .into_iter()
            .chain(CamMethod::ALL.into_iter().map(Self::Cam))
    }

    /// Whether the method classifies perturbed samples (LIME and CamLIME).
    pub fn samples(self) -> bool {
        matches!(self, Self::CamLime | Self::Lime)
    }
}

impl std::str::FromStr for Method {
    type Err = Error;
    /// `camlime`, `lime` or a CAM method's name.
    fn from_str(name: &str) -> Result<Self> {
        match name {
            "camlime" => Ok(Self::CamLime),
            "lime" => Ok(Self::Lime),
            other => other.parse().map(Self::Cam).map_err(|_| {
                let names: Vec<_> = Self::all().map(Method::name).collect();
                Error::Parameter(format!(
                    "unknown method `{other}`; available: {}",
                    names.join(", ")
                ))
            }),
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(feature = "schema")]
impl utoipa::PartialSchema for Method {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        let names: Vec<&str> = Self::all().map(Method::name).collect();
        crate::names::string_schema(&names)
    }
}

#[cfg(feature = "schema")]
impl utoipa::ToSchema for Method {}

impl TryFrom<String> for Method {
    type Error = Error;
    fn try_from(name: String) -> Result<Self> {
        name.parse()
    }
}

impl From<Method> for String {
    fn from(method: Method) -> Self {
        method.name().to_owned()
    }
}

/// Every parameter of an explanation: the one typed description that the CLI's flags, the
/// server's requests, the page's controls and records share. `Default` is the project's
/// defaults (METHOD.md); missing JSON fields take their defaults.
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExplainConfig {
    /// The method.
    pub method: Method,
    /// The explained class; `None` = the predicted one.
    pub target: Option<usize>,
    /// Seeds segmentation noise, sampling, random CAMs and attribution noise.
    pub seed: u64,
    /// Images per classification chunk: a unit of progress and of cancellation (results do
    /// not depend on it).
    pub chunk: usize,
    /// The CAM's settings: CamLIME's CAM, target layers, smoothing, input attributions.
    pub cam: CamConfig,
    /// Superpixels.
    pub segmenter: SegmenterConfig,
    /// LIME's sampling and surrogate.
    pub lime: LimeConfig,
    /// How CamLIME applies the CAM.
    pub mode: CamLimeMode,
    /// What is explained in a model that is not a classifier (a detector's box).
    pub task: TaskConfig,
}

/// What an explanation targets beyond a class: the model's task and its choice.
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum TaskConfig {
    /// A classifier's class (`target`).
    #[default]
    Classification,
    /// One detection of a detector: its score, followed through the perturbed images.
    Detection(BoxChoice),
    /// A region of a segmenter's map: its summed logit.
    Segmentation(RegionChoice),
    /// A face embedding's cosine similarity to a reference face's embedding.
    Identity(IdentityChoice),
}

/// The reference an identity explanation compares the face with.
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityChoice {
    /// The reference face's embedding (the model's output on it; any length-d vector).
    pub reference: Vec<f32>,
}

/// What an identity explanation compared (kept in its record).
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IdentityTarget {
    /// The face's embedding.
    pub embedding: Vec<f32>,
    /// The reference's embedding.
    pub reference: Vec<f32>,
    /// Their cosine similarity (the value explained).
    pub similarity: f32,
}

impl TaskConfig {
    /// The task's name (`classification`, `detection`, `segmentation`, `identity`).
    pub fn name(&self) -> &'static str {
        match self {
            TaskConfig::Classification => "classification",
            TaskConfig::Detection(_) => "detection",
            TaskConfig::Segmentation(_) => "segmentation",
            TaskConfig::Identity(_) => "identity",
        }
    }
}

/// What a task explanation found and targeted, kept in its record and its sample job.
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum TaskRecord {
    /// A detector's explanation.
    Detection {
        /// Every detection in the base image, best first.
        detections: Vec<Detection>,
        /// The explained one.
        target: BoxTarget,
    },
    /// A segmenter's explanation.
    Segmentation(RegionTarget),
    /// A face embedding's explanation.
    Identity(IdentityTarget),
}

impl Default for ExplainConfig {
    fn default() -> Self {
        Self {
            method: Method::CamLime,
            target: None,
            seed: 0,
            chunk: 64,
            cam: CamConfig::default(),
            segmenter: SegmenterConfig::default(),
            lime: LimeConfig::default(),
            mode: CamLimeMode::default(),
            task: TaskConfig::default(),
        }
    }
}

/// Largest classification chunk.
pub const MAX_CHUNK: usize = 1024;

impl ExplainConfig {
    /// Every check that needs no model (the core's `explanation::validate` adds the model's:
    /// the class and the layers).
    pub fn check(&self) -> Result<()> {
        self.lime.validate()?;
        self.segmenter.validate()?;
        if !(1..=MAX_CHUNK).contains(&self.chunk) {
            return Err(Error::Parameter(format!(
                "chunk must lie in 1..={MAX_CHUNK}, got {}",
                self.chunk
            )));
        }
        self.cam.attribution.check()
    }

    /// The CAM this explanation computes: its method for a CAM, `cam.method` for CamLIME.
    pub fn cam_method(&self) -> Option<CamMethod> {
        match self.method {
            Method::Cam(method) => Some(method),
            Method::CamLime => Some(self.cam.method),
            Method::Lime => None,
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
    /// A face model's explanation: the face of the source photo it cropped (the base image is
    /// made from that crop).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub face: Option<FaceInfo>,
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
    /// How far float32 rounding can move `map` (see [`Stability`]), where it is estimated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stability: Option<Stability>,
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
    /// A task explanation's findings (a detector's detections and the explained box).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<TaskRecord>,
}

/// The record's format tag.
pub const RECORD_FORMAT: &str = "camlime-explanation/2";

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
    /// The task target the samples are scored on (a detector's box), if not a class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<TaskRecord>,
}
