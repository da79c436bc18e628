//! Rendering: what users look at. CAM overlays (pytorch-grad-cam's `show_cam_on_image`), LIME
//! masks with boundaries (`lime`'s `get_image_and_mask` + scikit-image's `mark_boundaries`),
//! labelled comparison grids, a detector's boxes, and the weight–feature plot (PNG and SVG).
//!
//! Pixel-exact where a reference exists; everything returns images or bytes, nothing is written.

mod boxes;
mod grid;
mod plot;
mod regions;
mod text;

use image::{Rgb, RgbImage};
use serde::{Deserialize, Serialize};

pub use boxes::{draw_detections, outline_detections};
pub use grid::{GridCell, comparison_grid};
pub use plot::{
    Series, WeightCurve, line_chart_png, line_chart_svg, weight_plot_png, weight_plot_svg,
};
pub use regions::{PREDICTED, REGION, outline_region, tint_region};

use crate::cam::CamMap;
use crate::lime::LabelExplanation;
use crate::segment::Segmentation;
use crate::{Error, Result};

/// OpenCV's `COLORMAP_JET` as RGB, indexed by 8-bit level (the table `cv2.applyColorMap`
/// uses; pytorch-grad-cam colours maps with it).
const JET: [[u8; 3]; 256] = [
    [0, 0, 128],
    [0, 0, 132],
    [0, 0, 136],
    [0, 0, 140],
    [0, 0, 144],
    [0, 0, 148],
    [0, 0, 152],
    [0, 0, 156],
    [0, 0, 160],
    [0, 0, 164],
    [0, 0, 168],
    [0, 0, 172],
    [0, 0, 176],
    [0, 0, 180],
    [0, 0, 184],
    [0, 0, 188],
    [0, 0, 192],
    [0, 0, 196],
    [0, 0, 200],
    [0, 0, 204],
    [0, 0, 208],
    [0, 0, 212],
    [0, 0, 216],
    [0, 0, 220],
    [0, 0, 224],
    [0, 0, 228],
    [0, 0, 232],
    [0, 0, 236],
    [0, 0, 240],
    [0, 0, 244],
    [0, 0, 248],
    [0, 0, 252],
    [0, 0, 255],
    [0, 4, 255],
    [0, 8, 255],
    [0, 12, 255],
    [0, 16, 255],
    [0, 20, 255],
    [0, 24, 255],
    [0, 28, 255],
    [0, 32, 255],
    [0, 36, 255],
    [0, 40, 255],
    [0, 44, 255],
    [0, 48, 255],
    [0, 52, 255],
    [0, 56, 255],
    [0, 60, 255],
    [0, 64, 255],
    [0, 68, 255],
    [0, 72, 255],
    [0, 76, 255],
    [0, 80, 255],
    [0, 84, 255],
    [0, 88, 255],
    [0, 92, 255],
    [0, 96, 255],
    [0, 100, 255],
    [0, 104, 255],
    [0, 108, 255],
    [0, 112, 255],
    [0, 116, 255],
    [0, 120, 255],
    [0, 124, 255],
    [0, 128, 255],
    [0, 132, 255],
    [0, 136, 255],
    [0, 140, 255],
    [0, 144, 255],
    [0, 148, 255],
    [0, 152, 255],
    [0, 156, 255],
    [0, 160, 255],
    [0, 164, 255],
    [0, 168, 255],
    [0, 172, 255],
    [0, 176, 255],
    [0, 180, 255],
    [0, 184, 255],
    [0, 188, 255],
    [0, 192, 255],
    [0, 196, 255],
    [0, 200, 255],
    [0, 204, 255],
    [0, 208, 255],
    [0, 212, 255],
    [0, 216, 255],
    [0, 220, 255],
    [0, 224, 255],
    [0, 228, 255],
    [0, 232, 255],
    [0, 236, 255],
    [0, 240, 255],
    [0, 244, 255],
    [0, 248, 255],
    [0, 252, 255],
    [2, 255, 254],
    [6, 255, 250],
    [10, 255, 246],
    [14, 255, 242],
    [18, 255, 238],
    [22, 255, 234],
    [26, 255, 230],
    [30, 255, 226],
    [34, 255, 222],
    [38, 255, 218],
    [42, 255, 214],
    [46, 255, 210],
    [50, 255, 206],
    [54, 255, 202],
    [58, 255, 198],
    [62, 255, 194],
    [66, 255, 190],
    [70, 255, 186],
    [74, 255, 182],
    [78, 255, 178],
    [82, 255, 174],
    [86, 255, 170],
    [90, 255, 166],
    [94, 255, 162],
    [98, 255, 158],
    [102, 255, 154],
    [106, 255, 150],
    [110, 255, 146],
    [114, 255, 142],
    [118, 255, 138],
    [122, 255, 134],
    [126, 255, 130],
    [130, 255, 126],
    [134, 255, 122],
    [138, 255, 118],
    [142, 255, 114],
    [146, 255, 110],
    [150, 255, 106],
    [154, 255, 102],
    [158, 255, 98],
    [162, 255, 94],
    [166, 255, 90],
    [170, 255, 86],
    [174, 255, 82],
    [178, 255, 78],
    [182, 255, 74],
    [186, 255, 70],
    [190, 255, 66],
    [194, 255, 62],
    [198, 255, 58],
    [202, 255, 54],
    [206, 255, 50],
    [210, 255, 46],
    [214, 255, 42],
    [218, 255, 38],
    [222, 255, 34],
    [226, 255, 30],
    [230, 255, 26],
    [234, 255, 22],
    [238, 255, 18],
    [242, 255, 14],
    [246, 255, 10],
    [250, 255, 6],
    [254, 255, 1],
    [255, 252, 0],
    [255, 248, 0],
    [255, 244, 0],
    [255, 240, 0],
    [255, 236, 0],
    [255, 232, 0],
    [255, 228, 0],
    [255, 224, 0],
    [255, 220, 0],
    [255, 216, 0],
    [255, 212, 0],
    [255, 208, 0],
    [255, 204, 0],
    [255, 200, 0],
    [255, 196, 0],
    [255, 192, 0],
    [255, 188, 0],
    [255, 184, 0],
    [255, 180, 0],
    [255, 176, 0],
    [255, 172, 0],
    [255, 168, 0],
    [255, 164, 0],
    [255, 160, 0],
    [255, 156, 0],
    [255, 152, 0],
    [255, 148, 0],
    [255, 144, 0],
    [255, 140, 0],
    [255, 136, 0],
    [255, 132, 0],
    [255, 128, 0],
    [255, 124, 0],
    [255, 120, 0],
    [255, 116, 0],
    [255, 112, 0],
    [255, 108, 0],
    [255, 104, 0],
    [255, 100, 0],
    [255, 96, 0],
    [255, 92, 0],
    [255, 88, 0],
    [255, 84, 0],
    [255, 80, 0],
    [255, 76, 0],
    [255, 72, 0],
    [255, 68, 0],
    [255, 64, 0],
    [255, 60, 0],
    [255, 56, 0],
    [255, 52, 0],
    [255, 48, 0],
    [255, 44, 0],
    [255, 40, 0],
    [255, 36, 0],
    [255, 32, 0],
    [255, 28, 0],
    [255, 24, 0],
    [255, 20, 0],
    [255, 16, 0],
    [255, 12, 0],
    [255, 8, 0],
    [255, 4, 0],
    [255, 0, 0],
    [252, 0, 0],
    [248, 0, 0],
    [244, 0, 0],
    [240, 0, 0],
    [236, 0, 0],
    [232, 0, 0],
    [228, 0, 0],
    [224, 0, 0],
    [220, 0, 0],
    [216, 0, 0],
    [212, 0, 0],
    [208, 0, 0],
    [204, 0, 0],
    [200, 0, 0],
    [196, 0, 0],
    [192, 0, 0],
    [188, 0, 0],
    [184, 0, 0],
    [180, 0, 0],
    [176, 0, 0],
    [172, 0, 0],
    [168, 0, 0],
    [164, 0, 0],
    [160, 0, 0],
    [156, 0, 0],
    [152, 0, 0],
    [148, 0, 0],
    [144, 0, 0],
    [140, 0, 0],
    [136, 0, 0],
    [132, 0, 0],
    [128, 0, 0],
];

