//! CamLIME core: what a convolutional image classifier looks at.
//!
//! Pure Rust, no IO, no clock, no threads: it takes bytes and arrays and returns arrays, on native
//! targets and on `wasm32-unknown-unknown` alike. The pipeline reads as a typed sequence:
//!
//! ```no_run
//! # fn main() -> camlime_core::Result<()> {
//! use camlime_core::{Classifier, Manifest, decode_image};
//! let manifest = Manifest::from_json(&std::fs::read_to_string("models/manifest.json").unwrap())?;
//! let entry = manifest.model("mobilenet_v2")?;
//! let labels = std::fs::read_to_string("models/imagenet_classes.txt").unwrap();
//! let onnx = std::fs::read("models/mobilenet_v2.onnx").unwrap();
//! let classifier = Classifier::new(&onnx, entry.spec(&labels)?)?;
//! let image = decode_image(&std::fs::read("models/samples/chelsea.png").unwrap(), &Default::default())?;
//! let input = classifier.spec().preprocessing.base_image(&image)?;
//! let predictions = classifier.predict(&[input], 5)?;
//! println!("{} {:.4}", predictions[0][0].label, predictions[0][0].probability);
//! # Ok(()) }
//! ```
//!
//! Modules: [`preprocess`] (decode, resize, crop, normalise), [`manifest`] (the bundled models'
//! description), [`model`] (the classifier: layers, predictions, gradients), [`engine`] (what
//! runs a graph: the lowered CNN plan, tract), [`segment`], [`lime`], [`camlime`], [`cam`],
//! [`attribution`], [`grad`] (the backward transform), [`metrics`], [`evaluation`] (metrics for
//! several methods over images: plan, rows, report), [`render`],
//! [`explanation`] (one explanation end to end and its record), [`runtime`], [`surrogate`],
//! [`spec`] (a model's description in plain data), [`task`] (detectors: detections and the box
//! head explanations of one detection bind), [`detection`] (their decoding and NMS). The model-free modules (`preprocess`,
//! `manifest`, `spec`, `detection`, `segment`, `lime`, `camlime`, `render`, `runtime`, `surrogate`, `error`,
//! `draws`,
//! and the data types of `cam`, `attribution` and `explanation`) live in `camlime-base`, which
//! the browser page links without an engine; they are re-exported here under the same paths.

pub mod attribution;
pub mod cam;
pub mod engine;
pub mod evaluation;
pub mod explanation;
pub mod grad;
pub mod metrics;
pub mod model;
mod model_edit;
mod onnx;
pub mod task;

pub use camlime_base::{
    camlime, detection, draws, error, face, lime, manifest, preprocess, region, render, runtime,
    segment, spec, surrogate,
};
pub use error::{Error, Result};
pub use explanation::{ExplainConfig, ExplanationRecord, Method, explain};
pub use manifest::{Manifest, ModelEntry};
pub use model::{Classifier, ForwardOutput, Layer, ModelSpec, ModelSummary, Prediction, Tail};
pub use nalgebra;
pub use preprocess::{
    DecodeOptions, ExifOrientation, Interpolation, Normalize, Preprocessing, ResizeMode,
    decode_image,
};
pub use runtime::{Runtime, Sequential};
pub use segment::{Segmentation, SegmenterConfig};
pub use tract_onnx::prelude::tract_ndarray as ndarray;
