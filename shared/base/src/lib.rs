//! CamLIME's model-free half: everything an explanation needs that never runs a model, so the
//! browser page (which only draws) links it without an engine.
//!
//! Pure Rust, no IO, no clock, no threads, on native targets and on `wasm32-unknown-unknown`.
//! Modules: [`preprocess`] (decode, resize, crop, normalise), [`segment`] (superpixels),
//! [`surrogate`] and [`lime`] (sampling, kernel, weighted ridge), [`camlime`] (the CAM's
//! reweighting), [`cam`] (which CAM, its parameters, [`cam::CamMap`] and its post-processing),
//! [`attribution`] (the input attributions' parameters), [`spec`] (what a model is, in plain
//! data), [`manifest`] (the bundled models), [`detection`] (a detector's outputs decoded, NMS, the box
//! target), [`draws`] (the seeded stream of the metrics' and
//! model edits' random draws), [`record`] (an explanation's configuration and
//! record), [`render`] (overlays, masks, plots), [`runtime`] and [`error`].
//!
//! `camlime-core` re-exports every module under the same path and adds what runs a model: the
//! classifier, the engines, the gradients, the CAM methods, the attributions, the metrics and the
//! explanation pipeline.

pub mod attribution;
pub mod cam;
pub mod camlime;
pub mod detection;
pub mod draws;
pub mod error;
pub mod face;
pub mod lime;
pub mod manifest;
mod names;
pub mod preprocess;
pub mod record;
pub mod region;
pub mod render;
pub mod runtime;
pub mod segment;
pub mod spec;
pub mod surrogate;

pub use error::{Error, Result};
pub use manifest::{Manifest, ModelEntry};
pub use preprocess::{
    DecodeOptions, ExifOrientation, Interpolation, Normalize, Preprocessing, ResizeMode,
    decode_image,
};
pub use record::{ExplainConfig, ExplanationRecord, Method};
pub use runtime::{Runtime, Sequential};
pub use segment::{Segmentation, SegmenterConfig};
pub use spec::{Layer, ModelSpec, ModelSummary, Prediction};
