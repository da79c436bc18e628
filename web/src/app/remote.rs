//! "Run on server": the explanation goes to a `camlime serve` URL as a job (`POST /v1/jobs`, the
//! image and `{model, config, source, face}` as a form), its progress comes back as Server-Sent
//! Events, and the finished record is shown in the same result view as a local one. The server
//! must list the page's origin in `--cors-origin`, or serve the page itself.
//!
//! A server with tokens gets the page's token as `Authorization: Bearer` on every request; the
//! token lives in the page's storage, never in a URL. `EventSource` cannot send a header, so the
//! events are read from a `fetch` response's stream.

use std::cell::RefCell;

use camlime_base::{ExplainConfig, ExplanationRecord};
use js_sys::{Array, Reflect, Uint8Array};
use leptos::prelude::*;
use serde_json::{Value, json};
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::{AbortController, Blob, FormData, Headers, ReadableStreamDefaultReader, RequestInit};

use super::{Ctx, finished};

/// The job being followed.
struct Remote {
    /// Server URL without a trailing slash.
    base: String,
    /// The token its requests carry.
    token: String,
    /// The server's job id.
    job: String,
    /// Stops reading the events.
    abort: AbortController,
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

/// A request's settings: the method and, when there is a token, its `Authorization` header.
fn request(method: &str, token: &str) -> Result<RequestInit, String> {
    let init = RequestInit::new();
    init.set_method(method);
    if !token.is_empty() {
        let headers = Headers::new().map_err(|e| js_error("Headers", e))?;
        headers
            .set("Authorization", &format!("Bearer {token}"))
            .map_err(|e| js_error("the token", e))?;
        init.set_headers(&headers);
    }
    Ok(init)
}

/// Fetch `url`; a network failure says the server cannot be reached.
async fn fetch(url: &str, init: &RequestInit) -> Result<web_sys::Response, String> {
    let response = JsFuture::from(
        web_sys::window()
            .ok_or("no window")?
            .fetch_with_str_and_init(url, init),
    )
    .await
    .map_err(|e| js_error(&format!("cannot reach {url}"), e))?;
    response
        .dyn_into()
        .map_err(|_| format!("cannot reach {url}"))
}

async fn body_text(response: &web_sys::Response) -> Result<String, String> {
    Ok(JsFuture::from(
        response
            .text()
            .map_err(|e| js_error("cannot read the answer", e))?,
    )
    .await
    .map_err(|e| js_error("cannot read the answer", e))?
    .as_string()
    .unwrap_or_default())
}

/// An HTTP error as the server's message.
async fn http_error(response: &web_sys::Response) -> String {
    let text = body_text(response).await.unwrap_or_default();
    let message = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
        .unwrap_or(text);
    format!("server: HTTP {}: {message}", response.status())
}

/// Fetch `url` and read the body as text; an HTTP error becomes the server's message.
async fn fetch_text(url: &str, init: &RequestInit) -> Result<String, String> {
    let response = fetch(url, init).await?;
    if response.ok() {
        body_text(&response).await
    } else {
        Err(http_error(&response).await)
    }
}

/// What a job is submitted with.
struct Submission {
    model: String,
    config: ExplainConfig,
    source: Option<String>,
    face: Option<usize>,
    image: Vec<u8>,
}

async fn submit(base: &str, token: &str, job: &Submission) -> Result<String, String> {
    let form = FormData::new().map_err(|e| js_error("FormData", e))?;
    let parts = Array::of1(&Uint8Array::from(job.image.as_slice()));
    let blob = Blob::new_with_u8_array_sequence(&parts).map_err(|e| js_error("Blob", e))?;
    form.append_with_blob_and_filename("image", &blob, "image")
        .map_err(|e| js_error("FormData", e))?;
    let mut request_json = json!({"model": job.model, "config": job.config, "source": job.source});
    if let Some(face) = job.face {
        request_json["face"] = json!(face);
    }
    form.append_with_str("request", &request_json.to_string())
        .map_err(|e| js_error("FormData", e))?;
    let init = request("POST", token)?;
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
    remote.abort.abort();
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
    let token = ctx.server_token.get_untracked().trim().to_owned();
    // A face model's server crops the same face from the photo.
    let face = ctx.face.with_untracked(|f| f.as_ref().map(|f| f.face));
    let job = Submission {
        model,
        config,
        source,
        face,
        image,
    };
    leptos::task::spawn_local(async move {
        match submit(&base, &token, &job).await {
            Ok(job) => follow(ctx, id, base, token, job).await,
            Err(message) => fail(ctx, id, message),
        }
    });
}

/// One event's JSON: its `data:` lines joined.
fn event_data(event: &str) -> Option<String> {
    let lines: Vec<&str> = event
        .lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .map(|data| data.strip_prefix(' ').unwrap_or(data))
        .collect();
    (!lines.is_empty()).then(|| lines.join("\n"))
}

/// Read the job's events until its final status (returned); progress goes to the bar.
async fn read_events(
    ctx: Ctx,
    id: u64,
    url: &str,
    init: &RequestInit,
) -> Result<Option<Value>, String> {
    let response = fetch(url, init).await?;
    if !response.ok() {
        return Err(http_error(&response).await);
    }
    let reader: ReadableStreamDefaultReader = response
        .body()
        .ok_or("server: the events have no body")?
        .get_reader()
        .dyn_into()
        .map_err(|_| "server: the events cannot be read")?;
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let chunk = JsFuture::from(reader.read())
            .await
            .map_err(|e| js_error("the events stopped", e))?;
        if Reflect::get(&chunk, &"done".into())
            .ok()
            .and_then(|d| d.as_bool())
            .unwrap_or(true)
        {
            return Ok(None);
        }
        if let Ok(value) = Reflect::get(&chunk, &"value".into()) {
            pending.extend(Uint8Array::new(&value).to_vec());
        }
        // Events end with a blank line; a chunk may end inside one.
        while let Some(end) = pending.windows(2).position(|w| w == b"\n\n") {
            let event: Vec<u8> = pending.drain(..end + 2).collect();
            let Some(status) = event_data(&String::from_utf8_lossy(&event))
                .and_then(|data| serde_json::from_str::<Value>(&data).ok())
            else {
                continue;
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
                _ => return Ok(Some(status)),
            }
        }
    }
}

