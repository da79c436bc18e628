//! The adjoint of each ONNX op, emitted as ONNX ops tract runs.
//!
//! Each rule gets the node, which of its inputs needs a gradient and the gradient `g` of the
//! node's (first) output, and emits nodes computing that input's gradient contribution. Facts
//! this relies on (measured in tract 0.23): ConvTranspose is right with explicit `pads` and
//! `output_padding` (not `output_shape`); MaxPool's Indices output with
//! ScatterElements(reduction = add) works; zeros come from ConstantOfShape(Shape(x)).

use std::collections::HashMap;

use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::{AttributeProto, NodeProto, TensorProto};

use super::BackwardRule;
use crate::onnx::{self, Emitter, attr_int, attr_ints, attr_string, attr_tensor, tensor_f32};
use crate::{Error, Result};

/// Everything a rule may read or emit.
pub(super) struct Context<'a> {
    pub(super) shapes: &'a HashMap<String, Vec<usize>>,
    pub(super) constants: &'a HashMap<String, TensorProto>,
    pub(super) rule: BackwardRule,
    /// The model's default-domain opset (ReduceSum takes its axes as an input from 13).
    opset: i64,
    pub(super) emit: Emitter,
    /// MaxPool nodes that must also output their Indices: node index → indices tensor.
    pub(super) indices: HashMap<usize, String>,
    /// Conv outputs read only by an inference BatchNormalization: the BN's per-channel factor
    /// scale/√(var + ε), folded into the ConvTranspose weights instead of a separate Mul.
    pub(super) folded: HashMap<String, Vec<f32>>,
    shape_of: HashMap<String, String>,
    zero: Option<String>,
}

impl<'a> Context<'a> {
    pub(super) fn new(
        shapes: &'a HashMap<String, Vec<usize>>,
        constants: &'a HashMap<String, TensorProto>,
        rule: BackwardRule,
        opset: i64,
    ) -> Self {
        Self {
            shapes,
            constants,
            rule,
            opset,
            emit: Emitter::default(),
            indices: HashMap::new(),
            folded: HashMap::new(),
            shape_of: HashMap::new(),
            zero: None,
        }
    }

