//! First-order estimates of how far float32 rounding can move a CAM map ([`Stability`]).
//!
//! Every tensor a CAM reads (activations, gradients, scores) is taken to carry a relative error
//! of [`Stability::NOISE`] of its magnitude, the spread between two correct float32 engines. The
//! error is propagated to the map before ReLU, `Σ_c δ(w_c A_c)`, channels' errors taken as
//! independent (added in quadrature), and divided by the range that min-max scaling divides by. Where a method divides by a quantity,
//! the quotient's error grows as that quantity nears zero: the estimate counts those
//! denominators and their effect. Measured on the end-to-end corpus against pytorch-grad-cam's
//! own float32-vs-float64 spread (`fixtures/endtoend/conditioning.json`).

use camlime_base::cam::Stability;
use tract_onnx::prelude::tract_ndarray::ArrayView3;

const EPS: f32 = Stability::NOISE;

/// A denominator is "near zero" when its estimated noise reaches 1 % of it.
fn near_zero(noise: f32, value: f32) -> bool {
    noise >= 0.01 * value.abs()
}

/// The weights' own errors and the count of near-zero denominators among `denominators`.
pub(super) struct WeightNoise {
    pub errors: Vec<f32>,
    pub near_zero: usize,
    pub denominators: usize,
}

impl WeightNoise {
    /// Weights computed without division (Grad-CAM, Score-CAM, random): their relative noise.
    pub fn plain(weights: &[f32]) -> Self {
        Self {
            errors: weights.iter().map(|w| EPS * w.abs()).collect(),
            near_zero: 0,
            denominators: 0,
        }
    }

    /// XGrad-CAM's `w_c = Σ g·A / (ΣA + 1e-7)`.
    pub fn xgrad_cam(a: ArrayView3<f32>, g: ArrayView3<f32>) -> Self {
        let mut noise = Self::plain(&[]);
        for (ak, gk) in a.outer_iter().zip(g.outer_iter()) {
            let denominator = ak.sum() + 1e-7;
            let numerator: f32 = ak.iter().zip(gk.iter()).map(|(x, y)| x * y).sum();
            let numerator_noise: f32 = 2.0
                * EPS
                * ak.iter()
                    .zip(gk.iter())
                    .map(|(x, y)| (x * y).abs())
                    .sum::<f32>();
            let denominator_noise = EPS * ak.iter().map(|x| x.abs()).sum::<f32>();
            noise.denominators += 1;
            noise.near_zero += usize::from(near_zero(denominator_noise, denominator));
            noise.errors.push(
                (numerator_noise + (numerator / denominator).abs() * denominator_noise)
                    / denominator.abs().max(denominator_noise),
            );
        }
        noise
    }

    /// Grad-CAM++'s `w_c = Σ relu(g) · g² / (2g² + g³·ΣA + 1e-6)`.
    pub fn grad_cam_plus_plus(a: ArrayView3<f32>, g: ArrayView3<f32>) -> Self {
        let mut noise = Self::plain(&[]);
        for (ak, gk) in a.outer_iter().zip(g.outer_iter()) {
            let total: f32 = ak.sum();
            let total_noise = EPS * ak.iter().map(|x| x.abs()).sum::<f32>();
            let mut error = 0.0f32;
            for &grad in gk.iter().filter(|&&v| v != 0.0) {
                let g2 = grad * grad;
                let denominator = 2.0 * g2 + total * g2 * grad + 1e-6;
                let denominator_noise = EPS * (2.0 * g2 + 3.0 * (total * g2 * grad).abs())
                    + (g2 * grad).abs() * total_noise;
                noise.denominators += 1;
                noise.near_zero += usize::from(near_zero(denominator_noise, denominator));
                if grad > 0.0 {
                    let alpha = g2 / denominator;
                    let alpha_noise = alpha.abs()
                        * (2.0 * EPS
                            + denominator_noise / denominator.abs().max(denominator_noise));
                    error += grad * alpha_noise + EPS * grad * alpha.abs();
                }
            }
            noise.errors.push(error);
        }
        noise
    }

    /// Ablation-CAM's `w_c = (y − y_c) / y`, `y` the target logit and `y_c` with channel c
    /// ablated.
    pub fn ablation(original: f32, scores: &[f32]) -> Self {
        // A logit carries noise relative to the logits' scale, not to itself (near zero it is a
        // cancellation).
        let scale = scores.iter().fold(original.abs(), |m, s| m.max(s.abs()));
        let y_noise = EPS * scale;
        Self {
            errors: scores
                .iter()
                .map(|s| {
                    let numerator = original - s;
                    (EPS * (original.abs() + s.abs()) + (numerator / original).abs() * y_noise)
                        / original.abs().max(y_noise)
                })
                .collect(),
            near_zero: usize::from(near_zero(y_noise, original)),
            denominators: 1,
        }
    }
}

