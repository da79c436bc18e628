//! Input attributions beyond the CAM family, with captum 0.9's definitions: Saliency,
//! Input × Gradient, Integrated Gradients, Guided Backprop, Guided Grad-CAM, Occlusion, and the
//! NoiseTunnel (SmoothGrad, SmoothGrad², VarGrad) around the gradient ones.
//!
//! Every function returns the `3 × H × W` attribution of one image for one target class.

use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use rand_pcg::Pcg64;
use tract_onnx::prelude::tract_ndarray::{
    Array2, Array3, Array4, ArrayView3, ArrayView4, Axis, Ix4, s,
};

use crate::grad::BackwardRule;
use crate::model::Classifier;
use crate::runtime::{self, Runtime, check_cancelled};
use crate::{Error, Result};

pub use camlime_base::attribution::*;

/// The input gradient of `logit[target]` for each image of a batch.
fn input_gradients(
    classifier: &Classifier,
    inputs: ArrayView4<f32>,
    target: usize,
    rule: BackwardRule,
    runtime: &impl Runtime,
) -> Result<Array4<f32>> {
    let n = inputs.dim().0;
    let parts = runtime::map_shares(runtime, 0..n, &|range| {
        let part = inputs.slice(s![range.clone(), .., .., ..]);
        let mut seeds = Array2::zeros((range.len(), classifier.num_classes()));
        seeds.column_mut(target).fill(1.0);
        classifier
            .gradients(part, seeds.view(), &[], true, rule)?
            .input_gradient
            .ok_or_else(|| Error::Inference("missing input gradient".into()))?
            .into_dimensionality::<Ix4>()
            .map_err(|e| Error::Inference(format!("input gradient: {e}")))
    });
    let parts = parts.into_iter().collect::<Result<Vec<_>>>()?;
    let views: Vec<_> = parts.iter().map(|p| p.view()).collect();
    tract_onnx::prelude::tract_ndarray::concatenate(Axis(0), &views)
        .map_err(|e| Error::Inference(e.to_string()))
}

/// Saliency: |∇x logit| (captum's `abs=True`) or the signed gradient.
pub fn saliency(
    classifier: &Classifier,
    input: ArrayView4<f32>,
    target: usize,
    absolute: bool,
    runtime: &impl Runtime,
) -> Result<Array3<f32>> {
    let g = input_gradients(classifier, input, target, BackwardRule::Standard, runtime)?;
    let g = g.index_axis_move(Axis(0), 0);
    Ok(if absolute { g.mapv(f32::abs) } else { g })
}

/// Input × Gradient.
pub fn input_x_gradient(
    classifier: &Classifier,
    input: ArrayView4<f32>,
    target: usize,
    runtime: &impl Runtime,
) -> Result<Array3<f32>> {
    let g = input_gradients(classifier, input, target, BackwardRule::Standard, runtime)?;
    Ok(g.index_axis_move(Axis(0), 0) * input.index_axis(Axis(0), 0))
}

/// Guided Backprop: the input gradient with rectifiers passing only positive gradients.
pub fn guided_backprop(
    classifier: &Classifier,
    input: ArrayView4<f32>,
    target: usize,
    runtime: &impl Runtime,
) -> Result<Array3<f32>> {
    let g = input_gradients(classifier, input, target, BackwardRule::Guided, runtime)?;
    Ok(g.index_axis_move(Axis(0), 0))
}

/// Integrated Gradients from `baseline` (same shape as one image) to the input.
pub fn integrated_gradients(
    classifier: &Classifier,
    input: ArrayView4<f32>,
    baseline: ArrayView3<f32>,
    target: usize,
    steps: usize,
    integration: Integration,
    runtime: &impl Runtime,
) -> Result<Array3<f32>> {
    let x = input.index_axis(Axis(0), 0);
    if baseline.dim() != x.dim() {
        return Err(Error::Parameter(format!(
            "the baseline must be shaped like the input {:?}, found {:?}",
            x.dim(),
            baseline.dim()
        )));
    }
    let (alphas, weights) = integration.nodes(steps)?;
    let delta = &x - &baseline;
    let (c, h, w) = x.dim();
    let mut path = Array4::<f32>::zeros((steps, c, h, w));
    for (i, alpha) in alphas.iter().enumerate() {
        let alpha = *alpha as f32;
        path.index_axis_mut(Axis(0), i)
            .assign(&(&baseline + &(&delta * alpha)));
    }
    check_cancelled(runtime)?;
    let grads = input_gradients(
        classifier,
        path.view(),
        target,
        BackwardRule::Standard,
        runtime,
    )?;
    let mut total = Array3::<f32>::zeros((c, h, w));
    for (grad, weight) in grads.outer_iter().zip(&weights) {
        total.scaled_add(*weight as f32, &grad);
    }
    Ok(total * delta)
}

