//! Quickshift (Vedaldi & Soatto 2008) with scikit-image's semantics: the segmenter `lime` uses by
//! default. Written here rather than taken from a crate because no Rust crate implements it, and
//! parity with `skimage.segmentation.quickshift` (same densities, same tie-breaks, same label
//! order) is the point.

use image::RgbImage;
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};
use rand_pcg::Pcg64;
use serde::{Deserialize, Serialize};

use super::Segmentation;
use super::color::FloatImage;
use crate::runtime::{Runtime, Sequential};
use crate::{Error, Result};

/// Quickshift parameters; `Default` is `lime`'s (kernel 4, max distance 200, ratio 0.2).
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuickshiftConfig {
    /// Width of the Gaussian kernel of the density estimate (≥ 1); the search window has radius
    /// ⌈3·kernel_size⌉.
    pub kernel_size: f64,
    /// Links longer than this (in the joint colour–space metric) are cut.
    pub max_dist: f64,
    /// Weight of colour against position, in [0, 1].
    pub ratio: f64,
    /// Gaussian pre-smoothing (0 = none).
    pub sigma: f64,
    /// Work in CIE Lab (scikit-image's default) rather than RGB in [0, 1].
    pub convert2lab: bool,
}

impl Default for QuickshiftConfig {
    fn default() -> Self {
        Self {
            kernel_size: 4.0,
            max_dist: 200.0,
            ratio: 0.2,
            sigma: 0.0,
            convert2lab: true,
        }
    }
}

impl QuickshiftConfig {
    /// Reject values scikit-image rejects or that would make the window absurd.
    pub fn validate(&self) -> Result<()> {
        if !(self.kernel_size >= 1.0 && self.kernel_size <= 64.0) {
            return Err(Error::Parameter(format!(
                "quickshift kernel_size must be in [1, 64], got {}",
                self.kernel_size
            )));
        }
        if !(self.max_dist > 0.0 && self.max_dist.is_finite()) {
            return Err(Error::Parameter(format!(
                "quickshift max_dist must be positive, got {}",
                self.max_dist
            )));
        }
        if !(0.0..=1.0).contains(&self.ratio) {
            return Err(Error::Parameter(format!(
                "quickshift ratio must be in [0, 1], got {}",
                self.ratio
            )));
        }
        if !(0.0..=64.0).contains(&self.sigma) {
            return Err(Error::Parameter(format!(
                "quickshift sigma must be in [0, 64], got {}",
                self.sigma
            )));
        }
        Ok(())
    }

    /// The tie-break noise scikit-image adds to the densities: N(0, 1e-5²) per pixel, here from
    /// a seeded PCG64 (scikit-image draws it from NumPy's generator, so labels agree with it
    /// exactly only when its own noise is passed to [`QuickshiftConfig::segment_with_noise`]).
    pub fn noise(height: usize, width: usize, seed: u64) -> Vec<f64> {
        let mut rng = Pcg64::seed_from_u64(seed);
        let normal = Normal::new(0.0, 1e-5).expect("constant, valid standard deviation");
        (0..height * width)
            .map(|_| normal.sample(&mut rng))
            .collect()
    }

    /// Segment with seeded tie-break noise.
    pub fn segment(&self, image: &RgbImage, seed: u64) -> Result<Segmentation> {
        self.segment_with(image, seed, &Sequential)
    }

    /// Segment with seeded tie-break noise, bands of rows run by `runtime` (same labels for any
    /// runtime).
    pub fn segment_with(
        &self,
        image: &RgbImage,
        seed: u64,
        runtime: &impl Runtime,
    ) -> Result<Segmentation> {
        let noise = Self::noise(image.height() as usize, image.width() as usize, seed);
        self.segment_with_noise(image, &noise, runtime)
    }

    /// Segment with the given tie-break noise (one value per pixel, row-major).
    pub fn segment_with_noise(
        &self,
        image: &RgbImage,
        noise: &[f64],
        runtime: &impl Runtime,
    ) -> Result<Segmentation> {
        self.validate()?;
        let (height, width) = (image.height() as usize, image.width() as usize);
        if noise.len() != height * width {
            return Err(Error::Parameter(format!(
                "quickshift noise has {} values for a {height}×{width} image",
                noise.len()
            )));
        }
        let mut features = if self.convert2lab {
            FloatImage::lab_from_rgb(image)
        } else {
            FloatImage::from_rgb(image)
        };
        features.gaussian_blur(self.sigma);
        features.scale(self.ratio);
        let radius = (3.0 * self.kernel_size).ceil() as usize;
        let mut density = densities(&features, radius, self.kernel_size, runtime);
        density.iter_mut().zip(noise).for_each(|(d, n)| *d += n);
        let parent = parents(&features, &density, radius, self.max_dist, runtime);
        Ok(Segmentation::from_roots(height, width, &parent))
    }
}

