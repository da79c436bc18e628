//! Robustness metrics: how an attribution changes when the input is perturbed a little
//! (MaxSensitivity, AvgSensitivity, LocalLipschitzEstimate, RelativeInputStability,
//! RelativeOutputStability, Continuity). They re-explain noisy copies through the [`Explainer`].

use serde::{Deserialize, Serialize};
use tract_onnx::prelude::tract_ndarray::{ArrayView2, ArrayView3, Axis};

use super::perturb::{Baseline, add_noise, translate_columns};
use super::registry::declare;
use super::stats::pearson;
use super::{
    Batch, Declared, Explainer, Input, Model, Needs, Outcome, Preparation, argmax, flat, map_one,
};
use crate::draws::Draws;
use crate::{Error, Result};

/// Inputs re-explained per chunk of perturbed copies (bounds memory; one explainer call each).
const EXPLAIN_CHUNK: usize = 16;

/// Noise for one robustness sample.
#[derive(Clone, Copy, Debug)]
enum Noise {
    Uniform(f64, f64),
    Normal(f64, f64),
}

/// Scores one noisy copy from the copy, its prepared explanation and (when asked for) its logits.
type SampleScore<'a> = dyn FnMut(ArrayView3<f32>, ArrayView2<f32>, Option<Vec<f32>>) -> f64 + 'a;

/// `samples` noisy copies of `x`, re-explained (prepared) in chunks; `score` gets each copy,
/// its explanation and, when asked for, its logits.
#[allow(clippy::too_many_arguments)]
fn noisy_samples(
    x: ArrayView3<f32>,
    y: usize,
    samples: usize,
    noise: Noise,
    preparation: Preparation,
    model: &dyn Model,
    explainer: &dyn Explainer,
    draws: &mut Draws,
    want_logits: bool,
    score: &mut SampleScore,
) -> Result<Vec<f64>> {
    let mut out = Vec::with_capacity(samples);
    let mut done = 0;
    while done < samples {
        let n = EXPLAIN_CHUNK.min(samples - done);
        let mut inputs = Vec::with_capacity(n);
        for _ in 0..n {
            let values = match noise {
                Noise::Uniform(low, high) => draws.uniform(low, high, x.len()),
                Noise::Normal(mean, std) => draws.normal(mean, std, x.len()),
            };
            inputs.push(add_noise(x, &values));
        }
        let views: Vec<_> = inputs.iter().map(|i| i.view()).collect();
        let stacked = tract_onnx::prelude::tract_ndarray::stack(Axis(0), &views)
            .map_err(|e| Error::Inference(e.to_string()))?;
        let maps = explainer.maps(stacked.view(), &vec![y; n])?;
        let logits = if want_logits {
            Some(model.logits(stacked.view())?)
        } else {
            None
        };
        for (i, input) in inputs.iter().enumerate() {
            let map = preparation.apply(maps.index_axis(Axis(0), i));
            let row = logits.as_ref().map(|l| l.row(i).to_vec());
            out.push(score(input.view(), map.view(), row));
        }
        done += n;
    }
    Ok(out)
}

/// The predicted class of `x` when `needed` (the model is not called otherwise).
fn predicted_class(model: &dyn Model, x: ArrayView3<f32>, needed: bool) -> Result<usize> {
    if needed {
        Ok(argmax(
            model.logits(x.insert_axis(Axis(0)))?.row(0).iter().copied(),
        ))
    } else {
        Ok(0)
    }
}

fn frobenius(values: impl Iterator<Item = f64>) -> f64 {
    values.map(|v| v * v).sum::<f64>().sqrt()
}

fn nan_max(values: &[f64]) -> f64 {
    values
        .iter()
        .copied()
        .filter(|v| !v.is_nan())
        .fold(f64::NAN, f64::max)
}

fn nan_mean(values: &[f64]) -> f64 {
    let kept: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    if kept.is_empty() {
        f64::NAN
    } else {
        kept.iter().sum::<f64>() / kept.len() as f64
    }
}

