//! The page's layout and controls. Results are drawn by `result.rs`.

use camlime_base::ModelEntry;
use camlime_base::cam::CamMethod;
use camlime_base::record::{ExplainConfig, Method};
use camlime_web::i18n::Lang;
use js_sys::Uint8Array;
use leptos::ev;
use leptos::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::{File, HtmlInputElement};

use super::result::{Gallery, ResultView};
use super::{
    Ctx, MODELS, ModelState, boot, cancel, choose_face, explain, load_bundled_model,
    load_user_model, now_ms, set_image, set_reference, set_server, set_server_token,
};

async fn read_file(file: &File) -> Result<Vec<u8>, String> {
    let buffer = JsFuture::from(file.array_buffer())
        .await
        .map_err(|e| format!("cannot read {}: {e:?}", file.name()))?;
    Ok(Uint8Array::new(&buffer).to_vec())
}

/// Read a picked, dropped or pasted file and hand it to `then`.
fn with_file(ctx: Ctx, file: File, then: impl FnOnce(Ctx, String, Vec<u8>) + 'static) {
    leptos::task::spawn_local(async move {
        match read_file(&file).await {
            Ok(bytes) => then(ctx, file.name(), bytes),
            Err(message) => ctx.fail(message),
        }
    });
}

fn input_file(event: &ev::Event) -> Option<File> {
    let input: HtmlInputElement = event.target()?.dyn_into().ok()?;
    let file = input.files()?.get(0);
    input.set_value("");
    file
}

/// The whole page.
#[component]
pub fn App() -> impl IntoView {
    let ctx = Ctx::new();
    provide_context(ctx);
    ctx.set_lang(ctx.lang.get_untracked());
    boot(ctx);
    let _paste = window_event_listener(ev::paste, move |event: web_sys::ClipboardEvent| {
        let file = event
            .clipboard_data()
            .and_then(|data| data.files())
            .and_then(|files| files.get(0));
        if let Some(file) = file {
            event.prevent_default();
            with_file(ctx, file, set_image);
        }
    });
    let mounted = format!("{:.0}", now_ms());
    let model_ready = move || matches!(ctx.model.get(), ModelState::Ready(..)).to_string();
    let busy = move || ctx.running.get().is_some().to_string();
    view! {
        <div class="app" class:embed=ctx.embed data-mounted-ms=mounted data-model-ready=model_ready data-busy=busy>
            <Show when=move || !ctx.embed>
                <header class="top">
                    <div class="brand">
                        <span class="logo">"◐"</span>
                        <div>
                            <h1>{move || ctx.tr("title")}</h1>
                            <p class="tagline">{move || ctx.tr("tagline")}</p>
                        </div>
                    </div>
                    <button id="lang-switch" class="ghost" on:click=move |_| ctx.set_lang(ctx.lang.get_untracked().other())>
                        {move || ctx.tr("switch_lang")}
                    </button>
                </header>
            </Show>
            <ErrorBanner/>
            <main class="workspace">
                <Show when=move || !ctx.embed>
                    <aside class="panel">
                        <ImagePicker/>
                        <ModelPicker/>
                        <MethodControls/>
                    </aside>
                </Show>
                <section class="stage">
                    <Predictions/>
                    <RunBar/>
                    <ResultView/>
                    <Show when=move || !ctx.embed>
                        <Gallery/>
                    </Show>
                </section>
            </main>
            <Footer/>
        </div>
    }
}

#[component]
fn ErrorBanner() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    view! {
        {move || ctx.error.get().map(|message| view! {
            <div class="banner error" role="alert" id="error">
                <strong>{ctx.tr("error")}": "</strong>
                <span class="message">{message}</span>
                <button class="ghost" on:click=move |_| ctx.error.set(None)>{ctx.tr("dismiss")}</button>
            </div>
        })}
        {move || ctx.notice.get().map(|message| view! {
            <div class="banner notice" role="status" id="notice">
                <span class="message">{message}</span>
                <button class="ghost" on:click=move |_| ctx.notice.set(None)>{ctx.tr("dismiss")}</button>
            </div>
        })}
    }
}

