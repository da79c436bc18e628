//! Colour-space conversion and smoothing shared by the segmenters, with scikit-image's numerics
//! (`img_as_float`, `rgb2lab` under D65/2°, `scipy.ndimage.gaussian_filter` in reflect mode).

use image::RgbImage;

/// sRGB → linear, per 8-bit level, exactly as `skimage.color.rgb2xyz` computes it in `f64`.
fn linear_lut() -> [f64; 256] {
    let mut lut = [0.0; 256];
    for (level, value) in lut.iter_mut().enumerate() {
        let v = level as f64 / 255.0;
        *value = if v > 0.04045 {
            ((v + 0.055) / 1.055).powf(2.4)
        } else {
            v / 12.92
        };
    }
    lut
}

const XYZ_FROM_RGB: [[f64; 3]; 3] = [
    [0.412453, 0.357580, 0.180423],
    [0.212671, 0.715160, 0.072169],
    [0.019334, 0.119193, 0.950227],
];
const D65_WHITE: [f64; 3] = [0.95047, 1.0, 1.08883];

fn lab_f(t: f64) -> f64 {
    if t > 0.008856 {
        t.cbrt()
    } else {
        7.787 * t + 16.0 / 116.0
    }
}

/// L*a*b* of one pixel given its linear RGB.
fn lab_of_linear(linear: impl Iterator<Item = f64>) -> [f64; 3] {
    let mut rgb = [0.0; 3];
    rgb.iter_mut().zip(linear).for_each(|(slot, v)| *slot = v);
    let xyz = XYZ_FROM_RGB.map(|row| row[0] * rgb[0] + row[1] * rgb[1] + row[2] * rgb[2]);
    let x = lab_f(xyz[0] / D65_WHITE[0]);
    let y = lab_f(xyz[1] / D65_WHITE[1]);
    let z = lab_f(xyz[2] / D65_WHITE[2]);
    [116.0 * y - 16.0, 500.0 * (x - y), 200.0 * (y - z)]
}

/// Channel-last `f64` planes of an image: `pixels[(row * width + col) * 3 + channel]`.
#[derive(Clone, Debug)]
pub(crate) struct FloatImage {
    pub height: usize,
    pub width: usize,
    pub pixels: Vec<f64>,
}

impl FloatImage {
    /// `img_as_float`: 8-bit levels divided by 255.
    pub fn from_rgb(image: &RgbImage) -> Self {
        Self {
            height: image.height() as usize,
            width: image.width() as usize,
            pixels: image
                .as_raw()
                .iter()
                .map(|&v| f64::from(v) / 255.0)
                .collect(),
        }
    }

    /// CIE L*a*b* (D65, 2° observer) of an 8-bit RGB image, as `skimage.color.rgb2lab`.
    pub fn lab_from_rgb(image: &RgbImage) -> Self {
        let lut = linear_lut();
        let pixels = image
            .as_raw()
            .chunks_exact(3)
            .flat_map(|rgb| lab_of_linear(rgb.iter().map(|&v| lut[v as usize])))
            .collect();
        Self {
            height: image.height() as usize,
            width: image.width() as usize,
            pixels,
        }
    }

    /// CIE L*a*b* of an RGB image already in `f64` (values in [0, 1]).
    pub fn to_lab(&self) -> Self {
        let linear = |v: f64| {
            if v > 0.04045 {
                ((v + 0.055) / 1.055).powf(2.4)
            } else {
                v / 12.92
            }
        };
        let pixels = self
            .pixels
            .chunks_exact(3)
            .flat_map(|rgb| lab_of_linear(rgb.iter().map(|&v| linear(v))))
            .collect();
        Self {
            height: self.height,
            width: self.width,
            pixels,
        }
    }

