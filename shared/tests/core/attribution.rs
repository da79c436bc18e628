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
use camlime_core::ndarray::{Array3, Array4, ArrayView4, Axis, Ix4};
use camlime_core::{ExplainConfig, Sequential};

/// Compare our attribution with case `name` of the captum fixtures in `folder`.
fn compare(folder: &str, name: &str, ours: &Array3<f32>) -> f64 {
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture(&format!("{folder}/summary.json"))).unwrap(),
    )
    .unwrap();
    let case = &summary["cases"][name];
    let reference = npy(&format!("{folder}/{name}.npy"));
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
        "{folder} {name}: channel-sum relative error {error:.2e}, norm {norm_error:.2e}, pixels \
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

fn chelsea() -> Array4<f32> {
    npy("reference/mobilenet_v2/chelsea.input.npy")
        .into_dimensionality::<Ix4>()
        .unwrap()
}

fn run(input: ArrayView4<f32>, method: CamMethod, params: AttributionConfig) -> Array3<f32> {
    let classifier = bundled("mobilenet_v2");
    let mut config = ExplainConfig::default();
    config.cam.layers = vec!["features.17".into()];
    config.cam.attribution = params;
    attribute(&classifier, input, method, &config, &Sequential)
        .unwrap()
        .2
}

/// The captum case `name` (as `attribution/generate.py` defines it) on `input`, compared with
/// the fixtures in `folder`.
pub(crate) fn captum_case(folder: &str, input: ArrayView4<f32>, name: &str) {
    let params = match name {
        "ig_gausslegendre" | "guided_backprop" | "guided_gradcam" | "saliency"
        | "inputxgradient" => AttributionConfig::default(),
        "ig_trapezoid_half" => AttributionConfig {
            steps: 16,
            integration: Integration::RiemannTrapezoid,
            baseline: 0.5,
            ..Default::default()
        },
        "occlusion" => AttributionConfig {
            occlusion: Occlusion {
                window: [3, 32, 32],
                strides: [3, 16, 16],
                baseline: 0.0,
            },
            ..Default::default()
        },
        "smoothgrad" | "vargrad" => {
            let kind = if name == "smoothgrad" {
                NoiseKind::SmoothGrad
            } else {
                NoiseKind::VarGrad
            };
            // captum's tunnel with the fixture's injected draws (`shared_normal(7, …)`).
            let classifier = bundled("mobilenet_v2");
            let logits = classifier.forward(input, &[]).unwrap().logits;
            let target = classifier.top_k(&logits.row(0).to_vec(), 1).unwrap()[0].class;
            let per_sample = 3 * 224 * 224;
            let noises: Vec<Array3<f32>> = shared_normal(7, 3 * per_sample)
                .chunks(per_sample)
                .map(|chunk| {
                    Array3::from_shape_vec(
                        (3, 224, 224),
                        chunk.iter().map(|z| (0.2 * z) as f32).collect(),
                    )
                    .unwrap()
                })
                .collect();
            let ours = attribution::noise_tunnel(input, &noises, kind, |x| {
                attribution::saliency(&classifier, x, target, true, &Sequential)
            })
            .unwrap();
            compare(folder, name, &ours);
            return;
        }
        other => panic!("no captum case {other}"),
    };
    let method = match name {
        "ig_gausslegendre" | "ig_trapezoid_half" => CamMethod::IntegratedGradients,
        "guided_backprop" => CamMethod::GuidedBackprop,
        "guided_gradcam" => CamMethod::GuidedGradCam,
        "saliency" => CamMethod::Saliency,
        "inputxgradient" => CamMethod::InputXGradient,
        _ => CamMethod::Occlusion,
    };
    compare(folder, name, &run(input, method, params));
}

/// Every case `endtoend/generate.py` writes (`attribution/generate.py`'s first seven).
pub(crate) const CAPTUM_CASES: [&str; 9] = [
    "ig_gausslegendre",
    "ig_trapezoid_half",
    "guided_backprop",
    "guided_gradcam",
    "occlusion",
    "smoothgrad",
    "vargrad",
    "saliency",
    "inputxgradient",
];

#[test]
fn integrated_gradients_match_captum() {
    captum_case("attribution", chelsea().view(), "ig_gausslegendre");
    captum_case("attribution", chelsea().view(), "ig_trapezoid_half");
}

#[test]
fn guided_methods_match_captum() {
    captum_case("attribution", chelsea().view(), "guided_backprop");
    captum_case("attribution", chelsea().view(), "guided_gradcam");
}

#[test]
fn occlusion_matches_captum() {
    captum_case("attribution", chelsea().view(), "occlusion");
}

#[test]
fn noise_tunnel_matches_captum_given_the_same_draws() {
    captum_case("attribution", chelsea().view(), "smoothgrad");
    captum_case("attribution", chelsea().view(), "vargrad");
    // The seeded tunnel draws its own noise: deterministic, and different from none.
    let tunnel = AttributionConfig {
        noise_tunnel: Some(NoiseTunnel {
            kind: NoiseKind::SmoothGrad,
            samples: 2,
            stdev: 0.2,
        }),
        ..Default::default()
    };
    let input = chelsea();
    let a = run(input.view(), CamMethod::Saliency, tunnel.clone());
    assert_eq!(a, run(input.view(), CamMethod::Saliency, tunnel));
    assert_ne!(
        a,
        run(
            input.view(),
            CamMethod::Saliency,
            AttributionConfig::default()
        )
    );
}
