//! Faithfulness: does removing what the attribution calls relevant change the output? Every
//! perturbed input of an instance is pushed through one [`Batch`], so the model runs on full
//! batches whatever the metric's loop looks like.

use serde::{Deserialize, Serialize};
use tract_onnx::prelude::tract_ndarray::{Array2, Array3, ArrayView2, ArrayView3};

use super::perturb::{Baseline, Filler, noisy_linear_imputation, patch_pixels, replace_pixels};
use super::registry::{check, declare};
use super::stats::{pearson, spearman, trapezoid};
use super::{
    Batch, Declared, Input, Model, Needs, Outcome, argmax, ascending, descending, flat, output_of,
    prepare, sequential_sum_at, sum_at,
};
use crate::draws::Draws;
use crate::segment::SlicConfig;
use crate::{Error, Result};

fn chunks(order: &[usize], step: usize) -> impl Iterator<Item = &[usize]> {
    order.chunks(step)
}

/// FaithfulnessCorrelation (Bhatt et al. 2020).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaithfulnessCorrelation {
    /// Random subsets drawn.
    pub nr_runs: usize,
    /// Pixels per subset.
    pub subset_size: usize,
    /// What removed pixels become.
    pub perturb_baseline: Baseline,
    /// Magnitudes of the attribution.
    pub abs: bool,
    /// Attribution divided by its largest magnitude.
    pub normalise: bool,
    /// Score softmax probabilities instead of logits (Quantus's default for this metric).
    pub softmax: bool,
}

impl Default for FaithfulnessCorrelation {
    fn default() -> Self {
        Self {
            nr_runs: 100,
            subset_size: 224,
            perturb_baseline: Baseline::Black,
            abs: false,
            normalise: true,
            softmax: false,
        }
    }
}

impl FaithfulnessCorrelation {
    pub(crate) fn evaluate(
        &self,
        x: ArrayView3<f32>,
        y: usize,
        a: ArrayView2<f32>,
        model: &dyn Model,
        draws: &mut Draws,
    ) -> Result<Outcome> {
        let a = flat(&prepare(a, self.normalise, self.abs));
        if self.subset_size >= a.len() {
            return Err(Error::Parameter(format!(
                "FaithfulnessCorrelation: subset_size {} must be smaller than the {} pixels",
                self.subset_size,
                a.len()
            )));
        }
        let y_pred = output_of(model, x, y, self.softmax)?;
        let mut filler = Filler::new(self.perturb_baseline);
        let mut batch = Batch::<f64>::output(model, x.dim(), y, self.softmax);
        let mut sums = Vec::with_capacity(self.nr_runs);
        for _ in 0..self.nr_runs {
            let subset = draws.choice(a.len(), self.subset_size);
            let values = filler.values(x, draws);
            batch.push_replaced(x, &subset, &values)?;
            sums.push(sum_at(&a, &subset));
        }
        let deltas: Vec<f64> = batch.finish()?.iter().map(|p| y_pred - p).collect();
        Ok(Outcome {
            score: pearson(&sums, &deltas),
            curve: deltas,
            sums,
        })
    }
}

declare! { FaithfulnessCorrelation "FaithfulnessCorrelation", better Some(true), MODEL, curve false,
valid |m| (2..=100_000).contains(&m.nr_runs) && m.subset_size >= 1, "nr_runs 2..=100000 and subset_size ≥ 1",
score |m, input, draws| m.evaluate(input.x, input.y, input.a, input.model, draws) }

/// FaithfulnessEstimate (Alvarez-Melis & Jaakkola 2018).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaithfulnessEstimate {
    /// Pixels removed together (chunks in order of decreasing attribution).
    pub features_in_step: usize,
    /// What removed pixels become.
    pub perturb_baseline: Baseline,
    /// Magnitudes of the attribution.
    pub abs: bool,
    /// Attribution divided by its largest magnitude.
    pub normalise: bool,
    /// Score softmax probabilities instead of logits (Quantus's default for this metric).
    pub softmax: bool,
}

impl Default for FaithfulnessEstimate {
    fn default() -> Self {
        Self {
            features_in_step: 1,
            perturb_baseline: Baseline::Black,
            abs: false,
            normalise: true,
            softmax: false,
        }
    }
}

impl FaithfulnessEstimate {
    pub(crate) fn evaluate(
        &self,
        x: ArrayView3<f32>,
        y: usize,
        a: ArrayView2<f32>,
        model: &dyn Model,
        draws: &mut Draws,
    ) -> Result<Outcome> {
        let a = flat(&prepare(a, self.normalise, self.abs));
        let order = descending(&a);
        let y_pred = output_of(model, x, y, self.softmax)?;
        let mut filler = Filler::new(self.perturb_baseline);
        let mut batch = Batch::<f64>::output(model, x.dim(), y, self.softmax);
        let mut sums = Vec::new();
        for chunk in chunks(&order, self.features_in_step) {
            let values = filler.values(x, draws);
            batch.push_replaced(x, chunk, &values)?;
            sums.push(sum_at(&a, chunk));
        }
        let deltas: Vec<f64> = batch.finish()?.iter().map(|p| y_pred - p).collect();
        Ok(Outcome {
            score: pearson(&sums, &deltas),
            curve: deltas,
            sums,
        })
    }
}

