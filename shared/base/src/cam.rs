//! Class activation maps: the [`CamMap`] type with pytorch-grad-cam's post-processing
//! (ReLU, min-max scaling, OpenCV-style bilinear resize, multi-layer aggregation).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};

use crate::attribution::AttributionConfig;
use crate::{Error, Result};

/// Which CAM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CamMethod {
    /// Channel weights = mean gradient.
    GradCam,
    /// Σ_k G ⊙ A.
    HiResCam,
    /// Grad-CAM++ channel weights.
    GradCamPlusPlus,
    /// XGrad-CAM channel weights.
    XGradCam,
    /// Σ_k ReLU(G) ⊙ A.
    LayerCam,
    /// First principal component of G ⊙ A.
    EigenGradCam,
    /// Σ_k ReLU(G ⊙ A).
    GradCamElementWise,
    /// |∇x ⊙ x| plus |bias ⊙ G| of every layer with a bias.
    FullGrad,
    /// First principal component of the activations (no target class needed).
    EigenCam,
    /// Channel weights = softmax of the class logit with the input masked by each channel.
    ScoreCam,
    /// Channel weights = relative drop of the class logit with each channel ablated.
    AblationCam,
    /// Uniform random channel weights in [−1, 1): a baseline.
    Random,
    /// Input attribution: |∇x logit| (captum's Saliency).
    Saliency,
    /// Input attribution: x ⊙ ∇x logit.
    InputXGradient,
    /// Input attribution: Integrated Gradients from a constant baseline.
    IntegratedGradients,
    /// Input attribution: the gradient with guided rectifiers.
    GuidedBackprop,
    /// Input attribution: Guided Backprop × nearest-upsampled Grad-CAM.
    GuidedGradCam,
    /// Input attribution: mean logit drop over the sliding windows covering each pixel.
    Occlusion,
}

crate::names::named!(CamMethod, "CAM method", {
    GradCam => "gradcam",
    HiResCam => "hirescam",
    GradCamPlusPlus => "gradcam++",
    XGradCam => "xgradcam",
    LayerCam => "layercam",
    EigenGradCam => "eigengradcam",
    GradCamElementWise => "gradcamelementwise",
    FullGrad => "fullgrad",
    EigenCam => "eigencam",
    ScoreCam => "scorecam",
    AblationCam => "ablationcam",
    Random => "random",
    Saliency => "saliency",
    InputXGradient => "inputxgradient",
    IntegratedGradients => "integratedgradients",
    GuidedBackprop => "guidedbackprop",
    GuidedGradCam => "guidedgradcam",
    Occlusion => "occlusion",
});

impl CamMethod {
    /// The name people write in papers and figure labels.
    pub fn title(self) -> &'static str {
        match self {
            Self::GradCam => "Grad-CAM",
            Self::HiResCam => "HiResCAM",
            Self::GradCamPlusPlus => "Grad-CAM++",
            Self::XGradCam => "XGrad-CAM",
            Self::LayerCam => "LayerCAM",
            Self::EigenGradCam => "EigenGrad-CAM",
            Self::GradCamElementWise => "Grad-CAM (element-wise)",
            Self::FullGrad => "FullGrad",
            Self::EigenCam => "EigenCAM",
            Self::ScoreCam => "Score-CAM",
            Self::AblationCam => "Ablation-CAM",
            Self::Random => "Random CAM",
            Self::Saliency => "Saliency",
            Self::InputXGradient => "Input × Gradient",
            Self::IntegratedGradients => "Integrated Gradients",
            Self::GuidedBackprop => "Guided Backprop",
            Self::GuidedGradCam => "Guided Grad-CAM",
            Self::Occlusion => "Occlusion",
        }
    }

    /// Whether the method needs the gradients of the target layers.
    pub fn uses_gradients(self) -> bool {
        matches!(
            self,
            Self::GradCam
                | Self::HiResCam
                | Self::GradCamPlusPlus
                | Self::XGradCam
                | Self::LayerCam
                | Self::EigenGradCam
                | Self::GradCamElementWise
                | Self::FullGrad
        )
    }

    /// Whether the method attributes to input pixels (captum's family) rather than weighting a
    /// layer's channels.
    pub fn is_input_attribution(self) -> bool {
        matches!(
            self,
            Self::Saliency
                | Self::InputXGradient
                | Self::IntegratedGradients
                | Self::GuidedBackprop
                | Self::GuidedGradCam
                | Self::Occlusion
        )
    }
}

/// What an ablated channel is set to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AblationValue {
    /// Zero, as the method is defined.
    #[default]
    Zero,
    /// pytorch-grad-cam 1.5.5's `AblationLayer`: zero if the activation's minimum is 0, else
    /// that minimum − 1e7, where the minimum is re-read after each ablation in a batch of 32
    /// (so the k-th channel of a batch gets min − (k+1)·1e7). Offered for parity.
    PytorchGradCam,
}