/// Guided Grad-CAM: Guided Backprop × the layer's ReLU'd Grad-CAM upsampled by nearest
/// neighbour (captum's `GuidedGradCam`, unnormalised).
pub fn guided_grad_cam(
    classifier: &Classifier,
    input: ArrayView4<f32>,
    layer: &str,
    target: usize,
    runtime: &impl Runtime,
) -> Result<Array3<f32>> {
    let mut seeds = Array2::zeros((1, classifier.num_classes()));
    seeds[(0, target)] = 1.0;
    let out = classifier.gradients(input, seeds.view(), &[layer], false, BackwardRule::Standard)?;
    let to4 = |a: &tract_onnx::prelude::tract_ndarray::ArrayD<f32>| {
        a.view()
            .into_dimensionality::<Ix4>()
            .map_err(|e| Error::Inference(format!("layer `{layer}`: {e}")))
            .map(|v| v.index_axis_move(Axis(0), 0).to_owned())
    };
    let (a, g) = (to4(&out.activations[0])?, to4(&out.gradients[0])?);
    let (_, lh, lw) = a.dim();
    let mut cam = Array2::<f32>::zeros((lh, lw));
    for (ak, gk) in a.outer_iter().zip(g.outer_iter()) {
        let weight = gk.iter().sum::<f32>() / gk.len() as f32;
        cam.scaled_add(weight, &ak);
    }
    cam.mapv_inplace(|v| v.max(0.0));
    let guided = guided_backprop(classifier, input, target, runtime)?;
    let (c, h, w) = guided.dim();
    let nearest = |o: usize, out: usize, inp: usize| -> usize {
        (((o as f32) * (inp as f32 / out as f32)).floor() as usize).min(inp - 1)
    };
    Ok(Array3::from_shape_fn((c, h, w), |(k, y, x)| {
        guided[(k, y, x)] * cam[(nearest(y, h, lh), nearest(x, w, lw))]
    }))
}

/// Occlusion: each window set to the baseline; a pixel's attribution is the mean drop of the
/// target logit over the windows that cover it. Windows advance by the stride and the last
/// one is clipped at the border, as captum's.
pub fn occlusion(
    classifier: &Classifier,
    input: ArrayView4<f32>,
    target: usize,
    occlusion: &Occlusion,
    chunk: usize,
    runtime: &impl Runtime,
) -> Result<Array3<f32>> {
    let x = input.index_axis(Axis(0), 0);
    let dims = [x.dim().0, x.dim().1, x.dim().2];
    let mut counts = [0usize; 3];
    for axis in 0..3 {
        let (window, stride) = (occlusion.window[axis], occlusion.strides[axis]);
        if window == 0
            || window > dims[axis]
            || stride == 0
            || (window < dims[axis] && stride > window)
        {
            return Err(Error::Parameter(format!(
                "occlusion window {:?} with strides {:?} does not fit the input {dims:?} \
                 (each window within the input, each stride ≤ its window)",
                occlusion.window, occlusion.strides
            )));
        }
        counts[axis] = (dims[axis] - window).div_ceil(stride) + 1;
    }
    let positions: Vec<[usize; 3]> = (0..counts[0])
        .flat_map(|a| (0..counts[1]).flat_map(move |b| (0..counts[2]).map(move |c| [a, b, c])))
        .map(|[a, b, c]| {
            [
                a * occlusion.strides[0],
                b * occlusion.strides[1],
                c * occlusion.strides[2],
            ]
        })
        .collect();
    let window_of = |start: [usize; 3]| -> [std::ops::Range<usize>; 3] {
        [0, 1, 2].map(|axis| start[axis]..(start[axis] + occlusion.window[axis]).min(dims[axis]))
    };
    let original = classifier.forward(input, &[])?.logits[(0, target)];
    let mut total = Array3::<f32>::zeros(x.dim());
    let mut covered = Array3::<f32>::zeros(x.dim());
    let chunk = chunk.max(1);
    for (index, starts) in positions.chunks(chunk).enumerate() {
        check_cancelled(runtime)?;
        let mut batch = Array4::<f32>::zeros((starts.len(), dims[0], dims[1], dims[2]));
        for (i, start) in starts.iter().enumerate() {
            let [rc, ry, rx] = window_of(*start);
            let mut item = batch.index_axis_mut(Axis(0), i);
            item.assign(&x);
            item.slice_mut(s![rc, ry, rx]).fill(occlusion.baseline);
        }
        let logits = classifier.forward_with(runtime, batch.view(), &[])?.logits;
        for (i, start) in starts.iter().enumerate() {
            let [rc, ry, rx] = window_of(*start);
            let drop = original - logits[(i, target)];
            total
                .slice_mut(s![rc.clone(), ry.clone(), rx.clone()])
                .mapv_inplace(|v| v + drop);
            covered.slice_mut(s![rc, ry, rx]).mapv_inplace(|v| v + 1.0);
        }
        runtime.progress(
            "occlusion",
            (index * chunk + starts.len()).min(positions.len()),
            positions.len(),
        );
    }
    Ok(total / covered)
}

