//! Parity from the file, as a user meets it: each image file goes through our decoder and
//! preprocessing into the model, every CAM method, the input attributions and the segmenters, and
//! is compared with what Pillow + torchvision + pytorch-grad-cam 1.5.5 / captum 0.9 /
//! scikit-image 0.26 make of the same file (fixtures: `fixtures/endtoend/generate.py`).
//! Bounds: maps Pearson ≥ 0.999 and max |Δ| ≤ 1e-3 unless our stability estimate flags the map
//! unstable, and never more than twice pytorch-grad-cam's own float32-vs-float64 spread
//! (recorded per map) where that is larger; segmentations ARI ≥ 0.99;
//! top-1 class equal and probability within 1e-4; attributions as in `attribution.rs`.

use std::collections::BTreeMap;

use camlime_core::cam::{AblationValue, CamMethod, compute};
use camlime_core::segment::{FelzenszwalbConfig, SlicConfig};
use camlime_core::{Classifier, ExplainConfig, SegmenterConfig, Sequential, decode_image};
use image::RgbImage;
use serde::Deserialize;

use crate::attribution::{CAPTUM_CASES, captum_case};
use crate::common::{adjusted_rand_index, bundled, fixture, map_agreement, models_dir, png16_map};

/// As `generate.py` lists them.
const CAM_FILES: [&str; 7] = [
    "rocket.jpg",
    "retina_420.jpg",
    "hubble_422_progressive.jpg",
    "chelsea_grey.jpg",
    "astronaut_cmyk.jpg",
    "samples/chelsea.png",
    "samples/coffee.png",
];
const SLOW_FILES: [&str; 2] = ["rocket.jpg", "samples/chelsea.png"];

fn read(name: &str) -> Vec<u8> {
    let path = match name.strip_prefix("samples/") {
        Some(sample) => models_dir().join("samples").join(sample),
        None => fixture(&format!("corpus/{name}")),
    };
    std::fs::read(path).unwrap()
}

/// The model's base image of a file, through our decoder and preprocessing.
fn base(classifier: &Classifier, name: &str) -> RgbImage {
    let image = decode_image(&read(name), &Default::default()).unwrap();
    classifier.spec().preprocessing.base_image(&image).unwrap()
}

fn stem(name: &str) -> String {
    name.replace('/', "_")
}

#[derive(Deserialize)]
struct Top {
    class: usize,
    p: f64,
}

#[test]
fn top_class_and_probability_from_every_file_match_pytorch() {
    let predictions: BTreeMap<String, BTreeMap<String, Top>> = serde_json::from_str(
        &std::fs::read_to_string(fixture("endtoend/predictions.json")).unwrap(),
    )
    .unwrap();
    assert!(predictions.len() >= 30, "{} files", predictions.len());
    let mut worst = 0.0f64;
    for model in ["mobilenet_v2", "efficientnet_lite0"] {
        let classifier = bundled(model);
        for (name, tops) in &predictions {
            let base = base(&classifier, name);
            let input = classifier.spec().preprocessing.tensor(&[base]).unwrap();
            let logits = classifier.forward(input.view(), &[]).unwrap().logits;
            let top = classifier
                .top_k(&logits.row(0).to_vec(), 1)
                .unwrap()
                .remove(0);
            let reference = &tops[model];
            assert_eq!(top.class, reference.class, "{model} {name}");
            let difference = (f64::from(top.probability) - reference.p).abs();
            worst = worst.max(difference);
            assert!(difference <= 1e-4, "{model} {name}: |Δp| = {difference}");
        }
    }
    eprintln!("top-1 probabilities: worst |Δp| {worst:.2e}");
}

