//! Object detection in plain data: what a detector's raw outputs mean ([`DetectorSpec`]), their
//! decoding into [`Detection`]s, class-aware non-maximum suppression, and the box target that
//! explanations of one detection score ([`BoxTarget`]).
//!
//! Decoding follows NanoDet's own (RangiLyu/nanodet 0.x `GFLHead.get_bboxes`): anchor centres at
//! `(x + 0.5, y + 0.5) · stride`, each side's distance the expectation of a softmax over
//! `reg_max + 1` bins times the stride, boxes clipped to the input; then every (anchor, class)
//! whose score exceeds the threshold is a candidate, and NMS is torchvision's `batched_nms`
//! (per class, highest score first, a box suppressed when its IoU with a kept one exceeds the
//! threshold), keeping the `max_detections` best.
//!
//! BlazeFace (MediaPipe's face detector) is decoded as @vladmandic/human's `blazeface.ts` does:
//! each level's cells carry `anchors` anchors at `(x + 0.5, y + 0.5) · stride`; an anchor's 16
//! regressors start with its box centre's offset (x, y) and the box's width and height, in input
//! pixels (not clipped); its one score is the face probability. NMS is the same (one class).

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// An axis-aligned box in model-input pixels: left, top, right, bottom.
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct BoundingBox {
    /// Left edge.
    pub x0: f32,
    /// Top edge.
    pub y0: f32,
    /// Right edge.
    pub x1: f32,
    /// Bottom edge.
    pub y1: f32,
}

impl BoundingBox {
    /// Width × height (0 for an empty box).
    pub fn area(&self) -> f32 {
        (self.x1 - self.x0).max(0.0) * (self.y1 - self.y0).max(0.0)
    }

    /// Intersection over union, as torchvision's `box_iou` computes it.
    pub fn iou(&self, other: &BoundingBox) -> f32 {
        let w = (self.x1.min(other.x1) - self.x0.max(other.x0)).max(0.0);
        let h = (self.y1.min(other.y1) - self.y0.max(other.y0)).max(0.0);
        let inter = w * h;
        let union = self.area() + other.area() - inter;
        if union > 0.0 { inter / union } else { 0.0 }
    }

    /// The box scaled from a `from` = `[height, width]` image to a `to` one.
    pub fn scaled(&self, from: [u32; 2], to: [u32; 2]) -> BoundingBox {
        let sx = to[1] as f32 / from[1] as f32;
        let sy = to[0] as f32 / from[0] as f32;
        BoundingBox {
            x0: self.x0 * sx,
            y0: self.y0 * sy,
            x1: self.x1 * sx,
            y1: self.y1 * sy,
        }
    }
}

/// One detected object.
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    /// Where, in model-input pixels.
    #[serde(rename = "box")]
    pub bbox: BoundingBox,
    /// Class index.
    pub class: usize,
    /// Class name.
    pub label: String,
    /// The class score (after the model's sigmoid).
    pub score: f32,
    /// Where that score sits in the model's flattened outputs (the gradient's seed).
    pub index: usize,
}

/// Which decoding a detector's outputs need.
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DetectorKind {
    /// NanoDet 0.x: per level, sigmoid class scores and GFL side distributions.
    Nanodet,
    /// BlazeFace: per level, each anchor's face probability and 16 box/landmark regressors.
    Blazeface,
}

/// Regressors per BlazeFace anchor: centre offset x, y, width, height, 6 landmarks × (x, y).
const BLAZEFACE_REGRESSORS: usize = 16;

/// What a detector's outputs are and how they become detections (the manifest's `detector`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectorSpec {
    /// The decoding.
    pub kind: DetectorKind,
    /// Each level's stride in input pixels.
    pub strides: Vec<u32>,
    /// Anchors per cell at each level (BlazeFace).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub anchors: Vec<usize>,
    /// Bins per side minus one (NanoDet).
    #[serde(default)]
    pub reg_max: usize,
    /// Each level's class scores, `N × classes × H × W` (BlazeFace: `N × anchors × H × W`).
    pub scores: Vec<String>,
    /// Each level's side distributions, `N × 4·(reg_max+1) × H × W` (BlazeFace: the
    /// regressors, `N × 16·anchors × H × W`).
    pub distributions: Vec<String>,
    /// Detections shown and offered as targets score above this.
    pub score_threshold: f32,
    /// In a perturbed image, the explained box is looked for among detections above this
    /// (the model's own evaluation threshold: a box fading out scores its fading score).
    pub candidate_threshold: f32,
    /// NMS suppresses a box whose IoU with a better one of its class exceeds this.
    pub iou_threshold: f32,
    /// At most this many detections, best first.
    pub max_detections: usize,
}

