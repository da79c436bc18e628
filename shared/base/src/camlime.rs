//! CamLIME: LIME whose design matrix is reweighted by the class activation map of the
//! explained class (METHOD.md §3). Sampling, distances and the kernel stay LIME's, on the
//! binary on/off matrix Z; only the regression's design changes.

use nalgebra::DMatrix;
use serde::{Deserialize, Serialize};

use crate::cam::CamMap;
use crate::segment::Segmentation;
use crate::{Error, Result};

/// How a segment's CAM weight is pooled from the pixels it covers.
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    /// Mean activation over the segment.
    #[default]
    Mean,
    /// Peak activation in the segment.
    Max,
}

/// How the CAM enters the design matrix.
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum CamLimeMode {
    /// The project's default: the CAM pooled per segment into c ∈ [0, 1]^F (min-max
    /// normalised), X = Z ⊙ c with the same c on every row — a ridge prior α/c_j².
    Segment {
        /// Mean or max pooling.
        pooling: Pooling,
    },
    /// The reference code's mapping, bit for bit: the CAM interpolated (bilinear, corner-aligned)
    /// onto an N×F grid (sample i ↔ CAM row i/(N−1), segment j ↔ CAM column j/(F−1)),
    /// X = round(Z ⊙ M, 4). It has no geometric meaning; it exists to reproduce the paper.
    Grid,
    /// The reference's other variant: the CAM resized to 1×F (bilinear, half-pixel centres
    /// like OpenCV) and repeated over rows.
    Vector,
}

impl Default for CamLimeMode {
    fn default() -> Self {
        Self::Segment {
            pooling: Pooling::Mean,
        }
    }
}

impl std::str::FromStr for CamLimeMode {
    type Err = Error;
    /// `segment` (or `segment-mean`), `segment-max`, `grid` or `vector`.
    fn from_str(name: &str) -> Result<Self> {
        Ok(match name {
            "segment" | "segment-mean" => Self::Segment {
                pooling: Pooling::Mean,
            },
            "segment-max" => Self::Segment {
                pooling: Pooling::Max,
            },
            "grid" => Self::Grid,
            "vector" => Self::Vector,
            other => {
                return Err(Error::Parameter(format!(
                    "unknown CamLIME mode `{other}`; available: segment, segment-max, grid, vector"
                )));
            }
        })
    }
}

impl std::fmt::Display for CamLimeMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Segment {
                pooling: Pooling::Mean,
            } => "segment",
            Self::Segment {
                pooling: Pooling::Max,
            } => "segment-max",
            Self::Grid => "grid",
            Self::Vector => "vector",
        })
    }
}

impl CamLimeMode {
    /// The CamLIME design for binary samples `z` (N×F), the explained class's CAM and the
    /// segmentation that defined the features.
    pub fn design(
        &self,
        z: &DMatrix<f64>,
        cam: &CamMap,
        segmentation: &Segmentation,
    ) -> Result<DMatrix<f64>> {
        let (n_samples, n_features) = z.shape();
        if n_features != segmentation.count() {
            return Err(Error::Parameter(format!(
                "design has {n_features} columns, the segmentation {} segments",
                segmentation.count()
            )));
        }
        Ok(match self {
            Self::Segment { pooling } => {
                let upsampled = cam.resize(segmentation.height(), segmentation.width());
                let pooled = match pooling {
                    Pooling::Mean => segmentation.mean_of(upsampled.values())?,
                    Pooling::Max => segmentation.max_of(upsampled.values())?,
                };
                let c = min_max(&pooled);
                DMatrix::from_fn(n_samples, n_features, |i, j| z[(i, j)] * c[j])
            }
            Self::Grid => {
                let m = grid_map(cam, n_samples, n_features);
                DMatrix::from_fn(n_samples, n_features, |i, j| round4(z[(i, j)] * m[(i, j)]))
            }
            Self::Vector => {
                let c = cam.resize(1, n_features);
                DMatrix::from_fn(n_samples, n_features, |i, j| {
                    z[(i, j)] * f64::from(c.values()[j])
                })
            }
        })
    }
}

/// Min-max normalisation to [0, 1]; a constant vector maps to all ones (every segment equal).
fn min_max(values: &[f32]) -> Vec<f64> {
    let min = values.iter().copied().fold(f32::INFINITY, f32::min);
    let max = values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max <= min {
        return vec![1.0; values.len()];
    }
    values
        .iter()
        .map(|&v| f64::from(v - min) / f64::from(max - min))
        .collect()
}

/// NumPy's `round(x, 4)`: scale, round half to even, unscale.
fn round4(x: f64) -> f64 {
    (x * 10_000.0).round_ties_even() / 10_000.0
}

/// Corner-aligned bilinear interpolation of the CAM onto `rows × cols`, in `f64`, in the
/// fixture script's order of operations (so the rounded design is bit-identical).
pub(crate) fn grid_map(cam: &CamMap, rows: usize, cols: usize) -> DMatrix<f64> {
    let (h, w) = (cam.height(), cam.width());
    let at = |r: usize, c: usize| f64::from(cam.values()[r * w + c]);
    let axis = |n_out: usize, n_in: usize| -> Vec<(usize, usize, f64)> {
        let scale = if n_out > 1 {
            (n_in - 1) as f64 / (n_out - 1) as f64
        } else {
            0.0
        };
        (0..n_out)
            .map(|i| {
                let pos = i as f64 * scale;
                let lo = (pos.floor() as usize).min(n_in.saturating_sub(2));
                let hi = (lo + 1).min(n_in - 1);
                (lo, hi, pos - lo as f64)
            })
            .collect()
    };
    let (ys, xs) = (axis(rows, h), axis(cols, w));
    DMatrix::from_fn(rows, cols, |i, j| {
        let (y0, y1, wy) = ys[i];
        let (x0, x1, wx) = xs[j];
        let top = at(y0, x0) * (1.0 - wx) + at(y0, x1) * wx;
        let bottom = at(y1, x0) * (1.0 - wx) + at(y1, x1) * wx;
        top * (1.0 - wy) + bottom * wy
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_mode_scales_columns_by_pooled_cam() {
        let seg = Segmentation::new(2, 2, vec![0, 0, 1, 1]).unwrap();
        let cam = CamMap::new(2, 2, vec![0.2, 0.4, 1.0, 0.8]).unwrap();
        let z = DMatrix::from_row_slice(2, 2, &[1.0, 1.0, 0.0, 1.0]);
        let mean = CamLimeMode::default().design(&z, &cam, &seg).unwrap();
        assert_eq!(mean, DMatrix::from_row_slice(2, 2, &[0.0, 1.0, 0.0, 1.0]));
        let max = CamLimeMode::Segment {
            pooling: Pooling::Max,
        }
        .design(&z, &cam, &seg)
        .unwrap();
        assert_eq!(max, mean);
        let bad = Segmentation::new(1, 4, vec![0, 1, 2, 2]).unwrap();
        assert!(CamLimeMode::Grid.design(&z, &cam, &bad).is_err());
    }

    #[test]
    fn grid_map_hits_the_corners() {
        let cam = CamMap::new(2, 3, vec![0.0, 0.5, 1.0, 0.25, 0.5, 0.75]).unwrap();
        let m = grid_map(&cam, 5, 4);
        assert_eq!(m[(0, 0)], 0.0);
        assert_eq!(m[(0, 3)], 1.0);
        assert_eq!(m[(4, 0)], 0.25);
        assert_eq!(m[(4, 3)], 0.75);
        assert_eq!(round4(0.123_45), 0.1234);
        assert_eq!(round4(0.123_450_1), 0.1235);
    }
}
