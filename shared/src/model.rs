//! Classifiers: ONNX CNNs run through the engine seam, with named intermediate tensors as extra
//! outputs.
//!
//! A [`Classifier`] is built from ONNX bytes and a [`ModelSpec`]. It parses the model once, finds
//! its layers (every 4-D tensor, with its `[C, H, W]` shape) and its class count, and compiles a
//! plan per (batch size, requested outputs) on first use through its engines (see
//! [`crate::engine`]): the lowered CNN plan when it covers the graph, else tract, with the reason
//! kept in [`EngineReport`].
//!
//! **Invariant:** nothing here panics on user input; a model that is not a single-input image
//! classifier, an unknown layer or a badly shaped input is an [`Error`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use image::RgbImage;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tract_onnx::pb::tensor_shape_proto::dimension::Value as Dim;
use tract_onnx::pb::type_proto::Value as TypeValue;
use tract_onnx::prelude::tract_ndarray::{
    Array2, ArrayD, ArrayView2, ArrayView4, ArrayViewD, Axis, Ix2, concatenate,
};
use tract_onnx::prelude::{Framework, InferenceModel, InferenceModelExt, TractResult};

use crate::engine::{
    self, Composed, Engine, EngineChoice, Graph, GraphInput, Masked, Plan, PlanRequest,
};
use crate::grad::{self, BackwardRule, GradientRequest};
use crate::onnx;
use crate::runtime::{Runtime, map_shares};
use crate::{Error, Result};

pub use camlime_base::spec::{
    Layer, ModelSpec, ModelSummary, NamedLayer, Prediction, Task, softmax,
};

/// What one forward pass returns.
#[derive(Clone, Debug)]
pub struct ForwardOutput {
    /// `N × classes` logits.
    pub logits: Array2<f32>,
    /// The requested layers' activations, in request order, each `N × C × H × W`.
    pub activations: Vec<ArrayD<f32>>,
}

/// What one forward + backward pass returns (see [`Classifier::gradients`]).
#[derive(Clone, Debug)]
pub struct GradientOutput {
    /// `N × classes` logits.
    pub logits: Array2<f32>,
    /// The requested tensors' activations, in request order.
    pub activations: Vec<ArrayD<f32>>,
    /// Gradients of Σ_b seed_b · logits_b with respect to each requested tensor.
    pub gradients: Vec<ArrayD<f32>>,
    /// The same gradient with respect to the input tensor, when requested.
    pub input_gradient: Option<ArrayD<f32>>,
}

/// Which engine runs a classifier's forward passes, and why engines before it declined.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineReport {
    /// The engine of forward passes (`cnn`, `tract`, …).
    pub forward: String,
    /// Each engine tried before it, with the reason it declined (`cnn: Softplus node …`).
    pub declined: Vec<String>,
}

impl std::fmt::Display for EngineReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.forward)?;
        if !self.declined.is_empty() {
            write!(f, " ({})", self.declined.join("; "))?;
        }
        Ok(())
    }
}

type GradientKey = (usize, GradientRequest);

/// What an explanation targets in a model whose outputs are not class logits (a detector's box,
/// …): it turns one image's raw outputs (the flattened tensors of the model's task) into the
/// values explainers see as classes, and pulls a seed on those values back onto the raw outputs
/// for the gradients. A classifier with a head ([`Classifier::with_head`]) explains those values.
pub trait Head: Send + Sync + std::fmt::Debug {
    /// One name per value.
    fn labels(&self) -> Vec<String>;
    /// The values for one image's raw outputs.
    fn values(&self, raw: &[f32]) -> Vec<f32>;
    /// The values for one image's raw outputs and Σ_k seed_k · ∂value_k/∂raw (the seed of the
    /// raw outputs' gradient), from one reading of `raw`.
    fn pullback(&self, raw: &[f32], seed: &[f32]) -> Pulled;
}

/// What [`Head::pullback`] returns for one image.
#[derive(Clone, Debug, PartialEq)]
pub struct Pulled {
    /// The head's values (as [`Head::values`]).
    pub values: Vec<f32>,
    /// The seed on the raw outputs.
    pub seed: Vec<f32>,
}

/// The tensor the flattened outputs of a multi-output task are gathered in.
pub const TASK_OUTPUTS: &str = "camlime.outputs";

/// An ONNX image classifier.
#[derive(Clone, Debug)]
pub struct Classifier {
    spec: ModelSpec,
    sha256: String,
    graph: Arc<Graph>,
    engines: Vec<Arc<dyn Engine>>,
    choice: EngineChoice,
    engine_report: EngineReport,
    input_tensor: String,
    shapes: HashMap<String, Vec<usize>>,
    logits_tensor: String,
    input_size: [usize; 2],
    fixed_batch: Option<usize>,
    batch_size: usize,
    num_classes: usize,
    labels: Vec<String>,
    layers: Vec<Layer>,
    tensor_layers: Vec<Layer>,
    default_layers: Vec<String>,
    plans: Arc<Mutex<HashMap<PlanRequest, Arc<dyn Plan>>>>,
    gradient_plans: Arc<Mutex<HashMap<GradientKey, Arc<dyn Plan>>>>,
    head: Option<Arc<dyn Head>>,
    raw_outputs: usize,
}

impl Classifier {
    /// Load a classifier from ONNX bytes, run by the core's engines (see
    /// [`engine::default_engines`]).
    pub fn new(onnx_bytes: &[u8], spec: ModelSpec) -> Result<Self> {
        Self::with_engine_list(onnx_bytes, spec, engine::default_engines())
    }

