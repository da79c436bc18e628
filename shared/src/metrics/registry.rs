//! The metric registry: each metric's type declares what it is beside its code
//! ([`Declared`]: Quantus's name, the better direction, what it needs, whether it draws a
//! perturbation curve, its parameter checks and how it scores), and `metrics!` in `mod.rs` — the
//! one list of metrics — makes the [`Metric`](super::Metric) enum and every lookup from them.

use serde::Serialize;
use serde::de::DeserializeOwned;
use tract_onnx::prelude::tract_ndarray::{ArrayView2, ArrayView3};

use super::{Explainer, Model, Outcome};
use crate::draws::Draws;
use crate::{Error, Result};

/// What a metric needs besides the instance's input and attribution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Needs {
    /// Model calls.
    pub model: bool,
    /// Re-explanations of perturbed inputs.
    pub explainer: bool,
    /// A ground-truth mask.
    pub mask: bool,
}

impl Needs {
    const fn of(model: bool, explainer: bool, mask: bool) -> Self {
        Self {
            model,
            explainer,
            mask,
        }
    }

    /// The attribution alone (complexity).
    pub const ATTRIBUTION: Self = Self::of(false, false, false);
    /// Model calls on perturbed inputs (faithfulness, axiomatic).
    pub const MODEL: Self = Self::of(true, false, false);
    /// Model calls and re-explanations (robustness, randomisation).
    pub const EXPLAINER: Self = Self::of(true, true, false);
    /// A ground-truth mask (localisation).
    pub const MASK: Self = Self::of(false, false, true);
}

/// One instance as a metric scores it: `x`, the target `y`, the attribution `a`, the mask
/// (present when the metric needs one), the model and the explainer.
pub struct Input<'a> {
    /// The model input.
    pub x: ArrayView3<'a, f32>,
    /// The explained class.
    pub y: usize,
    /// The raw attribution.
    pub a: ArrayView2<'a, f32>,
    /// The ground-truth mask.
    pub mask: Option<ArrayView2<'a, bool>>,
    /// The model.
    pub model: &'a dyn Model,
    explainer: Option<&'a dyn Explainer>,
    name: &'static str,
}

impl<'a> Input<'a> {
    pub(super) fn new(
        x: ArrayView3<'a, f32>,
        y: usize,
        a: ArrayView2<'a, f32>,
        mask: Option<ArrayView2<'a, bool>>,
        model: &'a dyn Model,
        explainer: Option<&'a dyn Explainer>,
        name: &'static str,
    ) -> Self {
        Self {
            x,
            y,
            a,
            mask,
            model,
            explainer,
            name,
        }
    }

    /// The explainer, or an error naming the metric that needs it.
    pub fn explainer(&self) -> Result<&'a dyn Explainer> {
        self.explainer
            .ok_or_else(|| Error::Parameter(format!("{} needs an explanation method", self.name)))
    }
}

/// What a metric's type declares beside its code.
pub trait Declared: Clone + Default + Serialize + DeserializeOwned {
    /// Quantus's name.
    const NAME: &'static str;
    /// Whether a higher score is better (`None` where neither is).
    const HIGHER_IS_BETTER: Option<bool>;
    /// What it needs.
    const NEEDS: Needs;
    /// Whether its outcome's curve is a perturbation curve (mean curves are drawn for it).
    const CURVE: bool = false;

    /// Parameter checks before any work.
    fn validate(&self) -> Result<()> {
        Ok(())
    }

    /// Score one instance.
    fn score(&self, input: &Input, draws: &mut Draws) -> Result<Outcome>;

    /// Scores that only exist across instances: the instances' outcomes in, their final
    /// scores out (unchanged unless the metric says otherwise).
    fn finish(&self, _outcomes: &mut [Outcome]) {}
}

/// `Ok` when `ok`, else a parameter error naming the metric.
pub(super) fn check(ok: bool, name: &str, what: &str) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(Error::Parameter(format!("{name}: {what}")))
    }
}