    /// The batch-1 shape of a tensor of the original model.
    fn shape(&self, tensor: &str) -> Result<&'a [usize]> {
        self.shapes
            .get(tensor)
            .map(Vec::as_slice)
            .ok_or_else(|| Error::Model(format!("the shape of tensor `{tensor}` is unknown")))
    }

    /// The dimensions of a constant of the model.
    fn constant_dims(&self, tensor: &str) -> Result<Vec<usize>> {
        self.constants
            .get(tensor)
            .map(|t| t.dims.iter().map(|&d| d.max(0) as usize).collect())
            .ok_or_else(|| {
                Error::Model(format!(
                    "the gradient needs `{tensor}` to be a constant of the model"
                ))
            })
    }

    /// The integer values of a constant input (int64 or int32).
    fn constant_ints(&self, tensor: &str, what: &str) -> Result<Vec<i64>> {
        let proto = self.constants.get(tensor).ok_or_else(|| {
            Error::Model(format!(
                "the gradient needs {what} `{tensor}` to be a constant of the model"
            ))
        })?;
        if !proto.int64_data.is_empty() {
            return Ok(proto.int64_data.clone());
        }
        if !proto.int32_data.is_empty() {
            return Ok(proto.int32_data.iter().map(|&v| i64::from(v)).collect());
        }
        Ok(proto
            .raw_data
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
            .collect())
    }

    /// Zeros shaped like `tensor` (at run time: any batch).
    fn zeros_like(&mut self, tensor: &str) -> String {
        let shape = self.shape_node(tensor);
        let zero = tensor_f32("value", &[1], vec![0.0]);
        self.emit.node(
            "ConstantOfShape",
            &[&shape],
            vec![attr_tensor("value", zero)],
        )
    }

    /// `g · M` over the last axis, `M` a constant `rows × columns` matrix (`g`'s last axis has
    /// `rows` entries).
    fn times(&mut self, g: &str, rows: usize, columns: usize, m: Vec<f32>) -> String {
        let m = self.emit.const_f32(&[rows, columns], m);
        self.emit.node("MatMul", &[g, &m], vec![])
    }

    /// The f32 values of a constant input.
    fn constant(&self, tensor: &str, what: &str) -> Result<Vec<f32>> {
        let proto = self.constants.get(tensor).ok_or_else(|| {
            Error::Model(format!(
                "the gradient needs {what} `{tensor}` to be a constant of the model"
            ))
        })?;
        onnx::f32_values(proto)
    }

    /// `Shape(x)`, emitted once per tensor.
    fn shape_node(&mut self, tensor: &str) -> String {
        if let Some(name) = self.shape_of.get(tensor) {
            return name.clone();
        }
        let name = self.emit.node("Shape", &[tensor], vec![]);
        self.shape_of.insert(tensor.to_owned(), name.clone());
        name
    }

    /// A scalar 0.0, emitted once.
    fn zero(&mut self) -> String {
        if let Some(zero) = &self.zero {
            return zero.clone();
        }
        let zero = self.emit.const_f32(&[], vec![0.0]);
        self.zero = Some(zero.clone());
        zero
    }

    /// `g` where `open` (≥ 0 everywhere) is positive, else 0; with the guided rule also 0
    /// where `g` < 0. A rectifier's output is ≥ 0 and positive exactly where its input is in
    /// the linear range (ReLU: y > 0; Clip: (y − min)(max − y) > 0, exact since y − min and
    /// max − y are exact), so the mask is `Sign(open)`: two arithmetic ops tract runs ~4×
    /// faster than Greater/Less/And/Where.
    fn gated(&mut self, open: &str, g: &str) -> String {
        let g = match self.rule {
            BackwardRule::Standard => g.to_owned(),
            BackwardRule::Guided => self.emit.node("Relu", &[g], vec![]),
        };
        let mask = self.emit.node("Sign", &[open], vec![]);
        self.emit.node("Mul", &[&g, &mask], vec![])
    }

    /// Sum `g` (shaped like `output`) over the axes `input` was broadcast along.
    fn unbroadcast(&mut self, g: &str, output: &str, input: &str) -> Result<String> {
        let out_shape = self.shape(output)?;
        let in_shape = self.shape(input)?;
        if out_shape == in_shape {
            return Ok(g.to_owned());
        }
        let offset = out_shape.len().saturating_sub(in_shape.len());
        let axes: Vec<i64> = (0..out_shape.len())
            .filter(|&axis| axis < offset || (in_shape[axis - offset] == 1 && out_shape[axis] != 1))
            .map(|axis| axis as i64)
            .collect();
        let summed = if self.opset >= 13 {
            let axes = self.emit.const_i64(&[axes.len()], axes);
            self.emit
                .node("ReduceSum", &[g, &axes], vec![attr_int("keepdims", 1)])
        } else {
            self.emit.node(
                "ReduceSum",
                &[g],
                vec![attr_ints("axes", &axes), attr_int("keepdims", 1)],
            )
        };
        let shape = self.shape_node(input);
        Ok(self.emit.node("Reshape", &[&summed, &shape], vec![]))
    }
}

/// Spatial geometry of a sliding-window op, with the end padding the adjoint needs.
struct Window {
    kernel: Vec<i64>,
    strides: Vec<i64>,
    dilations: Vec<i64>,
    pads_begin: Vec<i64>,
    pads_end: Vec<i64>,
}

impl Window {
    /// Read kernel, strides, dilations and pads (explicit or `auto_pad`) of `node`, whose input
    /// and output spatial sizes are `input` and `output`.
    fn read(node: &NodeProto, kernel: Vec<i64>, input: &[usize], output: &[usize]) -> Result<Self> {
        let rank = kernel.len();
        let ones = vec![1; rank];
        let strides = onnx::ints(node, "strides").unwrap_or_else(|| ones.clone());
        let dilations = onnx::ints(node, "dilations").unwrap_or(ones);
        let pads = onnx::ints(node, "pads").unwrap_or_else(|| vec![0; 2 * rank]);
        if strides.len() != rank || dilations.len() != rank || pads.len() != 2 * rank {
            return Err(Error::Model(format!(
                "node `{}` ({}) has inconsistent window attributes",
                node.name, node.op_type
            )));
        }
        let mut pads_begin = pads[..rank].to_vec();
        let auto_pad = onnx::string(node, "auto_pad", "NOTSET");
        if auto_pad == "SAME_UPPER" || auto_pad == "SAME_LOWER" {
            for axis in 0..rank {
                let extent = (kernel[axis] - 1) * dilations[axis] + 1;
                let total = ((output[axis] as i64 - 1) * strides[axis] + extent
                    - input[axis] as i64)
                    .max(0);
                pads_begin[axis] = if auto_pad == "SAME_UPPER" {
                    total / 2
                } else {
                    total - total / 2
                };
            }
        } else if auto_pad == "VALID" {
            pads_begin = vec![0; rank];
        }
        // The adjoint's end crop makes its output exactly as large as the input (it may exceed
        // the forward's end padding under ceil_mode; a negative crop becomes output_padding).
        let pads_end = (0..rank)
            .map(|axis| {
                let extent = (kernel[axis] - 1) * dilations[axis] + 1;
                (output[axis] as i64 - 1) * strides[axis] + extent
                    - pads_begin[axis]
                    - input[axis] as i64
            })
            .collect();
        Ok(Self {
            kernel,
            strides,
            dilations,
            pads_begin,
            pads_end,
        })
    }