crate::names::named!(AblationValue, "ablation value", {
    Zero => "zero",
    PytorchGradCam => "pytorch-grad-cam",
});

/// A CAM's settings: an explanation's `cam` (the CAM that CamLIME reweights with, and the
/// settings every CAM and input attribution reads; the class, seed and chunk are the
/// explanation's own).
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CamConfig {
    /// The CAM that CamLIME reweights with (a CAM-only explanation names its CAM as its method).
    pub method: CamMethod,
    /// Target layers (readable or tensor names), several for fusion; empty = the model's
    /// defaults. FullGrad ignores them and uses every layer with a bias.
    pub layers: Vec<String>,
    /// Ablation-CAM's ablated value.
    pub ablation: AblationValue,
    /// Replace each layer's weighted sum by the first principal component of its weighted
    /// activations.
    pub eigen_smooth: bool,
    /// Average the map over horizontal flips × input scales {0.9, 1, 1.1} (6 passes).
    pub aug_smooth: bool,
    /// Keep the maps at the layers' resolution instead of resizing them to the input (the
    /// paper's Grad-CAM copy does this; all layers must then share one resolution).
    pub feature_resolution: bool,
    /// Parameters of the input attributions.
    pub attribution: AttributionConfig,
}

impl Default for CamConfig {
    fn default() -> Self {
        Self {
            method: CamMethod::EigenCam,
            layers: Vec::new(),
            ablation: AblationValue::Zero,
            eigen_smooth: false,
            aug_smooth: false,
            feature_resolution: false,
            attribution: AttributionConfig::default(),
        }
    }
}

/// One layer's map at feature resolution and at input resolution.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerCam {
    /// Layer name.
    pub layer: String,
    /// ReLU'd map at the layer's resolution, before scaling.
    pub native: CamMap,
    /// Scaled to [0, 1] and resized to the input (or kept at the layer's resolution).
    pub map: CamMap,
}

/// How far float32 rounding can move a CAM map: a first-order estimate, so a user knows when two
/// correct tools may show different maps (XGrad-CAM divides each channel's weight by the
/// channel's activation sum, Grad-CAM++ by `2g² + g³·ΣA`, Ablation-CAM by the target logit,
/// FullGrad min-max scales every bias channel on its own; a denominator near zero turns the
/// tiny differences between float32 engines into visible ones).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stability {
    /// Estimated largest change of the final [0, 1] map when every activation, gradient and
    /// score moves by [`Stability::NOISE`] of its magnitude.
    pub sensitivity: f32,
    /// Denominators whose estimated noise is at least 1 % of their value.
    pub near_zero: usize,
    /// Denominators the method divides by.
    pub denominators: usize,
}

impl Stability {
    /// Relative noise assumed on every tensor, calibrated on the end-to-end corpus: with it the
    /// estimates land within 1–10× of pytorch-grad-cam's own float32-vs-float64 spread for
    /// every weighted and element-wise method on MobileNetV2 (`endtoend.rs` prints both).
    pub const NOISE: f32 = 1e-6;
    /// Sensitivity above which a map is reported unstable: the parity bound of the tests.
    pub const THRESHOLD: f32 = 1e-3;

    /// Whether another correct float32 implementation may visibly differ.
    pub fn is_unstable(&self) -> bool {
        self.sensitivity > Self::THRESHOLD
    }

    /// One line for people: what is fragile and by how much.
    pub fn describe(&self) -> String {
        let verdict = if self.is_unstable() {
            "unstable"
        } else {
            "stable"
        };
        format!(
            "{verdict}: {} of {} denominators near zero; float32 rounding may move the map by ~{:.1e} (of 1)",
            self.near_zero, self.denominators, self.sensitivity
        )
    }
}

/// A CAM explanation: per-layer maps and their aggregate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CamExplanation {
    /// The explained class.
    pub target: usize,
    /// Its logit on the unmodified input.
    pub target_logit: f32,
    /// Per target layer, in request order (empty for FullGrad, which sums every bias layer).
    pub layers: Vec<LayerCam>,
    /// The aggregated map in [0, 1], at input resolution unless `feature_resolution`.
    pub map: CamMap,
    /// How far float32 rounding can move `map`, for the methods that divide or normalise
    /// channel by channel and the other weighted and element-wise maps; `None` for the
    /// projections (EigenCAM, EigenGrad-CAM, `eigen_smooth`) and input attributions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stability: Option<Stability>,
}

