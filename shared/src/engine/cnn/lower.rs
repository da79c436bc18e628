//! ONNX graph → lowered CNN program: shapes inferred per image, BatchNormalization folded into the
//! Conv before it, activations / residual Adds fused into the op that produces their input,
//! weights re-laid once for the kernels, dead ops pruned. An op or attribute this lowering does
//! not cover is [`Error::Unsupported`] naming it, so the whole graph goes to another engine.

use std::collections::HashMap;

use tract_onnx::pb::{NodeProto, TensorProto};
use tract_onnx::prelude::tract_ndarray::ArrayViewD;

use super::arena;
use crate::engine::{Graph, PlanRequest};
use crate::onnx;
use crate::{Error, Result};

/// A tensor of one image, stored NHWC: `h × w × c` floats (a vector is `1 × 1 × n`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dims {
    /// Rows.
    pub h: usize,
    /// Columns.
    pub w: usize,
    /// Channels.
    pub c: usize,
}

impl Dims {
    /// Floats of one image's tensor.
    pub fn len(self) -> usize {
        self.h * self.w * self.c
    }

    /// Whether the tensor holds no value.
    pub fn is_empty(self) -> bool {
        self.len() == 0
    }
}

/// Index of a tensor in [`Program::tensors`].
pub type TensorId = usize;

/// One tensor of the program.
#[derive(Clone, Debug)]
pub struct TensorInfo {
    /// ONNX name.
    pub name: String,
    /// Its per-image shape.
    pub dims: Dims,
    /// ONNX rank (4: `N×C×H×W`, 2: `N×F`): how the tensor leaves the plan.
    pub rank: usize,
    /// Offset in the activation arena (floats), set by the arena planner.
    pub offset: usize,
}

/// A pointwise function applied where a result is written.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Act {
    /// Identity.
    None,
    /// `max(x, 0)`.
    Relu,
    /// `min(max(x, lo), hi)`.
    Clip(f32, f32),
    /// `1 / (1 + e^-x)`.
    Sigmoid,
    /// `clamp(alpha·x + beta, 0, 1)`.
    HardSigmoid(f32, f32),
    /// `x · clamp(x/6 + 1/2, 0, 1)`.
    HardSwish,
    /// `x` when `x ≥ 0`, else `alpha·x`.
    LeakyRelu(f32),
}

impl Act {
    /// The function at `x`.
    #[inline(always)]
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Act::None => x,
            Act::Relu => x.max(0.0),
            Act::Clip(lo, hi) => x.max(lo).min(hi),
            Act::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            Act::HardSigmoid(alpha, beta) => (alpha * x + beta).clamp(0.0, 1.0),
            Act::HardSwish => x * (x / 6.0 + 0.5).clamp(0.0, 1.0),
            Act::LeakyRelu(alpha) => {
                if x < 0.0 {
                    alpha * x
                } else {
                    x
                }
            }
        }
    }
}

/// How a convolution runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvKind {
    /// 1×1, stride 1, no padding, one group: a matrix product on the NHWC rows.
    Pointwise,
    /// One filter per channel: a direct kernel vectorised over channels.
    Depthwise,
    /// Few inputs per output (`kh·kw·cin/groups ≤ 32`, an RGB stem): a direct kernel that
    /// broadcasts each input over the output channels.
    Small,
    /// Anything else: image-to-rows per group, then a matrix product.
    General,
}

/// A convolution with its folded bias, residual input and activation.
#[derive(Clone, Debug)]
pub struct Conv {
    /// The map it reads.
    pub input: TensorId,
    /// The map it writes.
    pub output: TensorId,
    /// Added to the result before the activation (a fused `Add`).
    pub residual: Option<TensorId>,
    /// How it runs on the CPU.
    pub kind: ConvKind,
    /// Window rows and columns.
    pub kernel: [usize; 2],
    /// Step between windows, rows and columns.
    pub stride: [usize; 2],
    /// Step between taps, rows and columns.
    pub dilation: [usize; 2],
    /// Top, left, bottom, right.
    pub pads: [usize; 4],
    /// Channel groups (`cin` for a depthwise convolution).
    pub groups: usize,
    /// OIHW until [`Program`] is finished, then in the kernel's layout: Pointwise, General and
    /// Small `[group][ky][kx][ci][co]` (rows of the matrix product), Depthwise `[ky][kx][c]`.
    pub weights: Vec<f32>,
    /// One per output channel (zeros when the model has none).
    pub bias: Vec<f32>,
    /// Applied last.
    pub act: Act,
}

impl Conv {
    /// Input rows (`axis` 0) or columns (1) one window covers.
    pub fn span(&self, axis: usize) -> usize {
        (self.kernel[axis] - 1) * self.dilation[axis] + 1
    }
}

/// A pooling window.
#[derive(Clone, Debug)]
pub struct Pool {
    /// The map it reads.
    pub input: TensorId,
    /// The map it writes.
    pub output: TensorId,
    /// Window rows and columns.
    pub kernel: [usize; 2],
    /// Step between windows, rows and columns.
    pub stride: [usize; 2],
    /// Top, left, bottom, right.
    pub pads: [usize; 4],
    /// Average pooling only: padding counts in the divisor.
    pub count_include_pad: bool,
}

