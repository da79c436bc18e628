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
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
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

/// The names of the segmenters.
const SEGMENTERS: [&str; 4] = ["quickshift", "slic", "felzenszwalb", "grid"];

/// Named settings: `faces` is the paper's face experiment (SLIC, 100 segments, compactness 1,
/// sigma 1).
const PRESETS: [(&str, &str); 1] = [("faces", "slic:n_segments=100,compactness=1,sigma=1")];

impl std::str::FromStr for SegmenterConfig {
    type Err = Error;
    /// A segmenter by name with its defaults, or with parameters changed as
    /// `name:key=value,key=value` (the JSON form's keys: `slic:n_segments=50,compactness=20`);
    /// a preset's name stands for its segmenter and parameters (`faces:n_segments=50` too).
    fn from_str(text: &str) -> Result<Self> {
        let (name, parameters) = text.split_once(':').unwrap_or((text, ""));
        if let Some((_, expanded)) = PRESETS.iter().find(|(preset, _)| *preset == name) {
            return match parameters {
                "" => expanded.parse(),
                more => format!("{expanded},{more}").parse(),
            };
        }
        if !SEGMENTERS.contains(&name) {
            let presets: Vec<&str> = PRESETS.iter().map(|(preset, _)| *preset).collect();
            return Err(Error::Parameter(format!(
                "unknown segmenter `{name}`; available: {} (presets: {})",
                SEGMENTERS.join(", "),
                presets.join(", ")
            )));
        }
        let mut object = serde_json::Map::new();
        object.insert("algorithm".into(), name.into());
        for pair in parameters.split(',').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').ok_or_else(|| {
                Error::Parameter(format!(
                    "segmenter parameters are `key=value`, got `{pair}` in `{text}`"
                ))
            })?;
            let value = serde_json::from_str(value).unwrap_or_else(|_| value.into());
            object.insert(key.trim().to_owned(), value);
        }
        serde_json::from_value(object.into())
            .map_err(|e| Error::Parameter(format!("segmenter `{text}`: {e}")))
    }
}

/// The name, then the parameters that differ from the segmenter's defaults
/// (`slic:n_segments=50`): what [`FromStr`](std::str::FromStr) reads back.
impl std::fmt::Display for SegmenterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let fields = |config: &Self| match serde_json::to_value(config) {
            Ok(serde_json::Value::Object(fields)) => fields,
            _ => serde_json::Map::new(),
        };
        let defaults = self
            .name()
            .parse::<Self>()
            .map(|d| fields(&d))
            .unwrap_or_default();
        let changed: Vec<String> = fields(self)
            .into_iter()
            .filter(|(key, value)| key != "algorithm" && defaults.get(key) != Some(value))
            .map(|(key, value)| format!("{key}={value}"))
            .collect();
        f.write_str(self.name())?;
        if !changed.is_empty() {
            write!(f, ":{}", changed.join(","))?;
        }
        Ok(())
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

    /// Whether the parameters are in range (before any image is at hand).
    pub fn validate(&self) -> Result<()> {
        match self {
            Self::Quickshift(config) => config.validate(),
            Self::Slic(config) => config.validate(),
            Self::Felzenszwalb(config) => config.validate(),
            Self::Grid(config) => config.validate(),
        }
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
    fn segmenters_parse_their_names_and_changed_parameters() {
        let unknown = "watershed"
            .parse::<SegmenterConfig>()
            .unwrap_err()
            .to_string();
        assert!(
            unknown.contains("`watershed`") && unknown.contains("slic"),
            "{unknown}"
        );
        assert!("slic:n_segment=5".parse::<SegmenterConfig>().is_err());
        assert!("slic:n_segments".parse::<SegmenterConfig>().is_err());
        assert!("grid:rows=x".parse::<SegmenterConfig>().is_err());
        let slic: SegmenterConfig = "slic:n_segments=50,enforce_connectivity=false"
            .parse()
            .unwrap();
        let SegmenterConfig::Slic(config) = &slic else {
            panic!("{slic:?}");
        };
        assert_eq!(
            (config.n_segments, config.enforce_connectivity),
            (50, false)
        );
        assert_eq!(config.compactness, SlicConfig::default().compactness);
        assert_eq!(
            slic.to_string(),
            "slic:enforce_connectivity=false,n_segments=50"
        );
        assert_eq!(slic.to_string().parse::<SegmenterConfig>().unwrap(), slic);
        assert_eq!(SegmenterConfig::default().to_string(), "quickshift");
        let faces: SegmenterConfig = "faces".parse().unwrap();
        assert_eq!(faces.to_string(), "slic:compactness=1.0,sigma=1.0");
        let fewer: SegmenterConfig = "faces:n_segments=50".parse().unwrap();
        assert_eq!(
            fewer.to_string(),
            "slic:compactness=1.0,n_segments=50,sigma=1.0"
        );
        let quickshift: SegmenterConfig = "quickshift:ratio=0.5".parse().unwrap();
        assert_eq!(
            quickshift.to_string().parse::<SegmenterConfig>().unwrap(),
            quickshift
        );
        let json = serde_json::to_string(&SegmenterConfig::default()).unwrap();
        assert!(json.contains("\"algorithm\":\"quickshift\""), "{json}");
        let back: SegmenterConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, SegmenterConfig::default());
    }
}