#[component]
fn ImagePicker() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let dragging = RwSignal::new(false);
    let samples = move || {
        ctx.manifest
            .get()
            .map(|m| m.samples.clone())
            .unwrap_or_default()
    };
    view! {
        <div class="card">
            <h2>{move || ctx.tr("image")}</h2>
            <label
                class="dropzone"
                class:dragging=move || dragging.get()
                on:dragover=move |e: ev::DragEvent| { e.prevent_default(); dragging.set(true); }
                on:dragleave=move |_| dragging.set(false)
                on:drop=move |e: ev::DragEvent| {
                    e.prevent_default();
                    dragging.set(false);
                    if let Some(file) = e.data_transfer().and_then(|d| d.files()).and_then(|f| f.get(0)) {
                        with_file(ctx, file, set_image);
                    }
                }
            >
                <input id="image-file" type="file" accept="image/*"
                    on:change=move |e| if let Some(file) = input_file(&e) { with_file(ctx, file, set_image) }/>
                <span class="hint">{move || ctx.tr("drop_here")}</span>
                <span class="button">{move || ctx.tr("choose_file")}</span>
            </label>
            <div class="samples">
                <span class="label">{move || ctx.tr("samples")}</span>
                <For each=samples key=|s| s.file.clone() children=move |sample| {
                    let url = format!("{MODELS}/{}", sample.file);
                    let name = sample.file.rsplit('/').next().unwrap_or_default().to_owned();
                    let id = format!("sample-{}", name.split('.').next().unwrap_or_default());
                    view! {
                        <button class="sample" id=id title=sample.title.clone() on:click=move |_| {
                            let (url, name) = (url.clone(), name.clone());
                            leptos::task::spawn_local(async move {
                                match super::fetch_bytes(&url).await {
                                    Ok(bytes) => set_image(ctx, name, bytes),
                                    Err(message) => ctx.fail(message),
                                }
                            });
                        }>
                            <img src=format!("{MODELS}/{}", sample.file) alt=sample.title.clone()/>
                        </button>
                    }
                }/>
            </div>
            {move || ctx.image_name.get().map(|name| view! { <p class="muted" id="image-name">{name}</p> })}
        </div>
    }
}

/// The task switch's choices: (group, its text's key). A face model is under faces whatever its
/// output (an expression classifier, a face descriptor).
const TASKS: [(&str, &str); 4] = [
    ("classification", "task_classification"),
    ("detection", "task_detection"),
    ("segmentation", "task_segmentation"),
    ("faces", "task_faces"),
];

/// The task switch's group of a bundled model.
fn task_of(entry: &ModelEntry) -> &str {
    if entry.face.is_some() {
        "faces"
    } else {
        &entry.task
    }
}

