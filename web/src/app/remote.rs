//! "Run on server": the explanation goes to a `camlime serve` URL as a job (`POST /v1/jobs`, the
//! image and `{model, config, source, face}` as a form), its progress comes back as Server-Sent Events,
//! and the finished record is shown in the same result view as a local one. The server must list
//! the page's origin in `--cors-origin`, or serve the page itself.

use std::cell::RefCell;

use camlime_base::{ExplainConfig, ExplanationRecord};
use js_sys::{Array, Uint8Array};
use leptos::prelude::*;
use serde_json::{Value, json};
use wasm_bindgen::JsCast;
use wasm_bindgen::closure::Closure;
use wasm_bindgen_futures::JsFuture;
use web_sys::{Blob, EventSource, FormData, MessageEvent, RequestInit};

use super::{Ctx, finished};

/// The job being followed.
struct Remote {
    /// Server URL without a trailing slash.
    base: String,
    /// The server's job id.
    job: String,
    events: EventSource,
    _on_message: Closure<dyn FnMut(MessageEvent)>,
    _on_error: Closure<dyn FnMut(web_sys::Event)>,
}

thread_local! {
    static REMOTE: RefCell<Option<Remote>> = const { RefCell::new(None) };
}

/// The server URL as typed, without a trailing slash.
pub fn server_base(ctx: Ctx) -> String {
    ctx.server
        .get_untracked()
        .trim()
        .trim_end_matches('/')
        .to_owned()
}

fn js_error(what: &str, error: wasm_bindgen::JsValue) -> String {
    format!(
        "{what}: {}",
        error.as_string().unwrap_or_else(|| format!("{error:?}"))
    )
}

/// Fetch `url` and read the body as text; an HTTP error becomes the server's message.
async fn fetch_text(url: &str, init: &RequestInit) -> Result<String, String> {
    let response = JsFuture::from(
        web_sys::window()
            .ok_or("no window")?
            .fetch_with_str_and_init(url, init),
    )
    .await
    .map_err(|e| js_error(&format!("cannot reach {url}"), e))?;
    let response: web_sys::Response = response
        .dyn_into()
        .map_err(|_| format!("cannot reach {url}"))?;
    let text = JsFuture::from(
        response
            .text()
            .map_err(|e| js_error("cannot read the answer", e))?,
    )
    .await
    .map_err(|e| js_error("cannot read the answer", e))?
    .as_string()
    .unwrap_or_default();
    if response.ok() {
        return Ok(text);
    }
    let message = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
        .unwrap_or(text);
    Err(format!("server: HTTP {}: {message}", response.status()))
}

