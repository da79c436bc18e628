//! The lowered CNN plan and its CPU executor: our engine for image CNNs.
//!
//! Why our own: on this project's 2-core machine tract ran MobileNetV2 at 21.1 ms per image on
//! one thread against onnxruntime's 7.6 (README), with its depthwise convolution in scalar code,
//! and rten 0.27 measured 2.2–4.4× slower than onnxruntime too. The plan here is built once per
//! request from the ONNX graph (`lower`: BatchNormalization folded, activations and residual
//! Adds fused, NHWC tensors, weights re-laid), its arena planned from tensor lifetimes (`arena`),
//! and run one image at a time by the kernels (`kernels`), but for the trailing dense layers
//! (`Tail`), which run for a group of images.
//!
//! **Invariant:** every image of a batch runs the same ops on the same shapes with the same
//! arithmetic, so a result does not depend on the batch size, on how a batch is split, or on
//! the thread that runs it.

mod arena;
mod kernels;
pub mod lower;
#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex, PoisonError};

use tract_onnx::prelude::tract_ndarray::{ArrayD, ArrayViewD, Axis, IxDyn};

use super::{Engine, Graph, Plan, PlanRequest};
use crate::{Error, Result};
use lower::Program;

/// The lowered CNN plan on the CPU.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cnn;

impl Engine for Cnn {
    fn name(&self) -> &str {
        "cnn"
    }

    fn compile(&self, graph: &Graph, request: &PlanRequest) -> Result<Arc<dyn Plan>> {
        let program = lower::lower(graph, request)?;
        Ok(Arc::new(CnnPlan {
            tail: Tail::of(&program),
            program,
            workspaces: Mutex::default(),
        }))
    }
}

/// Images whose tails run together (their dense layers' weights stream once per
/// `kernels::dense_rows` group): enough to amortise VGG16's 411 MB of dense weights, few enough
/// that the group's vectors stay in cache.
const TAIL_GROUP: usize = 16;

/// The program's trailing vector ops (dense layers, their activations and softmax), run for a
/// group of images after each image's body: a dense layer streams its weights from memory once
/// per group instead of once per image (MobileNetV2's 1280 × 1000 classifier: 5 MB per image, 0.27
/// of 8.5 ms on one thread here). Tail tensors live in a per-image block of their own, so an
/// image's body can reuse the arena while the group's tails wait.
#[derive(Debug)]
struct Tail {
    /// The first op of the tail (`ops.len()` when there is none).
    start: usize,
    /// The program's tensors, tail tensors at their offsets in a tail block.
    tensors: Vec<lower::TensorInfo>,
    /// Floats of one image's tail block.
    len: usize,
    /// Tensors the tail reads and the body (or the input) writes.
    carried: Vec<lower::TensorId>,
    /// Tensors the tail writes.
    written: Vec<lower::TensorId>,
}

impl Tail {
    fn of(program: &Program) -> Self {
        let is_vector = |t: lower::TensorId| program.tensors[t].rank == 2;
        let in_tail = |op: &lower::Op| match op {
            lower::Op::Dense { .. } => true,
            lower::Op::Activation { input, .. } | lower::Op::Softmax { input, .. } => {
                is_vector(*input)
            }
            _ => false,
        };
        let mut start = program.ops.len();
        while start > 0 && in_tail(&program.ops[start - 1]) {
            start -= 1;
        }
        while start < program.ops.len() && !matches!(program.ops[start], lower::Op::Dense { .. }) {
            start += 1;
        }
        let ops = &program.ops[start..];
        let written: Vec<lower::TensorId> = ops.iter().map(lower::Op::output).collect();
        let mut carried: Vec<lower::TensorId> = Vec::new();
        for t in ops.iter().flat_map(lower::Op::inputs) {
            if !written.contains(&t) && !carried.contains(&t) {
                carried.push(t);
            }
        }
        let mut tensors = program.tensors.clone();
        let mut len = 0;
        for &t in carried.iter().chain(&written) {
            tensors[t].offset = len;
            len += tensors[t].dims.len();
        }
        Self {
            start,
            tensors,
            len,
            carried,
            written,
        }
    }

    /// Whether the tail writes `tensor` (else the body or the input does).
    fn writes(&self, tensor: lower::TensorId) -> bool {
        self.written.contains(&tensor)
    }
}

/// One image's activation arena and image-to-rows scratch, reused across runs.
#[derive(Debug, Default)]
struct Workspace {
    arena: Vec<f32>,
    scratch: Vec<f32>,
}

/// A lowered program with a pool of workspaces (one per concurrent run).
#[derive(Debug)]
struct CnnPlan {
    program: Program,
    tail: Tail,
    workspaces: Mutex<Vec<Workspace>>,
}

impl CnnPlan {
    fn take_workspace(&self) -> Workspace {
        let mut pool = self
            .workspaces
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut workspace = pool.pop().unwrap_or_default();
        workspace.arena.resize(self.program.arena_len, 0.0);
        workspace.scratch.resize(self.program.scratch_len, 0.0);
        workspace
    }

    fn give_back(&self, workspace: Workspace) {
        self.workspaces
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(workspace);
    }

    /// Run the body (every op before the tail) on the image already in the arena.
    fn execute(&self, workspace: &mut Workspace) -> Result<()> {
        for op in &self.program.ops[..self.tail.start] {
            let (frame, out) =
                kernels::Frame::split(&mut workspace.arena, &self.program.tensors, op.output())?;
            kernels::run(op, &frame, out, &mut workspace.scratch)?;
        }
        Ok(())
    }

