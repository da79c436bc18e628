//! Image preprocessing that gives torchvision's tensor, bit for bit, from the user's file.
//!
//! `decode_image` turns an image file into the bytes of Pillow 13's
//! `Image.open(f).convert("RGB")`: JPEG through our own decoder with libjpeg-turbo's arithmetic
//! (`jpeg/`), the other formats through the `image` crate with Pillow's conversions of grey,
//! alpha, palette and 16-bit images. Like Pillow (and so torchvision), it ignores the EXIF
//! orientation tag unless asked ([`ExifOrientation::Apply`]: `ImageOps.exif_transpose`). A [`Preprocessing`] then produces the *base image* every explanation
//! perturbs — resize (Pillow's `Image.resize`, `resample.rs`), centre crop — and the normalised
//! NCHW tensor the classifier reads (`ToTensor` + `Normalize`, in `f32` in torchvision's order
//! of operations). The corpus tests hold all of it to Pillow's and torchvision's bytes.

use std::io::Cursor;

use image::{ImageDecoder, ImageReader, RgbImage};
use ndarray::Array4;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

mod jpeg;
mod resample;

/// What to do with an EXIF orientation tag (a phone's "rotate 90° to view" note).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ExifOrientation {
    /// Keep the stored pixels, as `PIL.Image.open` and so torchvision do (the default, for
    /// parity with the Python stack).
    #[default]
    Ignore,
    /// Rotate and flip as the tag says, as `PIL.ImageOps.exif_transpose` does.
    Apply,
}

crate::names::named!(ExifOrientation, "EXIF orientation", {
    Ignore => "ignore",
    Apply => "apply",
});

/// How untrusted image bytes are decoded: limits and the EXIF orientation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecodeOptions {
    /// Largest accepted width × height, checked against the header before any pixel is decoded.
    pub max_pixels: u64,
    /// Whether the EXIF orientation tag is applied.
    #[serde(default)]
    pub exif_orientation: ExifOrientation,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        Self {
            max_pixels: 50_000_000,
            exif_orientation: ExifOrientation::Ignore,
        }
    }
}

/// Decode image bytes (PNG, JPEG, WebP, BMP, GIF first frame, TIFF) into 8-bit RGB, the bytes
/// Pillow's `convert("RGB")` gives (JPEG inside TIFF excepted: the `image` crate's decoder).
///
/// The format is guessed from the content, not a file name. Bad bytes, unsupported formats and
/// images over `options.max_pixels` are errors; nothing here panics on input. The EXIF
/// orientation is applied only if `options` asks.
pub fn decode_image(bytes: &[u8], options: &DecodeOptions) -> Result<RgbImage> {
    let (image, orientation) = if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        let decoded = jpeg::decode(bytes, options)?;
        (decoded.image, decoded.orientation)
    } else {
        decode_other(bytes, options)?
    };
    Ok(match (options.exif_orientation, orientation) {
        (ExifOrientation::Apply, Some(orientation)) => {
            let mut turned = image::DynamicImage::ImageRgb8(image);
            turned.apply_orientation(orientation);
            turned.into_rgb8()
        }
        _ => image,
    })
}

/// Every format but JPEG, through the `image` crate, with the file's EXIF orientation if any.
fn decode_other(
    bytes: &[u8],
    options: &DecodeOptions,
) -> Result<(RgbImage, Option<image::metadata::Orientation>)> {
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| Error::Decode(e.to_string()))?;
    if reader.format().is_none() {
        return Err(Error::Decode(
            "unrecognised format (expected PNG, JPEG, WebP, BMP, GIF or TIFF)".into(),
        ));
    }
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| Error::Decode(e.to_string()))?;
    let (width, height) = decoder.dimensions();
    let pixels = u64::from(width) * u64::from(height);
    if pixels > options.max_pixels {
        return Err(Error::ImageTooLarge {
            width,
            height,
            pixels,
            limit: options.max_pixels,
        });
    }
    if pixels == 0 {
        return Err(Error::Decode(format!(
            "image has no pixels ({width}×{height})"
        )));
    }
    let mut alloc = image::Limits::default();
    alloc.max_alloc = Some(decoder.total_bytes().saturating_add(1 << 20));
    decoder
        .set_limits(alloc)
        .map_err(|e| Error::Decode(e.to_string()))?;
    // A malformed EXIF block only loses the tag, as in Pillow.
    let orientation = decoder
        .orientation()
        .ok()
        .filter(|o| *o != image::metadata::Orientation::NoTransforms);
    let image =
        image::DynamicImage::from_decoder(decoder).map_err(|e| Error::Decode(e.to_string()))?;
    Ok((pillow_rgb(image), orientation))
}

