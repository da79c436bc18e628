//! Every kernel path of the lowered plan against tract on small seeded graphs: depthwise fast
//! and generic paths (channel remainders, strides, asymmetric and `SAME` padding, dilation,
//! 7×7), grouped and small convolutions, pooling in ceil mode with and without counted
//! padding, LRN, concatenation, activations, standalone BatchNormalization, flatten + Gemm +
//! Softmax, a cut that starts inside the graph, and pointwise + depthwise pairs run in bands.

use tract_onnx::pb::TypeProto;
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::type_proto::{Tensor as TensorType, Value as TypeValue};
use tract_onnx::pb::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, ValueInfoProto,
};
use tract_onnx::prelude::tract_ndarray::{ArrayD, Axis, IxDyn};

use super::Cnn;
use crate::engine::tract::Tract;
use crate::engine::{Engine, Graph, GraphInput, PlanRequest};
use crate::onnx::{attr_int, attr_ints, attr_string, tensor_f32};

/// Seeded values in [−1, 1) (splitmix64).
fn values(seed: u64, count: usize) -> Vec<f32> {
    (1..=count as u64)
        .map(|i| {
            let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15u64.wrapping_mul(i));
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            ((z ^ (z >> 31)) >> 40) as f32 / (1u32 << 23) as f32 - 1.0
        })
        .collect()
}

/// A one-input graph built node by node.
#[derive(Clone)]
struct Builder {
    graph: GraphProto,
    seed: u64,
}

impl Builder {
    fn new() -> Self {
        Self {
            graph: GraphProto {
                input: vec![ValueInfoProto {
                    name: "x".into(),
                    r#type: Some(TypeProto {
                        value: Some(TypeValue::TensorType(TensorType {
                            elem_type: DataType::Float as i32,
                            shape: None,
                        })),
                        ..TypeProto::default()
                    }),
                    ..ValueInfoProto::default()
                }],
                ..GraphProto::default()
            },
            seed: 7,
        }
    }

    fn weight(&mut self, name: &str, dims: &[usize], scale: f32) -> String {
        self.seed += 1;
        let data = values(self.seed, dims.iter().product())
            .into_iter()
            .map(|v| v * scale)
            .collect();
        self.graph.initializer.push(tensor_f32(name, dims, data));
        name.to_owned()
    }

    fn node(
        &mut self,
        op: &str,
        inputs: &[&str],
        output: &str,
        attributes: Vec<AttributeProto>,
    ) -> String {
        self.graph.node.push(NodeProto {
            name: output.to_owned(),
            op_type: op.to_owned(),
            input: inputs.iter().map(|s| (*s).to_owned()).collect(),
            output: vec![output.to_owned()],
            attribute: attributes,
            ..NodeProto::default()
        });
        output.to_owned()
    }

    /// A Conv with seeded weights and bias.
    fn conv(
        &mut self,
        x: &str,
        output: &str,
        cin: usize,
        cout: usize,
        kernel: usize,
        mut attributes: Vec<AttributeProto>,
    ) -> String {
        let groups = attributes
            .iter()
            .find(|a| a.name == "group")
            .map_or(1, |a| a.i as usize);
        let w = self.weight(
            &format!("{output}.w"),
            &[cout, cin / groups, kernel, kernel],
            0.5,
        );
        let b = self.weight(&format!("{output}.b"), &[cout], 0.1);
        attributes.push(attr_ints("kernel_shape", &[kernel as i64, kernel as i64]));
        self.node("Conv", &[x, &w, &b], output, attributes)
    }

    fn finish(mut self, outputs: &[&str]) -> ModelProto {
        self.graph.output = outputs
            .iter()
            .map(|name| ValueInfoProto {
                name: (*name).to_owned(),
                ..ValueInfoProto::default()
            })
            .collect();
        ModelProto {
            ir_version: 8,
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: 17,
            }],
            graph: Some(self.graph),
            ..ModelProto::default()
        }
    }
}