    /// The ConvTranspose attributes that map an output gradient back onto the input.
    fn transpose_attributes(&self, group: i64) -> Vec<AttributeProto> {
        let pads: Vec<i64> = self
            .pads_begin
            .iter()
            .copied()
            .chain(self.pads_end.iter().map(|&p| p.max(0)))
            .collect();
        let output_padding: Vec<i64> = self.pads_end.iter().map(|&p| (-p).max(0)).collect();
        vec![
            attr_int("group", group),
            attr_ints("kernel_shape", &self.kernel),
            attr_ints("strides", &self.strides),
            attr_ints("dilations", &self.dilations),
            attr_ints("pads", &pads),
            attr_ints("output_padding", &output_padding),
        ]
    }
}

/// The gradient contribution of `node`'s input `slot`, given the gradient `g` of its first
/// output. `Ok(None)`: the op has no rule for that input.
pub(super) fn adjoint(
    ctx: &mut Context,
    node_index: usize,
    node: &NodeProto,
    slot: usize,
    g: &str,
) -> Result<Option<String>> {
    let x = node.input[slot].as_str();
    let y = node.output[0].as_str();
    let op = node.op_type.as_str();
    let grad = match (op, slot) {
        ("Identity" | "Dropout", 0) => g.to_owned(),
        ("Flatten" | "Reshape" | "Squeeze" | "Unsqueeze", 0) => {
            let shape = ctx.shape_node(x);
            ctx.emit.node("Reshape", &[g, &shape], vec![])
        }
        ("Relu", 0) => ctx.gated(y, g),
        ("Clip", 0) => {
            let min = node.input.get(1).filter(|s| !s.is_empty());
            let max = node.input.get(2).filter(|s| !s.is_empty());
            let above = min.map(|min| ctx.emit.node("Sub", &[y, min], vec![]));
            let below = max.map(|max| ctx.emit.node("Sub", &[max, y], vec![]));
            let open = match (above, below) {
                (Some(a), Some(b)) => ctx.emit.node("Mul", &[&a, &b], vec![]),
                (Some(gap), None) | (None, Some(gap)) => gap,
                (None, None) => return Ok(Some(g.to_owned())),
            };
            ctx.gated(&open, g)
        }
        ("LeakyRelu", 0) => {
            let alpha = onnx::float(node, "alpha", 0.01);
            let zero = ctx.zero();
            let alpha = ctx.emit.const_f32(&[], vec![alpha]);
            let keep = ctx.emit.node("Greater", &[x, &zero], vec![]);
            let leak = ctx.emit.node("Mul", &[g, &alpha], vec![]);
            ctx.emit.node("Where", &[&keep, g, &leak], vec![])
        }
        ("Sigmoid", 0) => {
            // σ' = y (1 − y).
            let one = ctx.emit.const_f32(&[], vec![1.0]);
            let complement = ctx.emit.node("Sub", &[&one, y], vec![]);
            let slope = ctx.emit.node("Mul", &[y, &complement], vec![]);
            ctx.emit.node("Mul", &[g, &slope], vec![])
        }
        ("BatchNormalization", 0) if ctx.folded.contains_key(x) => g.to_owned(),
        ("BatchNormalization", 0) => {
            let factor = batch_norm_factor(ctx, node)?;
            let rank = ctx.shape(x)?.len();
            let mut dims = vec![factor.len()];
            dims.resize(rank.saturating_sub(1), 1);
            let factor = ctx.emit.const_f32(&dims, factor);
            ctx.emit.node("Mul", &[g, &factor], vec![])
        }
        ("Add", 0 | 1) | ("Sum", _) => ctx.unbroadcast(g, y, x)?,
        ("Max" | "Min", 0 | 1) if node.input.len() == 2 => {
            // The gradient goes to the input the output equals, halved where both do (PyTorch's
            // maximum/minimum: a ReLU6 written as Min and Max with constants, as TensorFlow.js
            // graphs do, ties at 0 wherever the ReLU before it is 0).
            let other = node.input[1 - slot].as_str();
            let float = vec![attr_int("to", DataType::Float as i64)];
            let chosen = ctx.emit.node("Equal", &[x, y], vec![]);
            let chosen = ctx.emit.node("Cast", &[&chosen], float.clone());
            let tied = ctx.emit.node("Equal", &[other, y], vec![]);
            let tied = ctx.emit.node("Cast", &[&tied], float);
            let half = ctx.emit.const_f32(&[], vec![0.5]);
            let shared = ctx.emit.node("Mul", &[&chosen, &tied], vec![]);
            let shared = ctx.emit.node("Mul", &[&shared, &half], vec![]);
            let weight = ctx.emit.node("Sub", &[&chosen, &shared], vec![]);
            let passed = ctx.emit.node("Mul", &[g, &weight], vec![]);
            ctx.unbroadcast(&passed, y, x)?
        }
        ("Sub", 0) => ctx.unbroadcast(g, y, x)?,
        ("Sub", 1) => {
            let negated = ctx.emit.node("Neg", &[g], vec![]);
            ctx.unbroadcast(&negated, y, x)?
        }
        ("Mul", 0 | 1) => {
            let other = node.input[1 - slot].as_str();
            let product = ctx.emit.node("Mul", &[g, other], vec![]);
            ctx.unbroadcast(&product, y, x)?
        }
        ("Div", 0) => {
            let quotient = ctx.emit.node("Div", &[g, &node.input[1]], vec![]);
            ctx.unbroadcast(&quotient, y, x)?
        }
        ("Conv", 0) => {
            let in_shape = ctx.shape(x)?;
            let out_shape = ctx.shape(y)?;
            let kernel = match onnx::ints(node, "kernel_shape") {
                Some(kernel) => kernel,
                None => ctx.constant_dims(&node.input[1])?[2..]
                    .iter()
                    .map(|&k| k as i64)
                    .collect(),
            };
            let window = Window::read(node, kernel, &in_shape[2..], &out_shape[2..])?;
            let group = onnx::int(node, "group", 1);
            conv_adjoint(ctx, node, &window, group, in_shape, out_shape, g)?
        }
        ("ConvTranspose", 0) => conv_transpose(ctx, node, g)?,
        ("AveragePool", 0) => average_pool(ctx, node, x, y, g)?,
        ("MaxPool", 0) => {
            if onnx::int(node, "storage_order", 0) != 0 {
                return Err(Error::Model(format!(
                    "MaxPool `{}` uses column-major indices (storage_order 1)",
                    node.name
                )));
            }
            let indices = match node.output.get(1).filter(|s| !s.is_empty()) {
                Some(existing) => existing.clone(),
                None => ctx
                    .indices
                    .entry(node_index)
                    .or_insert_with(|| format!("{}.{}.indices", onnx::PREFIX, node.name))
                    .clone(),
            };
            let flat = ctx.emit.const_i64(&[1], vec![-1]);
            let shape = ctx.shape_node(x);
            let zeros = ctx.emit.node(
                "ConstantOfShape",
                &[&shape],
                vec![attr_tensor("value", tensor_f32("", &[1], vec![0.0]))],
            );
            let zeros = ctx.emit.node("Reshape", &[&zeros, &flat], vec![]);
            let where_to = ctx.emit.node("Reshape", &[&indices, &flat], vec![]);
            let what = ctx.emit.node("Reshape", &[g, &flat], vec![]);
            let scattered = ctx.emit.node(
                "ScatterElements",
                &[&zeros, &where_to, &what],
                vec![attr_int("axis", 0), attr_string("reduction", "add")],
            );
            ctx.emit.node("Reshape", &[&scattered, &shape], vec![])
        }
        ("GlobalAveragePool", 0) => {
            let count: usize = ctx.shape(x)?[2..].iter().product();
            let factor = ctx.emit.const_f32(&[], vec![1.0 / count as f32]);
            let scaled = ctx.emit.node("Mul", &[g, &factor], vec![]);
            let shape = ctx.shape_node(x);
            ctx.emit.node("Expand", &[&scaled, &shape], vec![])
        }
        ("Concat", _) => {
            let rank = ctx.shape(y)?.len() as i64;
            let axis = onnx::int(node, "axis", 0);
            let axis = if axis < 0 { axis + rank } else { axis };
            let mut start = 0i64;
            for input in &node.input[..slot] {
                start += ctx.shape(input)?[axis as usize] as i64;
            }
            let end = start + ctx.shape(x)?[axis as usize] as i64;
            let starts = ctx.emit.const_i64(&[1], vec![start]);
            let ends = ctx.emit.const_i64(&[1], vec![end]);
            let axes = ctx.emit.const_i64(&[1], vec![axis]);
            ctx.emit.node("Slice", &[g, &starts, &ends, &axes], vec![])
        }
        ("Transpose", 0) => {
            let perm = onnx::ints(node, "perm").unwrap_or_else(|| {
                (0..ctx.shapes.get(x).map_or(0, Vec::len) as i64)
                    .rev()
                    .collect()
            });
            let mut inverse = vec![0i64; perm.len()];
            for (i, &p) in perm.iter().enumerate() {
                inverse[p as usize] = i as i64;
            }
            ctx.emit
                .node("Transpose", &[g], vec![attr_ints("perm", &inverse)])
        }
        ("Gemm", 0) => {
            let alpha = onnx::float(node, "alpha", 1.0);
            let b = node.input[1].as_str();
            // Y = α·op(A)·op(B): ∂op(A) = α·g·op(B)ᵀ.
            let b_t = if onnx::int(node, "transB", 0) == 1 {
                b.to_owned()
            } else {
                ctx.emit
                    .node("Transpose", &[b], vec![attr_ints("perm", &[1, 0])])
            };
            let mut grad = ctx.emit.node("MatMul", &[g, &b_t], vec![]);
            if alpha != 1.0 {
                let alpha = ctx.emit.const_f32(&[], vec![alpha]);
                grad = ctx.emit.node("Mul", &[&grad, &alpha], vec![]);
            }
            if onnx::int(node, "transA", 0) == 1 {
                grad = ctx
                    .emit
                    .node("Transpose", &[&grad], vec![attr_ints("perm", &[1, 0])]);
            }
            grad
        }
        ("MatMul", 0) => {
            let b = node.input[1].as_str();
            if ctx.constant_dims(b)?.len() != 2 {
                return Err(Error::Model(format!(
                    "MatMul `{}`: the gradient handles a 2-D right-hand side only",
                    node.name
                )));
            }
            let b_t = ctx
                .emit
                .node("Transpose", &[b], vec![attr_ints("perm", &[1, 0])]);
            ctx.emit.node("MatMul", &[g, &b_t], vec![])
        }
        ("Pad", 0) => pad(ctx, node, x, g)?,
        ("Resize", 0) => resize(ctx, node, x, y, g)?,
        _ => return Ok(None),
    };
    Ok(Some(grad))
}