declare! { FaithfulnessEstimate "FaithfulnessEstimate", better Some(true), MODEL, curve false,
valid |m| m.features_in_step >= 1, "features_in_step ≥ 1",
score |m, input, draws| m.evaluate(input.x, input.y, input.a, input.model, draws) }

/// MonotonicityArya (Arya et al. 2019): start from the baseline image, put the input's pixels
/// back chunk by chunk in order of increasing attribution; 1 if the output never falls.
/// Quantus 0.5.3 writes the baseline over the baseline (so its score is always 1 for a constant
/// baseline); this puts the input's own values back, as the definition says.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MonotonicityArya {
    /// Pixels added together.
    pub features_in_step: usize,
    /// The image pixels are added to.
    pub perturb_baseline: Baseline,
    /// Magnitudes of the attribution.
    pub abs: bool,
    /// Attribution divided by its largest magnitude.
    pub normalise: bool,
    /// Score softmax probabilities instead of logits (Quantus's default for this metric).
    pub softmax: bool,
}

impl Default for MonotonicityArya {
    fn default() -> Self {
        Self {
            features_in_step: 1,
            perturb_baseline: Baseline::Black,
            abs: true,
            normalise: true,
            softmax: true,
        }
    }
}

impl MonotonicityArya {
    pub(crate) fn evaluate(
        &self,
        x: ArrayView3<f32>,
        y: usize,
        a: ArrayView2<f32>,
        model: &dyn Model,
        draws: &mut Draws,
    ) -> Result<Outcome> {
        let a = flat(&prepare(a, self.normalise, self.abs));
        let order = ascending(&a);
        // Quantus draws a whole image of uniforms for the starting baseline.
        let noise = draws.uniform(0.0, 1.0, x.len());
        let mut current = match self.perturb_baseline {
            Baseline::Uniform => {
                Array3::from_shape_vec(x.dim(), noise.iter().map(|&v| v as f32).collect())
                    .map_err(|e| Error::Inference(e.to_string()))?
            }
            baseline => {
                let value = baseline.values(x, &mut Draws::new(0))[0];
                Array3::from_elem(x.dim(), value)
            }
        };
        let width = x.dim().2;
        let mut batch = Batch::<f64>::output(model, x.dim(), y, self.softmax);
        for chunk in chunks(&order, self.features_in_step) {
            for c in 0..x.dim().0 {
                for &p in chunk {
                    current[(c, p / width, p % width)] = x[(c, p / width, p % width)];
                }
            }
            batch.push(current.view())?;
        }
        let preds = batch.finish()?;
        let monotone = preds.windows(2).all(|w| w[1] - w[0] >= 0.0);
        Ok(Outcome::with_curve(f64::from(u8::from(monotone)), preds))
    }
}

declare! { MonotonicityArya "MonotonicityArya", better Some(true), MODEL, curve true,
valid |m| m.features_in_step >= 1, "features_in_step ≥ 1",
score |m, input, draws| m.evaluate(input.x, input.y, input.a, input.model, draws) }

/// MonotonicityCorrelation (Nguyen & Martínez 2020).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MonotonicityCorrelation {
    /// Perturbations per chunk.
    pub nr_samples: usize,
    /// Pixels perturbed together (chunks in order of increasing attribution).
    pub features_in_step: usize,
    /// What perturbed pixels become (redrawn per sample when random).
    pub perturb_baseline: Baseline,
    /// Outputs this close to zero are not inverted.
    pub eps: f64,
    /// Magnitudes of the attribution.
    pub abs: bool,
    /// Attribution divided by its largest magnitude.
    pub normalise: bool,
    /// Score softmax probabilities instead of logits (Quantus's default for this metric).
    pub softmax: bool,
}

impl Default for MonotonicityCorrelation {
    fn default() -> Self {
        Self {
            nr_samples: 100,
            features_in_step: 1,
            perturb_baseline: Baseline::Uniform,
            eps: 1e-5,
            abs: true,
            normalise: true,
            softmax: true,
        }
    }
}