/// `convert("RGB")` of what Pillow opens: 16-bit colour and grey+alpha files keep each sample's
/// high byte (Pillow's `;16B` unpackers), and 16-bit greyscale opens as mode `I;16`, whose
/// conversion clips every value above 255 to 255 (`I16_RGB`): most such files turn white in
/// Pillow and torchvision, and here too, so both stacks see the same pixels.
fn pillow_rgb(image: image::DynamicImage) -> RgbImage {
    use image::DynamicImage as D;
    let high = |v: u16| (v >> 8) as u8;
    match image {
        D::ImageLuma16(grey) => RgbImage::from_fn(grey.width(), grey.height(), |x, y| {
            image::Rgb([grey.get_pixel(x, y).0[0].min(255) as u8; 3])
        }),
        D::ImageLumaA16(grey) => RgbImage::from_fn(grey.width(), grey.height(), |x, y| {
            image::Rgb([high(grey.get_pixel(x, y).0[0]); 3])
        }),
        D::ImageRgb16(rgb) => RgbImage::from_fn(rgb.width(), rgb.height(), |x, y| {
            image::Rgb(rgb.get_pixel(x, y).0.map(high))
        }),
        D::ImageRgba16(rgba) => RgbImage::from_fn(rgba.width(), rgba.height(), |x, y| {
            let [r, g, b, _] = rgba.get_pixel(x, y).0;
            image::Rgb([high(r), high(g), high(b)])
        }),
        other => other.to_rgb8(),
    }
}

/// How the image is resized before the centre crop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", content = "size", rename_all = "snake_case")]
pub enum ResizeMode {
    /// `Resize((h, w))`: exactly this `[height, width]`, aspect not preserved (the paper's default).
    Exact([u32; 2]),
    /// `Resize(s)`: the short side becomes `s`, the long side `int(s · long / short)`.
    ShortSide(u32),
}

/// Resampling filter, as PIL implements it (antialiased when downscaling).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Interpolation {
    /// PIL `BILINEAR` (triangle filter).
    Bilinear,
    /// PIL `BICUBIC` (Keys cubic, a = −0.5).
    Bicubic,
    /// PIL `NEAREST`.
    Nearest,
}

/// How `[0, 1]` pixel values become the classifier's input.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Normalize {
    /// `(x − mean) / std` per channel (torchvision's `Normalize`).
    MeanStd {
        /// Per-channel mean, RGB.
        mean: [f32; 3],
        /// Per-channel standard deviation, RGB.
        std: [f32; 3],
    },
    /// `x · scale + offset` (e.g. EfficientNet-Lite: `(255x − 127)/128`).
    ScaleOffset {
        /// Multiplier.
        scale: f32,
        /// Added after the multiplication.
        offset: f32,
    },
}

impl Normalize {
    /// ImageNet mean and standard deviation, torchvision's values.
    pub const IMAGENET: Normalize = Normalize::MeanStd {
        mean: [0.485, 0.456, 0.406],
        std: [0.229, 0.224, 0.225],
    };

    fn apply(&self, channel: usize, value: f32) -> f32 {
        match *self {
            Normalize::MeanStd { mean, std } => (value - mean[channel]) / std[channel],
            Normalize::ScaleOffset { scale, offset } => value * scale + offset,
        }
    }
}

/// A model's preprocessing: resize, centre crop, normalise.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Preprocessing {
    /// The resize step.
    pub resize: ResizeMode,
    /// The resampling filter of the resize step.
    pub interpolation: Interpolation,
    /// Centre-crop size, `[height, width]`.
    pub crop: [u32; 2],
    /// Normalisation of the cropped image.
    pub normalize: Normalize,
}

