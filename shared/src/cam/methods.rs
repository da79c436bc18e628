//! The gradient-free members of the CAM family on a classifier (METHOD.md §4): EigenCAM,
//! Score-CAM, Ablation-CAM and the random baseline, with pytorch-grad-cam 1.5.5's arithmetic.
//! Gradient methods join this module when the backward transform lands.

use image::RgbImage;
use nalgebra::DMatrix;
use rand::{RngExt, SeedableRng};
use rand_pcg::Pcg64;
use serde::{Deserialize, Serialize};
use tract_onnx::prelude::tract_ndarray::{Array4, ArrayView3, ArrayView4, Axis, s};

use super::{CamMap, aggregate};
use crate::model::{Classifier, softmax};
use crate::runtime::{self, Runtime, check_cancelled};
use crate::{Error, Result};

/// Which CAM.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CamMethod {
    /// First principal component of the activations (no target class needed).
    EigenCam,
    /// Channel weights = softmax of the class logit with the input masked by each channel.
    ScoreCam,
    /// Channel weights = relative drop of the class logit with each channel ablated.
    AblationCam,
    /// Uniform random channel weights in [−1, 1): a baseline.
    Random,
}

impl CamMethod {
    /// Every method this module implements, by name.
    pub const ALL: [CamMethod; 4] = [
        CamMethod::EigenCam,
        CamMethod::ScoreCam,
        CamMethod::AblationCam,
        CamMethod::Random,
    ];

    /// The name the CLI, records and pytorch-grad-cam use.
    pub fn name(self) -> &'static str {
        match self {
            Self::EigenCam => "eigencam",
            Self::ScoreCam => "scorecam",
            Self::AblationCam => "ablationcam",
            Self::Random => "random",
        }
    }

    /// Parse a method name.
    pub fn from_name(name: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|m| m.name() == name)
            .ok_or_else(|| {
                Error::Parameter(format!(
                    "unknown CAM method `{name}`; available: eigencam, scorecam, ablationcam, \
                     random (gradient methods arrive with the backward transform)"
                ))
            })
    }
}

/// What an ablated channel is set to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AblationValue {
    /// Zero, as the method is defined.
    #[default]
    Zero,
    /// pytorch-grad-cam 1.5.5's `AblationLayer`: zero if the activation's minimum is 0, else
    /// that minimum − 1e7, where the minimum is re-read after each ablation in a batch of 32
    /// (so the k-th channel of a batch gets min − (k+1)·1e7). Offered for parity.
    PytorchGradCam,
}

/// CAM parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CamConfig {
    /// The method.
    pub method: CamMethod,
    /// Target layers (readable or tensor names); empty = the model's defaults.
    pub layers: Vec<String>,
    /// Class to explain; `None` = the predicted class.
    pub target: Option<usize>,
    /// Ablation-CAM's ablated value.
    pub ablation: AblationValue,
    /// Seed of the random baseline.
    pub seed: u64,
    /// Images per forward chunk for Score-CAM and Ablation-CAM.
    pub chunk: usize,
}

impl Default for CamConfig {
    fn default() -> Self {
        Self {
            method: CamMethod::EigenCam,
            layers: Vec::new(),
            target: None,
            ablation: AblationValue::Zero,
            seed: 0,
            chunk: 16,
        }
    }
}

/// One layer's map at feature resolution and at input resolution.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerCam {
    /// Layer name.
    pub layer: String,
    /// ReLU'd map at the layer's resolution, before scaling.
    pub native: CamMap,
    /// Scaled to [0, 1] and resized to the input.
    pub map: CamMap,
}

/// A CAM explanation: per-layer maps and their aggregate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CamExplanation {
    /// The explained class.
    pub target: usize,
    /// Its logit on the unmodified input.
    pub target_logit: f32,
    /// Per target layer, in request order.
    pub layers: Vec<LayerCam>,
    /// The aggregated map at input resolution, in [0, 1].
    pub map: CamMap,
}

/// Compute a CAM for a base image (already resized and cropped to the model's input).
pub fn explain(
    classifier: &Classifier,
    image: &RgbImage,
    config: &CamConfig,
    runtime: &impl Runtime,
) -> Result<CamExplanation> {
    let input = classifier
        .spec()
        .preprocessing
        .tensor(std::slice::from_ref(image))?;
    explain_tensor(classifier, input.view(), config, runtime)
}

