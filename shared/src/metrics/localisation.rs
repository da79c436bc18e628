//! Localisation metrics: how an attribution agrees with a ground-truth mask (PointingGame,
//! AttributionLocalisation, TopKIntersection, RelevanceRankAccuracy, RelevanceMassAccuracy, AUC).

use serde::{Deserialize, Serialize};
use tract_onnx::prelude::tract_ndarray::ArrayView2;

use super::complexity::attribution_only;
use super::registry::declare;
use super::stats::roc_auc;
use super::{Declared, Input, Needs, Outcome, ascending, flat, prepare};
use crate::Result;
use crate::draws::Draws;

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

declare! { PointingGame "PointingGame", better Some(true), MASK, curve false,
valid |_| true, "",
score |m, input, _| Ok(m.evaluate(input.a, input.mask)) }

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

declare! { AttributionLocalisation "AttributionLocalisation", better Some(true), MASK, curve false,
valid |_| true, "",
score |m, input, _| Ok(m.evaluate(input.a, input.mask)) }

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

declare! { TopKIntersection "TopKIntersection", better Some(true), MASK, curve false,
valid |m| m.k >= 1, "k ≥ 1",
score |m, input, _| Ok(m.evaluate(input.a, input.mask)) }

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

declare! { RelevanceRankAccuracy "RelevanceRankAccuracy", better Some(true), MASK, curve false,
valid |_| true, "",
score |m, input, _| Ok(m.evaluate(input.a, input.mask)) }

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

declare! { RelevanceMassAccuracy "RelevanceMassAccuracy", better Some(true), MASK, curve false,
valid |_| true, "",
score |m, input, _| Ok(m.evaluate(input.a, input.mask)) }

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

declare! { Auc "AUC", better Some(true), MASK, curve false,
valid |_| true, "",
score |m, input, _| Ok(m.evaluate(input.a, input.mask)) }

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::prelude::tract_ndarray::Array2;

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
}