macro_rules! sensitivity {
    ($(#[$doc:meta])* $name:ident, $reduce:expr) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct $name {
            /// Noisy copies.
            pub nr_samples: usize,
            /// Noise is U(−lower_bound, lower_bound), or U(lower_bound, upper_bound) when given.
            pub lower_bound: f64,
            /// See `lower_bound`.
            pub upper_bound: Option<f64>,
            /// Samples whose predicted class changes count as NaN (skipped).
            pub return_nan_when_prediction_changes: bool,
            /// Magnitudes of the attributions.
            pub abs: bool,
            /// Attributions divided by their largest magnitude.
            pub normalise: bool,
        }

        impl Default for $name {
            fn default() -> Self {
                Self {
                    nr_samples: 200,
                    lower_bound: 0.2,
                    upper_bound: None,
                    return_nan_when_prediction_changes: false,
                    abs: false,
                    normalise: false,
                }
            }
        }

        impl $name {
            pub(crate) fn evaluate(
                &self,
                x: ArrayView3<f32>,
                y: usize,
                a: ArrayView2<f32>,
                model: &dyn Model,
                explainer: &dyn Explainer,
                draws: &mut Draws,
            ) -> Result<Outcome> {
                let preparation = Preparation { normalise: self.normalise, abs: self.abs };
                let a = preparation.apply(a);
                let norm_a = frobenius(a.iter().map(|&v| f64::from(v)));
                let noise = match self.upper_bound {
                    Some(high) => Noise::Uniform(self.lower_bound, high),
                    None => Noise::Uniform(-self.lower_bound, self.lower_bound),
                };
                let check = self.return_nan_when_prediction_changes;
                let class = predicted_class(model, x, check)?;
                let values = noisy_samples(x, y, self.nr_samples, noise, preparation, model, explainer, draws, check,
                    &mut |_, map, logits| {
                        if logits.is_some_and(|l| argmax(l.iter().copied()) != class) {
                            return f64::NAN;
                        }
                        let diff = frobenius(a.iter().zip(map.iter()).map(|(p, q)| f64::from(p - q)));
                        diff / norm_a
                    })?;
                Ok(Outcome::with_curve($reduce(&values), values))
            }
        }
    };
}

sensitivity!(
    /// MaxSensitivity (Yeh et al. 2019): the largest ‖a − a′‖ / ‖a‖ over noisy copies.
    MaxSensitivity,
    nan_max
);

declare! { MaxSensitivity "MaxSensitivity", better Some(false), EXPLAINER, curve false,
valid |m| (1..=10_000).contains(&m.nr_samples), "nr_samples 1..=10000",
score |m, input, draws| m.evaluate( input.x, input.y, input.a, input.model, input.explainer()?, draws, ) }
sensitivity!(
    /// AvgSensitivity (Yeh et al. 2019): the mean ‖a − a′‖ / ‖a‖ over noisy copies.
    AvgSensitivity,
    nan_mean
);

declare! { AvgSensitivity "AvgSensitivity", better Some(false), EXPLAINER, curve false,
valid |m| (1..=10_000).contains(&m.nr_samples), "nr_samples 1..=10000",
score |m, input, draws| m.evaluate( input.x, input.y, input.a, input.model, input.explainer()?, draws, ) }

/// LocalLipschitzEstimate (Alvarez-Melis & Jaakkola 2018): the largest ‖a − a′‖₂ / ‖x − x′‖₂
/// over Gaussian-noised copies.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LocalLipschitzEstimate {
    /// Noisy copies.
    pub nr_samples: usize,
    /// Noise mean.
    pub perturb_mean: f64,
    /// Noise standard deviation.
    pub perturb_std: f64,
    /// Samples whose predicted class changes count as NaN (skipped).
    pub return_nan_when_prediction_changes: bool,
    /// Magnitudes of the attributions.
    pub abs: bool,
    /// Attributions divided by their largest magnitude.
    pub normalise: bool,
}

impl Default for LocalLipschitzEstimate {
    fn default() -> Self {
        Self {
            nr_samples: 200,
            perturb_mean: 0.0,
            perturb_std: 0.1,
            return_nan_when_prediction_changes: false,
            abs: false,
            normalise: true,
        }
    }
}

