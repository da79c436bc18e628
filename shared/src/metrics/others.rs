//! Complexity, localisation, robustness and axiomatic metrics.

use serde::{Deserialize, Serialize};
use tract_onnx::prelude::tract_ndarray::{Array3, ArrayView2, ArrayView3, Axis};

use super::draws::Draws;
use super::perturb::{Baseline, add_noise, translate_columns};
use super::stats::{entropy, gini, pearson, roc_auc};
use super::{
    Batch, Explainer, Model, Outcome, Preparation, argmax, ascending, explain_one, flat, output_of,
    prepare,
};
use crate::{Error, Result};

macro_rules! attribution_only {
    ($(#[$doc:meta])* $name:ident { abs: $abs:expr, normalise: $normalise:expr $(, $(#[$fdoc:meta])* $field:ident: $ty:ty = $default:expr)* }) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct $name {
            $($(#[$fdoc])* pub $field: $ty,)*
            /// Magnitudes of the attribution.
            pub abs: bool,
            /// Attribution divided by its largest magnitude.
            pub normalise: bool,
        }

        impl Default for $name {
            fn default() -> Self {
                Self { $($field: $default,)* abs: $abs, normalise: $normalise }
            }
        }
    };
}

attribution_only!(
    /// Sparseness (Chalasani et al. 2020): Gini index of the prepared attribution.
    Sparseness { abs: true, normalise: true }
);
attribution_only!(
    /// Complexity (Bhatt et al. 2020): entropy of each pixel's share of the attribution.
    Complexity { abs: true, normalise: true }
);
attribution_only!(
    /// EffectiveComplexity (Nguyen & Martínez 2020): pixels with attribution above `eps`.
    EffectiveComplexity { abs: true, normalise: true,
        /// The threshold.
        eps: f64 = 1e-5 }
);

impl Sparseness {
    pub(crate) fn evaluate(&self, a: ArrayView2<f32>) -> Outcome {
        let a = prepare(a, self.normalise, self.abs);
        let values: Vec<f64> = a.iter().map(|&v| f64::from(v)).collect();
        Outcome::score(gini(&values))
    }
}

impl Complexity {
    pub(crate) fn evaluate(&self, a: ArrayView2<f32>) -> Outcome {
        let a = prepare(a, self.normalise, self.abs);
        let values: Vec<f64> = a.iter().map(|&v| f64::from(v)).collect();
        let total: f64 = values.iter().map(|v| v.abs()).sum();
        let shares: Vec<f64> = values.iter().map(|v| v / total).collect();
        Outcome::score(entropy(&shares))
    }
}

impl EffectiveComplexity {
    pub(crate) fn evaluate(&self, a: ArrayView2<f32>) -> Outcome {
        let a = prepare(a, self.normalise, self.abs);
        Outcome::score(a.iter().filter(|&&v| f64::from(v) > self.eps).count() as f64)
    }
}

/// The mask as flat booleans, or `None` when it marks nothing (the score is then NaN).
fn mask_of(mask: Option<ArrayView2<bool>>) -> Option<Vec<bool>> {
    let mask: Vec<bool> = mask?.iter().copied().collect();
    mask.iter().any(|&m| m).then_some(mask)
}

attribution_only!(
    /// PointingGame (Zhang et al. 2018): 1 if a maximum of the attribution lies in the mask
    /// (`weighted`: 1 − the mask's share of the image).
    PointingGame { abs: false, normalise: true,
        /// Weight hits by how small the mask is.
        weighted: bool = false }
);
attribution_only!(
    /// AttributionLocalisation (Kohlbrenner et al. 2020): attribution inside the mask over the
    /// total (`weighted`: times the mask's share of the image).
    AttributionLocalisation { abs: true, normalise: true,
        /// Weight by the mask's share.
        weighted: bool = false,
        /// Masks above this share of the image only warn in Quantus; kept for its parameters.
        max_size: f64 = 1.0 }
);
attribution_only!(
    /// TopKIntersection (Theiner et al. 2021): share of the `k` most relevant pixels that lie
    /// in the mask (`concept_influence`: divided by the mask's share).
    TopKIntersection { abs: false, normalise: true,
        /// Pixels taken.
        k: usize = 1000,
        /// Divide by the mask's share of the image.
        concept_influence: bool = false }
);
attribution_only!(
    /// RelevanceRankAccuracy (Arras et al. 2021): share of the mask among the |mask| most
    /// relevant pixels.
    RelevanceRankAccuracy { abs: false, normalise: true }
);
attribution_only!(
    /// RelevanceMassAccuracy (Arras et al. 2021): attribution inside the mask over the total.
    RelevanceMassAccuracy { abs: false, normalise: true }
);
attribution_only!(
    /// AUC (Fawcett 2006): ROC AUC of the attribution as a detector of mask pixels.
    Auc { abs: false, normalise: true }
);

/// The `k` largest values' indices (ties: later index first, as NumPy's `argsort(...)[-k:]`
/// of a stable sort).
fn top_k(a: &[f32], k: usize) -> Vec<usize> {
    let order = ascending(a);
    order[order.len().saturating_sub(k)..].to_vec()
}

impl PointingGame {
    pub(crate) fn evaluate(&self, a: ArrayView2<f32>, mask: Option<ArrayView2<bool>>) -> Outcome {
        let Some(mask) = mask_of(mask) else {
            return Outcome::score(f64::NAN);
        };
        let a = flat(&prepare(a, self.normalise, self.abs));
        let max = a.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let hit = a.iter().zip(&mask).any(|(&v, &m)| v == max && m);
        let score = match (hit, self.weighted) {
            (false, _) => 0.0,
            (true, false) => 1.0,
            (true, true) => 1.0 - mask.iter().filter(|&&m| m).count() as f64 / mask.len() as f64,
        };
        Outcome::score(score)
    }
}

impl AttributionLocalisation {
    pub(crate) fn evaluate(&self, a: ArrayView2<f32>, mask: Option<ArrayView2<bool>>) -> Outcome {
        let Some(mask) = mask_of(mask) else {
            return Outcome::score(f64::NAN);
        };
        let a = flat(&prepare(a, self.normalise, self.abs));
        let inside: f64 = a
            .iter()
            .zip(&mask)
            .filter(|(_, m)| **m)
            .map(|(&v, _)| f64::from(v))
            .sum();
        let total: f64 = a.iter().map(|&v| f64::from(v)).sum();
        let ratio = inside / total;
        let share = mask.iter().filter(|&&m| m).count() as f64 / mask.len() as f64;
        let score = if ratio > 1.0 {
            f64::NAN
        } else if self.weighted {
            ratio * share
        } else {
            ratio
        };
        Outcome::score(score)
    }
}

impl TopKIntersection {
    pub(crate) fn evaluate(&self, a: ArrayView2<f32>, mask: Option<ArrayView2<bool>>) -> Outcome {
        let Some(mask) = mask_of(mask) else {
            return Outcome::score(f64::NAN);
        };
        let a = flat(&prepare(a, self.normalise, self.abs));
        let hits = top_k(&a, self.k).iter().filter(|&&i| mask[i]).count();
        let mut score = hits as f64 / self.k as f64;
        if self.concept_influence {
            score *= mask.len() as f64 / mask.iter().filter(|&&m| m).count() as f64;
        }
        Outcome::score(score)
    }
}

impl RelevanceRankAccuracy {
    pub(crate) fn evaluate(&self, a: ArrayView2<f32>, mask: Option<ArrayView2<bool>>) -> Outcome {
        let Some(mask) = mask_of(mask) else {
            return Outcome::score(f64::NAN);
        };
        let a = flat(&prepare(a, self.normalise, self.abs));
        let k = mask.iter().filter(|&&m| m).count();
        let hits = top_k(&a, k).iter().filter(|&&i| mask[i]).count();
        Outcome::score(hits as f64 / k as f64)
    }
}

impl RelevanceMassAccuracy {
    pub(crate) fn evaluate(&self, a: ArrayView2<f32>, mask: Option<ArrayView2<bool>>) -> Outcome {
        let Some(mask) = mask_of(mask) else {
            return Outcome::score(f64::NAN);
        };
        let a = flat(&prepare(a, self.normalise, self.abs));
        let inside: f64 = a
            .iter()
            .zip(&mask)
            .filter(|(_, m)| **m)
            .map(|(&v, _)| f64::from(v))
            .sum();
        let total: f64 = a.iter().map(|&v| f64::from(v)).sum();
        Outcome::score(inside / total)
    }
}

impl Auc {
    pub(crate) fn evaluate(&self, a: ArrayView2<f32>, mask: Option<ArrayView2<bool>>) -> Outcome {
        let Some(mask) = mask_of(mask) else {
            return Outcome::score(f64::NAN);
        };
        let a = flat(&prepare(a, self.normalise, self.abs));
        let scores: Vec<f64> = a.iter().map(|&v| f64::from(v)).collect();
        Outcome::score(roc_auc(&mask, &scores))
    }
}

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
        let maps = explainer.explain(stacked.view(), &vec![y; n])?;
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
sensitivity!(
    /// AvgSensitivity (Yeh et al. 2019): the mean ‖a − a′‖ / ‖a‖ over noisy copies.
    AvgSensitivity,
    nan_mean
);

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
stability!(
    /// RelativeOutputStability (Agarwal et al. 2022): the largest relative attribution change
    /// over the logits' change; NaN if any copy changes the predicted class.
    RelativeOutputStability,
    |_: ArrayView3<f32>, _: ArrayView3<f32>, logits: &[f32], row: &[f32], _: f32| {
        frobenius(logits.iter().zip(row).map(|(p, q)| f64::from(p - q)))
    }
);

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
            let map = explain_one(explainer, moved.view(), y, preparation)?;
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

/// Completeness (Sundararajan et al. 2017): 1 if the attributions sum exactly to the target
/// logit's drop from the input to the all-baseline image (Quantus compares with `==`); `curve`
/// holds [Σa, drop] so the gap can be read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Completeness {
    /// The reference image's value.
    pub perturb_baseline: Baseline,
    /// Magnitudes of the attribution.
    pub abs: bool,
    /// Attribution divided by its largest magnitude.
    pub normalise: bool,
    /// Score softmax probabilities instead of logits (Quantus's default for this metric).
    pub softmax: bool,
}

impl Default for Completeness {
    fn default() -> Self {
        Self {
            perturb_baseline: Baseline::Black,
            abs: false,
            normalise: true,
            softmax: false,
        }
    }
}

impl Completeness {
    pub(crate) fn evaluate(
        &self,
        x: ArrayView3<f32>,
        y: usize,
        a: ArrayView2<f32>,
        model: &dyn Model,
        draws: &mut Draws,
    ) -> Result<Outcome> {
        let a = prepare(a, self.normalise, self.abs);
        // One value for the whole tensor: a single draw, as Quantus's scalar baseline shape.
        let value = match self.perturb_baseline {
            Baseline::Uniform => draws.uniform(0.0, 1.0, 1)[0] as f32,
            baseline => {
                draws.uniform(0.0, 1.0, 1);
                baseline.values(x, &mut Draws::new(0))[0]
            }
        };
        let reference = Array3::from_elem(x.dim(), value);
        let y_pred = output_of(model, x, y, self.softmax)?;
        let y_reference = output_of(model, reference.view(), y, self.softmax)?;
        let total = f64::from(super::stats::pairwise_sum_f32(&flat(&a)));
        let drop = y_pred - y_reference;
        Ok(Outcome::with_curve(
            f64::from(u8::from(total == drop)),
            vec![total, drop],
        ))
    }
}

/// NonSensitivity (Nguyen & Martínez 2020): chunks of pixels (in index order) perturbed
/// `n_samples` times each; a chunk is *insensitive* when the output variance is below `eps` and
/// *unattributed* when every |a| is below `eps`; the score counts chunks where exactly one
/// holds (0 = the attribution ignores exactly what the model ignores). Quantus 0.5.3's code
/// indexes pixels by attribution values and compares booleans, so this follows the definition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NonSensitivity {
    /// Threshold for both tests.
    pub eps: f64,
    /// Perturbations per chunk.
    pub n_samples: usize,
    /// Pixels per chunk.
    pub features_in_step: usize,
    /// What perturbed pixels become.
    pub perturb_baseline: Baseline,
    /// Magnitudes of the attribution.
    pub abs: bool,
    /// Attribution divided by its largest magnitude.
    pub normalise: bool,
    /// Score softmax probabilities instead of logits (Quantus's default for this metric).
    pub softmax: bool,
}

