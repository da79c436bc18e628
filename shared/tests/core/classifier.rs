//! The classifier's contract: layers, batching, manifest integrity and clean errors.

use crate::common::{bundled, manifest, models_dir, npy};
use camlime_core::engine::EngineChoice;
use camlime_core::{Classifier, Error, ModelSpec, decode_image};
use prost::Message;
use sha2::{Digest, Sha256};
use tract_onnx::pb::ModelProto;
use tract_onnx::prelude::tract_ndarray::{Array4, Axis, Ix4, concatenate};

#[test]
fn manifest_hashes_match_the_committed_files() {
    let manifest = manifest();
    assert_eq!(manifest.models.len(), 7);
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
    // The lowered plan runs every image alone on the same shapes: identical bits.
    assert_eq!(single.engine_report().forward, "cnn");
    assert_eq!(one.logits, many.logits);
    assert_eq!(one.activations, many.activations);
    // Rows 0 and 2 are the same image.
    assert_eq!(many.logits.row(0), many.logits.row(2));
}

/// The bundled models' samples, preprocessed as the model wants them.
fn samples(classifier: &Classifier) -> Array4<f32> {
    let images: Vec<_> = manifest()
        .samples
        .iter()
        .map(|sample| {
            let bytes = std::fs::read(models_dir().join(&sample.file)).unwrap();
            let image = decode_image(&bytes, &Default::default()).unwrap();
            classifier.spec().preprocessing.base_image(&image).unwrap()
        })
        .collect();
    classifier.spec().preprocessing.tensor(&images).unwrap()
}

/// max |a − b| over max(1, max |b|).
fn relative_gap<'a>(
    a: impl IntoIterator<Item = &'a f32>,
    b: impl IntoIterator<Item = &'a f32> + Clone,
) -> f32 {
    let scale = b.clone().into_iter().fold(1f32, |m, v| m.max(v.abs()));
    a.into_iter()
        .zip(b)
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()))
        / scale
}

#[test]
fn the_lowered_plan_matches_tract_on_every_sample_and_layer() {
    for name in ["mobilenet_v2", "efficientnet_lite0"] {
        let ours = bundled(name);
        assert_eq!(ours.engine_report().forward, "cnn", "{name}");
        assert!(ours.engine_report().declined.is_empty());
        let tract = bundled(name)
            .with_engine_choice(EngineChoice::Named("tract".into()))
            .unwrap();
        assert_eq!(tract.engine_report().forward, "tract");
        let input = samples(&ours);
        let layers: Vec<&str> = ours.layers().iter().map(|l| l.name.as_str()).collect();
        let a = ours.forward(input.view(), &layers).unwrap();
        let b = tract.forward(input.view(), &layers).unwrap();
        let gap = relative_gap(&a.logits, &b.logits);
        eprintln!(
            "{name}: logits within {gap:.1e} of tract ({} samples)",
            input.dim().0
        );
        assert!(gap < 1e-4, "{name}: logits differ by {gap}");
        for (layer, (x, y)) in layers.iter().zip(a.activations.iter().zip(&b.activations)) {
            assert_eq!(x.shape(), y.shape(), "{name} {layer}");
            let gap = relative_gap(x, y);
            assert!(gap < 1e-4, "{name} {layer}: activations differ by {gap}");
        }
        // The tail from the default layer (Ablation-CAM's) agrees too.
        let layer = &ours.default_layers()[0];
        let index = layers.iter().position(|l| l == layer).unwrap();
        let activation = a.activations[index]
            .view()
            .into_dimensionality::<Ix4>()
            .unwrap();
        let tail = ours.tail(layer, 2).unwrap().logits(activation).unwrap();
        let gap = relative_gap(&tail, &b.logits);
        assert!(gap < 1e-4, "{name}: tail logits differ by {gap}");
    }
}

/// MobileNetV2 with one op changed to one the lowered plan lacks (Softplus, which tract runs).
fn with_softplus() -> Vec<u8> {
    let bytes = std::fs::read(models_dir().join("mobilenet_v2.onnx")).unwrap();
    let mut proto = ModelProto::decode(bytes.as_slice()).unwrap();
    let graph = proto.graph.as_mut().unwrap();
    let clip = graph.node.iter_mut().find(|n| n.op_type == "Clip").unwrap();
    clip.op_type = "Softplus".into();
    clip.input.truncate(1);
    proto.encode_to_vec()
}

#[test]
fn an_op_the_plan_lacks_sends_the_graph_to_tract_with_the_reason() {
    let model = Classifier::new(&with_softplus(), ModelSpec::user_model("softplus")).unwrap();
    let report = model.engine_report();
    assert_eq!(report.forward, "tract");
    assert_eq!(report.declined.len(), 1);
    assert!(
        report.declined[0].starts_with("cnn: Softplus node `features.0`"),
        "{report}"
    );
    let input = Array4::<f32>::zeros((1, 3, 224, 224));
    assert_eq!(
        model.forward(input.view(), &[]).unwrap().logits.dim(),
        (1, 1000)
    );
    // Asking for the lowered plan by name is an error that names the op, not a silent detour.
    let strict = Classifier::new(&with_softplus(), ModelSpec::user_model("softplus"))
        .unwrap()
        .with_engine_choice(EngineChoice::Named("cnn".into()));
    match strict {
        Err(Error::Unsupported(reason)) => assert!(reason.contains("Softplus"), "{reason}"),
        other => panic!("expected an unsupported-op error, got {other:?}"),
    }
    assert!(matches!(
        bundled("mobilenet_v2").with_engine_choice(EngineChoice::Named("gpu9".into())),
        Err(Error::Parameter(_))
    ));
}

/// A change to a model's proto.
type Edit = fn(&mut ModelProto);

#[test]
fn ill_shaped_models_are_refused_without_panicking() {
    let bytes = std::fs::read(models_dir().join("mobilenet_v2.onnx")).unwrap();
    let original = ModelProto::decode(bytes.as_slice()).unwrap();
    let edits: [(&str, Edit); 3] = [
        ("conv weights of the wrong channel count", |proto| {
            let graph = proto.graph.as_mut().unwrap();
            let weight = graph
                .initializer
                .iter_mut()
                .find(|t| t.name == "features.1.conv.1.weight")
                .unwrap();
            weight.dims[1] = 2;
            weight.dims[0] /= 2;
        }),
        ("a node reading a tensor nobody makes", |proto| {
            let graph = proto.graph.as_mut().unwrap();
            graph.node[3].input[0] = "nowhere".into();
        }),
        ("a Gemm whose weights do not fit", |proto| {
            let graph = proto.graph.as_mut().unwrap();
            let weight = graph
                .initializer
                .iter_mut()
                .find(|t| t.name == "classifier.1.weight")
                .unwrap();
            weight.dims = vec![1000, 640, 2];
        }),
    ];
    for (what, edit) in edits {
        let mut proto = original.clone();
        edit(&mut proto);
        let result = Classifier::new(&proto.encode_to_vec(), ModelSpec::user_model("bad"));
        assert!(result.is_err(), "{what}: accepted");
    }
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
