//! The CAM family on a classifier (METHOD.md §4) with pytorch-grad-cam 1.5.5's arithmetic:
//! gradient methods on the backward transform's gradients, EigenCAM, Score-CAM, Ablation-CAM
//! (tail re-runs), FullGrad and the random baseline; `eigen_smooth` and `aug_smooth` for all.

use image::RgbImage;
use nalgebra::DMatrix;
use rand::{RngExt, SeedableRng};
use rand_pcg::Pcg64;
use tract_onnx::prelude::tract_ndarray::{
    Array2, Array3, Array4, ArrayView3, ArrayView4, Axis, Ix4, s,
};

use super::stability::{self, FullGradNoise, WeightNoise};
use super::{AblationValue, CamExplanation, CamMap, CamMethod, LayerCam, Stability, aggregate};
use crate::attribution;
use crate::engine::Masked;
use crate::explanation::ExplainConfig;
use crate::grad::BackwardRule;
use crate::model::{Classifier, softmax};
use crate::runtime::{self, Runtime, check_cancelled};
use crate::{Error, Result};

/// Compute a CAM for a base image (already resized and cropped to the model's input).
pub fn compute(
    classifier: &Classifier,
    image: &RgbImage,
    method: CamMethod,
    config: &ExplainConfig,
    runtime: &impl Runtime,
) -> Result<CamExplanation> {
    let input = classifier
        .spec()
        .preprocessing
        .tensor(std::slice::from_ref(image))?;
    compute_tensor(classifier, input.view(), method, config, runtime)
}

/// Compute a CAM for one preprocessed `1 × 3 × H × W` input tensor.
pub fn compute_tensor(
    classifier: &Classifier,
    input: ArrayView4<f32>,
    method: CamMethod,
    config: &ExplainConfig,
    runtime: &impl Runtime,
) -> Result<CamExplanation> {
    if input.dim().0 != 1 {
        return Err(Error::Parameter(format!(
            "a CAM explains one image at a time, got a batch of {}",
            input.dim().0
        )));
    }
    config.check()?;
    if !config.cam.aug_smooth {
        return compute_once(classifier, input, method, config, runtime);
    }
    // pytorch-grad-cam's test-time augmentation: each pass explains the augmented input (same
    // target), its map is flipped back, and the six maps are averaged.
    let logits = classifier.forward(input, &[])?.logits.row(0).to_vec();
    let target = classifier.target_class(&logits, config.target)?;
    let mut single = config.clone();
    single.cam.aug_smooth = false;
    single.target = Some(target);
    let mut first: Option<CamExplanation> = None;
    let mut sum: Vec<f32> = Vec::new();
    for flip in [false, true] {
        for factor in [0.9f32, 1.0, 1.1] {
            check_cancelled(runtime)?;
            let mut augmented = input.to_owned();
            if flip {
                augmented.invert_axis(Axis(3));
                augmented = augmented.as_standard_layout().to_owned();
            }
            augmented.mapv_inplace(|v| v * factor);
            let pass = compute_once(classifier, augmented.view(), method, &single, runtime)?;
            let map = if flip {
                pass.map.flipped()
            } else {
                pass.map.clone()
            };
            if sum.is_empty() {
                sum = map.values().to_vec();
            } else {
                sum.iter_mut().zip(map.values()).for_each(|(s, v)| *s += v);
            }
            if !flip && factor == 1.0 {
                first = Some(pass);
            }
        }
    }
    let mut explanation =
        first.ok_or_else(|| Error::Inference("augmentation produced no pass".into()))?;
    let (height, width) = (explanation.map.height(), explanation.map.width());
    explanation.map = CamMap::new(height, width, sum.iter().map(|s| s / 6.0).collect())?;
    Ok(explanation)
}

