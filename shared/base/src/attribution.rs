//! The input attributions' parameters, with captum 0.9's definitions and defaults: Integrated
//! Gradients' quadrature, Occlusion's window and the NoiseTunnel (SmoothGrad, SmoothGrad²,
//! VarGrad). The attributions themselves run on a classifier in the core's `attribution`.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Integrated Gradients' quadrature (captum's `method`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Integration {
    /// Gauss–Legendre nodes on [0, 1] (captum's default).
    #[default]
    GaussLegendre,
    /// Riemann sums, steps 1/n; the end points' weights halved (captum's trapezoid).
    RiemannTrapezoid,
    /// Left Riemann sum.
    RiemannLeft,
    /// Right Riemann sum.
    RiemannRight,
    /// Midpoint Riemann sum.
    RiemannMiddle,
}

crate::names::named!(Integration, "integration", {
    GaussLegendre => "gausslegendre",
    RiemannTrapezoid => "riemann_trapezoid",
    RiemannLeft => "riemann_left",
    RiemannRight => "riemann_right",
    RiemannMiddle => "riemann_middle",
});

impl Integration {
    /// Whether `n` steps are possible: 1..=4096 (2 for the Riemann sums).
    pub fn check_steps(self, n: usize) -> Result<()> {
        let minimum = if self == Self::GaussLegendre { 1 } else { 2 };
        if !(minimum..=4096).contains(&n) {
            return Err(Error::Parameter(format!(
                "integrated gradients needs {minimum}..=4096 steps, got {n}"
            )));
        }
        Ok(())
    }

    /// Path positions α and weights for `n` steps, as captum builds them.
    pub fn nodes(self, n: usize) -> Result<(Vec<f64>, Vec<f64>)> {
        self.check_steps(n)?;
        let nf = n as f64;
        let linspace = |start: f64, end: f64| -> Vec<f64> {
            // torch.linspace in float32, as captum's alphas are.
            let step = ((end - start) / (nf - 1.0)) as f32;
            (0..n)
                .map(|i| {
                    let value = if i < n / 2 {
                        start as f32 + step * i as f32
                    } else {
                        end as f32 - step * (n - 1 - i) as f32
                    };
                    f64::from(value)
                })
                .collect()
        };
        Ok(match self {
            Self::GaussLegendre => {
                let (x, w) = gauss_legendre(n);
                (
                    x.iter().map(|x| 0.5 * (1.0 + x)).collect(),
                    w.iter().map(|w| 0.5 * w).collect(),
                )
            }
            Self::RiemannTrapezoid => {
                let mut weights = vec![1.0 / nf; n];
                weights[0] /= 2.0;
                weights[n - 1] /= 2.0;
                (linspace(0.0, 1.0), weights)
            }
            Self::RiemannLeft => (linspace(0.0, 1.0 - 1.0 / nf), vec![1.0 / nf; n]),
            Self::RiemannRight => (linspace(1.0 / nf, 1.0), vec![1.0 / nf; n]),
            Self::RiemannMiddle => (
                linspace(1.0 / (2.0 * nf), 1.0 - 1.0 / (2.0 * nf)),
                vec![1.0 / nf; n],
            ),
        })
    }
}

/// Gauss–Legendre nodes and weights on [−1, 1] (Newton on Legendre polynomials, ascending,
/// as numpy's `leggauss`).
fn gauss_legendre(n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut nodes = vec![0.0; n];
    let mut weights = vec![0.0; n];
    for i in 0..n.div_ceil(2) {
        let mut x = (std::f64::consts::PI * (i as f64 + 0.75) / (n as f64 + 0.5)).cos();
        let mut derivative = 0.0;
        for _ in 0..100 {
            let (mut p0, mut p1) = (1.0, x);
            for k in 2..=n {
                let p2 = ((2 * k - 1) as f64 * x * p1 - (k - 1) as f64 * p0) / k as f64;
                p0 = p1;
                p1 = p2;
            }
            let pn = if n == 1 { x } else { p1 };
            let pn_1 = if n == 1 { 1.0 } else { p0 };
            derivative = n as f64 * (x * pn - pn_1) / (x * x - 1.0);
            let step = pn / derivative;
            x -= step;
            if step.abs() < 1e-15 {
                break;
            }
        }
        let weight = 2.0 / ((1.0 - x * x) * derivative * derivative);
        nodes[i] = -x;
        nodes[n - 1 - i] = x;
        weights[i] = weight;
        weights[n - 1 - i] = weight;
    }
    if n % 2 == 1 {
        nodes[n / 2] = 0.0;
    }
    (nodes, weights)
}

