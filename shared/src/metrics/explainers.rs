//! The [`Explainer`] of a CAM or input-attribution method, for the metrics that explain
//! perturbed inputs again (robustness, randomisation, InputInvariance). The instance's own
//! attribution should come from [`method_map`] too, so that both sides are computed alike.

use tract_onnx::prelude::tract_ndarray::{Array2, Array3, ArrayView3, ArrayView4, Axis};

use super::Explainer;
use crate::cam::{CamMethod, attribute, compute_tensor};
use crate::explanation::ExplainConfig;
use crate::model::Classifier;
use crate::runtime::Runtime;
use crate::{Error, Result};

/// The attribution map of a CAM or input-attribution method for one input (`c × h × w`):
/// a CAM's map at input resolution scaled to [0, 1] (pytorch-grad-cam's output), an input
/// attribution summed over channels (captum's attributions as Quantus users pass them).
pub fn method_map(
    classifier: &Classifier,
    input: ArrayView3<f32>,
    target: usize,
    method: CamMethod,
    config: &ExplainConfig,
    runtime: &impl Runtime,
) -> Result<Array2<f32>> {
    let x = input.insert_axis(Axis(0));
    let mut config = config.clone();
    config.target = Some(target);
    config.cam.feature_resolution = false;
    if method.is_input_attribution() {
        let (_, _, attribution) = attribute(classifier, x, method, &config, runtime)?;
        Ok(attribution.sum_axis(Axis(0)))
    } else {
        let map = compute_tensor(classifier, x, method, &config, runtime)?.map;
        Array2::from_shape_vec((map.height(), map.width()), map.values().to_vec())
            .map_err(|e| Error::Inference(e.to_string()))
    }
}

fn maps_of(
    classifier: &Classifier,
    method: CamMethod,
    config: &ExplainConfig,
    runtime: &impl Runtime,
    inputs: ArrayView4<f32>,
    targets: &[usize],
) -> Result<Array3<f32>> {
    if targets.len() != inputs.dim().0 {
        return Err(Error::Parameter(format!(
            "{} targets for {} inputs",
            targets.len(),
            inputs.dim().0
        )));
    }
    let (n, _, h, w) = inputs.dim();
    let mut out = Array3::zeros((n, h, w));
    for (i, (input, &target)) in inputs.axis_iter(Axis(0)).zip(targets).enumerate() {
        let map = method_map(classifier, input, target, method, config, runtime)?;
        if map.dim() != (h, w) {
            return Err(Error::Inference(format!(
                "the map is {:?}, the input {h}×{w}",
                map.dim()
            )));
        }
        out.index_axis_mut(Axis(0), i).assign(&map);
    }
    Ok(out)
}

/// A CAM or input attribution as an [`Explainer`].
pub struct MethodExplainer<'a, R: Runtime> {
    /// The classifier explained.
    pub classifier: &'a Classifier,
    /// The method.
    pub method: CamMethod,
    /// Its parameters (the target is set per input).
    pub config: ExplainConfig,
    /// Where the work runs.
    pub runtime: &'a R,
}

impl<R: Runtime> Explainer for MethodExplainer<'_, R> {
    fn maps(&self, inputs: ArrayView4<f32>, targets: &[usize]) -> Result<Array3<f32>> {
        maps_of(
            self.classifier,
            self.method,
            &self.config,
            self.runtime,
            inputs,
            targets,
        )
    }

    fn shifted(&self, shift: f32) -> Result<Box<dyn Explainer + '_>> {
        Ok(Box::new(ShiftedExplainer {
            classifier: self.classifier.with_input_offset(shift)?,
            method: self.method,
            config: self.config.clone(),
            runtime: self.runtime,
        }))
    }
}

/// The same method on a classifier whose input absorbs a shift.
struct ShiftedExplainer<'a, R: Runtime> {
    classifier: Classifier,
    method: CamMethod,
    config: ExplainConfig,
    runtime: &'a R,
}

impl<R: Runtime> Explainer for ShiftedExplainer<'_, R> {
    fn maps(&self, inputs: ArrayView4<f32>, targets: &[usize]) -> Result<Array3<f32>> {
        maps_of(
            &self.classifier,
            self.method,
            &self.config,
            self.runtime,
            inputs,
            targets,
        )
    }
}
