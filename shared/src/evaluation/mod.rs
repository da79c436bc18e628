//! An evaluation: metrics (Quantus's definitions, [`crate::metrics`]) for several explanation
//! methods over images. A [`Plan`] is checked before any work (methods, metrics with their
//! parameters, the explanations' settings, the metrics' seed); it scores one [`Image`]
//! at a time — each method's attribution map once, then every metric — handing each [`Row`] on
//! as soon as it exists, and turns rows into a [`Report`] (tables, mean curves). It is pure: the
//! command line adds files and resume, the server jobs and HTTP.

mod report;

use std::collections::{BTreeMap, HashSet};

use serde_json::Value;
use tract_onnx::prelude::tract_ndarray::{Array2, Array3, Axis};

use crate::cam::CamMethod;
use crate::explanation::ExplainConfig;
use crate::metrics::{Forward, Instance, MethodExplainer, Metric, Outcome, method_map, mprt};
use crate::model::{Classifier, Task};
use crate::preprocess::{DecodeOptions, decode_image};
use crate::render::paint;
use crate::runtime::{self, Runtime};
use crate::{Error, Method, Result};

pub use report::{Cell, Curve, Evaluation, Report, Row, SummaryCell};

/// The paper's methods: LIME against CamLIME, and the CAM methods.
pub const PAPER_METHODS: &str = "lime,camlime,gradcam,gradcam++,layercam,eigencam";

/// The paper's methods, parsed.
pub fn paper_methods() -> Vec<Method> {
    [
        Method::Lime,
        Method::CamLime,
        Method::Cam(CamMethod::GradCam),
        Method::Cam(CamMethod::GradCamPlusPlus),
        Method::Cam(CamMethod::LayerCam),
        Method::Cam(CamMethod::EigenCam),
    ]
    .into()
}

/// The paper's metrics with the paper's settings (METHOD.md §5).
pub fn paper_metrics() -> Vec<(String, Value)> {
    use serde_json::json;
    vec![
        (
            "FaithfulnessCorrelation".into(),
            json!({"nr_runs": 100, "subset_size": 224, "perturb_baseline": "black"}),
        ),
        (
            "FaithfulnessEstimate".into(),
            json!({"features_in_step": 224, "perturb_baseline": "black"}),
        ),
        (
            "MonotonicityCorrelation".into(),
            json!({"features_in_step": 3136, "nr_samples": 10}),
        ),
        ("IROF".into(), json!({})),
        (
            "RegionPerturbation".into(),
            json!({"patch_size": 14, "perturb_baseline": "uniform", "order": "morf"}),
        ),
        ("Sparseness".into(), json!({})),
        ("Complexity".into(), json!({})),
        ("EffectiveComplexity".into(), json!({"eps": 1e-5})),
    ]
}

fn invalid(message: String) -> Error {
    Error::Parameter(message)
}

/// The metrics asked for (names, `paper` or `all`: every metric, localisation ones only with
/// `have_masks`), with `overrides` over their defaults, checked.
pub fn choose_metrics(
    names: &[String],
    overrides: &BTreeMap<String, Value>,
    have_masks: bool,
) -> Result<Vec<(String, Value)>> {
    let mut chosen: Vec<(String, Value)> = Vec::new();
    for name in names {
        match name.trim() {
            "paper" => chosen.extend(paper_metrics()),
            "all" => chosen.extend(
                Metric::NAMES
                    .iter()
                    .filter(|n| {
                        have_masks || !Metric::parse(n, &Value::Null).is_ok_and(|m| m.needs().mask)
                    })
                    .map(|n| ((*n).to_owned(), Value::Object(Default::default()))),
            ),
            other => {
                let metric = Metric::parse(other, &Value::Null)?;
                chosen.push((metric.name().to_owned(), Value::Object(Default::default())));
            }
        }
    }
    if chosen.is_empty() {
        return Err(invalid("no metric chosen".into()));
    }
    let mut seen = HashSet::new();
    chosen.retain(|(name, _)| seen.insert(name.clone()));
    for (name, params) in &mut chosen {
        if let Some(extra) = overrides.get(name.as_str()) {
            let (Value::Object(base), Value::Object(extra)) = (&mut *params, extra) else {
                return Err(invalid(format!(
                    "parameters of {name} must be a JSON object"
                )));
            };
            base.extend(extra.clone());
        }
        Metric::parse(name, params)?;
    }
    if let Some(key) = overrides
        .keys()
        .find(|key| !chosen.iter().any(|(name, _)| name == *key))
    {
        return Err(invalid(format!(
            "the metric parameters name {key}, which is not among the chosen metrics"
        )));
    }
    Ok(chosen)
}

