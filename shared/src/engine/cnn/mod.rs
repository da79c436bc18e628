//! The lowered CNN plan and its CPU executor: our engine for image CNNs.
//!
//! Why our own: on this project's 2-core machine tract ran MobileNetV2 at 21.1 ms per image on
//! one thread against onnxruntime's 7.6 (README), with its depthwise convolution in scalar code,
//! and rten 0.27 measured 2.2–4.4× slower than onnxruntime too. The plan here is built once per
//! request from the ONNX graph (`lower`: BatchNormalization folded, activations and residual
//! Adds fused, NHWC tensors, weights re-laid), its arena planned from tensor lifetimes (`arena`),
//! and run one image at a time by the kernels (`kernels`).
//!
//! **Invariant:** every image of a batch runs the same ops on the same shapes, so a result does
//! not depend on the batch size, on how a batch is split, or on the thread that runs it.

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
            program,
            workspaces: Mutex::default(),
        }))
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

    /// Run every op on the image already in the arena.
    fn execute(&self, workspace: &mut Workspace) -> Result<()> {
        for op in &self.program.ops {
            let (frame, out) =
                kernels::Frame::split(&mut workspace.arena, &self.program.tensors, op.output())?;
            kernels::run(op, &frame, out, &mut workspace.scratch)?;
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
        let result = (0..n).try_for_each(|image| {
            let row = input.index_axis(Axis(0), image);
            let row = row.as_standard_layout();
            let info = &self.program.tensors[self.program.input];
            let slot = &mut workspace.arena[info.offset..info.offset + info.dims.len()];
            let chw = row
                .as_slice()
                .ok_or_else(|| Error::Inference("input not contiguous".into()))?;
            to_nhwc(chw, info, slot);
            self.execute(&mut workspace)?;
            for (output, &tensor) in outputs.iter_mut().zip(&self.program.outputs) {
                let info = &self.program.tensors[tensor];
                let values = &workspace.arena[info.offset..info.offset + info.dims.len()];
                let mut row = output.index_axis_mut(Axis(0), image);
                let row = row
                    .as_slice_mut()
                    .ok_or_else(|| Error::Inference("output not contiguous".into()))?;
                from_nhwc(values, info, row);
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
