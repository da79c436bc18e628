//! The face detector from the photo file: BlazeFace's detections equal the Python reference's
//! decoding (@vladmandic/human's anchors and regressors, torchvision's `nms`) on onnxruntime's
//! outputs (`fixtures/faces/generate.py`), and a face's box explains like any detection.

use camlime_core::cam::{CamMethod, compute};
use camlime_core::detection::BoxChoice;
use camlime_core::explanation::{TaskConfig, TaskRecord};
use camlime_core::{ExplainConfig, Sequential, task};
use serde_json::Value;

use crate::common::{
    assert_surrogate_matches, assert_task_cams_match, bundled, fixture as fixture_path,
    lime_on_reference_samples, sample_base,
};

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

fn photo(name: &str) -> image::RgbImage {
    let bytes = std::fs::read(crate::common::models_dir().join("samples").join(name)).unwrap();
    camlime_core::decode_image(&bytes, &Default::default()).unwrap()
}

/// The emotion model's input for a photo's best face, as explanations crop it, and the crop.
fn emotion_face(name: &str) -> (image::RgbImage, camlime_core::face::FaceInfo) {
    let emotion = bundled("emotion");
    let crop = emotion.spec().face.clone().unwrap();
    let (face, info) = task::crop_face(
        &bundled("blazeface"),
        &photo(name),
        &BoxChoice::default(),
        &crop,
    )
    .unwrap();
    (
        emotion.spec().preprocessing.base_image(&face).unwrap(),
        info,
    )
}

fn fixture() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture_path("faces/faces.json")).unwrap())
        .unwrap()
}

#[test]
fn the_emotion_of_a_cropped_face_equals_the_reference() {
    let emotion = bundled("emotion");
    let fixture = fixture();
    assert_eq!(fixture["emotion_sha256"], emotion.sha256());
    for (name, expected) in fixture["emotions"].as_object().unwrap() {
        let (base, info) = emotion_face(name);
        let crop: Vec<u32> = serde_json::from_value(expected["crop"].clone()).unwrap();
        assert_eq!(
            [info.crop.x0, info.crop.y0, info.crop.x1, info.crop.y1].to_vec(),
            crop,
            "{name}"
        );
        let tensor = emotion
            .spec()
            .preprocessing
            .tensor(std::slice::from_ref(&base))
            .unwrap();
        let logits = emotion.forward(tensor.view(), &[]).unwrap().logits;
        let theirs: Vec<f32> = serde_json::from_value(expected["logits"].clone()).unwrap();
        for (ours, theirs) in logits.row(0).iter().zip(&theirs) {
            assert!(
                (ours - theirs).abs() < 1e-4,
                "{name}: {logits} vs {theirs:?}"
            );
        }
    }
    let (base, _) = emotion_face("astronaut.png");
    let top = emotion.predict(&[base], 1).unwrap();
    assert_eq!(top[0][0].label, "happy");
}

#[test]
fn cams_and_lime_of_a_face_equal_the_reference() {
    let emotion = bundled("emotion");
    let fixture = fixture();
    let lime = &fixture["lime"];
    let target = lime["target"].as_u64().unwrap() as usize;
    let (base, _) = emotion_face("astronaut.png");
    let mut config = ExplainConfig::default();
    config.cam.layers = vec!["block3".into()];
    config.target = Some(target);
    assert_task_cams_match(&emotion, &base, &config, "faces/astronaut", 1e-4);
    let (scores, theirs, ours) =
        lime_on_reference_samples(&emotion, &base, lime, "faces/lime.z.npy", target);
    let worst = scores
        .iter()
        .zip(&theirs)
        .fold(0f64, |m, (a, b)| m.max((a - b).abs()));
    eprintln!("face LIME: worst probability difference {worst:.2e}");
    assert!(worst < 1e-5, "{worst}");
    let close = |a: f64, b: f64| (a - b).abs() < 1e-4 * (1.0 + b.abs());
    assert!(close(ours.score, lime["score"].as_f64().unwrap()));
    assert_surrogate_matches(&ours, lime, close);
}

#[test]
fn identity_is_the_cosine_to_a_reference_face_and_its_cams_equal_the_reference() {
    let descriptor = bundled("faceres");
    let fixture = fixture();
    assert_eq!(fixture["descriptor_sha256"], descriptor.sha256());
    let expected = &fixture["identity"];
    let crop = descriptor.spec().face.clone().unwrap();
    let detector = bundled("blazeface");
    let face_of = |photo: &image::RgbImage| {
        let (face, info) = task::crop_face(&detector, photo, &BoxChoice::default(), &crop).unwrap();
        let c = info.crop;
        (
            descriptor.spec().preprocessing.base_image(&face).unwrap(),
            vec![c.x0, c.y0, c.x1, c.y1],
        )
    };
    let astronaut = photo("astronaut.png");
    let (base, area) = face_of(&astronaut);
    let (reference_base, reference_area) = face_of(&image::imageops::flip_horizontal(&astronaut));
    assert_eq!(
        area,
        serde_json::from_value::<Vec<u32>>(expected["crop"].clone()).unwrap()
    );
    assert_eq!(
        reference_area,
        serde_json::from_value::<Vec<u32>>(expected["reference_crop"].clone()).unwrap()
    );
    let embedding = task::embed(&descriptor, &base).unwrap();
    let reference = task::embed(&descriptor, &reference_base).unwrap();
    assert_eq!(embedding.len(), 1024);
    let head: Vec<f32> = serde_json::from_value(expected["embedding_head"].clone()).unwrap();
    for (ours, theirs) in embedding.iter().zip(&head) {
        assert!(
            (ours - theirs).abs() <= 1e-4 * (1.0 + theirs.abs()),
            "{ours} vs {theirs}"
        );
    }
    let task = TaskConfig::Identity(camlime_core::explanation::IdentityChoice { reference });
    let (headed, record) = task::bind(&descriptor, &base, &task).unwrap();
    let (headed, Some(TaskRecord::Identity(target))) = (headed.unwrap(), record) else {
        panic!("identity binds a head");
    };
    let similarity = expected["similarity"].as_f64().unwrap();
    assert!(
        (f64::from(target.similarity) - similarity).abs() < 1e-5,
        "{}",
        target.similarity
    );
    let mut config = ExplainConfig::default();
    config.cam.layers = vec!["conv_pw_13".into()];
    config.target = Some(0);
    assert_task_cams_match(&headed, &base, &config, "faces/astronaut.identity", 1e-3);
    // A reference of the wrong length, or zero, is a clear error.
    for bad in [vec![1.0; 3], vec![0.0; 1024]] {
        let task =
            TaskConfig::Identity(camlime_core::explanation::IdentityChoice { reference: bad });
        assert!(task::bind(&descriptor, &base, &task).is_err());
    }
}
