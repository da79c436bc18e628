//! The engine seam: how a classifier's ONNX graph becomes something that runs.
//!
//! An [`Engine`] compiles a [`Graph`] for a [`PlanRequest`] (batch size, where the graph starts,
//! which tensors come out) into a [`Plan`], and a plan runs batches of `f32` tensors. Everything
//! that reaches a model — explainers, CAMs, attributions, metrics, the browser's worker — goes
//! through [`crate::Classifier`], which holds an ordered list of engines and asks them in turn:
//! an engine that cannot run a graph answers [`Error::Unsupported`] with the reason, and the next
//! one is tried (the reason is reported, never swallowed).
//!
//! The core ships two engines: [`cnn::Cnn`], our lowered CNN plan with its CPU executor (fast,
//! covers the ops of image CNNs), and [`tract::Tract`] (any graph tract runs: the fallback, and
//! the gradient graphs of the backward transform). Other crates add their own (`native/` a CUDA
//! device) by implementing [`Engine`]; the core has no `cfg` for them.

pub mod cnn;
pub mod tract;

use std::fmt::Debug;
use std::sync::Arc;

use tract_onnx::pb::ModelProto;
use tract_onnx::prelude::tract_ndarray::{Array4, ArrayD, ArrayView2, ArrayView3, ArrayViewD};
use tract_onnx::prelude::{Framework, InferenceModel};

use crate::cam::CamMap;
use crate::{Error, Result};

/// What engines compile: an ONNX graph whose inputs have known per-image shapes.
#[derive(Debug)]
pub struct Graph {
    proto: ModelProto,
    inference: InferenceModel,
    inputs: Vec<GraphInput>,
}

/// One input of a [`Graph`]: its name and its shape without the batch axis.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GraphInput {
    /// ONNX tensor name.
    pub name: String,
    /// Shape of one batch row (`[3, H, W]` for an image).
    pub dims: Vec<usize>,
}

impl Graph {
    /// Parse `proto` once for every engine, after refusing what tract would panic on
    /// (`onnx::well_formed`). Declared intermediate shapes (`value_info`) carry a symbolic batch;
    /// plans fix the batch, so they are ignored.
    pub fn new(proto: ModelProto, inputs: Vec<GraphInput>) -> Result<Self> {
        let onnx = tract_onnx::onnx()
            .with_ignore_output_shapes(true)
            .with_ignore_value_info(true);
        if let Some(graph) = &proto.graph {
            // Each input is given its batch axis and the per-image dims.
            let ranks: Vec<(&str, usize)> = inputs
                .iter()
                .map(|i| (i.name.as_str(), i.dims.len() + 1))
                .collect();
            crate::onnx::well_formed(graph, &ranks, &onnx.op_register)?;
        }
        let inference = onnx
            .model_for_proto_model(&proto)
            .map_err(|e| Error::Model(format!("tract cannot load the graph: {e}")))?;
        Ok(Self {
            proto,
            inference,
            inputs,
        })
    }

    /// The ONNX proto.
    pub fn proto(&self) -> &ModelProto {
        &self.proto
    }

    /// The graph's inputs, in ONNX order.
    pub fn inputs(&self) -> &[GraphInput] {
        &self.inputs
    }

    /// tract's parse of the proto.
    pub(crate) fn inference(&self) -> &InferenceModel {
        &self.inference
    }
}

/// What to compile: a batch size, optionally a tensor where the graph starts instead of its
/// inputs (the rest of the network from a layer: Score-CAM and Ablation-CAM's tail), and the
/// tensors to return, in order.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PlanRequest {
    /// Rows per run.
    pub batch: usize,
    /// The tensor that replaces the graph's inputs, if any; it is then the plan's one input.
    pub start: Option<String>,
    /// Output tensor names, in the order [`Plan::run`] returns them.
    pub outputs: Vec<String>,
}

/// Something that can compile graphs into runnable plans.
pub trait Engine: Send + Sync + Debug {
    /// Short stable name (`cnn`, `tract`, …), shown in `camlime devices` and records.
    fn name(&self) -> &str;

    /// Whether plans run on a device that wants whole batches from one caller rather than one
    /// share per CPU thread (a GPU).
    fn is_device(&self) -> bool {
        false
    }

    /// Compile `graph` for `request`. A graph this engine does not cover is
    /// [`Error::Unsupported`] saying why (the caller may try another engine); a graph that is
    /// broken is any other error.
    fn compile(&self, graph: &Graph, request: &PlanRequest) -> Result<Arc<dyn Plan>>;
}

