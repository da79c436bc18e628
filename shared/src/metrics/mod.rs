//! Evaluation metrics for attribution maps with Quantus 0.5.3's definitions and defaults
//! (METHOD.md §5): faithfulness, complexity, robustness, randomisation, axiomatic and
//! localisation. Each metric scores one [`Instance`] — a model input, its target class, an
//! attribution map and, for localisation, a ground-truth mask — against a [`Model`] (every
//! perturbed input goes through it in batches) and, for the metrics that re-explain perturbed
//! inputs, an [`Explainer`]. Random draws come from [`Draws`] seeded per instance, so a score
//! depends only on the seed, never on batching or threads.
//!
//! Where Quantus 0.5.3's code contradicts its own definition the metric says so in its
//! documentation and follows the definition (MonotonicityArya, NonSensitivity, Continuity,
//! Infidelity's attribution sum is kept as Quantus computes it); everything else follows the
//! code, quirks included (the first input value is never noised; "black" is the input's
//! minimum; attributions are divided by their largest magnitude before scoring).

pub mod draws;
mod explainers;
mod faithfulness;
mod others;
pub mod perturb;
pub mod randomisation;
pub mod stats;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tract_onnx::prelude::tract_ndarray::{
    Array2, Array3, ArrayView1, ArrayView2, ArrayView3, ArrayView4, Axis, s,
};

pub use draws::Draws;
pub use explainers::{MethodExplainer, method_map};
pub use faithfulness::*;
pub use others::*;
pub use perturb::Baseline;
pub use randomisation::{LayerOrder, Mprt, RandomLogit, Similarity, mprt};

use crate::model::Classifier;
use crate::runtime::{self, Runtime};
use crate::{Error, Result};

/// Classifier outputs for batches of model inputs.
pub trait Model: Sync {
    /// Logits (`n × classes`) of `inputs` (`n × channels × height × width`).
    fn logits(&self, inputs: ArrayView4<f32>) -> Result<Array2<f32>>;
}

/// A classifier run through a runtime (batches split across its threads).
pub struct Forward<'a, R: Runtime> {
    /// The classifier.
    pub classifier: &'a Classifier,
    /// Where the work runs.
    pub runtime: &'a R,
}

impl<R: Runtime> Model for Forward<'_, R> {
    fn logits(&self, inputs: ArrayView4<f32>) -> Result<Array2<f32>> {
        runtime::check_cancelled(self.runtime)?;
        Ok(self
            .classifier
            .forward_with(self.runtime, inputs, &[])?
            .logits)
    }
}

/// Attribution maps for inputs, as the explanation method under evaluation makes them.
pub trait Explainer: Sync {
    /// Raw attribution maps (`n × height × width`) of `inputs` for `targets`.
    fn explain(&self, inputs: ArrayView4<f32>, targets: &[usize]) -> Result<Array3<f32>>;

    /// The same method on the model whose input absorbs a constant `shift` (its first
    /// operation subtracts it), for InputInvariance.
    fn shifted(&self, shift: f32) -> Result<Box<dyn Explainer + '_>> {
        Err(Error::Parameter(format!(
            "this explainer cannot run on a model with its input shifted by {shift}"
        )))
    }
}

/// What one metric scores.
#[derive(Clone, Copy, Debug)]
pub struct Instance<'a> {
    /// The model input (`channels × height × width`, normalised as the model expects).
    pub input: ArrayView3<'a, f32>,
    /// The explained class.
    pub target: usize,
    /// The attribution map (`height × width`), raw: each metric normalises it its own way.
    pub attribution: ArrayView2<'a, f32>,
    /// Ground truth for localisation metrics (`height × width`, true = relevant).
    pub mask: Option<ArrayView2<'a, bool>>,
}

