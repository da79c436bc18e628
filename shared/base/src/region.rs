//! Segmentation in plain data: what a segmenter's raw output means ([`SegmentationSpec`]), its
//! predicted mask, and the region of pixels an explanation targets ([`Region`], [`RegionChoice`]).
//!
//! A segmenter here outputs one logit map `N × 1 × H × W` (a sigmoid of it is the probability of
//! its one class, e.g. MediaPipe Selfie's "person"). The predicted mask is every pixel whose
//! probability reaches the threshold. An explanation targets the logits summed over a region —
//! the predicted mask, a box, or a mask the user gives — as pytorch-grad-cam's
//! `SemanticSegmentationTarget` does (`(output[class] · mask).sum()`).

use serde::{Deserialize, Serialize};

use crate::detection::BoundingBox;
use crate::{Error, Result};

/// What a segmenter's output is.
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentationSpec {
    /// The logit map (`N × 1 × H × W`, before its sigmoid).
    pub logits: String,
    /// The probability from which a pixel belongs to the predicted mask.
    pub threshold: f32,
}

impl SegmentationSpec {
    /// The tensors a segmenter's task reads, in the order they are gathered.
    pub fn outputs(&self) -> Vec<String> {
        vec![self.logits.clone()]
    }

    /// The threshold lies strictly between 0 and 1.
    pub fn validate(&self) -> Result<()> {
        if !(self.threshold > 0.0 && self.threshold < 1.0) {
            return Err(Error::Manifest(format!(
                "a segmenter's threshold must lie strictly between 0 and 1, got {}",
                self.threshold
            )));
        }
        Ok(())
    }

    /// The predicted mask of one image's logits, a `size` = `[height, width]` map.
    pub fn mask(&self, logits: &[f32], size: [usize; 2]) -> Result<Region> {
        if logits.len() != size[0] * size[1] {
            return Err(Error::Model(format!(
                "the segmenter's output holds {} values, not one {}×{} map",
                logits.len(),
                size[0],
                size[1]
            )));
        }
        // σ(x) ≥ t ⇔ x ≥ ln(t / (1 − t)).
        let cut = (self.threshold / (1.0 - self.threshold)).ln();
        let inside: Vec<bool> = logits.iter().map(|&x| x >= cut).collect();
        Ok(Region::from_mask(size, &inside))
    }
}

/// A set of pixels of a `[height, width]` map, run-length encoded in row-major order: run
/// lengths alternate between pixels outside and inside, starting outside (a first run of 0 when
/// the first pixel is inside). COCO's RLE, but row-major.
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Region {
    /// `[height, width]` of the map.
    pub size: [usize; 2],
    /// Alternating run lengths, outside first; they sum to height × width.
    pub runs: Vec<usize>,
}

impl Region {
    /// The region of the `true` pixels of a row-major mask.
    pub fn from_mask(size: [usize; 2], inside: &[bool]) -> Region {
        let mut runs = Vec::new();
        let mut state = false;
        let mut length = 0;
        for &pixel in inside {
            if pixel != state {
                runs.push(length);
                state = pixel;
                length = 0;
            }
            length += 1;
        }
        runs.push(length);
        Region { size, runs }
    }

    /// The pixels inside `bbox` (in pixels of a `from` = `[height, width]` image, scaled to
    /// this map): those whose centre lies in the box.
    pub fn from_box(size: [usize; 2], bbox: &BoundingBox, from: [usize; 2]) -> Region {
        let b = bbox.scaled(
            [from[0] as u32, from[1] as u32],
            [size[0] as u32, size[1] as u32],
        );
        let inside: Vec<bool> = (0..size[0] * size[1])
            .map(|i| {
                let (x, y) = ((i % size[1]) as f32 + 0.5, (i / size[1]) as f32 + 0.5);
                x >= b.x0 && x < b.x1 && y >= b.y0 && y < b.y1
            })
            .collect();
        Region::from_mask(size, &inside)
    }

    /// The runs add up to the map, which is not empty.
    pub fn validate(&self) -> Result<()> {
        let pixels = self.size[0] * self.size[1];
        let total = self.runs.iter().try_fold(0usize, |a, &r| a.checked_add(r));
        if pixels == 0 || total != Some(pixels) {
            return Err(Error::Parameter(format!(
                "a region's runs must add up to its {}×{} pixels, they add up to {}",
                self.size[0],
                self.size[1],
                total.map_or_else(|| "more than the address space".into(), |t| t.to_string())
            )));
        }
        Ok(())
    }

    /// The region as a row-major mask (checked first: [`Region::validate`]).
    pub fn mask(&self) -> Result<Vec<bool>> {
        self.validate()?;
        let mut mask = Vec::with_capacity(self.size[0] * self.size[1]);
        for (i, &run) in self.runs.iter().enumerate() {
            mask.extend(std::iter::repeat_n(i % 2 == 1, run));
        }
        Ok(mask)
    }

    /// How many pixels are inside.
    pub fn area(&self) -> usize {
        self.runs.iter().skip(1).step_by(2).sum()
    }