/// A constant-mode Pad's adjoint: the padded gradient cropped back to the input.
fn pad(ctx: &mut Context, node: &NodeProto, x: &str, g: &str) -> Result<String> {
    let mode = onnx::string(node, "mode", "constant");
    if mode != "constant" {
        return Err(Error::Model(format!(
            "Pad `{}`: the gradient handles constant padding only, not `{mode}`",
            node.name
        )));
    }
    let pads = match node.input.get(1).filter(|p| !p.is_empty()) {
        Some(pads) => ctx.constant_ints(pads, "the Pad amounts")?,
        None => onnx::ints(node, "pads").unwrap_or_default(),
    };
    let shape = ctx.shape(x)?.to_vec();
    let rank = shape.len();
    let axes: Vec<usize> = match node.input.get(3).filter(|a| !a.is_empty()) {
        Some(axes) => ctx
            .constant_ints(axes, "the Pad axes")?
            .into_iter()
            .map(|a| if a < 0 { a + rank as i64 } else { a } as usize)
            .collect(),
        None => (0..rank).collect(),
    };
    if pads.len() != 2 * axes.len() || pads.iter().any(|&p| p < 0) {
        return Err(Error::Model(format!(
            "Pad `{}`: the gradient needs one non-negative begin and end pad per axis, found {pads:?}",
            node.name
        )));
    }
    let (mut starts, mut ends, mut sliced) = (Vec::new(), Vec::new(), Vec::new());
    for (i, &axis) in axes.iter().enumerate() {
        let (begin, end) = (pads[i], pads[i + axes.len()]);
        if begin == 0 && end == 0 {
            continue;
        }
        if axis == 0 {
            return Err(Error::Model(format!(
                "Pad `{}` pads the batch axis: no gradient",
                node.name
            )));
        }
        starts.push(begin);
        ends.push(begin + shape[axis] as i64);
        sliced.push(axis as i64);
    }
    if sliced.is_empty() {
        return Ok(g.to_owned());
    }
    let n = sliced.len();
    let starts = ctx.emit.const_i64(&[n], starts);
    let ends = ctx.emit.const_i64(&[n], ends);
    let axes = ctx.emit.const_i64(&[n], sliced);
    Ok(ctx.emit.node("Slice", &[g, &starts, &ends, &axes], vec![]))
}

