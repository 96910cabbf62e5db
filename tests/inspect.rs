//! `inspect` against transformers: every head's attention (`output_attentions=True`), each
//! block's output norm and the logit lens (each block's output through `ln_f` and the head,
//! from forward hooks), the greedy next token and its attention over the prompt, on every
//! fixture model and prompt, cpu and wgpu (`golden_inspect.json`). Then the timing: every op of
//! every block timed once a step, inside the step; and the trace file, as Perfetto reads it.

mod common;

use std::process::Command;

use common::{Case, InspectGolden, cases};
use inferlab::engine::inspect::op_timer::{Clock, StepTiming, Timing};
use inferlab::engine::inspect::probe::Op;
use inferlab::engine::inspect::{Inspection, LENS_TOP, inspect};
use serde_json::Value;

fn close(label: &str, ours: &[f32], reference: &[f32], tolerance: f32) {
    assert_eq!(ours.len(), reference.len(), "{label}: lengths");
    for (i, (a, b)) in ours.iter().zip(reference).enumerate() {
        assert!((a - b).abs() <= tolerance, "{label}[{i}]: {a} vs transformers' {b}");
    }
}

/// Top tokens: probabilities within 2e-4 of their own size (logits within 1e-4 move a
/// probability by that factor), ids exact unless transformers' probabilities tie that closely.
fn same_top(label: &str, ids: &[u32], probs: &[f32], golden_ids: &[u32], golden_probs: &[f32]) {
    assert_eq!(ids.len(), LENS_TOP, "{label}: top {LENS_TOP}");
    for k in 0..LENS_TOP {
        let near = |a: f32, b: f32| (a - b).abs() <= 2e-4 * b.abs().max(1e-6);
        assert!(near(probs[k], golden_probs[k]), "{label}: p[{k}] {} vs {}", probs[k], golden_probs[k]);
        let tied = golden_ids.iter().zip(golden_probs).any(|(&g, &p)| g == ids[k] && near(p, golden_probs[k]));
        assert!(ids[k] == golden_ids[k] || tied, "{label}: id[{k}] {} vs {}", ids[k], golden_ids[k]);
    }
}

fn check(case: &Case, golden: &InspectGolden, ours: &Inspection) {
    let label = format!("{} · {}", case.label, golden.prompt);
    assert_eq!(ours.tokens, golden.input_ids, "{label}: tokens");
    assert_eq!(ours.attentions.len(), golden.attentions.len(), "{label}: layers");
    for (l, (ours, theirs)) in ours.attentions.iter().zip(&golden.attentions).enumerate() {
        assert_eq!(ours.len(), theirs.len(), "{label}: heads of layer {l}");
        for (h, (ours, theirs)) in ours.iter().zip(theirs).enumerate() {
            close(&format!("{label}: attention L{l} H{h}"), &ours.concat(), &theirs.concat(), 1e-4);
        }
    }
    for (l, (ours, theirs)) in ours.residual_norms.iter().zip(&golden.residual_norms).enumerate() {
        let scale = theirs.iter().fold(1f32, |m, v| m.max(v.abs()));
        close(&format!("{label}: residual norm after block {}", l + 1), ours, theirs, 1e-4 * scale);
    }
    assert_eq!(ours.logit_lens.len(), golden.lens.len(), "{label}: lens layers");
    for (l, (ours, theirs)) in ours.logit_lens.iter().zip(&golden.lens).enumerate() {
        assert_eq!(ours.layer, l + 1, "{label}: lens layers count from 1");
        assert_eq!(ours.positions.len(), golden.input_ids.len(), "{label}: a lens entry per position");
        for (p, top) in ours.positions.iter().enumerate() {
            let at = format!("{label}: lens after block {} at position {p}", l + 1);
            same_top(&at, &top.ids, &top.probs, &theirs.top_ids[p], &theirs.top_probs[p]);
        }
    }
    assert_eq!(ours.next_token, golden.next_token, "{label}: greedy next token");
    for (l, (ours, theirs)) in ours.decode_attentions.iter().zip(&golden.decode_attentions).enumerate() {
        close(&format!("{label}: decode attention L{l}"), &ours.concat(), &theirs.concat(), 1e-4);
    }
}

