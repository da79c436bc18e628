//! One explanation end to end — LIME, CamLIME or a CAM — and its record: the wire format the
//! CLI writes, the server returns and `--replay` re-runs (model and sha256, preprocessing,
//! method and every parameter, seed, target, segment map, CAM, coefficients, R², timings).

use std::time::Duration;

use image::RgbImage;
use nalgebra::DMatrix;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tract_onnx::prelude::tract_ndarray::{Array2, Axis};

use crate::attribution::AttributionConfig;
use crate::cam::{self, AblationValue, CamConfig, CamExplanation, CamMap, CamMethod, LayerCam};
use crate::camlime::CamLimeMode;
use crate::engine::Composed;
use crate::lime::{
    HideColor, LabelExplanation, LimeConfig, cosine_distances, explain_label, fill_image, kernel,
    sample_design, top_labels,
};
use crate::model::{Classifier, softmax};
use crate::preprocess::Preprocessing;
use crate::render::WeightCurve;
use crate::runtime::{self, Runtime, check_cancelled};
use crate::segment::{Segmentation, SegmenterConfig};
use crate::{Error, Result};

/// What kind of explanation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Method {
    /// LIME with the design reweighted by a CAM (the paper's method).
    CamLime,
    /// Plain LIME.
    Lime,
    /// A CAM alone.
    Cam(CamMethod),
}

impl Method {
    /// The name the CLI and records use.
    pub fn name(self) -> &'static str {
        match self {
            Self::CamLime => "camlime",
            Self::Lime => "lime",
            Self::Cam(method) => method.name(),
        }
    }

    /// The name people write in figure labels.
    pub fn title(self) -> &'static str {
        match self {
            Self::CamLime => "CamLIME",
            Self::Lime => "LIME",
            Self::Cam(method) => method.title(),
        }
    }

    /// Parse `camlime`, `lime` or a CAM method's name.
    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "camlime" => Ok(Self::CamLime),
            "lime" => Ok(Self::Lime),
            other => CamMethod::from_name(other).map(Self::Cam).map_err(|_| {
                let cams: Vec<_> = CamMethod::ALL.iter().map(|m| m.name()).collect();
                Error::Parameter(format!(
                    "unknown method `{other}`; available: camlime, lime, {}",
                    cams.join(", ")
                ))
            }),
        }
    }
}

impl TryFrom<String> for Method {
    type Error = Error;
    fn try_from(name: String) -> Result<Self> {
        Self::from_name(&name)
    }
}

impl From<Method> for String {
    fn from(method: Method) -> Self {
        method.name().to_owned()
    }
}

/// Every parameter of an explanation; `Default` is the project's defaults (METHOD.md).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExplainConfig {
    /// The method.
    pub method: Method,
    /// The CAM CamLIME reweights with.
    pub cam: CamMethod,
    /// Target layers; empty = the model's defaults.
    pub layers: Vec<String>,
    /// The explained class; `None` = the predicted one.
    pub target: Option<usize>,
    /// Seeds segmentation noise, sampling and random CAMs.
    pub seed: u64,
    /// Superpixels.
    pub segmenter: SegmenterConfig,
    /// LIME's sampling and surrogate.
    pub lime: LimeConfig,
    /// How CamLIME applies the CAM.
    pub mode: CamLimeMode,
    /// Ablation-CAM's ablated value.
    pub ablation: AblationValue,
    /// CAMs: principal component of the weighted activations instead of their sum.
    pub eigen_smooth: bool,
    /// CAMs: average over flips × scales (6 passes).
    pub aug_smooth: bool,
    /// CAMs: keep maps at the layers' resolution (the paper's Grad-CAM quirk).
    pub feature_resolution: bool,
    /// Input attributions' parameters.
    pub attribution: AttributionConfig,
    /// Images per classification chunk (a unit of progress and of cancellation).
    pub chunk: usize,
}

impl Default for ExplainConfig {
    fn default() -> Self {
        Self {
            method: Method::CamLime,
            cam: CamMethod::EigenCam,
            layers: Vec::new(),
            target: None,
            seed: 0,
            segmenter: SegmenterConfig::default(),
            lime: LimeConfig::default(),
            mode: CamLimeMode::default(),
            ablation: AblationValue::Zero,
            eigen_smooth: false,
            aug_smooth: false,
            feature_resolution: false,
            attribution: AttributionConfig::default(),
            chunk: 64,
        }
    }
}