/// The interpolation matrix (`output × input`, row-major) of one axis of an ONNX Resize.
fn resize_matrix(node: &NodeProto, input: usize, output: usize, scale: f32) -> Result<Vec<f32>> {
    let mode = onnx::string(node, "mode", "nearest");
    let default_transform = if node.input.len() <= 2 {
        "asymmetric" // opset 10's Resize
    } else {
        "half_pixel"
    };
    let transform = onnx::string(node, "coordinate_transformation_mode", default_transform);
    let nearest = onnx::string(node, "nearest_mode", "round_prefer_floor");
    let scale = f64::from(scale);
    let mut m = vec![0f32; output * input];
    let last = (input - 1) as f64;
    // ONNX's reference (and tract) measure the output as scale × input, unrounded.
    let width = scale * input as f64;
    for o in 0..output {
        let of = o as f64;
        let x = match transform.as_str() {
            "half_pixel" => (of + 0.5) / scale - 0.5,
            "pytorch_half_pixel" if width > 1.0 => (of + 0.5) / scale - 0.5,
            "pytorch_half_pixel" => 0.0,
            "align_corners" if width != 1.0 => of * last / (width - 1.0),
            "align_corners" => 0.0,
            "asymmetric" => of / scale,
            "tf_half_pixel_for_nn" => (of + 0.5) / scale,
            other => {
                return Err(Error::Model(format!(
                    "Resize `{}`: no gradient for coordinate transformation `{other}`",
                    node.name
                )));
            }
        };
        let row = &mut m[o * input..(o + 1) * input];
        match mode.as_str() {
            "linear" => {
                let x = x.clamp(0.0, last);
                let i0 = x.floor();
                let w = (x - i0) as f32;
                let i0 = i0 as usize;
                row[i0] += 1.0 - w;
                row[(i0 + 1).min(input - 1)] += w;
            }
            "nearest" => {
                let index = match nearest.as_str() {
                    "floor" => x.floor(),
                    "ceil" => x.ceil(),
                    "round_prefer_ceil" => (x + 0.5).floor(),
                    _ if x.fract() == 0.5 => x.floor(),
                    _ => x.round(),
                };
                row[index.clamp(0.0, last) as usize] = 1.0;
            }
            other => {
                return Err(Error::Model(format!(
                    "Resize `{}`: no gradient for mode `{other}`",
                    node.name
                )));
            }
        }
    }
    Ok(m)
}

