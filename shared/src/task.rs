//! Models that are not classifiers: a detector's detections, and the heads that let every
//! explainer (LIME, CamLIME, the CAMs, the attributions, the metrics) explain one of them.
//!
//! A detector loads as a [`Classifier`] whose raw output is its task's tensors flattened and
//! gathered (`model::TASK_OUTPUTS`); [`detect`] decodes them (`camlime_base::detection`). To
//! explain one detection, [`bind`] picks it and returns the classifier with a [`BoxScore`] head:
//! its one "class" is that detection's score, followed through each perturbed image by class and
//! IoU, 0 once the box is gone; its gradient seed is that score's element in the raw outputs.
//!
//! A segmenter's raw output is its flattened logit map; [`segment`] gives its predicted mask and
//! [`bind`] a [`RegionLogits`] head: the logits summed over the chosen region, whose gradient
//! seed is the region's indicator.

use std::sync::Arc;

use image::RgbImage;

use crate::detection::{BoxTarget, Detection, DetectorSpec};
use crate::explanation::{TaskConfig, TaskRecord};
use crate::model::{Classifier, Head, Pulled, Task};
use crate::region::{Region, RegionTarget};
use crate::{Error, Result};

/// The detector's decoding, or an error naming the model's task.
fn detector(classifier: &Classifier) -> Result<&DetectorSpec> {
    match &classifier.spec().task {
        Task::Detection(spec) => Ok(spec),
        other => Err(Error::Parameter(format!(
            "`{}` is a {} model, not a detector",
            classifier.spec().name,
            other.name()
        ))),
    }
}

/// The detections in a base image (already resized to the model's input), best first, scoring
/// above `min_score` (the model's score threshold when `None`).
pub fn detect(
    classifier: &Classifier,
    base: &RgbImage,
    min_score: Option<f32>,
) -> Result<Vec<Detection>> {
    let spec = detector(classifier)?;
    let threshold = min_score.unwrap_or(spec.score_threshold);
    if !(0.0..=1.0).contains(&threshold) {
        return Err(Error::Parameter(format!(
            "a score threshold must lie in [0, 1], got {threshold}"
        )));
    }
    let tensor = classifier
        .spec()
        .preprocessing
        .tensor(std::slice::from_ref(base))?;
    let raw = classifier.raw_outputs(tensor.view())?;
    let row = raw.row(0).to_vec();
    spec.detect(
        &row,
        classifier.input_size(),
        &classifier.spec().labels,
        threshold,
    )
}

/// A segmenter's raw logit map of one base image (already resized to the model's input).
fn logit_map(classifier: &Classifier, base: &RgbImage) -> Result<Vec<f32>> {
    let tensor = classifier
        .spec()
        .preprocessing
        .tensor(std::slice::from_ref(base))?;
    Ok(classifier.raw_outputs(tensor.view())?.row(0).to_vec())
}

/// A segmenter's predicted mask of a base image (already resized to the model's input).
pub fn segment(classifier: &Classifier, base: &RgbImage) -> Result<Region> {
    let size = classifier.segmentation_size()?;
    let Task::Segmentation(spec) = &classifier.spec().task else {
        unreachable!("segmentation_size checked the task")
    };
    spec.mask(&logit_map(classifier, base)?, size)
}

/// A segmenter's logits summed over a region as the one value explainers see.
#[derive(Debug)]
pub struct RegionLogits {
    label: String,
    pixels: Vec<usize>,
}

impl RegionLogits {
    /// The head of `region` (a map of the segmenter's size) on a segmenter with class `label`.
    pub fn new(classifier: &Classifier, region: &Region) -> Result<Self> {
        let size = classifier.segmentation_size()?;
        if region.size != size {
            return Err(Error::Parameter(format!(
                "the region is a {}×{} map, the segmenter's is {}×{}",
                region.size[0], region.size[1], size[0], size[1]
            )));
        }
        let pixels: Vec<usize> = region
            .mask()?
            .iter()
            .enumerate()
            .filter_map(|(i, &inside)| inside.then_some(i))
            .collect();
        let class = classifier
            .spec()
            .labels
            .first()
            .map_or("class 0", String::as_str);
        Ok(Self {
            label: format!("{class} logit summed over {} pixels", pixels.len()),
            pixels,
        })
    }

    fn sum(&self, raw: &[f32]) -> f32 {
        self.pixels.iter().filter_map(|&i| raw.get(i)).sum()
    }
}

impl Head for RegionLogits {
    fn labels(&self) -> Vec<String> {
        vec![self.label.clone()]
    }

    fn values(&self, raw: &[f32]) -> Vec<f32> {
        vec![self.sum(raw)]
    }

    fn pullback(&self, raw: &[f32], seed: &[f32]) -> Pulled {
        let mut pulled = vec![0.0; raw.len()];
        let s = seed.first().copied().unwrap_or(0.0);
        for &i in &self.pixels {
            if let Some(p) = pulled.get_mut(i) {
                *p = s;
            }
        }
        Pulled {
            values: vec![self.sum(raw)],
            seed: pulled,
        }
    }
}

