//! The CamLIME page: Leptos client-side rendering; every model and explainer call goes to the
//! Web Worker (`bin/worker.rs`), so the page only draws.

mod app;

fn main() {
    console_error_panic_hook::set_once();
    leptos::mount::mount_to_body(app::App);
}