    /// Run the tail on a group's tail blocks (`blocks`: one per image, `tail.len` floats each).
    fn execute_tail(&self, blocks: &mut [f32], scratch: &mut [f32]) -> Result<()> {
        let tensors = &self.tail.tensors;
        for op in &self.program.ops[self.tail.start..] {
            if let lower::Op::Dense { input, output, .. } = op {
                let (x, out) = (&tensors[*input], &tensors[*output]);
                let mut rows = blocks
                    .chunks_exact_mut(self.tail.len.max(1))
                    .map(|block| {
                        // The tail gives every tensor its own slot: input and output are disjoint.
                        let (low, high) = block.split_at_mut(x.offset.max(out.offset));
                        let (x_slot, out_slot) = if x.offset < out.offset {
                            (&low[x.offset..], high)
                        } else {
                            (&high[..], &mut low[out.offset..])
                        };
                        (&x_slot[..x.dims.len()], &mut out_slot[..out.dims.len()])
                    })
                    .collect::<Vec<_>>();
                kernels::dense_rows(op, &mut rows)?;
            } else {
                for block in blocks.chunks_exact_mut(self.tail.len.max(1)) {
                    let (frame, out) = kernels::Frame::split(block, tensors, op.output())?;
                    kernels::run(op, &frame, out, scratch)?;
                }
            }
        }
        Ok(())
    }

    /// Copy image `image`'s requested tensors that `source` holds (its floats and their layout)
    /// into `outputs`.
    fn copy_outputs<'a>(
        &self,
        outputs: &mut [ArrayD<f32>],
        image: usize,
        source: impl Fn(lower::TensorId) -> Option<(&'a [f32], &'a lower::TensorInfo)>,
    ) -> Result<()> {
        for (output, &tensor) in outputs.iter_mut().zip(&self.program.outputs) {
            let Some((floats, info)) = source(tensor) else {
                continue;
            };
            let values = &floats[info.offset..info.offset + info.dims.len()];
            let mut row = output.index_axis_mut(Axis(0), image);
            let row = row
                .as_slice_mut()
                .ok_or_else(|| Error::Inference("output not contiguous".into()))?;
            from_nhwc(values, info, row);
        }
        Ok(())
    }
}

impl Plan for CnnPlan {
    fn batch(&self) -> Option<usize> {
        None
    }

    fn run(&self, inputs: &[ArrayViewD<f32>]) -> Result<Vec<ArrayD<f32>>> {
        let (input, n) = self.program.check_input(inputs)?;
        let mut outputs: Vec<ArrayD<f32>> = self
            .program
            .outputs
            .iter()
            .map(|&t| ArrayD::zeros(IxDyn(&self.program.shape(t, n))))
            .collect();
        let mut workspace = self.take_workspace();
        let mut blocks = Vec::new();
        let result = (0..n).step_by(TAIL_GROUP).try_for_each(|first| {
            let group = first..(first + TAIL_GROUP).min(n);
            blocks.clear();
            blocks.resize(group.len() * self.tail.len, 0.0);
            for (member, image) in group.clone().enumerate() {
                let block = &mut blocks[member * self.tail.len..(member + 1) * self.tail.len];
                let row = input.index_axis(Axis(0), image);
                let row = row.as_standard_layout();
                let info = &self.program.tensors[self.program.input];
                let slot = &mut workspace.arena[info.offset..info.offset + info.dims.len()];
                let chw = row
                    .as_slice()
                    .ok_or_else(|| Error::Inference("input not contiguous".into()))?;
                to_nhwc(chw, info, slot);
                self.execute(&mut workspace)?;
                for &tensor in &self.tail.carried {
                    let (from, to) = (&self.program.tensors[tensor], &self.tail.tensors[tensor]);
                    block[to.offset..to.offset + to.dims.len()].copy_from_slice(
                        &workspace.arena[from.offset..from.offset + from.dims.len()],
                    );
                }
                self.copy_outputs(&mut outputs, image, |tensor| {
                    (!self.tail.writes(tensor))
                        .then(|| (&workspace.arena[..], &self.program.tensors[tensor]))
                })?;
            }
            self.execute_tail(&mut blocks, &mut workspace.scratch)?;
            for (member, image) in group.enumerate() {
                let block = &blocks[member * self.tail.len..(member + 1) * self.tail.len];
                self.copy_outputs(&mut outputs, image, |tensor| {
                    self.tail
                        .writes(tensor)
                        .then(|| (block, &self.tail.tensors[tensor]))
                })?;
            }
            Ok(())
        });
        self.give_back(workspace);
        result.map(|()| outputs)
    }
}

/// One image `C×H×W` (or a vector) into the arena's `H×W×C`.
fn to_nhwc(chw: &[f32], info: &lower::TensorInfo, hwc: &mut [f32]) {
    let d = info.dims;
    if info.rank == 4 {
        kernels::transpose(chw, d.c, d.h * d.w, hwc);
    } else {
        hwc.copy_from_slice(chw);
    }
}

/// The arena's `H×W×C` back to `C×H×W` (or a vector).
fn from_nhwc(hwc: &[f32], info: &lower::TensorInfo, chw: &mut [f32]) {
    let d = info.dims;
    if info.rank == 4 {
        kernels::transpose(hwc, d.h * d.w, d.c, chw);
    } else {
        chw.copy_from_slice(hwc);
    }
}