#[component]
fn ModelPicker() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    // The chosen model's group (a user's model is a classifier).
    let task = move || {
        let choice = ctx.model_choice.get();
        ctx.manifest.with(|m| {
            m.as_ref()
                .and_then(|m| m.model(&choice).ok())
                .map_or("classification".to_owned(), |e| task_of(e).to_owned())
        })
    };
    let models = move || {
        let task = task();
        ctx.manifest
            .get()
            .map(|m| {
                m.models
                    .into_iter()
                    .filter(|e| task_of(e) == task)
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    // Switching the task loads its first bundled model.
    let switch = move |task: String| {
        let first = ctx.manifest.with_untracked(|m| {
            m.as_ref()?
                .models
                .iter()
                .find(|e| task_of(e) == task)
                .map(|e| e.name.clone())
        });
        match first {
            Some(name) => load_bundled_model(ctx, name),
            None => ctx.fail(format!("no bundled model does {task}")),
        }
    };
    let status = move || match ctx.model.get() {
        ModelState::None => String::new(),
        ModelState::Loading(name) => format!("{} {name}", ctx.tr("model_loading")),
        ModelState::Ready(summary, load_ms) => format!(
            "{} · {} · {} · {} {} · {:.0} ms",
            ctx.tr("model_ready"),
            summary.name,
            if summary.task == "embedding" {
                format!("{}-d {}", summary.num_classes, ctx.tr("embedding"))
            } else {
                format!("{} {}", summary.num_classes, ctx.tr("classes"))
            },
            summary.layers.len(),
            ctx.tr("layers"),
            load_ms
        ),
    };
    view! {
        <div class="card">
            <h2>{move || ctx.tr("model")}</h2>
            <label class="field">
                <span>{move || ctx.tr("task_switch")}</span>
                <select id="task-select" prop:value=task on:change=move |e| switch(event_target_value(&e))>
                    {TASKS.into_iter().map(|(task, key)| view! { <option value=task>{move || ctx.tr(key)}</option> }).collect_view()}
                </select>
            </label>
            <select id="model-select" prop:value=move || ctx.model_choice.get()
                on:change=move |e| load_bundled_model(ctx, event_target_value(&e))>
                <For each=models key=|m| m.name.clone() children=move |m| view! {
                    <option value=m.name.clone()>{m.title.clone()}</option>
                }/>
                {move || ctx.model_choice.get().strip_prefix("user:").map(|name| view! {
                    <option value=format!("user:{name}")>{name.to_owned()}</option>
                })}
            </select>
            <label class="button ghost file">
                {move || ctx.tr("own_model")}
                <input id="model-file" type="file" accept=".onnx"
                    on:change=move |e| if let Some(file) = input_file(&e) { with_file(ctx, file, load_user_model) }/>
            </label>
            <p class="muted" id="model-status">{status}</p>
        </div>
    }
}

#[component]
fn Predictions() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    // A detector, a segmenter or a face embedding predicts no classes: say what explaining it
    // does instead.
    let task = move || match ctx.model.get() {
        ModelState::Ready(summary, _) if summary.task != "classification" => Some(summary.task),
        _ => None,
    };
    let reference = move || {
        ctx.reference
            .get()
            .unwrap_or_else(|| ctx.tr("no_reference").to_owned())
    };
    view! {
        <FaceCard/>
        <Show when=move || task().is_some() && ctx.base.with(Option::is_some)>
            <div class="card predictions" id="task-note" data-task=move || task().unwrap_or_default()>
                <div class="with-image">
                    {move || ctx.base.get().map(|base| {
                        let url = super::result::data_url(&base);
                        view! { <img class="base" src=url alt="input"/> }
                    })}
                    <div class="list">
                        <h2>{move || ctx.tr("task")}</h2>
                        <p class="muted">{move || match task().as_deref() {
                            Some("detection") => ctx.tr("detection_note"),
                            Some("embedding") => ctx.tr("identity_note"),
                            _ => ctx.tr("segmentation_note"),
                        }}</p>
                        <Show when=move || task().as_deref() == Some("embedding")>
                            <div class="reference">
                                <label class="button ghost file">
                                    {move || ctx.tr("choose_reference")}
                                    <input id="reference-file" type="file" accept="image/*"
                                        on:change=move |e| if let Some(file) = input_file(&e) { with_file(ctx, file, set_reference) }/>
                                </label>
                                <span class="muted">{move || ctx.tr("reference")}": "</span>
                                <span id="reference-name" class:chosen=move || ctx.reference.with(Option::is_some)>{reference}</span>
                            </div>
                        </Show>
                    </div>
                </div>
            </div>
        </Show>
        <Show when=move || !ctx.predictions.with(Vec::is_empty)>
            <div class="card predictions">
                <div class="with-image">
                    {move || ctx.base.get().map(|base| {
                        let url = super::result::data_url(&base);
                        view! { <img class="base" src=url alt="input"/> }
                    })}
                    <div class="list">
                        <h2>{move || ctx.tr("predictions")}</h2>
                        <p class="muted">{move || ctx.tr("target_hint")}</p>
                        <ol id="predictions">
                            <For each=move || ctx.predictions.get() key=|p| p.class children=move |p| {
                                let class = p.class;
                                let width = format!("width: {:.1}%", 100.0 * p.probability);
                                view! {
                                    <li class:chosen=move || ctx.config.with(|c| c.target == Some(class))
                                        on:click=move |_| if !ctx.embed { ctx.config.update(|c| c.target = Some(class)) }>
                                        <span class="label">{p.label.clone()}</span>
                                        <span class="prob">{format!("{:.1}%", 100.0 * p.probability)}</span>
                                        <span class="bar" style=width></span>
                                    </li>
                                }
                            }/>
                        </ol>
                    </div>
                </div>
            </div>
        </Show>
    }
}

/// A face model's face: which one of the photo the model sees, and the others to pick from.
#[component]
fn FaceCard() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let heading = move || {
        ctx.face.with(|face| {
            face.as_ref().map(|f| {
                format!(
                    "{} {} {} {} · {} {} ({:.2})",
                    ctx.tr("face"),
                    f.face + 1,
                    ctx.tr("face_of"),
                    f.found,
                    ctx.tr("found_by"),
                    f.detector,
                    f.detection.score
                )
            })
        })
    };
    // One button per face, best first (a crowd's first 20).
    let faces = move || {
        ctx.face.with(|face| {
            face.as_ref()
                .map(|f| (0..f.found.min(20)).map(|k| (k, k == f.face)).collect())
                .unwrap_or_else(Vec::new)
        })
    };
    let several = move || faces().len() > 1;
    view! {
        <Show when=move || ctx.face.with(Option::is_some)>
            <div class="card face" id="face" data-face=move || ctx.face.with(|f| f.as_ref().map_or(0, |f| f.face))>
                <h2>{heading}</h2>
                <p class="muted">{move || ctx.tr("face_note")}</p>
                <Show when=several>
                    <div class="boxes" id="faces">
                        <For each=faces key=|f| *f children=move |(k, chosen)| view! {
                            <button class:chosen=chosen data-face=k.to_string()
                                prop:disabled=move || ctx.running.with(Option::is_some)
                                on:click=move |_| choose_face(ctx, k)>{(k + 1).to_string()}</button>
                        }/>
                    </div>
                </Show>
            </div>
        </Show>
    }
}