/// Squared joint distance between pixels `p` and `q` (colour channels, then row and column).
#[inline]
fn squared_distance(lab: &[f64], p: usize, q: usize, d_row: f64, d_col: f64) -> f64 {
    let (a, b) = (&lab[p * 3..p * 3 + 3], &lab[q * 3..q * 3 + 3]);
    let mut dist = 0.0;
    for channel in 0..3 {
        let t = a[channel] - b[channel];
        dist += t * t;
    }
    dist + d_row * d_row + d_col * d_col
}

/// `exp(x)` for `x ≤ 0`, branch-free so the density loop vectorises (libm's `exp` is a call per
/// element and was 70% of quickshift's time). Cody–Waite reduction to |r| ≤ ln2/2, a degree-13
/// Taylor polynomial (truncation error < 1e-17 relative), and 2ⁿ assembled in the exponent bits.
/// Inputs below −708 return exp(−708) ≈ 3e−308, which is 0 for any density.
#[inline(always)]
fn exp_nonpositive(x: f64) -> f64 {
    const LN2_HI: f64 = 6.931_471_803_691_238e-1;
    const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;
    const ROUND: f64 = 6_755_399_441_055_744.0; // 1.5·2^52: adding it rounds to an integer
    let x = x.max(-708.0);
    let shifted = x * std::f64::consts::LOG2_E + ROUND;
    let n = shifted - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let mut poly = 1.0 / 6_227_020_800.0; // 1/13!
    for k in (1..13).rev() {
        poly = poly * r + 1.0 / FACTORIALS[k];
    }
    poly = poly * r + 1.0;
    let exponent = (shifted.to_bits().wrapping_add(1023) & 0x7ff) << 52;
    poly * f64::from_bits(exponent)
}

const FACTORIALS: [f64; 13] = [
    1.0,
    1.0,
    2.0,
    6.0,
    24.0,
    120.0,
    720.0,
    5040.0,
    40320.0,
    362_880.0,
    3_628_800.0,
    39_916_800.0,
    479_001_600.0,
];

/// Rows per band of the density and parent passes. Fixed, so the order in which contributions
/// are summed — and therefore the labels — does not depend on how many threads run the bands.
const BAND_ROWS: usize = 16;

/// The image as three planes, so the density loop reads contiguous runs.
struct Planes {
    height: usize,
    width: usize,
    channels: [Vec<f64>; 3],
}

/// One band's density contributions: `forward` for its own rows (each pixel's pairs with later
/// pixels, plus itself), `backward` for its rows and the `radius` rows below (the later pixel
/// of each pair). Kept apart so the two slices written in one run never alias.
struct BandDensity {
    first_row: usize,
    forward: Vec<f64>,
    backward: Vec<f64>,
}

/// The density pass over rows `first_row..end_row`. Each unordered pair is visited once, by
/// offset, and credited to both pixels (the kernel is symmetric): half of scikit-image's work,
/// in contiguous runs the compiler vectorises.
#[inline(always)]
fn band_density(
    planes: &Planes,
    first_row: usize,
    end_row: usize,
    radius: usize,
    scale: f64,
) -> BandDensity {
    let (height, width) = (planes.height, planes.width);
    let last_row = (end_row + radius).min(height);
    let mut forward = vec![1.0; (end_row - first_row) * width];
    let mut backward = vec![0.0; (last_row - first_row) * width];
    let origin = first_row * width;
    let radius = radius as isize;
    let [l, a, b] = &planes.channels;
    for d_row in 0..=radius.min(height as isize - 1) {
        let col_from = if d_row == 0 { 1 } else { -radius };
        for d_col in col_from..=radius {
            if d_col.unsigned_abs() >= width {
                continue;
            }
            let spatial = (d_row * d_row + d_col * d_col) as f64;
            // Columns c with both c and c + d_col inside the image.
            let c_start = (-d_col).max(0) as usize;
            let run = width - d_col.unsigned_abs();
            for r in first_row..end_row.min(height - d_row as usize) {
                let p0 = r * width + c_start;
                let q0 = (p0 as isize + d_row * width as isize + d_col) as usize;
                let fwd = &mut forward[p0 - origin..p0 - origin + run];
                let bwd = &mut backward[q0 - origin..q0 - origin + run];
                let (lp, lq) = (&l[p0..p0 + run], &l[q0..q0 + run]);
                let (ap, aq) = (&a[p0..p0 + run], &a[q0..q0 + run]);
                let (bp, bq) = (&b[p0..p0 + run], &b[q0..q0 + run]);
                for i in 0..run {
                    let (dl, da, db) = (lp[i] - lq[i], ap[i] - aq[i], bp[i] - bq[i]);
                    let dist = dl * dl + da * da + db * db + spatial;
                    let weight = exp_nonpositive(dist * scale);
                    fwd[i] += weight;
                    bwd[i] += weight;
                }
            }
        }
    }
    BandDensity {
        first_row,
        forward,
        backward,
    }
}

/// [`band_density`] compiled for AVX2 or AVX-512 (4 or 8 lanes instead of SSE2's 2). The same
/// IEEE operations run in every lane (no FMA contraction), so results are bit-identical to the
/// portable build.
#[cfg(target_arch = "x86_64")]
mod wide {
    use super::{BandDensity, Planes, band_density};