impl MonotonicityCorrelation {
    pub(crate) fn evaluate(
        &self,
        x: ArrayView3<f32>,
        y: usize,
        a: ArrayView2<f32>,
        model: &dyn Model,
        draws: &mut Draws,
    ) -> Result<Outcome> {
        let y_pred = output_of(model, x, y, self.softmax)?;
        let inverse = if y_pred.abs() < self.eps {
            1.0
        } else {
            1.0 / y_pred.abs()
        };
        let inverse = inverse * inverse;
        let a = flat(&prepare(a, self.normalise, self.abs));
        let order = ascending(&a);
        let mut filler = Filler::new(self.perturb_baseline);
        let mut batch = Batch::<f64>::output(model, x.dim(), y, self.softmax);
        let mut sums = Vec::new();
        for chunk in chunks(&order, self.features_in_step) {
            for _ in 0..self.nr_samples {
                let values = filler.values(x, draws);
                batch.push_replaced(x, chunk, &values)?;
            }
            sums.push(sequential_sum_at(&a, chunk));
        }
        let preds = batch.finish()?;
        let variances: Vec<f64> = preds
            .chunks(self.nr_samples)
            .map(|p| p.iter().map(|v| (v - y_pred).powi(2)).sum::<f64>() / p.len() as f64 * inverse)
            .collect();
        Ok(Outcome {
            score: spearman(&sums, &variances),
            curve: variances,
            sums,
        })
    }
}

declare! { MonotonicityCorrelation "MonotonicityCorrelation", better Some(true), MODEL, curve false,
valid |m| m.features_in_step >= 1 && (1..=10_000).contains(&m.nr_samples), "features_in_step ≥ 1 and nr_samples 1..=10000",
score |m, input, draws| m.evaluate(input.x, input.y, input.a, input.model, draws) }

/// PixelFlipping (Bach et al. 2015): score = area under the output curve (lower = more
/// faithful), the curve kept for plots.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PixelFlipping {
    /// Pixels removed per step.
    pub features_in_step: usize,
    /// What removed pixels become.
    pub perturb_baseline: Baseline,
    /// Magnitudes of the attribution.
    pub abs: bool,
    /// Attribution divided by its largest magnitude.
    pub normalise: bool,
    /// Score softmax probabilities instead of logits (Quantus's default for this metric).
    pub softmax: bool,
}

impl Default for PixelFlipping {
    fn default() -> Self {
        Self {
            features_in_step: 1,
            perturb_baseline: Baseline::Black,
            abs: false,
            normalise: true,
            softmax: true,
        }
    }
}

/// Remove `order` cumulatively in chunks of `step` (at most `limit` chunks), one model input per
/// chunk; the per-chunk attribution sums come back too.
fn flip_cumulatively(
    x: ArrayView3<f32>,
    a: &[f32],
    order: &[usize],
    (step, limit): (usize, usize),
    baseline: Baseline,
    batch: &mut Batch<f64>,
    draws: &mut Draws,
) -> Result<Vec<f64>> {
    let mut current = x.to_owned();
    let mut filler = Filler::new(baseline);
    let mut sums = Vec::new();
    for chunk in chunks(order, step).take(limit) {
        let values = filler.values(current.view(), draws);
        replace_pixels(&mut current, chunk, &values);
        batch.push(current.view())?;
        sums.push(sum_at(a, chunk));
    }
    Ok(sums)
}

impl PixelFlipping {
    pub(crate) fn evaluate(
        &self,
        x: ArrayView3<f32>,
        y: usize,
        a: ArrayView2<f32>,
        model: &dyn Model,
        draws: &mut Draws,
    ) -> Result<Outcome> {
        let a = flat(&prepare(a, self.normalise, self.abs));
        let order = descending(&a);
        let mut batch = Batch::<f64>::output(model, x.dim(), y, self.softmax);
        let step = (self.features_in_step, usize::MAX);
        let sums = flip_cumulatively(
            x,
            &a,
            &order,
            step,
            self.perturb_baseline,
            &mut batch,
            draws,
        )?;
        let curve = batch.finish()?;
        Ok(Outcome {
            score: trapezoid(&curve),
            curve,
            sums,
        })
    }
}

declare! { PixelFlipping "PixelFlipping", better Some(false), MODEL, curve true,
valid |m| m.features_in_step >= 1, "features_in_step ≥ 1",
score |m, input, draws| m.evaluate(input.x, input.y, input.a, input.model, draws) }

/// SensitivityN (Ancona et al. 2018): per instance the chunk sums and output drops as pixels
/// are removed cumulatively; the score of a set of instances is the mean, over the number of
/// removed chunks, of the Pearson correlation across instances (computed once all are scored).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SensitivityN {
    /// Share of the pixels up to which the correlation is taken.
    pub n_max_percentage: f64,
    /// Pixels removed per step.
    pub features_in_step: usize,
    /// What removed pixels become.
    pub perturb_baseline: Baseline,
    /// Magnitudes of the attribution.
    pub abs: bool,
    /// Attribution divided by its largest magnitude.
    pub normalise: bool,
    /// Score softmax probabilities instead of logits (Quantus's default for this metric).
    pub softmax: bool,
}