/// NoiseTunnel around an attribution: `attribute` runs on each noisy copy `input + noise_i`
/// and the results are aggregated by `kind`. `noises` are the draws (one per sample).
pub fn noise_tunnel(
    input: ArrayView4<f32>,
    noises: &[Array3<f32>],
    kind: NoiseKind,
    mut attribute: impl FnMut(ArrayView4<f32>) -> Result<Array3<f32>>,
) -> Result<Array3<f32>> {
    if noises.is_empty() {
        return Err(Error::Parameter(
            "the noise tunnel needs at least one sample".into(),
        ));
    }
    let x = input.index_axis(Axis(0), 0);
    let mut sum = Array3::<f32>::zeros(x.dim());
    let mut sum_sq = Array3::<f32>::zeros(x.dim());
    for noise in noises {
        let noisy = (&x + noise).insert_axis(Axis(0));
        let a = attribute(noisy.view())?;
        sum += &a;
        sum_sq += &(&a * &a);
    }
    let n = noises.len() as f32;
    Ok(match kind {
        NoiseKind::SmoothGrad => sum / n,
        NoiseKind::SmoothGradSq => sum_sq / n,
        NoiseKind::VarGrad => {
            let mean = &sum / n;
            sum_sq / n - &mean * &mean
        }
    })
}

/// Seeded Gaussian draws for [`noise_tunnel`]: `samples` arrays shaped `dim`, N(0, stdev²).
pub fn gaussian_noise(
    dim: (usize, usize, usize),
    tunnel: &NoiseTunnel,
    seed: u64,
) -> Result<Vec<Array3<f32>>> {
    tunnel.check()?;
    let mut rng = Pcg64::seed_from_u64(seed);
    Ok((0..tunnel.samples)
        .map(|_| {
            Array3::from_shape_fn(dim, |_| {
                let z: f32 = StandardNormal.sample(&mut rng);
                z * tunnel.stdev
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauss_legendre_integrates_polynomials_exactly() {
        for n in [1, 2, 5, 50] {
            let (alphas, weights) = Integration::GaussLegendre.nodes(n).unwrap();
            let total: f64 = weights.iter().sum();
            assert!((total - 1.0).abs() < 1e-12, "{n}: {total}");
            // ∫₀¹ x^(2n−1) dx = 1/(2n) is exact with n nodes.
            let degree = 2 * n - 1;
            let integral: f64 = alphas
                .iter()
                .zip(&weights)
                .map(|(a, w)| w * a.powi(degree as i32))
                .sum();
            assert!(
                (integral - 1.0 / (2 * n) as f64).abs() < 1e-12,
                "{n}: {integral}"
            );
        }
    }

    #[test]
    fn riemann_rules_match_captum() {
        let (alphas, weights) = Integration::RiemannTrapezoid.nodes(5).unwrap();
        assert_eq!(alphas, vec![0.0, 0.25, 0.5, 0.75, 1.0]);
        assert_eq!(weights, vec![0.1, 0.2, 0.2, 0.2, 0.1]);
        assert!(Integration::RiemannLeft.nodes(1).is_err());
    }
}
