//! What an ONNX file must get right before tract reads it. tract 0.23 trusts the file where it
//! can lie and panics instead of failing: a graph output no node makes (`no entry found for key`),
//! a node without the inputs its operator reads (index out of bounds), string tensors in raw bytes
//! (`unimplemented!`), convolution and pooling attributes shorter than the kernel's rank (index
//! out of bounds), a stride, dilation or kernel of 0 (divide by zero, subtract with overflow), a
//! `Flatten` axis past its input's rank (slice out of range), a `BatchNormalization` or `LRN` of
//! an input below rank 2 (index out of range: their channel axis is 1). tract also fixes a rank
//! backwards from the node that reads a tensor when nothing before it fixes the rank going
//! forwards, which an operator tract does not implement leaves open (a `Pad` reading a
//! normalisation's output as its rank-1 `pads` made that normalisation's input rank 1), so such
//! operators are refused too; tract could not run them anyway. The page runs models in
//! WebAssembly, where a panic cannot be caught and kills the worker, so each lie is refused here
//! with an error that names it. Each case was found by fuzzing `Classifier::new` (`fuzz/`, target
//! `onnx_model`) or by trying its neighbours (the other operators with a channel axis); the inputs
//! are in `fuzz/regressions/onnx_model/`.
//!
//! Ranks are followed through the operators of image CNNs only (an operator this does not know
//! ends what is known of its outputs), so axes are checked where the rank is certain.

use std::collections::{HashMap, HashSet};

use tract_onnx::model::OnnxOpRegister;
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::type_proto::Value;
use tract_onnx::pb::{GraphProto, NodeProto, TensorProto};

use super::{int, ints};
use crate::{Error, Result};

/// Largest kernel size, stride, dilation or padding a convolution or pooling may ask for: far
/// above any image model's, and low enough that tract's arithmetic on them cannot overflow.
const MAX_WINDOW: i64 = 1 << 16;

/// Refuse a graph tract would panic on (see the module's documentation), naming what is wrong.
/// `inputs` are the ranks the graph's inputs will be given (they override what the file
/// declares, which may be nothing); `operators` are the operators tract can build.
pub(crate) fn well_formed(
    graph: &GraphProto,
    inputs: &[(&str, usize)],
    operators: &OnnxOpRegister,
) -> Result<()> {
    let graphs = graphs(graph);
    if let Some(node) = graphs
        .iter()
        .flat_map(|g| &g.node)
        .find(|n| !operators.0.contains_key(&n.op_type))
    {
        return Err(bad(format!(
            "node {} uses operator `{}`, which tract does not implement",
            called(node),
            node.op_type
        )));
    }
    if let Some(tensor) = graphs
        .iter()
        .flat_map(|g| tensors(g))
        .find(|t| t.data_type == DataType::String as i32)
    {
        return Err(bad(format!(
            "tensor `{}` holds strings, which an image model cannot use",
            tensor.name
        )));
    }
    let mut ranks: HashMap<&str, usize> = HashMap::new();
    for input in &graph.input {
        if let Some(Value::TensorType(t)) = input.r#type.as_ref().and_then(|t| t.value.as_ref())
            && let Some(shape) = &t.shape
        {
            ranks.insert(&input.name, shape.dim.len());
        }
    }
    let initializers: HashMap<&str, &TensorProto> = graph
        .initializer
        .iter()
        .map(|t| (t.name.as_str(), t))
        .collect();
    for tensor in &graph.initializer {
        ranks.insert(&tensor.name, tensor.dims.len());
    }
    for &(name, rank) in inputs {
        ranks.insert(name, rank);
    }
    let mut made: HashSet<&str> = graph
        .input
        .iter()
        .map(|i| i.name.as_str())
        .chain(graph.initializer.iter().map(|t| t.name.as_str()))
        .collect();
    for node in &graph.node {
        let inputs: Vec<Option<usize>> = node
            .input
            .iter()
            .map(|name| ranks.get(name.as_str()).copied())
            .collect();
        let rank = check_node(node, &inputs, &initializers)?;
        for output in node.output.iter().filter(|o| !o.is_empty()) {
            made.insert(output);
            match rank {
                Some(rank) => ranks.insert(output, rank),
                None => ranks.remove(output.as_str()),
            };
        }
    }
    for output in &graph.output {
        if !made.contains(output.name.as_str()) {
            return Err(bad(format!(
                "graph output `{}` is made by no node, input or initializer",
                output.name
            )));
        }
    }
    Ok(())
}

