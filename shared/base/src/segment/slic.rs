//! SLIC superpixels (Achanta et al. 2012) with scikit-image's semantics: the image stretched to
//! [0, 1], CIE Lab, grid-seeded
//! centres whose colour starts at zero, `max_num_iter` k-means sweeps in a 2·step window, then
//! connectivity enforcement. Written here because parity with `skimage.segmentation.slic`
//! (its seeding grid and its connectivity pass) is required and no crate reproduces them.

use image::RgbImage;
use serde::{Deserialize, Serialize};

use super::Segmentation;
use super::color::FloatImage;
use crate::{Error, Result};

/// SLIC parameters; `Default` is scikit-image's.
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SlicConfig {
    /// Approximate number of segments (the seeding grid's size).
    pub n_segments: usize,
    /// Weight of space against colour: higher gives squarer segments.
    pub compactness: f64,
    /// k-means sweeps.
    pub max_num_iter: usize,
    /// Gaussian pre-smoothing.
    pub sigma: f64,
    /// Merge disconnected fragments and tiny segments into neighbours.
    pub enforce_connectivity: bool,
    /// Segments under this fraction of the mean segment size are merged.
    pub min_size_factor: f64,
    /// Upper bound on a connected segment, as a multiple of the mean segment size.
    pub max_size_factor: f64,
}

impl Default for SlicConfig {
    fn default() -> Self {
        Self {
            n_segments: 100,
            compactness: 10.0,
            max_num_iter: 10,
            sigma: 0.0,
            enforce_connectivity: true,
            min_size_factor: 0.5,
            max_size_factor: 3.0,
        }
    }
}

/// scikit-image's `regular_grid` for a (1, height, width) volume: the start and step of the
/// seeding grid along rows and columns.
fn regular_grid(height: usize, width: usize, n_points: usize) -> [(usize, usize); 2] {
    let dims = [1usize, height, width];
    let mut order = [0usize, 1, 2];
    order.sort_by_key(|&i| dims[i]);
    let sorted: Vec<f64> = order.iter().map(|&i| dims[i] as f64).collect();
    let space: f64 = sorted.iter().product();
    if space <= n_points as f64 {
        return [(0, 1), (0, 1)];
    }
    let mut steps = [(space / n_points as f64).powf(1.0 / 3.0); 3];
    if sorted.iter().zip(&steps).any(|(d, s)| d < s) {
        for dim in 0..3 {
            steps[dim] = sorted[dim];
            let rest: f64 = sorted[dim + 1..].iter().product();
            let remaining = (3 - dim - 1) as f64;
            for step in steps.iter_mut().skip(dim + 1) {
                *step = (rest / n_points as f64).powf(1.0 / remaining);
            }
            if sorted.iter().zip(&steps).all(|(d, s)| d >= s) {
                break;
            }
        }
    }
    let mut unsorted = [(0usize, 1usize); 3];
    for (rank, &dim) in order.iter().enumerate() {
        let step = steps[rank];
        unsorted[dim] = (
            (step / 2.0).floor() as usize,
            step.round_ties_even() as usize,
        );
    }
    [unsorted[1], unsorted[2]]
}

impl SlicConfig {
    /// Every parameter in its range.
    pub fn validate(&self) -> Result<()> {
        let ok = (1..=100_000).contains(&self.n_segments)
            && self.compactness > 0.0
            && self.compactness.is_finite()
            && (1..=1000).contains(&self.max_num_iter)
            && (0.0..=64.0).contains(&self.sigma)
            && self.min_size_factor >= 0.0
            && self.max_size_factor > self.min_size_factor
            && self.max_size_factor.is_finite();
        if ok {
            Ok(())
        } else {
            Err(Error::Parameter(format!(
                "slic parameters out of range: {self:?} (n_segments 1..=100000, compactness > 0, \
                 max_num_iter 1..=1000, sigma 0..=64, min_size_factor < max_size_factor)"
            )))
        }
    }

    /// Segment an 8-bit RGB image.
    pub fn segment(&self, image: &RgbImage) -> Result<Segmentation> {
        self.segment_image(FloatImage::from_rgb(image))
    }

    /// Segment a 3-channel `f64` image of any range (channel-last `pixels`), as `slic` does a
    /// float image: stretched to [0, 1], then Lab.
    pub fn segment_float(
        &self,
        height: usize,
        width: usize,
        channels: usize,
        pixels: &[f64],
    ) -> Result<Segmentation> {
        if channels != 3 || pixels.len() != height * width * 3 || height == 0 || width == 0 {
            return Err(Error::Parameter(format!(
                "slic needs a non-empty 3-channel image, found {height}×{width}×{channels} with {} values",
                pixels.len()
            )));
        }
        self.segment_image(FloatImage {
            height,
            width,
            pixels: pixels.to_vec(),
        })
    }