/// IoU a detection in a perturbed image needs with the explained box to count as it
/// (pytorch-grad-cam's `FasterRCNNBoxScoreTarget` default).
pub const MATCH_IOU: f32 = 0.5;

impl DetectorSpec {
    /// The tensors the decoding reads, in the order of the flattened output: every level's
    /// scores, then every level's distributions.
    pub fn outputs(&self) -> Vec<String> {
        self.scores
            .iter()
            .chain(&self.distributions)
            .cloned()
            .collect()
    }

    /// Checks that need no model.
    pub fn validate(&self) -> Result<()> {
        let levels = self.strides.len();
        if levels == 0 || self.scores.len() != levels || self.distributions.len() != levels {
            return Err(Error::Manifest(format!(
                "a detector needs one score and one distribution tensor per stride: {} strides, \
                 {} score tensors, {} distribution tensors",
                levels,
                self.scores.len(),
                self.distributions.len()
            )));
        }
        if self.strides.contains(&0) || self.max_detections == 0 {
            return Err(Error::Manifest(
                "a detector's strides and max_detections must be positive".into(),
            ));
        }
        match self.kind {
            DetectorKind::Nanodet if self.reg_max == 0 => {
                return Err(Error::Manifest(
                    "a NanoDet detector's reg_max must be positive".into(),
                ));
            }
            DetectorKind::Blazeface
                if self.anchors.len() != levels || self.anchors.contains(&0) =>
            {
                return Err(Error::Manifest(format!(
                    "a BlazeFace detector needs a positive anchor count per stride: {} strides, \
                     anchors {:?}",
                    levels, self.anchors
                )));
            }
            _ => {}
        }
        for (name, value) in [
            ("score_threshold", self.score_threshold),
            ("candidate_threshold", self.candidate_threshold),
            ("iou_threshold", self.iou_threshold),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return Err(Error::Manifest(format!(
                    "a detector's {name} must lie in [0, 1], got {value}"
                )));
            }
        }
        Ok(())
    }

    /// The level grids `[H, W]` at an input of `size` = `[height, width]`.
    fn grids(&self, size: [usize; 2]) -> Vec<[usize; 2]> {
        self.strides
            .iter()
            .map(|&s| [size[0].div_ceil(s as usize), size[1].div_ceil(s as usize)])
            .collect()
    }

    /// The class count the flattened output of `len` values implies at `size`, or an error
    /// saying what was expected.
    pub fn classes(&self, size: [usize; 2], len: usize) -> Result<usize> {
        if self.kind == DetectorKind::Blazeface {
            let anchors: usize = self
                .grids(size)
                .iter()
                .zip(&self.anchors)
                .map(|([h, w], a)| h * w * a)
                .sum();
            if len != anchors * (1 + BLAZEFACE_REGRESSORS) {
                return Err(Error::Model(format!(
                    "the face detector's outputs hold {len} values; strides {:?} with anchors \
                     {:?} at {}×{} need {anchors} anchors × (1 score + 16 regressors)",
                    self.strides, self.anchors, size[0], size[1]
                )));
            }
            return Ok(1);
        }
        let cells: usize = self.grids(size).iter().map(|[h, w]| h * w).sum();
        let sides = 4 * (self.reg_max + 1) * cells;
        if len <= sides || !(len - sides).is_multiple_of(cells) {
            return Err(Error::Model(format!(
                "the detector's outputs hold {len} values; strides {:?} with reg_max {} at \
                 {}×{} need 4·{} side bins and a whole number of classes per cell",
                self.strides,
                self.reg_max,
                size[0],
                size[1],
                self.reg_max + 1
            )));
        }
        Ok((len - sides) / cells)
    }

    /// Every (cell, class) scoring above `min_score`, decoded, before NMS. `raw` is one image's
    /// flattened outputs ([`DetectorSpec::outputs`] order), `size` the input `[height, width]`.
    pub fn candidates(
        &self,
        raw: &[f32],
        size: [usize; 2],
        labels: &[String],
        min_score: f32,
    ) -> Result<Vec<Detection>> {
        let classes = self.classes(size, raw.len())?;
        if self.kind == DetectorKind::Blazeface {
            return Ok(self.anchor_candidates(raw, size, labels, min_score));
        }
        let grids = self.grids(size);
        let bins = self.reg_max + 1;
        let mut score_offset = 0;
        let mut side_offset: usize = grids.iter().map(|[h, w]| classes * h * w).sum();
        let mut found = Vec::new();
        for (&stride, &[h, w]) in self.strides.iter().zip(&grids) {
            let cells = h * w;
            let scores = &raw[score_offset..score_offset + classes * cells];
            let sides = &raw[side_offset..side_offset + 4 * bins * cells];
            for cell in 0..cells {
                let mut best = None;
                for class in 0..classes {
                    let score = scores[class * cells + cell];
                    if score > min_score {
                        let bbox = *best.get_or_insert_with(|| {
                            self.decode_box(sides, cell, cells, [h, w], stride, size)
                        });
                        found.push(Detection {
                            bbox,
                            class,
                            label: labels
                                .get(class)
                                .cloned()
                                .unwrap_or_else(|| format!("class {class}")),
                            score,
                            index: score_offset + class * cells + cell,
                        });
                    }
                }
            }
            score_offset += classes * cells;
            side_offset += 4 * bins * cells;
        }
        Ok(found)
    }

    /// BlazeFace's anchors scoring above `min_score`, decoded (one class).
    fn anchor_candidates(
        &self,
        raw: &[f32],
        size: [usize; 2],
        labels: &[String],
        min_score: f32,
    ) -> Vec<Detection> {
        let grids = self.grids(size);
        let mut score_offset = 0;
        let mut box_offset: usize = grids
            .iter()
            .zip(&self.anchors)
            .map(|([h, w], a)| h * w * a)
            .sum();
        let mut found = Vec::new();
        for ((&stride, &[h, w]), &anchors) in self.strides.iter().zip(&grids).zip(&self.anchors) {
            let cells = h * w;
            let stride = stride as f32;
            for cell in 0..cells {
                for a in 0..anchors {
                    let index = score_offset + a * cells + cell;
                    let score = raw[index];
                    if score <= min_score {
                        continue;
                    }
                    let r =
                        |k: usize| raw[box_offset + (a * BLAZEFACE_REGRESSORS + k) * cells + cell];
                    let cx = ((cell % w) as f32 + 0.5) * stride + r(0);
                    let cy = ((cell / w) as f32 + 0.5) * stride + r(1);
                    let (half_w, half_h) = (r(2) / 2.0, r(3) / 2.0);
                    found.push(Detection {
                        bbox: BoundingBox {
                            x0: cx - half_w,
                            y0: cy - half_h,
                            x1: cx + half_w,
                            y1: cy + half_h,
                        },
                        class: 0,
                        label: labels.first().cloned().unwrap_or_else(|| "face".into()),
                        score,
                        index,
                    });
                }
            }
            score_offset += anchors * cells;
            box_offset += anchors * BLAZEFACE_REGRESSORS * cells;
        }
        found
    }

    /// One cell's box: the four sides' expected distances around its centre, clipped.
    fn decode_box(
        &self,
        sides: &[f32],
        cell: usize,
        cells: usize,
        [_, w]: [usize; 2],
        stride: u32,
        size: [usize; 2],
    ) -> BoundingBox {
        let bins = self.reg_max + 1;
        let stride = stride as f32;
        let mut distance = [0f32; 4];
        for (side, d) in distance.iter_mut().enumerate() {
            let logits: Vec<f32> = (0..bins)
                .map(|k| sides[(side * bins + k) * cells + cell])
                .collect();
            let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let exps: Vec<f32> = logits.iter().map(|&l| (l - max).exp()).collect();
            let sum: f32 = exps.iter().sum();
            let expectation: f32 = exps
                .iter()
                .enumerate()
                .map(|(k, e)| e / sum * k as f32)
                .sum();
            *d = expectation * stride;
        }
        let cx = ((cell % w) as f32 + 0.5) * stride;
        let cy = ((cell / w) as f32 + 0.5) * stride;
        let (width, height) = (size[1] as f32, size[0] as f32);
        BoundingBox {
            x0: (cx - distance[0]).clamp(0.0, width),
            y0: (cy - distance[1]).clamp(0.0, height),
            x1: (cx + distance[2]).clamp(0.0, width),
            y1: (cy + distance[3]).clamp(0.0, height),
        }
    }

    /// The detections of one image's flattened outputs above `min_score`, after NMS, best first.
    pub fn detect(
        &self,
        raw: &[f32],
        size: [usize; 2],
        labels: &[String],
        min_score: f32,
    ) -> Result<Vec<Detection>> {
        let candidates = self.candidates(raw, size, labels, min_score)?;
        Ok(nms(candidates, self.iou_threshold, self.max_detections))
    }
}

