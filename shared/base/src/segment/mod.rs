//! Superpixel segmentation: the interpretable features LIME and CamLIME switch on and off.
//!
//! Every segmenter is deterministic given its config and seed, and returns a [`Segmentation`]:
//! labels `0..count` in row-major order of first appearance of each segment's root (quickshift,
//! Felzenszwalb) or of its seed (SLIC, grid), as scikit-image numbers them.

mod color;
mod felzenszwalb;
mod grid;
mod quickshift;
mod slic;

use image::RgbImage;
use serde::{Deserialize, Serialize};

pub use felzenszwalb::FelzenszwalbConfig;
pub use grid::GridConfig;
pub use quickshift::QuickshiftConfig;
pub use slic::SlicConfig;

use crate::runtime::{Runtime, Sequential};
use crate::{Error, Result};

/// A label per pixel, `0..count`, every label used.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segmentation {
    height: usize,
    width: usize,
    count: usize,
    labels: Vec<u32>,
}

impl Segmentation {
    /// Wrap row-major labels; they must cover `0..count` with every label used.
    pub fn new(height: usize, width: usize, labels: Vec<u32>) -> Result<Self> {
        if labels.len() != height * width || labels.is_empty() {
            return Err(Error::Parameter(format!(
                "segmentation has {} labels for a {height}×{width} image",
                labels.len()
            )));
        }
        let count = labels.iter().max().map_or(0, |&m| m as usize + 1);
        let mut used = vec![false; count];
        labels.iter().for_each(|&l| used[l as usize] = true);
        if let Some(missing) = used.iter().position(|u| !u) {
            return Err(Error::Parameter(format!(
                "segmentation labels must be 0..{count} with none unused; label {missing} is unused"
            )));
        }
        Ok(Self {
            height,
            width,
            count,
            labels,
        })
    }

    /// Relabel arbitrary non-negative ids to ranks of their sorted values (`np.unique`'s inverse).
    pub(crate) fn from_ids(height: usize, width: usize, ids: &[usize]) -> Self {
        let mut sorted: Vec<usize> = ids.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        let labels = ids
            .iter()
            .map(|id| sorted.binary_search(id).unwrap_or_default() as u32)
            .collect();
        Self {
            height,
            width,
            count: sorted.len(),
            labels,
        }
    }

    /// Labels from a forest of parent links: each pixel takes its root, roots ranked by index.
    pub(crate) fn from_roots(height: usize, width: usize, parent: &[usize]) -> Self {
        let mut root = parent.to_vec();
        for p in 0..root.len() {
            let mut r = root[p];
            while root[r] != r {
                r = root[r];
            }
            root[p] = r;
        }
        Self::from_ids(height, width, &root)
    }

    /// Image height in pixels.
    pub fn height(&self) -> usize {
        self.height
    }

    /// Image width in pixels.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Number of segments (the LIME feature count).
    pub fn count(&self) -> usize {
        self.count
    }

    /// Row-major labels.
    pub fn labels(&self) -> &[u32] {
        &self.labels
    }

    /// Pixel count of every segment.
    pub fn sizes(&self) -> Vec<usize> {
        let mut sizes = vec![0; self.count];
        self.labels.iter().for_each(|&l| sizes[l as usize] += 1);
        sizes
    }

    /// Per-segment mean of a per-pixel map (e.g. a CAM upsampled to the image).
    pub fn mean_of(&self, map: &[f32]) -> Result<Vec<f32>> {
        self.check_map(map)?;
        let mut sums = vec![0.0f64; self.count];
        self.labels
            .iter()
            .zip(map)
            .for_each(|(&l, &v)| sums[l as usize] += f64::from(v));
        Ok(sums
            .iter()
            .zip(self.sizes())
            .map(|(s, n)| (s / n as f64) as f32)
            .collect())
    }

    /// Per-segment maximum of a per-pixel map.
    pub fn max_of(&self, map: &[f32]) -> Result<Vec<f32>> {
        self.check_map(map)?;
        let mut maxima = vec![f32::NEG_INFINITY; self.count];
        self.labels
            .iter()
            .zip(map)
            .for_each(|(&l, &v)| maxima[l as usize] = maxima[l as usize].max(v));
        Ok(maxima)
    }

    fn check_map(&self, map: &[f32]) -> Result<()> {
        if map.len() != self.labels.len() {
            return Err(Error::Parameter(format!(
                "a per-pixel map of {} values does not fit a {}×{} segmentation",
                map.len(),
                self.height,
                self.width
            )));
        }
        Ok(())
    }

    /// Pixels on a segment boundary: those with a 4-neighbour of another label (scikit-image's
    /// `find_boundaries(mode="thick")`).
    pub fn boundaries(&self) -> Vec<bool> {
        let (h, w) = (self.height, self.width);
        let at = |r: usize, c: usize| self.labels[r * w + c];
        let mut edge = vec![false; h * w];
        for r in 0..h {
            for c in 0..w {
                let here = at(r, c);
                let differs = (r > 0 && at(r - 1, c) != here)
                    || (r + 1 < h && at(r + 1, c) != here)
                    || (c > 0 && at(r, c - 1) != here)
                    || (c + 1 < w && at(r, c + 1) != here);
                edge[r * w + c] = differs;
            }
        }
        edge
    }

    /// Run-length encoding of the row-major labels as `[label, run, label, run, …]`: the compact
    /// form explanation records store.
    pub fn to_runs(&self) -> Vec<u32> {
        let mut runs = Vec::new();
        let mut iter = self.labels.iter();
        if let Some(&first) = iter.next() {
            let (mut label, mut run) = (first, 1u32);
            for &l in iter {
                if l == label {
                    run += 1;
                } else {
                    runs.extend([label, run]);
                    (label, run) = (l, 1);
                }
            }
            runs.extend([label, run]);
        }
        runs
    }