/// The least stable layer's estimate (the aggregate of scaled maps is no steadier than its
/// shakiest part), if every layer has one.
fn least_stable(estimates: Vec<Option<Stability>>) -> Option<Stability> {
    estimates
        .into_iter()
        .try_fold(None::<Stability>, |worst, estimate| {
            let estimate = estimate?;
            Some(Some(match worst {
                Some(w) if w.sensitivity >= estimate.sensitivity => Stability {
                    near_zero: w.near_zero + estimate.near_zero,
                    denominators: w.denominators + estimate.denominators,
                    ..w
                },
                Some(w) => Stability {
                    near_zero: w.near_zero + estimate.near_zero,
                    denominators: w.denominators + estimate.denominators,
                    ..estimate
                },
                None => estimate,
            }))
        })?
}

/// A layer's map before ReLU: channel weights (with their noise), or an element-wise product
/// to sum over channels, or a stack to project.
enum LayerMap {
    Weights(Vec<f32>, WeightNoise),
    Elementwise(Array3<f32>),
    Projection(Array3<f32>),
}

/// One pass of [`compute_tensor`] without augmentation.
fn compute_once(
    classifier: &Classifier,
    input: ArrayView4<f32>,
    method: CamMethod,
    config: &ExplainConfig,
    runtime: &impl Runtime,
) -> Result<CamExplanation> {
    if method == CamMethod::FullGrad {
        return full_grad(classifier, input, config);
    }
    if method.is_input_attribution() {
        let (target, target_logit, values) = attribute(classifier, input, method, config, runtime)?;
        let (c, h, w) = values.dim();
        let summed: Vec<f32> = (0..h * w)
            .map(|p| (0..c).map(|k| values[(k, p / w, p % w)]).sum::<f32>().abs())
            .collect();
        return Ok(CamExplanation {
            target,
            target_logit,
            layers: Vec::new(),
            map: CamMap::new(h, w, summed)?.scaled(),
            stability: None,
        });
    }
    let layer_names = classifier.target_layers(&config.cam.layers)?;
    let layer_refs: Vec<&str> = layer_names.iter().map(String::as_str).collect();
    let (logits, activations, gradients) = if method.uses_gradients() {
        let target = target_without_forward(classifier, input, config.target)?;
        let seeds = one_hot(1, classifier.num_classes(), target);
        let out = classifier.gradients(
            input,
            seeds.view(),
            &layer_refs,
            false,
            BackwardRule::Standard,
        )?;
        (out.logits.row(0).to_vec(), out.activations, out.gradients)
    } else {
        let out = classifier.forward(input, &layer_refs)?;
        (out.logits.row(0).to_vec(), out.activations, Vec::new())
    };
    let target = classifier.target_class(&logits, config.target)?;
    let (height, width) = (input.dim().2, input.dim().3);
    let mut layers = Vec::with_capacity(layer_names.len());
    let mut estimates: Vec<Option<Stability>> = Vec::with_capacity(layer_names.len());
    for (index, (name, activation)) in layer_names.iter().zip(&activations).enumerate() {
        let activation = activation
            .view()
            .into_dimensionality::<Ix4>()
            .map_err(|e| Error::Inference(format!("layer `{name}` is not 4-D: {e}")))?;
        let a = activation.index_axis(Axis(0), 0);
        let gradient = match gradients.get(index) {
            Some(g) => Some(
                g.view()
                    .into_dimensionality::<Ix4>()
                    .map_err(|e| Error::Inference(format!("gradient of `{name}`: {e}")))?
                    .index_axis_move(Axis(0), 0)
                    .to_owned(),
            ),
            None => None,
        };
        let g = || {
            gradient
                .as_ref()
                .ok_or_else(|| Error::Inference("missing gradient".into()))
        };
        let plain = |weights: Vec<f32>| {
            let noise = WeightNoise::plain(&weights);
            LayerMap::Weights(weights, noise)
        };
        let layer_map = match method {
            CamMethod::GradCam => plain(
                g()?.outer_iter()
                    .map(|c| c.iter().sum::<f32>() / c.len() as f32)
                    .collect(),
            ),
            CamMethod::GradCamPlusPlus => LayerMap::Weights(
                grad_cam_plus_plus(a, g()?.view()),
                WeightNoise::grad_cam_plus_plus(a, g()?.view()),
            ),
            CamMethod::XGradCam => LayerMap::Weights(
                a.outer_iter()
                    .zip(g()?.outer_iter())
                    .map(|(ak, gk)| {
                        let total: f32 = ak.iter().sum();
                        ak.iter()
                            .zip(gk.iter())
                            .map(|(x, y)| y * x / (total + 1e-7))
                            .sum()
                    })
                    .collect(),
                WeightNoise::xgrad_cam(a, g()?.view()),
            ),
            CamMethod::HiResCam => LayerMap::Elementwise(g()? * &a),
            CamMethod::GradCamElementWise => {
                LayerMap::Elementwise((g()? * &a).mapv(|v| v.max(0.0)))
            }
            CamMethod::LayerCam => LayerMap::Elementwise(g()?.mapv(|v| v.max(0.0)) * a),
            CamMethod::EigenGradCam => LayerMap::Projection(g()? * &a),
            CamMethod::EigenCam => LayerMap::Projection(a.to_owned()),
            CamMethod::Random => {
                let mut rng = Pcg64::seed_from_u64(config.seed);
                plain(
                    (0..a.dim().0)
                        .map(|_| rng.random_range(-1.0f32..1.0))
                        .collect(),
                )
            }
            CamMethod::ScoreCam => {
                let scores = score_cam_scores(classifier, input, a, target, config, runtime)?;
                plain(softmax(&scores))
            }
            CamMethod::AblationCam => {
                let original = logits[target];
                let scores = ablation_scores(classifier, name, a, target, config, runtime)?;
                LayerMap::Weights(
                    scores.iter().map(|s| (original - s) / original).collect(),
                    WeightNoise::ablation(original, &scores),
                )
            }
            other => not_per_layer(other)?,
        };
        let (raw, layer_stability) = match layer_map {
            LayerMap::Projection(stack) => (eigen_projection(stack.view())?, None),
            LayerMap::Elementwise(stack) if config.cam.eigen_smooth => {
                (eigen_projection(stack.view())?, None)
            }
            LayerMap::Elementwise(stack) => {
                let raw = channel_sum(stack.view())?;
                let estimate = stability::elementwise(stack.view(), raw.values());
                (raw, Some(estimate))
            }
            LayerMap::Weights(weights, _) if config.cam.eigen_smooth => {
                let mut weighted = a.to_owned();
                for (mut channel, w) in weighted.outer_iter_mut().zip(&weights) {
                    channel.mapv_inplace(|v| v * w);
                }
                (eigen_projection(weighted.view())?, None)
            }
            LayerMap::Weights(weights, noise) => {
                let raw = weighted_sum(a, &weights)?;
                let estimate = stability::weighted(a, &weights, &noise, raw.values());
                (raw, Some(estimate))
            }
        };
        estimates.push(layer_stability);
        let native = raw.relu();
        let scaled = native.clone().scaled();
        let map = if config.cam.feature_resolution {
            scaled
        } else {
            scaled.resize(height, width)
        };
        layers.push(LayerCam {
            layer: name.clone(),
            native,
            map,
        });
    }
    let maps: Vec<CamMap> = layers.iter().map(|l| l.map.clone()).collect();
    Ok(CamExplanation {
        target,
        target_logit: logits[target],
        map: aggregate(&maps)?,
        layers,
        stability: least_stable(estimates),
    })
}