/// `proto` with its input `x` of one image's `dims`.
fn graph(proto: ModelProto, dims: [usize; 3]) -> Graph {
    Graph::new(
        proto,
        vec![GraphInput {
            name: "x".into(),
            dims: dims.to_vec(),
        }],
    )
    .unwrap()
}

/// Run `proto` on both engines (batch 2) and compare every output within 1e-5 relative.
fn check(what: &str, proto: ModelProto, dims: [usize; 3], outputs: &[&str], start: Option<&str>) {
    let graph = graph(proto, dims);
    let request = PlanRequest {
        batch: 2,
        start: start.map(str::to_owned),
        outputs: outputs.iter().map(|s| (*s).to_owned()).collect(),
    };
    let ours = Cnn.compile(&graph, &request).unwrap();
    let theirs = Tract.compile(&graph, &request).unwrap();
    let input_dims: Vec<usize> = match start {
        None => [2].into_iter().chain(dims).collect(),
        Some(_) => {
            // The start tensor's shape, from tract's plan on the whole graph.
            let whole = Tract
                .compile(
                    &graph,
                    &PlanRequest {
                        batch: 2,
                        start: None,
                        outputs: vec![start.unwrap().to_owned()],
                    },
                )
                .unwrap();
            let x = ArrayD::from_shape_vec(
                IxDyn(&[2, dims[0], dims[1], dims[2]]),
                values(99, 2 * dims.iter().product::<usize>()),
            )
            .unwrap();
            whole.run(&[x.view()]).unwrap()[0].shape().to_vec()
        }
    };
    let input =
        ArrayD::from_shape_vec(IxDyn(&input_dims), values(3, input_dims.iter().product())).unwrap();
    let a = ours.run(&[input.view()]).unwrap();
    let b = theirs.run(&[input.view()]).unwrap();
    for ((x, y), name) in a.iter().zip(&b).zip(outputs) {
        assert_eq!(x.shape(), y.shape(), "{what}: {name}");
        let scale = y.iter().fold(1f32, |m, v| m.max(v.abs()));
        let gap = x.iter().zip(y).fold(0f32, |m, (p, q)| m.max((p - q).abs())) / scale;
        assert!(gap < 1e-5, "{what}: {name} differs by {gap}");
    }
}

#[test]
fn depthwise_paths_match_tract() {
    let cases: [(&str, usize, usize, Vec<AttributeProto>); 9] = [
        (
            "3×3, 40 channels (a remainder of 8)",
            40,
            3,
            vec![attr_ints("pads", &[1, 1, 1, 1])],
        ),
        (
            "3×3, 48 channels",
            48,
            3,
            vec![attr_ints("pads", &[1, 1, 1, 1])],
        ),
        (
            "3×3, stride 2, 32 channels",
            32,
            3,
            vec![
                attr_ints("pads", &[1, 1, 1, 1]),
                attr_ints("strides", &[2, 2]),
            ],
        ),
        (
            "5×5, 16 channels",
            16,
            5,
            vec![attr_ints("pads", &[2, 2, 2, 2])],
        ),
        (
            "5×5, padding wider than the map",
            16,
            5,
            vec![attr_ints("pads", &[4, 4, 4, 4])],
        ),
        (
            "5×5, stride 2, SAME_UPPER",
            32,
            5,
            vec![
                attr_ints("strides", &[2, 2]),
                attr_string("auto_pad", "SAME_UPPER"),
            ],
        ),
        (
            "3×3, asymmetric padding",
            16,
            3,
            vec![attr_ints("pads", &[0, 1, 2, 0])],
        ),
        (
            "3×3, dilation 2",
            24,
            3,
            vec![
                attr_ints("pads", &[2, 2, 2, 2]),
                attr_ints("dilations", &[2, 2]),
            ],
        ),
        (
            "7×7, stride 3",
            20,
            7,
            vec![
                attr_ints("pads", &[3, 3, 3, 3]),
                attr_ints("strides", &[3, 3]),
            ],
        ),
    ];
    for (what, channels, kernel, mut attributes) in cases {
        attributes.push(attr_int("group", channels as i64));
        let mut g = Builder::new();
        let y = g.conv("x", "y", channels, channels, kernel, attributes);
        g.node("Clip", &[&y], "z", vec![]);
        for [h, w] in [[13, 11], [3, 2]] {
            check(
                what,
                g.clone().finish(&["z"]),
                [channels, h, w],
                &["z"],
                None,
            );
        }
    }
}