/// A batch of images composed pixel by pixel from two (LIME's perturbed samples): image `i`
/// takes `on`'s value where its row of `keep` has the pixel's segment on, else `off`'s. A device
/// builds such a batch itself, so only the two images, the segment map and the rows cross to it.
#[derive(Clone, Copy, Debug)]
pub struct Composed<'a> {
    /// `C×H×W`: the values where a segment is on.
    pub on: ArrayView3<'a, f32>,
    /// `C×H×W`: the values where it is off.
    pub off: ArrayView3<'a, f32>,
    /// `H·W` segment labels, row-major, each below `keep`'s column count.
    pub segments: &'a [u32],
    /// `N × segments`: which segments each image keeps.
    pub keep: ArrayView2<'a, bool>,
}

impl Composed<'_> {
    /// Check that the parts fit together.
    pub fn validate(&self) -> Result<()> {
        let (c, h, w) = self.on.dim();
        if self.off.dim() != (c, h, w) || self.segments.len() != h * w {
            return Err(Error::Parameter(format!(
                "composed batch: images {:?} and {:?} with {} segment labels do not fit",
                self.on.dim(),
                self.off.dim(),
                self.segments.len()
            )));
        }
        let count = self.keep.ncols();
        if let Some(label) = self.segments.iter().find(|&&l| l as usize >= count) {
            return Err(Error::Parameter(format!(
                "segment label {label} without a column in the {count}-segment rows"
            )));
        }
        Ok(())
    }

    /// The batch, composed on the host: `N×C×H×W`.
    pub fn images(&self) -> Result<Array4<f32>> {
        self.validate()?;
        let (c, h, w) = self.on.dim();
        let n = self.keep.nrows();
        let on = self.on.as_standard_layout();
        let off = self.off.as_standard_layout();
        let (Some(on), Some(off)) = (on.as_slice(), off.as_slice()) else {
            return Err(Error::Inference("composed images not contiguous".into()));
        };
        let mut images = Array4::<f32>::zeros((n, c, h, w));
        for (mut image, keep) in images.outer_iter_mut().zip(self.keep.rows()) {
            let Some(image) = image.as_slice_mut() else {
                return Err(Error::Inference("batch not contiguous".into()));
            };
            for (plane, (on, off)) in image
                .chunks_exact_mut(h * w)
                .zip(on.chunks_exact(h * w).zip(off.chunks_exact(h * w)))
            {
                for (((value, &label), on), off) in
                    plane.iter_mut().zip(self.segments).zip(on).zip(off)
                {
                    *value = if keep[label as usize] { *on } else { *off };
                }
            }
        }
        Ok(images)
    }
}

/// Score-CAM's batch: the image times each of `maps`' channels, upsampled to the image's size
/// (bilinear, corner-aligned, as `UpsamplingBilinear2d`) and min-max scaled. A device builds it
/// from the image and the small maps, so the `K`-image batch never crosses the bus.
#[derive(Clone, Copy, Debug)]
pub struct Masked<'a> {
    /// `C×H×W`.
    pub image: ArrayView3<'a, f32>,
    /// `K×h×w`: one map per image of the batch.
    pub maps: ArrayView3<'a, f32>,
}

impl Masked<'_> {
    /// Check that there are maps to upsample.
    pub fn validate(&self) -> Result<()> {
        let (k, h, w) = self.maps.dim();
        let (c, height, width) = self.image.dim();
        if k == 0 || h == 0 || w == 0 || c == 0 || height == 0 || width == 0 {
            return Err(Error::Parameter(format!(
                "masked batch: maps {:?} and image {:?}",
                self.maps.dim(),
                self.image.dim()
            )));
        }
        Ok(())
    }

    /// Each map upsampled to the image's size and scaled to [0, 1]: `K` masks of `H·W`.
    pub fn masks(&self) -> Result<Vec<Vec<f32>>> {
        let (_, h, w) = self.maps.dim();
        let (_, height, width) = self.image.dim();
        self.maps
            .outer_iter()
            .map(|map| {
                let map = CamMap::new(h, w, map.iter().copied().collect())?;
                let up = map.resize_align_corners(height, width);
                let up = up.values();
                let min = up.iter().copied().fold(f32::INFINITY, f32::min);
                let max = up.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                Ok(up.iter().map(|v| (v - min) / (max - min + 1e-8)).collect())
            })
            .collect()
    }

    /// The batch, built on the host: `K×C×H×W`.
    pub fn images(&self) -> Result<Array4<f32>> {
        self.validate()?;
        let (c, height, width) = self.image.dim();
        let masks = self.masks()?;
        let mut images = Array4::<f32>::zeros((masks.len(), c, height, width));
        for (mut image, mask) in images.outer_iter_mut().zip(&masks) {
            for (mut plane, source) in image.outer_iter_mut().zip(self.image.outer_iter()) {
                for ((d, &x), &m) in plane.iter_mut().zip(source.iter()).zip(mask) {
                    *d = x * m;
                }
            }
        }
        Ok(images)
    }
}