impl Default for SensitivityN {
    fn default() -> Self {
        Self {
            n_max_percentage: 0.8,
            features_in_step: 1,
            perturb_baseline: Baseline::Black,
            abs: false,
            normalise: true,
            softmax: true,
        }
    }
}

impl SensitivityN {
    fn max_steps(&self, pixels: usize) -> usize {
        ((self.n_max_percentage * pixels as f64).floor() as usize) / self.features_in_step
    }

    pub(crate) fn evaluate(
        &self,
        x: ArrayView3<f32>,
        y: usize,
        a: ArrayView2<f32>,
        model: &dyn Model,
        draws: &mut Draws,
    ) -> Result<Outcome> {
        let a = flat(&prepare(a, self.normalise, self.abs));
        let order = descending(&a);
        let y_pred = output_of(model, x, y, self.softmax)?;
        let mut batch = Batch::<f64>::output(model, x.dim(), y, self.softmax);
        // Quantus flips every pixel but correlates only the first `max_steps` steps.
        let step = (self.features_in_step, self.max_steps(a.len()));
        let sums = flip_cumulatively(
            x,
            &a,
            &order,
            step,
            self.perturb_baseline,
            &mut batch,
            draws,
        )?;
        let deltas: Vec<f64> = batch.finish()?.iter().map(|p| y_pred - p).collect();
        Ok(Outcome {
            score: f64::NAN,
            curve: deltas,
            sums,
        })
    }

    /// Per step, the correlation across instances; every instance gets their mean.
    pub(crate) fn finish(&self, outcomes: &mut [Outcome]) {
        let steps = outcomes.iter().map(|o| o.curve.len()).min().unwrap_or(0);
        let correlations: Vec<f64> = (0..steps)
            .map(|k| {
                let sums: Vec<f64> = outcomes.iter().map(|o| o.sums[k]).collect();
                let deltas: Vec<f64> = outcomes.iter().map(|o| o.curve[k]).collect();
                pearson(&sums, &deltas)
            })
            .collect();
        let score = correlations.iter().sum::<f64>() / correlations.len() as f64;
        for outcome in outcomes {
            outcome.score = score;
        }
    }
}

impl Declared for SensitivityN {
    const NAME: &'static str = "SensitivityN";
    const HIGHER_IS_BETTER: Option<bool> = Some(true);
    const NEEDS: Needs = Needs::MODEL;
    fn validate(&self) -> Result<()> {
        check(
            self.features_in_step >= 1
                && self.n_max_percentage > 0.0
                && self.n_max_percentage <= 1.0,
            Self::NAME,
            "features_in_step ≥ 1 and n_max_percentage in (0, 1]",
        )
    }
    fn score(&self, input: &Input, draws: &mut Draws) -> Result<Outcome> {
        self.evaluate(input.x, input.y, input.a, input.model, draws)
    }

    fn finish(&self, outcomes: &mut [Outcome]) {
        SensitivityN::finish(self, outcomes);
    }
}

/// Top-left corners of the patches of `patch` pixels (one per pixel, clipped at the far edges)
/// ordered by their attribution sums (`reverse` = largest first, ties latest index first, as
/// NumPy's `argsort(...)[::-1]`), then greedily kept when they do not overlap a kept one
/// (overlap judged on the unclipped squares, as Quantus does on its padded array).
fn patches_in_order(
    a: &Array2<f32>,
    patch: usize,
    limit: usize,
    order: PatchOrder,
    draws: &mut Draws,
) -> Vec<(usize, usize)> {
    let (height, width) = a.dim();
    // 2-D prefix sums of the map.
    let mut prefix = vec![0.0f64; (height + 1) * (width + 1)];
    for r in 0..height {
        for c in 0..width {
            prefix[(r + 1) * (width + 1) + c + 1] = f64::from(a[(r, c)])
                + prefix[r * (width + 1) + c + 1]
                + prefix[(r + 1) * (width + 1) + c]
                - prefix[r * (width + 1) + c];
        }
    }
    let window = |r: usize, c: usize| {
        let (r1, c1) = ((r + patch).min(height), (c + patch).min(width));
        prefix[r1 * (width + 1) + c1] - prefix[r * (width + 1) + c1] - prefix[r1 * (width + 1) + c]
            + prefix[r * (width + 1) + c]
    };
    let sums: Vec<f64> = (0..height * width)
        .map(|p| window(p / width, p % width))
        .collect();
    let ordered: Vec<usize> = match order {
        PatchOrder::Random => draws.permutation(sums.len()),
        PatchOrder::Lerf | PatchOrder::Morf => {
            let mut idx: Vec<usize> = (0..sums.len()).collect();
            idx.sort_by(|&i, &j| sums[i].total_cmp(&sums[j]).then(i.cmp(&j)));
            if order == PatchOrder::Morf {
                idx.reverse();
            }
            idx
        }
    };
    let span = height + patch;
    let span_w = width + patch;
    let mut blocked = vec![false; span * span_w];
    let mut kept = Vec::new();
    for p in ordered {
        let (r, c) = (p / width, p % width);
        let free = (r..r + patch).all(|rr| (c..c + patch).all(|cc| !blocked[rr * span_w + cc]));
        if free {
            for rr in r..r + patch {
                for cc in c..c + patch {
                    blocked[rr * span_w + cc] = true;
                }
            }
            kept.push((r, c));
            if kept.len() >= limit {
                break;
            }
        }
    }
    kept
}

