//! The page ↔ worker messages. Each message is a JS object `{ json, bytes? }`: `json` is one of
//! these enums serialised, `bytes` an optional `Uint8Array` (model or image bytes, the base
//! image's pixels) moved rather than copied.

use camlime_base::face::FaceInfo;
use camlime_base::record::{ExplanationRecord, SampleJob};
use camlime_base::{ExplainConfig, ModelSpec, ModelSummary, Prediction};
use js_sys::{Array, Object, Reflect, Uint8Array};
use serde::{Deserialize, Serialize};
use wasm_bindgen::{JsCast, JsValue};

/// Page → worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Request {
    /// Build a classifier from the ONNX bytes attached.
    LoadModel {
        /// How to read it (bundled manifest entry, or a user model's defaults).
        spec: Box<ModelSpec>,
        /// Also compile Grad-CAM's gradient model before answering (the explaining worker).
        warm_gradients: bool,
    },
    /// Build the face detector of the face model to come from the ONNX bytes attached (the
    /// explaining worker only: the others classify crops it made).
    LoadDetector {
        /// Its bundled manifest entry's spec.
        spec: Box<ModelSpec>,
    },
    /// Decode the image bytes attached, keep it (a face model's: the face cropped from it),
    /// predict its top classes.
    Predict {
        /// Correlates the answer.
        id: u64,
        /// How many classes.
        top: usize,
        /// A face model's face, best first.
        face: usize,
    },
    /// A face embedding's reference: the embedding of the best face in the photo attached.
    Reference {
        /// Correlates the answer.
        id: u64,
        /// The photo's name, for the page to show.
        name: String,
    },
    /// Explain the kept image.
    Explain {
        /// Correlates progress and the answer.
        id: u64,
        /// Method and parameters.
        config: Box<ExplainConfig>,
        /// Where the image came from (file name or URL), for the record.
        source: Option<String>,
        /// How many workers share LIME's samples: above 1, the worker answers
        /// [`Response::Sampling`] and waits for [`Request::Finish`].
        workers: usize,
    },
    /// Classify rows `start..end` of a sample job on the base image attached (RGB bytes).
    Classify {
        /// The explanation's id.
        id: u64,
        /// The job.
        job: Box<SampleJob>,
        /// First row.
        start: usize,
        /// One past the last row.
        end: usize,
    },
    /// Finish the explanation waiting for its samples.
    Finish {
        /// The explanation's id.
        id: u64,
        /// Per explained label, its probability on every sample.
        targets: Vec<Vec<f64>>,
    },
}

/// Worker → page.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Response {
    /// The worker's wasm is running and takes requests.
    Ready,
    /// A classifier is loaded.
    ModelLoaded {
        /// What it offers.
        summary: ModelSummary,
        /// Milliseconds the worker took to parse and prepare it.
        load_ms: f64,
    },
    /// The kept image's base picture (RGB bytes attached) and predictions.
    Predicted {
        /// The request's id.
        id: u64,
        /// Base-image width.
        width: u32,
        /// Base-image height.
        height: u32,
        /// Top classes.
        predictions: Vec<Prediction>,
        /// Milliseconds the forward pass took.
        forward_ms: f64,
        /// A face model's face: where it was cropped, and how many the detector found.
        face: Option<FaceInfo>,
    },
    /// A reference face's embedding.
    Reference {
        /// The request's id.
        id: u64,
        /// The photo's name.
        name: String,
        /// Its best face's embedding.
        embedding: Vec<f32>,
    },
    /// Work done so far.
    Progress {
        /// The request's id.
        id: u64,
        /// Stage name (`samples`, `masks`, …).
        stage: String,
        /// Units done.
        done: usize,
        /// Units in all.
        total: usize,
    },
    /// A LIME/CamLIME explanation's samples, to be classified by every worker (the base image's
    /// RGB bytes attached).
    Sampling {
        /// The request's id.
        id: u64,
        /// The job.
        job: Box<SampleJob>,
    },
    /// Rows `start..` of a job classified.
    Classified {
        /// The request's id.
        id: u64,
        /// First row.
        start: usize,
        /// Per explained label, its probability on each row.
        targets: Vec<Vec<f64>>,
    },
    /// An explanation.
    Explained {
        /// The request's id.
        id: u64,
        /// The record.
        record: Box<ExplanationRecord>,
    },
    /// A request failed.
    Failed {
        /// The request's id (`None` for model loading).
        id: Option<u64>,
        /// What went wrong, for the user.
        message: String,
    },
}

