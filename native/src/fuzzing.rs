//! The fuzz targets' bodies: each takes arbitrary bytes, must not panic, and asserts what must
//! hold of whatever it accepts. `fuzz/` wraps each in `afl::fuzz!` (coverage-guided, on the
//! stable toolchain); `native/tests/fuzz_corpus.rs` replays the committed seeds and every input
//! that once failed, so a fixed crash stays fixed without the fuzzer.
//!
//! Parsers of untrusted input, each with what a user sends it: photos (the pixel limit),
//! ONNX files (a user's model), explanation records (loaded back, replayed, drawn), request
//! bodies (JSON and multipart into checked settings, as the server parses them), the manifest,
//! and evaluation requests (methods, metrics and their parameters).

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use camlime_core::preprocess::{DecodeOptions, ExifOrientation};
use camlime_core::render::{MaskOptions, cam_overlay, mask_picture};
use camlime_core::{
    Classifier, ExplainConfig, ExplanationRecord, Manifest, Method, ModelSpec, decode_image,
};
use serde::Deserialize;

use crate::models::{Bundle, LoadedModel, models_dir};
use crate::serve::{Limits, parse_explain_request};

/// Largest image the targets decode (the server's default is 50 M pixels; a fuzzer needs speed).
const MAX_PIXELS: u64 = 1 << 20;

/// The bundled MobileNetV2, loaded once per process (the targets that check against a model).
fn model() -> &'static LoadedModel {
    static MODEL: OnceLock<LoadedModel> = OnceLock::new();
    MODEL.get_or_init(|| {
        let bundle = models_dir(None)
            .and_then(|dir| Bundle::open(&dir))
            .expect("the bundled models (run from the repository)");
        bundle.load("mobilenet_v2").expect("mobilenet_v2 loads")
    })
}

/// A photo: decoded within the pixel limit (EXIF orientation applied when the first byte is
/// odd), or an error.
pub fn image(data: &[u8]) {
    let options = DecodeOptions {
        max_pixels: MAX_PIXELS,
        exif_orientation: if data.first().is_some_and(|b| b & 1 == 1) {
            ExifOrientation::Apply
        } else {
            ExifOrientation::Ignore
        },
    };
    if let Ok(image) = decode_image(data, &options) {
        let (width, height) = image.dimensions();
        assert!(width > 0 && height > 0, "an empty image decoded");
        assert!(
            u64::from(width) * u64::from(height) <= MAX_PIXELS,
            "{width}×{height} passed a limit of {MAX_PIXELS} pixels"
        );
    }
}

/// A user's ONNX file: a classifier with its layers, or an error.
pub fn onnx_model(data: &[u8]) {
    if let Ok(classifier) = Classifier::new(data, ModelSpec::user_model("fuzz")) {
        let summary = classifier.summary();
        assert_eq!(summary.num_classes, classifier.num_classes());
    }
}

/// An explanation record loaded back: parsed, its settings checked against the model as a
/// replay checks them, and drawn as the page draws it (on a base image of its segments' size).
pub fn record(data: &[u8]) {
    let Ok(record) = serde_json::from_slice::<ExplanationRecord>(data) else {
        return;
    };
    if record.config.check().is_ok() {
        let _ = camlime_core::explanation::validate(&model().classifier, &record.config);
    }
    let Some(segments) = &record.segments else {
        return;
    };
    if (segments.width as u64) * (segments.height as u64) > MAX_PIXELS {
        return;
    }
    let Ok(segmentation) = segments.segmentation() else {
        return;
    };
    let base = image::RgbImage::from_pixel(
        segments.width as u32,
        segments.height as u32,
        image::Rgb([128, 128, 128]),
    );
    if let Some(main) = record.main_explanation() {
        let _ = mask_picture(&base, &segmentation, main, &MaskOptions::default());
    }
    if let Some(cam) = &record.cam {
        let _ = cam_overlay(&base, &cam.map, 0.5);
    }
}

/// The server's limits for the request target: its defaults.
fn limits() -> Limits {
    Limits {
        decode: DecodeOptions::default(),
        max_samples: 20_000,
        sync_samples: 300,
        max_steps: 1_000,
        max_eval_images: 100,
        max_waiting: 256,
        request_timeout: Duration::from_secs(120),
    }
}

/// A request body, as `POST /v1/explain` parses and checks it: the first byte chooses the
/// content type (JSON, a form with the boundary `fuzz`, or another type), the rest is the body.
pub fn request(data: &[u8]) {
    let Some((&kind, body)) = data.split_first() else {
        return;
    };
    let content_type = match kind % 3 {
        0 => "application/json",
        1 => "multipart/form-data; boundary=fuzz",
        _ => "text/plain",
    };
    if let Ok(config) = parse_explain_request(content_type, body.to_vec(), model(), &limits()) {
        assert!(
            config.check().is_ok(),
            "a request passed the server's checks with settings the core refuses"
        );
    }
}

/// The bundled models' manifest: parsed, and each entry's spec made (with two labels).
pub fn manifest(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(manifest) = Manifest::from_json(text) {
        for entry in &manifest.models {
            let _ = entry.spec("one\ntwo\n");
        }
    }
}

/// An evaluation request's methods, metrics and their parameters.
#[derive(Deserialize)]
struct Evaluation {
    #[serde(default)]
    methods: Vec<Method>,
    #[serde(default)]
    metrics: Vec<String>,
    #[serde(default)]
    metric_params: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    masks: bool,
    #[serde(default)]
    config: ExplainConfig,
}

/// An evaluation request (JSON): its plan of methods and metrics, or an error.
pub fn evaluation(data: &[u8]) {
    let Ok(request) = serde_json::from_slice::<Evaluation>(data) else {
        return;
    };
    let _ = camlime_core::evaluation::Plan::new(
        &request.methods,
        &request.metrics,
        &request.metric_params,
        request.masks,
        request.config,
        0,
    );
}

/// A fuzz target: arbitrary bytes in, a panic when something that must hold does not.
pub type Target = fn(&[u8]);

/// Every target by name (`fuzz/` has a binary of each name; the corpus test replays them all).
pub const TARGETS: [(&str, Target); 6] = [
    ("image", image),
    ("onnx_model", onnx_model),
    ("record", record),
    ("request", request),
    ("manifest", manifest),
    ("evaluation", evaluation),
];
