//! A JPEG decoder whose pixels are libjpeg-turbo's, as Pillow asks for them.
//!
//! torchvision reads photos through Pillow, and Pillow through libjpeg-turbo with its defaults:
//! the accurate integer IDCT (`JDCT_ISLOW`), "fancy" triangle-filter chroma upsampling and
//! fixed-point YCbCr → RGB. The `image` crate's decoder (zune-jpeg 0.5) uses another IDCT and
//! another upsampler: on chelsea.png saved by Pillow at quality 90 it differed from Pillow 13
//! (libjpeg-turbo 3.2) in 13 % of the values at 4:2:0 and even in 0.6 % of a greyscale file,
//! by up to 4 levels. No crate gives libjpeg-turbo's output, so this module reproduces it
//! (pure Rust, so the browser decodes the same way):
//!
//! - [`entropy`]: markers, Huffman tables, baseline and progressive scans (spectral selection
//!   and successive approximation), restart intervals; coefficients kept for the whole image.
//! - [`idct`]: `jpeg_idct_islow` (13-bit constants, 2 extra bits between passes, the wrapping
//!   range limit).
//! - [`color`]: `jdsample.c`'s upsamplers (h2v1 and h2v2 triangle filters with their alternating
//!   rounding, h1v2, and box replication otherwise) and `jdcolor.c`'s conversions; CMYK and YCCK
//!   become RGB as Pillow's `"CMYK;I"` raw mode and `convert("RGB")` make them.
//!
//! Out of scope, refused with a clear error: 12- and 16-bit samples, lossless, hierarchical and
//! arithmetic-coded files (Pillow cannot read most of them either). A progressive file that ends
//! before every coefficient is refined is decoded without libjpeg's block smoothing.

mod color;
mod entropy;
mod idct;

use image::RgbImage;

use super::DecodeOptions;
use crate::{Error, Result};

/// One component of the frame: its id, sampling factors and quantisation table slot.
#[derive(Clone, Debug)]
struct Component {
    id: u8,
    h: usize,
    v: usize,
    table: usize,
    /// Samples of the component per row and rows, before upsampling (`downsampled_width`).
    width: usize,
    height: usize,
    /// Blocks per row and block rows of the coefficient array, padded to whole MCUs.
    blocks_w: usize,
    blocks_h: usize,
    /// The quantisation table latched at the component's first scan, in natural order.
    quant: Option<[u16; 64]>,
}

/// The frame header and what the markers before the first scan said about colours.
#[derive(Clone, Debug)]
struct Frame {
    width: usize,
    height: usize,
    progressive: bool,
    components: Vec<Component>,
    max_h: usize,
    max_v: usize,
    mcus_x: usize,
    mcus_y: usize,
}

/// What the markers before the image data said: JFIF's APP0, Adobe's APP14 transform flag and
/// the EXIF (APP1) orientation.
#[derive(Clone, Copy, Debug, Default)]
struct Markers {
    jfif: bool,
    adobe_transform: Option<u8>,
    orientation: Option<image::metadata::Orientation>,
}

/// The colour space of the file's components, as libjpeg-turbo's `default_decompress_parms`
/// guesses it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ColorSpace {
    Grey,
    YCbCr,
    Rgb,
    Cmyk,
    Ycck,
}

impl Frame {
    fn color_space(&self, markers: Markers) -> Result<ColorSpace> {
        let ids: Vec<u8> = self.components.iter().map(|c| c.id).collect();
        Ok(match ids.len() {
            1 => ColorSpace::Grey,
            3 if markers.jfif => ColorSpace::YCbCr,
            3 => match markers.adobe_transform {
                Some(0) => ColorSpace::Rgb,
                Some(_) => ColorSpace::YCbCr,
                None if ids == [b'R', b'G', b'B'] => ColorSpace::Rgb,
                None => ColorSpace::YCbCr,
            },
            4 => match markers.adobe_transform {
                Some(2) => ColorSpace::Ycck,
                _ => ColorSpace::Cmyk,
            },
            n => {
                return Err(Error::Decode(format!(
                    "JPEG with {n} colour components (expected 1, 3 or 4)"
                )));
            }
        })
    }
}

/// A decoded JPEG: Pillow's RGB and the EXIF orientation tag, if any.
pub(super) struct Jpeg {
    pub image: RgbImage,
    pub orientation: Option<image::metadata::Orientation>,
}

/// Decode a JPEG file to 8-bit RGB as `PIL.Image.open(f).convert("RGB")` does.
pub(super) fn decode(bytes: &[u8], options: &DecodeOptions) -> Result<Jpeg> {
    let entropy::Decoded {
        frame,
        markers,
        coefficients,
    } = entropy::decode(bytes, options)?;
    let space = frame.color_space(markers)?;
    // Each stage's buffers are dropped as soon as the next is made (a 49-megapixel 4:2:0 file
    // peaked at 506 MB with every stage kept to the end, 10.5 bytes per pixel).
    let planes: Vec<Vec<u8>> = frame
        .components
        .iter()
        .zip(coefficients)
        .map(|(component, coefficients)| idct::component_plane(component, &coefficients))
        .collect();
    Ok(Jpeg {
        image: color::to_rgb(&frame, planes, space)?,
        orientation: markers.orientation,
    })
}
