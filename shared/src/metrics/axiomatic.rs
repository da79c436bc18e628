//! Axiomatic metrics: whether an attribution satisfies an axiom (Completeness,
//! NonSensitivity, InputInvariance).

use serde::{Deserialize, Serialize};
use tract_onnx::prelude::tract_ndarray::{Array3, ArrayView2, ArrayView3};

use super::perturb::Baseline;
use super::registry::declare;
use super::{
    Batch, Declared, Explainer, Input, Model, Needs, Outcome, Preparation, flat, map_one,
    output_of, prepare,
};
use crate::Result;
use crate::draws::Draws;

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

declare! { Completeness "Completeness", better Some(true), MODEL, curve false,
valid |_| true, "",
score |m, input, draws| m.evaluate(input.x, input.y, input.a, input.model, draws) }

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

declare! { NonSensitivity "NonSensitivity", better Some(false), MODEL, curve false,
valid |m| m.features_in_step >= 1 && (1..=10_000).contains(&m.n_samples), "features_in_step ≥ 1 and n_samples 1..=10000",
score |m, input, draws| m.evaluate(input.x, input.y, input.a, input.model, draws) }

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
        let a2 = map_one(explainer.as_ref(), shifted.view(), y, preparation)?;
        let close = a
            .iter()
            .zip(a2.iter())
            .all(|(&p, &q)| f64::from((p - q).abs()) <= self.atol + self.rtol * f64::from(q.abs()));
        Ok(Outcome::score(f64::from(u8::from(close))))
    }
}

declare! { InputInvariance "InputInvariance", better Some(true), EXPLAINER, curve false,
valid |_| true, "",
score |m, input, _| m.evaluate(input.x, input.y, input.a, input.explainer()?) }