/// A metric's result on one instance.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// The score (NaN where undefined, e.g. a constant series' correlation; JSON writes NaN as
    /// `null`, which reads back as NaN).
    #[serde(deserialize_with = "nan_from_null")]
    pub score: f64,
    /// The perturbation curve where the metric has one (model outputs or output changes per
    /// step, in step order).
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "nans_from_nulls"
    )]
    pub curve: Vec<f64>,
    /// Attribution sums aligned with `curve` where the metric has them.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "nans_from_nulls"
    )]
    pub sums: Vec<f64>,
}

fn nan_from_null<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(deserializer)?.unwrap_or(f64::NAN))
}

fn nans_from_nulls<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<f64>, D::Error> {
    Ok(Vec::<Option<f64>>::deserialize(deserializer)?
        .into_iter()
        .map(|v| v.unwrap_or(f64::NAN))
        .collect())
}

impl Outcome {
    pub(crate) fn score(score: f64) -> Self {
        Self {
            score,
            ..Self::default()
        }
    }

    pub(crate) fn with_curve(score: f64, curve: Vec<f64>) -> Self {
        Self {
            score,
            curve,
            sums: Vec::new(),
        }
    }
}

/// How a metric prepares the attribution (Quantus's `normalise` and `abs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preparation {
    /// Divide by the largest magnitude (an all-zero map is left alone).
    pub normalise: bool,
    /// Take magnitudes (after normalising).
    pub abs: bool,
}

impl Preparation {
    /// The map as the metric scores it.
    pub fn apply(self, attribution: ArrayView2<f32>) -> Array2<f32> {
        let mut a = attribution.to_owned();
        if self.normalise {
            let max = a.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            if max > 0.0 {
                a.mapv_inplace(|v| v / max);
            }
        }
        if self.abs {
            a.mapv_inplace(f32::abs);
        }
        a
    }
}