/// An input attribution (`3 × H × W`) for one image: the explained class, its logit, and the
/// attribution (NoiseTunnel applied when configured). Only for input-attribution methods.
pub fn attribute(
    classifier: &Classifier,
    input: ArrayView4<f32>,
    method: CamMethod,
    config: &ExplainConfig,
    runtime: &impl Runtime,
) -> Result<(usize, f32, Array3<f32>)> {
    let logits = classifier.forward(input, &[])?.logits.row(0).to_vec();
    let target = classifier.target_class(&logits, config.target)?;
    let params = &config.cam.attribution;
    let single = |x: ArrayView4<f32>| -> Result<Array3<f32>> {
        match method {
            CamMethod::Saliency => {
                attribution::saliency(classifier, x, target, params.absolute, runtime)
            }
            CamMethod::InputXGradient => {
                attribution::input_x_gradient(classifier, x, target, runtime)
            }
            CamMethod::IntegratedGradients => {
                let (_, c, h, w) = x.dim();
                let baseline = Array3::from_elem((c, h, w), params.baseline);
                attribution::integrated_gradients(
                    classifier,
                    x,
                    baseline.view(),
                    target,
                    params.steps,
                    params.integration,
                    runtime,
                )
            }
            CamMethod::GuidedBackprop => {
                attribution::guided_backprop(classifier, x, target, runtime)
            }
            CamMethod::GuidedGradCam => {
                let layers = classifier.target_layers(&config.cam.layers)?;
                let [layer] = layers.as_slice() else {
                    return Err(Error::Parameter(format!(
                        "Guided Grad-CAM takes one layer, got {}",
                        layers.len()
                    )));
                };
                attribution::guided_grad_cam(classifier, x, layer, target, runtime)
            }
            CamMethod::Occlusion => attribution::occlusion(
                classifier,
                x,
                target,
                &params.occlusion,
                config.chunk,
                runtime,
            ),
            other => Err(Error::Parameter(format!(
                "`{}` is not an input attribution",
                other.name()
            ))),
        }
    };
    let values = match &params.noise_tunnel {
        None => single(input)?,
        Some(tunnel) => {
            let (_, c, h, w) = input.dim();
            let noises = attribution::gaussian_noise((c, h, w), tunnel, config.seed)?;
            attribution::noise_tunnel(input, &noises, tunnel.kind, single)?
        }
    };
    Ok((target, logits[target], values))
}

