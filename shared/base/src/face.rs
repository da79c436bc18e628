//! Face models in plain data: a model that explains faces names the detector that finds them
//! and the margin of its crop ([`FaceCrop`]); an explanation of a face records which face of the
//! photo it cropped ([`FaceInfo`]).
//!
//! The crop follows @vladmandic/human's `facemeshutil.ts`: the detector's box (in photo pixels)
//! is enlarged about its centre by the margin (`enlargeBox`), made square on its longer side and
//! rounded (`squarifyBox`, `Math.round`), then clamped to the photo.

use serde::{Deserialize, Serialize};

use crate::detection::{BoundingBox, Detection};
use crate::{Error, Result};

/// How a face model's input is cut from a photo (the manifest's `face`).
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaceCrop {
    /// The bundled face detector that finds the faces.
    pub detector: String,
    /// The detector's box is enlarged by this factor about its centre.
    pub margin: f32,
}

impl FaceCrop {
    /// The margin is a finite factor from 1 to 4.
    pub fn validate(&self) -> Result<()> {
        if !(1.0..=4.0).contains(&self.margin) {
            return Err(Error::Manifest(format!(
                "a face crop's margin must lie in [1, 4], got {}",
                self.margin
            )));
        }
        Ok(())
    }

    /// The square crop of a face box (photo pixels) in a `photo` = `[height, width]` picture.
    pub fn crop_box(&self, face: &BoundingBox, photo: [u32; 2]) -> Result<CropBox> {
        // JavaScript's Math.round: halves round up.
        let round = |v: f32| (v + 0.5).floor();
        let (cx, cy) = ((face.x0 + face.x1) / 2.0, (face.y0 + face.y1) / 2.0);
        let width = (face.x1 - face.x0) * self.margin;
        let height = (face.y1 - face.y0) * self.margin;
        let half = width.max(height) / 2.0;
        let clamp = |v: f32, limit: u32| round(v).clamp(0.0, limit as f32) as u32;
        let crop = CropBox {
            x0: clamp(cx - half, photo[1]),
            y0: clamp(cy - half, photo[0]),
            x1: clamp(cx + half, photo[1]),
            y1: clamp(cy + half, photo[0]),
        };
        if crop.x1 <= crop.x0 || crop.y1 <= crop.y0 {
            return Err(Error::Parameter(format!(
                "the face at ({}, {}, {}, {}) leaves no pixel of the photo to crop",
                face.x0, face.y0, face.x1, face.y1
            )));
        }
        Ok(crop)
    }
}

/// A rectangle of whole photo pixels: columns `x0..x1`, rows `y0..y1`.
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CropBox {
    /// First column.
    pub x0: u32,
    /// First row.
    pub y0: u32,
    /// One past the last column.
    pub x1: u32,
    /// One past the last row.
    pub y1: u32,
}

impl CropBox {
    /// Width and height.
    pub fn size(&self) -> (u32, u32) {
        (self.x1 - self.x0, self.y1 - self.y0)
    }
}

/// Which face of the photo an explanation cropped (kept in its record: replay crops it again).
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FaceInfo {
    /// The detector that found it.
    pub detector: String,
    /// Its place among the detector's faces, best first.
    pub face: usize,
    /// The detection, in the detector's input pixels.
    pub detection: Detection,
    /// The crop of the photo the face model saw.
    pub crop: CropBox,
    /// How many faces the detector found in the photo.
    #[serde(default)]
    pub found: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_crop_is_the_enlarged_square_rounded_and_clamped() {
        let crop = FaceCrop {
            detector: "blazeface".into(),
            margin: 1.4,
        };
        // human.js on astronaut's face (171.4, 73.4)–(277.8, 179.8): (150, 52)–(299, 201).
        let face = BoundingBox {
            x0: 171.4,
            y0: 73.4,
            x1: 277.8,
            y1: 179.8,
        };
        let b = crop.crop_box(&face, [512, 512]).unwrap();
        assert_eq!((b.x0, b.y0, b.x1, b.y1), (150, 52, 299, 201));
        // A face at the corner is clamped to the photo.
        let corner = BoundingBox {
            x0: -10.0,
            y0: -10.0,
            x1: 30.0,
            y1: 20.0,
        };
        let b = crop.crop_box(&corner, [100, 100]).unwrap();
        assert_eq!((b.x0, b.y0, b.x1, b.y1), (0, 0, 38, 33));
        let outside = BoundingBox {
            x0: 200.0,
            y0: 200.0,
            x1: 210.0,
            y1: 210.0,
        };
        assert!(crop.crop_box(&outside, [100, 100]).is_err());
        assert!(
            FaceCrop {
                margin: 0.5,
                ..crop
            }
            .validate()
            .is_err()
        );
    }
}