/// The order in which RegionPerturbation removes patches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PatchOrder {
    /// Most relevant first.
    Morf,
    /// Least relevant first.
    Lerf,
    /// Shuffled.
    Random,
}

/// Remove patches cumulatively, one model input per patch.
fn remove_patches(
    x: ArrayView3<f32>,
    patches: &[(usize, usize)],
    patch: usize,
    baseline: Baseline,
    batch: &mut Batch<f64>,
    draws: &mut Draws,
) -> Result<()> {
    let (_, height, width) = x.dim();
    let mut current = x.to_owned();
    let mut filler = Filler::new(baseline);
    for &(r, c) in patches {
        let values = filler.patch_values(current.view(), patch - 1, draws);
        replace_pixels(
            &mut current,
            &patch_pixels(height, width, r, c, patch),
            &values,
        );
        batch.push(current.view())?;
    }
    Ok(())
}

/// RegionPerturbation (Samek et al. 2015): score = area under the output-drop curve.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegionPerturbation {
    /// Side of the square patches.
    pub patch_size: usize,
    /// Which patches go first.
    pub order: PatchOrder,
    /// Patches removed.
    pub regions_evaluation: usize,
    /// What removed pixels become.
    pub perturb_baseline: Baseline,
    /// Magnitudes of the attribution.
    pub abs: bool,
    /// Attribution divided by its largest magnitude.
    pub normalise: bool,
    /// Score softmax probabilities instead of logits (Quantus's default for this metric).
    pub softmax: bool,
}

impl Default for RegionPerturbation {
    fn default() -> Self {
        Self {
            patch_size: 8,
            order: PatchOrder::Morf,
            regions_evaluation: 100,
            perturb_baseline: Baseline::Black,
            abs: false,
            normalise: true,
            softmax: true,
        }
    }
}

impl RegionPerturbation {
    pub(crate) fn evaluate(
        &self,
        x: ArrayView3<f32>,
        y: usize,
        a: ArrayView2<f32>,
        model: &dyn Model,
        draws: &mut Draws,
    ) -> Result<Outcome> {
        let a = prepare(a, self.normalise, self.abs);
        let y_pred = output_of(model, x, y, self.softmax)?;
        let patches = patches_in_order(
            &a,
            self.patch_size,
            self.regions_evaluation,
            self.order,
            draws,
        );
        let mut batch = Batch::<f64>::output(model, x.dim(), y, self.softmax);
        remove_patches(
            x,
            &patches,
            self.patch_size,
            self.perturb_baseline,
            &mut batch,
            draws,
        )?;
        let curve: Vec<f64> = batch.finish()?.iter().map(|p| y_pred - p).collect();
        Ok(Outcome::with_curve(trapezoid(&curve), curve))
    }
}

declare! { RegionPerturbation "RegionPerturbation", better Some(true), MODEL, curve true,
valid |m| m.patch_size >= 1 && m.regions_evaluation >= 1, "patch_size and regions_evaluation ≥ 1",
score |m, input, draws| m.evaluate(input.x, input.y, input.a, input.model, draws) }

/// Selectivity (Montavon et al. 2018): score = area under the output curve as every
/// non-overlapping patch is removed, most relevant first (lower = more faithful).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Selectivity {
    /// Side of the square patches.
    pub patch_size: usize,
    /// What removed pixels become.
    pub perturb_baseline: Baseline,
    /// Magnitudes of the attribution.
    pub abs: bool,
    /// Attribution divided by its largest magnitude.
    pub normalise: bool,
    /// Score softmax probabilities instead of logits (Quantus's default for this metric).
    pub softmax: bool,
}

impl Default for Selectivity {
    fn default() -> Self {
        Self {
            patch_size: 8,
            perturb_baseline: Baseline::Black,
            abs: false,
            normalise: true,
            softmax: true,
        }
    }
}

impl Selectivity {
    pub(crate) fn evaluate(
        &self,
        x: ArrayView3<f32>,
        y: usize,
        a: ArrayView2<f32>,
        model: &dyn Model,
        draws: &mut Draws,
    ) -> Result<Outcome> {
        let a = prepare(a, self.normalise, self.abs);
        output_of(model, x, y, self.softmax)?;
        let patches = patches_in_order(&a, self.patch_size, usize::MAX, PatchOrder::Morf, draws);
        let mut batch = Batch::<f64>::output(model, x.dim(), y, self.softmax);
        remove_patches(
            x,
            &patches,
            self.patch_size,
            self.perturb_baseline,
            &mut batch,
            draws,
        )?;
        let curve = batch.finish()?;
        Ok(Outcome::with_curve(trapezoid(&curve), curve))
    }
}

