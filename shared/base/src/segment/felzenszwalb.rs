//! Felzenszwalb–Huttenlocher graph segmentation with scikit-image's semantics (8-connected grid
//! graph on the smoothed RGB image, Euclidean colour edge weights, `scale / 255` threshold, then
//! merging of segments under `min_size`). Written here because no maintained crate offers this
//! variant, and parity with `skimage.segmentation.felzenszwalb` is required.

use image::RgbImage;
use serde::{Deserialize, Serialize};

use super::Segmentation;
use super::color::FloatImage;
use crate::{Error, Result};

/// Felzenszwalb parameters; `Default` is scikit-image's (scale 1, sigma 0.8, min_size 20).
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FelzenszwalbConfig {
    /// Higher means larger segments.
    pub scale: f64,
    /// Gaussian pre-smoothing.
    pub sigma: f64,
    /// Segments smaller than this are merged into a neighbour.
    pub min_size: usize,
}

impl Default for FelzenszwalbConfig {
    fn default() -> Self {
        Self {
            scale: 1.0,
            sigma: 0.8,
            min_size: 20,
        }
    }
}

/// Union–find with scikit-image's rule: the smaller root index becomes the root.
struct Forest(Vec<usize>);

impl Forest {
    fn find(&mut self, mut n: usize) -> usize {
        let mut root = n;
        while self.0[root] != root {
            root = self.0[root];
        }
        while self.0[n] != root {
            let next = self.0[n];
            self.0[n] = root;
            n = next;
        }
        root
    }

    fn join(&mut self, a: usize, b: usize) -> usize {
        let root = a.min(b);
        self.0[a] = root;
        self.0[b] = root;
        root
    }
}

impl FelzenszwalbConfig {
    /// Scale > 0 and sigma in [0, 64].
    pub fn validate(&self) -> Result<()> {
        if !(self.scale > 0.0 && self.scale.is_finite() && (0.0..=64.0).contains(&self.sigma)) {
            return Err(Error::Parameter(format!(
                "felzenszwalb needs scale > 0 and sigma in [0, 64], got scale {} sigma {}",
                self.scale, self.sigma
            )));
        }
        Ok(())
    }

    /// Segment an 8-bit RGB image.
    pub fn segment(&self, image: &RgbImage) -> Result<Segmentation> {
        self.validate()?;
        let mut float = FloatImage::from_rgb(image);
        float.gaussian_blur(self.sigma);
        let (height, width) = (float.height, float.width);
        let px = &float.pixels;
        let cost = |a: usize, b: usize| -> f64 {
            let mut sum = 0.0;
            for channel in 0..3 {
                let t = px[a * 3 + channel] - px[b * 3 + channel];
                sum += t * t;
            }
            sum.sqrt()
        };
        // Edge lists in scikit-image's order: right, down, down-right, up-right.
        let mut edges: Vec<(f64, usize, usize)> = Vec::with_capacity(4 * height * width);
        let at = |r: usize, c: usize| r * width + c;
        for r in 0..height {
            for c in 1..width {
                edges.push((cost(at(r, c), at(r, c - 1)), at(r, c), at(r, c - 1)));
            }
        }
        for r in 1..height {
            for c in 0..width {
                edges.push((cost(at(r, c), at(r - 1, c)), at(r, c), at(r - 1, c)));
            }
        }
        for r in 1..height {
            for c in 1..width {
                edges.push((cost(at(r, c), at(r - 1, c - 1)), at(r, c), at(r - 1, c - 1)));
            }
        }
        for r in 0..height.saturating_sub(1) {
            for c in 1..width {
                edges.push((cost(at(r, c), at(r + 1, c - 1)), at(r, c), at(r + 1, c - 1)));
            }
        }
        edges.sort_by(|a, b| a.0.total_cmp(&b.0));

        let scale = self.scale / 255.0;
        let mut forest = Forest((0..height * width).collect());
        let mut size = vec![1usize; height * width];
        let mut inner = vec![0.0f64; height * width];
        for &(weight, a, b) in &edges {
            let (root_a, root_b) = (forest.find(a), forest.find(b));
            if root_a == root_b {
                continue;
            }
            let threshold_a = inner[root_a] + scale / size[root_a] as f64;
            let threshold_b = inner[root_b] + scale / size[root_b] as f64;
            if weight < threshold_a.min(threshold_b) {
                let root = forest.join(root_a, root_b);
                size[root] = size[root_a] + size[root_b];
                inner[root] = weight;
            }
        }
        for &(_, a, b) in &edges {
            let (root_a, root_b) = (forest.find(a), forest.find(b));
            if root_a != root_b && (size[root_a] < self.min_size || size[root_b] < self.min_size) {
                let root = forest.join(root_a, root_b);
                size[root] = size[root_a] + size[root_b];
            }
        }
        let roots: Vec<usize> = (0..height * width).map(|p| forest.find(p)).collect();
        Ok(Segmentation::from_ids(height, width, &roots))
    }
}