#[test]
fn every_cam_from_the_file_matches_pytorch_grad_cam() {
    let classifier = bundled("mobilenet_v2");
    let mut config = ExplainConfig::default();
    config.cam.layers = vec!["features.17".into()];
    // pytorch-grad-cam's AblationCAM sets an ablated channel to its own value, not zero.
    config.cam.ablation = AblationValue::PytorchGradCam;
    let conditioning: BTreeMap<String, BTreeMap<String, f32>> = serde_json::from_str(
        &std::fs::read_to_string(fixture("endtoend/conditioning.json")).unwrap(),
    )
    .unwrap();
    let (mut worst, mut maps, mut flagged) = ((1.0f64, 0.0f32), 0, 0);
    for name in CAM_FILES {
        let base = base(&classifier, name);
        let methods = CamMethod::ALL.into_iter().filter(|m| {
            m.uses_gradients()
                || *m == CamMethod::EigenCam
                || SLOW_FILES.contains(&name)
                    && matches!(m, CamMethod::ScoreCam | CamMethod::AblationCam)
        });
        for method in methods {
            let ours = compute(&classifier, &base, method, &config, &Sequential).unwrap();
            let reference = png16_map(&format!("endtoend/{}.{}.png", stem(name), method.name()));
            let (pearson, max_abs) = map_agreement(&ours.map, &reference);
            let spread = conditioning[name][method.name()];
            let estimate = ours.stability.as_ref().map_or(f32::NAN, |s| s.sensitivity);
            let unstable = ours.stability.as_ref().is_some_and(|s| s.is_unstable());
            eprintln!(
                "{name} {}: pearson {pearson:.6} max|Δ| {max_abs:.2e} (pytorch-grad-cam f32/f64 \
                 spread {spread:.1e}; our stability estimate {estimate:.1e}{})",
                method.name(),
                if unstable { ", unstable" } else { "" }
            );
            assert!(
                pearson >= 0.999,
                "{name} {}: pearson {pearson}",
                method.name()
            );
            // Within 1e-3, or flagged unstable by our own estimate; never further than twice
            // the reference's own float32-vs-float64 spread.
            assert!(
                max_abs <= 1e-3 || unstable,
                "{name} {}: max |Δ| {max_abs} and not flagged unstable",
                method.name()
            );
            assert!(
                max_abs <= 1e-3f32.max(2.0 * spread),
                "{name} {}: max |Δ| {max_abs}",
                method.name()
            );
            flagged += usize::from(unstable);
            worst = (worst.0.min(pearson), worst.1.max(max_abs));
            maps += 1;
        }
    }
    eprintln!(
        "{maps} maps: worst pearson {:.6}, worst max|Δ| {:.2e}, {flagged} flagged unstable",
        worst.0, worst.1
    );
    assert_eq!(maps, 7 * 9 + 2 * 2);
    // The estimate flags the fragile maps, not every map.
    assert!(flagged <= 5, "{flagged} maps flagged unstable");
}

#[test]
fn input_attributions_from_the_file_match_captum() {
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("endtoend/attribution/summary.json")).unwrap(),
    )
    .unwrap();
    let classifier = bundled("mobilenet_v2");
    let base = base(&classifier, summary["file"].as_str().unwrap());
    let input = classifier.spec().preprocessing.tensor(&[base]).unwrap();
    for case in CAPTUM_CASES {
        captum_case("endtoend/attribution", input.view(), case);
    }
}

#[test]
fn segmenters_from_the_file_match_scikit_image() {
    let classifier = bundled("mobilenet_v2");
    for name in CAM_FILES {
        let base = base(&classifier, name);
        for segmenter in ["quickshift", "slic", "felzenszwalb"] {
            let ours = match segmenter {
                "quickshift" => SegmenterConfig::default().segment(&base, 7).unwrap(),
                "slic" => SlicConfig::default().segment(&base).unwrap(),
                _ => FelzenszwalbConfig::default().segment(&base).unwrap(),
            };
            let reference: Vec<u32> =
                image::open(fixture(&format!("endtoend/{}.{segmenter}.png", stem(name))))
                    .unwrap()
                    .to_luma16()
                    .into_raw()
                    .into_iter()
                    .map(u32::from)
                    .collect();
            let ari = adjusted_rand_index(ours.labels(), &reference);
            eprintln!("{name} {segmenter}: ARI {ari:.4}");
            assert!(ari >= 0.99, "{name} {segmenter}: ARI {ari}");
        }
    }
}
