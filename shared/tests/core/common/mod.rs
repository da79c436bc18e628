//! Shared helpers of the core's integration tests: the repository's models and fixtures.

#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use camlime_core::{Classifier, Manifest};
use ndarray_npy::ReadNpyExt;
use tract_onnx::prelude::tract_ndarray::ArrayD;

/// The repository's `models/` folder.
pub fn models_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models")
}

/// A fixture file under `tests/fixtures/`.
pub fn fixture(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(relative)
}

/// The bundled manifest.
pub fn manifest() -> Manifest {
    Manifest::from_json(&std::fs::read_to_string(models_dir().join("manifest.json")).unwrap())
        .unwrap()
}

/// A bundled classifier by name.
pub fn bundled(name: &str) -> Classifier {
    let manifest = manifest();
    let entry = manifest.model(name).unwrap();
    let labels = std::fs::read_to_string(models_dir().join(&entry.labels)).unwrap();
    let bytes = std::fs::read(models_dir().join(&entry.file)).unwrap();
    Classifier::new(&bytes, entry.spec(&labels).unwrap()).unwrap()
}

/// A 16-bit PNG fixture map (value × 65535) as a CAM map.
pub fn png16_map(relative: &str) -> camlime_core::cam::CamMap {
    let levels = image::open(fixture(relative)).unwrap().to_luma16();
    let (width, height) = levels.dimensions();
    let values = levels.iter().map(|&v| f32::from(v) / 65535.0).collect();
    camlime_core::cam::CamMap::new(height as usize, width as usize, values).unwrap()
}

/// Pearson correlation and largest absolute difference of two maps.
pub fn map_agreement(
    ours: &camlime_core::cam::CamMap,
    reference: &camlime_core::cam::CamMap,
) -> (f64, f32) {
    (
        ours.pearson(reference).unwrap(),
        max_abs_diff(ours.values(), reference.values()),
    )
}

/// A `.npy` reference array.
pub fn npy(relative: &str) -> ArrayD<f32> {
    let file = std::fs::File::open(fixture(relative)).unwrap();
    ArrayD::<f32>::read_npy(file).unwrap()
}

/// The sample photos the reference fixtures cover.
pub const SAMPLES: [&str; 5] = [
    "chelsea.png",
    "coffee.png",
    "astronaut.png",
    "rocket.jpg",
    "motorcycle_left.png",
];

/// File stem of a sample.
pub fn stem(sample: &str) -> &str {
    sample.split('.').next().unwrap()
}

/// Absolute element-wise differences of two sequences of equal, non-zero length (else a panic:
/// a shape mismatch must fail a test, not be truncated away by `zip`).
fn abs_diffs<'a>(
    a: impl IntoIterator<Item = &'a f32>,
    b: impl IntoIterator<Item = &'a f32>,
) -> Vec<f32> {
    let (a, b): (Vec<f32>, Vec<f32>) = (
        a.into_iter().copied().collect(),
        b.into_iter().copied().collect(),
    );
    assert_eq!(a.len(), b.len(), "compared arrays differ in size");
    assert!(!a.is_empty(), "compared arrays are empty");
    a.iter().zip(&b).map(|(x, y)| (x - y).abs()).collect()
}

/// Largest absolute element-wise difference.
pub fn max_abs_diff<'a>(
    a: impl IntoIterator<Item = &'a f32>,
    b: impl IntoIterator<Item = &'a f32>,
) -> f32 {
    abs_diffs(a, b).into_iter().fold(0.0, f32::max)
}

/// Mean absolute element-wise difference.
pub fn mean_abs_diff<'a>(
    a: impl IntoIterator<Item = &'a f32>,
    b: impl IntoIterator<Item = &'a f32>,
) -> f32 {
    let diffs = abs_diffs(a, b);
    (diffs.iter().map(|&d| f64::from(d)).sum::<f64>() / diffs.len() as f64) as f32
}