    fn segment_image(&self, mut rgb: FloatImage) -> Result<Segmentation> {
        self.validate()?;
        rgb.stretch();
        let mut lab = rgb.to_lab();
        lab.gaussian_blur(self.sigma);
        let (height, width) = (lab.height, lab.width);
        lab.scale(1.0 / self.compactness);
        let [(row_start, row_step), (col_start, col_step)] =
            regular_grid(height, width, self.n_segments);
        // centre = [row, col, L, a, b]; colours start at zero, so the first sweep is spatial.
        let mut centres: Vec<[f64; 5]> = Vec::new();
        for r in (row_start..height).step_by(row_step) {
            for c in (col_start..width).step_by(col_step) {
                centres.push([r as f64, c as f64, 0.0, 0.0, 0.0]);
            }
        }
        let step = row_step.max(col_step) as f64;
        let spatial_weight = 1.0 / (step * step);
        let mut nearest = vec![0usize; height * width];
        let mut distance = vec![f64::MAX; height * width];
        for _ in 0..self.max_num_iter {
            let mut changed = false;
            distance.iter_mut().for_each(|d| *d = f64::MAX);
            for (k, centre) in centres.iter().enumerate() {
                let (cy, cx) = (centre[0], centre[1]);
                if cy.is_nan() {
                    continue;
                }
                let y_min = (cy - 2.0 * row_step as f64).max(0.0) as usize;
                let y_max = ((cy + 2.0 * row_step as f64 + 1.0).min(height as f64)) as usize;
                let x_min = (cx - 2.0 * col_step as f64).max(0.0) as usize;
                let x_max = ((cx + 2.0 * col_step as f64 + 1.0).min(width as f64)) as usize;
                for y in y_min..y_max {
                    let dy = (cy - y as f64) * (cy - y as f64);
                    for x in x_min..x_max {
                        let p = y * width + x;
                        let mut dist = (dy + (cx - x as f64) * (cx - x as f64)) * spatial_weight;
                        for channel in 0..3 {
                            let t = lab.pixels[p * 3 + channel] - centre[2 + channel];
                            dist += t * t;
                        }
                        if distance[p] > dist {
                            nearest[p] = k;
                            distance[p] = dist;
                            changed = true;
                        }
                    }
                }
            }
            if !changed {
                break;
            }
            let mut sums = vec![[0.0f64; 5]; centres.len()];
            let mut counts = vec![0usize; centres.len()];
            for y in 0..height {
                for x in 0..width {
                    let p = y * width + x;
                    let k = nearest[p];
                    counts[k] += 1;
                    let s = &mut sums[k];
                    s[0] += y as f64;
                    s[1] += x as f64;
                    for channel in 0..3 {
                        s[2 + channel] += lab.pixels[p * 3 + channel];
                    }
                }
            }
            for ((centre, sum), &count) in centres.iter_mut().zip(&sums).zip(&counts) {
                // An empty centre becomes NaN in scikit-image and never wins again; keep it out.
                *centre = if count == 0 {
                    [f64::NAN; 5]
                } else {
                    sum.map(|v| v / count as f64)
                };
            }
        }
        let segmentation = if self.enforce_connectivity {
            let mean_size = (height * width) as f64 / centres.len() as f64;
            let min_size = (self.min_size_factor * mean_size) as usize;
            let max_size = ((self.max_size_factor * mean_size) as usize).max(1);
            enforce_connectivity(height, width, &nearest, min_size, max_size)
        } else {
            nearest
        };
        Ok(Segmentation::from_ids(height, width, &segmentation))
    }
}

/// scikit-image's `_enforce_label_connectivity_cython`: relabel 4-connected components in scan
/// order; a component under `min_size` joins the last labelled neighbour met while growing it.
fn enforce_connectivity(
    height: usize,
    width: usize,
    labels: &[usize],
    min_size: usize,
    max_size: usize,
) -> Vec<usize> {
    const UNSET: usize = usize::MAX;
    let mut connected = vec![UNSET; height * width];
    let mut next_label = 0usize;
    let mut members: Vec<usize> = Vec::with_capacity(max_size);
    for start in 0..height * width {
        if connected[start] != UNSET {
            continue;
        }
        let label = labels[start];
        let mut adjacent = None;
        connected[start] = next_label;
        members.clear();
        members.push(start);
        let mut visited = 0;
        'grow: while visited < members.len() && members.len() < max_size {
            let p = members[visited];
            let (y, x) = (p / width, p % width);
            let neighbours = [
                (x + 1 < width).then(|| p + 1),
                (x > 0).then(|| p - 1),
                (y + 1 < height).then(|| p + width),
                (y > 0).then(|| p - width),
            ];
            for q in neighbours.into_iter().flatten() {
                if labels[q] == label && connected[q] == UNSET {
                    connected[q] = next_label;
                    members.push(q);
                    if members.len() >= max_size {
                        break 'grow;
                    }
                } else if connected[q] != UNSET && connected[q] != next_label {
                    adjacent = Some(connected[q]);
                }
            }
            visited += 1;
        }
        // A small component joins its last labelled neighbour; one with none keeps the
        // current label, which the next component then shares (scikit-image's behaviour).
        if members.len() < min_size {
            if let Some(target) = adjacent {
                members.iter().for_each(|&p| connected[p] = target);
            }
        } else {
            next_label += 1;
        }
    }
    connected
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeding_grid_matches_scikit_image() {
        // skimage.util.regular_grid((1, 224, 224), 100) -> starts 11, steps 22
        assert_eq!(regular_grid(224, 224, 100), [(11, 22), (11, 22)]);
        // regular_grid((1, 100, 300), 50) -> rows slice(12, None, 24), cols slice(12, None, 24)
        assert_eq!(regular_grid(100, 300, 50), [(12, 24), (12, 24)]);
    }
}