/// A detection's score as the one value explainers see (see the module's description).
#[derive(Debug)]
pub struct BoxScore {
    spec: DetectorSpec,
    size: [usize; 2],
    labels: Vec<String>,
    target: BoxTarget,
}

impl BoxScore {
    /// The head of `target` on `classifier`'s detector.
    pub fn new(classifier: &Classifier, target: BoxTarget) -> Result<Self> {
        Ok(Self {
            spec: detector(classifier)?.clone(),
            size: classifier.input_size(),
            labels: classifier.spec().labels.clone(),
            target,
        })
    }

    /// The explained detection's match among one image's raw outputs, if it is still there.
    fn matched(&self, raw: &[f32]) -> Option<Detection> {
        let found = self
            .spec
            .detect(raw, self.size, &self.labels, self.spec.candidate_threshold)
            .ok()?;
        self.target.matched(&found).cloned()
    }
}

impl Head for BoxScore {
    fn labels(&self) -> Vec<String> {
        let d = &self.target.detection;
        vec![format!("{} (box score {:.3})", d.label, d.score)]
    }

    fn values(&self, raw: &[f32]) -> Vec<f32> {
        vec![self.matched(raw).map_or(0.0, |d| d.score)]
    }

    fn pullback(&self, raw: &[f32], seed: &[f32]) -> Pulled {
        let matched = self.matched(raw);
        let mut pulled = vec![0.0; raw.len()];
        if let (Some(d), Some(&s)) = (&matched, seed.first()) {
            pulled[d.index] = s;
        }
        Pulled {
            values: vec![matched.map_or(0.0, |d| d.score)],
            seed: pulled,
        }
    }
}

/// What a detector finds, for its messages: its one class's name ("face"), else "object".
fn what(classifier: &Classifier) -> String {
    match classifier.spec().labels.as_slice() {
        [one] => one.clone(),
        _ => "object".into(),
    }
}

/// The classifier an explanation runs on, and what its task found: `classifier` itself for a
/// classification; for a detection, the chosen box's [`BoxScore`] head. `base` is the
/// preprocessed base image. A task that does not fit the model is an error.
pub fn bind(
    classifier: &Classifier,
    base: &RgbImage,
    task: &TaskConfig,
) -> Result<(Option<Classifier>, Option<TaskRecord>)> {
    check(classifier, task)?;
    match task {
        TaskConfig::Classification => Ok((None, None)),
        TaskConfig::Detection(choice) => {
            let detections = detect(classifier, base, None)?;
            let target = BoxTarget {
                detection: choice.pick(&detections, &what(classifier))?.clone(),
            };
            let record = TaskRecord::Detection { detections, target };
            Ok((Some(headed(classifier, &record)?), Some(record)))
        }
        TaskConfig::Segmentation(choice) => {
            let size = classifier.segmentation_size()?;
            let Task::Segmentation(spec) = &classifier.spec().task else {
                unreachable!("segmentation_size checked the task")
            };
            let logits = logit_map(classifier, base)?;
            let predicted = spec.mask(&logits, size)?;
            let region = choice.pick(&predicted, size, classifier.input_size())?;
            let head = RegionLogits::new(classifier, &region)?;
            let record = TaskRecord::Segmentation(RegionTarget {
                score: head.sum(&logits),
                predicted,
                region,
            });
            Ok((Some(classifier.with_head(Arc::new(head))?), Some(record)))
        }
    }
}

/// `classifier` with the head of a sample job's task, if it has one (how every phase after
/// `start` rebuilds it).
pub fn for_job(classifier: &Classifier, task: Option<&TaskRecord>) -> Result<Option<Classifier>> {
    task.map(|t| headed(classifier, t)).transpose()
}

/// `classifier` with the head of a task record (how the sample workers rebuild it).
pub fn headed(classifier: &Classifier, record: &TaskRecord) -> Result<Classifier> {
    match record {
        TaskRecord::Detection { target, .. } => {
            classifier.with_head(Arc::new(BoxScore::new(classifier, target.clone())?))
        }
        TaskRecord::Segmentation(target) => {
            classifier.with_head(Arc::new(RegionLogits::new(classifier, &target.region)?))
        }
    }
}

/// The model's task and the explanation's agree, and the choice fits the model.
pub fn check(classifier: &Classifier, task: &TaskConfig) -> Result<()> {
    let model_task = &classifier.spec().task;
    if model_task.name() != task.name() {
        let hint = match model_task {
            Task::Detection(_) => {
                " (explain one of its boxes: task `detection`, `--task detection`)"
            }
            Task::Segmentation(_) => {
                " (explain a region of its mask: task `segmentation`, `--task segmentation`)"
            }
            Task::Classification => "",
        };
        return Err(Error::Parameter(format!(
            "`{}` is a {} model but the explanation asks for {}{hint}",
            classifier.spec().name,
            model_task.name(),
            task.name()
        )));
    }
    if let TaskConfig::Detection(choice) = task
        && let Some(class) = choice.class
    {
        let classes = classifier.spec().labels.len();
        if classes > 0 && class >= classes {
            return Err(Error::Parameter(format!(
                "class {class} is out of range: the detector has {classes} classes"
            )));
        }
    }
    if let TaskConfig::Segmentation(choice) = task {
        choice.validate()?;
    }
    Ok(())
}