/// The reference's preprocessed input tensor of a sample (`variant` "input" or "short_side.input").
pub fn reference_input(
    model: &str,
    sample: &str,
    variant: &str,
) -> tract_onnx::prelude::tract_ndarray::Array4<f32> {
    npy(&format!("reference/{model}/{}.{variant}.npy", stem(sample)))
        .into_dimensionality()
        .unwrap()
}

/// scikit-image's labels for a sample's base image (`fixtures/segmentation/<stem>.<segmenter>.png`,
/// 16-bit).
pub fn reference_labels(stem: &str, segmenter: &str) -> Vec<u32> {
    image::open(fixture(&format!("segmentation/{stem}.{segmenter}.png")))
        .unwrap()
        .to_luma16()
        .into_raw()
        .into_iter()
        .map(u32::from)
        .collect()
}

/// splitmix64 uniforms through Box–Muller, as the fixture scripts' `shared_normal`.
pub fn shared_normal(seed: u64, count: usize) -> Vec<f64> {
    let mut state = seed;
    let mut next = || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut out = Vec::with_capacity(count + 1);
    while out.len() < count {
        let u1 = (next() >> 11) as f64 * 2f64.powi(-53);
        let u2 = (next() >> 11) as f64 * 2f64.powi(-53);
        let r = (-2.0 * (1.0 - u1).ln()).sqrt();
        out.push(r * (2.0 * std::f64::consts::PI * u2).cos());
        out.push(r * (2.0 * std::f64::consts::PI * u2).sin());
    }
    out.truncate(count);
    out
}

