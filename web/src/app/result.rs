//! Drawing results: the CAM overlay, LIME/CamLIME masks with boundaries (re-rendered from the
//! record when the view options change, never recomputed), the weight–feature chart, the
//! comparison strip, downloads, and loading a record to show or replay it.

use camlime_base::detection::BoxChoice;
use camlime_base::record::{ExplanationRecord, Method, TaskConfig, TaskRecord, image_sha256};
use camlime_base::render::{
    MaskOptions, PREDICTED, REGION, cam_overlay, mask_picture, outline_detections, outline_region,
    tint_region, weight_plot_svg,
};
use image::RgbImage;
use leptos::prelude::*;
use wasm_bindgen::{Clamped, JsCast};
use web_sys::{CanvasRenderingContext2d, HtmlCanvasElement};

use super::{Ctx, GalleryItem, ModelState, run};

fn context_2d(canvas: &HtmlCanvasElement) -> Option<CanvasRenderingContext2d> {
    canvas.get_context("2d").ok().flatten()?.dyn_into().ok()
}

/// Put an RGB image on a canvas (resized to it).
fn draw(canvas: &HtmlCanvasElement, image: &RgbImage) {
    let (w, h) = image.dimensions();
    canvas.set_width(w);
    canvas.set_height(h);
    let rgba: Vec<u8> = image
        .pixels()
        .flat_map(|p| [p.0[0], p.0[1], p.0[2], 255])
        .collect();
    let data = web_sys::ImageData::new_with_u8_clamped_array_and_sh(Clamped(&rgba), w, h);
    if let (Some(context), Ok(data)) = (context_2d(canvas), data) {
        let _ = context.put_image_data(&data, 0.0, 0.0);
    }
}

/// An RGB image as a PNG data URL (drawn through a detached canvas).
pub fn data_url(image: &RgbImage) -> String {
    document()
        .create_element("canvas")
        .ok()
        .and_then(|e| e.dyn_into::<HtmlCanvasElement>().ok())
        .and_then(|canvas| {
            draw(&canvas, image);
            canvas.to_data_url().ok()
        })
        .unwrap_or_default()
}

fn mask_options(ctx: Ctx) -> MaskOptions {
    let show = ctx.show.get();
    MaskOptions {
        positive_only: show == "positive",
        negative_only: show == "negative",
        hide_rest: ctx.hide_rest.get(),
        num_features: ctx.num_features.get(),
        ..MaskOptions::default()
    }
}

/// The record's pictures: (caption key, image), main picture first.
fn pictures(
    record: &ExplanationRecord,
    base: &RgbImage,
    options: &MaskOptions,
) -> Result<Vec<(&'static str, RgbImage)>, String> {
    let mut out = Vec::new();
    if let (Some(segments), Some(main)) = (&record.segments, record.main_explanation()) {
        let segmentation = segments.segmentation().map_err(|e| e.to_string())?;
        out.push((
            "result",
            mask_picture(base, &segmentation, main, options).map_err(|e| e.to_string())?,
        ));
        if let Some(baseline) = record.lime_baseline.iter().find(|e| e.label == main.label) {
            out.push((
                "lime_baseline",
                mask_picture(base, &segmentation, baseline, options).map_err(|e| e.to_string())?,
            ));
        }
    }
    if let Some(cam) = &record.cam {
        let overlay = cam_overlay(base, &cam.map, 0.5).map_err(|e| e.to_string())?;
        out.push((if out.is_empty() { "result" } else { "cam_map" }, overlay));
    }
    // A detection's or a segmentation's pictures show the explained box or region, and (when a
    // canvas is free) what the model found.
    let size = [base.height(), base.width()];
    match &record.task {
        Some(TaskRecord::Detection { detections, target }) => {
            for (_, picture) in &mut out {
                *picture = outline_detections(
                    picture,
                    std::slice::from_ref(&target.detection),
                    size,
                    Some(&target.detection),
                );
            }
            if out.len() < 3 {
                out.push((
                    "detections",
                    outline_detections(base, detections, size, Some(&target.detection)),
                ));
            }
        }
        Some(TaskRecord::Segmentation(target)) => {
            for (_, picture) in &mut out {
                *picture = outline_region(picture, &target.region, REGION, 2)
                    .map_err(|e| e.to_string())?;
            }
            if out.len() < 3 {
                let tinted = tint_region(base, &target.predicted, PREDICTED, 0.45)
                    .map_err(|e| e.to_string())?;
                out.push((
                    "segmentation",
                    outline_region(&tinted, &target.region, REGION, 2)
                        .map_err(|e| e.to_string())?,
                ));
            }
        }
        Some(TaskRecord::Identity(_)) | None => {}
    }
    Ok(out)
}