/// The ops of the lowered program of `proto` for `outputs`.
fn lowered(proto: ModelProto, dims: [usize; 3], outputs: &[&str]) -> Vec<super::lower::Op> {
    let graph = graph(proto, dims);
    let request = PlanRequest {
        batch: 1,
        start: None,
        outputs: outputs.iter().map(|s| (*s).to_owned()).collect(),
    };
    super::lower::lower(&graph, &request).unwrap().ops
}

#[test]
fn expansions_run_in_bands_and_match_tract() {
    // Tall images so one pair spans several bands (a band holds about 64 Ki floats of the
    // expanded tensor: 45 rows of 30 × 48 here), with strides, 5×5 windows, asymmetric pads and
    // a residual on the depthwise result.
    let cases: [(&str, usize, Vec<AttributeProto>); 4] = [
        ("3×3 stride 1", 3, vec![attr_ints("pads", &[1, 1, 1, 1])]),
        (
            "3×3 stride 2, asymmetric pads",
            3,
            vec![
                attr_ints("pads", &[0, 1, 1, 0]),
                attr_ints("strides", &[2, 2]),
            ],
        ),
        ("5×5 stride 1", 5, vec![attr_ints("pads", &[2, 2, 2, 2])]),
        (
            "5×5 stride 2, SAME_UPPER",
            5,
            vec![
                attr_ints("strides", &[2, 2]),
                attr_string("auto_pad", "SAME_UPPER"),
            ],
        ),
    ];
    for (what, kernel, mut attributes) in cases {
        attributes.push(attr_int("group", 48));
        let build = || {
            let mut g = Builder::new();
            let e = g.conv("x", "e", 8, 48, 1, vec![]);
            let r = g.node("Clip", &[&e], "r", vec![]);
            let d = g.conv(&r, "d", 48, 48, kernel, attributes.clone());
            g.node("Relu", &[&d], "z", vec![]);
            g
        };
        let dims = [8, 131, 30];
        let fused = lowered(build().finish(&["z"]), dims, &["z"]);
        assert!(
            fused
                .iter()
                .any(|op| matches!(op, super::lower::Op::Expanded { .. })),
            "{what}: the pair was not fused"
        );
        check(what, build().finish(&["z"]), dims, &["z"], None);
        // A requested expanded tensor stays in the arena: no fusion, same results.
        let kept = lowered(build().finish(&["z", "r"]), dims, &["z", "r"]);
        assert!(
            !kept
                .iter()
                .any(|op| matches!(op, super::lower::Op::Expanded { .. })),
            "{what}: a requested tensor was fused away"
        );
        check(what, build().finish(&["z", "r"]), dims, &["z", "r"], None);
    }
    // A residual Add after the depthwise convolution.
    let mut g = Builder::new();
    let e = g.conv("x", "e", 16, 16, 1, vec![]);
    let d = g.conv(
        &e,
        "d",
        16,
        16,
        3,
        vec![attr_int("group", 16), attr_ints("pads", &[1, 1, 1, 1])],
    );
    g.node("Add", &[&d, "x"], "z", vec![]);
    check("residual", g.finish(&["z"]), [16, 300, 20], &["z"], None);
}

#[test]
fn grouped_small_and_general_convolutions_match_tract() {
    let mut g = Builder::new();
    let a = g.conv(
        "x",
        "a",
        6,
        34,
        3,
        vec![attr_int("group", 2), attr_ints("pads", &[1, 1, 1, 1])],
    );
    let a = g.node("HardSwish", &[&a], "a.act", vec![]);
    let b = g.conv(
        &a,
        "b",
        34,
        16,
        3,
        vec![attr_int("group", 2), attr_ints("strides", &[2, 1])],
    );
    let b = g.node("LeakyRelu", &[&b], "b.act", vec![]);
    let c = g.conv(&b, "c", 16, 48, 1, vec![attr_ints("strides", &[2, 2])]);
    g.node("Sigmoid", &[&c], "c.act", vec![]);
    check(
        "grouped / small / strided 1×1",
        g.finish(&["a.act", "c.act"]),
        [6, 17, 15],
        &["a.act", "c.act"],
        None,
    );
}

