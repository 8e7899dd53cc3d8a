//! mimic-web: the browser demo. Webcam or photo → SeetaFace detection → the fine-tuned
//! `core` ViT → per-face expression probabilities, all in the page (see README.md, "The page");
//! below them, the live face on a t-SNE map of test images, and a mixing explorer.
//!
//! The face, engine, tsne and explore modules are plain Rust and tested natively; the app, the
//! views and their browser glue exist only on wasm32.

#[cfg(target_arch = "wasm32")]
mod app;
#[cfg(target_arch = "wasm32")]
mod backend;
#[cfg(target_arch = "wasm32")]
mod dom;
// Plain-Rust halves of the page: used by the wasm app, tested natively.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
mod engine;
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
mod explore;
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
mod face;
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
mod tsne;
#[cfg(target_arch = "wasm32")]
mod views;

#[cfg(target_arch = "wasm32")]
fn main() {
    console_error_panic_hook::set_once();
    leptos::mount::mount_to_body(app::App);
}

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    eprintln!("mimic-web is the page's wasm32 binary: build and serve it with `trunk serve`");
    std::process::exit(2);
}
