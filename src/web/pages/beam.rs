//! Beam search page: the live tree of candidates, kept beams and finished hypotheses, then
//! the ranked hypotheses beside the greedy output, on the loaded model.

use leptos::prelude::*;

use crate::engine::decode::beam::{BeamOptions, EarlyStopping};
use crate::session::protocol::ToEngine;
use crate::web::bridge::EngineHandle;
use crate::web::form::{Field, example_prompt, field};
use crate::web::tree::BeamTree;

/// The prompt for the demo pair (trained on Rust sources).
const BEAM_CODE: &str = "impl";

#[component]
pub fn BeamPage() -> impl IntoView {
    let engine = expect_context::<EngineHandle>();
    let prompt = example_prompt("The quick brown fox", BEAM_CODE);
    let num_beams = RwSignal::new("4".to_string());
    let length_penalty = RwSignal::new("1.0".to_string());
    let early_stopping = RwSignal::new("true".to_string());
    let tokens = RwSignal::new("16".to_string());
    let no_repeat = RwSignal::new("0".to_string());
    let sent_penalty = RwSignal::new(1.0f32);
    let run = move |_| {
        let parsed = (|| -> Result<BeamOptions, String> {
            let num_beams = field("num_beams", &num_beams.get())?;
            let options = BeamOptions {
                num_beams,
                num_return_sequences: num_beams,
                max_new_tokens: field("new tokens", &tokens.get())?,
                length_penalty: field("length_penalty", &length_penalty.get())?,
                early_stopping: early_stopping.get().parse::<EarlyStopping>().map_err(|e| e.to_string())?,
                no_repeat_ngram_size: field("no_repeat_ngram_size", &no_repeat.get())?,
                eos_token_ids: vec![],
            };
            options.validate().map_err(|e| e.to_string())?;
            Ok(options)
        })();
        match parsed {
            Ok(options) => {
                sent_penalty.set(options.length_penalty);
                engine.send(&ToEngine::Beam { prompt: prompt.get(), options }, &[]);
            }
            Err(e) => engine.error.set(Some(e)),
        }
    };
    let steps = Signal::derive(move || engine.beam.with(|b| b.steps.clone()));
    view! {
        <section class="page">
            <h2>"Beam search"</h2>
            <p class="hint">"Each step every kept beam is extended by every token; the 2 × num_beams best running sums of "
                "log-probabilities are ranked. Those ending in the end-of-text token become finished hypotheses (scored sum ÷ length^penalty), "
                "the best num_beams of the others run on. The beams are rows of one batch that share the prompt's KV blocks; "
                "a fork copies only a beam's last, partly filled block."</p>
            <textarea rows="2" aria-label="prompt" prop:value=move || prompt.get() on:input=move |ev| prompt.set(event_target_value(&ev)) data-testid="beam-prompt"></textarea>
            <div class="row">
                <Field label="num_beams" value=num_beams testid="beam-num-beams"/>
                <Field label="length_penalty" value=length_penalty testid="beam-length-penalty"/>
                <label>"early_stopping "
                    <select data-testid="beam-early-stopping" on:change=move |ev| early_stopping.set(event_target_value(&ev))>
                        {["true", "false", "never"].map(|v| view! { <option value=v selected=early_stopping.get_untracked() == v>{v}</option> })}
                    </select>
                </label>
                <Field label="no_repeat_ngram_size" value=no_repeat testid="beam-no-repeat"/>
                <Field label="new tokens" value=tokens testid="beam-tokens"/>
                <button on:click=run disabled=move || engine.loaded.get().is_none() || engine.busy() data-testid="beam-run">"Run"</button>
            </div>
            <div class="keys">
                <span class="key"><i class="node-kept"></i>"kept beam"</span>
                <span class="key"><i class="node-finished"></i>"finished hypothesis (EOS, or the last step)"</span>
                <span class="key"><i class="node-pruned"></i>"pruned candidate"</span>
                <span class="key"><i class="node-best"></i>"the best hypothesis's path"</span>
            </div>
            <BeamTree steps length_penalty=sent_penalty best=Signal::derive(move || engine.beam.with(|b| b.done.as_ref().and_then(|d| d.beams.first()).map(|h| h.hypothesis.ids.clone())))/>
            <Result/>
        </section>
    }
}

/// The returned hypotheses, best first, beside greedy decoding of the same prompt.
#[component]
fn Result() -> impl IntoView {
    let engine = expect_context::<EngineHandle>();
    move || {
        engine.beam.with(|b| b.done.clone()).map(|done| {
            let ids: Vec<&Vec<u32>> = done.beams.iter().map(|b| &b.hypothesis.ids).collect();
            let rows = done
                .beams
                .iter()
                .map(|b| view! { <li title=format!("ids {:?}", b.hypothesis.ids)><b>{format!("{:.4}", b.hypothesis.score)}</b>" "{b.text.clone()}</li> })
                .collect_view();
            let beams = done.beams.len();
            view! {
                <div class="charts">
                    <div><h3>"Beams, best first"</h3><ol class="output">{rows}</ol></div>
                    <div><h3>"Greedy"</h3><div class="output" title=format!("ids {:?}", done.greedy_ids)>{done.greedy_text.clone()}</div>
                        <p class="detail">{if done.beams.first().is_some_and(|b| b.hypothesis.ids == done.greedy_ids) { "the best beam is the greedy output" } else { "the best beam differs from greedy: a less likely token early paid off later" }}</p></div>
                </div>
                <p class="detail">{format!("{beams} beams in {:.0} ms; KV held at most {} token slots (shared blocks once)", done.beam_ms, done.kv_peak_tokens)}</p>
                <p class="ids">"returned ids: "<code data-testid="beam-output">{serde_json::to_string(&ids).unwrap_or_default()}</code></p>
            }
        })
    }
}