    /// Load a classifier from ONNX bytes, run by `engines` (tried in order).
    pub fn with_engine_list(
        onnx_bytes: &[u8],
        spec: ModelSpec,
        engines: Vec<Arc<dyn Engine>>,
    ) -> Result<Self> {
        spec.preprocessing.validate()?;
        // Declared intermediate shapes (value_info) carry the symbolic batch; plans fix it, so ignore them.
        let onnx = tract_onnx::onnx()
            .with_ignore_output_shapes(true)
            .with_ignore_value_info(true);
        let mut proto = onnx
            .proto_model_for_read(&mut &onnx_bytes[..])
            .map_err(|e| Error::Model(format!("not an ONNX model: {e}")))?;
        if let Some(graph) = proto.graph.as_mut() {
            onnx::fold_half_weights(graph);
            let outputs = spec.task.outputs();
            if !outputs.is_empty() {
                onnx::gather_outputs(graph, &outputs, TASK_OUTPUTS)?;
            }
        }
        let graph = proto
            .graph
            .as_ref()
            .ok_or_else(|| Error::Model("ONNX file has no graph".into()))?;
        let signature = InputSignature::read(graph, &spec)?;
        let mut spec = spec;
        let model_crop = signature.size.map(|s| s as u32);
        if spec.preprocessing.crop != model_crop {
            // The model fixes its own input size: keep the preprocessing's proportions at that size.
            spec.preprocessing = spec.preprocessing.scaled_to(model_crop);
        }
        let logits_tensor = match (&spec.output, graph.output.as_slice()) {
            _ if !spec.task.outputs().is_empty() => TASK_OUTPUTS.to_owned(),
            (Some(name), _) => name.clone(),
            (None, [single]) => single.name.clone(),
            (None, outputs) => {
                let names: Vec<_> = outputs.iter().map(|o| o.name.as_str()).collect();
                return Err(Error::Model(format!(
                    "the model has {} outputs ({}); say which one holds the logits",
                    names.len(),
                    names.join(", ")
                )));
            }
        };
        let [h, w] = signature.size;
        let graph = Arc::new(Graph::new(
            proto,
            vec![GraphInput {
                name: signature.name.clone(),
                dims: vec![3, h, w],
            }],
        )?);
        let mut classifier = Self {
            sha256: format!("{:x}", Sha256::digest(onnx_bytes)),
            graph,
            engines,
            choice: EngineChoice::Auto,
            engine_report: EngineReport {
                forward: String::new(),
                declined: Vec::new(),
            },
            input_tensor: signature.name,
            shapes: HashMap::new(),
            logits_tensor,
            input_size: signature.size,
            fixed_batch: signature.fixed_batch,
            batch_size: 1,
            num_classes: 0,
            labels: Vec::new(),
            layers: Vec::new(),
            tensor_layers: Vec::new(),
            default_layers: Vec::new(),
            plans: Arc::default(),
            gradient_plans: Arc::default(),
            head: None,
            raw_outputs: 0,
            spec,
        };
        classifier.discover()?;
        classifier.choose_engine()?;
        Ok(classifier)
    }

    /// Compile the forward plan of the logits once, so the engine that runs this model is known
    /// (and reported) from the start.
    fn choose_engine(&mut self) -> Result<()> {
        self.plans = Arc::default();
        self.gradient_plans = Arc::default();
        let request = PlanRequest {
            batch: self.fixed_batch.unwrap_or(1),
            start: None,
            outputs: vec![self.logits_tensor.clone()],
        };
        let order = self.choice.order(&self.engines, true)?;
        let compiled = engine::compile(&order, &self.graph, &request)?;
        self.engine_report = EngineReport {
            forward: compiled.engine.name().to_owned(),
            declined: compiled.declined,
        };
        self.cache_plan(request, compiled.plan);
        Ok(())
    }

    /// Which engine runs forward passes, and why any engine before it declined.
    pub fn engine_report(&self) -> &EngineReport {
        &self.engine_report
    }

    /// Run forward passes with `choice` (`auto`, or one engine's name: an engine that does not
    /// cover the graph is then an error).
    pub fn with_engine_choice(mut self, choice: EngineChoice) -> Result<Self> {
        self.choice = choice;
        self.choose_engine()?;
        Ok(self)
    }

    /// Replace the engines (in the order [`EngineChoice::Auto`] tries them): how other crates
    /// add engines the core does not know, e.g. a GPU device.
    pub fn with_engines(mut self, engines: Vec<Arc<dyn Engine>>) -> Result<Self> {
        self.engines = engines;
        self.choose_engine()?;
        Ok(self)
    }

    /// The plan for `request`, compiled on first use (one plan serves every batch size when its
    /// engine allows). Forward plans go to the engine that took the forward graph at load, so an
    /// engine that declined it is not asked again; tails try the engines in order.
    fn compiled_plan(&self, request: PlanRequest, forward: bool) -> Result<Arc<dyn Plan>> {
        // The lock is held while compiling, so threads that need the same plan compile it once.
        let mut plans = self.plans.lock().unwrap_or_else(PoisonError::into_inner);
        let any_batch = PlanRequest {
            batch: 0,
            ..request.clone()
        };
        if let Some(plan) = plans.get(&request).or_else(|| plans.get(&any_batch)) {
            return Ok(plan.clone());
        }
        let order = if forward {
            let chosen = self
                .engines
                .iter()
                .find(|e| e.name() == self.engine_report.forward);
            chosen.cloned().into_iter().collect()
        } else {
            self.choice.order(&self.engines, false)?
        };
        let plan = engine::compile(&order, &self.graph, &request)?.plan;
        insert_plan(&mut plans, request, plan.clone());
        Ok(plan)
    }

    fn cache_plan(&self, request: PlanRequest, plan: Arc<dyn Plan>) {
        let mut plans = self.plans.lock().unwrap_or_else(PoisonError::into_inner);
        insert_plan(&mut plans, request, plan);
    }