    /// Inverse of [`Segmentation::to_runs`], validated.
    pub fn from_runs(height: usize, width: usize, runs: &[u32]) -> Result<Self> {
        if !runs.len().is_multiple_of(2) {
            return Err(Error::Parameter("segment runs must come in pairs".into()));
        }
        let total: u64 = runs.chunks_exact(2).map(|p| u64::from(p[1])).sum();
        if total != (height * width) as u64 {
            return Err(Error::Parameter(format!(
                "segment runs cover {total} pixels, the image has {}",
                height * width
            )));
        }
        let mut labels = Vec::with_capacity(height * width);
        for pair in runs.chunks_exact(2) {
            labels.extend(std::iter::repeat_n(pair[0], pair[1] as usize));
        }
        Self::new(height, width, labels)
    }
}

/// Which segmenter, with its parameters. Serialised as `{"algorithm": "quickshift", …}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "algorithm", rename_all = "lowercase")]
pub enum SegmenterConfig {
    /// scikit-image quickshift (`lime`'s default).
    Quickshift(QuickshiftConfig),
    /// scikit-image SLIC.
    Slic(SlicConfig),
    /// scikit-image Felzenszwalb–Huttenlocher graph segmentation.
    Felzenszwalb(FelzenszwalbConfig),
    /// A regular grid of rectangular cells.
    Grid(GridConfig),
}

impl Default for SegmenterConfig {
    fn default() -> Self {
        Self::Quickshift(QuickshiftConfig::default())
    }
}

impl SegmenterConfig {
    /// The algorithm's name as the CLI and records spell it.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Quickshift(_) => "quickshift",
            Self::Slic(_) => "slic",
            Self::Felzenszwalb(_) => "felzenszwalb",
            Self::Grid(_) => "grid",
        }
    }

    /// The default configuration of a segmenter named on the command line.
    pub fn from_name(name: &str) -> Result<Self> {
        Ok(match name {
            "quickshift" => Self::Quickshift(QuickshiftConfig::default()),
            "slic" => Self::Slic(SlicConfig::default()),
            "felzenszwalb" => Self::Felzenszwalb(FelzenszwalbConfig::default()),
            "grid" => Self::Grid(GridConfig::default()),
            other => {
                return Err(Error::Parameter(format!(
                    "unknown segmenter `{other}`; expected quickshift, slic, felzenszwalb or grid"
                )));
            }
        })
    }

    /// Segment an image; `seed` feeds quickshift's tie-break noise (the others are deterministic).
    pub fn segment(&self, image: &RgbImage, seed: u64) -> Result<Segmentation> {
        self.segment_with(image, seed, &Sequential)
    }

    /// [`SegmenterConfig::segment`] with quickshift's row bands run by `runtime` (same labels).
    pub fn segment_with(
        &self,
        image: &RgbImage,
        seed: u64,
        runtime: &impl Runtime,
    ) -> Result<Segmentation> {
        if image.width() == 0 || image.height() == 0 {
            return Err(Error::Parameter("cannot segment an empty image".into()));
        }
        match self {
            Self::Quickshift(config) => config.segment_with(image, seed, runtime),
            Self::Slic(config) => config.segment(image),
            Self::Felzenszwalb(config) => config.segment(image),
            Self::Grid(config) => config.segment(image),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_round_trip_and_reject_bad_totals() {
        let seg = Segmentation::new(2, 3, vec![0, 0, 1, 2, 2, 1]).unwrap();
        let runs = seg.to_runs();
        assert_eq!(runs, vec![0, 2, 1, 1, 2, 2, 1, 1]);
        assert_eq!(Segmentation::from_runs(2, 3, &runs).unwrap(), seg);
        assert!(Segmentation::from_runs(2, 3, &[0, 5]).is_err());
        assert!(Segmentation::new(1, 3, vec![0, 2, 2]).is_err());
    }

    #[test]
    fn roots_are_ranked_by_index() {
        // 0 <- 1 <- 2, 3 is its own root, 4 -> 3
        let seg = Segmentation::from_roots(1, 5, &[0, 0, 1, 3, 3]);
        assert_eq!(seg.labels(), &[0, 0, 0, 1, 1]);
        assert_eq!(seg.count(), 2);
    }

    #[test]
    fn boundaries_are_thick() {
        let seg = Segmentation::new(1, 4, vec![0, 0, 1, 1]).unwrap();
        assert_eq!(seg.boundaries(), vec![false, true, true, false]);
    }

    #[test]
    fn pooling_per_segment() {
        let seg = Segmentation::new(1, 4, vec![0, 0, 1, 1]).unwrap();
        assert_eq!(seg.mean_of(&[1.0, 3.0, 0.5, 0.0]).unwrap(), vec![2.0, 0.25]);
        assert_eq!(seg.max_of(&[1.0, 3.0, 0.5, 0.0]).unwrap(), vec![3.0, 0.5]);
        assert!(seg.mean_of(&[1.0]).is_err());
    }

    #[test]
    fn unknown_segmenter_is_an_error() {
        assert!(SegmenterConfig::from_name("watershed").is_err());
        let json = serde_json::to_string(&SegmenterConfig::default()).unwrap();
        assert!(json.contains("\"algorithm\":\"quickshift\""), "{json}");
        let back: SegmenterConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, SegmenterConfig::default());
    }
}