/// Every block's eight ops once, then the head's, inside the step's own time.
fn check_timing(label: &str, step: &StepTiming, layers: usize) {
    let mut expected = vec![(Op::Embed, None)];
    for layer in 1..=layers {
        expected.extend(Op::BLOCK.iter().map(|&op| (op, Some(layer))));
    }
    expected.extend([(Op::LnF, None), (Op::Head, None), (Op::Sampling, None)]);
    let got: Vec<(Op, Option<usize>)> = step.ops.iter().map(|o| (o.op, o.layer)).collect();
    assert_eq!(got, expected, "{label}: the ops, in order");
    let end = step.start_ms + step.ms;
    let mut previous_end = step.start_ms;
    for op in &step.ops {
        assert!(op.ms >= 0.0, "{label}: {:?} took {} ms", op.op, op.ms);
        // Synced ops run one after the other, within the step's wall time.
        assert!(
            op.start_ms + 1e-3 >= previous_end && op.start_ms + op.ms <= end + 1e-3,
            "{label}: {:?} outside its step",
            op.op
        );
        previous_end = op.start_ms + op.ms;
    }
    let summed: f64 = step.by_op().iter().map(|(_, ms)| ms).sum();
    assert!(summed <= step.ms + 1e-3, "{label}: ops {summed} ms in a {} ms step", step.ms);
}

#[test]
fn attention_the_logit_lens_and_the_next_token_match_transformers() {
    for case in cases() {
        let model = &case.loaded.model;
        for golden in case.inspect_goldens() {
            let ours = pollster::block_on(inspect(model, &golden.input_ids, Clock::Profile)).unwrap();
            check(&case, &golden, &ours);
            // The CPU has no device clock: its figures are synced (lavapipe has timestamps or not).
            if case.label.ends_with("on cpu") {
                assert_eq!(ours.timeline.timing, Timing::Synced, "{}", case.label);
            }
            let [prefill, decode] = &ours.timeline.steps[..] else { panic!("{}: two steps timed", case.label) };
            check_timing(&format!("{} · {} prefill", case.label, golden.prompt), prefill, model.config.n_layer);
            check_timing(&format!("{} · {} decode", case.label, golden.prompt), decode, model.config.n_layer);
            assert!(decode.start_ms >= prefill.start_ms + prefill.ms, "{}: the decode step follows", case.label);
        }
    }
}

#[test]
fn the_awaited_clock_times_the_same_ops() {
    for case in cases() {
        let golden = &case.inspect_goldens()[2];
        let ours = pollster::block_on(inspect(&case.loaded.model, &golden.input_ids, Clock::Awaited)).unwrap();
        check(&case, golden, &ours);
        assert_eq!(ours.timeline.timing, Timing::Synced, "{}", case.label);
        check_timing(&case.label, &ours.timeline.steps[0], case.loaded.model.config.n_layer);
    }
}

#[test]
fn a_prompt_without_room_for_the_decode_step_is_refused() {
    let case = cases().into_iter().next().unwrap();
    let n = case.loaded.model.config.n_positions;
    for prompt in [vec![], vec![1; n]] {
        let err = pollster::block_on(inspect(&case.loaded.model, &prompt, Clock::Profile)).unwrap_err().to_string();
        assert!(err.contains(&format!("1 to {} tokens", n - 1)), "{err}");
    }
}

fn n_layer(dir: &std::path::Path) -> usize {
    let config: Value = serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    config["n_layer"].as_u64().unwrap() as usize
}

fn inferlab(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_inferlab")).args(args).output().expect("inferlab runs")
}

