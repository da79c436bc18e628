//! The face detector from the photo file: BlazeFace's detections equal the Python reference's
//! decoding (@vladmandic/human's anchors and regressors, torchvision's `nms`) on onnxruntime's
//! outputs (`fixtures/faces/generate.py`), and a face's box explains like any detection.

use camlime_core::cam::{CamMethod, compute};
use camlime_core::detection::BoxChoice;
use camlime_core::explanation::{TaskConfig, TaskRecord};
use camlime_core::{ExplainConfig, Sequential, task};
use serde_json::Value;

use crate::common::{bundled, fixture as fixture_path, sample_base};

fn base(photo: &str) -> image::RgbImage {
    sample_base(&bundled("blazeface"), photo)
}

#[test]
fn face_detections_equal_the_reference_decoding() {
    let detector = bundled("blazeface");
    let fixture: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture_path("faces/faces.json")).unwrap())
            .unwrap();
    assert_eq!(fixture["model_sha256"], detector.sha256());
    let mut faces = 0;
    for (photo, expected) in fixture["photos"].as_object().unwrap() {
        let found = task::detect(&detector, &base(photo), None).unwrap();
        let expected = expected.as_array().unwrap();
        assert_eq!(found.len(), expected.len(), "{photo}: {found:?}");
        for (ours, theirs) in found.iter().zip(expected) {
            assert_eq!((ours.class, ours.label.as_str()), (0, "face"));
            let score = theirs["score"].as_f64().unwrap();
            assert!(
                (f64::from(ours.score) - score).abs() < 1e-4,
                "{photo}: {}",
                ours.score
            );
            let b = ours.bbox;
            for (mine, reference) in [b.x0, b.y0, b.x1, b.y1]
                .iter()
                .zip(theirs["box"].as_array().unwrap())
            {
                let d = (f64::from(*mine) - reference.as_f64().unwrap()).abs() / 256.0;
                assert!(d < 1e-3, "{photo}: box {b:?} vs {}", theirs["box"]);
            }
            faces += 1;
        }
    }
    assert!(faces >= 2, "the samples hold faces");
}

#[test]
fn a_face_box_is_explained_and_a_faceless_photo_is_a_clear_error() {
    let detector = bundled("blazeface");
    let astronaut = base("astronaut.png");
    let (headed, record) = task::bind(
        &detector,
        &astronaut,
        &TaskConfig::Detection(BoxChoice::default()),
    )
    .unwrap();
    let (headed, Some(TaskRecord::Detection { target, .. })) = (headed.unwrap(), record) else {
        panic!("a detection binds a head");
    };
    assert_eq!(target.detection.label, "face");
    let mut config = ExplainConfig::default();
    config.cam.layers = vec!["features.s16".into()];
    config.target = Some(0);
    // Grad-CAM of the face's score through BlazeFace (channel padding, max pools) is brightest
    // inside the face's box.
    let cam = compute(
        &headed,
        &astronaut,
        CamMethod::GradCam,
        &config,
        &Sequential,
    )
    .unwrap();
    let (w, h) = (cam.map.width(), cam.map.height());
    let b = target.detection.bbox;
    let (mut inside, mut outside, mut n_in, mut n_out) = (0.0, 0.0, 0, 0);
    for y in 0..h {
        for x in 0..w {
            let (px, py) = (
                (x as f32 + 0.5) * 256.0 / w as f32,
                (y as f32 + 0.5) * 256.0 / h as f32,
            );
            let v = cam.map.values()[y * w + x];
            if px >= b.x0 && px < b.x1 && py >= b.y0 && py < b.y1 {
                (inside, n_in) = (inside + v, n_in + 1);
            } else {
                (outside, n_out) = (outside + v, n_out + 1);
            }
        }
    }
    let (inside, outside) = (inside / n_in as f32, outside / n_out as f32);
    assert!(
        inside > 2.0 * outside,
        "mean inside {inside}, outside {outside}"
    );
    let error = task::bind(
        &detector,
        &base("rocket.jpg"),
        &TaskConfig::Detection(BoxChoice::default()),
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("detects no face"), "{error}");
}