/// One lowered operation.
#[derive(Clone, Debug)]
pub enum Op {
    /// A convolution with its epilogue.
    Conv(Conv),
    /// A pointwise convolution whose result only a depthwise convolution reads (MobileNet's and
    /// EfficientNet's inverted residual blocks), run band by band so the expanded tensor stays
    /// in cache: it is never written to the arena.
    Expanded {
        /// The pointwise convolution.
        expand: Conv,
        /// The depthwise convolution that reads it.
        depthwise: Conv,
    },
    /// Max over each window's in-bounds pixels.
    MaxPool(Pool),
    /// Mean over each window.
    AveragePool(Pool),
    /// Mean over all pixels, per channel.
    GlobalAveragePool {
        /// The map.
        input: TensorId,
        /// `1 × 1 × C`.
        output: TensorId,
    },
    /// Per-channel `x·scale + shift` (a BatchNormalization that follows no Conv).
    Affine {
        /// The map.
        input: TensorId,
        /// The result.
        output: TensorId,
        /// Per channel.
        scale: Vec<f32>,
        /// Per channel.
        shift: Vec<f32>,
        /// Applied last.
        act: Act,
    },
    /// `act(a + b)`, same shapes.
    Add {
        /// One operand.
        a: TensorId,
        /// The other.
        b: TensorId,
        /// The sum.
        output: TensorId,
        /// Applied last.
        act: Act,
    },
    /// A pointwise function alone.
    Activation {
        /// The tensor.
        input: TensorId,
        /// The result.
        output: TensorId,
        /// The function.
        act: Act,
    },
    /// Channel concatenation.
    Concat {
        /// The maps, in channel order.
        inputs: Vec<TensorId>,
        /// Their concatenation.
        output: TensorId,
    },
    /// NHWC map → vector in ONNX's `C·H·W` order (a copy when the map is `1 × 1 × C`).
    Flatten {
        /// The map.
        input: TensorId,
        /// The vector.
        output: TensorId,
    },
    /// Vector × `[k][n]` weights + bias.
    Dense {
        /// The vector.
        input: TensorId,
        /// The result.
        output: TensorId,
        /// `k × n`, row-major.
        weights: Vec<f32>,
        /// One per output.
        bias: Vec<f32>,
        /// Applied last.
        act: Act,
    },
    /// ONNX LRN across channels: `x / (bias + alpha/size · Σ x²)^beta`.
    Lrn {
        /// The map.
        input: TensorId,
        /// The result.
        output: TensorId,
        /// Channels in the sum.
        size: usize,
        /// Scale of the sum.
        alpha: f32,
        /// Exponent.
        beta: f32,
        /// Offset.
        bias: f32,
    },
    /// Softmax over a vector.
    Softmax {
        /// The vector.
        input: TensorId,
        /// The probabilities.
        output: TensorId,
    },
}

impl Op {
    /// The tensor it writes.
    pub fn output(&self) -> TensorId {
        match self {
            Op::Conv(c) => c.output,
            Op::Expanded { depthwise, .. } => depthwise.output,
            Op::MaxPool(p) | Op::AveragePool(p) => p.output,
            Op::GlobalAveragePool { output, .. }
            | Op::Affine { output, .. }
            | Op::Add { output, .. }
            | Op::Activation { output, .. }
            | Op::Concat { output, .. }
            | Op::Flatten { output, .. }
            | Op::Dense { output, .. }
            | Op::Lrn { output, .. }
            | Op::Softmax { output, .. } => *output,
        }
    }

    fn set_output(&mut self, tensor: TensorId) {
        match self {
            Op::Conv(c) => c.output = tensor,
            Op::Expanded { depthwise, .. } => depthwise.output = tensor,
            Op::MaxPool(p) | Op::AveragePool(p) => p.output = tensor,
            Op::GlobalAveragePool { output, .. }
            | Op::Affine { output, .. }
            | Op::Add { output, .. }
            | Op::Activation { output, .. }
            | Op::Concat { output, .. }
            | Op::Flatten { output, .. }
            | Op::Dense { output, .. }
            | Op::Lrn { output, .. }
            | Op::Softmax { output, .. } => *output = tensor,
        }
    }

    /// The tensors it reads.
    pub fn inputs(&self) -> Vec<TensorId> {
        match self {
            Op::Conv(c) => std::iter::once(c.input).chain(c.residual).collect(),
            Op::Expanded { expand, depthwise } => std::iter::once(expand.input)
                .chain(depthwise.residual)
                .collect(),
            Op::MaxPool(p) | Op::AveragePool(p) => vec![p.input],
            Op::Add { a, b, .. } => vec![*a, *b],
            Op::Concat { inputs, .. } => inputs.clone(),
            Op::GlobalAveragePool { input, .. }
            | Op::Affine { input, .. }
            | Op::Activation { input, .. }
            | Op::Flatten { input, .. }
            | Op::Dense { input, .. }
            | Op::Lrn { input, .. }
            | Op::Softmax { input, .. } => vec![*input],
        }
    }

    /// The activation slot of ops that can absorb a following activation.
    fn act_mut(&mut self) -> Option<&mut Act> {
        match self {
            Op::Conv(c) | Op::Expanded { depthwise: c, .. } => Some(&mut c.act),
            Op::Affine { act, .. } | Op::Add { act, .. } | Op::Dense { act, .. } => Some(act),
            _ => None,
        }
    }
}

