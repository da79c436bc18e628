//! The classifier's contract: layers, batching, manifest integrity and clean errors.

#![allow(clippy::unwrap_used)]

mod common;

use camlime_core::{Classifier, Error, ModelSpec};
use common::{bundled, manifest, max_abs_diff, models_dir, npy};
use sha2::{Digest, Sha256};
use tract_onnx::prelude::tract_ndarray::{Array4, Axis, Ix4, concatenate};

#[test]
fn manifest_hashes_match_the_committed_files() {
    let manifest = manifest();
    assert_eq!(manifest.models.len(), 2);
    for entry in &manifest.models {
        let bytes = std::fs::read(models_dir().join(&entry.file)).unwrap();
        assert_eq!(
            format!("{:x}", Sha256::digest(&bytes)),
            entry.sha256,
            "{}",
            entry.file
        );
    }
    for sample in &manifest.samples {
        let bytes = std::fs::read(models_dir().join(&sample.file)).unwrap();
        assert_eq!(
            format!("{:x}", Sha256::digest(&bytes)),
            sample.sha256,
            "{}",
            sample.file
        );
    }
}

#[test]
fn mobilenet_v2_offers_its_pytorch_module_paths() {
    let model = bundled("mobilenet_v2");
    let names: Vec<_> = model.layers().iter().map(|l| l.name.as_str()).collect();
    let expected: Vec<String> = (0..=18).map(|i| format!("features.{i}")).collect();
    assert_eq!(names, expected);
    assert_eq!(model.layer("features.17").unwrap().shape, [320, 7, 7]);
    assert_eq!(model.layer("features.18").unwrap().shape, [1280, 7, 7]);
    assert_eq!(model.layer("features.0").unwrap().shape, [32, 112, 112]);
    assert_eq!(model.default_layers(), ["features.17"]);
    assert_eq!(model.num_classes(), 1000);
    assert_eq!(model.labels()[285], "Egyptian cat");
    // Any 4-D tensor is reachable by its ONNX name too.
    assert_eq!(
        model.layer("features.17.conv.1").unwrap().shape,
        [960, 7, 7]
    );
}

#[test]
fn efficientnet_lite0_offers_its_blocks() {
    let model = bundled("efficientnet_lite0");
    assert_eq!(model.layer("_blocks.15").unwrap().shape, [320, 7, 7]);
    assert_eq!(model.layer("head").unwrap().shape, [1280, 7, 7]);
    assert_eq!(model.layer("stem").unwrap().shape, [32, 112, 112]);
    assert_eq!(model.default_layers(), ["_blocks.15"]);
}

#[test]
fn a_user_model_gets_discovered_layers_and_a_default_before_pooling() {
    let bytes = std::fs::read(models_dir().join("mobilenet_v2.onnx")).unwrap();
    let model = Classifier::new(&bytes, ModelSpec::user_model("mine")).unwrap();
    // No readable names: layers are the 4-D tensors, the default is the last spatial one.
    assert_eq!(model.default_layers(), ["features.18"]);
    assert!(model.layers().len() > 60, "{} layers", model.layers().len());
    assert!(model.layers().iter().all(|l| l.name == l.tensor));
    assert_eq!(model.labels()[0], "class 0");
}

#[test]
fn batches_give_the_same_results_as_single_images() {
    let chelsea = npy("reference/mobilenet_v2/chelsea.input.npy")
        .into_dimensionality::<Ix4>()
        .unwrap();
    let coffee = npy("reference/mobilenet_v2/coffee.input.npy")
        .into_dimensionality::<Ix4>()
        .unwrap();
    let batch: Array4<f32> =
        concatenate(Axis(0), &[chelsea.view(), coffee.view(), chelsea.view()]).unwrap();
    let single = bundled("mobilenet_v2");
    let batched = bundled("mobilenet_v2").with_batch_size(2).unwrap();
    let one = single.forward(batch.view(), &["features.17"]).unwrap();
    let many = batched.forward(batch.view(), &["features.17"]).unwrap();
    assert_eq!(many.logits.dim(), (3, 1000));
    assert_eq!(many.activations[0].shape(), &[3, 320, 7, 7]);
    let worst = max_abs_diff(&one.logits, &many.logits);
    assert!(worst < 1e-4, "max |Δlogit| between batch sizes = {worst}");
    let worst = max_abs_diff(&one.activations[0], &many.activations[0]);
    assert!(
        worst < 1e-4,
        "max |Δactivation| between batch sizes = {worst}"
    );
    // Rows 0 and 2 are the same image.
    assert!(max_abs_diff(many.logits.row(0), many.logits.row(2)) < 1e-4);
}