/// The model an explanation ran on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// Name (bundled name or file stem).
    pub name: String,
    /// sha256 of the ONNX bytes.
    pub sha256: String,
}

/// The explained image.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImageInfo {
    /// Where it came from (a path or URL), if the caller said.
    pub source: Option<String>,
    /// Base-image width (after resize and crop).
    pub width: u32,
    /// Base-image height.
    pub height: u32,
    /// sha256 of the base image's RGB bytes: replay checks it.
    pub sha256: String,
}

/// The explained class.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TargetInfo {
    /// Class index.
    pub class: usize,
    /// Class name.
    pub label: String,
    /// Softmax probability on the base image.
    pub probability: f32,
    /// Raw logit.
    pub logit: f32,
}

/// A segment map in compact form.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SegmentsRecord {
    /// Segmenter name.
    pub algorithm: String,
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
    /// Number of segments.
    pub count: usize,
    /// Run-length labels, `[label, run, …]` row-major.
    pub runs: Vec<u32>,
}

impl SegmentsRecord {
    /// Back to a [`Segmentation`].
    pub fn segmentation(&self) -> Result<Segmentation> {
        Segmentation::from_runs(self.height, self.width, &self.runs)
    }
}

/// One layer's CAM at the layer's own resolution (ReLU'd, before scaling).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerMap {
    /// Layer.
    pub layer: String,
    /// The map.
    pub map: CamMap,
}

/// The CAM part of a record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CamRecord {
    /// Method.
    pub method: CamMethod,
    /// Per-layer maps at feature resolution.
    pub layers: Vec<LayerMap>,
    /// The fused map at input resolution, in [0, 1].
    pub map: CamMap,
}

/// CamLIME explained with one layer's CAM (multi-layer fusion explains the same samples with
/// each layer and with the fused map).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerExplanations {
    /// Layer.
    pub layer: String,
    /// Per explained label.
    pub explanations: Vec<LabelExplanation>,
}

/// Wall-clock milliseconds of each stage (0 where the runtime has no clock).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    /// Segmentation.
    pub segmentation_ms: f64,
    /// Classifying the perturbed samples.
    pub sampling_ms: f64,
    /// CAM computation.
    pub cam_ms: f64,
    /// Surrogate fits.
    pub surrogate_ms: f64,
    /// Everything.
    pub total_ms: f64,
}

/// The explanation record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExplanationRecord {
    /// Format tag.
    pub format: String,
    /// camlime version that wrote it.
    pub version: String,
    /// Model.
    pub model: ModelInfo,
    /// Preprocessing applied to the image.
    pub preprocessing: Preprocessing,
    /// Image.
    pub image: ImageInfo,
    /// Method and every parameter, seed included.
    pub config: ExplainConfig,
    /// Explained class.
    pub target: TargetInfo,
    /// Target layers used (CAM and CamLIME).
    pub layers: Vec<String>,
    /// Segments (LIME and CamLIME).
    pub segments: Option<SegmentsRecord>,
    /// CAM (CAM methods and CamLIME).
    pub cam: Option<CamRecord>,
    /// The surrogate per explained label (LIME, CamLIME): intercept, ranked weights, R²,
    /// local prediction.
    pub explanations: Vec<LabelExplanation>,
    /// CamLIME only: plain LIME on the same samples (the weight–feature curve's other line).
    pub lime_baseline: Vec<LabelExplanation>,
    /// CamLIME with several layers: the same samples explained with each layer's CAM.
    pub layer_explanations: Vec<LayerExplanations>,
    /// Stage timings.
    pub timings: Timings,
    /// The engine that ran the forward passes (`cnn`, `tract`, …; empty in older records).
    #[serde(default)]
    pub engine: String,
}

/// The record's format tag.
pub const RECORD_FORMAT: &str = "camlime-explanation/1";

impl ExplanationRecord {
    /// The explanation of the target class (the first one for LIME and CamLIME).
    pub fn main_explanation(&self) -> Option<&LabelExplanation> {
        self.explanations
            .iter()
            .find(|e| e.label == self.target.class)
            .or(self.explanations.first())
    }

    /// The weight–feature plot's curves: every segment's coefficient in the main explanation
    /// and, for CamLIME, in plain LIME on the same samples (empty without segments).
    pub fn weight_curves(&self) -> Vec<WeightCurve> {
        let Some(segments) = &self.segments else {
            return Vec::new();
        };
        let main = self.main_explanation();
        let baseline = self
            .lime_baseline
            .iter()
            .find(|e| Some(e.label) == main.map(|m| m.label));
        [
            (Method::Lime.title(), baseline),
            (self.config.method.title(), main),
        ]
        .into_iter()
        .filter_map(|(name, explanation)| {
            explanation.map(|e| WeightCurve {
                name: name.into(),
                weights: e.weights(segments.count),
            })
        })
        .collect()
    }

