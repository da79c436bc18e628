//! Edited copies of a classifier for the metrics that need another model: the input shifted by
//! a constant the graph subtracts again (InputInvariance) and parameter layers re-initialised
//! (MPRT). Each edit changes the parsed ONNX proto and loads it as a new [`Classifier`] with the
//! same specification.

use prost::Message;
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::{NodeProto, TensorProto};

use crate::draws::Draws;
use crate::model::Classifier;
use crate::{Error, Result};

/// Operators whose weight (input 1) makes them a parameter layer.
const PARAMETER_OPS: [&str; 5] = [
    "Conv",
    "ConvTranspose",
    "Gemm",
    "MatMul",
    "BatchNormalization",
];

fn node_label(node: &NodeProto) -> String {
    if node.name.is_empty() {
        node.output.first().cloned().unwrap_or_default()
    } else {
        node.name.clone()
    }
}

fn find(initializers: &[TensorProto], name: &str) -> Option<usize> {
    initializers.iter().position(|t| t.name == name)
}

fn float_tensor(tensor: &mut TensorProto, values: Vec<f32>) {
    tensor.data_type = DataType::Float as i32;
    tensor.float_data.clear();
    tensor.raw_data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
}

impl Classifier {
    fn with_proto(&self, proto: &tract_onnx::pb::ModelProto) -> Result<Self> {
        let bytes = proto.encode_to_vec();
        Classifier::new(&bytes, self.spec().clone())?
            .with_labels(self.labels().to_vec())?
            .with_batch_size(self.batch_size())
    }

    /// The same classifier behind an input that arrives shifted by `shift`: the graph's first
    /// operation subtracts it, so `shifted(x + shift)` computes `self(x)`.
    pub fn with_input_offset(&self, shift: f32) -> Result<Self> {
        let mut proto = self.proto().clone();
        let input = self.input_name().to_owned();
        let graph = proto
            .graph
            .as_mut()
            .ok_or_else(|| Error::Model("ONNX file has no graph".into()))?;
        let shifted = format!("{input}__camlime_unshifted");
        let constant = format!("{input}__camlime_shift");
        for node in &mut graph.node {
            for name in &mut node.input {
                if *name == input {
                    name.clone_from(&shifted);
                }
            }
        }
        graph.initializer.push(TensorProto {
            name: constant.clone(),
            data_type: DataType::Float as i32,
            float_data: vec![shift],
            ..TensorProto::default()
        });
        graph.node.insert(
            0,
            NodeProto {
                op_type: "Sub".into(),
                name: "camlime_unshift".into(),
                input: vec![input, constant],
                output: vec![shifted],
                ..NodeProto::default()
            },
        );
        self.with_proto(&proto)
    }

    /// The parameter layers (convolutions, dense layers, batch norms with constant weights) in
    /// graph order, by node name (or first output where unnamed).
    pub fn parameter_layers(&self) -> Vec<String> {
        let Some(graph) = self.proto().graph.as_ref() else {
            return Vec::new();
        };
        let constants: std::collections::HashSet<&str> =
            graph.initializer.iter().map(|t| t.name.as_str()).collect();
        graph
            .node
            .iter()
            .filter(|n| PARAMETER_OPS.contains(&n.op_type.as_str()))
            .filter(|n| {
                n.input
                    .get(1)
                    .is_some_and(|w| constants.contains(w.as_str()))
            })
            .map(node_label)
            .collect()
    }

    /// A copy with `layers` re-initialised as PyTorch's `reset_parameters` does: weights and
    /// biases U(−1/√fan_in, 1/√fan_in) (Kaiming-uniform with a = √5), batch norms to the
    /// identity. Each layer draws from its own stream, seeded by `seed` and its position.
    pub fn with_randomised_layers(&self, layers: &[String], seed: u64) -> Result<Self> {
        let mut proto = self.proto().clone();
        let graph = proto
            .graph
            .as_mut()
            .ok_or_else(|| Error::Model("ONNX file has no graph".into()))?;
        let all = self.parameter_layers();
        for layer in layers {
            let unknown = || Error::UnknownLayer {
                name: layer.clone(),
                available: all.join(", "),
            };
            let position = all.iter().position(|l| l == layer).ok_or_else(unknown)?;
            let node = graph
                .node
                .iter()
                .find(|n| node_label(n) == *layer)
                .cloned()
                .ok_or_else(unknown)?;
            let mut draws = Draws::new(seed.wrapping_add(position as u64));
            let weight = find(&graph.initializer, &node.input[1]).ok_or_else(unknown)?;
            let dims: Vec<usize> = graph.initializer[weight]
                .dims
                .iter()
                .map(|&d| d.max(0) as usize)
                .collect();
            let count: usize = dims.iter().product();
            if node.op_type == "BatchNormalization" {
                let fills = [1.0f32, 0.0, 0.0, 1.0];
                for (input, fill) in node.input.iter().skip(1).zip(fills) {
                    if let Some(i) = find(&graph.initializer, input) {
                        let n: usize = graph.initializer[i]
                            .dims
                            .iter()
                            .map(|&d| d.max(0) as usize)
                            .product();
                        float_tensor(&mut graph.initializer[i], vec![fill; n]);
                    }
                }
                continue;
            }
            let fan_in = match node.op_type.as_str() {
                "Gemm" => {
                    let trans_b = node
                        .attribute
                        .iter()
                        .find(|a| a.name == "transB")
                        .is_some_and(|a| a.i != 0);
                    if trans_b { dims.get(1) } else { dims.first() }
                        .copied()
                        .unwrap_or(1)
                }
                "MatMul" => dims.first().copied().unwrap_or(1),
                "ConvTranspose" => {
                    dims.first().copied().unwrap_or(1) * dims.iter().skip(2).product::<usize>()
                }
                _ => dims.iter().skip(1).product(),
            };
            let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
            let values: Vec<f32> = draws
                .uniform(-bound, bound, count)
                .into_iter()
                .map(|v| v as f32)
                .collect();
            float_tensor(&mut graph.initializer[weight], values);
            if let Some(bias) = node.input.get(2).and_then(|b| find(&graph.initializer, b)) {
                let n: usize = graph.initializer[bias]
                    .dims
                    .iter()
                    .map(|&d| d.max(0) as usize)
                    .product();
                let values = draws
                    .uniform(-bound, bound, n)
                    .into_iter()
                    .map(|v| v as f32)
                    .collect();
                float_tensor(&mut graph.initializer[bias], values);
            }
        }
        self.with_proto(&proto)
    }
}