async fn submit(
    base: &str,
    model: &str,
    config: &ExplainConfig,
    source: Option<String>,
    face: Option<usize>,
    image: &[u8],
) -> Result<String, String> {
    let form = FormData::new().map_err(|e| js_error("FormData", e))?;
    let parts = Array::of1(&Uint8Array::from(image));
    let blob = Blob::new_with_u8_array_sequence(&parts).map_err(|e| js_error("Blob", e))?;
    form.append_with_blob_and_filename("image", &blob, "image")
        .map_err(|e| js_error("FormData", e))?;
    let mut request = json!({"model": model, "config": config, "source": source});
    if let Some(face) = face {
        request["face"] = json!(face);
    }
    form.append_with_str("request", &request.to_string())
        .map_err(|e| js_error("FormData", e))?;
    let init = RequestInit::new();
    init.set_method("POST");
    init.set_body(&form);
    let text = fetch_text(&format!("{base}/v1/jobs"), &init).await?;
    let status: Value = serde_json::from_str(&text).map_err(|e| format!("server: {e}"))?;
    status["id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| "server: the answer names no job".into())
}

fn stop_following() -> Option<Remote> {
    let remote = REMOTE.with_borrow_mut(Option::take)?;
    remote.events.close();
    Some(remote)
}

fn fail(ctx: Ctx, id: u64, message: String) {
    if ctx.running.get_untracked().is_some_and(|r| r.id == id) {
        ctx.running.set(None);
        ctx.fail(message);
    }
}

/// Send the explanation to the server and follow it.
pub fn run(ctx: Ctx, id: u64, config: ExplainConfig, source: Option<String>, image: Vec<u8>) {
    let base = server_base(ctx);
    let model = ctx.model_choice.get_untracked();
    if model.starts_with("user:") {
        return fail(ctx, id, ctx.tr("server_bundled_only").into());
    }
    // A face model's server crops the same face from the photo.
    let face = ctx.face.with_untracked(|f| f.as_ref().map(|f| f.face));
    leptos::task::spawn_local(async move {
        match submit(&base, &model, &config, source, face, &image).await {
            Ok(job) => follow(ctx, id, base, job),
            Err(message) => fail(ctx, id, message),
        }
    });
}

fn follow(ctx: Ctx, id: u64, base: String, job: String) {
    if ctx.running.get_untracked().is_none_or(|r| r.id != id) {
        // Cancelled while the job was being submitted.
        let init = RequestInit::new();
        init.set_method("DELETE");
        let url = format!("{base}/v1/jobs/{job}");
        leptos::task::spawn_local(async move {
            let _ = fetch_text(&url, &init).await;
        });
        return;
    }
    let events = match EventSource::new(&format!("{base}/v1/jobs/{job}/events")) {
        Ok(events) => events,
        Err(e) => return fail(ctx, id, js_error("cannot follow the job", e)),
    };
    let result_url = format!("{base}/v1/jobs/{job}");
    let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
        let Some(status) = event
            .data()
            .as_string()
            .and_then(|d| serde_json::from_str::<Value>(&d).ok())
        else {
            return;
        };
        match status["status"].as_str().unwrap_or("") {
            "queued" | "running" => ctx.running.update(|running| {
                if let Some(r) = running.as_mut().filter(|r| r.id == id) {
                    let progress = &status["progress"];
                    r.stage = progress["stage"].as_str().unwrap_or("queued").to_owned();
                    r.done = progress["done"].as_u64().unwrap_or(0) as usize;
                    r.total = progress["total"].as_u64().unwrap_or(0) as usize;
                }
            }),
            "done" => {
                stop_following();
                let url = result_url.clone();
                leptos::task::spawn_local(async move {
                    let fetched = fetch_text(&url, &RequestInit::new())
                        .await
                        .and_then(|text| {
                            let mut job: Value =
                                serde_json::from_str(&text).map_err(|e| format!("server: {e}"))?;
                            serde_json::from_value::<ExplanationRecord>(job["result"].take())
                                .map_err(|e| format!("server: not an explanation record: {e}"))
                        });
                    match fetched {
                        Ok(record) => finished(ctx, id, record),
                        Err(message) => fail(ctx, id, message),
                    }
                });
            }
            _ => {
                stop_following();
                let message = status["error"]["message"]
                    .as_str()
                    .unwrap_or("the job failed");
                fail(ctx, id, format!("server: {message}"));
            }
        }
    });
    let on_error = Closure::<dyn FnMut(web_sys::Event)>::new(move |_| {
        let closed = REMOTE.with_borrow(|r| {
            r.as_ref()
                .is_some_and(|r| r.events.ready_state() == EventSource::CLOSED)
        });
        if closed {
            stop_following();
            fail(ctx, id, ctx.tr("server_lost").into());
        }
    });
    events.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    events.set_onerror(Some(on_error.as_ref().unchecked_ref()));
    REMOTE.with_borrow_mut(|remote| {
        *remote = Some(Remote {
            base,
            job,
            events,
            _on_message: on_message,
            _on_error: on_error,
        });
    });
}

/// Cancel the followed job on the server (if it was submitted already; a job still being
/// submitted is deleted when its id arrives).
pub fn cancel() {
    let Some(remote) = stop_following() else {
        return;
    };
    let init = RequestInit::new();
    init.set_method("DELETE");
    let url = format!("{}/v1/jobs/{}", remote.base, remote.job);
    leptos::task::spawn_local(async move {
        let _ = fetch_text(&url, &init).await;
    });
}