    /// The region at another map size (nearest neighbour: each pixel of the new map takes the
    /// pixel its centre falls in).
    pub fn resized(&self, size: [usize; 2]) -> Result<Region> {
        if size == self.size {
            return Ok(self.clone());
        }
        let mask = self.mask()?;
        let [h, w] = self.size;
        let inside: Vec<bool> = (0..size[0] * size[1])
            .map(|i| {
                let y = ((i / size[1]) * h + h / 2) / size[0];
                let x = ((i % size[1]) * w + w / 2) / size[1];
                mask[y.min(h - 1) * w + x.min(w - 1)]
            })
            .collect();
        Ok(Region::from_mask(size, &inside))
    }
}

/// Which region a segmentation explanation targets (the configuration's `task`): the predicted
/// mask unless `region` says otherwise.
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegionChoice {
    /// A box or a mask; none means the predicted mask.
    pub region: Option<RegionShape>,
}

/// A region the user gives.
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum RegionShape {
    /// The pixels in a box, in model-input pixels.
    Box(BoundingBox),
    /// A mask (any size: it is resized to the segmenter's map by nearest neighbour).
    Mask(Region),
}

impl RegionChoice {
    /// A box is finite with x0 < x1 and y0 < y1; a mask's runs add up to its size.
    pub fn validate(&self) -> Result<()> {
        match &self.region {
            None => Ok(()),
            Some(RegionShape::Box(b)) => {
                let finite = [b.x0, b.y0, b.x1, b.y1].iter().all(|v| v.is_finite());
                if finite && b.x0 < b.x1 && b.y0 < b.y1 {
                    Ok(())
                } else {
                    Err(Error::Parameter(format!(
                        "a region box needs finite x0 < x1 and y0 < y1, got ({}, {}, {}, {})",
                        b.x0, b.y0, b.x1, b.y1
                    )))
                }
            }
            Some(RegionShape::Mask(mask)) => mask.validate(),
        }
    }

    /// The targeted pixels of a `size` map given the predicted mask and the model's `input`
    /// `[height, width]`; an empty region is an error.
    pub fn pick(&self, predicted: &Region, size: [usize; 2], input: [usize; 2]) -> Result<Region> {
        self.validate()?;
        let region = match &self.region {
            None => predicted.clone(),
            Some(RegionShape::Box(b)) => Region::from_box(size, b, input),
            Some(RegionShape::Mask(mask)) => mask.resized(size)?,
        };
        if region.area() == 0 {
            return Err(Error::Parameter(match &self.region {
                None => "the segmenter finds nothing of its class in this image; give a region \
                         (a box or a mask) to explain"
                    .into(),
                Some(_) => "the region holds no pixel of the segmenter's map".into(),
            }));
        }
        Ok(region)
    }
}

/// The segmentation an explanation found and targeted (kept in its record).
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RegionTarget {
    /// The predicted mask in the base image.
    pub predicted: Region,
    /// The explained region.
    pub region: Region,
    /// The region's summed logit in the base image (the value explained).
    pub score: f32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_round_trip_and_start_outside() {
        let mask = [true, true, false, true, false, false];
        let region = Region::from_mask([2, 3], &mask);
        assert_eq!(region.runs, vec![0, 2, 1, 1, 2]);
        assert_eq!(region.mask().unwrap(), mask);
        assert_eq!(region.area(), 3);
        let short = Region {
            size: [2, 3],
            runs: vec![1, 2],
        };
        assert!(
            short
                .mask()
                .unwrap_err()
                .to_string()
                .contains("add up to 3")
        );
    }

    #[test]
    fn the_mask_cuts_at_the_threshold_logit() {
        let spec = SegmentationSpec {
            logits: "logits".into(),
            threshold: 0.75,
        };
        // ln(3) = 1.0986.
        let region = spec.mask(&[1.0, 1.1, -5.0, 3.0], [2, 2]).unwrap();
        assert_eq!(region.mask().unwrap(), [false, true, false, true]);
        assert!(spec.mask(&[0.0; 3], [2, 2]).is_err());
    }

    #[test]
    fn boxes_and_masks_scale_to_the_map() {
        let b = BoundingBox {
            x0: 0.0,
            y0: 0.0,
            x1: 4.0,
            y1: 2.0,
        };
        // A box in an 8×8 input on a 4×4 map covers 2 columns and 1 row.
        let region = Region::from_box([4, 4], &b, [8, 8]);
        assert_eq!(region.area(), 2);
        assert_eq!(region.resized([8, 8]).unwrap().area(), 8);
        let choice = RegionChoice {
            region: Some(RegionShape::Box(BoundingBox { x1: 0.0, ..b })),
        };
        assert!(choice.pick(&region, [4, 4], [8, 8]).is_err());
        let empty = Region::from_mask([4, 4], &[false; 16]);
        let predicted = RegionChoice::default().pick(&empty, [4, 4], [8, 8]);
        assert!(predicted.unwrap_err().to_string().contains("finds nothing"));
    }
}
