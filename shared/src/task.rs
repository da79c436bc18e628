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
use crate::explanation::IdentityTarget;
use crate::explanation::{TaskConfig, TaskRecord};
use crate::face::{FaceCrop, FaceInfo};
use crate::model::{Classifier, Head, Pulled, Task};
use crate::preprocess::ResizeMode;
use crate::region::{Region, RegionTarget};
use crate::{Error, Result};

/// The detector's decoding, or an error naming the model's task.
fn detector(classifier: &Classifier) -> Result<&DetectorSpec> {
    match &classifier.spec().task {
        Task::Detection(spec) => Ok(spec),
        other => Err(Error::Parameter(format!(
            "`{}` is {} model, not a detector",
            classifier.spec().name,
            other.with_article()
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

/// The `choice`-th face `detector` finds in `photo` (best first), cut from the photo as `crop`
/// says: the face image a face model explains, and what the record keeps of it. The detector's
/// preprocessing must resize the whole photo (its boxes map back to the photo by scaling).
pub fn crop_face(
    detector: &Classifier,
    photo: &RgbImage,
    choice: &crate::detection::BoxChoice,
    crop: &FaceCrop,
) -> Result<(RgbImage, FaceInfo)> {
    let preprocessing = &detector.spec().preprocessing;
    if preprocessing.resize != ResizeMode::Exact(preprocessing.crop) {
        return Err(Error::Model(format!(
            "the face detector `{}` must resize the whole photo to its input",
            detector.spec().name
        )));
    }
    let base = preprocessing.base_image(photo)?;
    let faces = detect(detector, &base, None)?;
    let detection = choice.pick(&faces, &what(detector))?.clone();
    let face = choice.index.unwrap_or(0);
    let photo_size = [photo.height(), photo.width()];
    let input = [base.height(), base.width()];
    let area = crop.crop_box(&detection.bbox.scaled(input, photo_size), photo_size)?;
    let (width, height) = area.size();
    let image = image::imageops::crop_imm(photo, area.x0, area.y0, width, height).to_image();
    let info = FaceInfo {
        detector: detector.spec().name.clone(),
        face,
        detection,
        crop: area,
        found: faces.len(),
    };
    Ok((image, info))
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

/// A face embedding's cosine similarity to a reference embedding as the one value explainers
/// see (pytorch-grad-cam's `SimilarityToConceptTarget`).
#[derive(Debug)]
pub struct Similarity {
    /// The reference, unit length.
    reference: Vec<f32>,
}

impl Similarity {
    /// The head comparing `classifier`'s embeddings with `reference` (same length, not zero).
    pub fn new(classifier: &Classifier, reference: &[f32]) -> Result<Self> {
        let dimensions = classifier.num_classes();
        if reference.len() != dimensions {
            return Err(Error::Parameter(format!(
                "the reference embedding has {} values; `{}` embeds faces in {dimensions}",
                reference.len(),
                classifier.spec().name
            )));
        }
        let norm = reference.iter().map(|v| v * v).sum::<f32>().sqrt();
        if !(norm.is_finite() && norm > 0.0) {
            return Err(Error::Parameter(
                "the reference embedding must be finite and not zero".into(),
            ));
        }
        Ok(Self {
            reference: reference.iter().map(|v| v / norm).collect(),
        })
    }

    /// cos(e, r), and |e|.
    fn cosine(&self, embedding: &[f32]) -> (f32, f32) {
        let norm = embedding.iter().map(|v| v * v).sum::<f32>().sqrt();
        let dot: f32 = embedding
            .iter()
            .zip(&self.reference)
            .map(|(e, r)| e * r)
            .sum();
        if norm > 0.0 {
            (dot / norm, norm)
        } else {
            (0.0, 0.0)
        }
    }
}

impl Head for Similarity {
    fn labels(&self) -> Vec<String> {
        vec!["cosine similarity to the reference face".into()]
    }

    fn values(&self, raw: &[f32]) -> Vec<f32> {
        vec![self.cosine(raw).0]
    }

    fn pullback(&self, raw: &[f32], seed: &[f32]) -> Pulled {
        // ∂cos/∂e = (r̂ − cos · e/|e|) / |e|.
        let (cos, norm) = self.cosine(raw);
        let s = seed.first().copied().unwrap_or(0.0);
        let seed = if norm > 0.0 {
            raw.iter()
                .zip(&self.reference)
                .map(|(e, r)| s * (r - cos * e / norm) / norm)
                .collect()
        } else {
            vec![0.0; raw.len()]
        };
        Pulled {
            values: vec![cos],
            seed,
        }
    }
}

/// A face model's embedding of one base image (already resized to the model's input).
pub fn embed(classifier: &Classifier, base: &RgbImage) -> Result<Vec<f32>> {
    if classifier.spec().task != Task::Embedding {
        return Err(Error::Parameter(format!(
            "`{}` is {} model, not a face embedding",
            classifier.spec().name,
            classifier.spec().task.with_article()
        )));
    }
    let tensor = classifier
        .spec()
        .preprocessing
        .tensor(std::slice::from_ref(base))?;
    Ok(classifier.raw_outputs(tensor.view())?.row(0).to_vec())
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
        TaskConfig::Identity(choice) => {
            let head = Similarity::new(classifier, &choice.reference)?;
            let embedding = embed(classifier, base)?;
            let record = TaskRecord::Identity(IdentityTarget {
                similarity: head.cosine(&embedding).0,
                embedding,
                reference: choice.reference.clone(),
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
        TaskRecord::Identity(target) => {
            classifier.with_head(Arc::new(Similarity::new(classifier, &target.reference)?))
        }
    }
}

/// The model's task and the explanation's agree, and the choice fits the model.
pub fn check(classifier: &Classifier, task: &TaskConfig) -> Result<()> {
    let model_task = &classifier.spec().task;
    let fits = match (model_task, task) {
        (Task::Embedding, TaskConfig::Identity(_)) => true,
        (Task::Embedding, _) | (_, TaskConfig::Identity(_)) => false,
        _ => model_task.name() == task.name(),
    };
    if !fits {
        let hint = match model_task {
            Task::Detection(_) => {
                " (explain one of its boxes: task `detection`, `--task detection`)"
            }
            Task::Segmentation(_) => {
                " (explain a region of its mask: task `segmentation`, `--task segmentation`)"
            }
            Task::Embedding => {
                " (explain its similarity to a reference face: task `identity`, `--reference \
                 FACE.jpg`)"
            }
            Task::Classification => "",
        };
        return Err(Error::Parameter(format!(
            "`{}` is {} model but the explanation asks for {}{hint}",
            classifier.spec().name,
            model_task.with_article(),
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