impl Default for Preprocessing {
    /// The paper's preprocessing: resize to 256×256 (bilinear), crop 224, ImageNet mean/std.
    fn default() -> Self {
        Self {
            resize: ResizeMode::Exact([256, 256]),
            interpolation: Interpolation::Bilinear,
            crop: [224, 224],
            normalize: Normalize::IMAGENET,
        }
    }
}

impl Preprocessing {
    /// Check that every size is usable.
    pub fn validate(&self) -> Result<()> {
        let sizes = match self.resize {
            ResizeMode::Exact([h, w]) => [h, w],
            ResizeMode::ShortSide(s) => [s, s],
        };
        let all = [sizes[0], sizes[1], self.crop[0], self.crop[1]];
        if all.iter().any(|&s| s == 0 || s > 8192) {
            return Err(Error::Parameter(format!(
                "resize and crop sizes must lie in 1..=8192, found resize {:?} and crop {:?}",
                self.resize, self.crop
            )));
        }
        let stds_positive = match self.normalize {
            Normalize::MeanStd { std, .. } => std.iter().all(|s| s.is_finite() && *s > 0.0),
            Normalize::ScaleOffset { scale, offset } => scale.is_finite() && offset.is_finite(),
        };
        if !stds_positive {
            return Err(Error::Parameter(format!(
                "normalisation must be finite with positive std, found {:?}",
                self.normalize
            )));
        }
        Ok(())
    }

    /// The same preprocessing for another crop size `[height, width]`: the resize step scales by
    /// the same ratio (e.g. 256/224 · 299 = 342 for a 299² model).
    pub fn scaled_to(&self, crop: [u32; 2]) -> Self {
        let scale = |size: u32, old: u32, new: u32| {
            (f64::from(size) * f64::from(new) / f64::from(old)).round() as u32
        };
        let resize = match self.resize {
            ResizeMode::Exact([h, w]) => ResizeMode::Exact([
                scale(h, self.crop[0], crop[0]),
                scale(w, self.crop[1], crop[1]),
            ]),
            ResizeMode::ShortSide(s) => ResizeMode::ShortSide(scale(s, self.crop[0], crop[0])),
        };
        Self {
            resize,
            crop,
            ..self.clone()
        }
    }

    /// The size the resize step produces for an image of `width × height`, as `(width, height)`.
    pub fn resized_size(&self, width: u32, height: u32) -> (u32, u32) {
        match self.resize {
            ResizeMode::Exact([h, w]) => (w, h),
            ResizeMode::ShortSide(short) => {
                // torchvision: new_long = int(short · long / old_short), in floating point.
                let (old_short, old_long) = (width.min(height), width.max(height));
                let long = (f64::from(short) * f64::from(old_long) / f64::from(old_short)) as u32;
                if width <= height {
                    (short, long)
                } else {
                    (long, short)
                }
            }
        }
    }

    /// Resize then centre-crop: the 8-bit base image that explanations perturb.
    pub fn base_image(&self, image: &RgbImage) -> Result<RgbImage> {
        self.validate()?;
        let (width, height) = self.resized_size(image.width(), image.height());
        let resized = resize(image, width, height, self.interpolation)?;
        Ok(center_crop(&resized, self.crop[1], self.crop[0]))
    }

    /// Decode, resize and crop in one step.
    pub fn base_image_from_bytes(&self, bytes: &[u8], options: &DecodeOptions) -> Result<RgbImage> {
        self.base_image(&decode_image(bytes, options)?)
    }

    /// `ToTensor` + `Normalize` of base images of equal size: an `N×3×H×W` tensor.
    pub fn tensor(&self, images: &[RgbImage]) -> Result<Array4<f32>> {
        let Some(first) = images.first() else {
            return Err(Error::Parameter("no image to convert to a tensor".into()));
        };
        let (width, height) = first.dimensions();
        if let Some(other) = images.iter().find(|i| i.dimensions() != (width, height)) {
            return Err(Error::Parameter(format!(
                "images in one batch must share a size: {width}×{height} and {}×{}",
                other.width(),
                other.height()
            )));
        }
        let (w, h) = (width as usize, height as usize);
        let mut tensor = Array4::<f32>::zeros((images.len(), 3, h, w));
        for (n, image) in images.iter().enumerate() {
            let raw = image.as_raw();
            for c in 0..3 {
                let mut plane = tensor.slice_mut(ndarray::s![n, c, .., ..]);
                for (i, value) in plane.iter_mut().enumerate() {
                    *value = self.normalize.apply(c, f32::from(raw[i * 3 + c]) / 255.0);
                }
            }
        }
        Ok(tensor)
    }
}