/// FullGrad and the input attributions have no per-layer map (they return before it).
fn not_per_layer(method: CamMethod) -> Result<LayerMap> {
    Err(Error::Parameter(format!(
        "`{}` has no per-layer map",
        method.name()
    )))
}

/// The explained class: `requested` (checked) with no forward pass, else the predicted one (the
/// gradient pass that follows recomputes the logits anyway).
fn target_without_forward(
    classifier: &Classifier,
    input: ArrayView4<f32>,
    requested: Option<usize>,
) -> Result<usize> {
    match requested {
        Some(class) => classifier.check_class(class),
        None => {
            let logits = classifier.forward(input, &[])?.logits.row(0).to_vec();
            classifier.target_class(&logits, None)
        }
    }
}

/// An `n × classes` matrix with ones in column `class`.
fn one_hot(n: usize, classes: usize, class: usize) -> Array2<f32> {
    let mut seeds = Array2::zeros((n, classes));
    seeds.column_mut(class).fill(1.0);
    seeds
}

/// Grad-CAM++ channel weights (pytorch-grad-cam's closed form).
fn grad_cam_plus_plus(a: ArrayView3<f32>, g: ArrayView3<f32>) -> Vec<f32> {
    a.outer_iter()
        .zip(g.outer_iter())
        .map(|(ak, gk)| {
            let total: f32 = ak.iter().sum();
            gk.iter()
                .map(|&grad| {
                    if grad == 0.0 {
                        return 0.0;
                    }
                    let g2 = grad * grad;
                    let alpha = g2 / (2.0 * g2 + total * g2 * grad + 1e-6);
                    grad.max(0.0) * alpha
                })
                .sum()
        })
        .collect()
}

/// Σ over channels.
fn channel_sum(stack: ArrayView3<f32>) -> Result<CamMap> {
    let (_, h, w) = stack.dim();
    CamMap::new(h, w, stack.sum_axis(Axis(0)).iter().copied().collect())
}