/// Every metric, with its parameters (`Default` = Quantus's defaults).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "metric")]
pub enum Metric {
    /// Pearson correlation between the attribution of random pixel subsets and the output drop
    /// when they are removed (Bhatt et al. 2020).
    FaithfulnessCorrelation(FaithfulnessCorrelation),
    /// Pearson correlation between each pixel chunk's attribution and the output drop when it
    /// alone is removed (Alvarez-Melis & Jaakkola 2018).
    FaithfulnessEstimate(FaithfulnessEstimate),
    /// Whether the output rises monotonically as pixels are added to a baseline in order of
    /// increasing attribution (Arya et al. 2019).
    MonotonicityArya(MonotonicityArya),
    /// Spearman correlation between chunk attributions and the output variance when the chunk
    /// is replaced (Nguyen & Martínez 2020).
    MonotonicityCorrelation(MonotonicityCorrelation),
    /// Output curve as pixels are removed cumulatively, most relevant first (Bach et al. 2015).
    PixelFlipping(PixelFlipping),
    /// Output drop curve as non-overlapping patches are removed in attribution order
    /// (Samek et al. 2015).
    RegionPerturbation(RegionPerturbation),
    /// Output curve as every non-overlapping patch is removed, most relevant first
    /// (Montavon et al. 2018).
    Selectivity(Selectivity),
    /// Correlation, across instances, between removed attribution and output drop for each
    /// number of removed pixels (Ancona et al. 2018).
    SensitivityN(SensitivityN),
    /// Area over the output curve as superpixels are removed in order of mean attribution
    /// (Rieger & Hansen 2020).
    #[serde(rename = "IROF")]
    Irof(Irof),
    /// Mean squared gap between output drops and attribution-weighted input changes for patch
    /// perturbations (Yeh et al. 2019).
    Infidelity(Infidelity),
    /// Whether the class survives as growing shares of the most relevant pixels are imputed
    /// (Rong et al. 2022).
    #[serde(rename = "ROAD")]
    Road(Road),
    /// Area under the probability curve as pixels are deleted, most relevant first
    /// (Petsiuk et al. 2018).
    Deletion(Deletion),
    /// Area under the probability curve as pixels are inserted into a baseline, most relevant
    /// first (Petsiuk et al. 2018).
    Insertion(Insertion),
    /// Gini index of the attribution magnitudes (Chalasani et al. 2020).
    Sparseness(Sparseness),
    /// Entropy of the attribution's share per pixel (Bhatt et al. 2020).
    Complexity(Complexity),
    /// Number of pixels with attribution above `eps` (Nguyen & Martínez 2020).
    EffectiveComplexity(EffectiveComplexity),
    /// Largest relative change of the attribution under uniform input noise (Yeh et al. 2019).
    MaxSensitivity(MaxSensitivity),
    /// Mean relative change of the attribution under uniform input noise (Yeh et al. 2019).
    AvgSensitivity(AvgSensitivity),
    /// Largest ratio of attribution change to input change under Gaussian noise
    /// (Alvarez-Melis & Jaakkola 2018).
    LocalLipschitzEstimate(LocalLipschitzEstimate),
    /// Patch attributions and the output along a horizontal translation (Montavon et al. 2018).
    Continuity(Continuity),
    /// Largest relative attribution change over relative input change (Agarwal et al. 2022).
    RelativeInputStability(RelativeInputStability),
    /// Largest relative attribution change over logit change (Agarwal et al. 2022).
    RelativeOutputStability(RelativeOutputStability),
    /// Similarity of the attribution to those of models whose layers are re-initialised from
    /// the top (Adebayo et al. 2018).
    #[serde(rename = "MPRT")]
    Mprt(Mprt),
    /// SSIM between the attribution and that of a random other class (Sixt et al. 2020).
    RandomLogit(RandomLogit),
    /// Whether the attributions sum to the output difference from a baseline (Sundararajan et
    /// al. 2017).
    Completeness(Completeness),
    /// Pixels whose attribution is zero exactly when perturbing them changes nothing
    /// (Nguyen & Martínez 2020).
    NonSensitivity(NonSensitivity),
    /// Whether the attribution survives a constant input shift absorbed by the first layer
    /// (Kindermans et al. 2017).
    InputInvariance(InputInvariance),
    /// Whether the attribution's maximum falls in the mask (Zhang et al. 2018).
    PointingGame(PointingGame),
    /// Share of positive attribution inside the mask (Kohlbrenner et al. 2020).
    AttributionLocalisation(AttributionLocalisation),
    /// Share of the k most relevant pixels inside the mask (Theiner et al. 2021).
    TopKIntersection(TopKIntersection),
    /// Share of the mask among the |mask| most relevant pixels (Arras et al. 2021).
    RelevanceRankAccuracy(RelevanceRankAccuracy),
    /// Share of attribution inside the mask (Arras et al. 2021).
    RelevanceMassAccuracy(RelevanceMassAccuracy),
    /// ROC AUC of the attribution as a detector of the mask (Fawcett 2006).
    #[serde(rename = "AUC")]
    Auc(Auc),
}

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

impl Metric {
    /// Every metric's name, as Quantus spells it.
    pub const NAMES: [&'static str; 33] = [
        "FaithfulnessCorrelation",
        "FaithfulnessEstimate",
        "MonotonicityArya",
        "MonotonicityCorrelation",
        "PixelFlipping",
        "RegionPerturbation",
        "Selectivity",
        "SensitivityN",
        "IROF",
        "Infidelity",
        "ROAD",
        "Deletion",
        "Insertion",
        "Sparseness",
        "Complexity",
        "EffectiveComplexity",
        "MaxSensitivity",
        "AvgSensitivity",
        "LocalLipschitzEstimate",
        "Continuity",
        "RelativeInputStability",
        "RelativeOutputStability",
        "MPRT",
        "RandomLogit",
        "Completeness",
        "NonSensitivity",
        "InputInvariance",
        "PointingGame",
        "AttributionLocalisation",
        "TopKIntersection",
        "RelevanceRankAccuracy",
        "RelevanceMassAccuracy",
        "AUC",
    ];