impl Default for NonSensitivity {
    fn default() -> Self {
        Self {
            eps: 1e-5,
            n_samples: 100,
            features_in_step: 1,
            perturb_baseline: Baseline::Black,
            abs: true,
            normalise: true,
            softmax: true,
        }
    }
}

impl NonSensitivity {
    pub(crate) fn evaluate(
        &self,
        x: ArrayView3<f32>,
        y: usize,
        a: ArrayView2<f32>,
        model: &dyn Model,
        draws: &mut Draws,
    ) -> Result<Outcome> {
        let a = flat(&prepare(a, self.normalise, self.abs));
        let pixels: Vec<usize> = (0..a.len()).collect();
        let mut batch = Batch::<f64>::output(model, x.dim(), y, self.softmax);
        for chunk in pixels.chunks(self.features_in_step) {
            for _ in 0..self.n_samples {
                let values = self.perturb_baseline.values(x, draws);
                batch.push_replaced(x, chunk, &values)?;
            }
        }
        let preds = batch.finish()?;
        let mut mismatches = 0usize;
        let mut variances = Vec::new();
        for (chunk, outputs) in pixels
            .chunks(self.features_in_step)
            .zip(preds.chunks(self.n_samples))
        {
            let mean = outputs.iter().sum::<f64>() / outputs.len() as f64;
            let variance =
                outputs.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / outputs.len() as f64;
            let insensitive = variance < self.eps;
            let unattributed = chunk.iter().all(|&p| f64::from(a[p].abs()) < self.eps);
            if insensitive != unattributed {
                mismatches += 1;
            }
            variances.push(variance);
        }
        Ok(Outcome::with_curve(mismatches as f64, variances))
    }
}

