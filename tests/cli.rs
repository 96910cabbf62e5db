//! The command line as a user meets it: streamed text, JSON output, seeded sampling,
//! stop strings, and the KV benchmark's JSON.

mod common;

use std::process::Command;

fn inferlab(args: &[&str]) -> (String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_inferlab")).args(args).output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    assert!(out.status.success(), "inferlab {args:?} failed: {stderr}");
    (stdout, stderr)
}

fn golden() -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(common::fixtures_root().join("gpt2-tiny/golden.json")).unwrap()).unwrap()
}

#[test]
fn generate_streams_the_greedy_text() {
    let tiny = common::fixtures_root().join("gpt2-tiny");
    let prompt = &golden()["prompts"][1];
    let (stdout, stderr) =
        inferlab(&["generate", "--model", tiny.to_str().unwrap(), "--prompt", prompt["text"].as_str().unwrap(), "--max-new-tokens", "24"]);
    assert_eq!(stdout.trim_end_matches('\n'), prompt["greedy"]["text"].as_str().unwrap());
    assert!(stderr.contains("tok/s") && stderr.contains("TTFT"), "{stderr}");
}

#[test]
fn sampling_is_seeded_and_stop_strings_cut_the_text() {
    let tiny = common::fixtures_root().join("gpt2-tiny");
    let model = tiny.to_str().unwrap();
    let args = |seed: &str| {
        let (stdout, _) = inferlab(&[
            "generate", "--model", model, "--prompt", "Hello", "--temperature", "1.0", "--top-k", "50", "--top-p", "0.9",
            "--seed", seed, "--json", "--max-new-tokens", "16",
        ]);
        serde_json::from_str::<serde_json::Value>(&stdout).unwrap()
    };
    let (a, b, c) = (args("1"), args("1"), args("2"));
    assert_eq!(a["generated_ids"], b["generated_ids"]);
    assert_ne!(a["generated_ids"], c["generated_ids"]);

    // Stop at the second word of the greedy text.
    let greedy = golden()["prompts"][0]["greedy"]["text"].as_str().unwrap().to_string();
    let stop = greedy.split(' ').nth(2).unwrap();
    let (stdout, _) = inferlab(&["generate", "--model", model, "--prompt", "Hello", "--stop", stop, "--json"]);
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["stop_reason"], "stop_string");
    assert_eq!(json["text"].as_str().unwrap(), &greedy[..greedy.find(stop).unwrap()]);
}

#[test]
fn bench_kv_reports_both_runs_side_by_side() {
    let tiny = common::fixtures_root().join("gpt2-tiny");
    let (stdout, _) = inferlab(&["bench", "kv", "--model", tiny.to_str().unwrap(), "--new-tokens", "12", "--json"]);
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["new_tokens"], 12);
    assert_eq!(json["outputs_match"], true);
    assert_eq!(json["per_token_ms"]["with_cache"].as_array().unwrap().len(), 12);
    assert_eq!(json["per_token_ms"]["without_cache"].as_array().unwrap().len(), 12);
    let speedup = json["speedup"].as_f64().unwrap();
    let ratio = json["without_cache_ms"].as_f64().unwrap() / json["with_cache_ms"].as_f64().unwrap();
    assert!((speedup - ratio).abs() < 1e-9);
    let memory = json["memory"].as_array().unwrap();
    // gpt2-tiny: 2 layers × 64 wide; 128 tokens of f32 KV for one sequence = 2·2·64·128·4 bytes.
    let row = memory.iter().find(|r| r["seq_len"] == 128 && r["batch"] == 1 && r["bytes_per_value"] == 4).unwrap();
    assert_eq!(row["kv_bytes"], 2 * 2 * 64 * 128 * 4);
}