    /// A metric by name (case-insensitive; `Monotonicity` = MonotonicityArya,
    /// `ModelParameterRandomisation` = MPRT) with parameters over its defaults.
    pub fn parse(name: &str, params: &Value) -> Result<Self> {
        let lower = name.to_ascii_lowercase();
        let canonical = match lower.as_str() {
            "monotonicity" => "MonotonicityArya",
            "modelparameterrandomisation" | "modelparameterrandomization" => "MPRT",
            _ => Self::NAMES
                .iter()
                .find(|n| n.to_ascii_lowercase() == lower)
                .ok_or_else(|| {
                    Error::Parameter(format!(
                        "unknown metric `{name}`; available: {}",
                        Self::NAMES.join(", ")
                    ))
                })?,
        };
        let mut object = match params {
            Value::Null => serde_json::Map::new(),
            Value::Object(map) => map.clone(),
            other => {
                return Err(Error::Parameter(format!(
                    "parameters of {canonical} must be a JSON object, found {other}"
                )));
            }
        };
        object.insert("metric".into(), Value::String(canonical.into()));
        let metric: Self = serde_json::from_value(Value::Object(object))
            .map_err(|e| Error::Parameter(format!("{canonical}: {e}")))?;
        metric.validate()?;
        Ok(metric)
    }