fn bad(message: String) -> Error {
    Error::Model(format!("malformed ONNX graph: {message}"))
}

/// How an error names a node: by its name, or by what it makes when it has none (exporters often
/// leave names out).
fn called(node: &NodeProto) -> String {
    if !node.name.is_empty() {
        return format!("`{}`", node.name);
    }
    match node.output.iter().find(|o| !o.is_empty()) {
        Some(output) => format!("making `{output}`"),
        None => "(unnamed)".into(),
    }
}

/// The graph and every subgraph its nodes hold (`If` branches, `Loop` bodies), at any depth.
fn graphs(graph: &GraphProto) -> Vec<&GraphProto> {
    let mut out = vec![graph];
    for attribute in graph.node.iter().flat_map(|n| &n.attribute) {
        for subgraph in attribute.g.iter().chain(&attribute.graphs) {
            out.extend(graphs(subgraph));
        }
    }
    out
}

/// The tensors one graph holds: its initializers and its nodes' tensor attributes.
fn tensors(graph: &GraphProto) -> impl Iterator<Item = &TensorProto> {
    let attributes = graph.node.iter().flat_map(|n| &n.attribute);
    graph
        .initializer
        .iter()
        .chain(attributes.flat_map(|a| a.t.iter().chain(&a.tensors)))
}

/// Check one node's attributes against what is known of its inputs' ranks; returns its first
/// output's rank when it is certain.
fn check_node(
    node: &NodeProto,
    inputs: &[Option<usize>],
    initializers: &HashMap<&str, &TensorProto>,
) -> Result<Option<usize>> {
    let op = node.op_type.as_str();
    let required = required_inputs(op);
    let given = node
        .input
        .iter()
        .take(required)
        .filter(|i| !i.is_empty())
        .count();
    if given < required {
        return Err(bad(format!(
            "{op} {} has {given} of its {required} required inputs",
            called(node)
        )));
    }
    if !node.output.iter().any(|o| !o.is_empty()) {
        return Err(bad(format!("{op} {} has no output", called(node))));
    }
    let first = inputs.first().copied().flatten();
    let axis = |default: i64| int(node, "axis", default);
    let in_range = |value: i64, low: i64, high: i64, what: &str| {
        if (low..=high).contains(&value) {
            Ok(())
        } else {
            Err(bad(format!(
                "{op} {}: {what} {value} is outside {low}..={high} for its rank-{} input",
                called(node),
                first.unwrap_or(0)
            )))
        }
    };
    Ok(match op {
        "Conv" | "ConvTranspose" | "MaxPool" | "AveragePool" | "LpPool" => {
            let weights = node
                .input
                .get(1)
                .and_then(|w| initializers.get(w.as_str()).copied());
            check_window(node, first, weights)?;
            first
        }
        "Flatten" => {
            if let Some(rank) = first {
                in_range(axis(1), -(rank as i64), rank as i64, "axis")?;
            }
            Some(2)
        }
        "Softmax" | "LogSoftmax" | "Concat" | "Gather" | "ArgMax" | "ArgMin" => {
            if let Some(rank) = first.filter(|&r| r > 0) {
                in_range(axis(-1), -(rank as i64), rank as i64 - 1, "axis")?;
            }
            if op == "ArgMax" || op == "ArgMin" || op == "Gather" {
                None
            } else {
                first
            }
        }
        "Transpose" => {
            if let (Some(rank), Some(perm)) = (first, ints(node, "perm")) {
                let mut seen = perm.clone();
                seen.sort_unstable();
                if !seen.iter().copied().eq(0..rank as i64) {
                    return Err(bad(format!(
                        "Transpose {}: perm {perm:?} is not an order of its {rank} axes",
                        called(node)
                    )));
                }
            }
            first
        }
        "Gemm" => Some(2),
        "BatchNormalization" | "LRN" => {
            if let Some(rank) = first.filter(|&r| r < 2) {
                return Err(bad(format!(
                    "{op} {} of a rank-{rank} input, which has no channel axis",
                    called(node)
                )));
            }
            first
        }
        "Relu"
        | "Clip"
        | "Sigmoid"
        | "Tanh"
        | "LeakyRelu"
        | "HardSigmoid"
        | "HardSwish"
        | "Elu"
        | "Selu"
        | "PRelu"
        | "Exp"
        | "Log"
        | "Neg"
        | "Abs"
        | "Sqrt"
        | "Erf"
        | "Cast"
        | "Identity"
        | "Dropout"
        | "InstanceNormalization"
        | "GlobalAveragePool"
        | "GlobalMaxPool"
        | "Pad"
        | "Resize"
        | "Upsample" => first,
        "Add" | "Sub" | "Mul" | "Div" | "Pow" | "Max" | "Min" | "Sum" | "Mean" => inputs
            .iter()
            .copied()
            .collect::<Option<Vec<_>>>()
            .and_then(|r| r.into_iter().max()),
        _ => None,
    })
}

