//! Finite-difference checks of every backward rule on small random graphs.
//!
//! Each case builds `input (1×3×H×W) → ops under test → Flatten → Gemm → logits` with seeded
//! random shapes, attributes and weights, and compares the transform's input gradient `g`
//! of f = s·logits (random seed s) with central differences along random directions v:
//! ε⟨g, v⟩ against (f(x+εv) − f(x−εv))/2. Directions whose step crosses a kink (a ReLU, clip or
//! max switching, seen as unequal forward and backward differences) are skipped; each case needs
//! three clean directions. The error is measured against the Cauchy–Schwarz scale ε‖g‖‖v‖, so
//! a rule that mishandles even one border pixel fails.

use camlime_core::grad::BackwardRule;
use camlime_core::ndarray::{Array2, Array4};
use camlime_core::{Classifier, ModelSpec};
use prost::Message;
use rand::{RngExt, SeedableRng};
use rand_distr::StandardNormal;
use rand_pcg::Pcg64;
use tract_onnx::pb::attribute_proto::AttributeType;
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::tensor_shape_proto::{Dimension, dimension::Value as Dim};
use tract_onnx::pb::type_proto::{Tensor as TensorType, Value as TypeValue};
use tract_onnx::pb::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};
use tract_onnx::prelude::{Framework, InferenceModelExt};

const CLASSES: usize = 3;

/// A graph under construction.
struct Builder {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    rng: Pcg64,
    count: usize,
    size: [usize; 2],
}

enum Attr {
    Int(i64),
    Ints(Vec<i64>),
    Float(f32),
    Text(&'static str),
}

impl Builder {
    fn new(seed: u64, size: [usize; 2]) -> Self {
        Self {
            nodes: Vec::new(),
            initializers: Vec::new(),
            rng: Pcg64::seed_from_u64(seed),
            count: 0,
            size,
        }
    }