    /// The name Quantus gives it.
    pub fn name(&self) -> &'static str {
        let value = serde_json::to_value(self).ok();
        let tag = value
            .as_ref()
            .and_then(|v| v.get("metric"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        Self::NAMES
            .iter()
            .find(|n| **n == tag)
            .copied()
            .unwrap_or("?")
    }

    /// Its parameters as JSON (the tag removed).
    pub fn params(&self) -> Value {
        let mut value = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Value::Object(map) = &mut value {
            map.remove("metric");
        }
        value
    }

    /// Whether a higher score is better (`None` where neither is: curves, counts of agreement
    /// with an axiom are reported as they are).
    pub fn higher_is_better(&self) -> Option<bool> {
        use Metric::*;
        match self {
            FaithfulnessCorrelation(_)
            | FaithfulnessEstimate(_)
            | MonotonicityArya(_)
            | MonotonicityCorrelation(_)
            | SensitivityN(_)
            | Irof(_)
            | Road(_)
            | Insertion(_)
            | RegionPerturbation(_)
            | Sparseness(_)
            | Completeness(_)
            | InputInvariance(_)
            | PointingGame(_)
            | AttributionLocalisation(_)
            | TopKIntersection(_)
            | RelevanceRankAccuracy(_)
            | RelevanceMassAccuracy(_)
            | Auc(_)
            | Continuity(_) => Some(true),
            PixelFlipping(_)
            | Selectivity(_)
            | Deletion(_)
            | Infidelity(_)
            | Complexity(_)
            | EffectiveComplexity(_)
            | MaxSensitivity(_)
            | AvgSensitivity(_)
            | LocalLipschitzEstimate(_)
            | RelativeInputStability(_)
            | RelativeOutputStability(_)
            | Mprt(_)
            | RandomLogit(_)
            | NonSensitivity(_) => Some(false),
        }
    }

    /// What the metric needs.
    pub fn needs(&self) -> Needs {
        use Metric::*;
        let (model, explainer, mask) = match self {
            Sparseness(_) | Complexity(_) | EffectiveComplexity(_) => (false, false, false),
            PointingGame(_)
            | AttributionLocalisation(_)
            | TopKIntersection(_)
            | RelevanceRankAccuracy(_)
            | RelevanceMassAccuracy(_)
            | Auc(_) => (false, false, true),
            MaxSensitivity(_)
            | AvgSensitivity(_)
            | LocalLipschitzEstimate(_)
            | Continuity(_)
            | RelativeInputStability(_)
            | RelativeOutputStability(_)
            | RandomLogit(_)
            | InputInvariance(_)
            | Mprt(_) => (true, true, false),
            _ => (true, false, false),
        };
        Needs {
            model,
            explainer,
            mask,
        }
    }

    /// Parameter checks before any work.
    pub fn validate(&self) -> Result<()> {
        use Metric::*;
        let check = |ok: bool, what: &str| {
            if ok {
                Ok(())
            } else {
                Err(Error::Parameter(format!("{}: {what}", self.name())))
            }
        };
        match self {
            FaithfulnessCorrelation(m) => {
                check(
                    m.nr_runs >= 2 && m.nr_runs <= 100_000,
                    "nr_runs must be 2..=100000",
                )?;
                check(m.subset_size >= 1, "subset_size must be at least 1")
            }
            FaithfulnessEstimate(m) => check(m.features_in_step >= 1, "features_in_step ≥ 1"),
            MonotonicityArya(m) => check(m.features_in_step >= 1, "features_in_step ≥ 1"),
            MonotonicityCorrelation(m) => check(
                m.features_in_step >= 1 && (1..=10_000).contains(&m.nr_samples),
                "features_in_step ≥ 1 and nr_samples 1..=10000",
            ),
            PixelFlipping(m) => check(m.features_in_step >= 1, "features_in_step ≥ 1"),
            RegionPerturbation(m) => check(
                m.patch_size >= 1 && m.regions_evaluation >= 1,
                "patch_size and regions_evaluation ≥ 1",
            ),
            Selectivity(m) => check(m.patch_size >= 1, "patch_size ≥ 1"),
            SensitivityN(m) => check(
                m.features_in_step >= 1 && m.n_max_percentage > 0.0 && m.n_max_percentage <= 1.0,
                "features_in_step ≥ 1 and n_max_percentage in (0, 1]",
            ),
            Infidelity(m) => check(
                !m.perturb_patch_sizes.is_empty()
                    && m.perturb_patch_sizes.iter().all(|&p| p >= 1)
                    && (1..=1000).contains(&m.n_perturb_samples),
                "perturb_patch_sizes ≥ 1 and n_perturb_samples 1..=1000",
            ),
            Road(m) => check(
                !m.percentages.is_empty()
                    && m.percentages.iter().all(|p| (0.0..=100.0).contains(p)),
                "percentages in 0..=100",
            ),
            Deletion(m) => check(m.step >= 1, "step ≥ 1"),
            Insertion(m) => check(m.step >= 1, "step ≥ 1"),
            MaxSensitivity(m) => {
                check((1..=10_000).contains(&m.nr_samples), "nr_samples 1..=10000")
            }
            AvgSensitivity(m) => {
                check((1..=10_000).contains(&m.nr_samples), "nr_samples 1..=10000")
            }
            LocalLipschitzEstimate(m) => {
                check((1..=10_000).contains(&m.nr_samples), "nr_samples 1..=10000")
            }
            RelativeInputStability(m) => {
                check((1..=10_000).contains(&m.nr_samples), "nr_samples 1..=10000")
            }
            RelativeOutputStability(m) => {
                check((1..=10_000).contains(&m.nr_samples), "nr_samples 1..=10000")
            }
            Continuity(m) => check(
                m.nr_steps >= 1 && m.patch_size >= 1,
                "nr_steps and patch_size ≥ 1",
            ),
            NonSensitivity(m) => check(
                m.features_in_step >= 1 && (1..=10_000).contains(&m.n_samples),
                "features_in_step ≥ 1 and n_samples 1..=10000",
            ),
            TopKIntersection(m) => check(m.k >= 1, "k ≥ 1"),
            _ => Ok(()),
        }
    }

    /// Score one instance. `explainer` is required by the metrics that re-explain (see
    /// [`Metric::needs`]); MPRT is scored by [`randomisation::mprt`] instead.
    pub fn evaluate(
        &self,
        instance: &Instance,
        model: &dyn Model,
        explainer: Option<&dyn Explainer>,
        seed: u64,
    ) -> Result<Outcome> {
        use Metric::*;
        let (_, height, width) = instance.input.dim();
        if instance.attribution.dim() != (height, width) {
            return Err(Error::Parameter(format!(
                "attribution is {:?}, the input {height}×{width}",
                instance.attribution.dim()
            )));
        }
        let needs = self.needs();
        let mask = match (needs.mask, instance.mask) {
            (true, None) => {
                return Err(Error::Parameter(format!(
                    "{} needs a ground-truth mask",
                    self.name()
                )));
            }
            (true, Some(mask)) if mask.dim() != (height, width) => {
                return Err(Error::Parameter(format!(
                    "mask is {:?}, the input {height}×{width}",
                    mask.dim()
                )));
            }
            (_, mask) => mask,
        };
        let explainer = || {
            explainer.ok_or_else(|| {
                Error::Parameter(format!("{} needs an explanation method", self.name()))
            })
        };
        let draws = &mut Draws::new(seed);
        let x = instance.input;
        let y = instance.target;
        let a = instance.attribution;
        match self {
            FaithfulnessCorrelation(m) => m.evaluate(x, y, a, model, draws),
            FaithfulnessEstimate(m) => m.evaluate(x, y, a, model, draws),
            MonotonicityArya(m) => m.evaluate(x, y, a, model, draws),
            MonotonicityCorrelation(m) => m.evaluate(x, y, a, model, draws),
            PixelFlipping(m) => m.evaluate(x, y, a, model, draws),
            RegionPerturbation(m) => m.evaluate(x, y, a, model, draws),
            Selectivity(m) => m.evaluate(x, y, a, model, draws),
            SensitivityN(m) => m.evaluate(x, y, a, model, draws),
            Irof(m) => m.evaluate(x, y, a, model, draws),
            Infidelity(m) => m.evaluate(x, y, a, model, draws),
            Road(m) => m.evaluate(x, y, a, model, draws),
            Deletion(m) => m.evaluate(x, y, a, model, draws),
            Insertion(m) => m.evaluate(x, y, a, model, draws),
            Sparseness(m) => Ok(m.evaluate(a)),
            Complexity(m) => Ok(m.evaluate(a)),
            EffectiveComplexity(m) => Ok(m.evaluate(a)),
            MaxSensitivity(m) => m.evaluate(x, y, a, model, explainer()?, draws),
            AvgSensitivity(m) => m.evaluate(x, y, a, model, explainer()?, draws),
            LocalLipschitzEstimate(m) => m.evaluate(x, y, a, model, explainer()?, draws),
            Continuity(m) => m.evaluate(x, y, model, explainer()?, draws),
            RelativeInputStability(m) => m.evaluate(x, y, a, model, explainer()?, draws),
            RelativeOutputStability(m) => m.evaluate(x, y, a, model, explainer()?, draws),
            RandomLogit(m) => m.evaluate(x, y, a, explainer()?),
            Completeness(m) => m.evaluate(x, y, a, model, draws),
            NonSensitivity(m) => m.evaluate(x, y, a, model, draws),
            InputInvariance(m) => m.evaluate(x, y, a, explainer()?),
            Mprt(_) => Err(Error::Parameter(
                "MPRT re-initialises the model's layers: score it with metrics::randomisation::mprt"
                    .into(),
            )),
            PointingGame(m) => Ok(m.evaluate(a, mask)),
            AttributionLocalisation(m) => Ok(m.evaluate(a, mask)),
            TopKIntersection(m) => Ok(m.evaluate(a, mask)),
            RelevanceRankAccuracy(m) => Ok(m.evaluate(a, mask)),
            RelevanceMassAccuracy(m) => Ok(m.evaluate(a, mask)),
            Auc(m) => Ok(m.evaluate(a, mask)),
        }
    }

    /// Scores that only exist across instances (SensitivityN's per-size correlations): the
    /// instances' outcomes in, their final scores out (unchanged for every other metric).
    pub fn finish(&self, outcomes: &mut [Outcome]) {
        if let Metric::SensitivityN(m) = self {
            m.finish(outcomes);
        }
    }
}

/// What a [`Batch`] keeps of one row of logits.
type RowReader<'a, T> = dyn Fn(ArrayView1<f32>) -> T + 'a;

/// Collects model outputs for perturbed inputs pushed one at a time, running the model on
/// full batches of `chunk` inputs; `read` picks what is kept of each row of logits.
pub(crate) struct Batch<'a, T> {
    model: &'a dyn Model,
    read: Box<RowReader<'a, T>>,
    shape: (usize, usize, usize),
    pending: Vec<f32>,
    rows: usize,
    chunk: usize,
    out: Vec<T>,
}