impl LocalLipschitzEstimate {
    pub(crate) fn evaluate(
        &self,
        x: ArrayView3<f32>,
        y: usize,
        a: ArrayView2<f32>,
        model: &dyn Model,
        explainer: &dyn Explainer,
        draws: &mut Draws,
    ) -> Result<Outcome> {
        let preparation = Preparation {
            normalise: self.normalise,
            abs: self.abs,
        };
        let a = preparation.apply(a);
        let noise = Noise::Normal(self.perturb_mean, self.perturb_std);
        let check = self.return_nan_when_prediction_changes;
        let class = predicted_class(model, x, check)?;
        let values = noisy_samples(
            x,
            y,
            self.nr_samples,
            noise,
            preparation,
            model,
            explainer,
            draws,
            check,
            &mut |input, map, logits| {
                if logits.is_some_and(|l| argmax(l.iter().copied()) != class) {
                    return f64::NAN;
                }
                let numerator = frobenius(a.iter().zip(map.iter()).map(|(p, q)| f64::from(p - q)));
                let denominator =
                    frobenius(x.iter().zip(input.iter()).map(|(p, q)| f64::from(p - q)));
                numerator / (denominator + 1e-10)
            },
        )?;
        Ok(Outcome::with_curve(nan_max(&values), values))
    }
}

declare! { LocalLipschitzEstimate "LocalLipschitzEstimate", better Some(false), EXPLAINER, curve false,
valid |m| (1..=10_000).contains(&m.nr_samples), "nr_samples 1..=10000",
score |m, input, draws| m.evaluate( input.x, input.y, input.a, input.model, input.explainer()?, draws, ) }

/// ‖(e − e′) / e‖ with zeros of `e` replaced by `eps` (Agarwal et al.'s relative change),
/// elementwise in `f32` as Quantus computes it.
fn relative_change(e: &[f32], e2: &[f32], eps: f32) -> f64 {
    frobenius(e.iter().zip(e2).map(|(&p, &q)| {
        let denominator = p + if p == 0.0 { eps } else { 0.0 };
        f64::from((p - q) / denominator)
    }))
}

macro_rules! stability {
    ($(#[$doc:meta])* $name:ident, $output:expr) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct $name {
            /// Noisy copies (noise U(lower_bound, upper_bound)).
            pub nr_samples: usize,
            /// Noise lower bound.
            pub lower_bound: f64,
            /// Noise upper bound.
            pub upper_bound: f64,
            /// Floor for zero denominators.
            pub eps_min: f64,
            /// Samples whose predicted class changes make the score NaN.
            pub return_nan_when_prediction_changes: bool,
            /// Magnitudes of the attributions.
            pub abs: bool,
            /// Attributions divided by their largest magnitude.
            pub normalise: bool,
        }

        impl Default for $name {
            fn default() -> Self {
                Self {
                    nr_samples: 200,
                    lower_bound: 0.02,
                    upper_bound: 0.2,
                    eps_min: 1e-6,
                    return_nan_when_prediction_changes: true,
                    abs: false,
                    normalise: false,
                }
            }
        }

        impl $name {
            pub(crate) fn evaluate(
                &self,
                x: ArrayView3<f32>,
                y: usize,
                a: ArrayView2<f32>,
                model: &dyn Model,
                explainer: &dyn Explainer,
                draws: &mut Draws,
            ) -> Result<Outcome> {
                let preparation = Preparation { normalise: self.normalise, abs: self.abs };
                let e = flat(&preparation.apply(a));
                let logits = model.logits(x.insert_axis(Axis(0)))?.row(0).to_vec();
                let class = argmax(logits.iter().copied());
                let eps = self.eps_min as f32;
                let check = self.return_nan_when_prediction_changes;
                let noise = Noise::Uniform(self.lower_bound, self.upper_bound);
                let output = $output;
                let values = noisy_samples(x, y, self.nr_samples, noise, preparation, model, explainer, draws, true,
                    &mut |input, map, row| {
                        let row = row.unwrap_or_default();
                        if check && argmax(row.iter().copied()) != class {
                            return f64::NAN;
                        }
                        let e2: Vec<f32> = map.iter().copied().collect();
                        let numerator = relative_change(&e, &e2, eps);
                        let mut denominator = output(x, input, &logits, &row, eps);
                        if denominator == 0.0 {
                            denominator += f64::from(eps);
                        }
                        numerator / denominator
                    })?;
                let score = if values.iter().any(|v| v.is_nan()) {
                    f64::NAN
                } else {
                    values.iter().copied().fold(f64::NEG_INFINITY, f64::max)
                };
                Ok(Outcome::with_curve(score, values))
            }
        }
    };
}