/// A compiled plan: fixed batch, inputs and outputs.
pub trait Plan: Send + Sync + Debug {
    /// Run one batch: `inputs` in the graph's input order (or the start tensor alone), each with
    /// exactly the compiled batch on axis 0; returns the requested outputs in order.
    fn run(&self, inputs: &[ArrayViewD<f32>]) -> Result<Vec<ArrayD<f32>>>;

    /// Run a [`Composed`] batch (the plan's one input). The CPU engines compose it on the host;
    /// a device composes it where it runs.
    fn run_composed(&self, composed: &Composed) -> Result<Vec<ArrayD<f32>>> {
        let images = composed.images()?;
        self.run(&[images.view().into_dyn()])
    }

    /// Run a [`Masked`] batch (the plan's one input); the CPU engines build it on the host.
    fn run_masked(&self, masked: &Masked) -> Result<Vec<ArrayD<f32>>> {
        let images = masked.images()?;
        self.run(&[images.view().into_dyn()])
    }

    /// The batch size `run` requires, or `None` when one plan runs any batch.
    fn batch(&self) -> Option<usize>;
}

/// Which engine runs a classifier: the first of an ordered list that covers the graph, or one
/// named engine and no other.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum EngineChoice {
    /// The first engine that covers the graph (ours first, tract last).
    #[default]
    Auto,
    /// Only the engine with this name; a graph it does not cover is an error.
    Named(String),
}

impl std::str::FromStr for EngineChoice {
    type Err = Error;

    fn from_str(name: &str) -> Result<Self> {
        match name {
            "" | "auto" => Ok(Self::Auto),
            name => Ok(Self::Named(name.to_owned())),
        }
    }
}

impl std::fmt::Display for EngineChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Named(name) => f.write_str(name),
        }
    }
}

/// The engines the core knows, in the order [`EngineChoice::Auto`] tries them.
pub fn default_engines() -> Vec<Arc<dyn Engine>> {
    vec![Arc::new(cnn::Cnn), Arc::new(tract::Tract)]
}

impl EngineChoice {
    /// The engines to try, in order. `Auto`: all of them. A named engine: that one alone when
    /// `strict` (the forward graph: the user asked for it), else that one first and the others
    /// after it (gradient graphs and tails, which another engine may have to run).
    pub fn order(&self, engines: &[Arc<dyn Engine>], strict: bool) -> Result<Vec<Arc<dyn Engine>>> {
        let Self::Named(name) = self else {
            return Ok(engines.to_vec());
        };
        let Some(chosen) = engines.iter().find(|e| e.name() == name) else {
            let names: Vec<_> = engines.iter().map(|e| e.name()).collect();
            return Err(Error::Parameter(format!(
                "unknown engine `{name}`; available: auto, {}",
                names.join(", ")
            )));
        };
        let mut order = vec![chosen.clone()];
        if !strict {
            order.extend(engines.iter().filter(|e| e.name() != name).cloned());
        }
        Ok(order)
    }
}

/// A compiled plan with the engine that compiled it and why each engine tried before it
/// declined (`engine: reason`).
#[derive(Clone, Debug)]
pub struct Compiled {
    /// The plan.
    pub plan: Arc<dyn Plan>,
    /// The engine that compiled it.
    pub engine: Arc<dyn Engine>,
    /// The engines that declined before it, with their reasons.
    pub declined: Vec<String>,
}

/// Compile `graph` with the first of `engines` that can.
pub fn compile(
    engines: &[Arc<dyn Engine>],
    graph: &Graph,
    request: &PlanRequest,
) -> Result<Compiled> {
    // An engine that fails for any reason hands the graph to the next one; the reasons are kept
    // for the report, and the last engine's error is the caller's when none succeeds.
    let mut declined = Vec::new();
    let mut last_error = None;
    for engine in engines {
        match engine.compile(graph, request) {
            Ok(plan) => {
                return Ok(Compiled {
                    plan,
                    engine: engine.clone(),
                    declined,
                });
            }
            Err(e) => {
                let reason = match &e {
                    Error::Unsupported(reason) => reason.clone(),
                    other => other.to_string(),
                };
                declined.push(format!("{}: {reason}", engine.name()));
                last_error = Some(e);
            }
        }
    }
    Err(match last_error {
        Some(Error::Unsupported(_)) | None => Error::Unsupported(declined.join("; ")),
        Some(e) => e,
    })
}