async fn follow(ctx: Ctx, id: u64, base: String, token: String, job: String) {
    let url = format!("{base}/v1/jobs/{job}");
    if ctx.running.get_untracked().is_none_or(|r| r.id != id) {
        // Cancelled while the job was being submitted.
        if let Ok(init) = request("DELETE", &token) {
            let _ = fetch_text(&url, &init).await;
        }
        return;
    }
    let (abort, init) = match (AbortController::new(), request("GET", &token)) {
        (Ok(abort), Ok(init)) => (abort, init),
        (Err(e), _) => return fail(ctx, id, js_error("AbortController", e)),
        (_, Err(message)) => return fail(ctx, id, message),
    };
    init.set_signal(Some(&abort.signal()));
    REMOTE.with_borrow_mut(|remote| {
        *remote = Some(Remote {
            base,
            token: token.clone(),
            job: job.clone(),
            abort,
        });
    });
    let outcome = read_events(ctx, id, &format!("{url}/events"), &init).await;
    let still_followed = REMOTE.with_borrow(|r| r.as_ref().is_some_and(|r| r.job == job));
    if !still_followed {
        // Cancelled: the events were cut on purpose.
        return;
    }
    stop_following();
    let status = match outcome {
        Ok(Some(status)) => status,
        Ok(None) => return fail(ctx, id, ctx.tr("server_lost").into()),
        Err(message) => return fail(ctx, id, message),
    };
    if status["status"] != "done" {
        let message = status["error"]["message"]
            .as_str()
            .unwrap_or("the job failed");
        return fail(ctx, id, format!("server: {message}"));
    }
    let fetched = match request("GET", &token) {
        Ok(init) => fetch_text(&url, &init).await,
        Err(message) => Err(message),
    }
    .and_then(|text| {
        let mut job: Value = serde_json::from_str(&text).map_err(|e| format!("server: {e}"))?;
        serde_json::from_value::<ExplanationRecord>(job["result"].take())
            .map_err(|e| format!("server: not an explanation record: {e}"))
    });
    match fetched {
        Ok(record) => finished(ctx, id, record),
        Err(message) => fail(ctx, id, message),
    }
}

/// Cancel the followed job on the server (if it was submitted already; a job still being
/// submitted is deleted when its id arrives).
pub fn cancel() {
    let Some(remote) = stop_following() else {
        return;
    };
    let url = format!("{}/v1/jobs/{}", remote.base, remote.job);
    leptos::task::spawn_local(async move {
        if let Ok(init) = request("DELETE", &remote.token) {
            let _ = fetch_text(&url, &init).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_events_data_lines_are_its_json() {
        assert_eq!(
            event_data("data: {\"status\":\"done\"}\n\n").as_deref(),
            Some("{\"status\":\"done\"}")
        );
        assert_eq!(
            event_data(": keep-alive\ndata:{\"a\":\ndata: 1}\n\n").as_deref(),
            Some("{\"a\":\n1}")
        );
        assert_eq!(event_data(": keep-alive\n\n"), None);
    }
}
