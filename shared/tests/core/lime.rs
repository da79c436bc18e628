//! LIME and CamLIME surrogates against lime 0.2.0.1 + scikit-learn 1.7.2 on the same segments,
//! samples Z and labels Y (fixtures: `fixtures/lime/generate.py`), and the perturbation
//! pipeline against the fixture's onnxruntime labels.

use crate::common::{bundled, fixture, reference_labels};
use camlime_core::cam::CamMap;
use camlime_core::camlime::CamLimeMode;
use camlime_core::engine::Composed;
use camlime_core::lime::{
    HideColor, cosine_distances, explain_label, fill_image, kernel, perturbed_image,
};
use camlime_core::nalgebra::DMatrix;
use camlime_core::surrogate::FeatureSelection;
use camlime_core::{Segmentation, ndarray};
use ndarray_npy::ReadNpyExt;
use serde_json::Value;

struct Fixture {
    z: DMatrix<f64>,
    y: ndarray::Array2<f32>,
    cam: CamMap,
    grid_design: ndarray::Array2<f64>,
    record: Value,
    segmentation: Segmentation,
    image: image::RgbImage,
}

fn load() -> Fixture {
    let open = |name: &str| std::fs::File::open(fixture(&format!("lime/{name}"))).unwrap();
    let z = ndarray::Array2::<i8>::read_npy(open("chelsea.z.npy")).unwrap();
    let y = ndarray::Array2::<f32>::read_npy(open("chelsea.y.npy")).unwrap();
    let cam = ndarray::Array2::<f32>::read_npy(open("chelsea.cam.npy")).unwrap();
    let grid_design = ndarray::Array2::<f64>::read_npy(open("chelsea.grid_design.npy")).unwrap();
    let record: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("lime/chelsea.json")).unwrap())
            .unwrap();
    let labels = reference_labels("chelsea", "quickshift");
    Fixture {
        z: DMatrix::from_fn(z.nrows(), z.ncols(), |i, j| f64::from(z[(i, j)])),
        y,
        cam: CamMap::new(224, 224, cam.into_raw_vec_and_offset().0).unwrap(),
        grid_design,
        record,
        segmentation: Segmentation::new(224, 224, labels).unwrap(),
        image: image::open(fixture("segmentation/chelsea.png"))
            .unwrap()
            .to_rgb8(),
    }
}

fn relative(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-12)
}

#[test]
fn grid_design_is_bit_identical() {
    let f = load();
    let design = CamLimeMode::Grid
        .design(&f.z, &f.cam, &f.segmentation)
        .unwrap();
    let mut differing = 0;
    for ((i, j), &want) in f.grid_design.indexed_iter() {
        if design[(i, j)].to_bits() != want.to_bits() {
            differing += 1;
        }
    }
    assert_eq!(differing, 0, "{differing} design entries differ");
}

#[test]
fn surrogates_match_lime_for_every_mode_label_and_design() {
    let f = load();
    let weights = kernel(&cosine_distances(&f.z), 0.25);
    let grid = CamLimeMode::Grid
        .design(&f.z, &f.cam, &f.segmentation)
        .unwrap();
    let mut worst = 0.0f64;
    let cases = f.record["explanations"].as_array().unwrap();
    for case in cases {
        let label_index = case["label_index"].as_u64().unwrap() as usize;
        let mode = case["mode"]
            .as_str()
            .unwrap()
            .parse::<FeatureSelection>()
            .unwrap();
        let num_features = case["num_features"].as_u64().unwrap() as usize;
        let design = if case["design"] == "grid" {
            &grid
        } else {
            &f.z
        };
        let target: Vec<f64> =
            f.y.column(label_index)
                .iter()
                .map(|&v| f64::from(v))
                .collect();
        let got =
            explain_label(design, &target, &weights, label_index, mode, num_features).unwrap();
        let context = format!("{} {} label {label_index}", case["design"], case["mode"]);
        let ranked = case["ranked"].as_array().unwrap();
        let want_order: Vec<usize> = ranked
            .iter()
            .map(|p| p[0].as_u64().unwrap() as usize)
            .collect();
        let got_order: Vec<usize> = got.ranked.iter().map(|p| p.0).collect();
        assert_eq!(got_order, want_order, "{context}: feature order");
        for (g, w) in got.ranked.iter().zip(ranked) {
            let err = relative(g.1, w[1].as_f64().unwrap());
            worst = worst.max(err);
            assert!(
                err < 1e-6,
                "{context}: coefficient {} {} vs {}",
                g.0,
                g.1,
                w[1]
            );
        }
        for (name, value) in [
            ("intercept", got.intercept),
            ("score", got.score),
            ("local_pred", got.local_pred),
        ] {
            let want = case[name].as_f64().unwrap();
            assert!(
                relative(value, want) < 1e-6,
                "{context}: {name} {value} vs {want}"
            );
        }
    }
    eprintln!(
        "{} cases, worst coefficient relative error {worst:.2e}",
        cases.len()
    );
}