declare! { Selectivity "Selectivity", better Some(false), MODEL, curve true,
valid |m| m.patch_size >= 1, "patch_size ≥ 1",
score |m, input, draws| m.evaluate(input.x, input.y, input.a, input.model, draws) }

/// IROF (Rieger & Hansen 2020): SLIC superpixels of the input (scikit-image defaults), removed
/// cumulatively in order of mean attribution; score = area over the curve of output ratios.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Irof {
    /// The superpixels.
    pub segmentation: SlicConfig,
    /// What removed segments become.
    pub perturb_baseline: Baseline,
    /// Magnitudes of the attribution.
    pub abs: bool,
    /// Attribution divided by its largest magnitude.
    pub normalise: bool,
    /// Score softmax probabilities instead of logits (Quantus's default for this metric).
    pub softmax: bool,
}

impl Default for Irof {
    fn default() -> Self {
        Self {
            segmentation: SlicConfig::default(),
            perturb_baseline: Baseline::Mean,
            abs: false,
            normalise: true,
            softmax: true,
        }
    }
}

impl Irof {
    pub(crate) fn evaluate(
        &self,
        x: ArrayView3<f32>,
        y: usize,
        a: ArrayView2<f32>,
        model: &dyn Model,
        draws: &mut Draws,
    ) -> Result<Outcome> {
        let a = flat(&prepare(a, self.normalise, self.abs));
        let y_pred = output_of(model, x, y, self.softmax)?;
        let (channels, height, width) = x.dim();
        let mut pixels = Vec::with_capacity(height * width * channels);
        for r in 0..height {
            for c in 0..width {
                for ch in 0..channels {
                    pixels.push(f64::from(x[(ch, r, c)]));
                }
            }
        }
        let segmentation = self
            .segmentation
            .segment_float(height, width, channels, &pixels)?;
        let count = segmentation.count();
        if count <= 1 {
            return Err(Error::Parameter(format!(
                "IROF: the input has {count} superpixel; at least 2 are needed"
            )));
        }
        let mut members: Vec<Vec<usize>> = vec![Vec::new(); count];
        for (p, &label) in segmentation.labels().iter().enumerate() {
            members[label as usize].push(p);
        }
        let means: Vec<f32> = members
            .iter()
            .map(|m| (sum_at(&a, m) / m.len() as f64) as f32)
            .collect();
        let order = descending(&means);
        let mut current = x.to_owned();
        let mut filler = Filler::new(self.perturb_baseline);
        let mut batch = Batch::<f64>::output(model, x.dim(), y, self.softmax);
        for &segment in &order {
            let values = filler.values(current.view(), draws);
            replace_pixels(&mut current, &members[segment], &values);
            batch.push(current.view())?;
        }
        let curve: Vec<f64> = batch.finish()?.iter().map(|p| p / y_pred).collect();
        Ok(Outcome::with_curve(
            curve.len() as f64 - trapezoid(&curve),
            curve,
        ))
    }
}

declare! { Irof "IROF", better Some(true), MODEL, curve true,
valid |_| true, "",
score |m, input, draws| m.evaluate(input.x, input.y, input.a, input.model, draws) }

/// Infidelity (Yeh et al. 2019), as Quantus 0.5.3 computes it: square patches perturbed
/// cumulatively on a grid (each patch ends at its grid corner: Quantus places patch corners on
/// its edge-padded array without the offset), and the attribution side of each step is
/// Quantus's `sum(dot(repeat(a, C), x − x'))`, which is `C · Σⱼ (column sum of a)ⱼ ·
/// (row sum of x − x' over channels and columns)ⱼ`. Deterministic baselines give identical
/// samples, which are then computed once.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Infidelity {
    /// Patch sides (one pass each, averaged).
    pub perturb_patch_sizes: Vec<usize>,
    /// Repetitions (averaged).
    pub n_perturb_samples: usize,
    /// What perturbed pixels become.
    pub perturb_baseline: Baseline,
    /// Magnitudes of the attribution.
    pub abs: bool,
    /// Attribution divided by its largest magnitude.
    pub normalise: bool,
    /// Score softmax probabilities instead of logits (Quantus's default for this metric).
    pub softmax: bool,
}

impl Default for Infidelity {
    fn default() -> Self {
        Self {
            perturb_patch_sizes: vec![4],
            n_perturb_samples: 10,
            perturb_baseline: Baseline::Black,
            abs: false,
            normalise: false,
            softmax: false,
        }
    }
}