/// A single-channel map, row-major, `height × width`. Serialised compactly and exactly as
/// `{"height", "width", "encoding": "f32le-base64", "data"}` (the values' little-endian bytes).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "MapWire", into = "MapWire")]
pub struct CamMap {
    height: usize,
    width: usize,
    values: Vec<f32>,
}

/// The wire form of a [`CamMap`].
#[derive(Serialize, Deserialize)]
struct MapWire {
    height: usize,
    width: usize,
    encoding: String,
    data: String,
}

const MAP_ENCODING: &str = "f32le-base64";

impl From<CamMap> for MapWire {
    fn from(map: CamMap) -> Self {
        let bytes: Vec<u8> = map.values.iter().flat_map(|v| v.to_le_bytes()).collect();
        Self {
            height: map.height,
            width: map.width,
            encoding: MAP_ENCODING.into(),
            data: BASE64.encode(bytes),
        }
    }
}

impl TryFrom<MapWire> for CamMap {
    type Error = Error;
    fn try_from(wire: MapWire) -> Result<Self> {
        if wire.encoding != MAP_ENCODING {
            return Err(Error::Parameter(format!(
                "unknown map encoding `{}`; expected {MAP_ENCODING}",
                wire.encoding
            )));
        }
        let bytes = BASE64
            .decode(wire.data.as_bytes())
            .map_err(|e| Error::Parameter(format!("map data is not base64: {e}")))?;
        if bytes.len() % 4 != 0 {
            return Err(Error::Parameter(
                "map data is not a whole number of f32".into(),
            ));
        }
        let values = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        CamMap::new(wire.height, wire.width, values)
    }
}

impl CamMap {
    /// Wrap row-major values.
    pub fn new(height: usize, width: usize, values: Vec<f32>) -> Result<Self> {
        if values.len() != height * width || values.is_empty() {
            return Err(Error::Parameter(format!(
                "a {height}×{width} map needs {} values, got {}",
                height * width,
                values.len()
            )));
        }
        Ok(Self {
            height,
            width,
            values,
        })
    }

    /// Rows.
    pub fn height(&self) -> usize {
        self.height
    }

    /// Columns.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Row-major values.
    pub fn values(&self) -> &[f32] {
        &self.values
    }

    /// Negative values set to zero.
    pub fn relu(mut self) -> Self {
        self.values.iter_mut().for_each(|v| *v = v.max(0.0));
        self
    }

    /// pytorch-grad-cam's `scale_cam_image` without resize: x − min, then ÷ (max + 1e-7).
    pub fn scaled(mut self) -> Self {
        let min = self.values.iter().copied().fold(f32::INFINITY, f32::min);
        self.values.iter_mut().for_each(|v| *v -= min);
        let max = self
            .values
            .iter()
            .copied()
            .fold(f32::NEG_INFINITY, f32::max);
        self.values.iter_mut().for_each(|v| *v /= 1e-7 + max);
        self
    }

    /// Bilinear resize with half-pixel centres and edge clamping: OpenCV's `INTER_LINEAR` on
    /// `float32`, which pytorch-grad-cam uses to bring maps to the input size.
    pub fn flipped(&self) -> Self {
        let mut values = self.values.clone();
        for row in values.chunks_mut(self.width) {
            row.reverse();
        }
        Self {
            values,
            ..self.clone()
        }
    }

    /// Resize as OpenCV's `cv2.resize` (bilinear, half-pixel centres) does.
    pub fn resize(&self, height: usize, width: usize) -> Self {
        if (height, width) == (self.height, self.width) {
            return self.clone();
        }
        let taps = |n_out: usize, n_in: usize| -> Vec<(usize, usize, f32)> {
            let scale = n_in as f64 / n_out as f64;
            (0..n_out)
                .map(|i| {
                    let pos = (i as f64 + 0.5) * scale - 0.5;
                    let lo = pos.floor();
                    let frac = (pos - lo) as f32;
                    if lo < 0.0 {
                        (0, 0, 0.0)
                    } else if lo as usize >= n_in - 1 {
                        (n_in - 1, n_in - 1, 0.0)
                    } else {
                        (lo as usize, lo as usize + 1, frac)
                    }
                })
                .collect()
        };
        self.bilinear(&taps(height, self.height), &taps(width, self.width))
    }

    /// Interpolate with per-axis taps `(low index, high index, weight of the high one)`.
    fn bilinear(&self, ys: &[(usize, usize, f32)], xs: &[(usize, usize, f32)]) -> Self {
        let at = |r: usize, c: usize| self.values[r * self.width + c];
        let mut values = Vec::with_capacity(ys.len() * xs.len());
        for &(y0, y1, wy) in ys {
            for &(x0, x1, wx) in xs {
                let top = at(y0, x0) * (1.0 - wx) + at(y0, x1) * wx;
                let bottom = at(y1, x0) * (1.0 - wx) + at(y1, x1) * wx;
                values.push(top * (1.0 - wy) + bottom * wy);
            }
        }
        Self {
            height: ys.len(),
            width: xs.len(),
            values,
        }
    }