/// Largest change of a min-max scaled map whose pre-ReLU values are `raw`, given each pixel's
/// squared error estimate.
fn scaled_sensitivity(raw: &[f32], squared_error: &[f32]) -> f32 {
    let relu = raw.iter().map(|v| v.max(0.0));
    let (lo, hi) = relu.fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    let worst = squared_error.iter().copied().fold(0.0f32, f32::max).sqrt();
    // Both ends of the range move too: the error of (v − min) / range is at most 3·δ / range.
    3.0 * worst / (hi - lo + 1e-7)
}

/// Stability of `Σ_c w_c A_c` given the weights' errors.
pub(super) fn weighted(
    a: ArrayView3<f32>,
    weights: &[f32],
    noise: &WeightNoise,
    raw: &[f32],
) -> Stability {
    let (_, h, w) = a.dim();
    let mut error = vec![0.0f32; h * w];
    for ((channel, weight), weight_error) in a.outer_iter().zip(weights).zip(&noise.errors) {
        for (e, value) in error.iter_mut().zip(channel.iter()) {
            *e += ((weight_error + EPS * weight.abs()) * value).powi(2);
        }
    }
    Stability {
        sensitivity: scaled_sensitivity(raw, &error),
        near_zero: noise.near_zero,
        denominators: noise.denominators,
    }
}

/// Stability of `Σ_c P_c` for an element-wise stack (HiResCAM, LayerCAM, Grad-CAM element-wise:
/// products of an activation and a gradient, so twice the noise).
pub(super) fn elementwise(stack: ArrayView3<f32>, raw: &[f32]) -> Stability {
    let (_, h, w) = stack.dim();
    let mut error = vec![0.0f32; h * w];
    for channel in stack.outer_iter() {
        for (e, value) in error.iter_mut().zip(channel.iter()) {
            *e += (2.0 * EPS * value).powi(2);
        }
    }
    Stability {
        sensitivity: scaled_sensitivity(raw, &error),
        near_zero: 0,
        denominators: 0,
    }
}

/// FullGrad's channel maps, each min-max scaled on its own: how many have a range within their
/// noise (their scaled map is mostly rounding). Its sensitivity is measured, not estimated
/// (`methods::full_grad`).
pub(super) struct FullGradNoise {
    near_zero: usize,
    denominators: usize,
}

impl FullGradNoise {
    pub fn new() -> Self {
        Self {
            near_zero: 0,
            denominators: 0,
        }
    }

    /// Count one channel map (its values before scaling).
    pub fn add(&mut self, values: impl Iterator<Item = f32>) {
        let (lo, hi) = values.fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
        self.denominators += 1;
        self.near_zero += usize::from(near_zero(2.0 * EPS * hi.abs(), hi - lo + 1e-7));
    }

    /// The stability given the measured largest change of the final map.
    pub fn finish(self, change: f32) -> Stability {
        Stability {
            sensitivity: change,
            near_zero: self.near_zero,
            denominators: self.denominators,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::prelude::tract_ndarray::Array3;

    #[test]
    fn xgrad_cam_counts_a_channel_whose_activations_sum_to_almost_zero() {
        // Channel 0 sums to 10; channel 1 to 1e-6 out of Σ|A| = 2.
        let a = Array3::from_shape_vec((2, 1, 2), vec![4.0, 6.0, 1.0, -0.999_999]).unwrap();
        let g = Array3::from_shape_vec((2, 1, 2), vec![0.5, 0.5, 1.0, 1.0]).unwrap();
        let noise = WeightNoise::xgrad_cam(a.view(), g.view());
        assert_eq!((noise.near_zero, noise.denominators), (1, 2));
        assert!(
            noise.errors[1] > 1e3 * noise.errors[0],
            "{:?}",
            noise.errors
        );
    }

    #[test]
    fn an_ablation_of_a_zero_logit_is_unstable_and_a_large_one_is_not() {
        assert_eq!(WeightNoise::ablation(1e-9, &[0.5]).near_zero, 1);
        assert_eq!(WeightNoise::ablation(12.0, &[0.5]).near_zero, 0);
    }

    #[test]
    fn a_map_with_a_tiny_range_is_sensitive() {
        let a = Array3::from_shape_vec((1, 1, 3), vec![1.0, 1.0 + 1e-6, 1.0]).unwrap();
        let weights = [1.0];
        let raw = [1.0, 1.0 + 1e-6, 1.0];
        let flat = weighted(a.view(), &weights, &WeightNoise::plain(&weights), &raw);
        assert!(flat.is_unstable(), "{flat:?}");
        let varied = [0.0, 1.0, 0.5];
        let a = Array3::from_shape_vec((1, 1, 3), varied.to_vec()).unwrap();
        let steep = weighted(a.view(), &weights, &WeightNoise::plain(&weights), &varied);
        assert!(!steep.is_unstable(), "{steep:?}");
    }
}
