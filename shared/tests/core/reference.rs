//! Parity with PyTorch + torchvision: preprocessing, logits, activations and predictions of the
//! bundled models on the sample photos (fixtures from `fixtures/reference/generate.py`).

use crate::common::{SAMPLES, bundled, max_abs_diff, models_dir, npy, reference_input, stem};
use camlime_core::{Classifier, Preprocessing, ResizeMode, decode_image};
use tract_onnx::prelude::tract_ndarray::Array4;

const MODELS: [&str; 2] = ["mobilenet_v2", "efficientnet_lite0"];

fn our_tensor(preprocessing: &Preprocessing, sample: &str) -> Array4<f32> {
    let bytes = std::fs::read(models_dir().join("samples").join(sample)).unwrap();
    let image = decode_image(&bytes, &Default::default()).unwrap();
    preprocessing
        .tensor(&[preprocessing.base_image(&image).unwrap()])
        .unwrap()
}

fn top1(model: &Classifier, input: &Array4<f32>) -> camlime_core::Prediction {
    let logits = model.forward(input.view(), &[]).unwrap().logits;
    model.top_k(&logits.row(0).to_vec(), 1).unwrap().remove(0)
}

#[test]
fn preprocessing_matches_torchvision_bit_for_bit() {
    for name in MODELS {
        let model = bundled(name);
        for sample in SAMPLES {
            let ours = our_tensor(&model.spec().preprocessing, sample);
            let reference = reference_input(name, sample, "input");
            assert_eq!(ours.shape(), reference.shape());
            let worst = max_abs_diff(&ours, &reference);
            assert!(worst == 0.0, "{name} {sample}: max |Δ| = {worst}");
        }
    }
}

#[test]
fn short_side_resize_matches_torchvision_too() {
    let model = bundled("mobilenet_v2");
    let preprocessing = Preprocessing {
        resize: ResizeMode::ShortSide(256),
        ..model.spec().preprocessing.clone()
    };
    for sample in SAMPLES {
        let ours = our_tensor(&preprocessing, sample);
        let reference = reference_input("mobilenet_v2", sample, "short_side.input");
        assert_eq!(ours.shape(), reference.shape());
        let worst = max_abs_diff(&ours, &reference);
        assert!(worst == 0.0, "{sample}: max |Δ| = {worst}");
    }
}

#[test]
fn logits_match_pytorch_within_1e_3() {
    for name in MODELS {
        let model = bundled(name);
        for sample in SAMPLES {
            let ours = model
                .forward(reference_input(name, sample, "input").view(), &[])
                .unwrap()
                .logits;
            let worst = max_abs_diff(
                &ours,
                &npy(&format!("reference/{name}/{}.logits.npy", stem(sample))),
            );
            assert!(worst <= 1e-3, "{name} {sample}: max |Δlogit| = {worst}");
        }
    }
}

#[test]
fn features_17_activation_matches_pytorch() {
    let model = bundled("mobilenet_v2");
    let output = model
        .forward(
            reference_input("mobilenet_v2", "chelsea.png", "input").view(),
            &["features.17"],
        )
        .unwrap();
    let ours = &output.activations[0];
    assert_eq!(ours.shape(), &[1, 320, 7, 7]);
    let worst = max_abs_diff(ours, &npy("reference/mobilenet_v2/chelsea.features.17.npy"));
    assert!(worst <= 1e-4, "max |Δ| = {worst}");
}

#[test]
fn mobilenet_v2_reproduces_the_papers_numbers() {
    let model = bundled("mobilenet_v2");
    let chelsea = top1(
        &model,
        &our_tensor(&model.spec().preprocessing, "chelsea.png"),
    );
    assert_eq!(
        (chelsea.class, chelsea.label.as_str()),
        (285, "Egyptian cat")
    );
    assert!(
        (chelsea.probability - 0.7508).abs() <= 0.002,
        "p = {}",
        chelsea.probability
    );
    let coffee = top1(
        &model,
        &our_tensor(&model.spec().preprocessing, "coffee.png"),
    );
    assert_eq!((coffee.class, coffee.label.as_str()), (967, "espresso"));
}

#[test]
fn top1_agrees_with_pytorch_on_every_sample_through_our_own_preprocessing() {
    for name in MODELS {
        let model = bundled(name);
        for sample in SAMPLES {
            let ours = top1(&model, &our_tensor(&model.spec().preprocessing, sample));
            let ours_on_reference_input = top1(&model, &reference_input(name, sample, "input"));
            let reference_logits = npy(&format!("reference/{name}/{}.logits.npy", stem(sample)));
            let pytorch_class = model
                .top_k(reference_logits.as_slice().unwrap(), 1)
                .unwrap()[0]
                .class;
            assert_eq!(ours.class, pytorch_class, "{name} {sample}");
            assert_eq!(
                ours_on_reference_input.class, pytorch_class,
                "{name} {sample}"
            );
        }
    }
}