impl Infidelity {
    pub(crate) fn evaluate(
        &self,
        x: ArrayView3<f32>,
        y: usize,
        a: ArrayView2<f32>,
        model: &dyn Model,
        draws: &mut Draws,
    ) -> Result<Outcome> {
        let a = prepare(a, self.normalise, self.abs);
        let (channels, height, width) = x.dim();
        let column_sums: Vec<f64> = (0..width)
            .map(|j| (0..height).map(|i| f64::from(a[(i, j)])).sum())
            .collect();
        let y_pred = output_of(model, x, y, self.softmax)?;
        let random = self.perturb_baseline == Baseline::Uniform;
        let passes = if random { self.n_perturb_samples } else { 1 };
        let mut batch = Batch::<f64>::output(model, x.dim(), y, self.softmax);
        let mut attribution_sides = Vec::new();
        for _ in 0..passes {
            for &patch in &self.perturb_patch_sizes {
                let mut current = x.to_owned();
                let mut filler = Filler::new(self.perturb_baseline);
                for top in (0..height).step_by(patch) {
                    for left in (0..width).step_by(patch) {
                        let values = filler.patch_values(current.view(), patch - 1, draws);
                        let (r0, c0) = (
                            (top + 1).saturating_sub(patch),
                            (left + 1).saturating_sub(patch),
                        );
                        let size_r = top + 1 - r0;
                        let size_c = left + 1 - c0;
                        let mut pixels = Vec::with_capacity(size_r * size_c);
                        for r in r0..=top {
                            for c in c0..=left {
                                pixels.push(r * width + c);
                            }
                        }
                        replace_pixels(&mut current, &pixels, &values);
                        batch.push(current.view())?;
                        let side: f64 = (0..height)
                            .map(|j| {
                                let row_sum: f64 = (0..channels)
                                    .flat_map(|ch| (0..width).map(move |m| (ch, m)))
                                    .map(|(ch, m)| f64::from(x[(ch, j, m)] - current[(ch, j, m)]))
                                    .sum();
                                column_sums.get(j).copied().unwrap_or(0.0) * row_sum
                            })
                            .sum::<f64>()
                            * channels as f64;
                        attribution_sides.push(side);
                    }
                }
            }
        }
        let preds = batch.finish()?;
        let mut losses = Vec::new();
        let mut offset = 0;
        for _ in 0..passes {
            let mut pass = Vec::new();
            for &patch in &self.perturb_patch_sizes {
                let steps = height.div_ceil(patch) * width.div_ceil(patch);
                let mse = (offset..offset + steps)
                    .map(|i| ((y_pred - preds[i]) - attribution_sides[i]).powi(2))
                    .sum::<f64>()
                    / steps as f64;
                pass.push(mse);
                offset += steps;
            }
            losses.push(pass.iter().sum::<f64>() / pass.len() as f64);
        }
        Ok(Outcome::score(
            losses.iter().sum::<f64>() / losses.len() as f64,
        ))
    }
}

declare! { Infidelity "Infidelity", better Some(false), MODEL, curve true,
valid |m| !m.perturb_patch_sizes.is_empty() && m.perturb_patch_sizes.iter().all(|&p| p >= 1) && (1..=1000).contains(&m.n_perturb_samples), "perturb_patch_sizes ≥ 1 and n_perturb_samples 1..=1000",
score |m, input, draws| m.evaluate(input.x, input.y, input.a, input.model, draws) }

/// ROAD (Rong et al. 2022): for each percentage, the most relevant pixels are replaced by noisy
/// linear imputation from their neighbours; 1 where the class survives. Score = their mean.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Road {
    /// Shares of pixels imputed, in percent.
    pub percentages: Vec<f64>,
    /// Standard deviation of the noise added to imputed values.
    pub noise: f64,
    /// Magnitudes of the attribution.
    pub abs: bool,
    /// Attribution divided by its largest magnitude.
    pub normalise: bool,
}

impl Default for Road {
    fn default() -> Self {
        Self {
            percentages: (1..100).step_by(2).map(f64::from).collect(),
            noise: 0.01,
            abs: false,
            normalise: true,
        }
    }
}

impl Road {
    pub(crate) fn evaluate(
        &self,
        x: ArrayView3<f32>,
        y: usize,
        a: ArrayView2<f32>,
        model: &dyn Model,
        draws: &mut Draws,
    ) -> Result<Outcome> {
        let a = flat(&prepare(a, self.normalise, self.abs));
        let mut order = ascending(&a);
        order.reverse();
        let mut batch = Batch::new(model, x.dim(), |row| argmax(row.iter().copied()));
        for &percentage in &self.percentages {
            let k = (a.len() as f64 * percentage / 100.0) as usize;
            let imputed = noisy_linear_imputation(x, &order[..k], self.noise, draws)?;
            batch.push(imputed.view())?;
        }
        let curve: Vec<f64> = batch
            .finish()?
            .into_iter()
            .map(|class| f64::from(u8::from(class == y)))
            .collect();
        Ok(Outcome::with_curve(
            curve.iter().sum::<f64>() / curve.len() as f64,
            curve,
        ))
    }
}

