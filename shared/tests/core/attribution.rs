//! Input attributions against captum 0.9 on MobileNetV2 (fixtures:
//! `fixtures/attribution/generate.py`): the channel-summed attribution within 1e-4 relative
//! norm, the full tensor's norm and a few pixels likewise, or within 5× the fixture's measured
//! spread between PyTorch's float32 and float64 results where that is larger (input gradients
//! cross every ReLU6, and a unit within float32 rounding of its kink may flip between two
//! correct float32 forwards).

use crate::common::{bundled, fixture, npy, shared_normal};
use camlime_core::attribution::{
    self, AttributionConfig, Integration, NoiseKind, NoiseTunnel, Occlusion,
};
use camlime_core::cam::{CamMethod, attribute};
use camlime_core::ndarray::{Array3, Axis, Ix4};
use camlime_core::{ExplainConfig, Sequential};

fn compare(name: &str, ours: &Array3<f32>) -> f64 {
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("attribution/summary.json")).unwrap(),
    )
    .unwrap();
    let case = &summary["cases"][name];
    let reference = npy(&format!("attribution/{name}.npy"));
    let summed = ours.sum_axis(Axis(0));
    let (mut diff, mut norm) = (0.0f64, 0.0f64);
    for (a, b) in summed.iter().zip(reference.iter()) {
        diff += f64::from(a - b).powi(2);
        norm += f64::from(*b).powi(2);
    }
    let error = (diff / norm).sqrt();
    let ours_norm = ours
        .iter()
        .map(|v| f64::from(*v).powi(2))
        .sum::<f64>()
        .sqrt();
    let norm_error = (ours_norm / case["norm"].as_f64().unwrap() - 1.0).abs();
    let pixels = summary["pixels"].as_array().unwrap();
    let scale = ours.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let mut pixel_error = 0.0f32;
    for (pixel, value) in pixels.iter().zip(case["values"].as_array().unwrap()) {
        let p: Vec<usize> = pixel
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        let reference = value.as_f64().unwrap() as f32;
        pixel_error = pixel_error.max((ours[(p[0], p[1], p[2])] - reference).abs() / scale);
    }
    let bound = 1e-4f64.max(5.0 * case["conditioning"].as_f64().unwrap());
    eprintln!(
        "{name}: channel-sum relative error {error:.2e}, norm {norm_error:.2e}, pixels \
         {pixel_error:.2e} of max |a| (bound {bound:.1e})"
    );
    assert!(error <= bound, "{name}: {error}");
    assert!(norm_error <= bound, "{name}: norm {norm_error}");
    assert!(
        f64::from(pixel_error) <= bound,
        "{name}: pixels {pixel_error}"
    );
    error
}

fn run(method: CamMethod, params: AttributionConfig) -> Array3<f32> {
    let classifier = bundled("mobilenet_v2");
    let input = npy("reference/mobilenet_v2/chelsea.input.npy")
        .into_dimensionality::<Ix4>()
        .unwrap();
    let mut config = ExplainConfig::default();
    config.cam.layers = vec!["features.17".into()];
    config.cam.attribution = params;
    attribute(&classifier, input.view(), method, &config, &Sequential)
        .unwrap()
        .2
}

#[test]
fn integrated_gradients_match_captum() {
    compare(
        "ig_gausslegendre",
        &run(CamMethod::IntegratedGradients, AttributionConfig::default()),
    );
    let trapezoid = AttributionConfig {
        steps: 16,
        integration: Integration::RiemannTrapezoid,
        baseline: 0.5,
        ..Default::default()
    };
    compare(
        "ig_trapezoid_half",
        &run(CamMethod::IntegratedGradients, trapezoid),
    );
}

#[test]
fn guided_methods_match_captum() {
    compare(
        "guided_backprop",
        &run(CamMethod::GuidedBackprop, AttributionConfig::default()),
    );
    compare(
        "guided_gradcam",
        &run(CamMethod::GuidedGradCam, AttributionConfig::default()),
    );
}

#[test]
fn occlusion_matches_captum() {
    let params = AttributionConfig {
        occlusion: Occlusion {
            window: [3, 32, 32],
            strides: [3, 16, 16],
            baseline: 0.0,
        },
        ..Default::default()
    };
    compare("occlusion", &run(CamMethod::Occlusion, params));
}

#[test]
fn noise_tunnel_matches_captum_given_the_same_draws() {
    let classifier = bundled("mobilenet_v2");
    let input = npy("reference/mobilenet_v2/chelsea.input.npy")
        .into_dimensionality::<Ix4>()
        .unwrap();
    let target = 285;
    let per_sample = 3 * 224 * 224;
    let draws = shared_normal(7, 3 * per_sample);
    let noises: Vec<Array3<f32>> = draws
        .chunks(per_sample)
        .map(|chunk| {
            Array3::from_shape_vec(
                (3, 224, 224),
                chunk.iter().map(|z| (0.2 * z) as f32).collect(),
            )
            .unwrap()
        })
        .collect();
    for (name, kind) in [
        ("smoothgrad", NoiseKind::SmoothGrad),
        ("vargrad", NoiseKind::VarGrad),
    ] {
        let ours = attribution::noise_tunnel(input.view(), &noises, kind, |x| {
            attribution::saliency(&classifier, x, target, true, &Sequential)
        })
        .unwrap();
        compare(name, &ours);
    }
    // The seeded tunnel draws its own noise: deterministic, and different from none.
    let tunnel = AttributionConfig {
        noise_tunnel: Some(NoiseTunnel {
            kind: NoiseKind::SmoothGrad,
            samples: 2,
            stdev: 0.2,
        }),
        ..Default::default()
    };
    let a = run(CamMethod::Saliency, tunnel.clone());
    assert_eq!(a, run(CamMethod::Saliency, tunnel));
    assert_ne!(a, run(CamMethod::Saliency, AttributionConfig::default()));
}
