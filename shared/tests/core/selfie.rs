//! The segmenter from the photo file: Selfie's logits and predicted masks equal onnxruntime's on
//! the same ONNX file, the region target's sums equal the reference's, LIME explaining a region
//! equals `lime` on the same samples scored by the same target, and the CAMs of a region equal
//! pytorch-grad-cam's with its `SemanticSegmentationTarget` on the converted model
//! (`fixtures/selfie/generate.py`).

use camlime_core::detection::BoundingBox;
use camlime_core::explanation::{TaskConfig, TaskRecord};
use camlime_core::ndarray::{Array1, Array2};
use camlime_core::region::{Region, RegionChoice, RegionShape, RegionTarget};
use camlime_core::{Classifier, ExplainConfig, task};
use ndarray_npy::ReadNpyExt;
use serde_json::Value;

use crate::common::{
    assert_surrogate_matches, assert_task_cams_match, bundled, fixture as fixture_path,
    lime_on_reference_samples, sample_base,
};

fn reference() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture_path("selfie/selfie.json")).unwrap())
        .unwrap()
}

fn base(photo: &str) -> image::RgbImage {
    sample_base(&bundled("selfie"), photo)
}

/// The segmenter headed by a region's summed logits, as explanations bind it, and the record.
fn bound(
    selfie: &Classifier,
    base: &image::RgbImage,
    choice: RegionChoice,
) -> (Classifier, RegionTarget) {
    match task::bind(selfie, base, &TaskConfig::Segmentation(choice)).unwrap() {
        (Some(headed), Some(TaskRecord::Segmentation(target))) => (headed, target),
        _ => panic!("a segmentation binds a head"),
    }
}

#[test]
fn logits_masks_and_region_sums_equal_onnxruntime() {
    let selfie = bundled("selfie");
    let fixture = reference();
    assert_eq!(fixture["model_sha256"], selfie.sha256());
    let b: Vec<f32> = serde_json::from_value(fixture["box"].clone()).unwrap();
    let given = RegionChoice {
        region: Some(RegionShape::Box(BoundingBox {
            x0: b[0],
            y0: b[1],
            x1: b[2],
            y1: b[3],
        })),
    };
    for (photo, expected) in fixture["photos"].as_object().unwrap() {
        let base = base(photo);
        let stem = photo.split('.').next().unwrap();
        let path = fixture_path(&format!("selfie/{stem}.logits.npy"));
        let mask = task::segment(&selfie, &base).unwrap();
        let theirs = Region {
            size: [256, 256],
            runs: serde_json::from_value(expected["runs"].clone()).unwrap(),
        };
        if path.exists() {
            let reference = Array2::<f32>::read_npy(std::fs::File::open(&path).unwrap()).unwrap();
            let tensor = selfie
                .spec()
                .preprocessing
                .tensor(std::slice::from_ref(&base))
                .unwrap();
            let ours: Array1<f32> = selfie.raw_outputs(tensor.view()).unwrap().row(0).to_owned();
            let scale = reference.iter().fold(0f32, |m, v| m.max(v.abs()));
            let worst = ours
                .iter()
                .zip(reference.iter())
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            eprintln!("{photo}: logits max |Δ| {worst:.3e} of max |logit| {scale:.1}");
            assert!(worst <= 1e-5 * scale, "{photo}: {worst} of {scale}");
            // A pixel may only change sides where the reference logit is within that error of 0.
            let (ours_mask, their_mask) = (mask.mask().unwrap(), theirs.mask().unwrap());
            for (i, (a, b)) in ours_mask.iter().zip(&their_mask).enumerate() {
                assert!(
                    a == b || reference.as_slice().unwrap()[i].abs() <= worst,
                    "{photo}: pixel {i}"
                );
            }
        } else {
            assert_eq!(mask, theirs, "{photo}");
        }
        assert_eq!(
            mask.area() as u64,
            expected["area"].as_u64().unwrap(),
            "{photo}"
        );
        let close = |a: f32, b: &Value| {
            let b = b.as_f64().unwrap();
            (f64::from(a) - b).abs() <= 1e-5 * (1.0 + b.abs())
        };
        if mask.area() > 0 {
            let (_, target) = bound(&selfie, &base, RegionChoice::default());
            assert!(
                close(target.score, &expected["mask_sum"]),
                "{photo}: {}",
                target.score
            );
        }
        let (_, target) = bound(&selfie, &base, given.clone());
        assert_eq!(target.region.area(), 120 * 120);
        assert!(
            close(target.score, &expected["box_sum"]),
            "{photo}: {}",
            target.score
        );
    }
}