/// A Resize of the two spatial axes is `Y = R_h · X · R_wᵀ` per channel, so its adjoint is
/// `R_hᵀ · G · R_w`: two products with constant matrices built from the op's attributes.
fn resize(ctx: &mut Context, node: &NodeProto, x: &str, y: &str, g: &str) -> Result<String> {
    let (input, output) = (ctx.shape(x)?.to_vec(), ctx.shape(y)?.to_vec());
    if input.len() != 4 || output.len() != 4 || input[..2] != output[..2] {
        return Err(Error::Model(format!(
            "Resize `{}`: the gradient handles N×C×H×W resized in H and W only",
            node.name
        )));
    }
    let scales_input = if node.input.len() <= 2 { 1 } else { 2 };
    let scales = match node.input.get(scales_input).filter(|s| !s.is_empty()) {
        Some(scales) => ctx.constant(scales, "the Resize scales")?,
        None => Vec::new(),
    };
    let scale = |axis: usize| {
        scales
            .get(axis)
            .copied()
            .unwrap_or(output[axis] as f32 / input[axis] as f32)
    };
    let (hi, wi, ho, wo) = (input[2], input[3], output[2], output[3]);
    let rw = resize_matrix(node, wi, wo, scale(3))?;
    let rh = resize_matrix(node, hi, ho, scale(2))?;
    // G · R_w: N×C×Ho×Wi.
    let along_w = ctx.times(g, wo, wi, rw);
    // (R_hᵀ · G')ᵀ = G'ᵀ · R_h, on the transposed last two axes.
    let turned = ctx.emit.node(
        "Transpose",
        &[&along_w],
        vec![attr_ints("perm", &[0, 1, 3, 2])],
    );
    let along_h = ctx.times(&turned, ho, hi, rh);
    Ok(ctx.emit.node(
        "Transpose",
        &[&along_h],
        vec![attr_ints("perm", &[0, 1, 3, 2])],
    ))
}

/// Split's adjoint: the outputs' gradients (zeros for those without one) concatenated back.
pub(super) fn split(
    ctx: &mut Context,
    node: &NodeProto,
    gradients: &[Option<String>],
) -> Result<String> {
    let rank = ctx.shape(&node.input[0])?.len() as i64;
    let axis = onnx::int(node, "axis", 0);
    let axis = if axis < 0 { axis + rank } else { axis };
    let parts: Vec<String> = node
        .output
        .iter()
        .zip(gradients)
        .map(|(output, g)| match g {
            Some(g) => g.clone(),
            None => ctx.zeros_like(output),
        })
        .collect();
    let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
    Ok(ctx.emit.node("Concat", &refs, vec![attr_int("axis", axis)]))
}