    #[target_feature(enable = "avx512f")]
    pub(super) fn avx512(
        planes: &Planes,
        first: usize,
        end: usize,
        radius: usize,
        scale: f64,
    ) -> BandDensity {
        band_density(planes, first, end, radius, scale)
    }

    #[target_feature(enable = "avx2")]
    pub(super) fn avx2(
        planes: &Planes,
        first: usize,
        end: usize,
        radius: usize,
        scale: f64,
    ) -> BandDensity {
        band_density(planes, first, end, radius, scale)
    }
}

/// The widest build of the density pass this CPU runs.
#[allow(unsafe_code)]
fn band_density_dispatch(
    planes: &Planes,
    first: usize,
    end: usize,
    radius: usize,
    scale: f64,
) -> BandDensity {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F, the only requirement of this function.
            return unsafe { wide::avx512(planes, first, end, radius, scale) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, the only requirement of this function.
            return unsafe { wide::avx2(planes, first, end, radius, scale) };
        }
    }
    band_density(planes, first, end, radius, scale)
}

/// Parzen density of every pixel over its (2·radius+1)² window, bands run by the runtime.
fn densities(
    features: &FloatImage,
    radius: usize,
    kernel_size: f64,
    runtime: &impl Runtime,
) -> Vec<f64> {
    let (height, width) = (features.height, features.width);
    let plane = |channel: usize| -> Vec<f64> {
        features
            .pixels
            .iter()
            .skip(channel)
            .step_by(3)
            .copied()
            .collect()
    };
    let planes = Planes {
        height,
        width,
        channels: [plane(0), plane(1), plane(2)],
    };
    let scale = -0.5 / (kernel_size * kernel_size);
    let bands = runtime.map(height.div_ceil(BAND_ROWS), &|band| {
        let first = band * BAND_ROWS;
        band_density_dispatch(
            &planes,
            first,
            (first + BAND_ROWS).min(height),
            radius,
            scale,
        )
    });
    let mut density = vec![0.0; height * width];
    for band in &bands {
        let origin = band.first_row * width;
        for (d, f) in density[origin..].iter_mut().zip(&band.forward) {
            *d += f;
        }
    }
    for band in &bands {
        let origin = band.first_row * width;
        for (d, b) in density[origin..].iter_mut().zip(&band.backward) {
            *d += b;
        }
    }
    density
}

/// Parent of every pixel: the nearest pixel of strictly higher density in its window, or itself
/// when none is within `max_dist`. Ties go to the first pixel in row-major order, as in
/// scikit-image's scan. Offsets are visited by increasing spatial distance, so the search stops
/// as soon as the spatial term alone exceeds the best distance found.
fn parents(
    features: &FloatImage,
    density: &[f64],
    radius: usize,
    max_dist: f64,
    runtime: &impl Runtime,
) -> Vec<usize> {
    let (height, width) = (features.height, features.width);
    let lab = &features.pixels;
    let radius = radius as isize;
    let mut offsets: Vec<(isize, isize, f64)> = Vec::new();
    for d_row in -radius..=radius {
        for d_col in -radius..=radius {
            offsets.push((d_row, d_col, (d_row * d_row + d_col * d_col) as f64));
        }
    }
    offsets.sort_by(|a, b| a.2.total_cmp(&b.2));
    let bands = runtime.map(height.div_ceil(BAND_ROWS), &|band| {
        let rows = band * BAND_ROWS..((band + 1) * BAND_ROWS).min(height);
        let mut parent: Vec<usize> = (rows.start * width..rows.end * width).collect();
        for r in rows.start as isize..rows.end as isize {
            for c in 0..width as isize {
                let p = (r * width as isize + c) as usize;
                let current = density[p];
                let mut closest = f64::MAX;
                let mut best = p;
                for &(d_row, d_col, spatial) in &offsets {
                    if spatial > closest {
                        break;
                    }
                    let (r2, c2) = (r + d_row, c + d_col);
                    if r2 < 0 || c2 < 0 || r2 >= height as isize || c2 >= width as isize {
                        continue;
                    }
                    let q = (r2 * width as isize + c2) as usize;
                    if density[q] > current {
                        let dist = squared_distance(lab, p, q, d_row as f64, d_col as f64);
                        if dist < closest || (dist == closest && q < best) {
                            closest = dist;
                            best = q;
                        }
                    }
                }
                if closest.sqrt() <= max_dist {
                    parent[p - rows.start * width] = best;
                }
            }
        }
        parent
    });
    bands.concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_exp_matches_libm() {
        let mut worst = 0.0f64;
        for i in 0..200_000 {
            let x = -(i as f64) * 0.0035 - 1e-9 * i as f64;
            let (fast, exact) = (exp_nonpositive(x), x.exp());
            worst = worst.max(((fast - exact) / exact).abs());
        }
        assert!(worst < 4e-16, "worst relative error {worst}");
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert!(exp_nonpositive(-1e6) < 1e-300);
    }
}
