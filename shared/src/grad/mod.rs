//! Gradients without autodiff: an ONNX-to-ONNX backward transform.
//!
//! tract has no automatic differentiation, so [`transform`] writes the backward pass as ordinary
//! ONNX ops appended to the classifier's own graph. The new model takes the image and a seed
//! (`N × classes`) and outputs the logits, the requested activations and the vector-Jacobian
//! products of Σ_b seed_b · logits_b with respect to those activations (and optionally the
//! input). Every backend that runs the forward graph runs the backward graph too.
//!
//! Only the part of the network between the earliest requested tensor and the logits gets a
//! backward pass. An op on that path without a rule is an error naming the op. Rules live in
//! `rules.rs`; [`BackwardRule::Guided`] makes rectifiers pass only positive gradients (guided
//! backpropagation).

mod rules;

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::tensor_shape_proto::Dimension;
use tract_onnx::pb::tensor_shape_proto::dimension::Value as Dim;
use tract_onnx::pb::type_proto::{Tensor as TensorType, Value as TypeValue};
use tract_onnx::pb::{ModelProto, TensorShapeProto, TypeProto, ValueInfoProto};

use crate::onnx;
use crate::{Error, Result};

/// How rectifiers pass gradients back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackwardRule {
    /// The true gradient.
    #[default]
    Standard,
    /// Guided backpropagation: ReLU and Clip also zero negative incoming gradients.
    Guided,
}

/// What a gradient model computes beyond the logits.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct GradientRequest {
    /// Tensors (ONNX names) whose activations and gradients are wanted.
    pub tensors: Vec<String>,
    /// Also the gradient with respect to the input image tensor.
    pub input: bool,
    /// The backward rule.
    pub rule: BackwardRule,
}

/// Name of the seed input of a gradient model.
pub const SEED: &str = "camlime.seed";

/// The output names of a gradient model, in output order: logits, activations, gradients,
/// then the input gradient when requested.
#[derive(Clone, Debug)]
pub struct GradientModel {
    /// The augmented model.
    pub proto: ModelProto,
    /// Every output, in order.
    pub outputs: Vec<String>,
}

impl GradientModel {
    /// The model as ONNX bytes (to inspect it or run it elsewhere).
    pub fn to_bytes(&self) -> Vec<u8> {
        prost::Message::encode_to_vec(&self.proto)
    }
}

/// Every tensor that a layer with a bias outputs, with its per-channel bias, in graph order:
/// Conv nodes with a bias input, and BatchNormalization nodes, whose effective bias is
/// B − mean·scale/√(var + ε) (FullGrad's definition).
pub fn bias_tensors(proto: &ModelProto) -> Result<Vec<(String, Vec<f32>)>> {
    let graph = proto
        .graph
        .as_ref()
        .ok_or_else(|| Error::Model("ONNX file has no graph".into()))?;
    let constants = onnx::constants(graph);
    let value = |name: &str| -> Result<Vec<f32>> {
        constants
            .get(name)
            .ok_or_else(|| Error::Model(format!("`{name}` is not a constant of the model")))
            .and_then(onnx::f32_values)
    };
    let mut biases = Vec::new();
    for node in &graph.node {
        let Some(output) = node.output.first() else {
            continue;
        };
        match (node.op_type.as_str(), node.input.as_slice()) {
            ("Conv", [_, _, bias]) if !bias.is_empty() => {
                biases.push((output.clone(), value(bias)?));
            }
            ("BatchNormalization", [_, scale, bias, mean, var, ..]) => {
                let epsilon = onnx::float(node, "epsilon", 1e-5);
                let (scale, bias, mean, var) =
                    (value(scale)?, value(bias)?, value(mean)?, value(var)?);
                let effective = (0..bias.len())
                    .map(|c| bias[c] - mean[c] * scale[c] / (var[c] + epsilon).sqrt())
                    .collect();
                biases.push((output.clone(), effective));
            }
            _ => {}
        }
    }
    Ok(biases)
}

/// Name of the gradient output of `tensor`.
fn gradient_name(tensor: &str) -> String {
    format!("{}.d.{tensor}", onnx::PREFIX)
}