/// How many inputs an operator of image models cannot do without (tract reads them unchecked);
/// 0 for operators this does not know.
fn required_inputs(op: &str) -> usize {
    match op {
        "BatchNormalization" => 5,
        "Where" | "InstanceNormalization" => 3,
        "Conv" | "ConvTranspose" | "Add" | "Sub" | "Mul" | "Div" | "Pow" | "MatMul" | "Gemm"
        | "PRelu" | "Reshape" | "Gather" | "Expand" | "Tile" | "Equal" | "Less" | "Greater" => 2,
        "Relu" | "Clip" | "Sigmoid" | "Tanh" | "LeakyRelu" | "HardSigmoid" | "HardSwish"
        | "Elu" | "Selu" | "Exp" | "Log" | "Neg" | "Abs" | "Sqrt" | "Erf" | "Cast" | "Identity"
        | "Dropout" | "LRN" | "GlobalAveragePool" | "GlobalMaxPool" | "MaxPool" | "AveragePool"
        | "LpPool" | "Flatten" | "Softmax" | "LogSoftmax" | "Transpose" | "Concat" | "Squeeze"
        | "Unsqueeze" | "Shape" | "Resize" | "Upsample" | "Pad" | "ReduceMean" | "ReduceMax"
        | "ReduceSum" | "Sum" | "Max" | "Min" | "Mean" | "ArgMax" | "ArgMin" | "Floor" | "Ceil"
        | "Reciprocal" | "Softplus" | "Sign" | "Not" => 1,
        _ => 0,
    }
}