stability!(
    /// RelativeInputStability (Agarwal et al. 2022): the largest relative attribution change
    /// over relative input change; NaN if any copy changes the predicted class (Quantus's
    /// default).
    RelativeInputStability,
    |x: ArrayView3<f32>, input: ArrayView3<f32>, _: &[f32], _: &[f32], eps: f32| {
        let x: Vec<f32> = x.iter().copied().collect();
        let input: Vec<f32> = input.iter().copied().collect();
        relative_change(&x, &input, eps)
    }
);

declare! { RelativeInputStability "RelativeInputStability", better Some(false), EXPLAINER, curve false,
valid |m| (1..=10_000).contains(&m.nr_samples), "nr_samples 1..=10000",
score |m, input, draws| m.evaluate( input.x, input.y, input.a, input.model, input.explainer()?, draws, ) }
stability!(
    /// RelativeOutputStability (Agarwal et al. 2022): the largest relative attribution change
    /// over the logits' change; NaN if any copy changes the predicted class.
    RelativeOutputStability,
    |_: ArrayView3<f32>, _: ArrayView3<f32>, logits: &[f32], row: &[f32], _: f32| {
        frobenius(logits.iter().zip(row).map(|(p, q)| f64::from(p - q)))
    }
);

declare! { RelativeOutputStability "RelativeOutputStability", better Some(false), EXPLAINER, curve false,
valid |m| (1..=10_000).contains(&m.nr_samples), "nr_samples 1..=10000",
score |m, input, draws| m.evaluate( input.x, input.y, input.a, input.model, input.explainer()?, draws, ) }

/// Continuity (Montavon et al. 2018): the input translated right in `nr_steps` steps of
/// `width / nr_steps` columns (Quantus 0.5.3 computes the step from the image *area*, which
/// moves the whole image out at the first step; this uses the width, as intended), the
/// attribution summed per `patch_size` square (each patch normalised on its own, as Quantus
/// does) and the target's logit recorded. Quantus's aggregate does not run; the score here is
/// the mean over patches of the Pearson correlation between the patch sum and the output
/// along the translation (patches with a constant series are skipped). `curve` = outputs per
/// step, `sums` = patch sums, step-major.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Continuity {
    /// Translation steps.
    pub nr_steps: usize,
    /// Side of the patches.
    pub patch_size: usize,
    /// What uncovered columns become.
    pub perturb_baseline: Baseline,
    /// Magnitudes of the attributions.
    pub abs: bool,
    /// Attributions divided by their largest magnitude.
    pub normalise: bool,
    /// Score softmax probabilities instead of logits (Quantus's default for this metric).
    pub softmax: bool,
}

impl Default for Continuity {
    fn default() -> Self {
        Self {
            nr_steps: 28,
            patch_size: 7,
            perturb_baseline: Baseline::Black,
            abs: true,
            normalise: true,
            softmax: false,
        }
    }
}

impl Continuity {
    pub(crate) fn evaluate(
        &self,
        x: ArrayView3<f32>,
        y: usize,
        model: &dyn Model,
        explainer: &dyn Explainer,
        draws: &mut Draws,
    ) -> Result<Outcome> {
        let (_, height, width) = x.dim();
        let dx = width / self.nr_steps;
        let preparation = Preparation {
            normalise: self.normalise,
            abs: self.abs,
        };
        let mut batch = Batch::<f64>::output(model, x.dim(), y, self.softmax);
        let mut sums = Vec::new();
        let corners: Vec<(usize, usize)> = (0..height)
            .step_by(self.patch_size)
            .flat_map(|r| (0..width).step_by(self.patch_size).map(move |c| (r, c)))
            .collect();
        for step in 0..self.nr_steps {
            let fill = self.perturb_baseline.values(x, draws)[0];
            let moved = translate_columns(x, (step + 1) * dx, fill);
            let map = map_one(explainer, moved.view(), y, preparation)?;
            batch.push(moved.view())?;
            for &(r, c) in &corners {
                let patch: Vec<f32> = map
                    .slice(tract_onnx::prelude::tract_ndarray::s![
                        r..(r + self.patch_size).min(height),
                        c..(c + self.patch_size).min(width)
                    ])
                    .iter()
                    .copied()
                    .collect();
                let max = patch.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                let sum: f64 = patch
                    .iter()
                    .map(|&v| {
                        let v = if self.normalise && max > 0.0 {
                            v / max
                        } else {
                            v
                        };
                        f64::from(if self.abs { v.abs() } else { v })
                    })
                    .sum();
                sums.push(sum);
            }
        }
        let outputs = batch.finish()?;
        let patches = corners.len();
        let correlations: Vec<f64> = (0..patches)
            .map(|p| {
                let series: Vec<f64> = (0..self.nr_steps).map(|s| sums[s * patches + p]).collect();
                pearson(&series, &outputs)
            })
            .filter(|r| !r.is_nan())
            .collect();
        let score = if correlations.is_empty() {
            f64::NAN
        } else {
            correlations.iter().sum::<f64>() / correlations.len() as f64
        };
        Ok(Outcome {
            score,
            curve: outputs,
            sums,
        })
    }
}

