//! What the caller knows about a model besides its graph — its name, input, preprocessing,
//! labels and readable layer names ([`ModelSpec`]) — and what a model answers in plain data:
//! its layers and predictions. The classifier that runs the graph is the core's `model`.

use serde::{Deserialize, Serialize};

use crate::detection::DetectorSpec;
use crate::face::FaceCrop;
use crate::preprocess::Preprocessing;
use crate::region::SegmentationSpec;

/// What a model's outputs are, beyond a classifier's logits. Tagged `task` (a detector's spec
/// has its own `kind`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "task")]
pub enum Task {
    /// One output of `N × classes` logits.
    #[default]
    Classification,
    /// An object detector: its outputs and their decoding.
    Detection(Box<DetectorSpec>),
    /// A segmenter: its logit map.
    Segmentation(SegmentationSpec),
    /// A face embedding (`N × d`, before any normalisation): explained as its cosine similarity
    /// to a reference face's.
    Embedding,
}

impl Task {
    /// The task's name (`classification`, `detection`, `segmentation`).
    pub fn name(&self) -> &'static str {
        match self {
            Task::Classification => "classification",
            Task::Detection(_) => "detection",
            Task::Segmentation(_) => "segmentation",
            Task::Embedding => "embedding",
        }
    }

    /// The name with its article (`a detection`, `an embedding`), for messages.
    pub fn with_article(&self) -> String {
        let name = self.name();
        let article = if name.starts_with(['a', 'e', 'i', 'o', 'u']) {
            "an"
        } else {
            "a"
        };
        format!("{article} {name}")
    }

    /// The output tensors the task reads (gathered into one flat output), none for a classifier.
    pub fn outputs(&self) -> Vec<String> {
        match self {
            Task::Classification | Task::Embedding => Vec::new(),
            Task::Detection(detector) => detector.outputs(),
            Task::Segmentation(segmenter) => segmenter.outputs(),
        }
    }
}

/// A readable layer name bound to an ONNX tensor name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedLayer {
    /// Readable name (`features.17`).
    pub name: String,
    /// ONNX tensor name.
    pub tensor: String,
}

/// What the caller knows about a model beyond its ONNX graph.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    /// Short name, for display and records.
    pub name: String,
    /// Expected ONNX input name; `None` accepts the model's single input, whatever its name.
    pub input: Option<String>,
    /// Logits tensor; `None` takes the model's single graph output.
    pub output: Option<String>,
    /// Input `[height, width]`; a model that fixes its own spatial size overrides it.
    pub input_size: [u32; 2],
    /// How images become the input tensor.
    pub preprocessing: Preprocessing,
    /// Class names; empty means `class 0`, `class 1`, …
    pub labels: Vec<String>,
    /// Readable names for layers; empty means layers are addressed by tensor name.
    pub named_layers: Vec<NamedLayer>,
    /// Target layers used when none is given; empty means the last spatial tensor.
    pub default_layers: Vec<String>,
    /// A face model: the detector that finds the faces it explains and its crop's margin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub face: Option<FaceCrop>,
    /// What the outputs are (a classifier's logits unless said otherwise).
    #[serde(default)]
    pub task: Task,
}

impl ModelSpec {
    /// A spec for a user's ONNX classifier: ImageNet preprocessing at 224², no labels or layer
    /// names (labels default to ImageNet's when the model has 1000 classes and they are given).
    pub fn user_model(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            input: None,
            output: None,
            input_size: [224, 224],
            preprocessing: Preprocessing::default(),
            labels: Vec::new(),
            named_layers: Vec::new(),
            default_layers: Vec::new(),
            face: None,
            task: Task::Classification,
        }
    }
}

/// A layer a user can target: a 4-D tensor of the model.
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layer {
    /// Readable name (the tensor name when the model has no named layers).
    pub name: String,
    /// ONNX tensor name.
    pub tensor: String,
    /// `[C, H, W]` at the model's input size.
    pub shape: [usize; 3],
}

/// What a loaded model offers explanations: the server lists it (`GET /v1/models`) and the
/// page's worker reports it.
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelSummary {
    /// Name in requests and records.
    pub name: String,
    /// sha256 of the ONNX bytes (records name it).
    pub sha256: String,
    /// Input width and height.
    pub input_size: [usize; 2],
    /// What the model does (`classification`, `detection`, `segmentation`).
    #[serde(default = "classification")]
    pub task: String,
    /// Classes (a detector's object classes).
    pub num_classes: usize,
    /// The layers CAMs use by default.
    pub default_layers: Vec<String>,
    /// The layers explanations can target (named ones, else every 4-D tensor).
    pub layers: Vec<Layer>,
}

/// The task a model or manifest entry names when it names none.
pub(crate) fn classification() -> String {
    "classification".into()
}

/// One class of a prediction.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// Class index.
    pub class: usize,
    /// Class name.
    pub label: String,
    /// Softmax probability.
    pub probability: f32,
    /// Raw logit.
    pub logit: f32,
}

/// Softmax of one row, stabilised by its maximum.
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.iter().map(|&x| (x - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Manifest;

    #[test]
    fn every_bundled_task_spec_survives_json() {
        // The page sends a model's spec to its worker as JSON: a detector's own `kind` once
        // collided with the task's tag.
        let manifest = Manifest::from_json(include_str!("../../../models/manifest.json")).unwrap();
        for entry in &manifest.models {
            let spec = entry.spec("").unwrap();
            let json = serde_json::to_string(&spec).unwrap();
            let back: ModelSpec = serde_json::from_str(&json).unwrap();
            assert_eq!(back, spec, "{}", entry.name);
        }
    }
}