/// `scale / √(var + ε)` per channel of an inference BatchNormalization.
pub(super) fn batch_norm_factor(ctx: &Context, node: &NodeProto) -> Result<Vec<f32>> {
    let epsilon = onnx::float(node, "epsilon", 1e-5);
    let scale = ctx.constant(&node.input[1], "the BatchNormalization scale")?;
    let var = ctx.constant(&node.input[4], "the BatchNormalization variance")?;
    Ok(scale
        .iter()
        .zip(&var)
        .map(|(s, v)| s / (v + epsilon).sqrt())
        .collect())
}

/// Conv's adjoint. A depthwise stride-1 Conv becomes a depthwise Conv with the kernel rotated
/// by 180° (tract runs depthwise Conv ~4× faster than depthwise ConvTranspose); every other
/// Conv becomes a ConvTranspose with the same weights. A folded BatchNormalization factor
/// scales the weights' output channels.
fn conv_adjoint(
    ctx: &mut Context,
    node: &NodeProto,
    window: &Window,
    group: i64,
    in_shape: &[usize],
    out_shape: &[usize],
    g: &str,
) -> Result<String> {
    let weight = node.input[1].as_str();
    let folded = ctx.folded.get(&node.output[0]).cloned();
    let dims = ctx.constant_dims(weight).ok();
    let channels = in_shape[1] as i64;
    let depthwise = dims
        .as_ref()
        .is_some_and(|d| d.len() == 4 && d[1] == 1 && d[0] as i64 == channels && group == channels);
    let pads_begin: Vec<i64> = (0..window.kernel.len())
        .map(|a| (window.kernel[a] - 1) * window.dilations[a] - window.pads_begin[a])
        .collect();
    let pads_end: Vec<i64> = (0..window.kernel.len())
        .map(|a| in_shape[2 + a] as i64 - out_shape[2 + a] as i64 + window.pads_begin[a])
        .collect();
    let flip = depthwise
        && window.strides.iter().all(|&s| s == 1)
        && pads_begin.iter().chain(&pads_end).all(|&p| p >= 0);
    if !flip && folded.is_none() {
        return Ok(ctx.emit.node(
            "ConvTranspose",
            &[g, weight],
            window.transpose_attributes(group),
        ));
    }
    let dims = dims.ok_or_else(|| {
        Error::Model(format!(
            "Conv `{}`: the weights must be constant",
            node.name
        ))
    })?;
    let mut values = ctx.constant(weight, "the Conv weight")?;
    let per_output: usize = dims[1..].iter().product();
    if let Some(factor) = &folded {
        for (m, block) in values.chunks_mut(per_output).enumerate() {
            block.iter_mut().for_each(|v| *v *= factor[m]);
        }
    }
    if flip {
        for block in values.chunks_mut(per_output) {
            block.reverse();
        }
        let rotated = ctx.emit.const_f32(&dims, values);
        let pads: Vec<i64> = pads_begin.into_iter().chain(pads_end).collect();
        return Ok(ctx.emit.node(
            "Conv",
            &[g, &rotated],
            vec![
                attr_int("group", group),
                attr_ints("kernel_shape", &window.kernel),
                attr_ints("dilations", &window.dilations),
                attr_ints("pads", &pads),
            ],
        ));
    }
    let scaled = ctx.emit.const_f32(&dims, values);
    Ok(ctx.emit.node(
        "ConvTranspose",
        &[g, &scaled],
        window.transpose_attributes(group),
    ))
}