    /// Analyse the graph at the smallest batch: class count, 4-D tensors, named and default layers.
    fn discover(&mut self) -> Result<()> {
        let batch = self.fixed_batch.unwrap_or(1);
        let typed = self
            .concrete_model(batch)
            .and_then(|m| m.with_outputs_by_name([self.logits_tensor.as_str()]))
            .map_err(|e| {
                Error::Model(format!(
                    "no tensor named `{}` in the model: {e}",
                    self.logits_tensor
                ))
            })?
            .into_typed()
            .map_err(|e| Error::Model(format!("cannot infer the model's shapes: {e:#}")))?;
        let logits_shape = typed
            .output_fact(0)
            .ok()
            .and_then(|f| f.shape.as_concrete().map(<[usize]>::to_vec))
            .unwrap_or_default();
        self.raw_outputs = match logits_shape.as_slice() {
            [b, classes] if *b == batch && *classes > 0 => *classes,
            other => {
                return Err(Error::Model(format!(
                    "`{}` should be batch × classes logits, found shape {other:?}",
                    self.logits_tensor
                )));
            }
        };
        let [h, w] = self.input_size;
        self.shapes
            .insert(self.input_tensor.clone(), vec![batch, 3, h, w]);
        let order = typed
            .eval_order()
            .map_err(|e| Error::Model(e.to_string()))?;
        for node in order.iter().map(|&id| typed.node(id)) {
            for (slot, output) in node.outputs.iter().enumerate() {
                let Some(label) = typed.outlet_label((node.id, slot).into()) else {
                    continue;
                };
                if let Some(shape) = output.fact.shape.as_concrete() {
                    self.shapes.insert(label.to_owned(), shape.to_vec());
                }
                if let Some([_, c, h, w]) = output.fact.shape.as_concrete()
                    && !self.tensor_layers.iter().any(|l| l.tensor == label)
                {
                    let layer = Layer {
                        name: label.to_owned(),
                        tensor: label.to_owned(),
                        shape: [*c, *h, *w],
                    };
                    self.tensor_layers.push(layer);
                }
            }
        }
        self.layers = if self.spec.named_layers.is_empty() {
            self.tensor_layers.clone()
        } else {
            let mut named = Vec::with_capacity(self.spec.named_layers.len());
            for binding in &self.spec.named_layers {
                let found = self
                    .tensor_layers
                    .iter()
                    .find(|l| l.tensor == binding.tensor)
                    .ok_or_else(|| {
                        Error::Model(format!(
                            "layer `{}` names tensor `{}`, which is not a 4-D tensor of the model",
                            binding.name, binding.tensor
                        ))
                    })?;
                named.push(Layer {
                    name: binding.name.clone(),
                    ..found.clone()
                });
            }
            named
        };
        self.default_layers = if self.spec.default_layers.is_empty() {
            let last_spatial = self
                .tensor_layers
                .iter()
                .rev()
                .find(|l| l.shape[1] * l.shape[2] > 1);
            last_spatial
                .map(|l| vec![l.name.clone()])
                .unwrap_or_default()
        } else {
            for name in &self.spec.default_layers {
                self.layer(name)?;
            }
            self.spec.default_layers.clone()
        };
        self.num_classes = self.raw_outputs;
        if let Task::Detection(detector) = &self.spec.task {
            // The raw outputs are not classes: explanations bind a head ([`Classifier::with_head`]).
            let classes = detector.classes(self.input_size, self.raw_outputs)?;
            if !self.spec.labels.is_empty() && self.spec.labels.len() != classes {
                return Err(Error::Model(format!(
                    "the detector predicts {classes} classes but {} labels were given",
                    self.spec.labels.len()
                )));
            }
            return Ok(());
        }
        if let Task::Embedding = &self.spec.task {
            // The raw outputs are the embedding; explanations bind a similarity head.
            return Ok(());
        }
        if let Task::Segmentation(_) = &self.spec.task {
            // One logit map; explanations bind a head summing a region of it.
            self.segmentation_size()?;
            if self.spec.labels.len() > 1 {
                return Err(Error::Model(format!(
                    "the segmenter has one class but {} labels were given",
                    self.spec.labels.len()
                )));
            }
            return Ok(());
        }
        self.labels = match self.spec.labels.len() {
            0 => (0..self.num_classes)
                .map(|i| format!("class {i}"))
                .collect(),
            n if n == self.num_classes => self.spec.labels.clone(),
            n => {
                return Err(Error::Model(format!(
                    "the model predicts {} classes but {n} labels were given",
                    self.num_classes
                )));
            }
        };
        Ok(())
    }

    /// The parsed model with its input fixed to `batch × 3 × H × W` (shape inference).
    fn concrete_model(&self, batch: usize) -> TractResult<InferenceModel> {
        engine::tract::concrete(&self.graph, batch)
    }

    /// The graph every engine compiles (a device outside the core compiles its own plans).
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The name of the logits tensor.
    pub fn logits_name(&self) -> &str {
        &self.logits_tensor
    }

    /// The parsed ONNX proto (for edited copies, `model_edit`).
    pub(crate) fn proto(&self) -> &tract_onnx::pb::ModelProto {
        self.graph.proto()
    }

    /// The name of the graph's image input.
    pub(crate) fn input_name(&self) -> &str {
        &self.input_tensor
    }

    /// Images one plan runs at a time.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// Choose how many images one plan runs at a time (models with a fixed batch keep theirs).
    pub fn with_batch_size(mut self, batch_size: usize) -> Result<Self> {
        if batch_size == 0 || batch_size > 4096 {
            return Err(Error::Parameter(format!(
                "batch size must lie in 1..=4096, found {batch_size}"
            )));
        }
        self.batch_size = batch_size;
        Ok(self)
    }

