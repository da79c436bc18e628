//! Perturbations of a model input (`channels × height × width`, the normalised tensor) as
//! Quantus applies them: baseline values, pixel and patch replacement (every channel of a pixel
//! at once), additive noise, horizontal translation and ROAD's noisy linear imputation.

use nalgebra::DMatrix;
use serde::{Deserialize, Serialize};
use tract_onnx::prelude::tract_ndarray::{Array3, ArrayView3, Axis};

use super::stats::mean_f32;
use crate::draws::Draws;
use crate::{Error, Result};

/// What replaced values become (Quantus's `perturb_baseline`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Baseline {
    /// The minimum of the (current) input.
    Black,
    /// The maximum of the (current) input.
    White,
    /// The mean of the (current) input.
    Mean,
    /// One U(0, 1) draw per channel, redrawn at every perturbation.
    Uniform,
    /// A constant.
    Value(f32),
}

impl Baseline {
    /// One value per channel for `x`. Quantus draws the per-channel uniforms at every call,
    /// whichever baseline is asked for, so we do too (the parity fixture depends on the order).
    pub fn values(self, x: ArrayView3<f32>, draws: &mut Draws) -> Vec<f32> {
        let channels = x.dim().0;
        let uniform = draws.uniform(0.0, 1.0, channels);
        let constant = |v: f32| vec![v; channels];
        match self {
            Self::Black => constant(x.iter().copied().fold(f32::INFINITY, f32::min)),
            Self::White => constant(x.iter().copied().fold(f32::NEG_INFINITY, f32::max)),
            Self::Mean => constant(match x.as_slice() {
                Some(slice) => mean_f32(slice),
                None => mean_f32(&x.iter().copied().collect::<Vec<_>>()),
            }),
            Self::Uniform => uniform.into_iter().map(|v| v as f32).collect(),
            Self::Value(v) => constant(v),
        }
    }
}

/// A baseline for one image that is perturbed step by step: "black" and "white" are the
/// extremes of the image, which replacing values by that extreme never changes, so they are
/// found once; every call still makes Quantus's per-call draws.
#[derive(Clone, Debug)]
pub struct Filler {
    baseline: Baseline,
    extreme: Option<Vec<f32>>,
}

impl Filler {
    /// A filler for `baseline`.
    pub fn new(baseline: Baseline) -> Self {
        Self {
            baseline,
            extreme: None,
        }
    }

    /// The per-channel values for the current image `x`.
    pub fn values(&mut self, x: ArrayView3<f32>, draws: &mut Draws) -> Vec<f32> {
        match self.baseline {
            Baseline::Black | Baseline::White => {
                draws.uniform(0.0, 1.0, x.dim().0);
                self.extreme
                    .get_or_insert_with(|| self.baseline.values(x, &mut Draws::new(0)))
                    .clone()
            }
            baseline => baseline.values(x, draws),
        }
    }

    /// The per-channel values for a patch perturbation: Quantus takes the baseline from the
    /// input padded by `pad` samples of edge replication, which matters only for the mean.
    pub fn patch_values(&mut self, x: ArrayView3<f32>, pad: usize, draws: &mut Draws) -> Vec<f32> {
        if self.baseline == Baseline::Mean {
            self.baseline.values(edge_padded(x, pad).view(), draws)
        } else {
            self.values(x, draws)
        }
    }
}

/// Set every channel of the pixels `pixels` (flat `row·width + col` indices) to `values`.
pub fn replace_pixels(x: &mut Array3<f32>, pixels: &[usize], values: &[f32]) {
    let width = x.dim().2;
    for (mut plane, &value) in x.axis_iter_mut(Axis(0)).zip(values) {
        for &p in pixels {
            plane[(p / width, p % width)] = value;
        }
    }
}

/// The rectangle `[row, row + size) × [col, col + size)` clipped to the image, as flat pixels.
pub fn patch_pixels(
    height: usize,
    width: usize,
    row: usize,
    col: usize,
    size: usize,
) -> Vec<usize> {
    let mut pixels = Vec::with_capacity(size * size);
    for r in row..(row + size).min(height) {
        for c in col..(col + size).min(width) {
            pixels.push(r * width + c);
        }
    }
    pixels
}

/// `np.pad(x, pad, mode="edge")` over the two spatial axes.
fn edge_padded(x: ArrayView3<f32>, pad: usize) -> Array3<f32> {
    let (channels, height, width) = x.dim();
    Array3::from_shape_fn(
        (channels, height + 2 * pad, width + 2 * pad),
        |(c, r, col)| {
            let r = r.saturating_sub(pad).min(height - 1);
            let col = col.saturating_sub(pad).min(width - 1);
            x[(c, r, col)]
        },
    )
}

/// `x + noise` over every value except the very first (Quantus's `perturb_batch` drops index 0
/// of the full index range), each sum rounded to `f32` from `f64`.
pub fn add_noise(x: ArrayView3<f32>, noise: &[f64]) -> Array3<f32> {
    let mut out = x.to_owned();
    for (i, (v, n)) in out.iter_mut().zip(noise).enumerate() {
        if i > 0 {
            *v = (f64::from(*v) + n) as f32;
        }
    }
    out
}

/// OpenCV's `warpAffine` by a whole number of columns `dx` (Quantus's `translation_x_direction`:
/// the matrix translates along the width), uncovered columns filled with `fill`.
pub fn translate_columns(x: ArrayView3<f32>, dx: usize, fill: f32) -> Array3<f32> {
    let (channels, height, width) = x.dim();
    Array3::from_shape_fn((channels, height, width), |(c, r, col)| {
        if col >= dx { x[(c, r, col - dx)] } else { fill }
    })
}