/// Inputs per model call: large enough to amortise the call, small enough to bound memory
/// (64 inputs of 3×224×224 are 38 MB).
const CHUNK: usize = 64;

impl<'a, T> Batch<'a, T> {
    pub(crate) fn new(
        model: &'a dyn Model,
        shape: (usize, usize, usize),
        read: impl Fn(ArrayView1<f32>) -> T + 'a,
    ) -> Self {
        Self {
            model,
            read: Box::new(read),
            shape,
            pending: Vec::new(),
            rows: 0,
            chunk: CHUNK,
            out: Vec::new(),
        }
    }

    /// The logit of `class` per input, or its softmax probability.
    pub(crate) fn output(
        model: &'a dyn Model,
        shape: (usize, usize, usize),
        class: usize,
        softmax: bool,
    ) -> Batch<'a, f64> {
        Batch::new(model, shape, move |row| read_output(row, class, softmax))
    }

    pub(crate) fn push(&mut self, x: ArrayView3<f32>) -> Result<()> {
        self.push_replaced(x, &[], &[])
    }

    /// Push `x` with every channel of `pixels` (flat indices) set to `values`.
    pub(crate) fn push_replaced(
        &mut self,
        x: ArrayView3<f32>,
        pixels: &[usize],
        values: &[f32],
    ) -> Result<()> {
        let start = self.pending.len();
        match x.as_slice() {
            Some(slice) => self.pending.extend_from_slice(slice),
            None => self.pending.extend(x.iter().copied()),
        }
        let (_, height, width) = x.dim();
        let plane = height * width;
        for (c, &value) in values.iter().enumerate() {
            for &p in pixels {
                self.pending[start + c * plane + p] = value;
            }
        }
        self.rows += 1;
        if self.rows == self.chunk {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.rows == 0 {
            return Ok(());
        }
        let (c, h, w) = self.shape;
        let inputs = ArrayView4::from_shape((self.rows, c, h, w), &self.pending)
            .map_err(|e| Error::Inference(e.to_string()))?;
        let logits = self.model.logits(inputs)?;
        if logits.nrows() != self.rows {
            return Err(Error::Inference(format!(
                "model returned {} rows for {} inputs",
                logits.nrows(),
                self.rows
            )));
        }
        self.out
            .extend(logits.axis_iter(Axis(0)).map(|row| (self.read)(row)));
        self.pending.clear();
        self.rows = 0;
        Ok(())
    }

    pub(crate) fn finish(mut self) -> Result<Vec<T>> {
        self.flush()?;
        Ok(self.out)
    }
}