/// The trace as Perfetto reads it: complete events on two tracks, one per op per block per step.
fn check_trace(path: &std::path::Path, steps: usize, layers: usize, sampling: bool) {
    let trace: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let events = trace["traceEvents"].as_array().expect("traceEvents");
    let complete: Vec<&Value> = events.iter().filter(|e| e["ph"] == "X").collect();
    for e in &complete {
        assert!(e["ts"].as_f64().is_some() && e["dur"].as_f64().unwrap() >= 0.0, "{e}");
        assert!(e["name"].is_string() && e["pid"].is_u64() && e["tid"].is_u64(), "{e}");
    }
    assert_eq!(complete.iter().filter(|e| e["cat"] == "step").count(), steps);
    for op in Op::BLOCK {
        for layer in 1..=layers {
            let n = complete.iter().filter(|e| e["cat"] == op.name() && e["args"]["layer"] == layer).count();
            assert_eq!(n, steps, "{} of block {layer}: one event a step", op.name());
        }
    }
    for op in [Op::Embed, Op::LnF, Op::Head] {
        assert_eq!(complete.iter().filter(|e| e["cat"] == op.name()).count(), steps, "{}", op.name());
    }
    let sampled = complete.iter().filter(|e| e["cat"] == "sampling").count();
    assert_eq!(sampled, if sampling { steps } else { 0 });
    assert_eq!(events.iter().filter(|e| e["ph"] == "M").count(), 3, "the process and its two tracks are named");
}

#[test]
fn inspect_json_and_its_trace_follow_the_contract() {
    let dir = common::model_dirs().into_iter().next().unwrap();
    let golden = common::golden(&dir);
    let prompt = &golden.prompts[2];
    let ids: Vec<String> = prompt.input_ids.iter().map(u32::to_string).collect();
    let trace = tempfile::NamedTempFile::new().unwrap();
    let out = inferlab(&[
        "inspect",
        "--model",
        dir.to_str().unwrap(),
        "--prompt-ids",
        &ids.join(","),
        "--json",
        "--trace",
        trace.path().to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    let layers = n_layer(&dir);
    let t = prompt.input_ids.len();
    assert_eq!(json["tokens"].as_array().unwrap().len(), t);
    assert_eq!(json["token_ids"], serde_json::json!(prompt.input_ids));
    let attentions = json["attentions"].as_array().unwrap();
    assert_eq!(attentions.len(), layers);
    assert_eq!(attentions[0][0].as_array().unwrap().len(), t, "[layer][head][query][key]");
    assert_eq!(attentions[0][0][0].as_array().unwrap().len(), t, "[layer][head][query][key]");
    let lens = json["logit_lens"].as_array().unwrap();
    assert_eq!(lens.len(), layers);
    for (l, entry) in lens.iter().enumerate() {
        assert_eq!(entry["layer"], l + 1);
        assert_eq!(entry["top_ids"].as_array().unwrap().len(), 5);
        assert_eq!(entry["top_probs"].as_array().unwrap().len(), 5);
        // The top level is the last prompt position.
        assert_eq!(entry["top_ids"], entry["positions"][t - 1]["top_ids"]);
    }
    // After the last block the lens is the model's logits: transformers' top 5 of the last row.
    let last: Vec<u64> = lens[layers - 1]["top_ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
    assert_eq!(last, prompt.last_logits.top5_ids.iter().map(|&i| u64::from(i)).collect::<Vec<_>>());
    let timing = json["timing"].as_array().unwrap();
    assert_eq!(timing.len(), 1 + layers * Op::BLOCK.len() + 3, "embed, the blocks' ops, ln_f, head, sampling");
    for entry in timing {
        assert!(entry["op"].is_string() && entry["ms"].as_f64().unwrap() >= 0.0, "{entry}");
        assert!(entry["layer"].is_null() || (1..=layers as u64).contains(&entry["layer"].as_u64().unwrap()));
    }
    assert!(json["step_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(json["decode"]["token_id"], prompt.greedy.new_ids[0]);
    assert_eq!(json["decode"]["timing"].as_array().unwrap().len(), timing.len());
    check_trace(trace.path(), 2, layers, true);
}

#[test]
fn generate_writes_a_trace_of_every_step() {
    let dir = common::model_dirs().into_iter().next().unwrap();
    let layers = n_layer(&dir);
    let trace = tempfile::NamedTempFile::new().unwrap();
    let args =
        ["generate", "--model", dir.to_str().unwrap(), "--prompt", "Hello", "--max-new-tokens", "4", "--ignore-eos"];
    let out = inferlab(&[&args[..], &["--trace", trace.path().to_str().unwrap()]].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Sampling happens outside the forward pass, so a generation's trace has the passes' ops.
    check_trace(trace.path(), 4, layers, false);
}
