//! Form pieces every page uses: a labelled text field, number parsing that names the field in
//! its error, and the files of a file input or a drop.

use leptos::prelude::*;

use crate::web::bridge::EngineHandle;

/// A page's prompt: `english` for GPT-2 and the hub's models, `code` for the demo pair (trained
/// on Rust sources). It follows the loaded model until the user edits it.
pub fn example_prompt(english: &'static str, code: &'static str) -> RwSignal<String> {
    let engine = expect_context::<EngineHandle>();
    let pick = move || if engine.loaded.get().is_some_and(|m| m.demo) { code } else { english };
    let prompt = RwSignal::new(untrack(pick).to_string());
    Effect::new(move |shown: Option<&'static str>| {
        let example = pick();
        if shown.is_some_and(|shown| prompt.get_untracked() == shown) {
            prompt.set(example.to_string());
        }
        example
    });
    prompt
}

/// A labelled text input bound to a signal.
#[component]
pub fn Field(#[prop(into)] label: String, value: RwSignal<String>, #[prop(into)] testid: String) -> impl IntoView {
    view! {
        <label>{label}" "
            <input prop:value=move || value.get() on:input=move |ev| value.set(event_target_value(&ev)) data-testid=testid size="6"/>
        </label>
    }
}

/// Parses a form field, naming it in the error.
pub fn field<T: std::str::FromStr>(name: &str, text: &str) -> Result<T, String> {
    text.trim().parse().map_err(|_| format!("{name}: {text:?} is not a valid number"))
}

/// The files of a file input or a drop, in order.
pub fn picked_files(list: Option<web_sys::FileList>) -> Vec<web_sys::File> {
    list.map(|l| (0..l.length()).filter_map(|i| l.get(i)).collect()).unwrap_or_default()
}

/// A keydown handler that runs `action` on Enter or Space: what a button does, for an element
/// that is drawn (an SVG picture) and must still work from the keyboard.
pub fn on_activate(action: impl Fn() + 'static) -> impl Fn(web_sys::KeyboardEvent) + 'static {
    move |ev| {
        if ev.key() == "Enter" || ev.key() == " " {
            ev.prevent_default();
            action();
        }
    }
}