/// The logit of `class` in a row of logits, or its softmax probability (computed in `f64`).
/// NaN for a class beyond the row.
fn read_output(row: ArrayView1<f32>, class: usize, softmax: bool) -> f64 {
    if class >= row.len() {
        return f64::NAN;
    }
    if softmax {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let total: f64 = row.iter().map(|&v| f64::from(v - max).exp()).sum();
        f64::from(row[class] - max).exp() / total
    } else {
        f64::from(row[class])
    }
}

/// The model's output for `class` (logit, or probability with `softmax`) for one input.
pub(crate) fn output_of(
    model: &dyn Model,
    x: ArrayView3<f32>,
    class: usize,
    softmax: bool,
) -> Result<f64> {
    let logits = model.logits(x.insert_axis(Axis(0)))?;
    if class >= logits.ncols() {
        return Err(Error::Parameter(format!(
            "class {class} is outside the model's {} outputs",
            logits.ncols()
        )));
    }
    Ok(read_output(logits.row(0), class, softmax))
}

/// The attribution as a metric scores it.
pub(crate) fn prepare(a: ArrayView2<f32>, normalise: bool, abs: bool) -> Array2<f32> {
    Preparation { normalise, abs }.apply(a)
}

/// The index of the largest value (the first on ties).
pub(crate) fn argmax(values: impl Iterator<Item = f32>) -> usize {
    let mut best = (0, f32::NEG_INFINITY);
    for (i, v) in values.enumerate() {
        if v > best.1 {
            best = (i, v);
        }
    }
    best.0
}