#[test]
fn small_convolutions_match_tract() {
    let cases: [(&str, usize, usize, Vec<AttributeProto>); 3] = [
        (
            "3×3 stem, stride 2, 48 outputs",
            48,
            3,
            vec![
                attr_ints("pads", &[1, 1, 1, 1]),
                attr_ints("strides", &[2, 2]),
            ],
        ),
        (
            "3×3, 16 outputs, asymmetric padding",
            16,
            3,
            vec![attr_ints("pads", &[2, 0, 1, 3])],
        ),
        (
            "3×3, dilation 2, 32 outputs",
            32,
            3,
            vec![
                attr_ints("pads", &[2, 2, 2, 2]),
                attr_ints("dilations", &[2, 2]),
            ],
        ),
    ];
    for (what, outputs, kernel, attributes) in cases {
        let mut g = Builder::new();
        let y = g.conv("x", "y", 3, outputs, kernel, attributes);
        g.node("Relu", &[&y], "z", vec![]);
        for [h, w] in [[13, 11], [3, 2]] {
            check(what, g.clone().finish(&["z"]), [3, h, w], &["z"], None);
        }
    }
}

#[test]
fn pooling_lrn_concat_and_heads_match_tract() {
    let mut g = Builder::new();
    let conv = g.conv("x", "conv", 8, 16, 3, vec![]);
    let scale = g.weight("bn.scale", &[16], 1.0);
    let bias = g.weight("bn.bias", &[16], 0.5);
    let mean = g.weight("bn.mean", &[16], 0.2);
    let var = g.weight("bn.var", &[16], 0.0);
    // var in [−1, 1): shift it positive through the values the builder made.
    for t in &mut g.graph.initializer {
        if t.name == "bn.var" {
            t.float_data.iter_mut().for_each(|v| *v += 1.5);
        }
    }
    let relu = g.node("Relu", &[&conv], "relu", vec![]);
    let bn = g.node(
        "BatchNormalization",
        &[&relu, &scale, &bias, &mean, &var],
        "bn",
        vec![],
    );
    let bn = g.node("Relu", &[&bn], "bn.relu", vec![]);
    let max = g.node(
        "MaxPool",
        &[&bn],
        "max",
        vec![
            attr_ints("kernel_shape", &[3, 3]),
            attr_ints("strides", &[2, 2]),
            attr_ints("pads", &[1, 1, 1, 1]),
            attr_int("ceil_mode", 1),
        ],
    );
    let avg = g.node(
        "AveragePool",
        &[&bn],
        "avg",
        vec![
            attr_ints("kernel_shape", &[3, 3]),
            attr_ints("strides", &[2, 2]),
            attr_ints("pads", &[1, 1, 1, 1]),
            attr_int("ceil_mode", 1),
        ],
    );
    let avg_in = g.node(
        "AveragePool",
        &[&bn],
        "avg.pad",
        vec![
            attr_ints("kernel_shape", &[3, 3]),
            attr_ints("strides", &[2, 2]),
            attr_ints("pads", &[1, 1, 1, 1]),
            attr_int("count_include_pad", 1),
        ],
    );
    let lrn = g.node("LRN", &[&max], "lrn", vec![attr_int("size", 4)]);
    let cat = g.node(
        "Concat",
        &[&lrn, &avg, &avg_in],
        "cat",
        vec![attr_int("axis", 1)],
    );
    let flat = g.node("Flatten", &[&cat], "flat", vec![attr_int("axis", 1)]);
    let w = g.weight("fc.w", &[7, 48 * 6 * 6], 0.1);
    let b = g.weight("fc.b", &[7], 0.1);
    let fc = g.node("Gemm", &[&flat, &w, &b], "fc", vec![attr_int("transB", 1)]);
    g.node("Softmax", &[&fc], "prob", vec![attr_int("axis", 1)]);
    let proto = g.finish(&["prob"]);
    check(
        "pool / lrn / concat / gemm / softmax",
        proto.clone(),
        [8, 13, 13],
        &["cat", "fc", "prob"],
        None,
    );
    check(
        "a plan that starts at a layer",
        proto,
        [8, 13, 13],
        &["prob"],
        Some("bn.relu"),
    );
}