    /// Whether another record holds the same results (timings and version ignored).
    pub fn same_results(&self, other: &Self) -> bool {
        let strip = |r: &Self| Self {
            timings: Timings::default(),
            engine: String::new(),
            version: String::new(),
            image: ImageInfo {
                source: None,
                ..r.image.clone()
            },
            ..r.clone()
        };
        strip(self) == strip(other)
    }
}

/// sha256 of an image's RGB bytes.
pub fn image_sha256(image: &RgbImage) -> String {
    format!("{:x}", Sha256::digest(image.as_raw()))
}

fn since(runtime: &impl Runtime, start: Option<Duration>) -> f64 {
    match (runtime.clock(), start) {
        (Some(now), Some(start)) => (now - start).as_secs_f64() * 1e3,
        _ => 0.0,
    }
}

/// Explain `image` (decoded, any size: it is resized and cropped by the model's preprocessing).
pub fn explain(
    classifier: &Classifier,
    image: &RgbImage,
    source: Option<String>,
    config: &ExplainConfig,
    runtime: &impl Runtime,
) -> Result<ExplanationRecord> {
    match start(classifier, image, source, config, runtime)? {
        Started::Done(record) => Ok(*record),
        Started::Sampling(pending) => {
            let job = pending.job();
            let targets =
                classify_samples(classifier, &pending.base, job, 0..job.num_samples, runtime)?;
            pending.finish(classifier, targets, runtime)
        }
    }
}

/// The first phase of an explanation: a CAM is done; LIME and CamLIME wait for their samples to
/// be classified, here ([`explain`]) or spread over other processes (the browser's workers),
/// each running [`classify_samples`] on a share of the [`SampleJob`].
pub enum Started {
    /// The finished record.
    Done(Box<ExplanationRecord>),
    /// Segments and design drawn; the samples' probabilities are needed.
    Sampling(Box<Pending>),
}

/// A LIME or CamLIME explanation waiting for its samples' probabilities.
pub struct Pending {
    record: ExplanationRecord,
    /// The base image the samples perturb.
    pub base: RgbImage,
    segmentation: Segmentation,
    z: DMatrix<f64>,
    job: SampleJob,
    layers: Vec<String>,
    started: Option<Duration>,
    sampling_from: Option<Duration>,
}

/// What a process needs, besides the model and the base image, to classify a share of the
/// perturbed samples. The design is redrawn from the seed, so the job stays small.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SampleJob {
    /// Segments of the base image.
    pub segments: SegmentsRecord,
    /// Rows of the design (samples).
    pub num_samples: usize,
    /// The design's seed.
    pub seed: u64,
    /// Hidden segments' colour.
    pub hide_color: HideColor,
    /// Explained labels, in the order of the returned columns.
    pub labels: Vec<usize>,
    /// Samples per classification chunk (the unit of progress and cancellation).
    pub chunk: usize,
}

