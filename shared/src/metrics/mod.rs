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

mod axiomatic;
mod complexity;
mod explainers;
mod faithfulness;
mod localisation;
pub mod perturb;
pub mod randomisation;
mod registry;
mod robustness;
pub mod stats;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tract_onnx::prelude::tract_ndarray::{
    Array2, Array3, ArrayView1, ArrayView2, ArrayView3, ArrayView4, Axis, s,
};

pub use axiomatic::*;
pub use complexity::*;
pub use explainers::{MethodExplainer, method_map};
pub use faithfulness::*;
pub use localisation::*;
pub use perturb::Baseline;
pub use randomisation::{LayerOrder, Mprt, RandomLogit, Similarity, mprt};
pub use registry::{Declared, Input, Needs};
pub use robustness::*;

use crate::draws::Draws;
use crate::model::Classifier;
use crate::runtime::{self, Runtime};
use crate::{Error, Result};
use registry::metrics;

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
    fn maps(&self, inputs: ArrayView4<f32>, targets: &[usize]) -> Result<Array3<f32>>;

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

metrics!(
    FaithfulnessCorrelation,
    FaithfulnessEstimate,
    MonotonicityArya,
    MonotonicityCorrelation,
    PixelFlipping,
    RegionPerturbation,
    Selectivity,
    SensitivityN,
    Irof,
    Infidelity,
    Road,
    Deletion,
    Insertion,
    Sparseness,
    Complexity,
    EffectiveComplexity,
    MaxSensitivity,
    AvgSensitivity,
    LocalLipschitzEstimate,
    Continuity,
    RelativeInputStability,
    RelativeOutputStability,
    Mprt,
    RandomLogit,
    Completeness,
    NonSensitivity,
    InputInvariance,
    PointingGame,
    AttributionLocalisation,
    TopKIntersection,
    RelevanceRankAccuracy,
    RelevanceMassAccuracy,
    Auc,
);

impl Serialize for Metric {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut params = match self.params() {
            Value::Object(map) => map,
            _ => serde_json::Map::new(),
        };
        params.insert("metric".into(), Value::String(self.name().into()));
        params.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Metric {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut object = serde_json::Map::<String, Value>::deserialize(deserializer)?;
        let name = match object.remove("metric") {
            Some(Value::String(name)) => name,
            _ => return Err(serde::de::Error::missing_field("metric")),
        };
        Self::from_params(&name, Value::Object(object)).map_err(serde::de::Error::custom)
    }
}

impl Metric {
    /// A metric by name (case-insensitive; `Monotonicity` = MonotonicityArya,
    /// `ModelParameterRandomisation` = MPRT) with parameters over its defaults, checked.
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
        let params = match params {
            Value::Null => Value::Object(serde_json::Map::new()),
            Value::Object(map) => Value::Object(map.clone()),
            other => {
                return Err(Error::Parameter(format!(
                    "parameters of {canonical} must be a JSON object, found {other}"
                )));
            }
        };
        let metric = Self::from_params(canonical, params)?;
        metric.validate()?;
        Ok(metric)
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
        let (_, height, width) = instance.input.dim();
        if instance.attribution.dim() != (height, width) {
            return Err(Error::Parameter(format!(
                "attribution is {:?}, the input {height}×{width}",
                instance.attribution.dim()
            )));
        }
        let mask = match (self.needs().mask, instance.mask) {
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
        let input = Input::new(
            instance.input,
            instance.target,
            instance.attribution,
            mask,
            model,
            explainer,
            self.name(),
        );
        self.score(&input, &mut Draws::new(seed))
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
pub(crate) fn map_one(
    explainer: &dyn Explainer,
    x: ArrayView3<f32>,
    target: usize,
    preparation: Preparation,
) -> Result<Array2<f32>> {
    let maps = explainer.maps(x.insert_axis(Axis(0)), &[target])?;
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

    #[test]
    fn the_registry_names_each_metric_once_and_round_trips_it() {
        let mut names = std::collections::HashSet::new();
        for name in Metric::NAMES {
            assert!(names.insert(name), "{name} twice");
            let metric = Metric::parse(name, &Value::Null).unwrap();
            let json = serde_json::to_value(&metric).unwrap();
            assert_eq!(json["metric"], name);
            let back: Metric = serde_json::from_value(json).unwrap();
            assert_eq!(back, metric);
            let needs = metric.needs();
            assert!(
                !(needs.mask && needs.model),
                "{name}: a mask metric calls no model"
            );
            assert!(!needs.explainer || needs.model, "{name}");
        }
        assert_eq!(names.len(), 33);
        let curves: Vec<&str> = Metric::NAMES
            .iter()
            .filter(|n| Metric::parse(n, &Value::Null).unwrap().has_curve())
            .copied()
            .collect();
        assert_eq!(
            curves,
            [
                "MonotonicityArya",
                "PixelFlipping",
                "RegionPerturbation",
                "Selectivity",
                "IROF",
                "Infidelity",
                "ROAD",
                "Deletion",
                "Insertion"
            ]
        );
        let untagged: Result<Metric, _> = serde_json::from_value(serde_json::json!({"k": 3}));
        assert!(untagged.unwrap_err().to_string().contains("metric"));
        let unknown: Result<Metric, _> =
            serde_json::from_value(serde_json::json!({"metric": "Nope"}));
        assert!(unknown.unwrap_err().to_string().contains("unknown metric"));
    }
}