declare! { Road "ROAD", better Some(true), MODEL, curve true,
valid |m| !m.percentages.is_empty() && m.percentages.iter().all(|p| (0.0..=100.0).contains(p)), "percentages in 0..=100",
score |m, input, draws| m.evaluate(input.x, input.y, input.a, input.model, draws) }

/// RISE's normalised area: the trapezoid area divided by the number of steps.
fn rise_area(curve: &[f64]) -> f64 {
    trapezoid(curve) / (curve.len().max(2) - 1) as f64
}

/// Deletion (Petsiuk et al. 2018): the target's probability as pixels are removed, `step` at a
/// time, most relevant first, from the input to a fully removed one; score = normalised area
/// (lower = more faithful).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Deletion {
    /// Pixels removed per step.
    pub step: usize,
    /// What removed pixels become.
    pub perturb_baseline: Baseline,
    /// Magnitudes of the attribution.
    pub abs: bool,
    /// Attribution divided by its largest magnitude.
    pub normalise: bool,
    /// Score softmax probabilities instead of logits (Quantus's default for this metric).
    pub softmax: bool,
}

impl Default for Deletion {
    fn default() -> Self {
        Self {
            step: 224,
            perturb_baseline: Baseline::Black,
            abs: false,
            normalise: true,
            softmax: true,
        }
    }
}

impl Deletion {
    pub(crate) fn evaluate(
        &self,
        x: ArrayView3<f32>,
        y: usize,
        a: ArrayView2<f32>,
        model: &dyn Model,
        draws: &mut Draws,
    ) -> Result<Outcome> {
        let a = flat(&prepare(a, self.normalise, self.abs));
        let order = descending(&a);
        let mut batch = Batch::<f64>::output(model, x.dim(), y, self.softmax);
        batch.push(x)?;
        let step = (self.step, usize::MAX);
        flip_cumulatively(
            x,
            &a,
            &order,
            step,
            self.perturb_baseline,
            &mut batch,
            draws,
        )?;
        let curve = batch.finish()?;
        Ok(Outcome::with_curve(rise_area(&curve), curve))
    }
}

declare! { Deletion "Deletion", better Some(false), MODEL, curve true,
valid |m| m.step >= 1, "step ≥ 1",
score |m, input, draws| m.evaluate(input.x, input.y, input.a, input.model, draws) }

/// Insertion (Petsiuk et al. 2018): the target's probability as the input's pixels are put
/// into the baseline image, `step` at a time, most relevant first; score = normalised area
/// (higher = more faithful).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Insertion {
    /// Pixels inserted per step.
    pub step: usize,
    /// The image pixels are inserted into.
    pub perturb_baseline: Baseline,
    /// Magnitudes of the attribution.
    pub abs: bool,
    /// Attribution divided by its largest magnitude.
    pub normalise: bool,
    /// Score softmax probabilities instead of logits (Quantus's default for this metric).
    pub softmax: bool,
}

impl Default for Insertion {
    fn default() -> Self {
        Self {
            step: 224,
            perturb_baseline: Baseline::Black,
            abs: false,
            normalise: true,
            softmax: true,
        }
    }
}

impl Insertion {
    pub(crate) fn evaluate(
        &self,
        x: ArrayView3<f32>,
        y: usize,
        a: ArrayView2<f32>,
        model: &dyn Model,
        draws: &mut Draws,
    ) -> Result<Outcome> {
        let a = flat(&prepare(a, self.normalise, self.abs));
        let order = descending(&a);
        let values = self.perturb_baseline.values(x, draws);
        let (channels, _, width) = x.dim();
        let mut current = x.to_owned();
        for (c, &value) in values.iter().enumerate().take(channels) {
            current
                .index_axis_mut(tract_onnx::prelude::tract_ndarray::Axis(0), c)
                .fill(value);
        }
        let mut batch = Batch::<f64>::output(model, x.dim(), y, self.softmax);
        batch.push(current.view())?;
        for chunk in chunks(&order, self.step) {
            for c in 0..channels {
                for &p in chunk {
                    current[(c, p / width, p % width)] = x[(c, p / width, p % width)];
                }
            }
            batch.push(current.view())?;
        }
        let curve = batch.finish()?;
        Ok(Outcome::with_curve(rise_area(&curve), curve))
    }
}

declare! { Insertion "Insertion", better Some(true), MODEL, curve true,
valid |m| m.step >= 1, "step ≥ 1",
score |m, input, draws| m.evaluate(input.x, input.y, input.a, input.model, draws) }