/// The lowered plan of one request: ops in execution order over an arena of per-image tensors.
#[derive(Clone, Debug)]
pub struct Program {
    /// Every tensor; the arena holds those the ops use.
    pub tensors: Vec<TensorInfo>,
    /// In execution order.
    pub ops: Vec<Op>,
    /// The image (or the start tensor).
    pub input: TensorId,
    /// The requested tensors, in order.
    pub outputs: Vec<TensorId>,
    /// Floats of the activation arena of one image.
    pub arena_len: usize,
    /// Floats of the image-to-rows scratch of one image.
    pub scratch_len: usize,
}

impl Program {
    /// The NCHW (or `N×F`) shape of a tensor for `n` images: how it enters or leaves a plan.
    pub fn shape(&self, tensor: TensorId, n: usize) -> Vec<usize> {
        let info = &self.tensors[tensor];
        let d = info.dims;
        if info.rank == 4 {
            vec![n, d.c, d.h, d.w]
        } else {
            vec![n, d.len()]
        }
    }

    /// A plan run's one input and its image count, checked against the program's input.
    pub fn check_input<'a, 'b>(
        &self,
        inputs: &'a [ArrayViewD<'b, f32>],
    ) -> Result<(&'a ArrayViewD<'b, f32>, usize)> {
        let [input] = inputs else {
            return Err(Error::Parameter(format!(
                "the plan takes one input, found {}",
                inputs.len()
            )));
        };
        let n = input.shape().first().copied().unwrap_or(0);
        let expected = self.shape(self.input, n);
        if input.shape() != expected.as_slice() || n == 0 {
            return Err(Error::Parameter(format!(
                "input must be {expected:?} with N ≥ 1, found {:?}",
                input.shape()
            )));
        }
        Ok((input, n))
    }
}

fn unsupported(node: &NodeProto, what: &str) -> Error {
    Error::Unsupported(format!(
        "{} node `{}`: {what}",
        node.op_type,
        if node.name.is_empty() {
            node.output.first().map_or("", String::as_str)
        } else {
            &node.name
        }
    ))
}

fn model_error(node: &NodeProto, what: &str) -> Error {
    Error::Model(format!("{} node `{}`: {what}", node.op_type, node.name))
}

/// Lowers one graph, node by node.
struct Lowering<'a> {
    constants: HashMap<String, TensorProto>,
    tensors: Vec<TensorInfo>,
    ids: HashMap<&'a str, TensorId>,
    ops: Vec<Op>,
}

impl<'a> Lowering<'a> {
    fn tensor(&self, node: &NodeProto, name: &str) -> Result<TensorId> {
        self.ids.get(name).copied().ok_or_else(|| {
            if self.constants.contains_key(name) {
                unsupported(node, &format!("constant data input `{name}`"))
            } else {
                model_error(
                    node,
                    &format!("input `{name}` is not produced before it is used"),
                )
            }
        })
    }

    fn constant(&self, node: &NodeProto, name: &str) -> Result<Vec<f32>> {
        let tensor = self
            .constants
            .get(name)
            .ok_or_else(|| unsupported(node, &format!("`{name}` is not a constant")))?;
        onnx::f32_values(tensor)
    }

    fn add_tensor(&mut self, name: &'a str, dims: Dims, rank: usize) -> TensorId {
        let id = self.tensors.len();
        self.tensors.push(TensorInfo {
            name: name.to_owned(),
            dims,
            rank,
            offset: 0,
        });
        self.ids.insert(name, id);
        id
    }

    fn dims(&self, id: TensorId) -> Dims {
        self.tensors[id].dims
    }

    fn node(&mut self, node: &'a NodeProto) -> Result<()> {
        let Some(output) = node.output.first().map(String::as_str) else {
            return Err(model_error(node, "no output"));
        };
        let first = node.input.first().map_or("", String::as_str);
        match node.op_type.as_str() {
            "Constant" => Ok(()),
            "Identity" | "Dropout" => {
                if node.output.iter().skip(1).any(|o| !o.is_empty()) {
                    return Err(unsupported(node, "a mask output"));
                }
                let id = self.tensor(node, first)?;
                self.ids.insert(output, id);
                Ok(())
            }
            "Conv" => self.conv(node, output),
            "BatchNormalization" => self.batch_norm(node, output),
            "Relu" | "Clip" | "Sigmoid" | "HardSigmoid" | "HardSwish" | "LeakyRelu" => {
                let act = self.activation(node)?;
                let input = self.tensor(node, first)?;
                let (dims, rank) = (self.dims(input), self.tensors[input].rank);
                let output = self.add_tensor(output, dims, rank);
                self.ops.push(Op::Activation { input, output, act });
                Ok(())
            }
            "Add" => self.add(node, output),
            "MaxPool" | "AveragePool" => self.pool(node, output),
            "GlobalAveragePool" => {
                let input = self.map_input(node, first)?;
                let c = self.dims(input).c;
                let output = self.add_tensor(output, Dims { h: 1, w: 1, c }, 4);
                self.ops.push(Op::GlobalAveragePool { input, output });
                Ok(())
            }
            "Flatten" | "Reshape" => self.flatten(node, output),
            "Concat" => self.concat(node, output),
            "Gemm" | "MatMul" => self.dense(node, output),
            "LRN" => {
                let input = self.map_input(node, first)?;
                let size = onnx::int(node, "size", 0);
                if size < 1 {
                    return Err(model_error(node, "size must be ≥ 1"));
                }
                let dims = self.dims(input);
                let output = self.add_tensor(output, dims, 4);
                self.ops.push(Op::Lrn {
                    input,
                    output,
                    size: size as usize,
                    alpha: onnx::float(node, "alpha", 1e-4),
                    beta: onnx::float(node, "beta", 0.75),
                    bias: onnx::float(node, "bias", 1.0),
                });
                Ok(())
            }
            "Softmax" => {
                let input = self.tensor(node, first)?;
                let axis = onnx::int(node, "axis", -1);
                if self.tensors[input].rank != 2 || !(axis == 1 || axis == -1) {
                    return Err(unsupported(
                        node,
                        "softmax other than over a vector's classes",
                    ));
                }
                let dims = self.dims(input);
                let output = self.add_tensor(output, dims, 2);
                self.ops.push(Op::Softmax { input, output });
                Ok(())
            }
            other => Err(unsupported(
                node,
                &format!("op {other} is not in the lowered plan"),
            )),
        }
    }