fn method_options() -> Vec<(String, String)> {
    Method::all()
        .map(|m| (m.name().to_owned(), m.title().to_owned()))
        .collect()
}

/// A control's change: the parsed value written into the settings, or the parse error shown.
fn set<T: std::str::FromStr>(ctx: Ctx, value: String, apply: impl FnOnce(&mut ExplainConfig, T))
where
    T::Err: std::fmt::Display,
{
    match value.trim().parse() {
        Ok(parsed) => ctx.config.update(|c| apply(c, parsed)),
        Err(e) => ctx.fail(e.to_string()),
    }
}

#[component]
fn MethodControls() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let is_sampling = move || ctx.config.with(|c| c.method.samples());
    let is_camlime = move || ctx.config.with(|c| c.method == Method::CamLime);
    let layers = move || match ctx.model.get() {
        ModelState::Ready(summary, _) => summary.layers.clone(),
        _ => Vec::new(),
    };
    let default_layers = move || match ctx.model.get() {
        ModelState::Ready(summary, _) => summary.default_layers.join(", "),
        _ => String::new(),
    };
    let ready = move || {
        matches!(ctx.model.get(), ModelState::Ready(..))
            && ctx.base.with(Option::is_some)
            && ctx.running.with(Option::is_none)
    };
    view! {
        <div class="card">
            <h2>{move || ctx.tr("method")}</h2>
            <label class="field">
                <span>{move || ctx.tr("method")}</span>
                <select id="method-select" prop:value=move || ctx.config.with(|c| c.method.name())
                    on:change=move |e| set(ctx, event_target_value(&e), |c, m| c.method = m)>
                    {method_options().into_iter().map(|(name, title)| view! { <option value=name>{title}</option> }).collect_view()}
                </select>
            </label>
            <Show when=is_camlime>
                <label class="field">
                    <span>{move || ctx.tr("cam_for_camlime")}</span>
                    <select id="cam-select" prop:value=move || ctx.config.with(|c| c.cam.method.name())
                        on:change=move |e| set(ctx, event_target_value(&e), |c, m| c.cam.method = m)>
                        {CamMethod::ALL.into_iter().map(|m| view! { <option value=m.name()>{m.title()}</option> }).collect_view()}
                    </select>
                </label>
            </Show>
            <label class="field">
                <span>{move || ctx.tr("layer")}</span>
                <select id="layer-select" prop:value=move || ctx.config.with(|c| c.cam.layers.first().cloned().unwrap_or_default())
                    on:change=move |e| {
                        let layer = event_target_value(&e);
                        ctx.config.update(|c| c.cam.layers = Some(layer).filter(|l| !l.is_empty()).into_iter().collect());
                    }>
                    <option value="">{move || format!("{} ({})", ctx.tr("default_layer"), default_layers())}</option>
                    <For each=layers key=|l| l.name.clone() children=move |l| {
                        let label = format!("{}  [{}×{}×{}]", l.name, l.shape[0], l.shape[1], l.shape[2]);
                        view! { <option value=l.name.clone()>{label}</option> }
                    }/>
                </select>
            </label>
            <Show when=is_sampling>
                <div class="grid2">
                    <label class="field">
                        <span>{move || ctx.tr("num_samples")}</span>
                        <input id="samples-input" type="number" min="2" max="100000" step="50"
                            prop:value=move || ctx.config.with(|c| c.lime.num_samples.to_string())
                            on:change=move |e| set(ctx, event_target_value(&e), |c, n| c.lime.num_samples = n)/>
                    </label>
                    <label class="field">
                        <span>{move || ctx.tr("seed")}</span>
                        <input id="seed-input" type="number" min="0"
                            prop:value=move || ctx.config.with(|c| c.seed.to_string())
                            on:change=move |e| set(ctx, event_target_value(&e), |c, n| c.seed = n)/>
                    </label>
                    <label class="field">
                        <span>{move || ctx.tr("segmenter")}</span>
                        <select id="segmenter-select" prop:value=move || ctx.config.with(|c| c.segmenter.name())
                            on:change=move |e| set(ctx, event_target_value(&e), |c, s| c.segmenter = s)>
                            {["quickshift", "slic", "felzenszwalb", "grid"].into_iter().map(|s| view! { <option value=s>{s}</option> }).collect_view()}
                        </select>
                    </label>
                    <label class="field">
                        <span>{move || ctx.tr("kernel_width")}</span>
                        <input id="kernel-input" type="number" min="0.01" step="0.05"
                            prop:value=move || ctx.config.with(|c| c.lime.kernel_width.to_string())
                            on:change=move |e| set(ctx, event_target_value(&e), |c, w| c.lime.kernel_width = w)/>
                    </label>
                </div>
                <Show when=is_camlime>
                    <label class="field">
                        <span>{move || ctx.tr("mode")}</span>
                        <select id="mode-select" prop:value=move || ctx.config.with(|c| c.mode.to_string())
                            on:change=move |e| set(ctx, event_target_value(&e), |c, m| c.mode = m)>
                            <option value="segment">"segment · mean"</option>
                            <option value="segment-max">"segment · max"</option>
                            <option value="grid">"grid (paper)"</option>
                            <option value="vector">"vector"</option>
                        </select>
                    </label>
                </Show>
            </Show>
            <div class="field server">
                <label class="check">
                    <input id="server-toggle" type="checkbox" prop:checked=move || ctx.use_server.get()
                        on:change=move |e| ctx.use_server.set(event_target_checked(&e))/>
                    <span>{move || ctx.tr("run_on_server")}</span>
                </label>
                <Show when=move || ctx.use_server.get()>
                    <input id="server-url" type="url" placeholder="http://127.0.0.1:8080"
                        aria-label=move || ctx.tr("server_url")
                        prop:value=move || ctx.server.get()
                        on:change=move |e| set_server(ctx, event_target_value(&e))/>
                    <input id="server-token" type="password" autocomplete="off"
                        placeholder=move || ctx.tr("server_token")
                        aria-label=move || ctx.tr("server_token")
                        prop:value=move || ctx.server_token.get()
                        on:change=move |e| set_server_token(ctx, event_target_value(&e))/>
                </Show>
            </div>
            <button id="explain" class="primary" prop:disabled=move || !ready() on:click=move |_| explain(ctx)>
                {move || ctx.tr("explain")}
            </button>
        </div>
    }
}