/// One image of an evaluation, read: decoded, its model input, its target class and its mask.
pub struct Image {
    image: image::RgbImage,
    input: Array3<f32>,
    target: usize,
    mask: Option<Array2<bool>>,
}

impl Image {
    /// Decode an image (and its ground-truth mask: non-zero = relevant, at the image's size,
    /// cropped and resized as the image is), make the model input and choose the target class
    /// (`target`, else the predicted one).
    pub fn read(
        classifier: &Classifier,
        image: &[u8],
        mask: Option<&[u8]>,
        target: Option<usize>,
        limits: &DecodeOptions,
    ) -> Result<Self> {
        let task = &classifier.spec().task;
        if !matches!(task, Task::Classification) {
            return Err(Error::Parameter(format!(
                "`{}` is {} model: evaluation metrics score a classifier's class per image",
                classifier.spec().name,
                task.with_article()
            )));
        }
        let image = decode_image(image, limits)?;
        let preprocessing = &classifier.spec().preprocessing;
        let base = preprocessing.base_image(&image)?;
        let input = preprocessing
            .tensor(std::slice::from_ref(&base))?
            .index_axis_move(Axis(0), 0);
        let logits = classifier
            .forward(input.view().insert_axis(Axis(0)), &[])?
            .logits
            .row(0)
            .to_vec();
        let target = classifier.target_class(&logits, target)?;
        let mask = match mask {
            None => None,
            Some(bytes) => {
                let mask = decode_image(bytes, limits).map_err(|e| match e {
                    Error::Decode(message) => Error::Decode(format!("the mask: {message}")),
                    other => other,
                })?;
                if mask.dimensions() != image.dimensions() {
                    return Err(invalid(format!(
                        "the mask is {:?}, its image {:?}",
                        mask.dimensions(),
                        image.dimensions()
                    )));
                }
                let base_mask = preprocessing.base_image(&mask)?;
                let (w, h) = base_mask.dimensions();
                Some(Array2::from_shape_fn((h as usize, w as usize), |(r, c)| {
                    base_mask
                        .get_pixel(c as u32, r as u32)
                        .0
                        .iter()
                        .any(|&v| v >= 128)
                }))
            }
        };
        Ok(Self {
            image,
            input,
            target,
            mask,
        })
    }
}

/// The attribution map of `method` for an image: a CAM's or input attribution's map, LIME's
/// and CamLIME's segment weights painted on their segments.
fn attribution(
    classifier: &Classifier,
    image: &Image,
    config: &ExplainConfig,
    runtime: &impl Runtime,
) -> Result<Array2<f32>> {
    let mut config = config.clone();
    config.target = Some(image.target);
    match config.method {
        Method::Cam(cam) => method_map(
            classifier,
            image.input.view(),
            image.target,
            cam,
            &config,
            runtime,
        ),
        Method::Lime | Method::CamLime => {
            let record = crate::explain(classifier, &image.image, None, &config, runtime)?;
            let no_map = || Error::Inference("the record holds no explanation".into());
            let segments = record
                .segments
                .as_ref()
                .ok_or_else(no_map)?
                .segmentation()?;
            let explanation = record.main_explanation().ok_or_else(no_map)?;
            let map = paint(&segments, &explanation.weights(segments.count()))?;
            Array2::from_shape_vec((map.height(), map.width()), map.values().to_vec())
                .map_err(|e| Error::Inference(e.to_string()))
        }
    }
}