/// `declare! { Type "Name", better B, NEEDS, curve C, valid |m| OK, "what", score |m, input, draws| BODY }`:
/// a metric's [`Declared`] in one place beside its code (every field of the trait but `finish`).
macro_rules! declare {
    ($ty:ident $name:literal, better $better:expr, $needs:ident, curve $curve:literal,
     valid |$v:tt| $ok:expr, $what:literal,
     score |$s:tt, $i:tt, $d:tt| $body:expr) => {
        impl Declared for $ty {
            const NAME: &'static str = $name;
            const HIGHER_IS_BETTER: Option<bool> = $better;
            const NEEDS: Needs = Needs::$needs;
            const CURVE: bool = $curve;
            fn validate(&self) -> Result<()> {
                let $v = self;
                super::registry::check($ok, Self::NAME, $what)
            }
            fn score(&self, $i: &Input, $d: &mut Draws) -> Result<Outcome> {
                let $s = self;
                $body
            }
        }
    };
}

pub(super) use declare;

/// `metrics!(Type, …)`: the [`Metric`](super::Metric) enum (one variant per type, serialised
/// as its parameters tagged `"metric": NAME`) and its lookups.
macro_rules! metrics {
    ($($ty:ident),+ $(,)?) => {
        /// A metric with its parameters (JSON: the parameters and `"metric": "<Quantus name>"`).
        #[derive(Clone, Debug, PartialEq)]
        pub enum Metric {
            $(
                #[doc = concat!("[`", stringify!($ty), "`]")]
                $ty($ty),
            )+
        }

        impl Metric {
            /// Every metric's name, as Quantus spells it.
            pub const NAMES: [&'static str; <[&str]>::len(&[$(<$ty as Declared>::NAME),+])] =
                [$(<$ty as Declared>::NAME),+];

            /// The name Quantus gives it.
            pub fn name(&self) -> &'static str {
                match self {
                    $(Self::$ty(_) => <$ty as Declared>::NAME,)+
                }
            }

            /// Whether a higher score is better (`None` where neither is: curves, counts of
            /// agreement with an axiom are reported as they are).
            pub fn higher_is_better(&self) -> Option<bool> {
                match self {
                    $(Self::$ty(_) => <$ty as Declared>::HIGHER_IS_BETTER,)+
                }
            }

            /// What the metric needs.
            pub fn needs(&self) -> Needs {
                match self {
                    $(Self::$ty(_) => <$ty as Declared>::NEEDS,)+
                }
            }

            /// Whether its curves are perturbation curves (mean curves are drawn).
            pub fn has_curve(&self) -> bool {
                match self {
                    $(Self::$ty(_) => <$ty as Declared>::CURVE,)+
                }
            }

            /// Parameter checks before any work.
            pub fn validate(&self) -> Result<()> {
                match self {
                    $(Self::$ty(m) => m.validate(),)+
                }
            }

            /// Its parameters as JSON.
            pub fn params(&self) -> Value {
                match self {
                    $(Self::$ty(m) => serde_json::to_value(m).unwrap_or(Value::Null),)+
                }
            }

            /// Scores that only exist across instances (SensitivityN's per-size correlations):
            /// the instances' outcomes in, their final scores out (unchanged for every other
            /// metric).
            pub fn finish(&self, outcomes: &mut [Outcome]) {
                match self {
                    $(Self::$ty(m) => m.finish(outcomes),)+
                }
            }

            fn score(&self, input: &Input, draws: &mut Draws) -> Result<Outcome> {
                match self {
                    $(Self::$ty(m) => m.score(input, draws),)+
                }
            }

            /// The metric of a canonical name with parameters (an object, defaults filled).
            fn from_params(name: &str, params: Value) -> Result<Self> {
                $(
                    if name == <$ty as Declared>::NAME {
                        return serde_json::from_value::<$ty>(params)
                            .map(Self::$ty)
                            .map_err(|e| Error::Parameter(format!("{name}: {e}")));
                    }
                )+
                Err(Error::Parameter(format!(
                    "unknown metric `{name}`; available: {}",
                    Self::NAMES.join(", ")
                )))
            }
        }
    };
}

pub(super) use metrics;
