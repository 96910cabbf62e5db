//! Form pieces every page uses: a labelled text field and number parsing that names the
//! field in its error.

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