#[test]
fn bad_models_and_requests_are_clean_errors() {
    assert!(matches!(
        Classifier::new(b"definitely not onnx", ModelSpec::user_model("x")),
        Err(Error::Model(_))
    ));
    assert!(matches!(
        Classifier::new(&[], ModelSpec::user_model("x")),
        Err(Error::Model(_))
    ));
    let bytes = std::fs::read(models_dir().join("mobilenet_v2.onnx")).unwrap();
    let truncated = &bytes[..bytes.len() / 3];
    assert!(Classifier::new(truncated, ModelSpec::user_model("x")).is_err());
    let wrong_labels = ModelSpec {
        labels: vec!["a".into(), "b".into()],
        ..ModelSpec::user_model("x")
    };
    assert!(matches!(
        Classifier::new(&bytes, wrong_labels),
        Err(Error::Model(_))
    ));

    let model = bundled("mobilenet_v2");
    let input = Array4::<f32>::zeros((1, 3, 224, 224));
    match model.forward(input.view(), &["features.99"]) {
        Err(Error::UnknownLayer { name, available }) => {
            assert_eq!(name, "features.99");
            assert!(available.contains("features.17"));
        }
        other => panic!("expected an unknown-layer error, got {other:?}"),
    }
    let wrong_size = Array4::<f32>::zeros((1, 3, 100, 224));
    assert!(matches!(
        model.forward(wrong_size.view(), &[]),
        Err(Error::Parameter(_))
    ));
    let empty = Array4::<f32>::zeros((0, 3, 224, 224));
    assert!(matches!(
        model.forward(empty.view(), &[]),
        Err(Error::Parameter(_))
    ));
    assert!(matches!(
        model.top_k(&[1.0, 2.0], 0),
        Err(Error::Parameter(_))
    ));
    assert!(bundled("mobilenet_v2").with_batch_size(0).is_err());
}

#[test]
fn top_k_is_sorted_and_probabilities_sum_to_one() {
    let model = bundled("mobilenet_v2");
    let logits = npy("reference/mobilenet_v2/rocket.logits.npy");
    let all = model.top_k(logits.as_slice().unwrap(), 1000).unwrap();
    assert_eq!(all.len(), 1000);
    assert!(all.windows(2).all(|w| w[0].probability >= w[1].probability));
    let total: f32 = all.iter().map(|p| p.probability).sum();
    assert!((total - 1.0).abs() < 1e-4, "Σp = {total}");
    assert_eq!(
        model.top_k(logits.as_slice().unwrap(), 5000).unwrap().len(),
        1000
    );
}

#[test]
fn probabilities_of_images_are_a_distribution_led_by_the_predicted_class() {
    let model = bundled("mobilenet_v2");
    let bytes = std::fs::read(models_dir().join("samples/coffee.png")).unwrap();
    let image = camlime_core::decode_image(&bytes, &Default::default()).unwrap();
    let base = model.spec().preprocessing.base_image(&image).unwrap();
    let probabilities = model.probabilities(&[base.clone(), base.clone()]).unwrap();
    assert_eq!(probabilities.dim(), (2, 1000));
    for row in probabilities.rows() {
        assert!((row.sum() - 1.0).abs() < 1e-4, "Σp = {}", row.sum());
        assert!(row.iter().all(|p| (0.0..=1.0).contains(p)));
    }
    let top = &model.predict(&[base], 1).unwrap()[0][0];
    assert_eq!(top.class, 967);
    assert!((probabilities[[0, 967]] - top.probability).abs() < 1e-6);
}
