//! LIME for images (`lime_image` 0.2.0.1), stage by stage: sampling of on/off segment vectors,
//! perturbed images, cosine distances and the exponential kernel, then per label the feature
//! selection and the final weighted ridge surrogate of [`crate::surrogate`].
//!
//! Everything is seeded; the classifier is a callback so the caller decides batching and
//! threads. CamLIME (see [`crate::camlime`]) swaps only the design matrix.

use image::RgbImage;
use nalgebra::DMatrix;
use rand::{RngExt, SeedableRng};
use rand_pcg::Pcg64;
use serde::{Deserialize, Serialize};

use crate::segment::Segmentation;
use crate::surrogate::{FeatureSelection, Problem};
use crate::{Error, Result};

/// What replaces a switched-off segment.
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HideColor {
    /// Each segment's mean colour (`hide_color=None` in `lime`).
    Mean,
    /// One 8-bit value in every channel (`hide_color=0` is black, what the CamLIME scripts use).
    Value(u8),
}

impl Default for HideColor {
    fn default() -> Self {
        Self::Value(0)
    }
}

impl std::str::FromStr for HideColor {
    type Err = Error;
    /// `mean` or a grey level 0–255.
    fn from_str(name: &str) -> Result<Self> {
        match name {
            "mean" => Ok(Self::Mean),
            level => level.parse().map(Self::Value).map_err(|_| {
                Error::Parameter(format!(
                    "hide colour must be `mean` or 0–255, got `{level}`"
                ))
            }),
        }
    }
}

impl std::fmt::Display for HideColor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Mean => f.write_str("mean"),
            Self::Value(level) => write!(f, "{level}"),
        }
    }
}

/// LIME's parameters; `Default` is the reference's (`explain_instance` defaults, black fill as
/// in the paper's scripts).
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimeConfig {
    /// Perturbed samples, the instance itself included (row 0).
    pub num_samples: usize,
    /// Fill of switched-off segments.
    pub hide_color: HideColor,
    /// Width of the kernel √exp(−d²/w²) on cosine distances.
    pub kernel_width: f64,
    /// Feature selection before the final fit.
    pub feature_selection: FeatureSelection,
    /// Features kept by the selection.
    pub num_features: usize,
    /// How many of the top predicted classes to explain.
    pub top_labels: usize,
}

impl Default for LimeConfig {
    fn default() -> Self {
        Self {
            num_samples: 1000,
            hide_color: HideColor::default(),
            kernel_width: 0.25,
            feature_selection: FeatureSelection::Auto,
            num_features: 100_000,
            top_labels: 5,
        }
    }
}

/// Largest accepted sample count (each sample is one forward pass).
pub const MAX_SAMPLES: usize = 100_000;

