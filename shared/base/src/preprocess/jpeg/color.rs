//! Chroma upsampling (`jdsample.c` with `do_fancy_upsampling`) and colour conversion
//! (`jdcolor.c`), then Pillow's own step for CMYK files.

use image::RgbImage;

use super::{ColorSpace, Component, Frame};
use crate::{Error, Result};

/// A component's samples: `width × height` valid ones in rows of `stride`.
struct Samples<'a> {
    data: &'a [u8],
    stride: usize,
    width: usize,
    height: usize,
}

impl Samples<'_> {
    fn row(&self, y: usize) -> &[u8] {
        &self.data[y * self.stride..][..self.width]
    }

    /// The row next to `y` that the triangle filters blend in: above for the upper output
    /// row, below for the lower, the edge row repeated past the top and bottom (libjpeg's
    /// context rows).
    fn neighbour(&self, y: usize, below: bool) -> &[u8] {
        let y = if below {
            (y + 1).min(self.height - 1)
        } else {
            y.saturating_sub(1)
        };
        self.row(y)
    }
}

/// One component at the full image size, `width × height`, as libjpeg's upsampler makes it.
fn upsample(frame: &Frame, component: &Component, plane: &[u8]) -> Result<Vec<u8>> {
    let (width, height) = (frame.width, frame.height);
    let samples = Samples {
        data: plane,
        stride: component.blocks_w * 8,
        width: component.width,
        height: component.height,
    };
    if !frame.max_h.is_multiple_of(component.h) || !frame.max_v.is_multiple_of(component.v) {
        return Err(Error::Decode(format!(
            "JPEG sampling factors {}×{} of a {}×{} frame are not supported (fractional upsampling)",
            component.h, component.v, frame.max_h, frame.max_v
        )));
    }
    let (rh, rv) = (frame.max_h / component.h, frame.max_v / component.v);
    let mut out = vec![0u8; width * height];
    let fancy_width = samples.width > 2;
    match (rh, rv) {
        (1, 1) => {
            for (y, line) in out.chunks_exact_mut(width).enumerate() {
                line.copy_from_slice(&samples.row(y)[..width]);
            }
        }
        (2, 1) if fancy_width => {
            let mut wide = vec![0u8; samples.width * 2];
            for (y, line) in out.chunks_exact_mut(width).enumerate() {
                h2v1_fancy(samples.row(y), &mut wide);
                line.copy_from_slice(&wide[..width]);
            }
        }
        (1, 2) => {
            for (y, line) in out.chunks_exact_mut(width).enumerate() {
                let (row, below) = (y / 2, y % 2 == 1);
                let (near, far) = (samples.row(row), samples.neighbour(row, below));
                let bias = if below { 2 } else { 1 };
                for ((value, &n), &f) in line.iter_mut().zip(near).zip(far) {
                    *value = ((u16::from(n) * 3 + u16::from(f) + bias) >> 2) as u8;
                }
            }
        }
        (2, 2) if fancy_width => {
            let mut sums = vec![0i32; samples.width];
            let mut wide = vec![0u8; samples.width * 2];
            for (y, line) in out.chunks_exact_mut(width).enumerate() {
                let (row, below) = (y / 2, y % 2 == 1);
                let (near, far) = (samples.row(row), samples.neighbour(row, below));
                for ((sum, &n), &f) in sums.iter_mut().zip(near).zip(far) {
                    *sum = i32::from(n) * 3 + i32::from(f);
                }
                h2v2_fancy(&sums, &mut wide);
                line.copy_from_slice(&wide[..width]);
            }
        }
        _ => {
            // Box replication: libjpeg's h2v1/h2v2 for narrow components and `int_upsample`.
            for (y, line) in out.chunks_exact_mut(width).enumerate() {
                let row = samples.row(y / rv);
                for (x, value) in line.iter_mut().enumerate() {
                    *value = row[x / rh];
                }
            }
        }
    }
    Ok(out)
}

/// `h2v1_fancy_upsample`: 3/4 nearer + 1/4 further, rounding alternately down and up.
fn h2v1_fancy(input: &[u8], out: &mut [u8]) {
    let n = input.len();
    let at = |i: usize| i32::from(input[i]);
    out[0] = input[0];
    out[1] = ((at(0) * 3 + at(1) + 2) >> 2) as u8;
    for c in 1..n - 1 {
        let v = at(c) * 3;
        out[2 * c] = ((v + at(c - 1) + 1) >> 2) as u8;
        out[2 * c + 1] = ((v + at(c + 1) + 2) >> 2) as u8;
    }
    out[2 * n - 2] = ((at(n - 1) * 3 + at(n - 2) + 1) >> 2) as u8;
    out[2 * n - 1] = input[n - 1];
}

