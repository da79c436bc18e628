//! Small helpers to read and write ONNX protobuf messages (tract's prost types): attributes,
//! constant tensors, and an emitter that appends nodes with fresh names; `check` refuses graphs
//! tract would panic on.

mod check;

use std::collections::HashMap;

use tract_onnx::pb::attribute_proto::AttributeType;
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::{AttributeProto, GraphProto, NodeProto, TensorProto};

use crate::{Error, Result};

pub(crate) use check::well_formed;

/// An integer-list attribute of a node, if present.
pub(crate) fn ints(node: &NodeProto, name: &str) -> Option<Vec<i64>> {
    node.attribute
        .iter()
        .find(|a| a.name == name)
        .map(|a| a.ints.clone())
}

/// An integer attribute of a node, or `default`.
pub(crate) fn int(node: &NodeProto, name: &str, default: i64) -> i64 {
    node.attribute
        .iter()
        .find(|a| a.name == name)
        .map_or(default, |a| a.i)
}

/// A float attribute of a node, or `default`.
pub(crate) fn float(node: &NodeProto, name: &str, default: f32) -> f32 {
    node.attribute
        .iter()
        .find(|a| a.name == name)
        .map_or(default, |a| a.f)
}

/// A string attribute of a node, or `default`.
pub(crate) fn string(node: &NodeProto, name: &str, default: &str) -> String {
    node.attribute.iter().find(|a| a.name == name).map_or_else(
        || default.to_owned(),
        |a| String::from_utf8_lossy(&a.s).into_owned(),
    )
}

/// An integer attribute.
pub(crate) fn attr_int(name: &str, value: i64) -> AttributeProto {
    AttributeProto {
        name: name.to_owned(),
        r#type: AttributeType::Int as i32,
        i: value,
        ..AttributeProto::default()
    }
}

/// An integer-list attribute.
pub(crate) fn attr_ints(name: &str, values: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.to_owned(),
        r#type: AttributeType::Ints as i32,
        ints: values.to_vec(),
        ..AttributeProto::default()
    }
}

/// A string attribute.
pub(crate) fn attr_string(name: &str, value: &str) -> AttributeProto {
    AttributeProto {
        name: name.to_owned(),
        r#type: AttributeType::String as i32,
        s: value.as_bytes().to_vec(),
        ..AttributeProto::default()
    }
}

/// A tensor attribute.
pub(crate) fn attr_tensor(name: &str, value: TensorProto) -> AttributeProto {
    AttributeProto {
        name: name.to_owned(),
        r#type: AttributeType::Tensor as i32,
        t: Some(value),
        ..AttributeProto::default()
    }
}

/// An f32 tensor.
pub(crate) fn tensor_f32(name: &str, dims: &[usize], data: Vec<f32>) -> TensorProto {
    TensorProto {
        name: name.to_owned(),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: DataType::Float as i32,
        float_data: data,
        ..TensorProto::default()
    }
}

/// An i64 tensor.
pub(crate) fn tensor_i64(name: &str, dims: &[usize], data: Vec<i64>) -> TensorProto {
    TensorProto {
        name: name.to_owned(),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: DataType::Int64 as i32,
        int64_data: data,
        ..TensorProto::default()
    }
}