/// The detection whose box holds the point (base-image pixels), the smallest if several do.
fn box_at(record: &ExplanationRecord, x: f32, y: f32) -> Option<usize> {
    let Some(TaskRecord::Detection { detections, .. }) = &record.task else {
        return None;
    };
    detections
        .iter()
        .enumerate()
        .filter(|(_, d)| d.bbox.x0 <= x && x <= d.bbox.x1 && d.bbox.y0 <= y && y <= d.bbox.y1)
        .min_by(|(_, a), (_, b)| a.bbox.area().total_cmp(&b.bbox.area()))
        .map(|(k, _)| k)
}

/// Explain detection `k` of the current record's model with the record's settings.
fn explain_box(ctx: Ctx, k: usize) {
    let Some(record) = ctx.record.get_untracked() else {
        return;
    };
    let mut config = record.config.clone();
    config.task = TaskConfig::Detection(BoxChoice {
        index: Some(k),
        class: None,
    });
    ctx.config.update(|c| c.task = config.task.clone());
    run(ctx, config);
}

fn title(record: &ExplanationRecord) -> String {
    let method = record.config.method;
    let layers = record.layers.join(" + ");
    match method {
        Method::CamLime => format!("CamLIME · {} · {layers}", record.config.cam.method.title()),
        Method::Lime => format!("LIME · {}", record.config.segmenter.name()),
        Method::Cam(m) => format!("{} · {layers}", m.title()),
    }
}

/// Keep a finished explanation's main picture in the comparison strip.
pub fn add_to_gallery(ctx: Ctx, record: &ExplanationRecord, elapsed_ms: f64) {
    let Some(base) = ctx.base.get_untracked() else {
        return;
    };
    let options = MaskOptions {
        num_features: ctx.num_features.get_untracked(),
        ..MaskOptions::default()
    };
    if let Ok(pictures) = pictures(record, &base, &options) {
        let Some((_, main)) = pictures.into_iter().next() else {
            return;
        };
        ctx.gallery.update(|items| {
            let id = items.last().map_or(1, |i| i.id + 1);
            items.push(GalleryItem {
                id,
                title: title(record),
                subtitle: format!("{} · {:.2} s", record.target.label, elapsed_ms / 1e3),
                url: data_url(&main),
            });
        });
    }
}

fn download(url: &str, name: &str) {
    if let Ok(anchor) = document().create_element("a") {
        let _ = anchor.set_attribute("href", url);
        let _ = anchor.set_attribute("download", name);
        if let Some(anchor) = anchor.dyn_ref::<web_sys::HtmlElement>() {
            anchor.click();
        }
    }
}

fn download_record(record: &ExplanationRecord) -> Result<(), String> {
    let json = serde_json::to_string_pretty(record).map_err(|e| e.to_string())?;
    let parts = js_sys::Array::of1(&json.into());
    let options = web_sys::BlobPropertyBag::new();
    options.set_type("application/json");
    let blob = web_sys::Blob::new_with_str_sequence_and_options(&parts, &options)
        .map_err(|e| format!("{e:?}"))?;
    let url = web_sys::Url::create_object_url_with_blob(&blob).map_err(|e| format!("{e:?}"))?;
    download(
        &url,
        &format!("{}.{}.json", stem(record), record.config.method.name()),
    );
    let _ = web_sys::Url::revoke_object_url(&url);
    Ok(())
}

