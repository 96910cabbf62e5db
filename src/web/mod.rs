//! The browser app (wasm32 only). One wasm module serves two places: in the page it mounts
//! the leptos app; in the Web Worker started by the page (`worker.js`) it runs the engine.

mod app;
mod bridge;
mod cache_map;
mod charts;
mod form;
mod loader;
mod pages;
mod timeline;
mod tree;
mod worker;

use wasm_bindgen::JsCast;

/// Called by `main` in both places.
pub fn start() {
    if js_sys::global().dyn_ref::<web_sys::Window>().is_none() {
        worker::run();
        return;
    }
    std::panic::set_hook(Box::new(|info| show_fatal(&format!("inferlab crashed: {info}"))));
    leptos::mount::mount_to_body(app::App);
}

/// Puts a message at the top of the page (and the console): the panic hook's output.
fn show_fatal(message: &str) {
    web_sys::console::error_1(&message.into());
    let Some(document) = web_sys::window().and_then(|w| w.document()) else { return };
    if let (Ok(div), Some(body)) = (document.create_element("div"), document.body()) {
        div.set_class_name("fatal");
        div.set_attribute("data-testid", "panic").ok();
        div.set_text_content(Some(message));
        body.prepend_with_node_1(&div).ok();
    }
}