/// The JET colour of a level.
pub fn jet(level: u8) -> [u8; 3] {
    JET[level as usize]
}

/// pytorch-grad-cam's `show_cam_on_image(image / 255, cam, use_rgb=True, image_weight)`: the
/// JET heatmap of `⌊255·cam⌋` blended with the image, rescaled by the blend's maximum. A map of
/// another size is resized to the image first.
pub fn cam_overlay(image: &RgbImage, cam: &CamMap, image_weight: f32) -> Result<RgbImage> {
    if !(0.0..=1.0).contains(&image_weight) {
        return Err(Error::Parameter(format!(
            "image_weight must lie in [0, 1], got {image_weight}"
        )));
    }
    let (w, h) = image.dimensions();
    let cam = cam.resize(h as usize, w as usize);
    let blended: Vec<f32> = image
        .as_raw()
        .chunks_exact(3)
        .zip(cam.values())
        .flat_map(|(pixel, &value)| {
            let heat = jet((255.0 * value).clamp(0.0, 255.0) as u8);
            (0..3).map(move |c| {
                (1.0 - image_weight) * (f32::from(heat[c]) / 255.0)
                    + image_weight * (f32::from(pixel[c]) / 255.0)
            })
        })
        .collect();
    let max = blended
        .iter()
        .copied()
        .fold(0.0f32, f32::max)
        .max(f32::MIN_POSITIVE);
    let raw = blended.iter().map(|v| (255.0 * (v / max)) as u8).collect();
    RgbImage::from_raw(w, h, raw).ok_or_else(|| Error::Parameter("overlay size".into()))
}