/// NoiseTunnel's aggregation (captum's `nt_type` names).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NoiseKind {
    /// Mean of the noisy attributions.
    #[default]
    SmoothGrad,
    /// Mean of their squares.
    SmoothGradSq,
    /// Their variance.
    VarGrad,
}

crate::names::named!(NoiseKind, "noise tunnel", {
    SmoothGrad => "smoothgrad",
    SmoothGradSq => "smoothgrad_sq",
    VarGrad => "vargrad",
});

/// NoiseTunnel parameters (captum's `nt_type`, `nt_samples`, `stdevs`).
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NoiseTunnel {
    /// Aggregation.
    pub kind: NoiseKind,
    /// Noisy copies of the input.
    pub samples: usize,
    /// Standard deviation of the Gaussian noise, in input-tensor units.
    pub stdev: f32,
}

impl NoiseTunnel {
    /// 1..=1000 samples and a finite standard deviation ≥ 0.
    pub fn check(&self) -> Result<()> {
        if self.samples == 0
            || self.samples > 1000
            || !(self.stdev >= 0.0 && self.stdev.is_finite())
        {
            return Err(Error::Parameter(format!(
                "the noise tunnel needs 1..=1000 samples and a finite stdev ≥ 0, got {} and {}",
                self.samples, self.stdev
            )));
        }
        Ok(())
    }
}

impl Default for NoiseTunnel {
    fn default() -> Self {
        Self {
            kind: NoiseKind::SmoothGrad,
            samples: 5,
            stdev: 1.0,
        }
    }
}

/// Occlusion parameters (captum's `sliding_window_shapes`, `strides`, `baselines`).
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Occlusion {
    /// Window `[channels, height, width]`.
    pub window: [usize; 3],
    /// Strides `[channels, height, width]`.
    pub strides: [usize; 3],
    /// The value occluded pixels take (in input-tensor units).
    pub baseline: f32,
}

impl Default for Occlusion {
    fn default() -> Self {
        Self {
            window: [3, 16, 16],
            strides: [3, 8, 8],
            baseline: 0.0,
        }
    }
}

/// Parameters of the input attributions; `Default` is captum's defaults (Occlusion's window
/// excepted: captum has none).
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AttributionConfig {
    /// Saliency: absolute gradients (captum's default) or signed.
    pub absolute: bool,
    /// Integrated Gradients: steps.
    pub steps: usize,
    /// Integrated Gradients: quadrature.
    pub integration: Integration,
    /// Integrated Gradients: the constant baseline, in input-tensor units.
    pub baseline: f32,
    /// Occlusion: window, strides and baseline.
    pub occlusion: Occlusion,
    /// Average over noisy copies of the input (SmoothGrad and kin), seeded by the
    /// explanation's seed.
    pub noise_tunnel: Option<NoiseTunnel>,
}

impl AttributionConfig {
    /// Every check that needs no input: steps, finite baselines, non-zero windows and
    /// strides, the noise tunnel (the window's fit to the input is checked by Occlusion).
    pub fn check(&self) -> Result<()> {
        self.integration.check_steps(self.steps)?;
        let occlusion = &self.occlusion;
        if !self.baseline.is_finite() || !occlusion.baseline.is_finite() {
            return Err(Error::Parameter(format!(
                "baselines must be finite, got {} and {}",
                self.baseline, occlusion.baseline
            )));
        }
        if occlusion.window.contains(&0) || occlusion.strides.contains(&0) {
            return Err(Error::Parameter(format!(
                "occlusion windows and strides must be at least 1, got {:?} and {:?}",
                occlusion.window, occlusion.strides
            )));
        }
        self.noise_tunnel
            .as_ref()
            .map_or(Ok(()), NoiseTunnel::check)
    }
}

impl Default for AttributionConfig {
    fn default() -> Self {
        Self {
            absolute: true,
            steps: 50,
            integration: Integration::GaussLegendre,
            baseline: 0.0,
            occlusion: Occlusion::default(),
            noise_tunnel: None,
        }
    }
}