/// FullGrad (pytorch-grad-cam's): |∇x ⊙ x| per input channel and |bias ⊙ G| per channel of
/// every layer with a bias, each min-max scaled and resized to the input, all summed.
///
/// Every channel map is min-max scaled on its own, and a ReLU6 gate that flips between two
/// correct float32 forwards changes a gradient map outright, which no rounding model of the
/// arithmetic captures (pytorch-grad-cam's own float32 and float64 maps differ by 5e-3 on
/// retina_420.jpg). So the stability is measured: the map is computed again on the input moved
/// by a relative [`Stability::NOISE`] with fixed random signs, [`FULL_GRAD_NUDGES`] times, and
/// the largest change is reported.
fn full_grad(
    classifier: &Classifier,
    input: ArrayView4<f32>,
    config: &ExplainConfig,
) -> Result<CamExplanation> {
    if config.cam.feature_resolution {
        return Err(Error::Parameter(
            "FullGrad works at input resolution; feature_resolution does not apply".into(),
        ));
    }
    let target = target_without_forward(classifier, input, config.target)?;
    let biases = classifier.bias_layers()?;
    let (target_logit, map, counts) = full_grad_pass(classifier, input, config, target, &biases)?;
    let mut change = 0.0f32;
    for seed in 0..FULL_GRAD_NUDGES {
        let mut rng = Pcg64::seed_from_u64(seed);
        let nudged = input.mapv(|v| {
            let sign = if rng.random_bool(0.5) { 1.0 } else { -1.0 };
            v * (1.0 + sign * Stability::NOISE)
        });
        let (_, again, _) = full_grad_pass(classifier, nudged.view(), config, target, &biases)?;
        change = map
            .values()
            .iter()
            .zip(again.values())
            .fold(change, |m, (a, b)| m.max((a - b).abs()));
    }
    Ok(CamExplanation {
        target,
        target_logit,
        layers: Vec::new(),
        map,
        stability: Some(counts.finish(change)),
    })
}

/// How many nudged FullGrad maps measure its stability: one nudge flips fewer gates than the
/// many differences between two engines (one found 1.4e-4 on chelsea_grey.jpg, where
/// pytorch-grad-cam's float32 and float64 maps differ by 1.2e-3).
const FULL_GRAD_NUDGES: u64 = 3;

/// One FullGrad map for `target` from the model's bias layers (`Classifier::bias_layers`, read
/// once per explanation): the target logit, the final map and the channel maps' near-zero ranges.
fn full_grad_pass(
    classifier: &Classifier,
    input: ArrayView4<f32>,
    config: &ExplainConfig,
    target: usize,
    biases: &[(String, Vec<f32>)],
) -> Result<(f32, CamMap, FullGradNoise)> {
    let names: Vec<&str> = biases.iter().map(|(name, _)| name.as_str()).collect();
    let seeds = one_hot(1, classifier.num_classes(), target);
    let out = classifier.gradients(input, seeds.view(), &names, true, BackwardRule::Standard)?;
    let target_logit = out.logits[(0, target)];
    let (height, width) = (input.dim().2, input.dim().3);
    let input_gradient = out
        .input_gradient
        .ok_or_else(|| Error::Inference("missing input gradient".into()))?;
    let mut maps: Vec<CamMap> = Vec::new();
    let mut noise = FullGradNoise::new();
    for c in 0..3 {
        let values: Vec<f32> = input
            .slice(s![0, c, .., ..])
            .iter()
            .zip(input_gradient.slice(s![0, c, .., ..]).iter())
            .map(|(x, g)| (x * g).abs())
            .collect();
        noise.add(values.iter().copied());
        maps.push(CamMap::new(height, width, values)?.scaled());
    }
    let size = if config.cam.eigen_smooth {
        (height / 8, width / 8)
    } else {
        (height, width)
    };
    let mut stack: Vec<CamMap> = maps
        .into_iter()
        .map(|m| {
            if config.cam.eigen_smooth {
                m.resize(size.0, size.1)
            } else {
                m
            }
        })
        .collect();
    for ((name, bias), gradient) in biases.iter().zip(&out.gradients) {
        let gradient = gradient
            .view()
            .into_dimensionality::<Ix4>()
            .map_err(|e| Error::Inference(format!("gradient of `{name}`: {e}")))?;
        // Bilinear resizing is linear with fixed taps, so the sum of the resized channels is
        // the resized sum: one resize per layer instead of one per channel.
        let channels = gradient.index_axis(Axis(0), 0);
        let (_, h, w) = channels.dim();
        let mut native_sum = vec![0.0f32; h * w];
        for (channel, b) in channels.outer_iter().zip(bias) {
            let values: Vec<f32> = channel.iter().map(|g| (g * b).abs()).collect();
            noise.add(values.iter().copied());
            let map = CamMap::new(h, w, values)?.scaled();
            native_sum
                .iter_mut()
                .zip(map.values())
                .for_each(|(s, v)| *s += v);
        }
        let layer_sum = CamMap::new(h, w, native_sum)?
            .resize(height, width)
            .values()
            .to_vec();
        let layer = CamMap::new(height, width, layer_sum)?;
        stack.push(if config.cam.eigen_smooth {
            layer.scaled().resize(size.0, size.1)
        } else {
            layer
        });
    }
    let combined = if config.cam.eigen_smooth {
        let (h, w) = size;
        let planes = Array3::from_shape_fn((stack.len(), h, w), |(k, y, x)| {
            stack[k].values()[y * w + x]
        });
        eigen_projection(planes.view())?
            .scaled()
            .resize(height, width)
    } else {
        let mut total = vec![0.0f32; height * width];
        for map in &stack {
            total
                .iter_mut()
                .zip(map.values())
                .for_each(|(t, v)| *t += v);
        }
        CamMap::new(height, width, total)?
    };
    Ok((target_logit, combined.scaled(), noise))
}