/// Adjusted Rand index of two labelings (Hubert & Arabie), as scikit-learn computes it.
pub fn adjusted_rand_index(a: &[u32], b: &[u32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let (na, nb) = (
        *a.iter().max().unwrap() as usize + 1,
        *b.iter().max().unwrap() as usize + 1,
    );
    let mut table = vec![0u64; na * nb];
    for (&x, &y) in a.iter().zip(b) {
        table[x as usize * nb + y as usize] += 1;
    }
    let pairs = |n: u64| (n * n.saturating_sub(1) / 2) as f64;
    let sum_cells: f64 = table.iter().map(|&n| pairs(n)).sum();
    let rows: f64 = (0..na)
        .map(|i| pairs(table[i * nb..(i + 1) * nb].iter().sum()))
        .sum();
    let cols: f64 = (0..nb)
        .map(|j| pairs((0..na).map(|i| table[i * nb + j]).sum()))
        .sum();
    let expected = rows * cols / pairs(a.len() as u64);
    (sum_cells - expected) / (0.5 * (rows + cols) - expected)
}

/// A bundled sample photo as `model`'s base image (decoded from the file, preprocessed).
pub fn sample_base(model: &Classifier, photo: &str) -> image::RgbImage {
    let bytes = std::fs::read(models_dir().join("samples").join(photo)).unwrap();
    let image = camlime_core::decode_image(&bytes, &Default::default()).unwrap();
    model.spec().preprocessing.base_image(&image).unwrap()
}

/// LIME as a fixture recorded it (`lime` section of its JSON, the design in `design_npy`): the
/// reference's segments and design composed into samples on `base` (black fill), scored by
/// `model` as LIME scores them (a classifier's probability of `label`, a head's value), the
/// surrogate fitted as `lime` does (kernel width 0.25, `auto`). Returns our scores, the
/// reference's, and our explanation.
pub fn lime_on_reference_samples(
    model: &Classifier,
    base: &image::RgbImage,
    lime: &serde_json::Value,
    design_npy: &str,
    label: usize,
) -> (Vec<f64>, Vec<f64>, camlime_core::lime::LabelExplanation) {
    use camlime_core::engine::Composed;
    use camlime_core::lime::{HideColor, cosine_distances, explain_label, fill_image, kernel};
    use camlime_core::ndarray::{Array2, Axis};

    let [height, width] = model.input_size();
    let runs: Vec<u32> = serde_json::from_value(lime["runs"].clone()).unwrap();
    let segmentation = camlime_core::Segmentation::from_runs(height, width, &runs).unwrap();
    assert_eq!(
        segmentation.count() as u64,
        lime["segments"].as_u64().unwrap()
    );
    let z = Array2::<i8>::read_npy(std::fs::File::open(fixture(design_npy)).unwrap()).unwrap();
    let preprocessing = &model.spec().preprocessing;
    let on = preprocessing.tensor(std::slice::from_ref(base)).unwrap();
    let black = fill_image(base, &segmentation, HideColor::Value(0));
    let off = preprocessing.tensor(std::slice::from_ref(&black)).unwrap();
    let keep = z.mapv(|v| v != 0);
    let composed = Composed {
        on: on.index_axis(Axis(0), 0),
        off: off.index_axis(Axis(0), 0),
        segments: segmentation.labels(),
        keep: keep.view(),
    };
    let scores: Vec<f64> = model
        .forward_composed(&composed)
        .unwrap()
        .rows()
        .into_iter()
        .map(|row| f64::from(model.lime_values(&row.to_vec())[label]))
        .collect();
    let theirs: Vec<f64> = serde_json::from_value(lime["scores"].clone()).unwrap();
    let design =
        camlime_core::nalgebra::DMatrix::from_fn(z.nrows(), z.ncols(), |i, j| f64::from(z[(i, j)]));
    let weights = kernel(&cosine_distances(&design), 0.25);
    let explanation = explain_label(
        &design,
        &scores,
        &weights,
        0,
        camlime_core::surrogate::FeatureSelection::Auto,
        100_000,
    )
    .unwrap();
    (scores, theirs, explanation)
}

/// EigenCAM, Grad-CAM, HiResCAM and LayerCAM of `model` on `base` (`config`: layers, target)
/// against pytorch-grad-cam's maps `{prefix}.{method}.png`: Pearson ≥ 0.999, max |Δ| ≤ `max_abs`.
pub fn assert_task_cams_match(
    model: &Classifier,
    base: &image::RgbImage,
    config: &camlime_core::ExplainConfig,
    prefix: &str,
    max_abs: f32,
) {
    use camlime_core::cam::{CamMethod, compute};
    for method in [
        CamMethod::EigenCam,
        CamMethod::GradCam,
        CamMethod::HiResCam,
        CamMethod::LayerCam,
    ] {
        let ours = compute(model, base, method, config, &camlime_core::Sequential).unwrap();
        let name = format!("{prefix}.{}.png", method.name());
        let (pearson, worst) = map_agreement(&ours.map, &png16_map(&name));
        eprintln!("{name}: pearson {pearson:.6} max|Δ| {worst:.2e}");
        assert!(pearson >= 0.999, "{name}: pearson {pearson}");
        assert!(worst <= max_abs, "{name}: max |Δ| {worst}");
    }
}

/// A fitted LIME surrogate agrees with the fixture's (`lime` section): intercept and every ranked
/// feature, in order, with weights `close` to the reference's. (R² and the local prediction
/// each test checks at its own scale.)
pub fn assert_surrogate_matches(
    ours: &camlime_core::lime::LabelExplanation,
    lime: &serde_json::Value,
    close: impl Fn(f64, f64) -> bool,
) {
    let intercept = lime["intercept"].as_f64().unwrap();
    assert!(
        close(ours.intercept, intercept),
        "intercept {} vs {intercept}",
        ours.intercept
    );
    for ((feature, weight), theirs) in ours.ranked.iter().zip(lime["ranked"].as_array().unwrap()) {
        assert_eq!(*feature as u64, theirs[0].as_u64().unwrap());
        assert!(
            close(*weight, theirs[1].as_f64().unwrap()),
            "{feature}: {weight} vs {theirs}"
        );
    }
}
