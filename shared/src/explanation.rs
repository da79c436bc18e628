//! One explanation end to end — LIME, CamLIME or a CAM — producing its record. The record and
//! the configuration (the wire format the CLI writes, the server returns and `--replay` re-runs)
//! are model-free data in [`camlime_base::record`], re-exported here.

use std::time::Duration;

use image::RgbImage;
use nalgebra::DMatrix;
use tract_onnx::prelude::tract_ndarray::{Array2, Axis};

use crate::cam::{self, CamExplanation, CamMethod, LayerCam};
use crate::detection::BoxChoice;
use crate::engine::Composed;
use crate::lime::{
    LabelExplanation, cosine_distances, explain_label, fill_image, kernel, sample_design,
    top_labels,
};
use crate::model::{Classifier, Task};
use crate::region::RegionChoice;
use crate::runtime::{self, Runtime, check_cancelled};
use crate::segment::Segmentation;
use crate::task;
use crate::{Error, Result};

pub use camlime_base::record::*;

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
    let config = &fitted(classifier, config);
    validate(classifier, config)?;
    let preprocessing = classifier.spec().preprocessing.clone();
    let base = preprocessing.base_image(image)?;
    let (bound, task) = task::bind(classifier, &base, &config.task)?;
    let classifier = bound.as_ref().unwrap_or(classifier);
    let logits = classifier
        .forward(
            preprocessing.tensor(std::slice::from_ref(&base))?.view(),
            &[],
        )?
        .logits
        .row(0)
        .to_vec();
    let probabilities = classifier.lime_values(&logits);
    let class = classifier.target_class(&logits, config.target)?;
    let layers = classifier.target_layers(&config.cam.layers)?;
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
            face: None,
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
        task,
    };
    match config.method {
        Method::Cam(method) => {
            let t = runtime.clock();
            let explanation = cam::compute(
                classifier,
                &base,
                method,
                &resolved(config, &layers, class),
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
                task: record.task.clone(),
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
        let labels = job.labels.clone();
        if targets.len() != labels.len() || targets.iter().any(|t| t.len() != z.nrows()) {
            return Err(Error::Parameter(format!(
                "expected {} labels × {} sample probabilities",
                labels.len(),
                z.nrows()
            )));
        }
        record.timings.sampling_ms = since(runtime, sampling_from);
        let config = record.config.clone();
        let bound = task::for_job(classifier, job.task.as_ref())?;
        let classifier = bound.as_ref().unwrap_or(classifier);
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
            let resolved = resolved(&config, &layers, record.target.class);
            let explanation =
                cam::compute(classifier, &base, config.cam.method, &resolved, runtime)?;
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
            record.cam = Some(cam_record(explanation, config.cam.method));
        } else {
            let t = runtime.clock();
            record.explanations = fit(&z)?;
            record.timings.surrogate_ms = since(runtime, t);
        }
        record.timings.total_ms = since(runtime, started);
        Ok(record)
    }
}

/// Every check of a configuration against a model before any work: the model-free ones
/// ([`ExplainConfig::check`]), the class and the target layers. `start` calls it; the CLI, the
/// server and the page call it (or `check`, without a model) as soon as they hold a config.
pub fn validate(classifier: &Classifier, config: &ExplainConfig) -> Result<()> {
    let config = &fitted(classifier, config);
    config.check()?;
    task::check(classifier, &config.task)?;
    match (config.target, &config.task) {
        (Some(class), TaskConfig::Classification) => {
            classifier.check_class(class)?;
        }
        (Some(_), task) => {
            return Err(Error::Parameter(format!(
                "a {} explanation targets its own choice, not a class: leave `target` unset",
                task.name()
            )));
        }
        (None, _) => {}
    }
    if config.cam_method().is_some() {
        classifier.target_layers(&config.cam.layers)?;
    }
    Ok(())
}

/// `config` as it applies to `classifier`: a detector asked for the default task (and no class)
/// explains its best detection, a segmenter its predicted mask. Explanations record this configuration.
pub fn fitted(classifier: &Classifier, config: &ExplainConfig) -> ExplainConfig {
    let mut config = config.clone();
    if config.task == TaskConfig::Classification && config.target.is_none() {
        match classifier.spec().task {
            Task::Detection(_) => config.task = TaskConfig::Detection(BoxChoice::default()),
            Task::Segmentation(_) => {
                config.task = TaskConfig::Segmentation(RegionChoice::default());
            }
            Task::Classification | Task::Embedding => {}
        }
    }
    config
}

/// The configuration a CAM of this explanation runs with: the layers resolved, the class
/// decided, forward chunks of at most 64 images (Score-CAM's batches hold a full input each).
fn resolved(config: &ExplainConfig, layers: &[String], class: usize) -> ExplainConfig {
    let mut resolved = config.clone();
    resolved.cam.layers = layers.to_vec();
    resolved.target = Some(class);
    resolved.chunk = config.chunk.min(64);
    resolved
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
        stability: explanation.stability,
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
    let bound = task::for_job(classifier, job.task.as_ref())?;
    let classifier = bound.as_ref().unwrap_or(classifier);
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
                let p = classifier.lime_values(&row.to_vec());
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