/// Indices of `a` from largest to smallest (ties in index order).
pub(crate) fn descending(a: &[f32]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..a.len()).collect();
    order.sort_by(|&i, &j| a[j].total_cmp(&a[i]).then(i.cmp(&j)));
    order
}

/// Indices of `a` from smallest to largest (ties in index order).
pub(crate) fn ascending(a: &[f32]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..a.len()).collect();
    order.sort_by(|&i, &j| a[i].total_cmp(&a[j]).then(i.cmp(&j)));
    order
}

/// The map flattened in row-major order.
pub(crate) fn flat(a: &Array2<f32>) -> Vec<f32> {
    a.iter().copied().collect()
}

/// Sum of `a` at `indices` as NumPy's `np.sum(a[indices])` rounds it (pairwise, `float32`).
pub(crate) fn sum_at(a: &[f32], indices: &[usize]) -> f64 {
    let gathered: Vec<f32> = indices.iter().map(|&i| a[i]).collect();
    f64::from(stats::pairwise_sum_f32(&gathered))
}

/// Sum of `a` at `indices` as Python's `sum()` over `float32` values rounds it (in order).
pub(crate) fn sequential_sum_at(a: &[f32], indices: &[usize]) -> f64 {
    f64::from(indices.iter().fold(0.0f32, |total, &i| total + a[i]))
}

/// The explanation of one input, prepared.
pub(crate) fn explain_one(
    explainer: &dyn Explainer,
    x: ArrayView3<f32>,
    target: usize,
    preparation: Preparation,
) -> Result<Array2<f32>> {
    let maps = explainer.explain(x.insert_axis(Axis(0)), &[target])?;
    if maps.dim().0 != 1 || (maps.dim().1, maps.dim().2) != (x.dim().1, x.dim().2) {
        return Err(Error::Inference(format!(
            "explainer returned maps of shape {:?} for one {}×{} input",
            maps.dim(),
            x.dim().1,
            x.dim().2
        )));
    }
    Ok(preparation.apply(maps.slice(s![0, .., ..])))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_with_nan_survive_json() {
        let outcome = Outcome {
            score: f64::NAN,
            curve: vec![1.0, f64::NAN],
            sums: Vec::new(),
        };
        let text = serde_json::to_string(&outcome).unwrap();
        assert_eq!(text, r#"{"score":null,"curve":[1.0,null]}"#);
        let back: Outcome = serde_json::from_str(&text).unwrap();
        assert!(back.score.is_nan() && back.curve[0] == 1.0 && back.curve[1].is_nan());
        assert!(back.sums.is_empty());
    }

    #[test]
    fn metrics_parse_by_name_with_checked_parameters() {
        let metric = Metric::parse(
            "pixelflipping",
            &serde_json::json!({"features_in_step": 224}),
        )
        .unwrap();
        assert_eq!(metric.name(), "PixelFlipping");
        assert_eq!(metric.params()["features_in_step"], 224);
        assert_eq!(
            Metric::parse("Monotonicity", &Value::Null).unwrap().name(),
            "MonotonicityArya"
        );
        for name in Metric::NAMES {
            assert_eq!(Metric::parse(name, &Value::Null).unwrap().name(), name);
        }
        let typo = Metric::parse(
            "PixelFlipping",
            &serde_json::json!({"features_in_stepp": 1}),
        );
        assert!(typo.unwrap_err().to_string().contains("unknown field"));
        assert!(
            Metric::parse("PixelFlipping", &serde_json::json!({"features_in_step": 0})).is_err()
        );
        assert!(Metric::parse("Nope", &Value::Null).is_err());
    }
}