/// ConvTranspose's adjoint: the convolution it transposes, with the same weights, strides,
/// dilations, pads and groups (its output padding only lengthens the gradient's input, which
/// the convolution's floor division absorbs).
fn conv_transpose(ctx: &mut Context, node: &NodeProto, g: &str) -> Result<String> {
    let weight = node.input[1].as_str();
    let dims = ctx.constant_dims(weight)?;
    if onnx::string(node, "auto_pad", "NOTSET") != "NOTSET"
        || onnx::ints(node, "output_shape").is_some()
    {
        return Err(Error::Model(format!(
            "ConvTranspose `{}`: the gradient handles explicit pads only (no auto_pad, no output_shape)",
            node.name
        )));
    }
    let spatial = dims.len().saturating_sub(2);
    let kernel = onnx::ints(node, "kernel_shape")
        .unwrap_or_else(|| dims[2..].iter().map(|&k| k as i64).collect());
    let ones = vec![1i64; spatial];
    let pads = onnx::ints(node, "pads").unwrap_or_else(|| vec![0; 2 * spatial]);
    let strides = onnx::ints(node, "strides").unwrap_or_else(|| ones.clone());
    let mut attributes = vec![
        attr_int("group", onnx::int(node, "group", 1)),
        attr_ints("strides", &strides),
    ];
    let dilations = onnx::ints(node, "dilations").unwrap_or_else(|| ones.clone());
    let decimating = (0..spatial).any(|a| {
        kernel[a] > 1
            && strides[a] > 1
            && dilations[a] % strides[a] == 0
            && pads[a] == 0
            && pads[a + spatial] == 0
    });
    if decimating {
        return Err(Error::Model(format!(
            "ConvTranspose `{}`: a dilation that is a multiple of the stride without padding has \
             no gradient here (tract cannot compile the strided convolution it needs)",
            node.name
        )));
    }
    let mut weight = weight.to_owned();
    if spatial == 2 && kernel == [1, 1] && strides.iter().any(|&s| s > 1) {
        // tract 0.23 rewrites a strided 1×1 Conv into a Downsample that its declutter pass then
        // fails to pull over the reshape before it ("Invalid axis"). The same convolution as a
        // 2×2 kernel whose three new taps are zero, with one more pixel of padding at each
        // end, has the same output size and values and stays a Conv.
        let values = ctx.constant(&weight, "the ConvTranspose weight")?;
        let mut widened = Vec::with_capacity(values.len() * 4);
        for v in values {
            widened.extend([v, 0.0, 0.0, 0.0]);
        }
        weight = ctx.emit.const_f32(&[dims[0], dims[1], 2, 2], widened);
        let pads = [pads[0], pads[1], pads[2] + 1, pads[3] + 1];
        attributes.extend([
            attr_ints("kernel_shape", &[2, 2]),
            attr_ints("dilations", &ones),
            attr_ints("pads", &pads),
        ]);
    } else {
        attributes.extend([
            attr_ints("kernel_shape", &kernel),
            attr_ints("dilations", &dilations),
            attr_ints("pads", &pads),
        ]);
    }
    Ok(ctx.emit.node("Conv", &[g, &weight], attributes))
}

/// AveragePool's adjoint: divide each output gradient by its window's divisor, then spread it
/// over the window with a depthwise ConvTranspose of ones.
fn average_pool(ctx: &mut Context, node: &NodeProto, x: &str, y: &str, g: &str) -> Result<String> {
    let in_shape = ctx.shape(x)?;
    let out_shape = ctx.shape(y)?;
    let kernel = onnx::ints(node, "kernel_shape")
        .ok_or_else(|| Error::Model(format!("AveragePool `{}` has no kernel_shape", node.name)))?;
    if kernel.len() != 2 {
        return Err(Error::Model(format!(
            "AveragePool `{}`: the gradient handles 2-D pooling only",
            node.name
        )));
    }
    let window = Window::read(node, kernel.clone(), &in_shape[2..], &out_shape[2..])?;
    let include_pad = onnx::int(node, "count_include_pad", 0) == 1;
    let declared_pads = onnx::ints(node, "pads").unwrap_or_else(|| vec![0; 4]);
    let (oh, ow) = (out_shape[2], out_shape[3]);
    let mut inverse = Vec::with_capacity(oh * ow);
    for oy in 0..oh {
        for ox in 0..ow {
            let count = |o: usize, axis: usize| -> i64 {
                let start = o as i64 * window.strides[axis] - window.pads_begin[axis];
                let end = start + kernel[axis];
                let (low, high) = if include_pad {
                    (
                        -window.pads_begin[axis],
                        in_shape[2 + axis] as i64 + declared_pads[2 + axis],
                    )
                } else {
                    (0, in_shape[2 + axis] as i64)
                };
                (end.min(high) - start.max(low)).max(1)
            };
            inverse.push(1.0 / (count(oy, 0) * count(ox, 1)) as f32);
        }
    }
    let inverse = ctx.emit.const_f32(&[oh, ow], inverse);
    let scaled = ctx.emit.node("Mul", &[g, &inverse], vec![]);
    let channels = in_shape[1];
    let ones = ctx.emit.const_f32(
        &[channels, 1, kernel[0] as usize, kernel[1] as usize],
        vec![1.0; channels * (kernel[0] * kernel[1]) as usize],
    );
    Ok(ctx.emit.node(
        "ConvTranspose",
        &[&scaled, &ones],
        window.transpose_attributes(channels as i64),
    ))
}
