//! The detector from the photo file: NanoDet's detections equal the Python reference's decoding
//! (NanoDet's own, torchvision's `batched_nms`) on onnxruntime's outputs, and LIME explaining
//! one box equals `lime` on the same samples scored by the same box target, and the CAMs of a box
//! equal pytorch-grad-cam's on the converted model (`fixtures/detection/generate.py`).

use camlime_core::detection::{BoxChoice, Detection};
use camlime_core::explanation::{TaskConfig, TaskRecord};
use camlime_core::{Classifier, ExplainConfig, task};
use serde_json::Value;

use crate::common::{
    assert_surrogate_matches, assert_task_cams_match, bundled, fixture as fixture_path,
    lime_on_reference_samples, sample_base,
};

fn reference() -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(fixture_path("detection/detections.json")).unwrap(),
    )
    .unwrap()
}

fn base(photo: &str) -> image::RgbImage {
    sample_base(&bundled("nanodet"), photo)
}

/// The classifier headed by the best detection's box score, as explanations bind it, and that
/// detection.
fn best_box(detector: &Classifier, base: &image::RgbImage) -> (Classifier, Detection) {
    let task = TaskConfig::Detection(BoxChoice::default());
    match task::bind(detector, base, &task).unwrap() {
        (Some(headed), Some(TaskRecord::Detection { target, .. })) => (headed, target.detection),
        _ => panic!("a detection binds a head"),
    }
}

#[test]
fn detections_equal_the_reference_decoding() {
    let detector = bundled("nanodet");
    let fixture = reference();
    assert_eq!(fixture["model_sha256"], detector.sha256());
    for (photo, expected) in fixture["photos"].as_object().unwrap() {
        let found = task::detect(&detector, &base(photo), None).unwrap();
        let expected = expected.as_array().unwrap();
        assert_eq!(found.len(), expected.len(), "{photo}: {found:?}");
        for (ours, theirs) in found.iter().zip(expected) {
            assert_eq!(
                ours.class as u64,
                theirs["class"].as_u64().unwrap(),
                "{photo}"
            );
            assert_eq!(ours.label, theirs["label"].as_str().unwrap());
            let score = theirs["score"].as_f64().unwrap();
            assert!(
                (f64::from(ours.score) - score).abs() < 1e-4,
                "{photo}: {} vs {score}",
                ours.score
            );
            let b = ours.bbox;
            for (mine, reference) in [b.x0, b.y0, b.x1, b.y1]
                .iter()
                .zip(theirs["box"].as_array().unwrap())
            {
                let d = (f64::from(*mine) - reference.as_f64().unwrap()).abs() / 416.0;
                assert!(d < 1e-3, "{photo}: box {b:?} vs {}", theirs["box"]);
            }
        }
    }
}

#[test]
fn lime_on_a_box_equals_lime_with_the_box_target() {
    let detector = bundled("nanodet");
    let fixture = reference();
    let lime = &fixture["lime"];
    let base = base(lime["photo"].as_str().unwrap());
    let (headed, target) = best_box(&detector, &base);
    assert_eq!(
        target.class as u64,
        lime["target"]["class"].as_u64().unwrap()
    );
    let (scores, theirs, ours) =
        lime_on_reference_samples(&headed, &base, lime, "detection/lime.z.npy", 0);
    let differ: Vec<(usize, f64, f64)> = scores
        .iter()
        .zip(&theirs)
        .enumerate()
        .filter(|(_, (a, b))| (*a - *b).abs() > 1e-4)
        .map(|(i, (a, b))| (i, *a, *b))
        .collect();
    assert!(
        differ.is_empty(),
        "{} samples differ: {:?}",
        differ.len(),
        &differ[..differ.len().min(10)]
    );
    // Boxes that disappear score 0: the reference has such samples, and so do we.
    assert!(scores.iter().filter(|&&s| s == 0.0).count() > 0);
    let close = |a: f64, b: f64| (a - b).abs() < 1e-4 * (1.0 + b.abs());
    assert!(close(ours.score, lime["score"].as_f64().unwrap()));
    assert!(close(ours.local_pred, lime["local_pred"].as_f64().unwrap()));
    assert_surrogate_matches(&ours, lime, close);
}

#[test]
fn a_box_gone_from_the_image_scores_zero() {
    let detector = bundled("nanodet");
    let base = base("motorcycle_left.png");
    let (headed, target) = best_box(&detector, &base);
    let black = image::RgbImage::new(416, 416);
    let input = detector
        .spec()
        .preprocessing
        .tensor(&[base.clone(), black])
        .unwrap();
    let values = headed.forward(input.view(), &[]).unwrap().logits;
    assert_eq!(values.dim(), (2, 1));
    assert_eq!(values[(0, 0)], target.score);
    assert_eq!(
        values[(1, 0)],
        0.0,
        "nothing left to match in a black image"
    );
    let error = task::detect(&bundled("mobilenet_v2"), &base, None).unwrap_err();
    assert!(error.to_string().contains("not a detector"), "{error}");
}

#[test]
fn cams_of_a_box_equal_pytorch_grad_cam_on_the_converted_model() {
    let detector = bundled("nanodet");
    let fixture = reference();
    let mut config = ExplainConfig::default();
    config.cam.layers = ["fpn.p3", "fpn.p4", "fpn.p5"].map(String::from).to_vec();
    config.target = Some(0);
    for (photo, expected) in fixture["cams"].as_object().unwrap() {
        let base = base(photo);
        let (headed, target) = best_box(&detector, &base);
        assert_eq!(target.index as u64, expected["index"].as_u64().unwrap());
        let stem = photo.split('.').next().unwrap();
        assert_task_cams_match(&headed, &base, &config, &format!("detection/{stem}"), 1e-4);
    }
}