impl LimeConfig {
    /// Reject absurd values with a message naming the parameter.
    pub fn validate(&self) -> Result<()> {
        if !(2..=MAX_SAMPLES).contains(&self.num_samples) {
            return Err(Error::Parameter(format!(
                "num_samples must be in 2..={MAX_SAMPLES}, got {}",
                self.num_samples
            )));
        }
        if !(self.kernel_width > 0.0 && self.kernel_width.is_finite()) {
            return Err(Error::Parameter(format!(
                "kernel_width must be positive, got {}",
                self.kernel_width
            )));
        }
        if self.num_features == 0 || self.top_labels == 0 {
            return Err(Error::Parameter(
                "num_features and top_labels must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// The on/off design: `n_samples × n_features`, i.i.d. fair coin flips from a seeded PCG64,
/// row 0 all ones (the unperturbed instance).
pub fn sample_design(n_samples: usize, n_features: usize, seed: u64) -> DMatrix<f64> {
    let mut rng = Pcg64::seed_from_u64(seed);
    let mut design = DMatrix::zeros(n_samples, n_features);
    for i in 0..n_samples {
        for j in 0..n_features {
            design[(i, j)] = if i == 0 || rng.random_bool(0.5) {
                1.0
            } else {
                0.0
            };
        }
    }
    design
}

/// The image every switched-off segment is taken from.
pub fn fill_image(image: &RgbImage, segmentation: &Segmentation, hide: HideColor) -> RgbImage {
    match hide {
        HideColor::Value(v) => {
            RgbImage::from_pixel(image.width(), image.height(), image::Rgb([v; 3]))
        }
        HideColor::Mean => {
            let mut sums = vec![[0.0f64; 3]; segmentation.count()];
            for (pixel, &label) in image.pixels().zip(segmentation.labels()) {
                for channel in 0..3 {
                    sums[label as usize][channel] += f64::from(pixel[channel]);
                }
            }
            let sizes = segmentation.sizes();
            // lime assigns the float mean to a uint8 copy of the image: truncation.
            let means: Vec<[u8; 3]> = sums
                .iter()
                .zip(&sizes)
                .map(|(s, &n)| s.map(|v| (v / n as f64) as u8))
                .collect();
            let mut fill = image.clone();
            for (pixel, &label) in fill.pixels_mut().zip(segmentation.labels()) {
                pixel.0 = means[label as usize];
            }
            fill
        }
    }
}

/// The instance with the segments that are off in `row` replaced by `fill`.
pub fn perturbed_image(
    image: &RgbImage,
    fill: &RgbImage,
    segmentation: &Segmentation,
    row: &[bool],
) -> RgbImage {
    let mut out = image.clone();
    for ((pixel, filled), &label) in out
        .pixels_mut()
        .zip(fill.pixels())
        .zip(segmentation.labels())
    {
        if !row[label as usize] {
            *pixel = *filled;
        }
    }
    out
}

/// Cosine distance of every binary row to row 0 (all ones): 1 − √(k/F) for k ones, 1 for an
/// all-zero row, as scikit-learn's `pairwise_distances(metric="cosine")` computes it.
pub fn cosine_distances(design: &DMatrix<f64>) -> Vec<f64> {
    let first = design.row(0);
    let first_norm = first.norm();
    design
        .row_iter()
        .map(|row| {
            let norm = row.norm();
            if norm == 0.0 || first_norm == 0.0 {
                return 1.0;
            }
            let similarity = row.dot(&first) / (norm * first_norm);
            (1.0 - similarity).clamp(0.0, 2.0)
        })
        .collect()
}

/// LIME's kernel √exp(−d²/w²).
pub fn kernel(distances: &[f64], width: f64) -> Vec<f64> {
    distances
        .iter()
        .map(|d| (-(d * d) / (width * width)).exp().sqrt())
        .collect()
}

/// The surrogate explanation of one class.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LabelExplanation {
    /// Class index.
    pub label: usize,
    /// Surrogate intercept.
    pub intercept: f64,
    /// (segment id, coefficient), by |coefficient| descending.
    pub ranked: Vec<(usize, f64)>,
    /// Weighted R² of the surrogate on the samples.
    pub score: f64,
    /// The surrogate's prediction for the unperturbed instance.
    pub local_pred: f64,
}

impl LabelExplanation {
    /// Coefficient of every segment (0 for those the selection left out).
    pub fn weights(&self, n_features: usize) -> Vec<f64> {
        let mut weights = vec![0.0; n_features];
        for &(j, w) in &self.ranked {
            if j < n_features {
                weights[j] = w;
            }
        }
        weights
    }
}

/// Fit the surrogate of one class: feature selection, then weighted Ridge(α = 1) on the chosen
/// columns (`LimeBase.explain_instance_with_data`).
pub fn explain_label(
    design: &DMatrix<f64>,
    target: &[f64],
    weights: &[f64],
    label: usize,
    selection: FeatureSelection,
    num_features: usize,
) -> Result<LabelExplanation> {
    let problem = Problem {
        design,
        target,
        weights,
    };
    let used = problem.select(selection, num_features)?;
    let model = problem.ridge(&used, 1.0)?;
    let score = problem.r2(&used, &model);
    let local_pred = model.intercept
        + used
            .iter()
            .zip(&model.coef)
            .map(|(&j, c)| design[(0, j)] * c)
            .sum::<f64>();
    let mut ranked: Vec<(usize, f64)> = used.into_iter().zip(model.coef).collect();
    ranked.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()));
    Ok(LabelExplanation {
        label,
        intercept: model.intercept,
        ranked,
        score,
        local_pred,
    })
}

/// The classes LIME explains: the `k` most probable for the instance (row 0), best first.
pub fn top_labels(instance_probabilities: &[f32], k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..instance_probabilities.len()).collect();
    order.sort_by(|&a, &b| instance_probabilities[b].total_cmp(&instance_probabilities[a]));
    order.truncate(k);
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn design_is_seeded_with_an_all_ones_first_row() {
        let a = sample_design(200, 30, 5);
        assert_eq!(a, sample_design(200, 30, 5));
        assert_ne!(a, sample_design(200, 30, 6));
        assert!(a.row(0).iter().all(|&v| v == 1.0));
        let ones = a.iter().filter(|&&v| v == 1.0).count() as f64 / a.len() as f64;
        assert!((ones - 0.5).abs() < 0.05, "{ones}");
    }

    #[test]
    fn cosine_distance_of_binary_rows() {
        let design =
            DMatrix::from_row_slice(3, 4, &[1., 1., 1., 1., 1., 0., 0., 0., 0., 0., 0., 0.]);
        let d = cosine_distances(&design);
        assert!(d[0].abs() < 1e-15);
        assert!((d[1] - 0.5).abs() < 1e-15);
        assert_eq!(d[2], 1.0);
        let k = kernel(&d, 0.25);
        assert_eq!(k[0], 1.0);
        assert!((k[1] - (-2.0f64).exp()).abs() < 1e-15);
    }

    #[test]
    fn perturbation_replaces_only_switched_off_segments() {
        let seg = Segmentation::new(1, 4, vec![0, 0, 1, 1]).unwrap();
        let image = RgbImage::from_raw(4, 1, (0..12).map(|v| v as u8 * 10).collect()).unwrap();
        let black = fill_image(&image, &seg, HideColor::Value(0));
        let out = perturbed_image(&image, &black, &seg, &[true, false]);
        assert_eq!(&out.as_raw()[..6], &image.as_raw()[..6]);
        assert!(out.as_raw()[6..].iter().all(|&v| v == 0));
        let mean = fill_image(&image, &seg, HideColor::Mean);
        assert_eq!(mean.get_pixel(0, 0).0, [15, 25, 35]);
    }
}