/// The f32 values of a constant tensor (raw little-endian bytes or `float_data`).
pub(crate) fn f32_values(tensor: &TensorProto) -> Result<Vec<f32>> {
    if tensor.data_type != DataType::Float as i32 {
        return Err(Error::Model(format!(
            "constant `{}` should be float32, found ONNX data type {}",
            tensor.name, tensor.data_type
        )));
    }
    if tensor.raw_data.is_empty() {
        return Ok(tensor.float_data.clone());
    }
    if !tensor.raw_data.len().is_multiple_of(4) {
        return Err(Error::Model(format!(
            "constant `{}` has {} raw bytes, not a whole number of float32 values",
            tensor.name,
            tensor.raw_data.len()
        )));
    }
    Ok(tensor
        .raw_data
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

/// Every `Cast` to float32 of a float16 initializer replaced by a float32 initializer of its
/// output's name (models shipped with half-size weights): everything downstream — the engines,
/// the backward transform, model edits — then reads plain float32 weights.
pub(crate) fn fold_half_weights(graph: &mut GraphProto) {
    let halves: HashMap<String, usize> = graph
        .initializer
        .iter()
        .enumerate()
        .filter(|(_, t)| t.data_type == DataType::Float16 as i32)
        .map(|(i, t)| (t.name.clone(), i))
        .collect();
    if halves.is_empty() {
        return;
    }
    let mut folded = Vec::new();
    let mut nodes = Vec::with_capacity(graph.node.len());
    for node in std::mem::take(&mut graph.node) {
        let source = node.input.first().and_then(|x| halves.get(x));
        match (node.op_type.as_str(), source, node.output.first()) {
            ("Cast", Some(&i), Some(output)) if int(&node, "to", 0) == DataType::Float as i64 => {
                let half = &graph.initializer[i];
                let bits: Vec<u16> = if half.raw_data.is_empty() {
                    half.int32_data.iter().map(|&v| v as u16).collect()
                } else {
                    half.raw_data
                        .chunks_exact(2)
                        .map(|b| u16::from_le_bytes([b[0], b[1]]))
                        .collect()
                };
                let values = bits
                    .into_iter()
                    .map(|b| half::f16::from_bits(b).to_f32())
                    .collect();
                let dims: Vec<usize> = half.dims.iter().map(|&d| d.max(0) as usize).collect();
                folded.push(tensor_f32(output, &dims, values));
            }
            _ => nodes.push(node),
        }
    }
    graph.node = nodes;
    let read: std::collections::HashSet<String> = graph
        .node
        .iter()
        .flat_map(|n| n.input.iter().cloned())
        .collect();
    graph
        .initializer
        .retain(|t| t.data_type != DataType::Float16 as i32 || read.contains(&t.name));
    graph.initializer.extend(folded);
}

/// The flattened `N × (Σ sizes)` concatenation of `outputs` (each reshaped to `N × rest`),
/// appended under the name `gathered`, which becomes the graph's single output: how the core
/// reads a model whose task has several output tensors through one "logits" tensor.
pub(crate) fn gather_outputs(
    graph: &mut GraphProto,
    outputs: &[String],
    gathered: &str,
) -> Result<()> {
    let produced: std::collections::HashSet<&str> = graph
        .node
        .iter()
        .flat_map(|n| n.output.iter().map(String::as_str))
        .collect();
    if let Some(missing) = outputs.iter().find(|o| !produced.contains(o.as_str())) {
        return Err(Error::Model(format!(
            "the model has no tensor named `{missing}` (its task reads {})",
            outputs.join(", ")
        )));
    }
    let shape = format!("{gathered}.shape");
    graph
        .initializer
        .push(tensor_i64(&shape, &[2], vec![0, -1]));
    let mut flat = Vec::with_capacity(outputs.len());
    for output in outputs {
        let name = format!("{gathered}.{output}");
        graph.node.push(NodeProto {
            name: name.clone(),
            op_type: "Reshape".into(),
            input: vec![output.clone(), shape.clone()],
            output: vec![name.clone()],
            ..NodeProto::default()
        });
        flat.push(name);
    }
    graph.node.push(NodeProto {
        name: gathered.to_owned(),
        op_type: "Concat".into(),
        input: flat,
        output: vec![gathered.to_owned()],
        attribute: vec![attr_int("axis", 1)],
        ..NodeProto::default()
    });
    let mut output = graph.output.first().cloned().unwrap_or_default();
    output.name = gathered.to_owned();
    output.r#type = None;
    graph.output = vec![output];
    Ok(())
}

/// The constant tensors of a graph: initializers and `Constant` nodes' values, by name.
pub(crate) fn constants(graph: &GraphProto) -> HashMap<String, TensorProto> {
    let mut map: HashMap<String, TensorProto> = graph
        .initializer
        .iter()
        .map(|t| (t.name.clone(), t.clone()))
        .collect();
    for node in graph.node.iter().filter(|n| n.op_type == "Constant") {
        let value = node
            .attribute
            .iter()
            .find(|a| a.name == "value")
            .and_then(|a| a.t.clone());
        if let (Some(value), Some(output)) = (value, node.output.first()) {
            map.insert(output.clone(), value);
        }
    }
    map
}

/// Appends nodes and constants under fresh names, all prefixed so they never collide with the
/// model's own tensors.
#[derive(Default)]
pub(crate) struct Emitter {
    pub(crate) nodes: Vec<NodeProto>,
    pub(crate) initializers: Vec<TensorProto>,
    counter: usize,
}

/// Prefix of every tensor the transform adds.
pub(crate) const PREFIX: &str = "camlime.grad";

impl Emitter {
    fn fresh(&mut self, hint: &str) -> String {
        self.counter += 1;
        format!("{PREFIX}.{}.{hint}", self.counter)
    }

    /// Append a node with one output and return the output's name.
    pub(crate) fn node(
        &mut self,
        op: &str,
        inputs: &[&str],
        attributes: Vec<AttributeProto>,
    ) -> String {
        let output = self.fresh(&op.to_lowercase());
        self.nodes.push(NodeProto {
            name: output.clone(),
            op_type: op.to_owned(),
            input: inputs.iter().map(|s| (*s).to_owned()).collect(),
            output: vec![output.clone()],
            attribute: attributes,
            ..NodeProto::default()
        });
        output
    }

    /// Append a node whose single output has a given name.
    pub(crate) fn named_node(&mut self, op: &str, inputs: &[&str], output: &str) {
        self.nodes.push(NodeProto {
            name: output.to_owned(),
            op_type: op.to_owned(),
            input: inputs.iter().map(|s| (*s).to_owned()).collect(),
            output: vec![output.to_owned()],
            ..NodeProto::default()
        });
    }

    /// A new f32 initializer.
    pub(crate) fn const_f32(&mut self, dims: &[usize], data: Vec<f32>) -> String {
        let name = self.fresh("const");
        self.initializers.push(tensor_f32(&name, dims, data));
        name
    }

    /// A new i64 initializer.
    pub(crate) fn const_i64(&mut self, dims: &[usize], data: Vec<i64>) -> String {
        let name = self.fresh("const");
        self.initializers.push(tensor_i64(&name, dims, data));
        name
    }
}