/// Class-aware non-maximum suppression (torchvision's `batched_nms`): highest score first, a
/// candidate is dropped when its IoU with a kept detection of its class exceeds `iou_threshold`;
/// at most `max` detections, best first (ties: earlier candidate first).
pub fn nms(mut candidates: Vec<Detection>, iou_threshold: f32, max: usize) -> Vec<Detection> {
    candidates.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept: Vec<Detection> = Vec::new();
    for candidate in candidates {
        if kept.len() == max {
            break;
        }
        let suppressed = kept
            .iter()
            .any(|k| k.class == candidate.class && k.bbox.iou(&candidate.bbox) > iou_threshold);
        if !suppressed {
            kept.push(candidate);
        }
    }
    kept
}

/// Which detection an explanation targets (the configuration's `task`).
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BoxChoice {
    /// The detection at this index (best first); with `class`, the index among that class's.
    #[serde(rename = "box")]
    pub index: Option<usize>,
    /// Only detections of this class.
    pub class: Option<usize>,
}

impl BoxChoice {
    /// The chosen detection among `detections` (best first), or an error saying what there is
    /// (`what` the detector finds: "object", "face").
    pub fn pick<'a>(&self, detections: &'a [Detection], what: &str) -> Result<&'a Detection> {
        let pool: Vec<&Detection> = detections
            .iter()
            .filter(|d| self.class.is_none_or(|c| d.class == c))
            .collect();
        let index = self.index.unwrap_or(0);
        pool.get(index).copied().ok_or_else(|| {
            let of = match self.class {
                Some(c) => format!(" of class {c}"),
                None => String::new(),
            };
            if pool.is_empty() {
                Error::Parameter(format!(
                    "the model detects no {what}{of} above its score threshold in this image"
                ))
            } else {
                Error::Parameter(format!(
                    "box {index} is out of range: {} detection{}{of} (boxes 0..={})",
                    pool.len(),
                    if pool.len() == 1 { "" } else { "s" },
                    pool.len() - 1
                ))
            }
        })
    }
}