/// Build the gradient model of `proto` (image input `input`, logits `logits`).
/// `shapes` holds every tensor's shape at batch 1.
pub fn transform(
    proto: &ModelProto,
    input: &str,
    logits: &str,
    shapes: &HashMap<String, Vec<usize>>,
    request: &GradientRequest,
) -> Result<GradientModel> {
    let graph = proto
        .graph
        .as_ref()
        .ok_or_else(|| Error::Model("ONNX file has no graph".into()))?;
    let classes = match shapes.get(logits).map(Vec::as_slice) {
        Some([_, classes]) => *classes,
        _ => {
            return Err(Error::Model(format!(
                "`{logits}` is not batch × classes logits"
            )));
        }
    };
    let mut sources: HashSet<&str> = request.tensors.iter().map(String::as_str).collect();
    if request.input {
        sources.insert(input);
    }
    for tensor in &sources {
        if !shapes.contains_key(*tensor) {
            return Err(Error::Model(format!("the model has no tensor `{tensor}`")));
        }
    }

    // Tensors downstream of a requested one, and tensors the logits depend on.
    let mut downstream: HashSet<&str> = sources.clone();
    for node in &graph.node {
        if node.input.iter().any(|i| downstream.contains(i.as_str())) {
            downstream.extend(node.output.iter().map(String::as_str));
        }
    }
    let mut upstream: HashSet<&str> = HashSet::from([logits]);
    for node in graph.node.iter().rev() {
        if node.output.iter().any(|o| upstream.contains(o.as_str())) {
            upstream.extend(node.input.iter().map(String::as_str));
        }
    }
    let active = |tensor: &str| downstream.contains(tensor) && upstream.contains(tensor);
    for tensor in &sources {
        if !upstream.contains(*tensor) {
            return Err(Error::Model(format!(
                "tensor `{tensor}` does not lead to the logits `{logits}`"
            )));
        }
    }

    let opset = proto
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map_or(1, |o| o.version);
    let constants = onnx::constants(graph);
    let mut ctx = rules::Context::new(shapes, &constants, request.rule, opset);
    // Fold each BatchNormalization that alone reads a Conv's output into that Conv's adjoint.
    let mut readers: HashMap<&str, usize> = HashMap::new();
    for node in &graph.node {
        for input in &node.input {
            *readers.entry(input.as_str()).or_default() += 1;
        }
    }
    let producers: HashMap<&str, &tract_onnx::pb::NodeProto> = graph
        .node
        .iter()
        .flat_map(|n| n.output.iter().map(move |o| (o.as_str(), n)))
        .collect();
    for node in graph
        .node
        .iter()
        .filter(|n| n.op_type == "BatchNormalization")
    {
        let Some(x) = node.input.first() else {
            continue;
        };
        let from_conv = producers.get(x.as_str()).is_some_and(|p| {
            p.op_type == "Conv" && p.input.get(1).is_some_and(|w| constants.contains_key(w))
        });
        if from_conv && readers.get(x.as_str()) == Some(&1) && !sources.contains(x.as_str()) {
            let factor = rules::batch_norm_factor(&ctx, node)?;
            ctx.folded.insert(x.clone(), factor);
        }
    }
    // Gradient contributions per tensor, summed when a tensor feeds several nodes.
    let mut contributions: HashMap<String, Vec<String>> = HashMap::new();
    contributions.insert(logits.to_owned(), vec![SEED.to_owned()]);
    let mut finished: HashMap<String, String> = HashMap::new();
    let mut total = |tensor: &str,
                     contributions: &mut HashMap<String, Vec<String>>,
                     ctx: &mut rules::Context|
     -> Option<String> {
        if let Some(done) = finished.get(tensor) {
            return Some(done.clone());
        }
        let parts = contributions.remove(tensor)?;
        let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
        let sum = match refs.as_slice() {
            [single] => (*single).to_owned(),
            many => ctx.emit.node("Sum", many, vec![]),
        };
        finished.insert(tensor.to_owned(), sum.clone());
        Some(sum)
    };

    for (index, node) in graph.node.iter().enumerate().rev() {
        if node.op_type == "Split" {
            // Every output of a Split carries a part of its input's gradient.
            let Some(x) = node.input.first().filter(|x| active(x)) else {
                continue;
            };
            let gradients: Vec<Option<String>> = node
                .output
                .iter()
                .map(|o| {
                    active(o)
                        .then(|| total(o, &mut contributions, &mut ctx))
                        .flatten()
                })
                .collect();
            if gradients.iter().any(Option::is_some) {
                let grad = rules::split(&mut ctx, node, &gradients)?;
                contributions.entry(x.clone()).or_default().push(grad);
            }
            continue;
        }
        let Some(output) = node.output.first() else {
            continue;
        };
        if !active(output) || !node.input.iter().any(|i| active(i)) {
            continue;
        }
        let Some(g) = total(output, &mut contributions, &mut ctx) else {
            continue;
        };
        for (slot, x) in node.input.iter().enumerate() {
            if !active(x) {
                continue;
            }
            let grad = rules::adjoint(&mut ctx, index, node, slot, &g)?.ok_or_else(|| {
                Error::Model(format!(
                    "no gradient rule for ONNX op `{}` (node `{}`, input {slot}), which lies \
                     between the requested tensors and the logits",
                    node.op_type, node.name
                ))
            })?;
            contributions.entry(x.clone()).or_default().push(grad);
        }
    }

    let mut outputs = vec![logits.to_owned()];
    outputs.extend(request.tensors.iter().cloned());
    let mut wanted: Vec<&str> = request.tensors.iter().map(String::as_str).collect();
    if request.input {
        wanted.push(input);
    }
    for tensor in wanted {
        let sum = total(tensor, &mut contributions, &mut ctx)
            .ok_or_else(|| Error::Model(format!("no gradient reaches tensor `{tensor}`")))?;
        let name = gradient_name(tensor);
        ctx.emit.named_node("Identity", &[&sum], &name);
        outputs.push(name);
    }

    let mut graph = graph.clone();
    for (index, indices) in &ctx.indices {
        let node = &mut graph.node[*index];
        node.output.resize(1, String::new());
        node.output.push(indices.clone());
    }
    graph.node.extend(ctx.emit.nodes);
    graph.initializer.extend(ctx.emit.initializers);
    graph.input.push(float_input(SEED, classes));
    graph.output = outputs
        .iter()
        .map(|name| ValueInfoProto {
            name: name.clone(),
            ..ValueInfoProto::default()
        })
        .collect();
    graph.value_info.clear();
    let mut proto = proto.clone();
    proto.graph = Some(graph);
    Ok(GradientModel { proto, outputs })
}

/// A float `N × classes` graph input with a symbolic batch.
fn float_input(name: &str, classes: usize) -> ValueInfoProto {
    let dims = vec![
        Dimension {
            value: Some(Dim::DimParam("N".into())),
            ..Dimension::default()
        },
        Dimension {
            value: Some(Dim::DimValue(classes as i64)),
            ..Dimension::default()
        },
    ];
    ValueInfoProto {
        name: name.to_owned(),
        r#type: Some(TypeProto {
            value: Some(TypeValue::TensorType(TensorType {
                elem_type: DataType::Float as i32,
                shape: Some(TensorShapeProto { dim: dims }),
            })),
            ..TypeProto::default()
        }),
        ..ValueInfoProto::default()
    }
}
