//! The page's state and its link to the workers. State lives in `Copy` signals ([`Ctx`]); the
//! workers, which are not `Send`, live in a thread-local [`Client`]. The first worker explains;
//! LIME's samples are shared out to all of them and gathered back here. Cancelling terminates
//! the workers and starts fresh ones, which get the current model and image again.

mod remote;
mod result;
mod view;

use std::cell::RefCell;

use camlime_base::cam::CamMethod;
use camlime_base::face::FaceInfo;
use camlime_base::record::{
    ExplainConfig, ExplanationRecord, IdentityChoice, Method, SampleJob, TaskConfig,
};
use camlime_base::{Manifest, ModelSpec, ModelSummary, Prediction};
use camlime_web::i18n::{Lang, t};
use camlime_web::protocol::{Request, Response, decode, encode, from_js, to_js};
use image::RgbImage;
use js_sys::Uint8Array;
use leptos::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{MessageEvent, Worker};

pub use view::App;

/// Where the bundled models, labels and samples are served from (Trunk copies `models/`).
const MODELS: &str = "models";
const LANG_KEY: &str = "camlime.lang";
const SERVER_KEY: &str = "camlime.server";
const TOKEN_KEY: &str = "camlime.server_token";

/// The loaded model's state.
#[derive(Clone, Debug, PartialEq)]
pub enum ModelState {
    /// Nothing loaded yet.
    None,
    /// Being fetched or parsed.
    Loading(String),
    /// Ready in the worker, with the milliseconds loading took.
    Ready(ModelSummary, f64),
}

/// One finished explanation in the comparison strip.
#[derive(Clone, Debug, PartialEq)]
pub struct GalleryItem {
    /// Increasing id.
    pub id: u64,
    /// Method and layer.
    pub title: String,
    /// What was explained and how long it took.
    pub subtitle: String,
    /// The picture as a PNG data URL.
    pub url: String,
}

/// A run in progress.
#[derive(Clone, Debug, PartialEq)]
pub struct Running {
    /// Request id.
    pub id: u64,
    /// Stage reported last.
    pub stage: String,
    /// Units done.
    pub done: usize,
    /// Units in all (0 until the first report).
    pub total: usize,
    /// `performance.now()` at the start.
    pub started: f64,
    /// Sent to a `camlime serve` URL instead of the workers.
    pub on_server: bool,
}

impl Running {
    /// A run starting now, before any progress.
    fn new(id: u64, on_server: bool) -> Self {
        Self {
            id,
            stage: String::new(),
            done: 0,
            total: 0,
            started: now_ms(),
            on_server,
        }
    }
}

/// The settings the page starts with: the core's defaults, `?method=` and `?samples=` over
/// them; an embedded explanation runs by itself, so a fast method unless the page asks.
fn initial_config(embed: bool, param: impl Fn(&str) -> Option<String>) -> ExplainConfig {
    let mut config = ExplainConfig::default();
    if embed {
        config.method = Method::Cam(CamMethod::GradCam);
    }
    if let Some(method) = param("method").and_then(|m| m.parse().ok()) {
        config.method = method;
    }
    if let Some(samples) = param("samples").and_then(|n| n.parse().ok()) {
        config.lime.num_samples = samples;
    }
    config
}

/// The page's state: every field a signal, so `Ctx` is `Copy` and closures capture it freely.
#[derive(Clone, Copy)]
pub struct Ctx {
    pub lang: RwSignal<Lang>,
    pub embed: bool,
    pub manifest: RwSignal<Option<Manifest>>,
    pub labels: RwSignal<String>,
    pub model_choice: RwSignal<String>,
    pub model: RwSignal<ModelState>,
    pub image_name: RwSignal<Option<String>>,
    pub base: RwSignal<Option<RgbImage>>,
    /// A face model's face: where the worker cropped it and how many faces it found.
    pub face: RwSignal<Option<FaceInfo>>,
    /// The reference photo a face embedding is compared with (its name, once embedded).
    pub reference: RwSignal<Option<String>>,
    pub predictions: RwSignal<Vec<Prediction>>,
    /// The explanation's settings: the core's one schema, edited by the controls in place.
    pub config: RwSignal<ExplainConfig>,
    /// A `camlime serve` URL (remembered; `?server=URL` too).
    pub server: RwSignal<String>,
    /// The server's bearer token (remembered in the page's storage, never put in a URL).
    pub server_token: RwSignal<String>,
    /// Explanations go to the server instead of the workers.
    pub use_server: RwSignal<bool>,
    pub running: RwSignal<Option<Running>>,
    pub record: RwSignal<Option<ExplanationRecord>>,
    pub replay_of: RwSignal<Option<ExplanationRecord>>,
    pub notice: RwSignal<Option<String>>,
    pub show: RwSignal<String>,
    pub hide_rest: RwSignal<bool>,
    pub num_features: RwSignal<usize>,
    pub gallery: RwSignal<Vec<GalleryItem>>,
    pub error: RwSignal<Option<String>>,
    /// Last measured durations (ms) by name, shown in the footer and read by the e2e tests.
    pub timings: RwSignal<Vec<(String, f64)>>,
}