/// (image, method, metric): what one row of results answers.
pub type Key = (String, String, String);

/// A checked evaluation: the methods, the metrics with their parameters, the explanations'
/// settings and the metrics' seed. The command line and the server's evaluation jobs run it.
pub struct Plan {
    methods: Vec<Method>,
    metrics: Vec<(String, Value)>,
    parsed: Vec<Metric>,
    config: ExplainConfig,
    seed: u64,
}

impl Plan {
    /// Check the methods (each with `config`, whose method is replaced) and the metrics (names,
    /// `paper` or `all`, with `overrides` over their defaults); `all` takes localisation metrics
    /// only with `have_masks`. Whether masks are there for a named localisation metric is the
    /// caller's check ([`Plan::mask_metric`]), since only it knows where masks come from.
    pub fn new(
        methods: &[Method],
        metrics: &[String],
        overrides: &BTreeMap<String, Value>,
        have_masks: bool,
        config: ExplainConfig,
        seed: u64,
    ) -> Result<Self> {
        if methods.is_empty() {
            return Err(invalid("no explanation method chosen".into()));
        }
        let mut unique = HashSet::new();
        if !methods.iter().all(|m| unique.insert(m.name())) {
            return Err(invalid("a method is named twice".into()));
        }
        config.check()?;
        let metrics = choose_metrics(metrics, overrides, have_masks)?;
        let parsed = metrics
            .iter()
            .map(|(name, params)| Metric::parse(name, params))
            .collect::<Result<_>>()?;
        Ok(Self {
            methods: methods.to_vec(),
            metrics,
            parsed,
            config,
            seed,
        })
    }

    /// The explanation methods.
    pub fn methods(&self) -> &[Method] {
        &self.methods
    }

    /// The metrics with their parameters (defaults and overrides).
    pub fn metrics(&self) -> &[(String, Value)] {
        &self.metrics
    }

    /// The metrics, parsed.
    pub fn parsed_metrics(&self) -> &[Metric] {
        &self.parsed
    }

    /// The metrics' seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The explanations' settings (each method replaces `method`).
    pub fn config(&self) -> &ExplainConfig {
        &self.config
    }

    /// The whole configuration of one of the methods.
    pub fn method_config(&self, method: Method) -> ExplainConfig {
        ExplainConfig {
            method,
            ..self.config.clone()
        }
    }