/// The fixture's perturbed images of sample rows `rows`.
fn perturbed_rows(f: &Fixture, fill: &image::RgbImage, rows: &[usize]) -> Vec<image::RgbImage> {
    rows.iter()
        .map(|&i| {
            let on: Vec<bool> = f.z.row(i).iter().map(|&v| v == 1.0).collect();
            perturbed_image(&f.image, fill, &f.segmentation, &on)
        })
        .collect()
}

#[test]
fn perturbed_images_classify_like_the_reference() {
    let f = load();
    let classifier = bundled("mobilenet_v2");
    let labels: Vec<usize> = f.record["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let fill = fill_image(&f.image, &f.segmentation, HideColor::Value(0));
    let rows = [0usize, 1, 2, 17, 999];
    let images = perturbed_rows(&f, &fill, &rows);
    let probabilities = classifier.probabilities(&images).unwrap();
    let mut worst = 0.0f32;
    for (k, &i) in rows.iter().enumerate() {
        for (c, &label) in labels.iter().enumerate() {
            worst = worst.max((probabilities[(k, label)] - f.y[(i, c)]).abs());
        }
    }
    eprintln!("worst |Δp| {worst:.2e}");
    assert!(worst < 1e-4, "worst probability difference {worst}");
}

/// The samples a device composes from the two preprocessed images are the preprocessed perturbed
/// images, value for value, and their logits are the same.
#[test]
fn composed_samples_are_the_preprocessed_perturbed_images() {
    let f = load();
    let classifier = bundled("mobilenet_v2");
    let preprocessing = &classifier.spec().preprocessing;
    let fill = fill_image(&f.image, &f.segmentation, HideColor::Mean);
    let rows = [0usize, 1, 2, 17, 999];
    let keep = ndarray::Array2::from_shape_fn((rows.len(), f.segmentation.count()), |(k, s)| {
        f.z[(rows[k], s)] == 1.0
    });
    let images = perturbed_rows(&f, &fill, &rows);
    let expected = preprocessing.tensor(&images).unwrap();
    let on = preprocessing
        .tensor(std::slice::from_ref(&f.image))
        .unwrap();
    let off = preprocessing.tensor(std::slice::from_ref(&fill)).unwrap();
    let composed = Composed {
        on: on.index_axis(ndarray::Axis(0), 0),
        off: off.index_axis(ndarray::Axis(0), 0),
        segments: f.segmentation.labels(),
        keep: keep.view(),
    };
    assert_eq!(composed.images().unwrap(), expected);
    let direct = classifier.forward(expected.view(), &[]).unwrap().logits;
    assert_eq!(classifier.forward_composed(&composed).unwrap(), direct);
    let short = ndarray::Array2::from_elem((1, f.segmentation.count() - 1), true);
    let error = Composed {
        keep: short.view(),
        ..composed
    }
    .validate()
    .unwrap_err();
    assert!(error.to_string().contains("without a column"), "{error}");
}