/// A message as the JS object `{ json, bytes? }` and the list of buffers to transfer with it.
pub fn to_js(json: &str, bytes: Option<&[u8]>) -> (Object, Array) {
    let message = Object::new();
    let _ = Reflect::set(&message, &"json".into(), &json.into());
    let transfer = Array::new();
    if let Some(bytes) = bytes {
        let array = Uint8Array::from(bytes);
        transfer.push(&array.buffer());
        let _ = Reflect::set(&message, &"bytes".into(), &array);
    }
    (message, transfer)
}

/// A received `{ json, bytes? }` object's parts (empty JSON if it has none, which fails to decode).
pub fn from_js(data: &JsValue) -> (String, Option<Vec<u8>>) {
    let json = Reflect::get(data, &"json".into())
        .ok()
        .and_then(|v| v.as_string())
        .unwrap_or_default();
    let bytes = Reflect::get(data, &"bytes".into())
        .ok()
        .and_then(|v| v.dyn_into::<Uint8Array>().ok())
        .map(|a| a.to_vec());
    (json, bytes)
}

/// Encode a message's JSON part.
pub fn encode<T: Serialize>(message: &T) -> String {
    serde_json::to_string(message).unwrap_or_else(|e| {
        serde_json::json!({"kind": "failed", "id": null, "message": e.to_string()}).to_string()
    })
}

/// Decode a message's JSON part.
pub fn decode<T: for<'de> Deserialize<'de>>(json: &str) -> Result<T, String> {
    serde_json::from_str(json).map_err(|e| format!("malformed message: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use camlime_base::record::Method;

    #[test]
    fn every_setting_reaches_the_worker() {
        // The page's settings store is the core's `ExplainConfig`; its message to the worker
        // carries each setting of `shared/tests/fixtures/config/every_setting.json`.
        let fixture: serde_json::Value = serde_json::from_str(include_str!(
            "../../shared/tests/fixtures/config/every_setting.json"
        ))
        .unwrap();
        let config: ExplainConfig = serde_json::from_value(fixture["config"].clone()).unwrap();
        assert_ne!(config, ExplainConfig::default());
        let request = Request::Explain {
            id: 1,
            config: Box::new(config.clone()),
            source: None,
            workers: 1,
        };
        let Request::Explain { config: sent, .. } = decode::<Request>(&encode(&request)).unwrap()
        else {
            panic!("not an explanation");
        };
        assert_eq!(*sent, config);
    }

    #[test]
    fn requests_round_trip() {
        let config = ExplainConfig {
            method: "gradcam".parse::<Method>().unwrap(),
            seed: 7,
            ..ExplainConfig::default()
        };
        let request = Request::Explain {
            id: 3,
            config: Box::new(config),
            source: Some("chelsea.png".into()),
            workers: 2,
        };
        let json = encode(&request);
        assert!(json.contains(r#""kind":"explain""#), "{json}");
        assert_eq!(decode::<Request>(&json).unwrap(), request);
        let spec = Request::LoadModel {
            spec: Box::new(ModelSpec::user_model("mine")),
            warm_gradients: true,
        };
        assert_eq!(decode::<Request>(&encode(&spec)).unwrap(), spec);
    }

    #[test]
    fn malformed_messages_are_errors() {
        let error = decode::<Request>(r#"{"kind":"explain","id":"x"}"#).unwrap_err();
        assert!(error.starts_with("malformed message"), "{error}");
        assert!(decode::<Response>("not json").is_err());
    }
}