/// Everything before the samples: validation, the base image and its prediction, the target,
/// and for CAM methods the whole explanation.
pub fn start(
    classifier: &Classifier,
    image: &RgbImage,
    source: Option<String>,
    config: &ExplainConfig,
    runtime: &impl Runtime,
) -> Result<Started> {
    let started = runtime.clock();
    config.lime.validate()?;
    if config.chunk == 0 || config.chunk > 1024 {
        return Err(Error::Parameter(format!(
            "chunk must lie in 1..=1024, got {}",
            config.chunk
        )));
    }
    let preprocessing = classifier.spec().preprocessing.clone();
    let base = preprocessing.base_image(image)?;
    let logits = classifier
        .forward(
            preprocessing.tensor(std::slice::from_ref(&base))?.view(),
            &[],
        )?
        .logits
        .row(0)
        .to_vec();
    let probabilities = softmax(&logits);
    let class = classifier.target_class(&logits, config.target)?;
    let layers = classifier.target_layers(&config.layers)?;
    let mut record = ExplanationRecord {
        format: RECORD_FORMAT.into(),
        version: env!("CARGO_PKG_VERSION").into(),
        model: ModelInfo {
            name: classifier.spec().name.clone(),
            sha256: classifier.sha256().into(),
        },
        preprocessing,
        image: ImageInfo {
            source,
            width: base.width(),
            height: base.height(),
            sha256: image_sha256(&base),
        },
        config: config.clone(),
        target: TargetInfo {
            class,
            label: classifier.labels()[class].clone(),
            probability: probabilities[class],
            logit: logits[class],
        },
        layers: Vec::new(),
        segments: None,
        cam: None,
        explanations: Vec::new(),
        lime_baseline: Vec::new(),
        layer_explanations: Vec::new(),
        timings: Timings::default(),
        engine: classifier.engine_report().forward.clone(),
    };
    match config.method {
        Method::Cam(method) => {
            let t = runtime.clock();
            let explanation = cam::explain(
                classifier,
                &base,
                &CamConfig {
                    method,
                    ..cam_config(config, &layers, class)
                },
                runtime,
            )?;
            record.timings.cam_ms = since(runtime, t);
            record.layers = layers;
            record.cam = Some(cam_record(explanation, method));
        }
        Method::Lime | Method::CamLime => {
            let t = runtime.clock();
            let segmentation = config.segmenter.segment_with(&base, config.seed, runtime)?;
            record.timings.segmentation_ms = since(runtime, t);
            let mut labels = top_labels(&probabilities, config.lime.top_labels);
            if !labels.contains(&class) {
                labels.insert(0, class);
            }
            let z = sample_design(config.lime.num_samples, segmentation.count(), config.seed);
            let segments = SegmentsRecord {
                algorithm: config.segmenter.name().into(),
                height: segmentation.height(),
                width: segmentation.width(),
                count: segmentation.count(),
                runs: segmentation.to_runs(),
            };
            record.segments = Some(segments.clone());
            let job = SampleJob {
                segments,
                num_samples: config.lime.num_samples,
                seed: config.seed,
                hide_color: config.lime.hide_color,
                labels,
                chunk: config.chunk,
            };
            return Ok(Started::Sampling(Box::new(Pending {
                record,
                base,
                segmentation,
                z,
                job,
                layers,
                started,
                sampling_from: runtime.clock(),
            })));
        }
    }
    record.timings.total_ms = since(runtime, started);
    Ok(Started::Done(Box::new(record)))
}

impl Pending {
    /// The classification work, for [`classify_samples`].
    pub fn job(&self) -> &SampleJob {
        &self.job
    }

    /// The surrogates (and CamLIME's CAM) from the samples' probabilities: per explained label,
    /// its probability on every sample, as [`classify_samples`] returns them over all rows.
    pub fn finish(
        self,
        classifier: &Classifier,
        targets: Vec<Vec<f64>>,
        runtime: &impl Runtime,
    ) -> Result<ExplanationRecord> {
        let Self {
            mut record,
            base,
            segmentation,
            z,
            job,
            layers,
            started,
            sampling_from,
        } = self;
        let labels = job.labels;
        if targets.len() != labels.len() || targets.iter().any(|t| t.len() != z.nrows()) {
            return Err(Error::Parameter(format!(
                "expected {} labels × {} sample probabilities",
                labels.len(),
                z.nrows()
            )));
        }
        record.timings.sampling_ms = since(runtime, sampling_from);
        let config = record.config.clone();
        let weights = kernel(&cosine_distances(&z), config.lime.kernel_width);
        let fit = |design: &DMatrix<f64>| -> Result<Vec<LabelExplanation>> {
            labels
                .iter()
                .zip(&targets)
                .map(|(&label, target)| {
                    explain_label(
                        design,
                        target,
                        &weights,
                        label,
                        config.lime.feature_selection,
                        config.lime.num_features,
                    )
                })
                .collect()
        };
        if config.method == Method::CamLime {
            let t = runtime.clock();
            let cam_config = cam_config(&config, &layers, record.target.class);
            let explanation = cam::explain(classifier, &base, &cam_config, runtime)?;
            record.timings.cam_ms = since(runtime, t);
            let t = runtime.clock();
            record.explanations = fit(&config.mode.design(&z, &explanation.map, &segmentation)?)?;
            record.lime_baseline = fit(&z)?;
            if explanation.layers.len() > 1 {
                for layer in &explanation.layers {
                    let design = config.mode.design(&z, &layer.map, &segmentation)?;
                    record.layer_explanations.push(LayerExplanations {
                        layer: layer.layer.clone(),
                        explanations: fit(&design)?,
                    });
                }
            }
            record.timings.surrogate_ms = since(runtime, t);
            record.layers = layers;
            record.cam = Some(cam_record(explanation, config.cam));
        } else {
            let t = runtime.clock();
            record.explanations = fit(&z)?;
            record.timings.surrogate_ms = since(runtime, t);
        }
        record.timings.total_ms = since(runtime, started);
        Ok(record)
    }
}