/// A convolution's or pooling's window: kernel, strides, dilations and pads, one per spatial axis
/// of its input, each in range.
fn check_window(
    node: &NodeProto,
    input_rank: Option<usize>,
    weights: Option<&TensorProto>,
) -> Result<()> {
    let name = || format!("{} {}", node.op_type, called(node));
    let kernel = ints(node, "kernel_shape");
    let spatial = match (&kernel, weights) {
        (Some(kernel), _) => Some(kernel.len()),
        (None, Some(weights)) if weights.dims.len() >= 2 => Some(weights.dims.len() - 2),
        _ => input_rank.and_then(|r| r.checked_sub(2)),
    };
    let Some(spatial) = spatial else {
        return Ok(());
    };
    if spatial == 0 {
        return Err(bad(format!("{}: a window with no spatial axis", name())));
    }
    if let Some(rank) = input_rank
        && rank != spatial + 2
    {
        return Err(bad(format!(
            "{}: a {spatial}-D window on a rank-{rank} input",
            name()
        )));
    }
    for (attribute, length, low) in [
        ("kernel_shape", spatial, 1),
        ("strides", spatial, 1),
        ("dilations", spatial, 1),
        ("pads", 2 * spatial, 0),
        ("output_padding", spatial, 0),
    ] {
        let Some(values) = ints(node, attribute) else {
            continue;
        };
        if values.len() != length {
            return Err(bad(format!(
                "{}: {attribute} has {} values for {spatial} spatial axes",
                name(),
                values.len()
            )));
        }
        if let Some(v) = values.iter().find(|v| !(low..=MAX_WINDOW).contains(*v)) {
            return Err(bad(format!(
                "{}: {attribute} {v} is outside {low}..={MAX_WINDOW}",
                name()
            )));
        }
    }
    if let Some(weights) = weights
        && let Some(kernel) = &kernel
        && weights.dims.len() == spatial + 2
        && weights.dims[2..] != kernel[..]
    {
        return Err(bad(format!(
            "{}: kernel_shape {kernel:?} differs from its weights' {:?}",
            name(),
            &weights.dims[2..]
        )));
    }
    if let Some(weights) = weights
        && let Some(d) = weights
            .dims
            .iter()
            .skip(2)
            .find(|d| !(1..=MAX_WINDOW).contains(*d))
    {
        return Err(bad(format!(
            "{}: its weights' kernel size {d} is outside 1..={MAX_WINDOW}",
            name()
        )));
    }
    let group = int(node, "group", 1);
    if group < 1 {
        return Err(bad(format!("{}: group {group} is below 1", name())));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::{attr_int, attr_ints, tensor_f32};
    use tract_onnx::pb::{AttributeProto, TypeProto, ValueInfoProto, type_proto};

    fn value(name: &str, rank: usize) -> ValueInfoProto {
        let dim = vec![Default::default(); rank];
        ValueInfoProto {
            name: name.into(),
            r#type: Some(TypeProto {
                value: Some(Value::TensorType(type_proto::Tensor {
                    elem_type: DataType::Float as i32,
                    shape: Some(tract_onnx::pb::TensorShapeProto { dim }),
                })),
                ..TypeProto::default()
            }),
            ..ValueInfoProto::default()
        }
    }

    fn node(op: &str, inputs: &[&str], output: &str, attribute: Vec<AttributeProto>) -> NodeProto {
        NodeProto {
            op_type: op.into(),
            name: output.into(),
            input: inputs.iter().map(|s| (*s).into()).collect(),
            output: vec![output.into()],
            attribute,
            ..NodeProto::default()
        }
    }

    /// input (rank 4) → Conv with `attributes` → Flatten(axis) → output `out`.
    fn graph(conv: Vec<AttributeProto>, axis: i64) -> GraphProto {
        GraphProto {
            input: vec![value("x", 4)],
            output: vec![value("out", 2)],
            initializer: vec![tensor_f32("w", &[4, 3, 3, 3], vec![0.0; 108])],
            node: vec![
                node("Conv", &["x", "w"], "c", conv),
                node("Flatten", &["c"], "out", vec![attr_int("axis", axis)]),
            ],
            ..GraphProto::default()
        }
    }

    fn checked(graph: &GraphProto, inputs: &[(&str, usize)]) -> Result<()> {
        well_formed(graph, inputs, &tract_onnx::onnx().op_register)
    }

    fn refused(graph: &GraphProto) -> String {
        checked(graph, &[]).unwrap_err().to_string()
    }

    #[test]
    fn a_sound_graph_passes() {
        let conv = vec![
            attr_ints("kernel_shape", &[3, 3]),
            attr_ints("strides", &[2, 2]),
            attr_ints("pads", &[1, 1, 1, 1]),
        ];
        checked(&graph(conv, 1), &[]).unwrap();
        checked(&graph(Vec::new(), -4), &[]).unwrap();
    }

    #[test]
    fn each_lie_tract_panics_on_is_refused_by_name() {
        let mut missing = graph(Vec::new(), 1);
        missing.output[0].name = "nowhere".into();
        assert!(refused(&missing).contains("graph output `nowhere` is made by no node"));

        let mut strings = graph(Vec::new(), 1);
        strings.initializer[0].data_type = DataType::String as i32;
        assert!(refused(&strings).contains("tensor `w` holds strings"));

        let short_pads = graph(vec![attr_ints("pads", &[1, 1])], 1);
        assert!(refused(&short_pads).contains("pads has 2 values for 2 spatial axes"));
        let zero_stride = graph(vec![attr_ints("strides", &[1, 0])], 1);
        assert!(refused(&zero_stride).contains("strides 0 is outside 1..=65536"));
        let huge_dilation = graph(vec![attr_ints("dilations", &[1, 1 << 40])], 1);
        assert!(refused(&huge_dilation).contains("dilations 1099511627776"));
        let kernel = graph(vec![attr_ints("kernel_shape", &[5, 5])], 1);
        assert!(refused(&kernel).contains("kernel_shape [5, 5] differs from its weights' [3, 3]"));
        let group = graph(vec![attr_int("group", 0)], 1);
        assert!(refused(&group).contains("group 0 is below 1"));

        let mut no_input = graph(Vec::new(), 1);
        no_input.node[1].input.clear();
        assert!(refused(&no_input).contains("Flatten `out` has 0 of its 1 required inputs"));
        let mut omitted = graph(Vec::new(), 1);
        omitted.node[0].input[1] = String::new();
        assert!(refused(&omitted).contains("Conv `c` has 1 of its 2 required inputs"));
        let mut no_output = graph(Vec::new(), 1);
        no_output.node[0].output = vec![String::new()];
        assert!(refused(&no_output).contains("Conv `c` has no output"));

        assert!(refused(&graph(Vec::new(), 21)).contains("axis 21 is outside -4..=4"));
        assert!(refused(&graph(Vec::new(), -5)).contains("axis -5 is outside -4..=4"));

        let mut unknown = graph(Vec::new(), 1);
        unknown.node[0].op_type = "conv".into();
        assert!(refused(&unknown).contains("node `c` uses operator `conv`, which tract does not"));
        let mut channels = graph(Vec::new(), 1);
        channels
            .initializer
            .push(tensor_f32("v", &[4], vec![1.0; 4]));
        let norm = ["v", "v", "v", "v", "v"];
        channels
            .node
            .insert(0, node("BatchNormalization", &norm, "n", Vec::new()));
        assert!(refused(&channels).contains("BatchNormalization `n` of a rank-1 input"));
        channels.node[0].name.clear();
        let error = refused(&channels);
        assert!(
            error.contains("BatchNormalization making `n` of a rank-1"),
            "{error}"
        );
        channels.node[0] = node("LRN", &["v"], "n", vec![attr_int("size", 3)]);
        assert!(refused(&channels).contains("LRN `n` of a rank-1 input"));

        let mut rank = graph(Vec::new(), 1);
        rank.input[0] = value("x", 3);
        assert!(refused(&rank).contains("a 2-D window on a rank-3 input"));

        // An input declared without a shape still has the rank it will be given.
        let mut undeclared = graph(Vec::new(), 89);
        undeclared.input[0].r#type = None;
        checked(&undeclared, &[]).unwrap();
        let error = checked(&undeclared, &[("x", 4)]).unwrap_err().to_string();
        assert!(error.contains("axis 89 is outside -4..=4"), "{error}");
    }
}