fn stem(record: &ExplanationRecord) -> String {
    record
        .image
        .source
        .as_deref()
        .and_then(|s| s.rsplit('/').next())
        .and_then(|s| s.split('.').next())
        .unwrap_or("image")
        .to_owned()
}

/// Show a record read from a file: it must be of the loaded model and the current image.
fn load_record(ctx: Ctx, bytes: &[u8]) -> Result<(), String> {
    let record: ExplanationRecord =
        serde_json::from_slice(bytes).map_err(|e| format!("not an explanation record: {e}"))?;
    let ModelState::Ready(model, _) = ctx.model.get_untracked() else {
        return Err("load the record's model first".into());
    };
    if model.sha256 != record.model.sha256 {
        return Err(format!(
            "the record explains model {} (sha256 {}…), not the loaded {}",
            record.model.name,
            &record.model.sha256.get(..12).unwrap_or_default(),
            model.name
        ));
    }
    let matches = ctx.base.with_untracked(|b| {
        b.as_ref()
            .is_some_and(|b| image_sha256(b) == record.image.sha256)
    });
    if !matches {
        return Err(format!(
            "the record explains another image ({}); open that image first",
            record.image.source.as_deref().unwrap_or("unnamed")
        ));
    }
    ctx.config.update(|c| c.target = Some(record.target.class));
    ctx.record.set(Some(record));
    Ok(())
}

