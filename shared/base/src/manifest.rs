//! The bundled models' manifest (`models/manifest.json`): what each ONNX file is, how its input is
//! preprocessed, which labels it predicts, which layers it offers and where it came from.
//!
//! The core parses the manifest text it is given; reading the files is the caller's job.

use serde::{Deserialize, Serialize};

use crate::detection::DetectorSpec;
use crate::face::FaceCrop;
use crate::preprocess::Preprocessing;
use crate::region::SegmentationSpec;
use crate::spec::{ModelSpec, NamedLayer, Task};
use crate::{Error, Result};

/// The whole manifest.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    /// One entry per bundled model.
    pub models: Vec<ModelEntry>,
    /// Labels file name → where its class names came from.
    pub labels: std::collections::BTreeMap<String, String>,
    /// The bundled sample photos.
    pub samples: Vec<SampleEntry>,
}

/// One bundled model.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ModelEntry {
    /// Short name used on the command line (`mobilenet_v2`).
    pub name: String,
    /// Human-readable title.
    pub title: String,
    /// ONNX file, relative to the manifest.
    pub file: String,
    /// SHA-256 of the ONNX file, lower-case hex.
    pub sha256: String,
    /// The input tensor.
    pub input: InputEntry,
    /// What the model does: `classification` (the default), `detection` or `segmentation`.
    #[serde(default = "crate::spec::classification")]
    pub task: String,
    /// Name of the logits tensor (classifiers).
    #[serde(default)]
    pub output: Option<String>,
    /// What a detector's outputs are and how they decode (detectors).
    #[serde(default)]
    pub detector: Option<DetectorSpec>,
    /// A segmenter's logit map (task `segmentation`).
    #[serde(default)]
    pub segmentation: Option<SegmentationSpec>,
    /// A face model: the bundled detector whose faces it explains, and the crop's margin.
    #[serde(default)]
    pub face: Option<FaceCrop>,
    /// How images become the input tensor.
    pub preprocessing: Preprocessing,
    /// Labels file, relative to the manifest (one class name per line).
    pub labels: String,
    /// Readable layer names mapped to ONNX tensor names, with their `[C, H, W]` shapes.
    pub layers: Vec<LayerEntry>,
    /// The target layer(s) used when none is given.
    pub default_layers: Vec<String>,
    /// Licence of the weights.
    pub licence: String,
    /// Where the weights came from and how the file was built.
    pub provenance: String,
}

/// The input tensor of a model.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InputEntry {
    /// ONNX input name.
    pub name: String,
    /// Spatial size `[height, width]`.
    pub size: [u32; 2],
}

/// A named layer of a bundled model.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LayerEntry {
    /// Readable name (a PyTorch module path such as `features.17`).
    pub name: String,
    /// ONNX tensor name.
    pub tensor: String,
    /// `[C, H, W]` at the model's input size.
    pub shape: Vec<usize>,
}

/// A bundled sample photo.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SampleEntry {
    /// File, relative to the manifest.
    pub file: String,
    /// SHA-256 of the file.
    pub sha256: String,
    /// What it shows.
    pub title: String,
    /// Photographer or owner.
    pub author: String,
    /// Licence.
    pub licence: String,
    /// Where the file was taken from.
    pub source: String,
}

impl Manifest {
    /// Parse and check a manifest.
    pub fn from_json(text: &str) -> Result<Self> {
        let manifest: Manifest =
            serde_json::from_str(text).map_err(|e| Error::Manifest(e.to_string()))?;
        for entry in &manifest.models {
            entry.preprocessing.validate()?;
            entry.task()?;
            if let Some(face) = &entry.face {
                face.validate()?;
                let detector = manifest.models.iter().find(|m| m.name == face.detector);
                if detector.is_none_or(|d| d.detector.is_none()) {
                    return Err(Error::Manifest(format!(
                        "model `{}`: its face detector `{}` is not a bundled detector",
                        entry.name, face.detector
                    )));
                }
            }
            for layer in &entry.default_layers {
                if !entry.layers.iter().any(|l| &l.name == layer) {
                    return Err(Error::Manifest(format!(
                        "model `{}`: default layer `{layer}` is not among its layers",
                        entry.name
                    )));
                }
            }
        }
        Ok(manifest)
    }

    /// The entry called `name`, or an error listing the names there are.
    pub fn model(&self, name: &str) -> Result<&ModelEntry> {
        self.models.iter().find(|m| m.name == name).ok_or_else(|| {
            let names: Vec<_> = self.models.iter().map(|m| m.name.as_str()).collect();
            Error::Model(format!(
                "unknown model `{name}`; bundled models: {}",
                names.join(", ")
            ))
        })
    }
}

impl ModelEntry {
    /// What the model's outputs are, from `task` and its section.
    pub fn task(&self) -> Result<Task> {
        match (self.task.as_str(), &self.detector, &self.segmentation) {
            ("classification", None, None) => Ok(Task::Classification),
            ("detection", Some(detector), None) => {
                detector.validate()?;
                Ok(Task::Detection(Box::new(detector.clone())))
            }
            ("segmentation", None, Some(segmenter)) => {
                segmenter.validate()?;
                Ok(Task::Segmentation(segmenter.clone()))
            }
            ("embedding", None, None) => Ok(Task::Embedding),
            ("classification" | "detection" | "segmentation" | "embedding", _, _) => {
                Err(Error::Manifest(format!(
                    "model `{}`: a `detector` section belongs to task `detection`, a \
                     `segmentation` section to task `segmentation`, each only to it",
                    self.name
                )))
            }
            (other, _, _) => Err(Error::Manifest(format!(
                "model `{}`: unknown task `{other}` (classification, detection, segmentation, \
                 embedding)",
                self.name
            ))),
        }
    }

    /// The [`ModelSpec`] of this model, given the text of its labels file.
    pub fn spec(&self, labels_text: &str) -> Result<ModelSpec> {
        Ok(ModelSpec {
            name: self.name.clone(),
            input: Some(self.input.name.clone()),
            output: self.output.clone(),
            task: self.task()?,
            input_size: self.input.size,
            preprocessing: self.preprocessing.clone(),
            labels: parse_labels(labels_text),
            named_layers: self
                .layers
                .iter()
                .map(|l| NamedLayer {
                    name: l.name.clone(),
                    tensor: l.tensor.clone(),
                })
                .collect(),
            default_layers: self.default_layers.clone(),
            face: self.face.clone(),
        })
    }
}

/// One class name per non-empty line, trimmed.
pub fn parse_labels(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}