/// Compute a CAM for one preprocessed `1 × 3 × H × W` input tensor.
pub fn explain_tensor(
    classifier: &Classifier,
    input: ArrayView4<f32>,
    config: &CamConfig,
    runtime: &impl Runtime,
) -> Result<CamExplanation> {
    if input.dim().0 != 1 {
        return Err(Error::Parameter(format!(
            "a CAM explains one image at a time, got a batch of {}",
            input.dim().0
        )));
    }
    if config.chunk == 0 || config.chunk > 1024 {
        return Err(Error::Parameter(format!(
            "chunk must lie in 1..=1024, got {}",
            config.chunk
        )));
    }
    let layer_names = classifier.target_layers(&config.layers)?;
    let layer_refs: Vec<&str> = layer_names.iter().map(String::as_str).collect();
    let forward = classifier.forward(input, &layer_refs)?;
    let logits = forward.logits.row(0).to_vec();
    let target = classifier.target_class(&logits, config.target)?;
    let (height, width) = (input.dim().2, input.dim().3);
    let mut layers = Vec::with_capacity(layer_names.len());
    for (name, activation) in layer_names.iter().zip(&forward.activations) {
        let activation = activation
            .view()
            .into_dimensionality::<tract_onnx::prelude::tract_ndarray::Ix4>()
            .map_err(|e| Error::Inference(format!("layer `{name}` is not 4-D: {e}")))?;
        let a = activation.index_axis(Axis(0), 0);
        let raw = match config.method {
            CamMethod::EigenCam => eigen_projection(a),
            CamMethod::Random => {
                let mut rng = Pcg64::seed_from_u64(config.seed);
                let weights: Vec<f32> = (0..a.dim().0)
                    .map(|_| rng.random_range(-1.0f32..1.0))
                    .collect();
                weighted_sum(a, &weights)
            }
            CamMethod::ScoreCam => {
                let scores = score_cam_scores(classifier, input, a, target, config, runtime)?;
                weighted_sum(a, &softmax(&scores))
            }
            CamMethod::AblationCam => {
                let original = logits[target];
                let scores = ablation_scores(classifier, name, a, target, config, runtime)?;
                let weights: Vec<f32> = scores.iter().map(|s| (original - s) / original).collect();
                weighted_sum(a, &weights)
            }
        };
        let native = raw.relu();
        let map = native.clone().scaled().resize(height, width);
        layers.push(LayerCam {
            layer: name.clone(),
            native,
            map,
        });
    }
    let maps: Vec<CamMap> = layers.iter().map(|l| l.map.clone()).collect();
    Ok(CamExplanation {
        target,
        target_logit: logits[target],
        map: aggregate(&maps)?,
        layers,
    })
}

/// Σ_k w_k A_k as an h×w map.
fn weighted_sum(a: ArrayView3<f32>, weights: &[f32]) -> CamMap {
    let (_, h, w) = a.dim();
    let mut values = vec![0.0f32; h * w];
    for (channel, &weight) in a.outer_iter().zip(weights) {
        for (v, &x) in values.iter_mut().zip(channel.iter()) {
            *v += weight * x;
        }
    }
    CamMap {
        height: h,
        width: w,
        values,
    }
}

/// pytorch-grad-cam's `get_2d_projection`: centre the (h·w)×K matrix per channel, project on
/// the first right singular vector; the sign is fixed so the map correlates positively with the
/// mean activation.
fn eigen_projection(a: ArrayView3<f32>) -> CamMap {
    let (k, h, w) = a.dim();
    let mut x = DMatrix::from_fn(h * w, k, |p, c| f64::from(a[(c, p / w, p % w)]));
    for mut column in x.column_iter_mut() {
        let mean = column.mean();
        column.add_scalar_mut(-mean);
    }
    let svd = x.clone().svd(false, true);
    let direction = svd
        .v_t
        .as_ref()
        .map(|vt| vt.row(0).transpose())
        .unwrap_or_else(|| nalgebra::DVector::zeros(k));
    let mut projection: Vec<f64> = (&x * direction).iter().copied().collect();
    let mean_activation: Vec<f64> = (0..h * w)
        .map(|p| (0..k).map(|c| f64::from(a[(c, p / w, p % w)])).sum::<f64>() / k as f64)
        .collect();
    let centred = |v: &[f64]| {
        let m = v.iter().sum::<f64>() / v.len() as f64;
        v.iter().map(|x| x - m).collect::<Vec<_>>()
    };
    let agreement: f64 = centred(&projection)
        .iter()
        .zip(centred(&mean_activation))
        .map(|(p, m)| p * m)
        .sum();
    if agreement < 0.0 {
        projection.iter_mut().for_each(|p| *p = -*p);
    }
    CamMap {
        height: h,
        width: w,
        values: projection.into_iter().map(|p| p as f32).collect(),
    }
}

