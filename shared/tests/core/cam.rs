//! Gradient-free CAMs against pytorch-grad-cam 1.5.5 on MobileNetV2 `features.17` for the
//! sample photos (fixtures: `fixtures/cam/generate.py`), from the same input tensors.

use crate::common::{SAMPLES, bundled, map_agreement, npy, png16_map, stem};
use camlime_core::ExplainConfig;
use camlime_core::Sequential;
use camlime_core::cam::{AblationValue, CamMap, CamMethod, compute_tensor};
use camlime_core::ndarray::Ix4;

fn reference_map(stem: &str, method: &str) -> CamMap {
    png16_map(&format!("cam/{stem}.{method}.png"))
}

fn check(method: CamMethod, ablation: AblationValue, samples: &[&str]) {
    let classifier = bundled("mobilenet_v2");
    for sample in samples {
        let stem = stem(sample);
        let input = npy(&format!("reference/mobilenet_v2/{stem}.input.npy"))
            .into_dimensionality::<Ix4>()
            .unwrap();
        let mut config = ExplainConfig::default();
        config.cam.layers = vec!["features.17".into()];
        config.cam.ablation = ablation;
        let ours = compute_tensor(&classifier, input.view(), method, &config, &Sequential).unwrap();
        let reference = reference_map(stem, method.name());
        let (pearson, max_abs) = map_agreement(&ours.map, &reference);
        eprintln!(
            "{} {stem}: pearson {pearson:.6} max|Δ| {max_abs:.2e}",
            method.name()
        );
        assert!(
            pearson >= 0.999,
            "{} {stem}: pearson {pearson}",
            method.name()
        );
        assert!(
            max_abs <= 1e-3,
            "{} {stem}: max |Δ| {max_abs}",
            method.name()
        );
    }
}

#[test]
fn eigencam_matches_pytorch_grad_cam() {
    check(CamMethod::EigenCam, AblationValue::Zero, &SAMPLES);
}

#[test]
fn scorecam_matches_pytorch_grad_cam() {
    check(CamMethod::ScoreCam, AblationValue::Zero, &SAMPLES);
}

#[test]
fn ablationcam_matches_pytorch_grad_cam_with_its_ablation_value() {
    check(
        CamMethod::AblationCam,
        AblationValue::PytorchGradCam,
        &SAMPLES,
    );
}

#[test]
fn ablation_tail_reproduces_the_full_network() {
    let classifier = bundled("mobilenet_v2");
    let input = npy("reference/mobilenet_v2/coffee.input.npy")
        .into_dimensionality::<Ix4>()
        .unwrap();
    let full = classifier.forward(input.view(), &["features.17"]).unwrap();
    let activation = full.activations[0]
        .view()
        .into_dimensionality::<Ix4>()
        .unwrap();
    let tail = classifier.tail("features.17", 1).unwrap();
    let logits = tail.logits(activation).unwrap();
    let worst = logits
        .iter()
        .zip(full.logits.iter())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(worst < 1e-4, "tail logits differ by {worst}");
    assert!(classifier.tail("no.such.layer", 1).is_err());
}

#[test]
fn random_cam_is_seeded_and_bad_targets_are_errors() {
    let classifier = bundled("mobilenet_v2");
    let input = npy("reference/mobilenet_v2/chelsea.input.npy")
        .into_dimensionality::<Ix4>()
        .unwrap();
    let config = |seed| ExplainConfig {
        seed,
        ..Default::default()
    };
    let random = CamMethod::Random;
    let a = compute_tensor(&classifier, input.view(), random, &config(1), &Sequential).unwrap();
    let b = compute_tensor(&classifier, input.view(), random, &config(1), &Sequential).unwrap();
    let c = compute_tensor(&classifier, input.view(), random, &config(2), &Sequential).unwrap();
    assert_eq!(a, b);
    assert_ne!(a.map, c.map);
    assert_eq!(a.target, 285);
    let bad = ExplainConfig {
        target: Some(1000),
        ..Default::default()
    };
    assert!(compute_tensor(&classifier, input.view(), random, &bad, &Sequential).is_err());
    let mut bad_layer = ExplainConfig::default();
    bad_layer.cam.layers = vec!["features.99".into()];
    assert!(compute_tensor(&classifier, input.view(), random, &bad_layer, &Sequential).is_err());
}

/// Score-CAM's batch as a device receives it (the image and the small maps): the masks are the
/// maps upsampled and scaled to [0, 1], the images the input times them, and the logits through
/// `forward_masked` are those of the built images.
#[test]
fn masked_batches_are_the_image_times_the_scaled_upsampled_maps() {
    use camlime_core::engine::Masked;
    use camlime_core::ndarray::{Array3, Axis};
    let classifier = bundled("mobilenet_v2");
    let input = npy("reference/mobilenet_v2/chelsea.input.npy")
        .into_dimensionality::<Ix4>()
        .unwrap();
    let maps = Array3::from_shape_fn((3, 7, 7), |(k, y, x)| ((k * 49 + y * 7 + x) as f32).sin());
    let masked = Masked {
        image: input.index_axis(Axis(0), 0),
        maps: maps.view(),
    };
    let masks = masked.masks().unwrap();
    for (k, mask) in masks.iter().enumerate() {
        let up = CamMap::new(7, 7, maps.index_axis(Axis(0), k).iter().copied().collect())
            .unwrap()
            .resize_align_corners(224, 224);
        assert_eq!(up.values().len(), mask.len());
        let lo = mask.iter().copied().fold(f32::INFINITY, f32::min);
        let hi = mask.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        assert_eq!(lo, 0.0);
        assert!((hi - 1.0).abs() < 1e-6, "{hi}");
        // The same order of values as the upsampled map.
        let (a, b) = (up.values(), mask);
        for i in 1..a.len() {
            assert_eq!(a[i] > a[i - 1], b[i] > b[i - 1], "mask {k} at {i}");
        }
    }
    let images = masked.images().unwrap();
    assert_eq!(
        images[[1, 2, 100, 50]],
        input[[0, 2, 100, 50]] * masks[1][100 * 224 + 50]
    );
    let direct = classifier.forward(images.view(), &[]).unwrap().logits;
    assert_eq!(classifier.forward_masked(&masked).unwrap(), direct);
}