#[test]
fn dense_tails_run_by_group_as_each_image_alone() {
    let mut g = Builder::new();
    let conv = g.conv(
        "x",
        "conv",
        3,
        16,
        3,
        vec![attr_ints("pads", &[1, 1, 1, 1])],
    );
    let relu = g.node("Relu", &[&conv], "relu", vec![]);
    let pool = g.node("GlobalAveragePool", &[&relu], "pool", vec![]);
    let flat = g.node("Flatten", &[&pool], "flat", vec![attr_int("axis", 1)]);
    let w1 = g.weight("fc1.w", &[70, 16], 0.3);
    let b1 = g.weight("fc1.b", &[70], 0.1);
    let fc1 = g.node(
        "Gemm",
        &[&flat, &w1, &b1],
        "fc1",
        vec![attr_int("transB", 1)],
    );
    let act = g.node("Relu", &[&fc1], "fc1.relu", vec![]);
    let w2 = g.weight("fc2.w", &[70, 9], 0.3);
    let b2 = g.weight("fc2.b", &[9], 0.1);
    let fc2 = g.node("Gemm", &[&act, &w2, &b2], "fc2", vec![]);
    g.node("Softmax", &[&fc2], "prob", vec![attr_int("axis", 1)]);
    let outputs = ["relu", "fc1.relu", "prob"];
    let graph = graph(g.finish(&["prob"]), [3, 6, 5]);
    let request = |batch| PlanRequest {
        batch,
        start: None,
        outputs: outputs.iter().map(|s| (*s).to_owned()).collect(),
    };
    // 19 images: a full group of 16 and a partial one.
    let n = 19;
    let input = ArrayD::from_shape_vec(IxDyn(&[n, 3, 6, 5]), values(5, n * 90)).unwrap();
    let batched = Cnn
        .compile(&graph, &request(n))
        .unwrap()
        .run(&[input.view()])
        .unwrap();
    let theirs = Tract
        .compile(&graph, &request(n))
        .unwrap()
        .run(&[input.view()])
        .unwrap();
    let alone = Cnn.compile(&graph, &request(1)).unwrap();
    for image in 0..n {
        let one = input.slice_axis(Axis(0), (image..image + 1).into());
        let single = alone.run(&[one]).unwrap();
        for ((all, one), name) in batched.iter().zip(&single).zip(outputs) {
            let all = all.index_axis(Axis(0), image);
            let one = one.index_axis(Axis(0), 0);
            assert_eq!(all, one, "{name} of image {image}");
        }
    }
    for ((x, y), name) in batched.iter().zip(&theirs).zip(outputs) {
        let gap = x.iter().zip(y).fold(0f32, |m, (p, q)| m.max((p - q).abs()));
        assert!(gap < 1e-5, "{name} differs from tract by {gap}");
    }
}

#[test]
fn pointwise_products_match_tract() {
    // Depths on both sides of the hand-written product's limit (32), widths with and without a
    // remainder of its 96-column blocks, 15 and 2 pixels (remainders of its 4-row blocks).
    for (cin, cout) in [(24, 112), (32, 80), (33, 32), (7, 16)] {
        let mut g = Builder::new();
        let y = g.conv("x", "y", cin, cout, 1, vec![]);
        g.node("Relu", &[&y], "z", vec![]);
        for [h, w] in [[5, 3], [1, 2]] {
            let what = format!("1×1, {cin} → {cout}, {h}×{w}");
            check(&what, g.clone().finish(&["z"]), [cin, h, w], &["z"], None);
        }
    }
}