    /// An input that must be an `N×C×H×W` map.
    fn map_input(&self, node: &NodeProto, name: &str) -> Result<TensorId> {
        let id = self.tensor(node, name)?;
        if self.tensors[id].rank != 4 {
            return Err(unsupported(node, "an input that is not N×C×H×W"));
        }
        Ok(id)
    }

    fn activation(&self, node: &NodeProto) -> Result<Act> {
        Ok(match node.op_type.as_str() {
            "Relu" => Act::Relu,
            "Sigmoid" => Act::Sigmoid,
            "HardSwish" => Act::HardSwish,
            "HardSigmoid" => Act::HardSigmoid(
                onnx::float(node, "alpha", 0.2),
                onnx::float(node, "beta", 0.5),
            ),
            "LeakyRelu" => Act::LeakyRelu(onnx::float(node, "alpha", 0.01)),
            _ => {
                // Clip: bounds from inputs 1 and 2 (opset ≥ 11) or attributes (older opsets).
                let bound = |slot: usize, attribute: &str, default: f32| -> Result<f32> {
                    match node.input.get(slot).filter(|n| !n.is_empty()) {
                        Some(name) => match self.constant(node, name)?.as_slice() {
                            [value] => Ok(*value),
                            _ => Err(unsupported(node, "a bound that is not a scalar")),
                        },
                        None => Ok(onnx::float(node, attribute, default)),
                    }
                };
                Act::Clip(
                    bound(1, "min", f32::NEG_INFINITY)?,
                    bound(2, "max", f32::INFINITY)?,
                )
            }
        })
    }

    fn conv(&mut self, node: &'a NodeProto, output: &'a str) -> Result<()> {
        let input = self.map_input(node, node.input.first().map_or("", String::as_str))?;
        let weight_name = node.input.get(1).map_or("", String::as_str);
        let weight = self
            .constants
            .get(weight_name)
            .ok_or_else(|| unsupported(node, "weights that are not a constant"))?;
        let shape: Vec<usize> = weight.dims.iter().map(|&d| d.max(0) as usize).collect();
        let &[cout, cin_group, kh, kw] = shape.as_slice() else {
            return Err(unsupported(node, "a convolution that is not 2-D"));
        };
        let weights = onnx::f32_values(weight)?;
        if weights.len() != cout * cin_group * kh * kw || cout == 0 || kh == 0 || kw == 0 {
            return Err(model_error(node, "weights do not match their shape"));
        }
        let groups = onnx::int(node, "group", 1).max(1) as usize;
        let in_dims = self.dims(input);
        if cin_group * groups != in_dims.c || !cout.is_multiple_of(groups) {
            return Err(model_error(
                node,
                &format!(
                    "{} input channels and {groups} groups do not fit weights of shape {shape:?}",
                    in_dims.c
                ),
            ));
        }
        let bias = match node.input.get(2).filter(|n| !n.is_empty()) {
            Some(name) => self.constant(node, name)?,
            None => vec![0.0; cout],
        };
        if bias.len() != cout {
            return Err(model_error(
                node,
                "bias length differs from the output channels",
            ));
        }
        let pair = |name: &str| -> Result<[usize; 2]> {
            match onnx::ints(node, name).as_deref() {
                None => Ok([1, 1]),
                Some(&[a, b]) if a >= 1 && b >= 1 => Ok([a as usize, b as usize]),
                Some(other) => Err(model_error(node, &format!("{name} {other:?}"))),
            }
        };
        let stride = pair("strides")?;
        let dilation = pair("dilations")?;
        let kernel = [kh, kw];
        let pads = self.pads(node, [in_dims.h, in_dims.w], kernel, stride, dilation)?;
        let out = |size: usize, k: usize, s: usize, d: usize, before: usize, after: usize| {
            let span = d * (k - 1) + 1;
            (size + before + after)
                .checked_sub(span)
                .map(|room| room / s + 1)
        };
        let (Some(h), Some(w)) = (
            out(in_dims.h, kh, stride[0], dilation[0], pads[0], pads[2]),
            out(in_dims.w, kw, stride[1], dilation[1], pads[1], pads[3]),
        ) else {
            return Err(model_error(
                node,
                "the kernel is larger than the padded input",
            ));
        };
        let kind = if groups == in_dims.c && cin_group == 1 && cout == groups {
            ConvKind::Depthwise
        } else if kernel == [1, 1] && stride == [1, 1] && pads == [0; 4] && groups == 1 {
            ConvKind::Pointwise
        } else if kh * kw * cin_group <= 32 {
            ConvKind::Small
        } else {
            ConvKind::General
        };
        let output = self.add_tensor(output, Dims { h, w, c: cout }, 4);
        self.ops.push(Op::Conv(Conv {
            input,
            output,
            residual: None,
            kind,
            kernel,
            stride,
            dilation,
            pads,
            groups,
            weights,
            bias,
            act: Act::None,
        }));
        Ok(())
    }

