//! Parity with PyTorch + torchvision: preprocessing, logits, activations and predictions of the
//! bundled models on the sample photos (fixtures from `fixtures/reference/generate.py`).

#![allow(clippy::unwrap_used)]

mod common;

use camlime_core::decode_image;
use common::{SAMPLES, bundled, models_dir, npy, stem};
use tract_onnx::prelude::tract_ndarray::{Array4, Ix4};

const MODELS: [&str; 2] = ["mobilenet_v2", "efficientnet_lite0"];

fn base_tensor(model: &camlime_core::Classifier, sample: &str) -> Array4<f32> {
    let bytes = std::fs::read(models_dir().join("samples").join(sample)).unwrap();
    let image = decode_image(&bytes, &Default::default()).unwrap();
    let preprocessing = &model.spec().preprocessing;
    preprocessing
        .tensor(&[preprocessing.base_image(&image).unwrap()])
        .unwrap()
}

#[test]
fn preprocessing_matches_torchvision_within_1_over_255_mean_absolute_error() {
    for name in MODELS {
        let model = bundled(name);
        for sample in SAMPLES {
            let ours = base_tensor(&model, sample);
            let reference = npy(&format!("reference/{name}/{}.input.npy", stem(sample)));
            assert_eq!(ours.shape(), reference.shape());
            let n = ours.len() as f32;
            let mae = ours
                .iter()
                .zip(reference.iter())
                .map(|(a, b)| (a - b).abs())
                .sum::<f32>()
                / n;
            let level = 1.0 / 255.0;
            println!("{name} {sample}: mean absolute error {mae:.2e}");
            assert!(
                mae <= level,
                "{name} {sample}: mean absolute error {mae} > {level}"
            );
        }
    }
}

#[test]
fn logits_match_pytorch_within_1e_3() {
    for name in MODELS {
        let model = bundled(name);
        for sample in SAMPLES {
            let input = npy(&format!("reference/{name}/{}.input.npy", stem(sample)))
                .into_dimensionality::<Ix4>()
                .unwrap();
            let reference = npy(&format!("reference/{name}/{}.logits.npy", stem(sample)));
            let ours = model.forward(input.view(), &[]).unwrap().logits;
            let worst = ours
                .iter()
                .zip(reference.iter())
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(worst <= 1e-3, "{name} {sample}: max |Δlogit| = {worst}");
        }
    }
}

#[test]
fn features_17_activation_matches_pytorch() {
    let model = bundled("mobilenet_v2");
    let input = npy("reference/mobilenet_v2/chelsea.input.npy")
        .into_dimensionality::<Ix4>()
        .unwrap();
    let reference = npy("reference/mobilenet_v2/chelsea.features.17.npy");
    let output = model.forward(input.view(), &["features.17"]).unwrap();
    let ours = &output.activations[0];
    assert_eq!(ours.shape(), &[1, 320, 7, 7]);
    let worst = ours
        .iter()
        .zip(reference.iter())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(worst <= 1e-4, "max |Δ| = {worst}");
}

#[test]
fn mobilenet_v2_reproduces_the_papers_numbers() {
    let model = bundled("mobilenet_v2");
    let chelsea = model
        .top_k(
            model
                .forward(base_tensor(&model, "chelsea.png").view(), &[])
                .unwrap()
                .logits
                .row(0)
                .as_slice()
                .unwrap(),
            3,
        )
        .unwrap();
    assert_eq!(
        (chelsea[0].class, chelsea[0].label.as_str()),
        (285, "Egyptian cat")
    );
    assert!(
        (chelsea[0].probability - 0.7508).abs() <= 0.002,
        "p = {}",
        chelsea[0].probability
    );
    let coffee = model
        .top_k(
            model
                .forward(base_tensor(&model, "coffee.png").view(), &[])
                .unwrap()
                .logits
                .row(0)
                .as_slice()
                .unwrap(),
            1,
        )
        .unwrap();
    assert_eq!(
        (coffee[0].class, coffee[0].label.as_str()),
        (967, "espresso")
    );
}

#[test]
fn top1_agrees_with_pytorch_on_every_sample_through_our_own_preprocessing() {
    for name in MODELS {
        let model = bundled(name);
        for sample in SAMPLES {
            let ours = model
                .forward(base_tensor(&model, sample).view(), &[])
                .unwrap()
                .logits;
            let reference = npy(&format!("reference/{name}/{}.logits.npy", stem(sample)));
            let argmax = |values: &mut dyn Iterator<Item = f32>| {
                values
                    .enumerate()
                    .fold(
                        (0, f32::MIN),
                        |best, (i, v)| if v > best.1 { (i, v) } else { best },
                    )
                    .0
            };
            assert_eq!(
                argmax(&mut ours.iter().copied()),
                argmax(&mut reference.iter().copied()),
                "{name} {sample}"
            );
        }
    }
}