/// `h2v2_fancy_upsample`'s horizontal half on the column sums `3·near + far`.
fn h2v2_fancy(sums: &[i32], out: &mut [u8]) {
    let n = sums.len();
    out[0] = ((sums[0] * 4 + 8) >> 4) as u8;
    out[1] = ((sums[0] * 3 + sums[1] + 7) >> 4) as u8;
    for c in 1..n - 1 {
        out[2 * c] = ((sums[c] * 3 + sums[c - 1] + 8) >> 4) as u8;
        out[2 * c + 1] = ((sums[c] * 3 + sums[c + 1] + 7) >> 4) as u8;
    }
    out[2 * n - 2] = ((sums[n - 1] * 3 + sums[n - 2] + 8) >> 4) as u8;
    out[2 * n - 1] = ((sums[n - 1] * 4 + 7) >> 4) as u8;
}

/// `jdcolor.c`'s YCbCr → RGB tables (16-bit fixed point).
struct YccTables {
    cr_r: [i32; 256],
    cb_b: [i32; 256],
    cr_g: [i64; 256],
    cb_g: [i64; 256],
}

impl YccTables {
    fn new() -> Self {
        const ONE_HALF: i64 = 1 << 15;
        let fix = |x: f64| (x * 65536.0 + 0.5) as i64;
        let mut t = Self {
            cr_r: [0; 256],
            cb_b: [0; 256],
            cr_g: [0; 256],
            cb_g: [0; 256],
        };
        for i in 0..256 {
            let x = i as i64 - 128;
            t.cr_r[i] = ((fix(1.40200) * x + ONE_HALF) >> 16) as i32;
            t.cb_b[i] = ((fix(1.77200) * x + ONE_HALF) >> 16) as i32;
            t.cr_g[i] = -fix(0.71414) * x;
            t.cb_g[i] = -fix(0.34414) * x + ONE_HALF;
        }
        t
    }

    fn rgb(&self, y: u8, cb: u8, cr: u8) -> [u8; 3] {
        let (y, cb, cr) = (i32::from(y), usize::from(cb), usize::from(cr));
        let clamp = |v: i32| v.clamp(0, 255) as u8;
        [
            clamp(y + self.cr_r[cr]),
            clamp(y + ((self.cb_g[cb] + self.cr_g[cr]) >> 16) as i32),
            clamp(y + self.cb_b[cb]),
        ]
    }
}

/// Pillow's `cmyk2rgb` on its `"CMYK;I"` (inverted) reading of libjpeg's CMYK output.
fn pillow_cmyk(c: u8, m: u8, y: u8, k: u8) -> [u8; 3] {
    let nk = i32::from(k);
    let channel = |v: u8| {
        let inverted = 255 - i32::from(v);
        let t = inverted * nk + 128;
        (nk - (((t >> 8) + t) >> 8)).clamp(0, 255) as u8
    };
    [channel(c), channel(m), channel(y)]
}

/// Upsample every component and convert to RGB as Pillow's `convert("RGB")` sees the file.
pub(super) fn to_rgb(frame: &Frame, planes: Vec<Vec<u8>>, space: ColorSpace) -> Result<RgbImage> {
    let full: Vec<Vec<u8>> = frame
        .components
        .iter()
        .zip(planes)
        .map(|(component, plane)| upsample(frame, component, &plane))
        .collect::<Result<_>>()?;
    let mut rgb = vec![0u8; frame.width * frame.height * 3];
    let tables = matches!(space, ColorSpace::YCbCr | ColorSpace::Ycck).then(YccTables::new);
    for (i, pixel) in rgb.chunks_exact_mut(3).enumerate() {
        let value = match space {
            ColorSpace::Grey => [full[0][i]; 3],
            ColorSpace::Rgb => [full[0][i], full[1][i], full[2][i]],
            ColorSpace::YCbCr => tables
                .as_ref()
                .expect("tables for YCbCr")
                .rgb(full[0][i], full[1][i], full[2][i]),
            ColorSpace::Cmyk => pillow_cmyk(full[0][i], full[1][i], full[2][i], full[3][i]),
            ColorSpace::Ycck => {
                // libjpeg's `ycck_cmyk_convert`: CMY = 255 − RGB of the YCC part, K kept.
                let [r, g, b] = tables
                    .as_ref()
                    .expect("tables for YCCK")
                    .rgb(full[0][i], full[1][i], full[2][i]);
                pillow_cmyk(255 - r, 255 - g, 255 - b, full[3][i])
            }
        };
        pixel.copy_from_slice(&value);
    }
    Ok(
        RgbImage::from_raw(frame.width as u32, frame.height as u32, rgb)
            .expect("width × height × 3 bytes"),
    )
}
