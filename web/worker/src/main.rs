//! The Web Worker: owns the classifier (and a face model's detector) and the current image (a
//! face model's: the face it crops), runs predictions and explanations with the core, and
//! reports progress. The page runs one worker per core: the
//! first explains, and LIME's samples are classified by all of them (wasm has no threads here).
//! Cancelling is the page terminating the workers and starting fresh ones, so a long run never
//! has to poll for messages.

use std::cell::RefCell;
use std::sync::Arc;

use camlime_core::cam::CamMethod;
use camlime_core::detection::BoxChoice;
use camlime_core::engine::Engine;
use camlime_core::engine::tract::Tract;
use camlime_core::explanation::{
    ExplanationRecord, Method, Pending, Started, classify_samples, explain, start,
};
use camlime_core::face::FaceInfo;
use camlime_core::spec::Task;
use camlime_core::task::{crop_face, embed};
use camlime_core::{
    Classifier, DecodeOptions, ExplainConfig, ModelSpec, Runtime, Sequential, decode_image,
};
use camlime_web::protocol::{Request, Response, decode, encode, from_js, to_js};
use image::RgbImage;
use js_sys::Reflect;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use web_sys::{DedicatedWorkerGlobalScope, MessageEvent};

/// What the worker keeps between requests.
#[derive(Default)]
struct State {
    classifier: Option<Classifier>,
    /// A face model's detector.
    detector: Option<Classifier>,
    /// The image the model sees (a face model's: the face cropped from the photo).
    image: Option<RgbImage>,
    /// Where that face was cropped.
    face: Option<FaceInfo>,
    /// An explanation waiting for its samples: (request id, its first phase).
    pending: Option<(u64, Pending)>,
}

impl State {
    /// The model's image of a photo: a face model's `face`-th face (best first), cut as its
    /// manifest says by the detector loaded with it; any other model's, the photo.
    fn model_image(
        &self,
        photo: RgbImage,
        face: Option<usize>,
    ) -> Result<(RgbImage, Option<FaceInfo>), String> {
        let classifier = self.classifier.as_ref().ok_or("no model is loaded")?;
        let Some(crop) = &classifier.spec().face else {
            return Ok((photo, None));
        };
        let detector = self
            .detector
            .as_ref()
            .filter(|d| d.spec().name == crop.detector)
            .ok_or_else(|| format!("the face detector `{}` is not loaded", crop.detector))?;
        let choice = BoxChoice {
            index: face,
            class: None,
        };
        let (image, info) =
            crop_face(detector, &photo, &choice, crop).map_err(|e| e.to_string())?;
        Ok((image, Some(info)))
    }

    /// Decode a photo's `bytes` (`what` names them in errors): the model's image of it (see
    /// [`State::model_image`]), that image's base image, and the face.
    fn decode(
        &self,
        bytes: Option<Vec<u8>>,
        what: &str,
        face: Option<usize>,
    ) -> Result<(RgbImage, RgbImage, Option<FaceInfo>), String> {
        let bytes = bytes.ok_or_else(|| format!("no {what} was sent"))?;
        let photo = decode_image(&bytes, &DecodeOptions::default()).map_err(|e| e.to_string())?;
        let (image, face) = self.model_image(photo, face)?;
        let classifier = self.classifier.as_ref().ok_or("no model is loaded")?;
        let base = classifier
            .spec()
            .preprocessing
            .base_image(&image)
            .map_err(|e| e.to_string())?;
        Ok((image, base, face))
    }

    /// A finished record with the face it explains.
    fn record(&self, mut record: ExplanationRecord) -> Box<ExplanationRecord> {
        record.image.face = self.face.clone();
        Box::new(record)
    }
}

thread_local! {
    static STATE: RefCell<State> = RefCell::default();
}

fn scope() -> DedicatedWorkerGlobalScope {
    js_sys::global().unchecked_into()
}

fn now_ms() -> f64 {
    Reflect::get(&js_sys::global(), &"performance".into())
        .ok()
        .and_then(|p| p.dyn_into::<web_sys::Performance>().ok())
        .map_or(0.0, |p| p.now())
}

fn post(response: &Response, bytes: Option<&[u8]>) {
    let (message, transfer) = to_js(&encode(response), bytes);
    if let Err(e) = scope().post_message_with_transfer(&message, &transfer) {
        web_sys::console::error_2(&"camlime worker: cannot post".into(), &e);
    }
}

/// The core's runtime inside the worker: sequential, with progress messages and a clock.
struct WorkerRuntime {
    id: u64,
}