#[test]
fn lime_on_a_region_equals_lime_with_the_region_target() {
    let selfie = bundled("selfie");
    let fixture = reference();
    let lime = &fixture["lime"];
    let base = base(lime["photo"].as_str().unwrap());
    let (headed, _) = bound(&selfie, &base, RegionChoice::default());
    let (scores, theirs, ours) =
        lime_on_reference_samples(&headed, &base, lime, "selfie/lime.z.npy", 0);
    // Sums of ~35,000 logits (each within ~1e-3 of onnxruntime's) against the scores' scale.
    let scale = theirs.iter().fold(0f64, |m, v| m.max(v.abs()));
    let worst = scores
        .iter()
        .zip(&theirs)
        .fold(0f64, |m, (a, b)| m.max((a - b).abs()));
    eprintln!("region scores: worst |Δ| {worst:.3} of max |score| {scale:.1}");
    assert!(worst < 2e-5 * scale, "{worst} of {scale}");
    // Coefficients and intercept against the scores' scale; R² on its own.
    let close = |a: f64, b: f64| (a - b).abs() < 2e-5 * scale;
    let r2 = lime["score"].as_f64().unwrap();
    assert!((ours.score - r2).abs() < 1e-4, "R² {} vs {r2}", ours.score);
    assert!(close(ours.local_pred, lime["local_pred"].as_f64().unwrap()));
    assert_surrogate_matches(&ours, lime, close);
}

#[test]
fn cams_of_a_region_equal_pytorch_grad_cam_on_the_converted_model() {
    let selfie = bundled("selfie");
    let fixture = reference();
    let mut config = ExplainConfig::default();
    config.cam.layers = vec![fixture["layer"].as_str().unwrap().to_owned()];
    config.target = Some(0);
    for photo in fixture["cams"].as_array().unwrap() {
        let photo = photo.as_str().unwrap();
        let base = base(photo);
        let (headed, _) = bound(&selfie, &base, RegionChoice::default());
        let stem = photo.split('.').next().unwrap();
        assert_task_cams_match(&headed, &base, &config, &format!("selfie/{stem}"), 1e-3);
    }
}

#[test]
fn empty_regions_and_wrong_models_are_clear_errors() {
    let selfie = bundled("selfie");
    let rocket = base("rocket.jpg");
    // Selfie finds no person in the rocket photo: its default region is empty.
    let error = task::bind(
        &selfie,
        &rocket,
        &TaskConfig::Segmentation(RegionChoice::default()),
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("finds nothing"), "{error}");
    let outside = RegionChoice {
        region: Some(RegionShape::Box(BoundingBox {
            x0: 300.0,
            y0: 300.0,
            x1: 400.0,
            y1: 400.0,
        })),
    };
    let error = task::bind(&selfie, &rocket, &TaskConfig::Segmentation(outside))
        .unwrap_err()
        .to_string();
    assert!(error.contains("no pixel"), "{error}");
    let bad_mask = RegionChoice {
        region: Some(RegionShape::Mask(Region {
            size: [4, 4],
            runs: vec![3, 20],
        })),
    };
    let error = task::bind(&selfie, &rocket, &TaskConfig::Segmentation(bad_mask))
        .unwrap_err()
        .to_string();
    assert!(error.contains("add up to"), "{error}");
    let error = selfie
        .predict(std::slice::from_ref(&rocket), 1)
        .unwrap_err()
        .to_string();
    assert!(error.contains("is a segmenter"), "{error}");
    let error = task::segment(&bundled("mobilenet_v2"), &rocket)
        .unwrap_err()
        .to_string();
    assert!(error.contains("not a segmenter"), "{error}");
    let error = task::bind(
        &bundled("mobilenet_v2"),
        &rocket,
        &TaskConfig::Segmentation(RegionChoice::default()),
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("asks for segmentation"), "{error}");
}