/// InputInvariance (Kindermans et al. 2017): the input shifted by `input_shift` and explained
/// through a model whose input absorbs the shift; 1 if the attribution is unchanged
/// (`|a − a′| ≤ atol + rtol·|a′|` everywhere, NumPy's `isclose`). A float32 network rounds
/// `(x + s) − s` differently from `x`, and gradients jump at ReLU kinks, so gradient maps of
/// a real CNN differ by ~1e-3 of their maximum: Quantus's atol of 1e-4 fails them all. Quantus 0.5.3 leaves the
/// first input value unshifted (its batch helper drops index 0), which alone breaks the
/// invariance of every gradient method; the whole input is shifted here.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InputInvariance {
    /// The constant added to the input.
    pub input_shift: f32,
    /// Absolute tolerance of the comparison (NumPy's `isclose`; Quantus's 1e-4).
    pub atol: f64,
    /// Relative tolerance of the comparison.
    pub rtol: f64,
    /// Magnitudes of the attributions.
    pub abs: bool,
    /// Attributions divided by their largest magnitude.
    pub normalise: bool,
}

impl Default for InputInvariance {
    fn default() -> Self {
        Self {
            input_shift: -1.0,
            atol: 1e-4,
            rtol: 1e-5,
            abs: false,
            normalise: false,
        }
    }
}