impl Runtime for WorkerRuntime {
    fn progress(&self, stage: &str, done: usize, total: usize) {
        post(
            &Response::Progress {
                id: self.id,
                stage: stage.into(),
                done,
                total,
            },
            None,
        );
    }

    fn clock(&self) -> Option<std::time::Duration> {
        Some(std::time::Duration::from_secs_f64(now_ms().max(0.0) / 1e3))
    }
}

/// A classifier with the spec's labels when their count fits the model (a user's model gets
/// ImageNet's names only when it has 1000 classes).
fn load(bytes: &[u8], mut spec: ModelSpec) -> camlime_core::Result<Classifier> {
    // A classifier's labels apply when they fit its classes (a user's model gets ImageNet's on
    // trust); a detector's or a segmenter's come from its manifest entry and stay in its spec.
    let labels = if spec.task == Task::Classification {
        std::mem::take(&mut spec.labels)
    } else {
        Vec::new()
    };
    // tract: in headless Chromium (`web/e2e/bench.mjs 3`, MobileNetV2, medians, one session) the
    // lowered CNN plan's wasm32 simd128 build ran a forward pass in 87 ms against tract's 47 and
    // CamLIME-1000 in 38.6 s against 20.7 s (its model was ready sooner: 2.12 s against 2.67).
    let engines: Vec<Arc<dyn Engine>> = vec![Arc::new(Tract)];
    let classifier = Classifier::with_engine_list(bytes, spec, engines)?;
    if !labels.is_empty() && labels.len() == classifier.num_classes() {
        classifier.with_labels(labels)
    } else {
        Ok(classifier)
    }
}

/// Compile the plans the first requests need before the model is reported ready: the batch-1
/// forward, and on the explaining worker Grad-CAM's gradient model at the default layers, so the
/// first prediction and the first gradient CAM cost a run, not a compilation (~0.4 s each in
/// Chromium). A model that cannot do Grad-CAM says so when it is asked to, not here.
fn warm_up(classifier: &Classifier, gradients: bool) {
    let [height, width] = classifier.input_size();
    let gray = RgbImage::from_pixel(width as u32, height as u32, image::Rgb([128; 3]));
    if gradients {
        let config = ExplainConfig {
            method: Method::Cam(CamMethod::GradCam),
            ..ExplainConfig::default()
        };
        let _ = explain(classifier, &gray, None, &config, &Sequential);
    } else {
        let _ = classifier.predict(&[gray], 1);
    }
}