/// Which segments a LIME mask shows; `Default` is `get_image_and_mask`'s.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MaskOptions {
    /// Only segments with positive weight (shown in their own colours).
    pub positive_only: bool,
    /// Only segments with negative weight.
    pub negative_only: bool,
    /// Black out every other segment.
    pub hide_rest: bool,
    /// How many segments, by |weight|.
    pub num_features: usize,
    /// Ignore weights smaller than this in magnitude.
    pub min_weight: f64,
}

impl Default for MaskOptions {
    fn default() -> Self {
        Self {
            positive_only: true,
            negative_only: false,
            hide_rest: false,
            num_features: 5,
            min_weight: 0.0,
        }
    }
}

/// `lime`'s `get_image_and_mask`: the shown image and the mask (+1 supporting, −1 opposing,
/// 0 elsewhere). Without `positive_only`/`negative_only`, supporting segments get their green
/// channel and opposing ones their red channel saturated to the image's maximum.
pub fn lime_mask(
    image: &RgbImage,
    segmentation: &Segmentation,
    ranked: &[(usize, f64)],
    options: &MaskOptions,
) -> Result<(RgbImage, Vec<i32>)> {
    let (w, h) = image.dimensions();
    if (h as usize, w as usize) != (segmentation.height(), segmentation.width()) {
        return Err(Error::Parameter(format!(
            "a {}×{} segmentation does not fit a {h}×{w} image",
            segmentation.height(),
            segmentation.width()
        )));
    }
    if options.positive_only && options.negative_only {
        return Err(Error::Parameter(
            "positive_only and negative_only exclude each other".into(),
        ));
    }
    let mut shown = if options.hide_rest {
        RgbImage::new(w, h)
    } else {
        image.clone()
    };
    let mut sign_of_segment = vec![0i32; segmentation.count()];
    let mut saturate = vec![None; segmentation.count()];
    if options.positive_only || options.negative_only {
        let chosen = ranked
            .iter()
            .filter(|(_, wt)| {
                if options.positive_only {
                    *wt > 0.0 && *wt > options.min_weight
                } else {
                    *wt < 0.0 && wt.abs() > options.min_weight
                }
            })
            .take(options.num_features);
        for &(segment, _) in chosen {
            if let Some(slot) = sign_of_segment.get_mut(segment) {
                *slot = 1;
            }
        }
    } else {
        for &(segment, weight) in ranked.iter().take(options.num_features) {
            if weight.abs() < options.min_weight || segment >= segmentation.count() {
                continue;
            }
            sign_of_segment[segment] = if weight < 0.0 { -1 } else { 1 };
            saturate[segment] = Some(if weight < 0.0 { 0 } else { 1 });
        }
    }
    let image_max = image.as_raw().iter().copied().max().unwrap_or(0);
    let mut mask = vec![0i32; (w * h) as usize];
    for (i, (&label, pixel)) in segmentation
        .labels()
        .iter()
        .zip(shown.pixels_mut())
        .enumerate()
    {
        let sign = sign_of_segment[label as usize];
        if sign == 0 {
            continue;
        }
        mask[i] = sign;
        let (x, y) = (i as u32 % w, i as u32 / w);
        *pixel = *image.get_pixel(x, y);
        if let Some(channel) = saturate[label as usize] {
            pixel.0[channel] = image_max;
        }
    }
    Ok((shown, mask))
}