    /// Explicit `[top, left, bottom, right]` pads from `pads` or `auto_pad`.
    fn pads(
        &self,
        node: &NodeProto,
        size: [usize; 2],
        kernel: [usize; 2],
        stride: [usize; 2],
        dilation: [usize; 2],
    ) -> Result<[usize; 4]> {
        let auto = onnx::string(node, "auto_pad", "NOTSET");
        match auto.as_str() {
            "NOTSET" => match onnx::ints(node, "pads").as_deref() {
                None => Ok([0; 4]),
                Some(&[t, l, b, r]) if t >= 0 && l >= 0 && b >= 0 && r >= 0 => {
                    Ok([t as usize, l as usize, b as usize, r as usize])
                }
                Some(other) => Err(model_error(node, &format!("pads {other:?}"))),
            },
            "VALID" => Ok([0; 4]),
            "SAME_UPPER" | "SAME_LOWER" => {
                let mut pads = [0; 4];
                for axis in 0..2 {
                    let out = size[axis].div_ceil(stride[axis]);
                    let span = dilation[axis] * (kernel[axis] - 1) + 1;
                    let total = ((out - 1) * stride[axis] + span).saturating_sub(size[axis]);
                    let small = total / 2;
                    let (before, after) = if auto == "SAME_UPPER" {
                        (small, total - small)
                    } else {
                        (total - small, small)
                    };
                    pads[axis] = before;
                    pads[axis + 2] = after;
                }
                Ok(pads)
            }
            other => Err(model_error(node, &format!("auto_pad {other}"))),
        }
    }

    fn batch_norm(&mut self, node: &'a NodeProto, output: &'a str) -> Result<()> {
        let [x, scale, bias, mean, var, ..] = node.input.as_slice() else {
            return Err(model_error(node, "expected 5 inputs"));
        };
        if node.output.iter().skip(1).any(|o| !o.is_empty()) {
            return Err(unsupported(node, "training-mode outputs"));
        }
        let input = self.map_input(node, x)?;
        let c = self.dims(input).c;
        let epsilon = onnx::float(node, "epsilon", 1e-5);
        let (gamma, beta, mean, var) = (
            self.constant(node, scale)?,
            self.constant(node, bias)?,
            self.constant(node, mean)?,
            self.constant(node, var)?,
        );
        if [gamma.len(), beta.len(), mean.len(), var.len()] != [c; 4] {
            return Err(model_error(
                node,
                "parameters differ in length from the channels",
            ));
        }
        let scale: Vec<f32> = (0..c)
            .map(|i| gamma[i] / (var[i] + epsilon).sqrt())
            .collect();
        let shift = (0..c).map(|i| beta[i] - mean[i] * scale[i]).collect();
        let dims = self.dims(input);
        let output = self.add_tensor(output, dims, 4);
        self.ops.push(Op::Affine {
            input,
            output,
            scale,
            shift,
            act: Act::None,
        });
        Ok(())
    }

    fn add(&mut self, node: &'a NodeProto, output: &'a str) -> Result<()> {
        let [a, b] = node.input.as_slice() else {
            return Err(model_error(node, "expected 2 inputs"));
        };
        if [a, b]
            .iter()
            .any(|name| self.constants.contains_key(name.as_str()))
        {
            return Err(unsupported(node, "adding a constant"));
        }
        let (a, b) = (self.tensor(node, a)?, self.tensor(node, b)?);
        if self.dims(a) != self.dims(b) || self.tensors[a].rank != self.tensors[b].rank {
            return Err(unsupported(node, "broadcasting"));
        }
        let (dims, rank) = (self.dims(a), self.tensors[a].rank);
        let output = self.add_tensor(output, dims, rank);
        self.ops.push(Op::Add {
            a,
            b,
            output,
            act: Act::None,
        });
        Ok(())
    }