fn cam_config(config: &ExplainConfig, layers: &[String], class: usize) -> CamConfig {
    CamConfig {
        method: config.cam,
        layers: layers.to_vec(),
        target: Some(class),
        ablation: config.ablation,
        seed: config.seed,
        chunk: config.chunk.min(64),
        eigen_smooth: config.eigen_smooth,
        aug_smooth: config.aug_smooth,
        feature_resolution: config.feature_resolution,
        attribution: config.attribution.clone(),
    }
}

fn cam_record(explanation: CamExplanation, method: CamMethod) -> CamRecord {
    CamRecord {
        method,
        layers: explanation
            .layers
            .into_iter()
            .map(|l: LayerCam| LayerMap {
                layer: l.layer,
                map: l.native,
            })
            .collect(),
        map: explanation.map,
    }
}

/// Classify the perturbed samples `rows` of a job in chunks (spread over the runtime's threads);
/// returns, per explained label, its probability on each of those samples. Any split of the rows
/// gives the same numbers: every image runs in batch-1 plans.
pub fn classify_samples(
    classifier: &Classifier,
    base: &RgbImage,
    job: &SampleJob,
    rows: std::ops::Range<usize>,
    runtime: &impl Runtime,
) -> Result<Vec<Vec<f64>>> {
    let segmentation = job.segments.segmentation()?;
    let (height, width) = (base.height() as usize, base.width() as usize);
    if (segmentation.height(), segmentation.width()) != (height, width) {
        return Err(Error::Parameter(format!(
            "a {}×{} segmentation does not fit a {height}×{width} image",
            segmentation.height(),
            segmentation.width()
        )));
    }
    if rows.end > job.num_samples || rows.start > rows.end || job.chunk == 0 {
        return Err(Error::Parameter(format!(
            "rows {rows:?} of {} samples in chunks of {}",
            job.num_samples, job.chunk
        )));
    }
    for &label in &job.labels {
        classifier.check_class(label)?;
    }
    let z = sample_design(job.num_samples, segmentation.count(), job.seed);
    let fill = fill_image(base, &segmentation, job.hide_color);
    let n = rows.len();
    let mut targets = vec![Vec::with_capacity(n); job.labels.len()];
    let preprocessing = &classifier.spec().preprocessing;
    // A perturbed sample takes each pixel from the image or from the fill, and preprocessing is
    // per pixel, so the samples are composed from the two preprocessed images (on the device,
    // when the model runs on one): the same values as preprocessing each perturbed image.
    let image = preprocessing.tensor(std::slice::from_ref(base))?;
    let fill = preprocessing.tensor(std::slice::from_ref(&fill))?;
    // One job per thread and chunk composes its samples, runs them and keeps the labels'
    // probabilities; a device takes each chunk whole.
    let classify = |rows: std::ops::Range<usize>| -> Result<Vec<Vec<f64>>> {
        let keep = Array2::from_shape_fn((rows.len(), segmentation.count()), |(i, s)| {
            z[(rows.start + i, s)] != 0.0
        });
        let composed = Composed {
            on: image.index_axis(Axis(0), 0),
            off: fill.index_axis(Axis(0), 0),
            segments: segmentation.labels(),
            keep: keep.view(),
        };
        let logits = classifier.forward_composed(&composed)?;
        Ok(logits
            .rows()
            .into_iter()
            .map(|row| {
                let p = softmax(&row.to_vec());
                job.labels
                    .iter()
                    .map(|&label| f64::from(p[label]))
                    .collect()
            })
            .collect())
    };
    for start in rows.clone().step_by(job.chunk) {
        check_cancelled(runtime)?;
        let end = (start + job.chunk).min(rows.end);
        let parts = if classifier.on_device() {
            vec![classify(start..end)]
        } else {
            runtime::map_shares(runtime, start..end, &classify)
        };
        for part in parts {
            for row in part? {
                for (column, p) in targets.iter_mut().zip(row) {
                    column.push(p);
                }
            }
        }
        runtime.progress("samples", end - rows.start, n);
    }
    Ok(targets)
}
