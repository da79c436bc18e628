//! Randomisation: does the attribution depend on what the model learnt? MPRT re-initialises
//! the classifier's parameter layers in its ONNX graph (PyTorch's default initialisation,
//! seeded) and compares explanations; RandomLogit explains a random other class.

use serde::{Deserialize, Serialize};
use tract_onnx::prelude::tract_ndarray::{Array2, ArrayView2, ArrayView3};

use super::registry::declare;
use super::stats::{pearson, spearman, ssim};
use super::{Declared, Explainer, Input, Instance, Needs, Outcome, Preparation, flat, map_one};
use crate::draws::Draws;
use crate::{Error, Result};

/// RandomLogit (Sixt et al. 2020): SSIM between the attribution and the same method's
/// attribution for a class drawn at random among the others (Quantus reseeds with `seed` for
/// every instance, so the drawn class depends only on `seed` and the target).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RandomLogit {
    /// Classes of the model.
    pub num_classes: usize,
    /// Seed of the class draw.
    pub seed: u64,
    /// Magnitudes of the attributions.
    pub abs: bool,
    /// Attributions divided by their largest magnitude.
    pub normalise: bool,
}

impl Default for RandomLogit {
    fn default() -> Self {
        Self {
            num_classes: 1000,
            seed: 42,
            abs: false,
            normalise: true,
        }
    }
}

impl RandomLogit {
    /// The class explained instead of `target`.
    pub fn other_class(&self, target: usize) -> usize {
        let index = Draws::new(self.seed).index(self.num_classes - 1);
        if index >= target { index + 1 } else { index }
    }

    pub(crate) fn evaluate(
        &self,
        x: ArrayView3<f32>,
        y: usize,
        a: ArrayView2<f32>,
        explainer: &dyn Explainer,
    ) -> Result<Outcome> {
        if self.num_classes < 2 || y >= self.num_classes {
            return Err(Error::Parameter(format!(
                "RandomLogit: num_classes {} must exceed the target class {y} and 1",
                self.num_classes
            )));
        }
        let preparation = Preparation {
            normalise: self.normalise,
            abs: self.abs,
        };
        let a = flat(&preparation.apply(a));
        let other = map_one(explainer, x, self.other_class(y), preparation)?;
        Ok(Outcome::score(ssim(&a, &flat(&other))))
    }
}

declare! { RandomLogit "RandomLogit", better Some(false), EXPLAINER, curve false,
valid |_| true, "",
score |m, input, _| m.evaluate(input.x, input.y, input.a, input.explainer()?) }

/// Which layers MPRT re-initialises at each step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerOrder {
    /// Cascading from the output: step k re-initialises the last k layers.
    TopDown,
    /// Cascading from the input.
    BottomUp,
    /// One layer at a time, the others original.
    Independent,
}

/// How MPRT compares two attributions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Similarity {
    /// Spearman rank correlation (Quantus's default).
    Spearman,
    /// Pearson correlation.
    Pearson,
    /// Structural similarity.
    Ssim,
}

impl Similarity {
    fn of(self, a: &[f32], b: &[f32]) -> f64 {
        let wide = |v: &[f32]| v.iter().map(|&x| f64::from(x)).collect::<Vec<_>>();
        match self {
            Self::Spearman => spearman(&wide(a), &wide(b)),
            Self::Pearson => pearson(&wide(a), &wide(b)),
            Self::Ssim => ssim(a, b),
        }
    }
}

/// MPRT, the model parameter randomisation test (Adebayo et al. 2018): every parameter layer
/// (ONNX nodes with weight initialisers: convolutions, dense layers, batch norms), in
/// `layer_order`, re-initialised as PyTorch's `reset_parameters` does (weights and biases
/// U(−1/√fan_in, 1/√fan_in); batch norms to identity), and the attribution compared with
/// the same method's on each randomised model. `curve` = similarity to the original model's
/// explanation, then one per step; score = the mean over the steps (the last step only when
/// `skip_layers`). The bundled models keep PyTorch's modules as named nodes (convolutions and
/// batch norms apart), so the layers are the ones Quantus resets, in its order; its draws come
/// from PyTorch's generator, so MPRT's parity is with the definition, not Quantus's numbers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Mprt {
    /// The order layers are re-initialised in.
    pub layer_order: LayerOrder,
    /// Seed of the re-initialisation.
    pub seed: u64,
    /// Only the fully randomised model (the last step).
    pub skip_layers: bool,
    /// How attributions are compared.
    pub similarity: Similarity,
    /// Magnitudes of the attributions.
    pub abs: bool,
    /// Attributions divided by their largest magnitude.
    pub normalise: bool,
}

impl Default for Mprt {
    fn default() -> Self {
        Self {
            layer_order: LayerOrder::TopDown,
            seed: 42,
            skip_layers: false,
            similarity: Similarity::Spearman,
            abs: true,
            normalise: true,
        }
    }
}

impl Mprt {
    /// The sets of layers re-initialised at each step, from `layers` in graph order.
    pub fn steps(&self, layers: &[String]) -> Vec<Vec<String>> {
        let n = layers.len();
        let steps: Vec<Vec<String>> = match self.layer_order {
            LayerOrder::TopDown => (1..=n).map(|k| layers[n - k..].to_vec()).collect(),
            LayerOrder::BottomUp => (1..=n).map(|k| layers[..k].to_vec()).collect(),
            LayerOrder::Independent => layers.iter().map(|l| vec![l.clone()]).collect(),
        };
        if self.skip_layers {
            steps.into_iter().last().into_iter().collect()
        } else {
            steps
        }
    }
}

declare! { Mprt "MPRT", better Some(false), EXPLAINER, curve false,
    valid |_| true, "",
    score |_, _, _| Err(Error::Parameter(
    "MPRT re-initialises the model's layers: score it with metrics::randomisation::mprt".into()
)) }

/// Score MPRT on one instance: `explain_with(layers)` explains the instance's input for its
/// target on the model with `layers` re-initialised (none = the original model).
pub fn mprt(
    metric: &Mprt,
    instance: &Instance,
    layers: &[String],
    explain_with: &mut dyn FnMut(&[String]) -> Result<Array2<f32>>,
) -> Result<Outcome> {
    if layers.is_empty() {
        return Err(Error::Model(
            "MPRT: the model has no parameter layers to re-initialise".into(),
        ));
    }
    let preparation = Preparation {
        normalise: metric.normalise,
        abs: metric.abs,
    };
    let a = flat(&preparation.apply(instance.attribution));
    let mut compare = |set: &[String]| -> Result<f64> {
        let other = preparation.apply(explain_with(set)?.view());
        Ok(metric.similarity.of(&flat(&other), &a))
    };
    let mut curve = vec![compare(&[])?];
    for set in metric.steps(layers) {
        curve.push(compare(&set)?);
    }
    let steps = &curve[1..];
    Ok(Outcome::with_curve(
        steps.iter().sum::<f64>() / steps.len() as f64,
        curve,
    ))
}