/// Score-CAM: the class logit for the input multiplied by each channel's upsampled (bilinear,
/// corner-aligned, as `UpsamplingBilinear2d`) and min-max scaled activation.
fn score_cam_scores(
    classifier: &Classifier,
    input: ArrayView4<f32>,
    a: ArrayView3<f32>,
    target: usize,
    config: &CamConfig,
    runtime: &impl Runtime,
) -> Result<Vec<f32>> {
    let (k, h, w) = a.dim();
    let (height, width) = (input.dim().2, input.dim().3);
    let mut scores = Vec::with_capacity(k);
    for start in (0..k).step_by(config.chunk) {
        check_cancelled(runtime)?;
        let end = (start + config.chunk).min(k);
        let mut batch = Array4::<f32>::zeros((end - start, 3, height, width));
        for (i, channel) in (start..end).enumerate() {
            let plane: Vec<f32> = a.index_axis(Axis(0), channel).iter().copied().collect();
            let up = CamMap {
                height: h,
                width: w,
                values: plane,
            }
            .resize_align_corners(height, width);
            let min = up.values.iter().copied().fold(f32::INFINITY, f32::min);
            let max = up.values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mask: Vec<f32> = up
                .values
                .iter()
                .map(|v| (v - min) / (max - min + 1e-8))
                .collect();
            for c in 0..3 {
                let source = input.slice(s![0, c, .., ..]);
                let mut dest = batch.slice_mut(s![i, c, .., ..]);
                for ((d, &x), &m) in dest.iter_mut().zip(source.iter()).zip(&mask) {
                    *d = x * m;
                }
            }
        }
        let logits = runtime::forward(runtime, classifier, batch.view(), &[])?.logits;
        scores.extend(logits.column(target).iter().copied());
        runtime.progress("score-cam", end, k);
    }
    Ok(scores)
}

/// Ablation-CAM: the class logit with each channel ablated, re-running only the network's tail
/// from the layer.
fn ablation_scores(
    classifier: &Classifier,
    layer: &str,
    a: ArrayView3<f32>,
    target: usize,
    config: &CamConfig,
    runtime: &impl Runtime,
) -> Result<Vec<f32>> {
    let (k, h, w) = a.dim();
    let tail = classifier.tail(layer, 1)?;
    let min = a.iter().copied().fold(f32::INFINITY, f32::min);
    let ablated_value = |channel: usize| -> f32 {
        match config.ablation {
            AblationValue::Zero => 0.0,
            AblationValue::PytorchGradCam if min == 0.0 => 0.0,
            AblationValue::PytorchGradCam => {
                let mut value = min;
                for _ in 0..=channel % 32 {
                    value -= 1e7;
                }
                value
            }
        }
    };
    let mut scores = Vec::with_capacity(k);
    for start in (0..k).step_by(config.chunk) {
        check_cancelled(runtime)?;
        let end = (start + config.chunk).min(k);
        let parts = runtime::map_shares(runtime, start..end, &|channels| {
            let mut batch = Array4::<f32>::zeros((channels.len(), k, h, w));
            for (i, channel) in channels.enumerate() {
                let mut item = batch.index_axis_mut(Axis(0), i);
                item.assign(&a);
                item.index_axis_mut(Axis(0), channel)
                    .fill(ablated_value(channel));
            }
            tail.logits(batch.view())
        });
        for part in parts {
            scores.extend(part?.column(target).iter().copied());
        }
        runtime.progress("ablation-cam", end, k);
    }
    Ok(scores)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use tract_onnx::prelude::tract_ndarray::Array3;

    #[test]
    fn eigen_projection_recovers_a_rank_one_pattern_with_positive_sign() {
        // Every channel is a positive multiple of one spatial pattern plus a constant.
        let pattern = [0.0f32, 1.0, 2.0, 3.0, 4.0, 5.0];
        let a = Array3::from_shape_fn((4, 2, 3), |(c, y, x)| {
            (c as f32 + 1.0) * pattern[y * 3 + x] + c as f32
        });
        let map = eigen_projection(a.view());
        let values = map.values();
        for pair in values.windows(2) {
            assert!(pair[1] > pair[0], "{values:?}");
        }
    }

    #[test]
    fn weighted_sum_and_names() {
        let a = Array3::from_shape_fn((2, 1, 2), |(c, _, x)| (c * 2 + x) as f32);
        assert_eq!(weighted_sum(a.view(), &[1.0, -1.0]).values(), &[-2.0, -2.0]);
        for method in CamMethod::ALL {
            assert_eq!(CamMethod::from_name(method.name()).unwrap(), method);
        }
        assert!(CamMethod::from_name("gradcam").is_err());
    }
}