    fn node(&mut self, op: &str, inputs: &[&str], attrs: Vec<(&str, Attr)>) -> String {
        self.count += 1;
        let output = format!("t{}", self.count);
        let attribute = attrs
            .into_iter()
            .map(|(name, value)| {
                let mut a = AttributeProto {
                    name: name.into(),
                    ..Default::default()
                };
                match value {
                    Attr::Int(i) => (a.r#type, a.i) = (AttributeType::Int as i32, i),
                    Attr::Ints(v) => (a.r#type, a.ints) = (AttributeType::Ints as i32, v),
                    Attr::Float(f) => (a.r#type, a.f) = (AttributeType::Float as i32, f),
                    Attr::Text(t) => {
                        (a.r#type, a.s) = (AttributeType::String as i32, t.as_bytes().to_vec());
                    }
                }
                a
            })
            .collect();
        self.nodes.push(NodeProto {
            name: output.clone(),
            op_type: op.into(),
            input: inputs.iter().map(|s| (*s).to_owned()).collect(),
            output: vec![output.clone()],
            attribute,
            ..Default::default()
        });
        output
    }

    /// A node with several outputs (Split), their names returned in order.
    fn node_outputs(
        &mut self,
        op: &str,
        inputs: &[&str],
        outputs: usize,
        axis: i64,
    ) -> Vec<String> {
        let names: Vec<String> = (0..outputs)
            .map(|_| {
                self.count += 1;
                format!("t{}", self.count)
            })
            .collect();
        self.nodes.push(NodeProto {
            name: names[0].clone(),
            op_type: op.into(),
            input: inputs.iter().map(|s| (*s).to_owned()).collect(),
            output: names.clone(),
            attribute: vec![AttributeProto {
                name: "axis".into(),
                r#type: AttributeType::Int as i32,
                i: axis,
                ..Default::default()
            }],
            ..Default::default()
        });
        names
    }

    fn floats(&mut self, values: &[f32]) -> String {
        self.count += 1;
        let name = format!("f{}", self.count);
        self.initializers.push(TensorProto {
            name: name.clone(),
            dims: vec![values.len() as i64],
            data_type: DataType::Float as i32,
            float_data: values.to_vec(),
            ..Default::default()
        });
        name
    }

    fn constant(&mut self, dims: &[usize], scale: f32, offset: f32) -> String {
        self.count += 1;
        let name = format!("w{}", self.count);
        let n: usize = dims.iter().product();
        let data = (0..n)
            .map(|_| offset + scale * self.rng.sample::<f32, _>(StandardNormal))
            .collect();
        self.initializers.push(TensorProto {
            name: name.clone(),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: DataType::Float as i32,
            float_data: data,
            ..Default::default()
        });
        name
    }

    fn int64(&mut self, values: &[i64]) -> String {
        self.count += 1;
        let name = format!("i{}", self.count);
        self.initializers.push(TensorProto {
            name: name.clone(),
            dims: vec![values.len() as i64],
            data_type: DataType::Int64 as i32,
            int64_data: values.to_vec(),
            ..Default::default()
        });
        name
    }

    fn pick<T: Copy>(&mut self, options: &[T]) -> T {
        options[self.rng.random_range(0..options.len())]
    }

    /// The proto with `body` as the last tensor before the head.
    fn proto(&self, outputs: &[&str]) -> ModelProto {
        let dim = |v: Option<usize>| Dimension {
            value: Some(v.map_or(Dim::DimParam("N".into()), |v| Dim::DimValue(v as i64))),
            ..Default::default()
        };
        let input = ValueInfoProto {
            name: "input".into(),
            r#type: Some(TypeProto {
                value: Some(TypeValue::TensorType(TensorType {
                    elem_type: DataType::Float as i32,
                    shape: Some(TensorShapeProto {
                        dim: vec![
                            dim(None),
                            dim(Some(3)),
                            dim(Some(self.size[0])),
                            dim(Some(self.size[1])),
                        ],
                    }),
                })),
                ..Default::default()
            }),
            ..Default::default()
        };
        ModelProto {
            ir_version: 8,
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: 17,
            }],
            graph: Some(GraphProto {
                name: "case".into(),
                node: self.nodes.clone(),
                initializer: self.initializers.clone(),
                input: vec![input],
                output: outputs
                    .iter()
                    .map(|o| ValueInfoProto {
                        name: (*o).into(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Append Flatten → Gemm → logits and build the classifier.
    fn classifier(mut self, body: &str) -> Classifier {
        let size: usize = {
            let model = tract_onnx::onnx()
                .model_for_proto_model(&self.proto(&[body]))
                .unwrap()
                .with_input_fact(
                    0,
                    tract_onnx::prelude::InferenceFact::dt_shape(
                        tract_onnx::prelude::DatumType::F32,
                        [1, 3, self.size[0], self.size[1]],
                    ),
                )
                .unwrap()
                .into_typed()
                .unwrap();
            let shape = model
                .output_fact(0)
                .unwrap()
                .shape
                .as_concrete()
                .unwrap()
                .to_vec();
            shape.iter().skip(1).product()
        };
        let flat = self.node("Flatten", &[body], vec![("axis", Attr::Int(1))]);
        let weight = self.constant(&[CLASSES, size], 1.0 / (size as f32).sqrt(), 0.0);
        let logits = self.node("Gemm", &[&flat, &weight], vec![("transB", Attr::Int(1))]);
        let bytes = self.proto(&[&logits]).encode_to_vec();
        let mut spec = ModelSpec::user_model("case");
        spec.input_size = [self.size[0] as u32, self.size[1] as u32];
        Classifier::new(&bytes, spec).unwrap()
    }
}

fn conv(b: &mut Builder, x: &str, channels: usize) -> (String, usize) {
    let depthwise = b.pick(&[false, true]);
    let (group, out) = if depthwise {
        (channels, channels * b.pick(&[1, 2]))
    } else {
        (1, b.pick(&[2, 4]))
    };
    let k = b.pick(&[1, 2, 3, 5]);
    let stride = b.pick(&[1, 2, 3]);
    let dilation = if k < 5 { b.pick(&[1, 1, 2]) } else { 1 };
    let pads: Vec<i64> = (0..4)
        .map(|_| b.pick(&[0, 1, 2]).min(k as i64 - 1))
        .collect();
    let weight = b.constant(
        &[out, channels / group, k, k],
        1.0 / ((channels / group * k * k) as f32).sqrt(),
        0.0,
    );
    let bias = b.constant(&[out], 0.1, 0.0);
    let y = b.node(
        "Conv",
        &[x, &weight, &bias],
        vec![
            ("group", Attr::Int(group as i64)),
            ("kernel_shape", Attr::Ints(vec![k as i64; 2])),
            ("strides", Attr::Ints(vec![stride; 2])),
            ("dilations", Attr::Ints(vec![dilation; 2])),
            ("pads", Attr::Ints(pads)),
        ],
    );
    (y, out)
}

fn pool(b: &mut Builder, op: &str, x: &str) -> String {
    let k = b.pick(&[2, 3]);
    let stride = b.pick(&[1, 2, 3]);
    let pads: Vec<i64> = (0..4).map(|_| b.pick(&[0, 1]).min(k as i64 / 2)).collect();
    let mut attrs = vec![
        ("kernel_shape", Attr::Ints(vec![k as i64; 2])),
        ("strides", Attr::Ints(vec![stride; 2])),
        ("pads", Attr::Ints(pads)),
        ("ceil_mode", Attr::Int(b.pick(&[0, 1]))),
    ];
    if op == "AveragePool" {
        attrs.push(("count_include_pad", Attr::Int(b.pick(&[0, 1]))));
    }
    b.node(op, &[x], attrs)
}

/// The graph for one op (with a Conv before it where the op needs mixing).
fn case(op: &str, seed: u64) -> Classifier {
    let mut rng = Pcg64::seed_from_u64(seed);
    let size = [rng.random_range(5..11), rng.random_range(5..11)];
    let mut b = Builder::new(seed, size);
    let body = match op {
        "Conv" => conv(&mut b, "input", 3).0,
        "MaxPool" | "AveragePool" => pool(&mut b, op, "input"),
        "Relu" => b.node("Relu", &["input"], vec![]),
        "Clip" => {
            let (lo, hi) = (b.constant(&[], 0.0, 0.0), b.constant(&[], 0.0, 0.5));
            b.node("Clip", &["input", &lo, &hi], vec![])
        }
        "LeakyRelu" => b.node("LeakyRelu", &["input"], vec![("alpha", Attr::Float(0.2))]),
        "Sigmoid" => b.node("Sigmoid", &["input"], vec![]),
        "BatchNormalization" => {
            let scale = b.constant(&[3], 0.5, 1.0);
            let bias = b.constant(&[3], 0.5, 0.0);
            let mean = b.constant(&[3], 0.5, 0.0);
            let var = b.constant(&[3], 0.1, 1.0);
            b.node(
                "BatchNormalization",
                &["input", &scale, &bias, &mean, &var],
                vec![("epsilon", Attr::Float(1e-3))],
            )
        }
        "DepthwiseConv" => {
            // Stride 1, multiplier 1: the adjoint is a Conv with the kernel rotated.
            let k = b.pick(&[1, 2, 3, 5]);
            let dilation = if k < 5 { b.pick(&[1, 2]) } else { 1 };
            let pads: Vec<i64> = (0..4)
                .map(|_| b.pick(&[0, 1, 2]).min(k as i64 - 1))
                .collect();
            let weight = b.constant(&[3, 1, k, k], 1.0 / k as f32, 0.0);
            b.node(
                "Conv",
                &["input", &weight],
                vec![
                    ("group", Attr::Int(3)),
                    ("kernel_shape", Attr::Ints(vec![k as i64; 2])),
                    ("dilations", Attr::Ints(vec![dilation; 2])),
                    ("pads", Attr::Ints(pads)),
                ],
            )
        }
        "ConvBatchNormalization" => {
            // Folded into the Conv's adjoint when the BN alone reads the Conv.
            let (mixed, channels) = conv(&mut b, "input", 3);
            let scale = b.constant(&[channels], 0.5, 1.0);
            let bias = b.constant(&[channels], 0.5, 0.0);
            let mean = b.constant(&[channels], 0.5, 0.0);
            let var = b.constant(&[channels], 0.1, 1.0);
            b.node(
                "BatchNormalization",
                &[&mixed, &scale, &bias, &mean, &var],
                vec![("epsilon", Attr::Float(1e-3))],
            )
        }
        "Add" | "Mul" => {
            // x ∘ conv(x) with a shape-preserving conv, then a broadcast constant.
            let weight = b.constant(&[3, 3, 3, 3], 0.3, 0.0);
            let mixed = b.node(
                "Conv",
                &["input", &weight],
                vec![("pads", Attr::Ints(vec![1; 4]))],
            );
            let both = b.node(op, &["input", &mixed], vec![]);
            let per_channel = b.constant(&[3, 1, 1], 1.0, 0.0);
            b.node(op, &[&both, &per_channel], vec![])
        }
        "Sub" | "Div" => {
            let per_channel = b.constant(&[3, 1, 1], 0.2, 1.0);
            let shifted = b.node("Sub", &[&per_channel, "input"], vec![]);
            b.node(op, &[&shifted, &per_channel], vec![])
        }
        "Concat" => {
            let (mixed, _) = conv(&mut b, "input", 3);
            let pooled = b.node("GlobalAveragePool", &[&mixed], vec![]);
            let flat_input = b.node("GlobalAveragePool", &["input"], vec![]);
            b.node(
                "Concat",
                &[&flat_input, &pooled],
                vec![("axis", Attr::Int(1))],
            )
        }
        "GlobalAveragePool" => {
            let (mixed, _) = conv(&mut b, "input", 3);
            b.node("GlobalAveragePool", &[&mixed], vec![])
        }
        "Transpose" => b.node(
            "Transpose",
            &["input"],
            vec![("perm", Attr::Ints(vec![0, 2, 3, 1]))],
        ),
        "Pad" => {
            // Constant padding of H and W (a detector pads before each strided conv).
            let pads: Vec<i64> = (0..4).map(|_| b.pick(&[0, 1, 2])).collect();
            let pads = b.int64(&[0, 0, pads[0], pads[1], 0, 0, pads[2], pads[3]]);
            let value = b.constant(&[], 0.0, 0.5);
            let padded = b.node("Pad", &["input", &pads, &value], vec![]);
            let weight = b.constant(&[3, 3, 3, 3], 0.3, 0.0);
            b.node(
                "Conv",
                &[&padded, &weight],
                vec![("strides", Attr::Ints(vec![2, 2]))],
            )
        }
        "Resize" => {
            // Up or down by 2 or 1.5, linear or nearest, in each coordinate convention.
            let (mode, transform) = b.pick(&[
                ("linear", "half_pixel"),
                ("linear", "asymmetric"),
                ("linear", "align_corners"),
                ("linear", "pytorch_half_pixel"),
                ("nearest", "asymmetric"),
                ("nearest", "half_pixel"),
            ]);
            let factor = b.pick(&[2.0f32, 0.5, 1.5]);
            let roi = b.floats(&[]);
            let scales = b.floats(&[1.0, 1.0, factor, factor]);
            let mut attrs = vec![
                ("mode", Attr::Text(mode)),
                ("coordinate_transformation_mode", Attr::Text(transform)),
            ];
            if mode == "nearest" {
                attrs.push(("nearest_mode", Attr::Text("floor")));
            }
            b.node("Resize", &["input", &roi, &scales], attrs)
        }
        "Split" => {
            // Both parts on to the logits through different ops, as a detector's heads do.
            let weight = b.constant(&[4, 3, 1, 1], 0.5, 0.0);
            let mixed = b.node("Conv", &["input", &weight], vec![]);
            let parts = b.node_outputs("Split", &[&mixed], 2, 1);
            let scores = b.node("Sigmoid", &[&parts[0]], vec![]);
            let sides = b.node("LeakyRelu", &[&parts[1]], vec![("alpha", Attr::Float(0.2))]);
            b.node("Concat", &[&scores, &sides], vec![("axis", Attr::Int(1))])
        }
        "SplitOnePart" => {
            // A part that never reaches the logits gets a zero gradient.
            let parts = b.node_outputs("Split", &["input"], 3, 1);
            b.node("Relu", &[&parts[1]], vec![])
        }
        "ConvTranspose" => {
            // A learned upsampling (a segmenter's last layer): strides, pads, dilations,
            // output padding and groups drawn at random (a dilation that is a multiple of the
            // stride comes with padding: without, the rule declines, see its error).
            let stride = b.pick(&[1i64, 2, 3]);
            let k = b.pick(&[1usize, 2, 3]);
            let dilation = if k > 1 { b.pick(&[1i64, 2]) } else { 1 };
            let floor = i64::from(k > 1 && stride > 1 && dilation % stride == 0);
            let pads: Vec<i64> = (0..4)
                .map(|_| b.pick(&[0, 1]).max(floor).min(k as i64 - 1))
                .collect();
            let output_padding = b.pick(&[0i64, 1]).min(stride - 1);
            let group = b.pick(&[1usize, 3]);
            let weight = b.constant(&[3, 6 / group, k, k], 0.5, 0.0);
            let up = b.node(
                "ConvTranspose",
                &["input", &weight],
                vec![
                    ("group", Attr::Int(group as i64)),
                    ("strides", Attr::Ints(vec![stride; 2])),
                    ("dilations", Attr::Ints(vec![dilation; 2])),
                    ("pads", Attr::Ints(pads)),
                    ("output_padding", Attr::Ints(vec![output_padding; 2])),
                ],
            );
            b.node("Sigmoid", &[&up], vec![])
        }
        "MinMax" => {
            // A ReLU6 as TensorFlow.js graphs write it: Min with 6, then Max with 0; and a Max
            // of two tensors.
            let (six, zero) = (b.constant(&[], 0.0, 0.6), b.constant(&[], 0.0, 0.0));
            let capped = b.node("Min", &["input", &six], vec![]);
            let clipped = b.node("Max", &[&capped, &zero], vec![]);
            let weight = b.constant(&[3, 3, 3, 3], 0.3, 0.0);
            let mixed = b.node(
                "Conv",
                &["input", &weight],
                vec![("pads", Attr::Ints(vec![1; 4]))],
            );
            b.node("Max", &[&clipped, &mixed], vec![])
        }
        "Sum" => {
            // Three inputs, one broadcast per channel (a segmenter sums its skip branches).
            let weight = b.constant(&[3, 3, 3, 3], 0.3, 0.0);
            let same = b.node(
                "Conv",
                &["input", &weight],
                vec![("pads", Attr::Ints(vec![1; 4]))],
            );
            let per_channel = b.constant(&[3, 1, 1], 1.0, 0.0);
            b.node("Sum", &["input", &same, &per_channel], vec![])
        }
        "Reshape" => {
            let shape = b.int64(&[0, -1, 3]);
            let reshaped = b.node("Reshape", &["input", &shape], vec![]);
            b.node("Relu", &[&reshaped], vec![])
        }
        "Network" => {
            // A small CNN mixing everything: conv → BN → relu → pool → residual → concat.
            let (x, c) = conv(&mut b, "input", 3);
            let x = b.node("Relu", &[&x], vec![]);
            let x = pool(&mut b, "MaxPool", &x);
            let weight = b.constant(&[c, c, 3, 3], 0.3, 0.0);
            let y = b.node(
                "Conv",
                &[&x, &weight],
                vec![("pads", Attr::Ints(vec![1; 4]))],
            );
            let sum = b.node("Add", &[&x, &y], vec![]);
            let both = b.node("Concat", &[&x, &sum], vec![("axis", Attr::Int(1))]);
            b.node("Relu", &[&both], vec![])
        }
        other => panic!("no case for {other}"),
    };
    b.classifier(&body)
}

/// s·logits for each row of `inputs`, in f64.
fn objective(classifier: &Classifier, inputs: &Array4<f32>, seed: &[f32]) -> Vec<f64> {
    let logits = classifier.forward(inputs.view(), &[]).unwrap().logits;
    logits
        .rows()
        .into_iter()
        .map(|row| {
            row.iter()
                .zip(seed)
                .map(|(l, s)| f64::from(*l) * f64::from(*s))
                .sum()
        })
        .collect()
}

fn check_op(op: &str) {
    let mut worst = 0.0f64;
    for case_seed in 0..12u64 {
        let seed = case_seed * 1000 + op.len() as u64;
        let classifier = case(op, seed);
        let [h, w] = classifier.input_size();
        let mut rng = Pcg64::seed_from_u64(seed + 1);
        let x = Array4::from_shape_fn((1, 3, h, w), |_| rng.sample::<f32, _>(StandardNormal));
        let s: Vec<f32> = (0..CLASSES)
            .map(|_| rng.sample::<f32, _>(StandardNormal))
            .collect();
        let seeds = Array2::from_shape_vec((1, CLASSES), s.clone()).unwrap();
        let out = classifier
            .gradients(x.view(), seeds.view(), &[], true, BackwardRule::Standard)
            .unwrap();
        let g = out.input_gradient.unwrap();
        let g_norm = g.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>().sqrt();
        let (mut clean, mut tries) = (0, 0);
        while clean < 3 {
            tries += 1;
            assert!(
                tries <= 40,
                "{op} case {case_seed}: every direction crossed a kink"
            );
            let v = Array4::from_shape_fn((1, 3, h, w), |_| rng.sample::<f32, _>(StandardNormal));
            // A unit within ~ε of its kink makes every direction cross it: shrink the step,
            // loosening the bound for float32 rounding at the smaller step.
            let (eps, tolerance) = if tries <= 20 {
                (1e-3f32, 1e-3)
            } else {
                (1e-4f32, 1e-2)
            };
            let mut batch = Array4::zeros((3, 3, h, w));
            batch
                .index_axis_mut(camlime_core::ndarray::Axis(0), 0)
                .assign(&x.index_axis(camlime_core::ndarray::Axis(0), 0));
            for (i, sign) in [(1, 1.0f32), (2, -1.0f32)] {
                let shifted = &x + &(&v * (sign * eps));
                batch
                    .index_axis_mut(camlime_core::ndarray::Axis(0), i)
                    .assign(&shifted.index_axis(camlime_core::ndarray::Axis(0), 0));
            }
            let f = objective(&classifier, &batch, &s);
            let (ahead, behind) = (f[1] - f[0], f[0] - f[2]);
            let v_norm = v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
            let scale = f64::from(eps) * g_norm * v_norm;
            if scale == 0.0 {
                break;
            }
            if (ahead - behind).abs() > tolerance * scale {
                continue;
            }
            let analytic: f64 = f64::from(eps)
                * g.iter()
                    .zip(v.iter())
                    .map(|(a, b)| f64::from(*a) * f64::from(*b))
                    .sum::<f64>();
            let error = ((ahead + behind) / 2.0 - analytic).abs() / scale;
            worst = worst.max(error);
            assert!(
                error <= tolerance,
                "{op} case {case_seed}: directional derivative off by {error:.2e} of scale"
            );
            clean += 1;
        }
    }
    eprintln!("{op}: 12 cases, worst error {worst:.2e} of ε‖g‖‖v‖");
}

#[test]
fn conv_and_pooling_rules() {
    for op in [
        "Conv",
        "DepthwiseConv",
        "ConvBatchNormalization",
        "MaxPool",
        "AveragePool",
        "GlobalAveragePool",
    ] {
        check_op(op);
    }
}

#[test]
fn elementwise_rules() {
    for op in [
        "Relu",
        "Clip",
        "LeakyRelu",
        "Sigmoid",
        "BatchNormalization",
        "Add",
        "Mul",
        "Sub",
        "Div",
    ] {
        check_op(op);
    }
}

#[test]
fn shape_rules_and_a_small_network() {
    for op in [
        "Concat",
        "Transpose",
        "Reshape",
        "Pad",
        "Resize",
        "Split",
        "SplitOnePart",
        "ConvTranspose",
        "Sum",
        "MinMax",
        "Network",
    ] {
        check_op(op);
    }
}

#[test]
fn guided_rule_passes_only_positive_gradients_through_relu() {
    let mut b = Builder::new(7, [4, 4]);
    let body = b.node("Relu", &["input"], vec![]);
    let classifier = b.classifier(&body);
    let mut rng = Pcg64::seed_from_u64(3);
    let x = Array4::from_shape_fn((1, 3, 4, 4), |_| rng.sample::<f32, _>(StandardNormal));
    let seeds = Array2::from_shape_vec((1, CLASSES), vec![1.0, -2.0, 0.5]).unwrap();
    let run = |rule| {
        classifier
            .gradients(x.view(), seeds.view(), &[], true, rule)
            .unwrap()
            .input_gradient
            .unwrap()
    };
    let (standard, guided) = (run(BackwardRule::Standard), run(BackwardRule::Guided));
    let mut negatives = 0;
    for (s, g) in standard.iter().zip(guided.iter()) {
        assert_eq!(*g, s.max(0.0));
        negatives += usize::from(*s < 0.0);
    }
    assert!(negatives > 0, "the case should exercise negative gradients");
}

#[test]
fn an_op_without_a_rule_is_named() {
    let mut b = Builder::new(1, [4, 4]);
    let body = b.node("Softsign", &["input"], vec![]);
    let classifier = b.classifier(&body);
    let x = Array4::<f32>::zeros((1, 3, 4, 4));
    let seeds = Array2::<f32>::ones((1, CLASSES));
    let error = classifier
        .gradients(x.view(), seeds.view(), &[], true, BackwardRule::Standard)
        .unwrap_err()
        .to_string();
    assert!(error.contains("`Softsign`"), "{error}");
}