    /// Replace the class names (one per class), e.g. ImageNet's for a user's 1000-class model.
    pub fn with_labels(mut self, labels: Vec<String>) -> Result<Self> {
        if labels.len() != self.num_classes {
            return Err(Error::Model(format!(
                "the model predicts {} classes but {} labels were given",
                self.num_classes,
                labels.len()
            )));
        }
        self.spec.labels.clone_from(&labels);
        self.labels = labels;
        Ok(self)
    }

    /// The spec this classifier was built with.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// What the model offers explanations, in one value (the server's listing, the page).
    pub fn summary(&self) -> ModelSummary {
        ModelSummary {
            name: self.spec().name.clone(),
            sha256: self.sha256().to_owned(),
            input_size: self.input_size(),
            task: self.spec.task.name().to_owned(),
            num_classes: match &self.spec.task {
                Task::Detection(detector) => detector
                    .classes(self.input_size, self.raw_outputs)
                    .unwrap_or_default(),
                Task::Segmentation(_) => 1,
                Task::Classification | Task::Embedding => self.num_classes(),
            },
            default_layers: self.default_layers().to_vec(),
            layers: self.layers().to_vec(),
        }
    }

    /// SHA-256 of the ONNX bytes, lower-case hex.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// Class names, one per class.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// Input `[height, width]`.
    pub fn input_size(&self) -> [usize; 2] {
        self.input_size
    }

    /// The layers users pick from: the named layers, or every 4-D tensor when there are none.
    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    /// Every 4-D tensor of the graph, in evaluation order, addressed by tensor name.
    pub fn tensor_layers(&self) -> &[Layer] {
        &self.tensor_layers
    }

    /// The default target layers.
    pub fn default_layers(&self) -> &[String] {
        &self.default_layers
    }