/// scikit-image's `mark_boundaries(image, labels, color, mode="thick")`: every pixel whose
/// 4-neighbourhood holds another label is painted. (Its default "outer" mode is not reproduced:
/// on `lime`'s int64 masks it depends on an integer overflow inside scipy's erosion.)
pub fn mark_boundaries(image: &RgbImage, labels: &[i32], color: [u8; 3]) -> Result<RgbImage> {
    let (w, h) = (image.width() as usize, image.height() as usize);
    if labels.len() != w * h {
        return Err(Error::Parameter(format!(
            "{} labels for a {h}×{w} image",
            labels.len()
        )));
    }
    let mut out = image.clone();
    for r in 0..h {
        for c in 0..w {
            let here = labels[r * w + c];
            let differs = (r > 0 && labels[(r - 1) * w + c] != here)
                || (r + 1 < h && labels[(r + 1) * w + c] != here)
                || (c > 0 && labels[r * w + c - 1] != here)
                || (c + 1 < w && labels[r * w + c + 1] != here);
            if differs {
                out.put_pixel(c as u32, r as u32, Rgb(color));
            }
        }
    }
    Ok(out)
}

/// Yellow, `mark_boundaries`' default colour.
pub const YELLOW: [u8; 3] = [255, 255, 0];

/// Every segment's outline on the image.
pub fn segment_boundaries(image: &RgbImage, segmentation: &Segmentation) -> Result<RgbImage> {
    let labels: Vec<i32> = segmentation.labels().iter().map(|&l| l as i32).collect();
    mark_boundaries(image, &labels, YELLOW)
}

/// A LIME or CamLIME explanation as `lime` users draw it: `get_image_and_mask` then
/// `mark_boundaries` of the mask in yellow.
pub fn mask_picture(
    base: &RgbImage,
    segmentation: &Segmentation,
    explanation: &LabelExplanation,
    options: &MaskOptions,
) -> Result<RgbImage> {
    let (shown, mask) = lime_mask(base, segmentation, &explanation.ranked, options)?;
    mark_boundaries(&shown, &mask, YELLOW)
}

/// Per-segment weights painted onto their pixels: the attribution map of a LIME explanation.
pub fn paint(segmentation: &Segmentation, weights: &[f64]) -> Result<CamMap> {
    if weights.len() != segmentation.count() {
        return Err(Error::Parameter(format!(
            "{} weights for {} segments",
            weights.len(),
            segmentation.count()
        )));
    }
    let values = segmentation
        .labels()
        .iter()
        .map(|&l| weights[l as usize] as f32)
        .collect();
    CamMap::new(segmentation.height(), segmentation.width(), values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jet_ends_and_middle() {
        assert_eq!(jet(0), [0, 0, 128]);
        assert_eq!(jet(255), [128, 0, 0]);
        assert_eq!(jet(128)[1], 255);
    }

    #[test]
    fn boundaries_are_thick() {
        // skimage.segmentation.find_boundaries(np.array([[0,0,0,0],[0,1,1,0],[0,0,0,0]]),
        // mode="thick") -> [[0,1,1,0],[1,1,1,1],[0,1,1,0]]
        let labels = [0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0];
        let image = RgbImage::new(4, 3);
        let out = mark_boundaries(&image, &labels, YELLOW).unwrap();
        let marked: Vec<u8> = out.pixels().map(|p| u8::from(p.0 == YELLOW)).collect();
        assert_eq!(marked, vec![0, 1, 1, 0, 1, 1, 1, 1, 0, 1, 1, 0]);
    }
}