/// ROAD's noisy linear imputation: every pixel in `pixels` (flat indices) becomes the weighted
/// mean of its 8 neighbours (1/6 edge-adjacent, 1/12 diagonal; neighbours outside the image
/// dropped), imputed pixels solved jointly per channel, then `noise · N(0, 1)` added (draws
/// taken channel-major, as `np.random.randn(channels, n)`).
pub fn noisy_linear_imputation(
    x: ArrayView3<f32>,
    pixels: &[usize],
    noise: f64,
    draws: &mut Draws,
) -> Result<Array3<f32>> {
    const OFFSETS: [((isize, isize), f64); 8] = [
        ((1, 1), 1.0 / 12.0),
        ((0, 1), 1.0 / 6.0),
        ((-1, 1), 1.0 / 12.0),
        ((1, -1), 1.0 / 12.0),
        ((0, -1), 1.0 / 6.0),
        ((-1, -1), 1.0 / 12.0),
        ((1, 0), 1.0 / 6.0),
        ((-1, 0), 1.0 / 6.0),
    ];
    let (channels, height, width) = x.dim();
    let n = pixels.len();
    let mut variable = vec![usize::MAX; height * width];
    for (i, &p) in pixels.iter().enumerate() {
        variable[p] = i;
    }
    // The system is symmetric and strictly diagonally dominant: conjugate gradients on −A.
    let mut neighbours: Vec<Vec<(usize, f64)>> = vec![Vec::new(); n];
    let mut diagonal = vec![1.0f64; n];
    let mut rhs = DMatrix::<f64>::zeros(n, channels);
    for (i, &p) in pixels.iter().enumerate() {
        let (r, c) = ((p / width) as isize, (p % width) as isize);
        for &((dr, dc), weight) in &OFFSETS {
            let (nr, nc) = (r + dr, c + dc);
            if nr < 0 || nc < 0 || nr >= height as isize || nc >= width as isize {
                diagonal[i] -= weight;
                continue;
            }
            let q = nr as usize * width + nc as usize;
            if variable[q] == usize::MAX {
                for ch in 0..channels {
                    rhs[(i, ch)] += weight * f64::from(x[(ch, nr as usize, nc as usize)]);
                }
            } else {
                neighbours[i].push((variable[q], weight));
            }
        }
    }
    let apply = |v: &[f64], out: &mut [f64]| {
        for i in 0..n {
            let mut s = diagonal[i] * v[i];
            for &(j, w) in &neighbours[i] {
                s -= w * v[j];
            }
            out[i] = s;
        }
    };
    let mut out = x.to_owned();
    let draws_all = draws.normal(0.0, 1.0, channels * n);
    for ch in 0..channels {
        let b: Vec<f64> = rhs.column(ch).iter().copied().collect();
        let solution = conjugate_gradients(&apply, &b, n)?;
        for (i, &p) in pixels.iter().enumerate() {
            let value = solution[i] + noise * draws_all[ch * n + i];
            out[(ch, p / width, p % width)] = value as f32;
        }
    }
    Ok(out)
}

fn conjugate_gradients(
    apply: &dyn Fn(&[f64], &mut [f64]),
    b: &[f64],
    n: usize,
) -> Result<Vec<f64>> {
    let mut x = vec![0.0; n];
    let mut r = b.to_vec();
    let mut p = r.clone();
    let mut ap = vec![0.0; n];
    let norm_b = b.iter().map(|v| v * v).sum::<f64>().sqrt();
    let mut rr = r.iter().map(|v| v * v).sum::<f64>();
    for _ in 0..10 * n.max(10) {
        if rr.sqrt() <= 1e-13 * norm_b.max(f64::MIN_POSITIVE) {
            return Ok(x);
        }
        apply(&p, &mut ap);
        let alpha = rr / p.iter().zip(&ap).map(|(a, b)| a * b).sum::<f64>();
        for i in 0..n {
            x[i] += alpha * p[i];
            r[i] -= alpha * ap[i];
        }
        let next = r.iter().map(|v| v * v).sum::<f64>();
        let beta = next / rr;
        rr = next;
        for i in 0..n {
            p[i] = r[i] + beta * p[i];
        }
    }
    if rr.sqrt() <= 1e-9 * norm_b.max(f64::MIN_POSITIVE) {
        Ok(x)
    } else {
        Err(Error::Inference(
            "noisy linear imputation did not converge".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imputation_of_a_constant_image_is_that_constant() {
        let x = Array3::from_elem((2, 10, 10), 0.5f32);
        let pixels: Vec<usize> = (0..100).filter(|p| p % 3 == 0).collect();
        let out = noisy_linear_imputation(x.view(), &pixels, 0.0, &mut Draws::new(1)).unwrap();
        assert!(out.iter().all(|v| (v - 0.5).abs() < 1e-6));
    }

    #[test]
    fn imputation_interpolates_a_ramp() {
        // A horizontal ramp is harmonic for this stencil: interior gaps are filled exactly.
        let x = Array3::from_shape_fn((1, 8, 8), |(_, _, c)| c as f32);
        let out =
            noisy_linear_imputation(x.view(), &[27, 28, 35], 0.0, &mut Draws::new(1)).unwrap();
        for p in [27usize, 28, 35] {
            assert!((out[(0, p / 8, p % 8)] - (p % 8) as f32).abs() < 1e-5);
        }
    }

    #[test]
    fn patches_clip_and_translation_fills() {
        assert_eq!(patch_pixels(4, 4, 3, 2, 2), vec![14, 15]);
        let x = Array3::from_shape_fn((1, 1, 4), |(_, _, c)| c as f32);
        let moved = translate_columns(x.view(), 1, -9.0);
        assert_eq!(moved.as_slice().unwrap(), &[-9.0, 0.0, 1.0, 2.0]);
    }
}