    /// Resolve a layer by readable name, then by tensor name.
    pub fn layer(&self, name: &str) -> Result<&Layer> {
        self.layers
            .iter()
            .find(|l| l.name == name)
            .or_else(|| self.tensor_layers.iter().find(|l| l.tensor == name))
            .ok_or_else(|| Error::UnknownLayer {
                name: name.to_owned(),
                available: self
                    .layers
                    .iter()
                    .map(|l| l.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// Run the model on an `N × 3 × H × W` tensor, returning the logits and the activations of
    /// `layers` (readable or tensor names). Work is split into plans of the configured batch size.
    pub fn forward(&self, input: ArrayView4<f32>, layers: &[&str]) -> Result<ForwardOutput> {
        let mut out = self.forward_raw(input, layers)?;
        out.logits = self.headed(out.logits)?;
        Ok(out)
    }

    /// The model's raw outputs for `N × 3 × H × W` images, whatever head is bound: a
    /// classifier's logits, a task's flattened output tensors.
    pub fn raw_outputs(&self, input: ArrayView4<f32>) -> Result<Array2<f32>> {
        Ok(self.forward_raw(input, &[])?.logits)
    }

    /// A copy of this classifier (sharing its graph, engines and compiled plans) whose
    /// "classes" are `head`'s values.
    pub fn with_head(&self, head: Arc<dyn Head>) -> Result<Self> {
        let labels = head.labels();
        if labels.is_empty() {
            return Err(Error::Model("a head needs at least one value".into()));
        }
        Ok(Self {
            num_classes: labels.len(),
            labels,
            head: Some(head),
            ..self.clone()
        })
    }

    /// Whether a head is bound: the values are scores explained as they are, not logits whose
    /// softmax LIME explains.
    pub fn has_head(&self) -> bool {
        self.head.is_some()
    }

    /// What LIME explains for one row of values: a classifier's softmax probabilities, a head's
    /// values as they are.
    pub fn lime_values(&self, values: &[f32]) -> Vec<f32> {
        if self.head.is_some() {
            values.to_vec()
        } else {
            softmax(values)
        }
    }

    /// Raw outputs through the bound head (unchanged without one).
    fn headed(&self, raw: Array2<f32>) -> Result<Array2<f32>> {
        let Some(head) = &self.head else {
            return Ok(raw);
        };
        let mut values = Array2::zeros((raw.nrows(), self.num_classes));
        for (row, mut out) in raw.rows().into_iter().zip(values.rows_mut()) {
            let row = row.as_standard_layout();
            out.assign(&self.head_row(head.values(row.as_slice().unwrap_or_default()))?);
        }
        Ok(values)
    }

    /// One image's head values as a row, checked against the head's labels.
    fn head_row(
        &self,
        values: Vec<f32>,
    ) -> Result<tract_onnx::prelude::tract_ndarray::Array1<f32>> {
        if values.len() != self.num_classes {
            return Err(Error::Inference(format!(
                "the head returned {} values for {} labels",
                values.len(),
                self.num_classes
            )));
        }
        Ok(ndarray_row(values))
    }

    /// [`Classifier::forward`] without the head.
    fn forward_raw(&self, input: ArrayView4<f32>, layers: &[&str]) -> Result<ForwardOutput> {
        self.check_input_dims(input.dim())?;
        let mut outputs = vec![self.logits_tensor.clone()];
        for name in layers {
            outputs.push(self.layer(name)?.tensor.clone());
        }
        let chunk = self.fixed_batch.unwrap_or(self.batch_size);
        let mut joined = run_in_chunks(
            &[input.into_dyn()],
            chunk,
            self.fixed_batch.is_some(),
            |batch| {
                let request = PlanRequest {
                    batch,
                    start: None,
                    outputs: outputs.clone(),
                };
                self.compiled_plan(request, true)
            },
        )?
        .into_iter();
        let logits = joined
            .next()
            .ok_or_else(|| Error::Inference("no logits".into()))?
            .into_dimensionality::<Ix2>()
            .map_err(|e| Error::Inference(format!("logits: {e}")))?;
        let activations = joined.collect();
        Ok(ForwardOutput {
            logits,
            activations,
        })
    }

    /// The logits of a [`Composed`] batch (LIME's samples), in plans of the configured batch
    /// size: a device composes the images itself. Equal to [`Classifier::forward`] on
    /// [`Composed::images`].
    pub fn forward_composed(&self, composed: &Composed) -> Result<Array2<f32>> {
        composed.validate()?;
        let (c, h, w) = composed.on.dim();
        self.check_input_dims((composed.keep.nrows(), c, h, w))?;
        if self.fixed_batch.is_some() {
            return Ok(self.forward(composed.images()?.view(), &[])?.logits);
        }
        self.forward_built(composed.keep.nrows(), |plan, rows| {
            plan.run_composed(&Composed {
                keep: composed.keep.slice_axis(Axis(0), rows.into()),
                ..*composed
            })
        })
    }

    /// The logits of a [`Masked`] batch (Score-CAM's), in plans of the configured batch size: a
    /// device builds the images itself. Equal to [`Classifier::forward`] on [`Masked::images`].
    pub fn forward_masked(&self, masked: &Masked) -> Result<Array2<f32>> {
        masked.validate()?;
        let (c, h, w) = masked.image.dim();
        self.check_input_dims((masked.maps.dim().0, c, h, w))?;
        if self.fixed_batch.is_some() {
            return Ok(self.forward(masked.images()?.view(), &[])?.logits);
        }
        self.forward_built(masked.maps.dim().0, |plan, rows| {
            plan.run_masked(&Masked {
                maps: masked.maps.slice_axis(Axis(0), rows.into()),
                ..*masked
            })
        })
    }

    /// An `N×C×H×W` input fits the model: `N ≥ 1` RGB images of its size.
    fn check_input_dims(&self, (n, c, ih, iw): (usize, usize, usize, usize)) -> Result<()> {
        let [h, w] = self.input_size;
        if n == 0 || c != 3 || (ih, iw) != (h, w) {
            return Err(Error::Parameter(format!(
                "input must be N×3×{h}×{w} with N ≥ 1, found {n}×{c}×{ih}×{iw}"
            )));
        }
        Ok(())
    }

    /// The logits of `n` images that the plans build themselves: `run` runs a range of rows on
    /// a plan, in plans of the configured batch size.
    fn forward_built(
        &self,
        n: usize,
        run: impl Fn(&dyn Plan, std::ops::Range<usize>) -> Result<Vec<ArrayD<f32>>>,
    ) -> Result<Array2<f32>> {
        let mut parts = Vec::new();
        for start in (0..n).step_by(self.batch_size) {
            let end = (start + self.batch_size).min(n);
            let request = PlanRequest {
                batch: end - start,
                start: None,
                outputs: vec![self.logits_tensor.clone()],
            };
            let plan = self.compiled_plan(request, true)?;
            let logits = run(plan.as_ref(), start..end)?
                .into_iter()
                .next()
                .ok_or_else(|| Error::Inference("no logits".into()))?
                .into_dimensionality::<Ix2>()
                .map_err(|e| Error::Inference(format!("logits: {e}")))?;
            parts.push(logits);
        }
        let views: Vec<_> = parts.iter().map(|p| p.view()).collect();
        let raw = concatenate(Axis(0), &views).map_err(|e| Error::Inference(e.to_string()))?;
        self.headed(raw)
    }

    /// Whether forward passes run on a device that wants whole batches from one caller (a GPU)
    /// rather than one share per CPU thread.
    pub fn on_device(&self) -> bool {
        self.engines
            .iter()
            .any(|e| e.name() == self.engine_report.forward && e.is_device())
    }

    /// [`Classifier::forward`] with the images divided into one contiguous share per thread of
    /// `runtime`. Each image runs in the same plans whatever the split, so the result does not
    /// depend on it.
    pub fn forward_with(
        &self,
        runtime: &impl Runtime,
        input: ArrayView4<f32>,
        layers: &[&str],
    ) -> Result<ForwardOutput> {
        let n = input.dim().0;
        if runtime.threads().clamp(1, n.max(1)) == 1 {
            return self.forward(input, layers);
        }
        let parts = map_shares(runtime, 0..n, &|range| {
            self.forward(input.slice_axis(Axis(0), range.into()), layers)
        });
        let parts = parts.into_iter().collect::<Result<Vec<_>>>()?;
        let logits: Vec<_> = parts.iter().map(|p| p.logits.view()).collect();
        let logits = concatenate(Axis(0), &logits).map_err(|e| Error::Inference(e.to_string()))?;
        let activations = (0..layers.len())
            .map(|i| {
                let views: Vec<_> = parts.iter().map(|p| p.activations[i].view()).collect();
                concatenate(Axis(0), &views).map_err(|e| Error::Inference(e.to_string()))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(ForwardOutput {
            logits,
            activations,
        })
    }

    /// What the backward transform is asked for: the layers' tensors, the input or not, the rule.
    fn gradient_request(
        &self,
        layers: &[&str],
        input_gradient: bool,
        rule: BackwardRule,
    ) -> Result<GradientRequest> {
        let mut tensors = Vec::with_capacity(layers.len());
        for name in layers {
            tensors.push(self.layer(name)?.tensor.clone());
        }
        Ok(GradientRequest {
            tensors,
            input: input_gradient,
            rule,
        })
    }

    /// The gradient model for `layers` (readable or tensor names) and, when `input_gradient`,
    /// the input: the classifier's graph plus its backward pass (see [`grad::transform`]).
    pub fn gradient_model(
        &self,
        layers: &[&str],
        input_gradient: bool,
        rule: BackwardRule,
    ) -> Result<grad::GradientModel> {
        self.transform(&self.gradient_request(layers, input_gradient, rule)?)
    }

    /// The backward transform of this classifier's graph for `request`.
    fn transform(&self, request: &GradientRequest) -> Result<grad::GradientModel> {
        grad::transform(
            self.graph.proto(),
            &self.input_tensor,
            &self.logits_tensor,
            &self.shapes,
            request,
        )
    }

    /// The gradient plan for this batch size and request, built by the backward transform and
    /// compiled on first use.
    fn gradient_plan(&self, batch: usize, request: &GradientRequest) -> Result<Arc<dyn Plan>> {
        let mut plans = self
            .gradient_plans
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let key = (batch, request.clone());
        if let Some(plan) = plans.get(&key) {
            return Ok(plan.clone());
        }
        let augmented = self.transform(request)?;
        let [h, w] = self.input_size;
        let graph = Graph::new(
            augmented.proto,
            vec![
                GraphInput {
                    name: self.input_tensor.clone(),
                    dims: vec![3, h, w],
                },
                GraphInput {
                    name: grad::SEED.to_owned(),
                    dims: vec![self.raw_outputs],
                },
            ],
        )?;
        let plan_request = PlanRequest {
            batch,
            start: None,
            outputs: augmented.outputs,
        };
        let order = self.choice.order(&self.engines, false)?;
        let plan = engine::compile(&order, &graph, &plan_request)
            .map_err(|e| {
                Error::Model(format!(
                    "cannot compile the gradient model for batch {batch}: {e}"
                ))
            })?
            .plan;
        plans.insert(key, plan.clone());
        Ok(plan)
    }

    /// Run the model forward and backward on an `N × 3 × H × W` tensor: logits, the
    /// activations of `layers`, and the gradients of Σ_b seeds_b · logits_b (`seeds`:
    /// `N × classes`) with respect to those activations and, when `input_gradient`, the input.
    pub fn gradients(
        &self,
        input: ArrayView4<f32>,
        seeds: ArrayView2<f32>,
        layers: &[&str],
        input_gradient: bool,
        rule: BackwardRule,
    ) -> Result<GradientOutput> {
        self.check_input_dims(input.dim())?;
        let n = input.dim().0;
        if seeds.dim() != (n, self.num_classes) {
            return Err(Error::Parameter(format!(
                "seeds must be {n}×{}, found {}×{}",
                self.num_classes,
                seeds.dim().0,
                seeds.dim().1
            )));
        }
        let request = self.gradient_request(layers, input_gradient, rule)?;
        let chunk = self.fixed_batch.unwrap_or(self.batch_size);
        // The gradient plan takes its seed as an input, so a head must first see the raw outputs
        // at this input to pull its seed back onto them; its values come from that same reading.
        let mut head_values = None;
        let pulled;
        let seeds = match &self.head {
            None => seeds,
            Some(head) => {
                let raw = self.forward_raw(input, &[])?.logits;
                let mut raw_seeds = Array2::zeros((n, self.raw_outputs));
                let mut values = Array2::zeros((n, self.num_classes));
                for (((row, seed), mut out), mut value) in raw
                    .rows()
                    .into_iter()
                    .zip(seeds.rows())
                    .zip(raw_seeds.rows_mut())
                    .zip(values.rows_mut())
                {
                    let (row, seed) = (row.as_standard_layout(), seed.as_standard_layout());
                    let pulled = head.pullback(
                        row.as_slice().unwrap_or_default(),
                        seed.as_slice().unwrap_or_default(),
                    );
                    out.assign(&ndarray_row(pulled.seed));
                    value.assign(&self.head_row(pulled.values)?);
                }
                head_values = Some(values);
                pulled = raw_seeds;
                pulled.view()
            }
        };
        let mut joined = run_in_chunks(
            &[input.into_dyn(), seeds.into_dyn()],
            chunk,
            self.fixed_batch.is_some(),
            |batch| self.gradient_plan(batch, &request),
        )?
        .into_iter();
        let logits = joined
            .next()
            .ok_or_else(|| Error::Inference("no logits".into()))?
            .into_dimensionality::<Ix2>()
            .map_err(|e| Error::Inference(format!("logits: {e}")))?;
        let activations: Vec<_> = joined.by_ref().take(layers.len()).collect();
        let gradients: Vec<_> = joined.by_ref().take(layers.len()).collect();
        Ok(GradientOutput {
            logits: head_values.unwrap_or(logits),
            activations,
            gradients,
            input_gradient: joined.next(),
        })
    }

    /// Every 4-D output of a layer with a bias (Conv with bias, BatchNormalization) and that
    /// bias per channel: FullGrad's layers.
    pub fn bias_layers(&self) -> Result<Vec<(String, Vec<f32>)>> {
        let biases = grad::bias_tensors(self.graph.proto())?;
        Ok(biases
            .into_iter()
            .filter(|(tensor, _)| self.tensor_layers.iter().any(|l| &l.tensor == tensor))
            .collect())
    }

    /// The class an explanation targets: `requested` when it is a class of the model, else the
    /// top class of `logits`.
    pub fn target_class(&self, logits: &[f32], requested: Option<usize>) -> Result<usize> {
        match requested {
            Some(class) => self.check_class(class),
            None => Ok(self.top_k(logits, 1)?[0].class),
        }
    }

    /// `class` if the model has it, else an error.
    pub fn check_class(&self, class: usize) -> Result<usize> {
        if class < self.num_classes {
            Ok(class)
        } else {
            Err(Error::Parameter(format!(
                "target class {class} is out of range: the model has {} classes",
                self.num_classes
            )))
        }
    }

    /// Requested target layers, each checked to exist, or the model's defaults when none are
    /// given.
    pub fn target_layers(&self, requested: &[String]) -> Result<Vec<String>> {
        if requested.is_empty() {
            if self.default_layers.is_empty() {
                return Err(Error::Parameter(
                    "the model has no spatial layer to explain".into(),
                ));
            }
            return Ok(self.default_layers.clone());
        }
        for layer in requested {
            self.layer(layer)?;
        }
        Ok(requested.to_vec())
    }

    /// The network from `layer`'s activation to the logits, compiled for batches of `batch`:
    /// tract model surgery replaces the layer's producer with a new input, so the head of the
    /// network is pruned and only the tail runs (Ablation-CAM re-runs it once per channel).
    pub fn tail(&self, layer: &str, batch: usize) -> Result<Tail> {
        let layer = self.layer(layer)?.clone();
        let batch = self.fixed_batch.unwrap_or(batch).max(1);
        let request = PlanRequest {
            batch,
            start: Some(layer.tensor.clone()),
            outputs: vec![self.logits_tensor.clone()],
        };
        let plan = self.compiled_plan(request, false).map_err(|e| {
            Error::Model(format!(
                "cannot cut the model at `{}` for batch {batch}: {e}",
                layer.name
            ))
        })?;
        Ok(Tail {
            plan,
            shape: layer.shape,
            batch,
            classifier: self.clone(),
        })
    }

    /// Logits of base images (already resized and cropped to the input size).
    pub fn logits(&self, images: &[RgbImage]) -> Result<Array2<f32>> {
        let tensor = self.spec.preprocessing.tensor(images)?;
        Ok(self.forward(tensor.view(), &[])?.logits)
    }

    /// Softmax probabilities over all classes for base images (what LIME's classifier returns).
    pub fn probabilities(&self, images: &[RgbImage]) -> Result<Array2<f32>> {
        let mut logits = self.logits(images)?;
        for mut row in logits.rows_mut() {
            let probabilities = softmax(&row.to_vec());
            row.iter_mut()
                .zip(probabilities)
                .for_each(|(value, p)| *value = p);
        }
        Ok(logits)
    }

    /// A segmenter's map `[height, width]` (its logits are `N × 1 × height × width`), or an
    /// error for any other model or shape.
    pub fn segmentation_size(&self) -> Result<[usize; 2]> {
        let Task::Segmentation(segmenter) = &self.spec.task else {
            return Err(Error::Parameter(format!(
                "`{}` is {} model, not a segmenter",
                self.spec.name,
                self.spec.task.with_article()
            )));
        };
        match self.shapes.get(&segmenter.logits).map(Vec::as_slice) {
            Some([_, 1, h, w]) if h * w == self.raw_outputs => Ok([*h, *w]),
            other => Err(Error::Model(format!(
                "a segmenter's `{}` must be one N × 1 × H × W logit map, found shape {other:?}",
                segmenter.logits
            ))),
        }
    }

    /// The top `k` classes of each base image, most probable first.
    pub fn predict(&self, images: &[RgbImage], k: usize) -> Result<Vec<Vec<Prediction>>> {
        match (&self.spec.task, &self.head) {
            (Task::Detection(_), None) => {
                return Err(Error::Parameter(format!(
                    "`{}` is a detector: it has no classes to predict; detect its objects instead",
                    self.spec.name
                )));
            }
            (Task::Embedding, None) => {
                return Err(Error::Parameter(format!(
                    "`{}` is a face embedding: it has no classes to predict; explain its \
                     similarity to a reference face instead (`--reference FACE.jpg`)",
                    self.spec.name
                )));
            }
            (Task::Segmentation(_), None) => {
                return Err(Error::Parameter(format!(
                    "`{}` is a segmenter: it has no classes to predict; explain a region of its \
                     mask instead (`--task segmentation`)",
                    self.spec.name
                )));
            }
            _ => {}
        }
        let logits = self.logits(images)?;
        logits
            .rows()
            .into_iter()
            .map(|row| self.top_k(&row.to_vec(), k))
            .collect()
    }

    /// The top `k` classes of one row of logits, most probable first (ties: lower class first).
    pub fn top_k(&self, logits: &[f32], k: usize) -> Result<Vec<Prediction>> {
        if k == 0 {
            return Err(Error::Parameter("top-k needs k ≥ 1".into()));
        }
        let probabilities = softmax(logits);
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|&a, &b| {
            probabilities[b]
                .total_cmp(&probabilities[a])
                .then(a.cmp(&b))
        });
        Ok(order
            .into_iter()
            .take(k)
            .map(|class| Prediction {
                class,
                label: self
                    .labels
                    .get(class)
                    .cloned()
                    .unwrap_or_else(|| format!("class {class}")),
                probability: probabilities[class],
                logit: logits[class],
            })
            .collect())
    }
}

/// The tail of a classifier from one layer to the logits (see [`Classifier::tail`]).
#[derive(Debug)]
pub struct Tail {
    plan: Arc<dyn Plan>,
    shape: [usize; 3],
    batch: usize,
    classifier: Classifier,
}

impl Tail {
    /// The batch size the plan was compiled for.
    pub fn batch_size(&self) -> usize {
        self.batch
    }

    /// Logits for `N × C × H × W` activations (any N; chunks of the plan's batch, the last one
    /// zero-padded and the padding dropped).
    pub fn logits(&self, activations: ArrayView4<f32>) -> Result<Array2<f32>> {
        let (n, c, h, w) = activations.dim();
        if n == 0 || [c, h, w] != self.shape {
            return Err(Error::Parameter(format!(
                "tail input must be N×{}×{}×{}, found {n}×{c}×{h}×{w}",
                self.shape[0], self.shape[1], self.shape[2]
            )));
        }
        let raw = run_in_chunks(&[activations.into_dyn()], self.batch, true, |_| {
            Ok(self.plan.clone())
        })?
        .into_iter()
        .next()
        .ok_or_else(|| Error::Inference("no logits".into()))?
        .into_dimensionality::<Ix2>()
        .map_err(|e| Error::Inference(format!("logits: {e}")))?;
        self.classifier.headed(raw)
    }
}

/// One row of values as an array.
fn ndarray_row(values: Vec<f32>) -> tract_onnx::prelude::tract_ndarray::Array1<f32> {
    values.into()
}

/// A plan in the cache under its request, or under batch 0 when it runs any batch.
fn insert_plan(
    plans: &mut HashMap<PlanRequest, Arc<dyn Plan>>,
    request: PlanRequest,
    plan: Arc<dyn Plan>,
) {
    let key = match plan.batch() {
        Some(_) => request,
        None => PlanRequest {
            batch: 0,
            ..request
        },
    };
    plans.insert(key, plan);
}

/// Run `inputs` (all with the same `n` rows on axis 0) through `plan_for(batch)` in chunks of
/// `chunk` rows; with `pad`, the last chunk is zero-padded to `chunk` (plans with a fixed batch).
/// Returns each output joined along axis 0, padding dropped.
fn run_in_chunks(
    inputs: &[ArrayViewD<f32>],
    chunk: usize,
    pad: bool,
    plan_for: impl Fn(usize) -> Result<Arc<dyn Plan>>,
) -> Result<Vec<ArrayD<f32>>> {
    let n = inputs.first().map_or(0, |i| i.shape()[0]);
    let mut pieces: Vec<Vec<ArrayD<f32>>> = Vec::new();
    for start in (0..n).step_by(chunk.max(1)) {
        let end = (start + chunk).min(n);
        let batch = if pad { chunk } else { end - start };
        let parts: Vec<ArrayD<f32>> = if batch == end - start {
            Vec::new()
        } else {
            inputs
                .iter()
                .map(|input| {
                    let mut shape = input.shape().to_vec();
                    shape[0] = batch;
                    let mut part = ArrayD::<f32>::zeros(shape);
                    part.slice_axis_mut(Axis(0), (0..end - start).into())
                        .assign(&input.slice_axis(Axis(0), (start..end).into()));
                    part
                })
                .collect()
        };
        let views: Vec<ArrayViewD<f32>> = if parts.is_empty() {
            inputs
                .iter()
                .map(|input| input.slice_axis(Axis(0), (start..end).into()))
                .collect()
        } else {
            parts.iter().map(|p| p.view()).collect()
        };
        let results = plan_for(batch)?.run(&views)?;
        pieces.resize(results.len(), Vec::new());
        for (slot, value) in results.into_iter().enumerate() {
            pieces[slot].push(if value.shape()[0] == end - start {
                value
            } else {
                value
                    .slice_axis(Axis(0), (0..end - start).into())
                    .to_owned()
            });
        }
    }
    if pieces.iter().all(|p| p.len() == 1) {
        return Ok(pieces.into_iter().flatten().collect());
    }
    pieces
        .into_iter()
        .map(|parts| {
            let views: Vec<_> = parts.iter().map(|p| p.view()).collect();
            concatenate(Axis(0), &views).map_err(|e| Error::Inference(e.to_string()))
        })
        .collect()
}

/// The one image input of an ONNX graph, read from its declared type.
struct InputSignature {
    name: String,
    size: [usize; 2],
    fixed_batch: Option<usize>,
}

impl InputSignature {
    fn read(graph: &tract_onnx::pb::GraphProto, spec: &ModelSpec) -> Result<Self> {
        let weights: std::collections::HashSet<&str> =
            graph.initializer.iter().map(|t| t.name.as_str()).collect();
        let inputs: Vec<_> = graph
            .input
            .iter()
            .filter(|i| !weights.contains(i.name.as_str()))
            .collect();
        let [input] = inputs.as_slice() else {
            let names: Vec<_> = inputs.iter().map(|i| i.name.as_str()).collect();
            return Err(Error::Model(format!(
                "expected one image input, found {} ({})",
                names.len(),
                names.join(", ")
            )));
        };
        if let Some(expected) = &spec.input
            && &input.name != expected
        {
            return Err(Error::Model(format!(
                "expected input `{expected}`, found `{}`",
                input.name
            )));
        }
        let dims: Vec<Option<usize>> = match input.r#type.as_ref().and_then(|t| t.value.as_ref()) {
            Some(TypeValue::TensorType(tensor)) => tensor
                .shape
                .as_ref()
                .map(|shape| {
                    shape
                        .dim
                        .iter()
                        .map(|d| match d.value {
                            Some(Dim::DimValue(v)) if v > 0 => Some(v as usize),
                            _ => None,
                        })
                        .collect()
                })
                .unwrap_or_else(|| vec![None; 4]),
            None => vec![None; 4],
        };
        let [batch, channels, height, width] = dims.as_slice() else {
            return Err(Error::Model(format!(
                "input `{}` has rank {}, expected an N×C×H×W image tensor",
                input.name,
                dims.len()
            )));
        };
        if channels.is_some_and(|c| c != 3) {
            return Err(Error::Model(format!(
                "input `{}` has {} channels, expected 3 (RGB)",
                input.name,
                channels.unwrap_or_default()
            )));
        }
        let [spec_h, spec_w] = spec.input_size.map(|s| s as usize);
        Ok(Self {
            name: input.name.clone(),
            size: [height.unwrap_or(spec_h), width.unwrap_or(spec_w)],
            fixed_batch: *batch,
        })
    }
}
