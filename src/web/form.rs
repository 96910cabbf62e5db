//! Form pieces every page uses: a labelled text field, number parsing that names the field in
//! its error, and the files of a file input or a drop.

use leptos::prelude::*;

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
