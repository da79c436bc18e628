//! Parity from the file: every corpus image decodes to Pillow's bytes and preprocesses to
//! torchvision's tensor bit for bit (fixtures from `fixtures/corpus/generate.py`: Pillow 13.0,
//! libjpeg-turbo 3.2, torchvision 0.29).

use std::collections::BTreeMap;

use camlime_core::preprocess::{
    DecodeOptions, ExifOrientation, Interpolation, Normalize, Preprocessing, ResizeMode,
};
use camlime_core::{Manifest, decode_image};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::common::{fixture, manifest};

#[derive(Deserialize)]
struct Expected {
    size: [u32; 2],
    rgb: String,
    rgb_exif_applied: String,
    preprocessed: BTreeMap<String, Hashes>,
}

#[derive(Deserialize)]
struct Hashes {
    base: String,
    tensor: String,
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The preprocessing `generate.py` names `key`.
fn preprocessing(manifest: &Manifest, key: &str) -> Preprocessing {
    let other = |resize, interpolation, crop| Preprocessing {
        resize,
        interpolation,
        crop,
        normalize: Normalize::IMAGENET,
    };
    match key {
        "short_side" => other(
            ResizeMode::ShortSide(256),
            Interpolation::Bilinear,
            [224, 224],
        ),
        "nearest" => other(
            ResizeMode::Exact([256, 256]),
            Interpolation::Nearest,
            [224, 224],
        ),
        "short_side_bicubic_299" => other(
            ResizeMode::ShortSide(342),
            Interpolation::Bicubic,
            [299, 299],
        ),
        model => manifest.model(model).unwrap().preprocessing.clone(),
    }
}

fn corpus() -> BTreeMap<String, Expected> {
    serde_json::from_str(&std::fs::read_to_string(fixture("corpus/expected.json")).unwrap())
        .unwrap()
}

#[test]
fn every_corpus_image_decodes_to_pillows_bytes() {
    let corpus = corpus();
    assert!(corpus.len() >= 29, "only {} corpus files", corpus.len());
    let mut wrong = Vec::new();
    for (name, expected) in &corpus {
        let bytes = std::fs::read(fixture(&format!("corpus/{name}"))).unwrap();
        let image = decode_image(&bytes, &Default::default()).unwrap();
        assert_eq!(
            image.dimensions(),
            (expected.size[0], expected.size[1]),
            "{name}"
        );
        if sha256(image.as_raw()) != expected.rgb {
            wrong.push(name.as_str());
        }
    }
    assert!(
        wrong.is_empty(),
        "decoded differently from Pillow: {wrong:?}"
    );
}

#[test]
fn exif_orientation_is_ignored_as_by_pillow_or_applied_as_by_exif_transpose() {
    let apply = DecodeOptions {
        exif_orientation: ExifOrientation::Apply,
        ..Default::default()
    };
    let (mut wrong, mut turned) = (Vec::new(), 0);
    for (name, expected) in corpus() {
        let bytes = std::fs::read(fixture(&format!("corpus/{name}"))).unwrap();
        let image = decode_image(&bytes, &apply).unwrap();
        if sha256(image.as_raw()) != expected.rgb_exif_applied {
            wrong.push(name.clone());
        }
        turned += usize::from(expected.rgb_exif_applied != expected.rgb);
    }
    assert!(
        wrong.is_empty(),
        "differs from ImageOps.exif_transpose: {wrong:?}"
    );
    assert_eq!(
        turned, 3,
        "the corpus's JPEG, PNG and WebP with orientation tags"
    );
}

#[test]
fn every_corpus_image_preprocesses_to_torchvisions_tensor_bit_for_bit() {
    let manifest = manifest();
    let mut wrong = Vec::new();
    let mut checked = 0;
    for (name, expected) in corpus() {
        let bytes = std::fs::read(fixture(&format!("corpus/{name}"))).unwrap();
        let image = decode_image(&bytes, &Default::default()).unwrap();
        for (key, hashes) in &expected.preprocessed {
            let preprocessing = preprocessing(&manifest, key);
            let base = preprocessing.base_image(&image).unwrap();
            if sha256(base.as_raw()) != hashes.base {
                wrong.push(format!("{name} {key}: resized and cropped image"));
                continue;
            }
            let tensor = preprocessing.tensor(&[base]).unwrap();
            let bytes: Vec<u8> = tensor.iter().flat_map(|v| v.to_le_bytes()).collect();
            if sha256(&bytes) != hashes.tensor {
                wrong.push(format!("{name} {key}: tensor"));
            }
            checked += 1;
        }
    }
    assert!(wrong.is_empty(), "differs from torchvision: {wrong:#?}");
    assert!(checked >= 145, "only {checked} tensors checked");
}