declare! { Continuity "Continuity", better Some(true), EXPLAINER, curve false,
valid |m| m.nr_steps >= 1 && m.patch_size >= 1, "nr_steps and patch_size ≥ 1",
score |m, input, draws| m.evaluate(input.x, input.y, input.model, input.explainer()?, draws) }

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::prelude::tract_ndarray::{Array2, Array3};

    /// Logit 0 = the input's sum; logit 1 = 0.
    struct SumModel;

    impl Model for SumModel {
        fn logits(
            &self,
            inputs: tract_onnx::prelude::tract_ndarray::ArrayView4<f32>,
        ) -> Result<Array2<f32>> {
            Ok(Array2::from_shape_fn((inputs.dim().0, 2), |(i, k)| {
                if k == 0 {
                    inputs.index_axis(Axis(0), i).sum()
                } else {
                    0.0
                }
            }))
        }
    }

    /// The attribution map is the input's first channel.
    struct FirstChannel;

    impl Explainer for FirstChannel {
        fn maps(
            &self,
            inputs: tract_onnx::prelude::tract_ndarray::ArrayView4<f32>,
            _: &[usize],
        ) -> Result<Array3<f32>> {
            Ok(inputs.index_axis(Axis(1), 0).to_owned())
        }
    }

    #[test]
    fn continuity_follows_the_translation() {
        // 1…16 on a 4×4 image, moved right one column per step, uncovered columns black (1).
        let x = Array3::from_shape_fn((1, 4, 4), |(_, r, c)| (r * 4 + c + 1) as f32);
        let metric = Continuity {
            nr_steps: 4,
            patch_size: 2,
            ..Continuity::default()
        };
        let outcome = metric
            .evaluate(x.view(), 0, &SumModel, &FirstChannel, &mut Draws::new(0))
            .unwrap();
        // Row r after k columns moved in: k ones, then 4r+1 … 4r+4−k.
        assert_eq!(outcome.curve, vec![100.0, 68.0, 40.0, 16.0]);
        assert_eq!(outcome.sums.len(), 16);
        // Top-left patch, each step divided by its own largest value: [1 1; 1 5] / 5, then ones.
        let top_left: Vec<f64> = (0..4).map(|s| outcome.sums[s * 4]).collect();
        assert!((top_left[0] - 1.6).abs() < 1e-6, "{top_left:?}");
        assert_eq!(&top_left[1..], &[4.0, 4.0, 4.0]);
        // Bottom-right patch at step 0, one column moved in: [10 11; 14 15] / 15.
        assert!((outcome.sums[3] - 50.0 / 15.0).abs() < 1e-6);
        let correlations: Vec<f64> = (0..4)
            .map(|p| {
                let series: Vec<f64> = (0..4).map(|s| outcome.sums[s * 4 + p]).collect();
                pearson(&series, &outcome.curve)
            })
            .filter(|r| !r.is_nan())
            .collect();
        assert!(!correlations.is_empty());
        let mean = correlations.iter().sum::<f64>() / correlations.len() as f64;
        assert!((outcome.score - mean).abs() < 1e-12);
        // The top-left patch fills with black as the outputs fall: a negative correlation.
        assert!((pearson(&top_left, &outcome.curve) - -0.8098311912155413).abs() < 1e-9);
    }
}