    /// The first metric that needs ground-truth masks, if any.
    pub fn mask_metric(&self) -> Option<&'static str> {
        self.parsed
            .iter()
            .find(|m| m.needs().mask)
            .map(Metric::name)
    }

    /// The (method, metric) pairs of an image that `done` lacks.
    pub fn todo(&self, image: &str, done: &HashSet<Key>) -> Vec<(Method, &Metric)> {
        self.methods
            .iter()
            .flat_map(|m| self.parsed.iter().map(move |metric| (*m, metric)))
            .filter(|(m, metric)| {
                !done.contains(&(
                    image.to_owned(),
                    m.name().to_owned(),
                    metric.name().to_owned(),
                ))
            })
            .collect()
    }

    /// Rows still to compute for `images`.
    pub fn pending(&self, images: &[String], done: &HashSet<Key>) -> usize {
        images.iter().map(|i| self.todo(i, done).len()).sum()
    }

    /// Compute an image's rows that `done` lacks, method by method (one attribution map each),
    /// handing each row to `on_row` as soon as it exists; `on_step` hears what starts next.
    /// A metric that fails is a row with its error; a method that fails is an error naming it
    /// and the image (cancellation stays [`Error::Cancelled`]).
    #[allow(clippy::too_many_arguments)]
    pub fn evaluate_image<E: From<Error>>(
        &self,
        classifier: &Classifier,
        name: &str,
        image: &Image,
        done: &HashSet<Key>,
        runtime: &impl Runtime,
        on_step: &mut dyn FnMut(&str),
        on_row: &mut dyn FnMut(Row) -> Result<(), E>,
    ) -> Result<(), E> {
        let todo = self.todo(name, done);
        for method in &self.methods {
            let metrics: Vec<&Metric> = todo
                .iter()
                .filter(|(m, _)| m == method)
                .map(|(_, metric)| *metric)
                .collect();
            if metrics.is_empty() {
                continue;
            }
            on_step(&format!("{name} · {}", method.name()));
            let config = self.method_config(*method);
            let map = attribution(classifier, image, &config, runtime).map_err(|e| match e {
                Error::Cancelled => Error::Cancelled,
                other => Error::Inference(format!("{} on {name}: {other}", method.name())),
            })?;
            for metric in metrics {
                on_step(&format!("{name} · {} · {}", method.name(), metric.name()));
                let clock = runtime.clock();
                let (outcome, error) =
                    match self.score(metric, classifier, image, &map, &config, runtime) {
                        Ok(outcome) => (Some(outcome), None),
                        Err(e) => {
                            runtime::check_cancelled(runtime)?;
                            (None, Some(e.to_string()))
                        }
                    };
                let seconds = match (clock, runtime.clock()) {
                    (Some(start), Some(end)) => (end - start).as_secs_f64(),
                    _ => 0.0,
                };
                on_row(Row {
                    image: name.to_owned(),
                    method: method.name().to_owned(),
                    metric: metric.name().to_owned(),
                    outcome,
                    error,
                    seconds,
                })?;
            }
        }
        Ok(())
    }

    /// Score one metric; the explainer exists only for CAMs and input attributions.
    fn score(
        &self,
        metric: &Metric,
        classifier: &Classifier,
        image: &Image,
        map: &Array2<f32>,
        config: &ExplainConfig,
        runtime: &impl Runtime,
    ) -> Result<Outcome> {
        let instance = Instance {
            input: image.input.view(),
            target: image.target,
            attribution: map.view(),
            mask: image.mask.as_ref().map(|m| m.view()),
        };
        let model = Forward {
            classifier,
            runtime,
        };
        let cam = match config.method {
            Method::Cam(cam) => Some(cam),
            _ => None,
        };
        if metric.needs().explainer && cam.is_none() {
            return Err(invalid(format!(
                "{} re-explains perturbed model inputs, which {} (an explanation of the image) \
                 cannot",
                metric.name(),
                config.method.name()
            )));
        }
        if let Metric::Mprt(params) = metric {
            let cam = cam.ok_or_else(|| invalid("MPRT needs a CAM or input attribution".into()))?;
            let layers = classifier.parameter_layers();
            return mprt(params, &instance, &layers, &mut |set| {
                let edited = if set.is_empty() {
                    None
                } else {
                    Some(classifier.with_randomised_layers(set, params.seed)?)
                };
                method_map(
                    edited.as_ref().unwrap_or(classifier),
                    image.input.view(),
                    image.target,
                    cam,
                    config,
                    runtime,
                )
            });
        }
        let explainer = cam.map(|method| MethodExplainer {
            classifier,
            method,
            config: config.clone(),
            runtime,
        });
        let explainer = explainer
            .as_ref()
            .map(|e| e as &dyn crate::metrics::Explainer);
        metric.evaluate(&instance, &model, explainer, self.seed)
    }

    /// The tables and mean curves of `rows` (the latest row of each image, method and metric).
    pub fn report(&self, rows: &[Row], images: &[String]) -> Report {
        report::report(rows, images, &self.methods, &self.parsed)
    }
}