impl Ctx {
    /// A text in the current language.
    pub fn tr(&self, key: &'static str) -> &'static str {
        t(self.lang.get(), key)
    }

    fn new() -> Self {
        let stored = local_storage().and_then(|s| s.get_item(LANG_KEY).ok().flatten());
        let lang = url_param("lang")
            .or(stored)
            .or_else(|| window().navigator().language())
            .map_or(Lang::En, |code| Lang::from_code(&code));
        let embed = url_param("embed").is_some();
        Self {
            lang: RwSignal::new(lang),
            embed,
            manifest: RwSignal::new(None),
            labels: RwSignal::new(String::new()),
            model_choice: RwSignal::new(
                url_param("model").unwrap_or_else(|| "mobilenet_v2".into()),
            ),
            model: RwSignal::new(ModelState::None),
            image_name: RwSignal::new(None),
            base: RwSignal::new(None),
            face: RwSignal::new(None),
            reference: RwSignal::new(None),
            predictions: RwSignal::new(Vec::new()),
            config: RwSignal::new(initial_config(embed, url_param)),
            server: RwSignal::new(
                url_param("server")
                    .or_else(|| local_storage().and_then(|s| s.get_item(SERVER_KEY).ok().flatten()))
                    .unwrap_or_default(),
            ),
            server_token: RwSignal::new(
                local_storage()
                    .and_then(|s| s.get_item(TOKEN_KEY).ok().flatten())
                    .unwrap_or_default(),
            ),
            use_server: RwSignal::new(url_param("server").is_some()),
            running: RwSignal::new(None),
            record: RwSignal::new(None),
            replay_of: RwSignal::new(None),
            notice: RwSignal::new(None),
            show: RwSignal::new("positive".into()),
            hide_rest: RwSignal::new(false),
            num_features: RwSignal::new(5),
            gallery: RwSignal::new(Vec::new()),
            error: RwSignal::new(None),
            timings: RwSignal::new(Vec::new()),
        }
    }

    fn set_lang(&self, lang: Lang) {
        self.lang.set(lang);
        if let Some(storage) = local_storage() {
            let _ = storage.set_item(LANG_KEY, lang.code());
        }
        if let Some(root) = document().document_element() {
            let _ = root.set_attribute("lang", lang.code());
        }
    }

    fn fail(&self, message: impl Into<String>) {
        self.error.set(Some(message.into()));
    }

    fn timing(&self, name: &str, ms: f64) {
        self.timings.update(|all| {
            all.retain(|(n, _)| n != name);
            all.push((name.to_owned(), ms));
        });
    }
}

/// A parameter of the page's address (`?embed&image=…&method=…&workers=…`).
fn url_param(name: &str) -> Option<String> {
    let search = window().location().search().ok()?;
    web_sys::UrlSearchParams::new_with_str(&search)
        .ok()?
        .get(name)
}

fn local_storage() -> Option<web_sys::Storage> {
    window().local_storage().ok().flatten()
}

/// `performance.now()` in milliseconds.
pub fn now_ms() -> f64 {
    window().performance().map_or(0.0, |p| p.now())
}

/// One Web Worker and the requests waiting for it to start.
struct Slot {
    worker: Worker,
    ready: bool,
    queue: Vec<(String, Option<Vec<u8>>)>,
    _on_message: Closure<dyn Fn(MessageEvent)>,
}

/// LIME's samples being classified by every worker.
struct Gather {
    id: u64,
    /// One per worker.
    shares: Vec<Share>,
    total: usize,
}

/// One worker's rows of the samples.
struct Share {
    start: usize,
    done: usize,
    /// Per label, the probabilities, once the worker has answered.
    targets: Option<Vec<Vec<f64>>>,
}

/// The workers (the first explains; all classify samples) and what fresh ones must be given
/// again after a cancel.
struct Client {
    slots: Vec<Slot>,
    model: Option<(ModelSpec, Vec<u8>)>,
    /// A face model's detector, which the first worker loads before the model.
    detector: Option<(ModelSpec, Vec<u8>)>,
    image: Option<Vec<u8>>,
    /// A face model's face in the image, best first.
    face: usize,
    gather: Option<Gather>,
    next_id: u64,
}

thread_local! {
    static CLIENT: RefCell<Option<Client>> = const { RefCell::new(None) };
}

/// One worker per core (at most 4; `?workers=N` overrides): wasm has no threads here.
fn worker_count() -> usize {
    url_param("workers")
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(window().navigator().hardware_concurrency() as usize)
        .clamp(1, 4)
}

fn start_slot(ctx: Ctx, index: usize) -> Result<Slot, String> {
    let worker =
        Worker::new("./worker_loader.js").map_err(|e| format!("cannot start the worker: {e:?}"))?;
    let on_message = Closure::<dyn Fn(MessageEvent)>::new(move |event: MessageEvent| {
        let (json, bytes) = from_js(&event.data());
        match decode::<Response>(&json) {
            Ok(response) => on_response(ctx, index, response, bytes),
            Err(message) => ctx.fail(message),
        }
    });
    worker.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    Ok(Slot {
        worker,
        ready: false,
        queue: Vec::new(),
        _on_message: on_message,
    })
}

/// Start the workers (again, after a cancel: the model and the image are sent anew).
fn start_workers(ctx: Ctx) -> Result<(), String> {
    let slots = (0..worker_count())
        .map(|i| start_slot(ctx, i))
        .collect::<Result<Vec<_>, _>>()?;
    let previous = CLIENT.take();
    let (model, detector, image, face, next_id) = previous.map_or((None, None, None, 0, 1), |c| {
        (c.model, c.detector, c.image, c.face, c.next_id)
    });
    CLIENT.set(Some(Client {
        slots,
        model: None,
        detector: None,
        image: None,
        face,
        gather: None,
        next_id,
    }));
    if let Some((spec, bytes)) = model {
        send_model(ctx, spec, detector, bytes);
    }
    if let Some(bytes) = image {
        send_image(bytes);
    }
    Ok(())
}

fn post(worker: &Worker, json: &str, bytes: Option<Vec<u8>>) {
    let (message, transfer) = to_js(json, bytes.as_deref());
    if let Err(e) = worker.post_message_with_transfer(&message, &transfer) {
        web_sys::console::error_2(&"camlime: cannot post to the worker".into(), &e);
    }
}

fn post_to(client: &mut Client, slot: usize, request: &Request, bytes: Option<Vec<u8>>) {
    let json = encode(request);
    if let Some(slot) = client.slots.get_mut(slot) {
        if slot.ready {
            post(&slot.worker, &json, bytes);
        } else {
            slot.queue.push((json, bytes));
        }
    }
}

/// Send a request to the first worker (queued until it is ready); returns its id.
fn send(build: impl FnOnce(u64) -> Request, bytes: Option<Vec<u8>>) -> u64 {
    CLIENT.with_borrow_mut(|client| {
        let Some(client) = client else { return 0 };
        let id = client.next_id;
        client.next_id += 1;
        post_to(client, 0, &build(id), bytes);
        id
    })
}

/// Every worker gets the model: all of them classify samples. A face model's detector goes to
/// the first worker, which crops the faces.
fn send_model(ctx: Ctx, spec: ModelSpec, detector: Option<(ModelSpec, Vec<u8>)>, bytes: Vec<u8>) {
    ctx.model.set(ModelState::Loading(spec.name.clone()));
    CLIENT.with_borrow_mut(|client| {
        if let Some(client) = client {
            client.model = Some((spec.clone(), bytes.clone()));
            if let Some((spec, bytes)) = &detector {
                let request = Request::LoadDetector {
                    spec: Box::new(spec.clone()),
                };
                post_to(client, 0, &request, Some(bytes.clone()));
            }
            client.detector = detector;
            for slot in 0..client.slots.len() {
                let request = Request::LoadModel {
                    spec: Box::new(spec.clone()),
                    warm_gradients: slot == 0,
                };
                post_to(client, slot, &request, Some(bytes.clone()));
            }
        }
    });
}

/// Keep the image for the worker; predict it now if a model has been sent (otherwise sending
/// the model sends it).
fn send_image(bytes: Vec<u8>) {
    let face = CLIENT.with_borrow_mut(|client| {
        let client = client.as_mut()?;
        client.image = Some(bytes.clone());
        client.model.as_ref().map(|_| client.face)
    });
    if let Some(face) = face {
        send(|id| Request::Predict { id, top: 5, face }, Some(bytes));
    }
}

/// Explain another face of the image (a face model's; best first).
pub fn choose_face(ctx: Ctx, face: usize) {
    CLIENT.with_borrow_mut(|client| {
        if let Some(client) = client {
            client.face = face;
        }
    });
    resend_image(ctx);
}

/// A face embedding's reference photo: the first worker embeds its best face.
pub fn set_reference(ctx: Ctx, name: String, bytes: Vec<u8>) {
    ctx.error.set(None);
    send(|id| Request::Reference { id, name }, Some(bytes));
}

/// The first worker drew LIME's samples: share their rows out to every worker.
fn share_samples(ctx: Ctx, id: u64, job: Box<SampleJob>, base: Vec<u8>) {
    let total = job.num_samples;
    CLIENT.with_borrow_mut(|client| {
        let Some(client) = client else { return };
        let workers = client.slots.len();
        let share = total.div_ceil(workers).max(1);
        let mut shares = Vec::new();
        for (slot, start) in (0..total).step_by(share).enumerate() {
            let end = (start + share).min(total);
            let request = Request::Classify {
                id,
                job: job.clone(),
                start,
                end,
            };
            post_to(client, slot, &request, Some(base.clone()));
            shares.push(Share {
                start,
                done: 0,
                targets: None,
            });
        }
        client.gather = Some(Gather { id, shares, total });
    });
    ctx.running.update(|running| {
        if let Some(r) = running.as_mut().filter(|r| r.id == id) {
            r.stage = "samples".into();
            r.total = total;
        }
    });
}

/// A worker's share is classified: once all are, the first worker finishes.
fn gather(ctx: Ctx, slot: usize, id: u64, start: usize, targets: Vec<Vec<f64>>) {
    let finished = CLIENT.with_borrow_mut(|client| {
        let client = client.as_mut()?;
        let gather = client.gather.as_mut().filter(|g| g.id == id)?;
        let share = gather.shares.get_mut(slot).filter(|s| s.start == start)?;
        share.targets = Some(targets);
        if gather.shares.iter().any(|s| s.targets.is_none()) {
            return None;
        }
        let gather = client.gather.take()?;
        let mut all: Vec<Vec<f64>> = Vec::new();
        for share in gather.shares {
            for (i, column) in share.targets.unwrap_or_default().into_iter().enumerate() {
                match all.get_mut(i) {
                    Some(whole) => whole.extend(column),
                    None => all.push(column),
                }
            }
        }
        post_to(client, 0, &Request::Finish { id, targets: all }, None);
        Some(())
    });
    if finished.is_some() {
        ctx.running.update(|running| {
            if let Some(r) = running.as_mut() {
                r.stage = "surrogate".into();
            }
        });
    }
}

/// Progress of one worker; while samples are shared, the sum over workers.
fn progress(ctx: Ctx, slot: usize, id: u64, stage: String, done: usize, total: usize) {
    let shared = CLIENT.with_borrow_mut(|client| {
        let gather = client.as_mut()?.gather.as_mut().filter(|g| g.id == id)?;
        if let Some(share) = gather.shares.get_mut(slot) {
            share.done = done;
        }
        Some((
            gather.shares.iter().map(|s| s.done).sum::<usize>(),
            gather.total,
        ))
    });
    let (done, total) = shared.unwrap_or((done, total));
    ctx.running.update(|running| {
        if let Some(r) = running.as_mut().filter(|r| r.id == id) {
            r.stage = stage;
            r.done = done;
            r.total = total;
        }
    });
}

fn on_response(ctx: Ctx, slot: usize, response: Response, bytes: Option<Vec<u8>>) {
    match response {
        Response::Ready => CLIENT.with_borrow_mut(|client| {
            if let Some(slot) = client.as_mut().and_then(|c| c.slots.get_mut(slot)) {
                slot.ready = true;
                for (json, bytes) in slot.queue.drain(..) {
                    post(&slot.worker, &json, bytes);
                }
            }
        }),
        // Every worker loads the model; the first one's answer speaks for all.
        Response::ModelLoaded { .. } if slot > 0 => {}
        Response::ModelLoaded { summary, load_ms } => {
            ctx.timing("model_load_ms", load_ms);
            let known = |layer: &String| summary.layers.iter().any(|l| &l.name == layer);
            if !ctx
                .config
                .with_untracked(|c| c.cam.layers.iter().all(known))
            {
                ctx.config.update(|c| c.cam.layers.clear());
            }
            ctx.model.set(ModelState::Ready(summary, load_ms));
        }
        Response::Predicted {
            width,
            height,
            predictions,
            forward_ms,
            face,
            ..
        } => {
            let base = bytes.and_then(|b| RgbImage::from_raw(width, height, b));
            ctx.timing("forward_ms", forward_ms);
            ctx.base.set(base);
            ctx.face.set(face);
            // A fresh worker after a cancel predicts the same image again: keep the target.
            if ctx.predictions.get_untracked() != predictions {
                ctx.config
                    .update(|c| c.target = predictions.first().map(|p| p.class));
                ctx.predictions.set(predictions);
            }
            if ctx.embed && ctx.record.get_untracked().is_none() {
                explain(ctx);
            }
        }
        Response::Progress {
            id,
            stage,
            done,
            total,
        } => progress(ctx, slot, id, stage, done, total),
        Response::Sampling { id, job } => {
            share_samples(ctx, id, job, bytes.unwrap_or_default());
        }
        Response::Classified { id, start, targets } => gather(ctx, slot, id, start, targets),
        Response::Explained { id, record } => finished(ctx, id, *record),
        Response::Reference {
            name, embedding, ..
        } => {
            ctx.config.update(|c| {
                c.task = TaskConfig::Identity(IdentityChoice {
                    reference: embedding,
                });
            });
            ctx.reference.set(Some(name));
        }
        Response::Failed { id, message } => {
            if id.is_none() {
                ctx.model.set(ModelState::None);
            }
            if id.is_some()
                && ctx
                    .running
                    .get_untracked()
                    .is_some_and(|r| Some(r.id) == id)
            {
                // A failed share fails the explanation: the other workers' work is dropped.
                CLIENT.with_borrow_mut(|client| {
                    if let Some(client) = client {
                        client.gather = None;
                    }
                });
                ctx.running.set(None);
            }
            ctx.fail(message);
        }
    }
}

/// A finished explanation (from the workers or the server): shown, added to the gallery, checked
/// against the record being replayed.
fn finished(ctx: Ctx, id: u64, record: ExplanationRecord) {
    let Some(running) = ctx.running.get_untracked().filter(|r| r.id == id) else {
        return;
    };
    let elapsed = now_ms() - running.started;
    ctx.timing(&format!("{}_ms", record.config.method.name()), elapsed);
    ctx.running.set(None);
    if let Some(original) = ctx.replay_of.get_untracked() {
        let same = original.same_results(&record);
        ctx.notice.set(Some(
            ctx.tr(if same {
                "replay_same"
            } else {
                "replay_differs"
            })
            .into(),
        ));
        ctx.replay_of.set(None);
    }
    result::add_to_gallery(ctx, &record, elapsed);
    ctx.record.set(Some(record));
}

/// Remember the server token typed into the page.
pub fn set_server_token(ctx: Ctx, token: String) {
    let token = token.trim().to_owned();
    if let Some(storage) = local_storage() {
        let _ = storage.set_item(TOKEN_KEY, &token);
    }
    ctx.server_token.set(token);
}

/// Remember the server URL typed into the page.
pub fn set_server(ctx: Ctx, url: String) {
    if let Some(storage) = local_storage() {
        let _ = storage.set_item(SERVER_KEY, url.trim());
    }
    ctx.server.set(url);
}

async fn fetch_bytes(url: &str) -> Result<Vec<u8>, String> {
    let response = JsFuture::from(window().fetch_with_str(url))
        .await
        .map_err(|e| format!("cannot fetch {url}: {e:?}"))?;
    let response: web_sys::Response = response
        .dyn_into()
        .map_err(|_| format!("cannot fetch {url}"))?;
    if !response.ok() {
        return Err(format!("cannot fetch {url}: HTTP {}", response.status()));
    }
    let buffer = JsFuture::from(
        response
            .array_buffer()
            .map_err(|e| format!("cannot read {url}: {e:?}"))?,
    )
    .await
    .map_err(|e| format!("cannot read {url}: {e:?}"))?;
    Ok(Uint8Array::new(&buffer).to_vec())
}

async fn fetch_text(url: &str) -> Result<String, String> {
    String::from_utf8(fetch_bytes(url).await?).map_err(|_| format!("{url} is not UTF-8"))
}

/// Fetch the manifest and labels, start the worker, load the chosen model and, in the embed
/// layout, the `image` URL.
fn boot(ctx: Ctx) {
    if let Err(message) = start_workers(ctx) {
        ctx.fail(message);
        return;
    }
    leptos::task::spawn_local(async move {
        let loaded = async {
            let manifest =
                Manifest::from_json(&fetch_text(&format!("{MODELS}/manifest.json")).await?)
                    .map_err(|e| e.to_string())?;
            let labels = fetch_text(&format!("{MODELS}/imagenet_classes.txt")).await?;
            Ok::<_, String>((manifest, labels))
        };
        match loaded.await {
            Ok((manifest, labels)) => {
                ctx.manifest.set(Some(manifest));
                ctx.labels.set(labels);
                load_bundled_model(ctx, ctx.model_choice.get_untracked());
            }
            Err(message) => ctx.fail(message),
        }
        if let Some(url) = url_param("image") {
            match fetch_bytes(&url).await {
                Ok(bytes) => set_image(ctx, url.rsplit('/').next().unwrap_or(&url).into(), bytes),
                Err(message) => ctx.fail(message),
            }
        }
    });
}

/// Fetch a bundled model and send it to the worker.
pub fn load_bundled_model(ctx: Ctx, name: String) {
    let entry = ctx
        .manifest
        .with_untracked(|m| m.as_ref().and_then(|m| m.model(&name).ok().cloned()));
    let Some(entry) = entry else {
        ctx.fail(format!("no bundled model is called `{name}`"));
        return;
    };
    let detector = match &entry.face {
        Some(crop) => match ctx
            .manifest
            .with_untracked(|m| m.as_ref().map(|m| m.model(&crop.detector).cloned()))
        {
            Some(Ok(detector)) => Some(detector),
            Some(Err(e)) => return ctx.fail(e.to_string()),
            None => None,
        },
        None => None,
    };
    new_model(ctx, name.clone());
    let started = now_ms();
    leptos::task::spawn_local(async move {
        let fetched = async {
            let model = fetch_entry(ctx, &entry).await?;
            let detector = match &detector {
                Some(detector) => Some(fetch_entry(ctx, detector).await?),
                None => None,
            };
            Ok::<_, String>((model, detector))
        };
        match fetched.await {
            Ok(((spec, bytes), detector)) => {
                ctx.timing("model_fetch_ms", now_ms() - started);
                send_model(ctx, spec, detector, bytes);
                resend_image(ctx);
            }
            Err(message) => ctx.fail(message),
        }
    });
}

/// A bundled model's spec (with its labels) and ONNX bytes.
async fn fetch_entry(
    ctx: Ctx,
    entry: &camlime_base::ModelEntry,
) -> Result<(ModelSpec, Vec<u8>), String> {
    // The ImageNet names are fetched at boot; a model with other labels (a detector's COCO
    // classes) brings its own file.
    let labels = match entry.labels.as_str() {
        "imagenet_classes.txt" => ctx.labels.get_untracked(),
        file => fetch_text(&format!("{MODELS}/{file}")).await?,
    };
    let spec = entry.spec(&labels).map_err(|e| e.to_string())?;
    Ok((
        spec,
        fetch_bytes(&format!("{MODELS}/{}", entry.file)).await?,
    ))
}

/// Another model is chosen: what was chosen on the last one's results (a box, a region, a
/// face, a reference) does not carry over.
fn new_model(ctx: Ctx, choice: String) {
    ctx.model_choice.set(choice.clone());
    ctx.model.set(ModelState::Loading(choice));
    ctx.config.update(|c| c.task = TaskConfig::default());
    ctx.reference.set(None);
    ctx.face.set(None);
    CLIENT.with_borrow_mut(|client| {
        if let Some(client) = client {
            client.face = 0;
        }
    });
}

/// A user's ONNX file: ImageNet preprocessing, ImageNet labels if it has 1000 classes.
pub fn load_user_model(ctx: Ctx, name: String, bytes: Vec<u8>) {
    let mut spec = ModelSpec::user_model(name.trim_end_matches(".onnx"));
    spec.labels = camlime_base::manifest::parse_labels(&ctx.labels.get_untracked());
    new_model(ctx, format!("user:{name}"));
    send_model(ctx, spec, None, bytes);
    resend_image(ctx);
}

fn resend_image(ctx: Ctx) {
    let image = CLIENT.with_borrow(|c| c.as_ref().and_then(|c| c.image.clone()));
    if let Some(bytes) = image {
        ctx.record.set(None);
        send_image(bytes);
    }
}

/// A new image: predict it (the worker keeps it for explanations).
pub fn set_image(ctx: Ctx, name: String, bytes: Vec<u8>) {
    ctx.error.set(None);
    ctx.image_name.set(Some(name));
    ctx.record.set(None);
    ctx.gallery.set(Vec::new());
    // A box or a region belongs to the last image; a reference face holds for any.
    ctx.config.update(|c| {
        if !matches!(c.task, TaskConfig::Identity(_)) {
            c.task = TaskConfig::default();
        }
    });
    CLIENT.with_borrow_mut(|client| {
        if let Some(client) = client {
            client.face = 0;
        }
    });
    send_image(bytes);
}

/// The explanation settings of the controls, checked.
pub fn config(ctx: Ctx) -> Result<ExplainConfig, String> {
    let config = ctx.config.get_untracked();
    config.check().map_err(|e| e.to_string())?;
    Ok(config)
}

/// Start an explanation with the controls' parameters.
pub fn explain(ctx: Ctx) {
    match config(ctx) {
        Ok(config) => run(ctx, config),
        Err(message) => ctx.fail(message),
    }
}

/// Start an explanation with the given parameters.
pub fn run(ctx: Ctx, config: ExplainConfig) {
    if ctx.running.get_untracked().is_some() {
        return;
    }
    ctx.error.set(None);
    ctx.notice.set(None);
    let source = ctx.image_name.get_untracked();
    if ctx.use_server.get_untracked() && !remote::server_base(ctx).is_empty() {
        let (id, image) = CLIENT
            .with_borrow_mut(|client| {
                let client = client.as_mut()?;
                let id = client.next_id;
                client.next_id += 1;
                Some((id, client.image.clone()?))
            })
            .unwrap_or_default();
        if image.is_empty() {
            return ctx.fail(ctx.tr("no_image"));
        }
        ctx.running.set(Some(Running::new(id, true)));
        remote::run(ctx, id, config, source, image);
        return;
    }
    let workers = CLIENT.with_borrow(|c| c.as_ref().map_or(1, |c| c.slots.len()));
    let id = send(
        |id| Request::Explain {
            id,
            config: Box::new(config),
            source,
            workers,
        },
        None,
    );
    ctx.running.set(Some(Running::new(id, false)));
}

/// Stop the running explanation: the worker is replaced by a fresh one.
pub fn cancel(ctx: Ctx) {
    let Some(running) = ctx.running.get_untracked() else {
        return;
    };
    if running.on_server {
        remote::cancel();
        ctx.running.set(None);
        ctx.notice.set(Some(ctx.tr("cancelled").into()));
        return;
    }
    CLIENT.with_borrow(|c| {
        for slot in c.iter().flat_map(|c| &c.slots) {
            slot.worker.terminate();
        }
    });
    ctx.running.set(None);
    ctx.replay_of.set(None);
    if let Err(message) = start_workers(ctx) {
        ctx.fail(message);
    }
    ctx.notice.set(Some(ctx.tr("cancelled").into()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_starts_from_the_schemas_defaults() {
        assert_eq!(initial_config(false, |_| None), ExplainConfig::default());
        let embedded = initial_config(true, |_| None);
        assert_eq!(embedded.method, Method::Cam(CamMethod::GradCam));
        assert_eq!(embedded.lime, ExplainConfig::default().lime);
        let asked = initial_config(false, |name| match name {
            "method" => Some("lime".into()),
            "samples" => Some("300".into()),
            _ => None,
        });
        assert_eq!((asked.method, asked.lime.num_samples), (Method::Lime, 300));
        let garbled = initial_config(false, |_| Some("x".into()));
        assert_eq!(garbled, ExplainConfig::default());
    }
}