    /// Stretch all values to [0, 1] by the image's global minimum and maximum (what
    /// `skimage.segmentation.slic` does before converting to Lab).
    pub fn stretch(&mut self) {
        let min = self.pixels.iter().copied().fold(f64::INFINITY, f64::min);
        let max = self
            .pixels
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max);
        self.pixels.iter_mut().for_each(|v| *v -= min);
        if max != min {
            self.pixels.iter_mut().for_each(|v| *v /= max - min);
        }
    }

    /// Multiply every value by `factor`.
    pub fn scale(&mut self, factor: f64) {
        self.pixels.iter_mut().for_each(|v| *v *= factor);
    }

    /// Gaussian smoothing of both spatial axes, channels kept apart: scipy's `gaussian_filter`
    /// with `truncate = 4` and `mode = "reflect"` (edge sample repeated). `sigma <= 0` is a no-op.
    pub fn gaussian_blur(&mut self, sigma: f64) {
        if sigma <= 0.0 {
            return;
        }
        let radius = (4.0 * sigma + 0.5) as usize;
        let mut kernel: Vec<f64> = (0..=2 * radius)
            .map(|i| {
                let x = i as f64 - radius as f64;
                (-0.5 * x * x / (sigma * sigma)).exp()
            })
            .collect();
        let total: f64 = kernel.iter().sum();
        kernel.iter_mut().for_each(|k| *k /= total);
        let (height, width) = (self.height, self.width);
        self.pixels = convolve_axis(&self.pixels, height, width, &kernel, true);
        self.pixels = convolve_axis(&self.pixels, height, width, &kernel, false);
    }
}

/// Reflect an index into `0..len` the way scipy's "reflect" mode does (`d c b a | a b c d`).
fn reflect(index: isize, len: usize) -> usize {
    let len = len as isize;
    let period = 2 * len;
    let mut i = index.rem_euclid(period);
    if i >= len {
        i = period - 1 - i;
    }
    i as usize
}

fn convolve_axis(
    pixels: &[f64],
    height: usize,
    width: usize,
    kernel: &[f64],
    along_rows: bool,
) -> Vec<f64> {
    let radius = (kernel.len() / 2) as isize;
    let mut out = vec![0.0; pixels.len()];
    for r in 0..height {
        for c in 0..width {
            let mut acc = [0.0f64; 3];
            for (k, weight) in kernel.iter().enumerate() {
                let offset = k as isize - radius;
                let (rr, cc) = if along_rows {
                    (reflect(r as isize + offset, height), c)
                } else {
                    (r, reflect(c as isize + offset, width))
                };
                let src = (rr * width + cc) * 3;
                for (channel, value) in acc.iter_mut().enumerate() {
                    *value += weight * pixels[src + channel];
                }
            }
            let dst = (r * width + c) * 3;
            out[dst..dst + 3].copy_from_slice(&acc);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lab_of_white_black_and_red_matches_skimage() {
        let image = RgbImage::from_raw(3, 1, vec![255, 255, 255, 0, 0, 0, 255, 0, 0]).unwrap();
        let lab = FloatImage::lab_from_rgb(&image).pixels;
        // skimage.color.rgb2lab([[[1,1,1],[0,0,0],[1,0,0]]])
        let expected = [
            100.0,
            -0.00245493786,
            0.00465342115,
            0.0,
            0.0,
            0.0,
            53.2405879437,
            80.0923082257,
            67.2027510444,
        ];
        for (got, want) in lab.iter().zip(expected) {
            assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        }
    }

    #[test]
    fn reflect_repeats_the_edge_sample() {
        let got: Vec<usize> = (-3..6).map(|i| reflect(i, 3)).collect();
        assert_eq!(got, vec![2, 1, 0, 0, 1, 2, 2, 1, 0]);
    }

    #[test]
    fn blur_keeps_a_constant_image_and_spreads_an_impulse_symmetrically() {
        let mut flat = FloatImage {
            height: 5,
            width: 6,
            pixels: vec![0.25; 90],
        };
        flat.gaussian_blur(1.0);
        assert!(flat.pixels.iter().all(|v| (v - 0.25).abs() < 1e-12));
        let mut impulse = FloatImage {
            height: 9,
            width: 9,
            pixels: vec![0.0; 243],
        };
        impulse.pixels[(4 * 9 + 4) * 3] = 1.0;
        impulse.gaussian_blur(0.8);
        let at = |r: usize, c: usize| impulse.pixels[(r * 9 + c) * 3];
        assert!((at(3, 4) - at(5, 4)).abs() < 1e-15 && (at(4, 3) - at(3, 4)).abs() < 1e-15);
        assert!(at(4, 4) > at(3, 4) && at(3, 4) > at(3, 3));
        assert!((impulse.pixels.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    }
}