    /// Bilinear resize with corner-aligned sampling (`align_corners=True`, what torch's
    /// `UpsamplingBilinear2d` does; Score-CAM upsamples its masks this way).
    pub fn resize_align_corners(&self, height: usize, width: usize) -> Self {
        self.bilinear(
            &align_corners_taps(height, self.height),
            &align_corners_taps(width, self.width),
        )
    }

    /// Pearson correlation with another map of the same size (a comparison helper for tests
    /// and for `camlime compare`).
    pub fn pearson(&self, other: &CamMap) -> Result<f64> {
        if self.values.len() != other.values.len() {
            return Err(Error::Parameter("maps of different sizes".into()));
        }
        let n = self.values.len() as f64;
        let mean = |v: &[f32]| v.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
        let (ma, mb) = (mean(&self.values), mean(&other.values));
        let (mut cov, mut va, mut vb) = (0.0, 0.0, 0.0);
        for (&a, &b) in self.values.iter().zip(&other.values) {
            let (da, db) = (f64::from(a) - ma, f64::from(b) - mb);
            cov += da * db;
            va += da * da;
            vb += db * db;
        }
        Ok(cov / (va * vb).sqrt())
    }
}

/// Corner-aligned bilinear taps of an axis resized from `n_in` to `n_out` samples: each output's
/// two inputs and the second one's weight.
pub fn align_corners_taps(n_out: usize, n_in: usize) -> Vec<(usize, usize, f32)> {
    let scale = if n_out > 1 {
        (n_in - 1) as f32 / (n_out - 1) as f32
    } else {
        0.0
    };
    (0..n_out)
        .map(|i| {
            let pos = scale * i as f32;
            let lo = (pos as usize).min(n_in - 1);
            let hi = (lo + 1).min(n_in - 1);
            (lo, hi, (pos - lo as f32).clamp(0.0, 1.0))
        })
        .collect()
}

/// pytorch-grad-cam's multi-layer aggregation of per-layer maps already at a common size:
/// ReLU, mean over layers, then min-max scaling.
pub fn aggregate(layers: &[CamMap]) -> Result<CamMap> {
    let first = layers
        .first()
        .ok_or_else(|| Error::Parameter("no layer maps to aggregate".into()))?;
    if layers
        .iter()
        .any(|m| (m.height, m.width) != (first.height, first.width))
    {
        return Err(Error::Parameter(
            "layer maps must share one size before aggregation".into(),
        ));
    }
    let n = layers.len() as f32;
    let values = (0..first.values.len())
        .map(|i| layers.iter().map(|m| m.values[i].max(0.0)).sum::<f32>() / n)
        .collect();
    Ok(CamMap::new(first.height, first.width, values)?.scaled())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_matches_opencv_on_a_small_map() {
        // cv2.resize(np.float32([[0, 1], [2, 3]]), (4, 4))
        let map = CamMap::new(2, 2, vec![0.0, 1.0, 2.0, 3.0]).unwrap();
        let expected = [
            0.0, 0.25, 0.75, 1.0, 0.5, 0.75, 1.25, 1.5, 1.5, 1.75, 2.25, 2.5, 2.0, 2.25, 2.75, 3.0,
        ];
        assert_eq!(map.resize(4, 4).values(), &expected);
    }

    #[test]
    fn maps_round_trip_through_json_exactly() {
        let map = CamMap::new(1, 3, vec![0.1, -2.5e-7, 1.0]).unwrap();
        let json = serde_json::to_string(&map).unwrap();
        assert!(json.contains("f32le-base64"), "{json}");
        assert_eq!(serde_json::from_str::<CamMap>(&json).unwrap(), map);
        let short = json.replace("\"width\":3", "\"width\":4");
        assert!(serde_json::from_str::<CamMap>(&short).is_err());
    }

    #[test]
    fn scaling_and_aggregation() {
        let map = CamMap::new(1, 3, vec![-1.0, 0.0, 3.0]).unwrap();
        let scaled = map.clone().scaled();
        assert!((scaled.values()[2] - 1.0).abs() < 1e-6 && scaled.values()[0] == 0.0);
        let agg = aggregate(&[map.clone(), map.relu()]).unwrap();
        assert!((agg.values()[2] - 1.0).abs() < 1e-6 && agg.values()[0] == 0.0);
        assert!(aggregate(&[]).is_err());
        assert!(CamMap::new(2, 2, vec![0.0]).is_err());
    }
}