/// The current explanation.
#[component]
pub fn ResultView() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let main_canvas = NodeRef::<leptos::html::Canvas>::new();
    let side_canvases: [NodeRef<leptos::html::Canvas>; 2] = [NodeRef::new(), NodeRef::new()];
    let captions = RwSignal::new(Vec::<&'static str>::new());
    Effect::new(move || {
        let options = mask_options(ctx);
        let drawn = ctx.record.with(|record| {
            ctx.base.with(|base| match (record, base) {
                (Some(record), Some(base)) => Some(pictures(record, base, &options)),
                _ => None,
            })
        });
        match drawn {
            Some(Ok(pictures)) => {
                let canvases = std::iter::once(main_canvas).chain(side_canvases);
                for ((_, picture), canvas) in pictures.iter().zip(canvases) {
                    if let Some(canvas) = canvas.get() {
                        draw(&canvas, picture);
                    }
                }
                captions.set(pictures.iter().map(|(c, _)| *c).collect());
            }
            Some(Err(message)) => ctx.fail(message),
            None => captions.set(Vec::new()),
        }
    });
    let has_segments = move || {
        ctx.record
            .with(|r| r.as_ref().is_some_and(|r| r.segments.is_some()))
    };
    let max_features = move || {
        ctx.record.with(|r| {
            r.as_ref()
                .and_then(|r| r.segments.as_ref())
                .map_or(1, |s| s.count)
        })
    };
    let chart = move || {
        ctx.record.with(|record| {
            let record = record.as_ref()?;
            let curves = record.weight_curves();
            if curves.is_empty() {
                return None;
            }
            weight_plot_svg(
                &curves,
                &format!("{} — {}", stem(record), record.target.label),
            )
            .ok()
        })
    };
    let summary = move || {
        ctx.record.with(|record| {
            record.as_ref().map(|r| {
                let fit = r
                    .main_explanation()
                    .map(|e| format!(" · {} {:.3}", ctx.tr("r2"), e.score))
                    .unwrap_or_default();
                let value = match &r.task {
                    Some(TaskRecord::Segmentation(t)) => format!("{:.1}", t.score),
                    Some(TaskRecord::Identity(t)) => format!("{:.4}", t.similarity),
                    _ => format!("{:.1}%", 100.0 * r.target.probability),
                };
                format!(
                    "{} · {}: {} ({value}){fit} · {} {:.2} s",
                    title(r),
                    ctx.tr("target"),
                    r.target.label,
                    ctx.tr("took"),
                    r.timings.total_ms / 1e3
                )
            })
        })
    };
    // A detector's findings, one button each: (index, text, whether it is the explained one).
    let boxes = move || {
        ctx.record
            .with(|record| match record.as_ref()?.task.as_ref()? {
                TaskRecord::Detection { detections, target } => Some(
                    detections
                        .iter()
                        .enumerate()
                        .map(|(k, d)| {
                            (
                                k,
                                format!("{k} · {} {:.2}", d.label, d.score),
                                d == &target.detection,
                            )
                        })
                        .collect::<Vec<_>>(),
                ),
                TaskRecord::Segmentation(_) | TaskRecord::Identity(_) => None,
            })
    };
    let caption = move |i: usize| move || captions.with(|c| c.get(i).map(|&k| ctx.tr(k)));
    let shown = move |i: usize| move || captions.with(|c| c.len() > i);
    view! {
        <div class="card result" id="result" data-has-result=move || ctx.record.with(Option::is_some).to_string()>
            <div class="result-head">
                <h2>{move || ctx.tr("result")}</h2>
                <div class="actions">
                    <Show when=move || !ctx.embed>
                        <button id="download-png" class="ghost" prop:disabled=move || ctx.record.with(Option::is_none)
                            on:click=move |_| if let Some(canvas) = main_canvas.get()
                                && let (Ok(url), Some(record)) = (canvas.to_data_url(), ctx.record.get_untracked()) {
                                download(&url, &format!("{}.{}.png", stem(&record), record.config.method.name()));
                            }>{move || ctx.tr("download_png")}</button>
                        <button id="download-record" class="ghost" prop:disabled=move || ctx.record.with(Option::is_none)
                            on:click=move |_| if let Some(record) = ctx.record.get_untracked()
                                && let Err(message) = download_record(&record) {
                                ctx.fail(message)
                            }>{move || ctx.tr("download_record")}</button>
                        <label class="button ghost file">
                            {move || ctx.tr("load_record")}
                            <input id="record-file" type="file" accept=".json,application/json"
                                on:change=move |e| {
                                    let input: Option<web_sys::HtmlInputElement> = e.target().and_then(|t| t.dyn_into().ok());
                                    let file = input.as_ref().and_then(|i| i.files()).and_then(|f| f.get(0));
                                    if let Some(input) = input { input.set_value("") }
                                    if let Some(file) = file {
                                        leptos::task::spawn_local(async move {
                                            let loaded = wasm_bindgen_futures::JsFuture::from(file.array_buffer()).await
                                                .map_err(|e| format!("{e:?}"))
                                                .and_then(|b| load_record(ctx, &js_sys::Uint8Array::new(&b).to_vec()));
                                            if let Err(message) = loaded { ctx.fail(message) }
                                        });
                                    }
                                }/>
                        </label>
                        <button id="replay" class="ghost" prop:disabled=move || ctx.record.with(Option::is_none) || ctx.running.with(Option::is_some)
                            on:click=move |_| if let Some(record) = ctx.record.get_untracked() {
                                let config = record.config.clone();
                                ctx.replay_of.set(Some(record));
                                run(ctx, config);
                            }>{move || ctx.tr("replay")}</button>
                    </Show>
                </div>
            </div>
            <Show when=move || ctx.record.with(Option::is_some)
                fallback=move || view! { <p class="muted empty">{move || ctx.tr("no_result")}</p> }>
                <p class="summary" id="summary">{summary}</p>
            </Show>
            <Show when=move || boxes().is_some()>
                <div class="boxes" id="boxes">
                    <span class="muted">{move || ctx.tr("boxes_hint")}</span>
                    {move || boxes().unwrap_or_default().into_iter().map(|(k, text, chosen)| view! {
                        <button class="ghost box" class:chosen=chosen data-box=k.to_string()
                            prop:disabled=move || ctx.running.with(Option::is_some)
                            on:click=move |_| explain_box(ctx, k)>{text}</button>
                    }).collect_view()}
                </div>
            </Show>
            <div class="pictures" class:hidden=move || ctx.record.with(Option::is_none)>
                <figure>
                    <canvas id="result-canvas" node_ref=main_canvas
                        on:click=move |e: web_sys::MouseEvent| {
                            let (Some(canvas), Some(record)) = (main_canvas.get(), ctx.record.get_untracked()) else { return };
                            if ctx.running.with_untracked(Option::is_some) { return }
                            let rect = canvas.get_bounding_client_rect();
                            if rect.width() <= 0.0 || rect.height() <= 0.0 { return }
                            let x = (f64::from(e.client_x()) - rect.left()) * f64::from(canvas.width()) / rect.width();
                            let y = (f64::from(e.client_y()) - rect.top()) * f64::from(canvas.height()) / rect.height();
                            if let Some(k) = box_at(&record, x as f32, y as f32) { explain_box(ctx, k) }
                        }></canvas>
                    <figcaption>{caption(0)}</figcaption>
                </figure>
                <figure class:hidden=move || !shown(1)()>
                    <canvas id="side-canvas-1" node_ref=side_canvases[0]></canvas>
                    <figcaption>{caption(1)}</figcaption>
                </figure>
                <figure class:hidden=move || !shown(2)()>
                    <canvas id="side-canvas-2" node_ref=side_canvases[1]></canvas>
                    <figcaption>{caption(2)}</figcaption>
                </figure>
            </div>
            <Show when=move || has_segments() && !ctx.embed>
                <div class="view-options">
                    <label class="field inline">
                        <span>{move || ctx.tr("show")}</span>
                        <select id="show-select" prop:value=move || ctx.show.get() on:change=move |e| ctx.show.set(event_target_value(&e))>
                            <option value="positive">{move || ctx.tr("positive")}</option>
                            <option value="negative">{move || ctx.tr("negative")}</option>
                            <option value="both">{move || ctx.tr("both")}</option>
                        </select>
                    </label>
                    <label class="field inline check">
                        <input id="hide-rest" type="checkbox" prop:checked=move || ctx.hide_rest.get()
                            on:change=move |e| ctx.hide_rest.set(event_target_checked(&e))/>
                        <span>{move || ctx.tr("hide_rest")}</span>
                    </label>
                    <label class="field inline grow">
                        <span>{move || format!("{} {}", ctx.tr("features"), ctx.num_features.get())}</span>
                        <input id="features-slider" type="range" min="1" max=move || max_features().to_string()
                            prop:value=move || ctx.num_features.get().to_string()
                            on:input=move |e| if let Ok(n) = event_target_value(&e).parse() { ctx.num_features.set(n) }/>
                    </label>
                </div>
                <h3>{move || ctx.tr("weights_chart")}</h3>
                <div class="chart" id="weights-chart" inner_html=move || chart().unwrap_or_default()></div>
            </Show>
        </div>
    }
}

/// Every explanation of the current image, side by side.
#[component]
pub fn Gallery() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    view! {
        <Show when=move || !ctx.gallery.with(Vec::is_empty)>
            <div class="card">
                <div class="result-head">
                    <div>
                        <h2>{move || ctx.tr("compare")}</h2>
                        <p class="muted">{move || ctx.tr("compare_hint")}</p>
                    </div>
                    <button class="ghost" on:click=move |_| ctx.gallery.set(Vec::new())>{move || ctx.tr("clear")}</button>
                </div>
                <div class="gallery" id="gallery">
                    <For each=move || ctx.gallery.get() key=|item| item.id children=move |item| view! {
                        <figure>
                            <img src=item.url.clone() alt=item.title.clone()/>
                            <figcaption><strong>{item.title.clone()}</strong><br/>{item.subtitle.clone()}</figcaption>
                        </figure>
                    }/>
                </div>
            </div>
        </Show>
    }
}