#[component]
fn RunBar() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    view! {
        {move || ctx.running.get().map(|running| {
            let percent = if running.total > 0 { 100.0 * running.done as f64 / running.total as f64 } else { 0.0 };
            let elapsed = (super::now_ms() - running.started) / 1e3;
            view! {
                <div class="card running" id="progress">
                    <div class="progress-head">
                        <span>{ctx.tr("working")}" · "{running.stage.clone()}" "{format!("{}/{}", running.done, running.total)}</span>
                        <span class="muted">{format!("{elapsed:.1} s")}</span>
                        <button id="cancel" class="ghost danger" on:click=move |_| cancel(ctx)>{ctx.tr("cancel")}</button>
                    </div>
                    <div class="progress"><div class="fill" style=format!("width: {percent:.1}%")></div></div>
                </div>
            }
        })}
    }
}

#[component]
fn Footer() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let lang = move || match ctx.lang.get() {
        Lang::En => "English",
        Lang::Zh => "简体中文",
    };
    view! {
        <footer class="bottom">
            <span>"CamLIME "{env!("CARGO_PKG_VERSION")}" · "{lang}</span>
            <span id="timings" class="muted">
                {move || ctx.timings.get().iter().map(|(k, v)| format!("{k} {v:.0}")).collect::<Vec<_>>().join(" · ")}
            </span>
            <Show when=move || ctx.embed>
                <a href="./" target="_blank" rel="noopener">{move || ctx.tr("open_full")}</a>
            </Show>
        </footer>
    }
}