/// Σ_k w_k A_k as an h×w map.
fn weighted_sum(a: ArrayView3<f32>, weights: &[f32]) -> Result<CamMap> {
    let (_, h, w) = a.dim();
    let mut values = vec![0.0f32; h * w];
    for (channel, &weight) in a.outer_iter().zip(weights) {
        for (v, &x) in values.iter_mut().zip(channel.iter()) {
            *v += weight * x;
        }
    }
    CamMap::new(h, w, values)
}

/// pytorch-grad-cam's `get_2d_projection`: centre the (h·w)×K matrix per channel, project on
/// the first right singular vector; the sign is fixed so the map correlates positively with the
/// mean activation.
fn eigen_projection(a: ArrayView3<f32>) -> Result<CamMap> {
    let (k, h, w) = a.dim();
    let mut x = DMatrix::from_fn(h * w, k, |p, c| f64::from(a[(c, p / w, p % w)]));
    for mut column in x.column_iter_mut() {
        let mean = column.mean();
        column.add_scalar_mut(-mean);
    }
    let svd = x.clone().svd(false, true);
    let direction = svd
        .v_t
        .as_ref()
        .map(|vt| vt.row(0).transpose())
        .unwrap_or_else(|| nalgebra::DVector::zeros(k));
    let mut projection: Vec<f64> = (&x * direction).iter().copied().collect();
    let mean_activation: Vec<f64> = (0..h * w)
        .map(|p| (0..k).map(|c| f64::from(a[(c, p / w, p % w)])).sum::<f64>() / k as f64)
        .collect();
    let centred = |v: &[f64]| {
        let m = v.iter().sum::<f64>() / v.len() as f64;
        v.iter().map(|x| x - m).collect::<Vec<_>>()
    };
    let agreement: f64 = centred(&projection)
        .iter()
        .zip(centred(&mean_activation))
        .map(|(p, m)| p * m)
        .sum();
    if agreement < 0.0 {
        projection.iter_mut().for_each(|p| *p = -*p);
    }
    CamMap::new(h, w, projection.into_iter().map(|p| p as f32).collect())
}