/// Resize as Pillow's `Image.resize` does (antialiased convolution for bilinear and bicubic,
/// affine scaling for nearest; `resample.rs`), or return a copy at the same size.
pub fn resize(
    image: &RgbImage,
    width: u32,
    height: u32,
    interpolation: Interpolation,
) -> Result<RgbImage> {
    if width == 0 || height == 0 {
        return Err(Error::Parameter(format!(
            "cannot resize to {width}×{height}"
        )));
    }
    if image.dimensions() == (width, height) {
        return Ok(image.clone());
    }
    Ok(resample::resize(image, width, height, interpolation))
}

/// torchvision's `CenterCrop`: zero-pad a side smaller than the crop (left/top by half the
/// difference), then cut at `round((size − crop) / 2)` with Python's round-half-to-even.
pub fn center_crop(image: &RgbImage, width: u32, height: u32) -> RgbImage {
    let (w, h) = (i64::from(image.width()), i64::from(image.height()));
    let (cw, ch) = (i64::from(width), i64::from(height));
    let (pad_left, pad_top) = ((cw - w).max(0) / 2, (ch - h).max(0) / 2);
    let left = half_rounded_to_even(w.max(cw) - cw) - pad_left;
    let top = half_rounded_to_even(h.max(ch) - ch) - pad_top;
    RgbImage::from_fn(width, height, |x, y| {
        let (sx, sy) = (i64::from(x) + left, i64::from(y) + top);
        if (0..w).contains(&sx) && (0..h).contains(&sy) {
            *image.get_pixel(sx as u32, sy as u32)
        } else {
            image::Rgb([0, 0, 0])
        }
    })
}

/// Python's `int(round(n / 2.0))` for a non-negative integer `n` (ties go to the even number).
fn half_rounded_to_even(n: i64) -> i64 {
    let half = n / 2;
    if n % 2 == 1 && half % 2 == 1 {
        half + 1
    } else {
        half
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_rounding_of_crop_offsets() {
        assert_eq!(half_rounded_to_even(32), 16);
        assert_eq!(half_rounded_to_even(33), 16);
        assert_eq!(half_rounded_to_even(35), 18);
        assert_eq!(half_rounded_to_even(1), 0);
        assert_eq!(half_rounded_to_even(3), 2);
    }

    #[test]
    fn crop_larger_than_image_pads_with_black_like_torchvision() {
        // torchvision: pad left (4−2)//2 = 1, right (4−2+1)//2 = 1; top 0 since 3 ≥ 3.
        let image = RgbImage::from_fn(2, 3, |x, y| {
            image::Rgb([10 * x as u8 + 1, 10 * y as u8 + 1, 7])
        });
        let crop = center_crop(&image, 4, 3);
        assert_eq!(crop.get_pixel(0, 0).0, [0, 0, 0]);
        assert_eq!(crop.get_pixel(1, 0).0, [1, 1, 7]);
        assert_eq!(crop.get_pixel(2, 2).0, [11, 21, 7]);
        assert_eq!(crop.get_pixel(3, 1).0, [0, 0, 0]);
    }

    #[test]
    fn short_side_resize_truncates_like_torchvision() {
        let p = Preprocessing {
            resize: ResizeMode::ShortSide(256),
            ..Preprocessing::default()
        };
        assert_eq!(p.resized_size(451, 300), (384, 256));
        assert_eq!(p.resized_size(300, 451), (256, 384));
        assert_eq!(p.resized_size(333, 333), (256, 256));
    }

    #[test]
    fn garbage_bytes_are_an_error() {
        assert!(matches!(
            decode_image(b"not an image", &DecodeOptions::default()),
            Err(Error::Decode(_))
        ));
        assert!(matches!(
            decode_image(&[], &DecodeOptions::default()),
            Err(Error::Decode(_))
        ));
    }
}