fn handle(request: Request, bytes: Option<Vec<u8>>) {
    match request {
        Request::LoadModel {
            spec,
            warm_gradients,
        } => {
            let started = now_ms();
            let result = bytes
                .ok_or_else(|| "no model bytes were sent".to_owned())
                .and_then(|bytes| load(&bytes, *spec).map_err(|e| e.to_string()));
            match result {
                Ok(classifier) => {
                    warm_up(&classifier, warm_gradients);
                    let summary = classifier.summary();
                    let load_ms = now_ms() - started;
                    STATE.with_borrow_mut(|s| {
                        s.classifier = Some(classifier);
                        s.image = None;
                        s.face = None;
                    });
                    post(&Response::ModelLoaded { summary, load_ms }, None);
                }
                Err(message) => {
                    STATE.with_borrow_mut(|s| s.classifier = None);
                    post(&Response::Failed { id: None, message }, None);
                }
            }
        }
        Request::LoadDetector { spec } => {
            let result = bytes
                .ok_or_else(|| "no detector bytes were sent".to_owned())
                .and_then(|bytes| load(&bytes, *spec).map_err(|e| e.to_string()));
            match result {
                Ok(detector) => STATE.with_borrow_mut(|s| s.detector = Some(detector)),
                Err(message) => post(&Response::Failed { id: None, message }, None),
            }
        }
        Request::Predict { id, top, face } => {
            let outcome = STATE.with_borrow_mut(|state| -> Result<_, String> {
                let (image, base, face) = state.decode(bytes, "image", Some(face))?;
                let classifier = state.classifier.as_ref().ok_or("no model is loaded")?;
                let started = now_ms();
                // A detector or a segmenter has no classes: its explanations carry what it found.
                let predictions = if classifier.spec().task == Task::Classification {
                    classifier
                        .predict(std::slice::from_ref(&base), top.clamp(1, 20))
                        .map_err(|e| e.to_string())?
                        .remove(0)
                } else {
                    Vec::new()
                };
                let forward_ms = now_ms() - started;
                state.image = Some(image);
                state.face = face.clone();
                Ok((base, predictions, forward_ms, face))
            });
            match outcome {
                Ok((base, predictions, forward_ms, face)) => post(
                    &Response::Predicted {
                        id,
                        width: base.width(),
                        height: base.height(),
                        predictions,
                        forward_ms,
                        face,
                    },
                    Some(base.as_raw()),
                ),
                Err(message) => post(
                    &Response::Failed {
                        id: Some(id),
                        message,
                    },
                    None,
                ),
            }
        }
        Request::Explain {
            id,
            config,
            source,
            workers,
        } => {
            let outcome = STATE.with_borrow_mut(|state| -> Result<_, String> {
                state.pending = None;
                let classifier = state.classifier.as_ref().ok_or("no model is loaded")?;
                let image = state.image.as_ref().ok_or("no image is loaded")?;
                let runtime = WorkerRuntime { id };
                if workers <= 1 {
                    let record = explain(classifier, image, source, &config, &runtime);
                    return record
                        .map(|r| Some(state.record(r)))
                        .map_err(|e| e.to_string());
                }
                match start(classifier, image, source, &config, &runtime)
                    .map_err(|e| e.to_string())?
                {
                    Started::Done(record) => Ok(Some(state.record(*record))),
                    Started::Sampling(pending) => {
                        post(
                            &Response::Sampling {
                                id,
                                job: Box::new(pending.job().clone()),
                            },
                            Some(pending.base.as_raw()),
                        );
                        state.pending = Some((id, *pending));
                        Ok(None)
                    }
                }
            });
            answer(id, outcome);
        }
        Request::Classify {
            id,
            job,
            start,
            end,
        } => {
            let outcome = STATE.with_borrow(|state| -> Result<_, String> {
                let classifier = state.classifier.as_ref().ok_or("no model is loaded")?;
                let (height, width) = (job.segments.height as u32, job.segments.width as u32);
                let base = bytes
                    .and_then(|b| RgbImage::from_raw(width, height, b))
                    .ok_or("the base image does not fit the job's segments")?;
                classify_samples(classifier, &base, &job, start..end, &WorkerRuntime { id })
                    .map_err(|e| e.to_string())
            });
            match outcome {
                Ok(targets) => post(&Response::Classified { id, start, targets }, None),
                Err(message) => post(
                    &Response::Failed {
                        id: Some(id),
                        message,
                    },
                    None,
                ),
            }
        }
        Request::Finish { id, targets } => {
            let outcome = STATE.with_borrow_mut(|state| -> Result<_, String> {
                let classifier = state.classifier.as_ref().ok_or("no model is loaded")?;
                let pending = match state.pending.take() {
                    Some((pending_id, pending)) if pending_id == id => pending,
                    _ => return Err(format!("no explanation {id} is waiting for samples")),
                };
                pending
                    .finish(classifier, targets, &WorkerRuntime { id })
                    .map(|record| Some(state.record(record)))
                    .map_err(|e| e.to_string())
            });
            answer(id, outcome);
        }
        Request::Reference { id, name } => {
            let outcome = STATE.with_borrow(|state| -> Result<_, String> {
                let (_, base, _) = state.decode(bytes, "reference photo", None)?;
                let classifier = state.classifier.as_ref().ok_or("no model is loaded")?;
                embed(classifier, &base).map_err(|e| e.to_string())
            });
            match outcome {
                Ok(embedding) => post(
                    &Response::Reference {
                        id,
                        name,
                        embedding,
                    },
                    None,
                ),
                Err(message) => post(
                    &Response::Failed {
                        id: Some(id),
                        message: format!("the reference {name}: {message}"),
                    },
                    None,
                ),
            }
        }
    }
}

/// Post a finished record, nothing when the explanation waits for its samples, or the error.
fn answer(id: u64, outcome: Result<Option<Box<ExplanationRecord>>, String>) {
    match outcome {
        Ok(Some(record)) => post(&Response::Explained { id, record }, None),
        Ok(None) => {}
        Err(message) => post(
            &Response::Failed {
                id: Some(id),
                message,
            },
            None,
        ),
    }
}

fn on_message(event: MessageEvent) {
    let (json, bytes) = from_js(&event.data());
    match decode::<Request>(&json) {
        Ok(request) => handle(request, bytes),
        Err(message) => post(&Response::Failed { id: None, message }, None),
    }
}

fn main() {
    console_error_panic_hook::set_once();
    let callback = Closure::<dyn Fn(MessageEvent)>::new(on_message);
    scope().set_onmessage(Some(callback.as_ref().unchecked_ref()));
    callback.forget();
    post(&Response::Ready, None);
}
