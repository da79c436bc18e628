//! The backward transform against torch.autograd on the bundled models (fixtures:
//! `fixtures/grad/generate.py`): layer and input gradients of the predicted class's logit.
//!
//! The bound is 1e-5 relative norm, or 5× the fixture's measured spread between PyTorch's own
//! float32 and float64 gradients where that is larger: a rectifier input within float32
//! rounding of its kink may flip between two correct float32 forwards.

use crate::common::{bundled, fixture, npy};
use camlime_core::grad::BackwardRule;
use camlime_core::ndarray::{Array2, ArrayD, Ix4};

/// ‖a − b‖ / ‖b‖.
fn relative_norm(a: &ArrayD<f32>, b: &ArrayD<f32>) -> f64 {
    assert_eq!(a.shape(), b.shape());
    let (mut diff, mut norm) = (0.0f64, 0.0f64);
    for (x, y) in a.iter().zip(b.iter()) {
        diff += f64::from(x - y).powi(2);
        norm += f64::from(*y).powi(2);
    }
    (diff / norm).sqrt()
}

fn check(model: &str, layers: &[&str]) {
    let classifier = bundled(model);
    for stem in ["chelsea", "coffee"] {
        let input = npy(&format!("reference/{model}/{stem}.input.npy"))
            .into_dimensionality::<Ix4>()
            .unwrap();
        let meta: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(fixture(&format!("grad/{model}.{stem}.json"))).unwrap(),
        )
        .unwrap();
        let target = meta["target"].as_u64().unwrap() as usize;
        let mut seeds = Array2::<f32>::zeros((1, classifier.num_classes()));
        seeds[(0, target)] = 1.0;
        let with_input = stem == "chelsea";
        let out = classifier
            .gradients(
                input.view(),
                seeds.view(),
                layers,
                with_input,
                BackwardRule::Standard,
            )
            .unwrap();
        let mut computed: Vec<(&str, &ArrayD<f32>)> =
            layers.iter().copied().zip(&out.gradients).collect();
        if with_input {
            computed.push(("input", out.input_gradient.as_ref().unwrap()));
        }
        for (tensor, gradient) in computed {
            let reference = npy(&format!("grad/{model}.{stem}.{tensor}.npy"));
            let error = relative_norm(gradient, &reference);
            let spread = meta["conditioning"][tensor].as_f64().unwrap();
            let bound = 1e-5f64.max(5.0 * spread);
            eprintln!(
                "{model} {stem} {tensor}: relative error {error:.2e} (torch f32/f64 spread \
                 {spread:.2e}, bound {bound:.1e})"
            );
            assert!(error <= bound, "{model} {stem} {tensor}: {error} > {bound}");
        }
    }
}

#[test]
fn mobilenet_v2_gradients_match_torch_autograd() {
    check("mobilenet_v2", &["features.17", "features.7", "features.2"]);
}

#[test]
fn efficientnet_lite0_gradients_match_torch_autograd() {
    check("efficientnet_lite0", &["_blocks.15", "_blocks.5"]);
}
