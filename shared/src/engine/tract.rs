//! tract as an engine: any graph tract runs, optimised for a concrete batch (a symbolic batch left
//! in an optimised tract plan ran 6–8× slower). The fallback of the lowered CNN plan, and the
//! engine of the backward transform's gradient graphs.

use std::sync::Arc;

use tract_onnx::prelude::tract_ndarray::{ArrayD, ArrayViewD};
use tract_onnx::prelude::{
    DatumType, InferenceFact, InferenceModel, InferenceModelExt, IntoRunnable, Tensor, TractResult,
    TypedModel, TypedRunnableModel, tvec,
};

use super::{Engine, Graph, Plan, PlanRequest};
use crate::{Error, Result};

/// The tract engine.
#[derive(Clone, Copy, Debug, Default)]
pub struct Tract;

impl Engine for Tract {
    fn name(&self) -> &str {
        "tract"
    }

    fn compile(&self, graph: &Graph, request: &PlanRequest) -> Result<Arc<dyn Plan>> {
        let batch = request.batch;
        let concrete = || -> TractResult<TypedModel> {
            concrete(graph, batch)?
                .with_outputs_by_name(&request.outputs)?
                .into_typed()
        };
        let typed = concrete().map_err(|e| {
            Error::Model(format!("cannot compile the model for batch {batch}: {e:#}"))
        })?;
        let typed = match &request.start {
            Some(start) => cut(typed, start).map_err(|e| {
                Error::Model(format!(
                    "cannot cut the model at `{start}` for batch {batch}: {e:#}"
                ))
            })?,
            None => typed,
        };
        let plan = typed
            .into_optimized()
            .and_then(|m| m.into_runnable())
            .map_err(|e| {
                Error::Model(format!("cannot compile the model for batch {batch}: {e:#}"))
            })?;
        Ok(Arc::new(TractPlan { plan, batch }))
    }
}

/// tract's parse of `graph` with every input fixed to `batch` rows of its dims.
pub(crate) fn concrete(graph: &Graph, batch: usize) -> TractResult<InferenceModel> {
    let mut model = graph.inference().clone();
    for (slot, input) in graph.inputs().iter().enumerate() {
        let mut shape = tvec!(batch);
        shape.extend(input.dims.iter().copied());
        model = model.with_input_fact(slot, InferenceFact::dt_shape(DatumType::F32, shape))?;
    }
    Ok(model)
}

/// Model surgery: the producer of `tensor` is replaced by a new source, so the head of the
/// network is pruned and only the rest runs.
fn cut(mut model: TypedModel, tensor: &str) -> TractResult<TypedModel> {
    let outlet = model
        .nodes()
        .iter()
        .flat_map(|node| (0..node.outputs.len()).map(move |slot| (node.id, slot).into()))
        .find(|&outlet| model.outlet_label(outlet) == Some(tensor))
        .ok_or_else(|| tract_onnx::tract_core::internal::format_err!("tensor not found"))?;
    let fact = model.outlet_fact(outlet)?.clone();
    let source = model.add_source("camlime.tail.input", fact)?;
    for inlet in model.outlet_successors(outlet).to_vec() {
        model.add_edge(source, inlet)?;
    }
    model.set_input_outlets(&[source])?;
    Ok(model)
}

/// A runnable tract plan.
#[derive(Debug)]
struct TractPlan {
    plan: Arc<TypedRunnableModel>,
    batch: usize,
}

impl Plan for TractPlan {
    fn batch(&self) -> Option<usize> {
        Some(self.batch)
    }

    fn run(&self, inputs: &[ArrayViewD<f32>]) -> Result<Vec<ArrayD<f32>>> {
        let tensors = inputs
            .iter()
            .map(|input| Tensor::from(input.to_owned()).into())
            .collect();
        let results = self
            .plan
            .run(tensors)
            .map_err(|e| Error::Inference(format!("{e:#}")))?;
        results
            .iter()
            .map(|value| {
                value
                    .to_plain_array_view::<f32>()
                    .map(|view| view.to_owned())
                    .map_err(|e| Error::Inference(e.to_string()))
            })
            .collect()
    }
}