    fn pool(&mut self, node: &'a NodeProto, output: &'a str) -> Result<()> {
        let input = self.map_input(node, node.input.first().map_or("", String::as_str))?;
        if node.output.iter().skip(1).any(|o| !o.is_empty()) {
            return Err(unsupported(node, "an indices output"));
        }
        let kernel = match onnx::ints(node, "kernel_shape").as_deref() {
            Some(&[a, b]) if a >= 1 && b >= 1 => [a as usize, b as usize],
            other => return Err(model_error(node, &format!("kernel_shape {other:?}"))),
        };
        let stride = match onnx::ints(node, "strides").as_deref() {
            None => [1, 1],
            Some(&[a, b]) if a >= 1 && b >= 1 => [a as usize, b as usize],
            Some(other) => return Err(model_error(node, &format!("strides {other:?}"))),
        };
        if onnx::ints(node, "dilations").is_some_and(|d| d.iter().any(|&v| v != 1)) {
            return Err(unsupported(node, "dilated pooling"));
        }
        if node.op_type == "MaxPool" && onnx::int(node, "storage_order", 0) != 0 {
            return Err(unsupported(node, "column-major storage order"));
        }
        let in_dims = self.dims(input);
        let pads = self.pads(node, [in_dims.h, in_dims.w], kernel, stride, [1, 1])?;
        let ceil = onnx::int(node, "ceil_mode", 0) != 0;
        // PyTorch's rule (and ONNX's since opset 19): in ceil mode the last window must start
        // inside the input or its leading padding.
        let out = |size: usize, k: usize, s: usize, before: usize, after: usize| -> Option<usize> {
            let room = (size + before + after).checked_sub(k)?;
            let mut n = if ceil { room.div_ceil(s) } else { room / s } + 1;
            if ceil && (n - 1) * s >= size + before {
                n -= 1;
            }
            Some(n)
        };
        let (Some(h), Some(w)) = (
            out(in_dims.h, kernel[0], stride[0], pads[0], pads[2]),
            out(in_dims.w, kernel[1], stride[1], pads[1], pads[3]),
        ) else {
            return Err(model_error(
                node,
                "the window is larger than the padded input",
            ));
        };
        let output = self.add_tensor(output, Dims { h, w, c: in_dims.c }, 4);
        let pool = Pool {
            input,
            output,
            kernel,
            stride,
            pads,
            count_include_pad: onnx::int(node, "count_include_pad", 0) != 0,
        };
        self.ops.push(if node.op_type == "MaxPool" {
            Op::MaxPool(pool)
        } else {
            Op::AveragePool(pool)
        });
        Ok(())
    }

