//! CamLIME in the browser. The page (`main.rs`, Leptos) and the Web Worker (`bin/worker.rs`)
//! are two wasm binaries sharing this library: the messages they exchange ([`protocol`]) and
//! the interface's two languages ([`i18n`]). The worker owns the classifier and runs every
//! explainer; the page only decodes results and draws them, so it never blocks.

pub mod i18n;
pub mod protocol;
