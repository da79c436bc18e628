//! Complexity metrics: how concentrated an attribution is (Sparseness, Complexity,
//! EffectiveComplexity).

use serde::{Deserialize, Serialize};
use tract_onnx::prelude::tract_ndarray::ArrayView2;

use super::registry::declare;
use super::stats::{entropy, gini};
use super::{Declared, Input, Needs, Outcome, prepare};
use crate::Result;
use crate::draws::Draws;

/// A metric whose parameters are its own fields plus `abs` and `normalise` (complexity and
/// localisation metrics).
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

pub(super) use attribution_only;

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

declare! { Sparseness "Sparseness", better Some(true), ATTRIBUTION, curve false,
valid |_| true, "",
score |m, input, _| Ok(m.evaluate(input.a)) }

impl Complexity {
    pub(crate) fn evaluate(&self, a: ArrayView2<f32>) -> Outcome {
        let a = prepare(a, self.normalise, self.abs);
        let values: Vec<f64> = a.iter().map(|&v| f64::from(v)).collect();
        let total: f64 = values.iter().map(|v| v.abs()).sum();
        let shares: Vec<f64> = values.iter().map(|v| v / total).collect();
        Outcome::score(entropy(&shares))
    }
}

declare! { Complexity "Complexity", better Some(false), ATTRIBUTION, curve false,
valid |_| true, "",
score |m, input, _| Ok(m.evaluate(input.a)) }

impl EffectiveComplexity {
    pub(crate) fn evaluate(&self, a: ArrayView2<f32>) -> Outcome {
        let a = prepare(a, self.normalise, self.abs);
        Outcome::score(a.iter().filter(|&&v| f64::from(v) > self.eps).count() as f64)
    }
}

declare! { EffectiveComplexity "EffectiveComplexity", better Some(false), ATTRIBUTION, curve false,
valid |_| true, "",
score |m, input, _| Ok(m.evaluate(input.a)) }

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::prelude::tract_ndarray::Array2;

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