impl InputInvariance {
    pub(crate) fn evaluate(
        &self,
        x: ArrayView3<f32>,
        y: usize,
        a: ArrayView2<f32>,
        explainer: &dyn Explainer,
    ) -> Result<Outcome> {
        let preparation = Preparation {
            normalise: self.normalise,
            abs: self.abs,
        };
        let a = preparation.apply(a);
        let shifted = x.mapv(|v| (f64::from(v) + f64::from(self.input_shift)) as f32);
        let explainer = explainer.shifted(self.input_shift)?;
        let a2 = explain_one(explainer.as_ref(), shifted.view(), y, preparation)?;
        let close = a
            .iter()
            .zip(a2.iter())
            .all(|(&p, &q)| f64::from((p - q).abs()) <= self.atol + self.rtol * f64::from(q.abs()));
        Ok(Outcome::score(f64::from(u8::from(close))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::prelude::tract_ndarray::Array2;

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
        fn explain(
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

    #[test]
    fn localisation_on_a_known_map() {
        let a = Array2::from_shape_fn((4, 4), |(r, c)| (r * 4 + c) as f32);
        let mask = Array2::from_shape_fn((4, 4), |(r, _)| r == 3);
        let m = Some(mask.view());
        assert_eq!(PointingGame::default().evaluate(a.view(), m).score, 1.0);
        let rra = RelevanceRankAccuracy::default().evaluate(a.view(), m).score;
        assert_eq!(rra, 1.0);
        let rma = RelevanceMassAccuracy::default().evaluate(a.view(), m).score;
        assert!((rma - (12.0 + 13.0 + 14.0 + 15.0) / 120.0).abs() < 1e-6);
        assert_eq!(Auc::default().evaluate(a.view(), m).score, 1.0);
        let top = TopKIntersection {
            k: 8,
            ..Default::default()
        };
        assert_eq!(top.evaluate(a.view(), m).score, 0.5);
        let empty = Array2::from_elem((4, 4), false);
        assert!(
            PointingGame::default()
                .evaluate(a.view(), Some(empty.view()))
                .score
                .is_nan()
        );
    }

    #[test]
    fn complexity_extremes() {
        let flat_map = Array2::from_elem((8, 8), 1.0f32);
        let mut spike = Array2::from_elem((8, 8), 0.0f32);
        spike[(3, 3)] = 1.0;
        assert!(Sparseness::default().evaluate(flat_map.view()).score.abs() < 1e-6);
        assert!(Sparseness::default().evaluate(spike.view()).score > 0.98);
        assert!((Complexity::default().evaluate(flat_map.view()).score - 64f64.ln()).abs() < 1e-9);
        assert_eq!(Complexity::default().evaluate(spike.view()).score, 0.0);
        assert_eq!(
            EffectiveComplexity::default().evaluate(spike.view()).score,
            1.0
        );
    }
}