/// Score-CAM: the class logit for the input multiplied by each channel's upsampled (bilinear,
/// corner-aligned, as `UpsamplingBilinear2d`) and min-max scaled activation.
fn score_cam_scores(
    classifier: &Classifier,
    input: ArrayView4<f32>,
    a: ArrayView3<f32>,
    target: usize,
    config: &ExplainConfig,
    runtime: &impl Runtime,
) -> Result<Vec<f32>> {
    let k = a.dim().0;
    let mut scores = Vec::with_capacity(k);
    // A device builds the masked images itself, all channels in one call; on the CPU they are
    // built per chunk and the chunk is split over the threads.
    let on_device = classifier.on_device();
    let step = if on_device { k } else { config.chunk };
    for start in (0..k).step_by(step) {
        check_cancelled(runtime)?;
        let end = (start + step).min(k);
        let masked = Masked {
            image: input.index_axis(Axis(0), 0),
            maps: a.slice(s![start..end, .., ..]),
        };
        let logits = if on_device {
            classifier.forward_masked(&masked)?
        } else {
            classifier
                .forward_with(runtime, masked.images()?.view(), &[])?
                .logits
        };
        scores.extend(logits.column(target).iter().copied());
        runtime.progress("score-cam", end, k);
    }
    Ok(scores)
}

/// Ablation-CAM: the class logit with each channel ablated, re-running only the network's tail
/// from the layer.
fn ablation_scores(
    classifier: &Classifier,
    layer: &str,
    a: ArrayView3<f32>,
    target: usize,
    config: &ExplainConfig,
    runtime: &impl Runtime,
) -> Result<Vec<f32>> {
    let (k, h, w) = a.dim();
    let tail = classifier.tail(layer, 1)?;
    let min = a.iter().copied().fold(f32::INFINITY, f32::min);
    let ablated_value = |channel: usize| -> f32 {
        match config.cam.ablation {
            AblationValue::Zero => 0.0,
            AblationValue::PytorchGradCam if min == 0.0 => 0.0,
            AblationValue::PytorchGradCam => {
                let mut value = min;
                for _ in 0..=channel % 32 {
                    value -= 1e7;
                }
                value
            }
        }
    };
    let mut scores = Vec::with_capacity(k);
    for start in (0..k).step_by(config.chunk) {
        check_cancelled(runtime)?;
        let end = (start + config.chunk).min(k);
        let parts = runtime::map_shares(runtime, start..end, &|channels| {
            let mut batch = Array4::<f32>::zeros((channels.len(), k, h, w));
            for (i, channel) in channels.enumerate() {
                let mut item = batch.index_axis_mut(Axis(0), i);
                item.assign(&a);
                item.index_axis_mut(Axis(0), channel)
                    .fill(ablated_value(channel));
            }
            tail.logits(batch.view())
        });
        for part in parts {
            scores.extend(part?.column(target).iter().copied());
        }
        runtime.progress("ablation-cam", end, k);
    }
    Ok(scores)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::prelude::tract_ndarray::Array3;

    #[test]
    fn eigen_projection_recovers_a_rank_one_pattern_with_positive_sign() {
        // Every channel is a positive multiple of one spatial pattern plus a constant.
        let pattern = [0.0f32, 1.0, 2.0, 3.0, 4.0, 5.0];
        let a = Array3::from_shape_fn((4, 2, 3), |(c, y, x)| {
            (c as f32 + 1.0) * pattern[y * 3 + x] + c as f32
        });
        let map = eigen_projection(a.view()).unwrap();
        let values = map.values();
        for pair in values.windows(2) {
            assert!(pair[1] > pair[0], "{values:?}");
        }
    }

    #[test]
    fn weighted_sum_and_names() {
        let a = Array3::from_shape_fn((2, 1, 2), |(c, _, x)| (c * 2 + x) as f32);
        assert_eq!(
            weighted_sum(a.view(), &[1.0, -1.0]).unwrap().values(),
            &[-2.0, -2.0]
        );
        for method in CamMethod::ALL {
            assert_eq!(method.name().parse::<CamMethod>().unwrap(), method);
        }
        assert_eq!(
            "gradcam++".parse::<CamMethod>().unwrap(),
            CamMethod::GradCamPlusPlus
        );
        let unknown = "grad-cam".parse::<CamMethod>().unwrap_err().to_string();
        assert!(
            unknown.contains("`grad-cam`") && unknown.contains("gradcam++"),
            "{unknown}"
        );
    }
}