/// The score of one detection, followed through perturbed images: in each, the detections of
/// its class whose IoU with its box is at least [`MATCH_IOU`]; the best one's score, or 0 when
/// none is left (pytorch-grad-cam's `FasterRCNNBoxScoreTarget` matching, without its IoU term).
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BoxTarget {
    /// The explained detection in the original image.
    pub detection: Detection,
}

impl BoxTarget {
    /// The matched detection among one image's detections, if any.
    pub fn matched<'a>(&self, detections: &'a [Detection]) -> Option<&'a Detection> {
        let reference = &self.detection;
        detections
            .iter()
            .filter(|d| d.class == reference.class && d.bbox.iou(&reference.bbox) >= MATCH_IOU)
            .max_by(|a, b| a.score.total_cmp(&b.score).then(b.index.cmp(&a.index)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(x0: f32, class: usize, score: f32, index: usize) -> Detection {
        Detection {
            bbox: BoundingBox {
                x0,
                y0: 0.0,
                x1: x0 + 10.0,
                y1: 10.0,
            },
            class,
            label: String::new(),
            score,
            index,
        }
    }

    #[test]
    fn nms_suppresses_overlaps_of_the_same_class_only() {
        let kept = nms(
            vec![
                det(0.0, 0, 0.5, 0),
                det(1.0, 0, 0.9, 1),
                det(1.0, 1, 0.8, 2),
                det(30.0, 0, 0.4, 3),
            ],
            0.6,
            10,
        );
        let order: Vec<usize> = kept.iter().map(|d| d.index).collect();
        assert_eq!(order, [1, 2, 3]);
        assert_eq!(
            nms(vec![det(0.0, 0, 0.5, 0), det(50.0, 0, 0.6, 1)], 0.6, 1).len(),
            1
        );
    }

    #[test]
    fn a_box_that_disappears_scores_nothing() {
        let target = BoxTarget {
            detection: det(0.0, 2, 0.9, 7),
        };
        assert_eq!(
            target.matched(&[det(0.0, 2, 0.3, 9)]).map(|d| d.score),
            Some(0.3)
        );
        assert!(target.matched(&[det(0.0, 1, 0.9, 9)]).is_none());
        assert!(target.matched(&[det(6.0, 2, 0.9, 9)]).is_none());
        assert!(target.matched(&[]).is_none());
    }

    #[test]
    fn box_choices_out_of_range_are_errors() {
        let found = [det(0.0, 0, 0.9, 0), det(20.0, 3, 0.8, 1)];
        let pick = |index, class| {
            BoxChoice { index, class }
                .pick(&found, "object")
                .map(|d| d.index)
        };
        assert_eq!(pick(None, None).unwrap(), 0);
        assert_eq!(pick(Some(0), Some(3)).unwrap(), 1);
        assert!(
            pick(Some(2), None)
                .unwrap_err()
                .to_string()
                .contains("boxes 0..=1")
        );
        assert!(
            pick(None, Some(5))
                .unwrap_err()
                .to_string()
                .contains("no object of class 5")
        );
    }
}