    fn flatten(&mut self, node: &'a NodeProto, output: &'a str) -> Result<()> {
        let input = self.tensor(node, node.input.first().map_or("", String::as_str))?;
        let dims = self.dims(input);
        if node.op_type == "Flatten" {
            if onnx::int(node, "axis", 1) != 1 {
                return Err(unsupported(node, "flattening at an axis other than 1"));
            }
        } else {
            // Reshape to [N, rest] (0 copies the batch, −1 infers the rest).
            let shape_name = node.input.get(1).map_or("", String::as_str);
            let shape = self
                .constants
                .get(shape_name)
                .ok_or_else(|| unsupported(node, "a shape that is not a constant"))?;
            let values = if shape.raw_data.is_empty() {
                shape.int64_data.clone()
            } else {
                shape
                    .raw_data
                    .chunks_exact(8)
                    .map(|b| i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
                    .collect()
            };
            let total = dims.len() as i64;
            let flattens = matches!(values.as_slice(), &[first, rest]
                if (first == 0 || first == 1 || first == -1) && (rest == -1 || rest == total));
            if !flattens {
                return Err(unsupported(node, &format!("reshape to {values:?}")));
            }
        }
        let flat = Dims {
            h: 1,
            w: 1,
            c: dims.len(),
        };
        let output = self.add_tensor(output, flat, 2);
        self.ops.push(Op::Flatten { input, output });
        Ok(())
    }

    fn concat(&mut self, node: &'a NodeProto, output: &'a str) -> Result<()> {
        let inputs = node
            .input
            .iter()
            .map(|name| self.tensor(node, name))
            .collect::<Result<Vec<_>>>()?;
        let Some(&first) = inputs.first() else {
            return Err(model_error(node, "no inputs"));
        };
        let rank = self.tensors[first].rank;
        let axis = onnx::int(node, "axis", 1);
        if axis != 1 && axis != 1 - rank as i64 {
            return Err(unsupported(
                node,
                "concatenation along an axis other than channels",
            ));
        }
        let Dims { h, w, .. } = self.dims(first);
        let mut c = 0;
        for &id in &inputs {
            let dims = self.dims(id);
            if (dims.h, dims.w) != (h, w) || self.tensors[id].rank != rank {
                return Err(model_error(node, "inputs differ in spatial size"));
            }
            c += dims.c;
        }
        let output = self.add_tensor(output, Dims { h, w, c }, rank);
        self.ops.push(Op::Concat { inputs, output });
        Ok(())
    }

    fn dense(&mut self, node: &'a NodeProto, output: &'a str) -> Result<()> {
        let input = self.tensor(node, node.input.first().map_or("", String::as_str))?;
        if self.tensors[input].rank != 2 {
            return Err(unsupported(
                node,
                "a matrix product of a tensor that is not N×F",
            ));
        }
        let k = self.dims(input).c;
        let weight_name = node.input.get(1).map_or("", String::as_str);
        let weight = self
            .constants
            .get(weight_name)
            .ok_or_else(|| unsupported(node, "weights that are not a constant"))?;
        let shape: Vec<usize> = weight.dims.iter().map(|&d| d.max(0) as usize).collect();
        let values = onnx::f32_values(weight)?;
        let gemm = node.op_type == "Gemm";
        if gemm && onnx::int(node, "transA", 0) != 0 {
            return Err(unsupported(node, "transA"));
        }
        let trans_b = gemm && onnx::int(node, "transB", 0) != 0;
        let (rows, cols) = match shape.as_slice() {
            &[r, c] if r * c == values.len() => (r, c),
            _ => return Err(model_error(node, &format!("weights of shape {shape:?}"))),
        };
        let (wk, n) = if trans_b { (cols, rows) } else { (rows, cols) };
        if wk != k {
            return Err(model_error(
                node,
                &format!("{k} input features do not fit weights of shape {shape:?}"),
            ));
        }
        let alpha = if gemm {
            onnx::float(node, "alpha", 1.0)
        } else {
            1.0
        };
        let beta = if gemm {
            onnx::float(node, "beta", 1.0)
        } else {
            1.0
        };
        let mut weights = vec![0.0; k * n];
        for i in 0..k {
            for j in 0..n {
                let v = if trans_b {
                    values[j * k + i]
                } else {
                    values[i * n + j]
                };
                weights[i * n + j] = alpha * v;
            }
        }
        let bias = match node.input.get(2).filter(|n| !n.is_empty()) {
            Some(name) => {
                let c = self.constant(node, name)?;
                match c.len() {
                    1 => vec![beta * c[0]; n],
                    len if len == n => c.iter().map(|v| beta * v).collect(),
                    _ => return Err(unsupported(node, "a bias that is not per output")),
                }
            }
            None => vec![0.0; n],
        };
        let output = self.add_tensor(output, Dims { h: 1, w: 1, c: n }, 2);
        self.ops.push(Op::Dense {
            input,
            output,
            weights,
            bias,
            act: Act::None,
        });
        Ok(())
    }
}

/// Lower `graph` for `request`: the ops that lead from the image (or `request.start`) to the
/// requested outputs, fused and laid out.
pub fn lower(graph: &Graph, request: &PlanRequest) -> Result<Program> {
    let proto_graph = graph
        .proto()
        .graph
        .as_ref()
        .ok_or_else(|| Error::Model("ONNX file has no graph".into()))?;
    let [image] = graph.inputs() else {
        return Err(Error::Unsupported(format!(
            "{} graph inputs (the lowered plan takes one image)",
            graph.inputs().len()
        )));
    };
    let &[c, h, w] = image.dims.as_slice() else {
        return Err(Error::Unsupported("an input that is not C×H×W".into()));
    };
    let mut lowering = Lowering {
        constants: onnx::constants(proto_graph),
        tensors: Vec::new(),
        ids: HashMap::new(),
        ops: Vec::new(),
    };
    let image_id = lowering.add_tensor(&image.name, Dims { h, w, c }, 4);
    for node in &proto_graph.node {
        lowering.node(node)?;
    }
    let lookup = |name: &str| -> Result<TensorId> {
        lowering
            .ids
            .get(name)
            .copied()
            .ok_or_else(|| Error::Model(format!("no tensor named `{name}` in the model")))
    };
    let outputs = request
        .outputs
        .iter()
        .map(|name| lookup(name))
        .collect::<Result<Vec<_>>>()?;
    let input = match &request.start {
        Some(start) => lookup(start)?,
        None => image_id,
    };
    let Lowering {
        mut tensors, ops, ..
    } = lowering;
    let ops = prune(ops, input, &outputs, &tensors)?;
    let mut ops = fuse(ops, &outputs, &tensors);
    for op in &mut ops {
        if let Op::Conv(conv) = op {
            relayout(conv, tensors[conv.input].dims.c);
        }
    }
    let ops = expand_in_bands(ops, &outputs, tensors.len());
    let (arena_len, scratch_len) = arena::plan(&mut tensors, &ops, input, &outputs);
    Ok(Program {
        tensors,
        ops,
        input,
        outputs,
        arena_len,
        scratch_len,
    })
}

/// Keep only the ops the outputs need, computed from `input`; an output that needs another
/// input (a tail cut above a branch) is an error.
fn prune(
    ops: Vec<Op>,
    input: TensorId,
    outputs: &[TensorId],
    tensors: &[TensorInfo],
) -> Result<Vec<Op>> {
    let mut producer = HashMap::new();
    for (index, op) in ops.iter().enumerate() {
        producer.insert(op.output(), index);
    }
    let mut needed = vec![false; ops.len()];
    let mut stack: Vec<TensorId> = outputs.to_vec();
    let mut seen = vec![false; tensors.len()];
    while let Some(tensor) = stack.pop() {
        if tensor == input || std::mem::replace(&mut seen[tensor], true) {
            continue;
        }
        match producer.get(&tensor) {
            Some(&index) => {
                needed[index] = true;
                stack.extend(ops[index].inputs());
            }
            None => {
                return Err(Error::Model(format!(
                    "the requested outputs need `{}`, which is not computed from `{}`",
                    tensors[tensor].name, tensors[input].name
                )));
            }
        }
    }
    Ok(ops
        .into_iter()
        .zip(needed)
        .filter_map(|(op, keep)| keep.then_some(op))
        .collect())
}

/// How many times each of `tensor_count` tensors is read: as an op's input, or as a requested
/// output.
fn readers(ops: &[Op], outputs: &[TensorId], tensor_count: usize) -> Vec<usize> {
    let mut reads = vec![0usize; tensor_count];
    for input in ops
        .iter()
        .flat_map(Op::inputs)
        .chain(outputs.iter().copied())
    {
        reads[input] += 1;
    }
    reads
}

/// Pair each ungrouped pointwise convolution with the depthwise convolution right after it when
/// that is the only reader of its result and the result is not requested ([`Op::Expanded`]).
fn expand_in_bands(ops: Vec<Op>, outputs: &[TensorId], tensor_count: usize) -> Vec<Op> {
    let readers = readers(&ops, outputs, tensor_count);
    let mut paired = Vec::with_capacity(ops.len());
    let mut ops = ops.into_iter().peekable();
    while let Some(op) = ops.next() {
        let fits = match (&op, ops.peek()) {
            (Op::Conv(expand), Some(Op::Conv(depthwise))) => {
                expand.kind == ConvKind::Pointwise
                    && expand.residual.is_none()
                    && depthwise.kind == ConvKind::Depthwise
                    && depthwise.input == expand.output
                    && readers[expand.output] == 1
            }
            _ => false,
        };
        match (op, fits) {
            (Op::Conv(expand), true) => {
                if let Some(Op::Conv(depthwise)) = ops.next() {
                    paired.push(Op::Expanded { expand, depthwise });
                }
            }
            (op, _) => paired.push(op),
        }
    }
    paired
}

/// Merge each op's single-use result into the op that consumes it where a kernel can do both:
/// BatchNormalization folded into the Conv before it, an activation into the op before it, an
/// `Add` into the Conv that computes one operand when the other exists already. Tensors that
/// are requested outputs are never merged away.
fn fuse(ops: Vec<Op>, outputs: &[TensorId], tensors: &[TensorInfo]) -> Vec<Op> {
    let uses = readers(&ops, outputs, tensors.len());
    let mut producer: HashMap<TensorId, usize> = HashMap::new();
    let mut consumer: HashMap<TensorId, usize> = HashMap::new();
    for (index, op) in ops.iter().enumerate() {
        producer.insert(op.output(), index);
        for input in op.inputs() {
            consumer.insert(input, index);
        }
    }
    let mut ops: Vec<Option<Op>> = ops.into_iter().map(Some).collect();
    for index in 0..ops.len() {
        while let Some(op) = ops[index].as_ref() {
            let result = op.output();
            if uses[result] != 1 {
                break;
            }
            let Some(&next) = consumer.get(&result) else {
                break;
            };
            let Some(follower) = ops[next].clone() else {
                break;
            };
            let Some(op) = ops[index].as_mut() else { break };
            let merged = match (op, &follower) {
                (Op::Conv(conv), Op::Affine { scale, shift, .. })
                    if conv.act == Act::None && conv.residual.is_none() =>
                {
                    let per_output = conv.weights.len() / scale.len();
                    for (o, chunk) in conv.weights.chunks_mut(per_output).enumerate() {
                        chunk.iter_mut().for_each(|w| *w *= scale[o]);
                        conv.bias[o] = conv.bias[o] * scale[o] + shift[o];
                    }
                    true
                }
                (op, Op::Activation { act, .. }) => match op.act_mut() {
                    Some(slot) if *slot == Act::None => {
                        *slot = *act;
                        true
                    }
                    _ => false,
                },
                (Op::Conv(conv), Op::Add { a, b, .. })
                    if conv.act == Act::None && conv.residual.is_none() =>
                {
                    let other = if *a == result { *b } else { *a };
                    let ready = producer.get(&other).is_none_or(|&p| p < index);
                    if ready && other != result {
                        conv.residual = Some(other);
                        true
                    } else {
                        false
                    }
                }
                _ => false,
            };
            if !merged {
                break;
            }
            let new_output = follower.output();
            if let Some(op) = ops[index].as_mut() {
                op.set_output(new_output);
            }
            producer.insert(new_output, index);
            if let Op::Add { a, b, .. } = follower {
                let other = if a == result { b } else { a };
                consumer.insert(other, index);
            }
            ops[next] = None;
        }
    }
    ops.into_iter().flatten().collect()
}

/// OIHW weights → the kernel's layout (see [`Conv::weights`]).
fn relayout(conv: &mut Conv, cin: usize) {
    let [kh, kw] = conv.kernel;
    let cout = conv.bias.len();
    let groups = conv.groups;
    let (cin_g, cout_g) = (cin / groups, cout / groups);
    let oihw = std::mem::take(&mut conv.weights);
    let at = |o: usize, i: usize, y: usize, x: usize| oihw[((o * cin_g + i) * kh + y) * kw + x];
    conv.weights = match conv.kind {
        ConvKind::Depthwise => {
            let mut w = vec![0.0; kh * kw * cout];
            for y in 0..kh {
                for x in 0..kw {
                    for c in 0..cout {
                        w[(y * kw + x) * cout + c] = at(c, 0, y, x);
                    }
                }
            }
            w
        }
        ConvKind::Pointwise | ConvKind::General | ConvKind::Small => {
            let rows = kh * kw * cin_g;
            let mut w = vec![0.0; groups * rows * cout_g];
            for g in 0..groups {
                for y in 0..kh {
                    for x in 0..kw {
                        for i in 0..cin_g {
                            let row = (y * kw + x) * cin_g + i;
                            for o in 0..cout_g {
                                w[(g * rows + row) * cout_g + o] = at(g * cout_g + o, i, y, x);
                            }
                        }
                    }
                }
            }
            w
        }
    };
}
