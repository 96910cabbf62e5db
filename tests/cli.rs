//! The command line as a user meets it: streamed text, JSON output, seeded sampling,
//! stop strings, the paged cache, batching, the simulator and the benchmarks' JSON.

mod common;

use std::process::Command;

fn inferlab(args: &[&str]) -> (String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_inferlab")).args(args).output().unwrap();
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
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
    // f16 weights round each weight, yet on this prompt every greedy choice stays the same.
    for dtype in ["f32", "f16"] {
        let (stdout, stderr) = inferlab(&[
            "generate",
            "--model",
            tiny.to_str().unwrap(),
            "--prompt",
            prompt["text"].as_str().unwrap(),
            "--max-new-tokens",
            "24",
            "--dtype",
            dtype,
        ]);
        assert_eq!(stdout.trim_end_matches('\n'), prompt["greedy"]["text"].as_str().unwrap(), "{dtype}");
        assert!(stderr.contains("tok/s") && stderr.contains("TTFT"), "{stderr}");
    }
}

#[test]
fn sampling_is_seeded_and_stop_strings_cut_the_text() {
    let tiny = common::fixtures_root().join("gpt2-tiny");
    let model = tiny.to_str().unwrap();
    let args = |seed: &str| {
        let (stdout, _) = inferlab(&[
            "generate",
            "--model",
            model,
            "--prompt",
            "Hello",
            "--temperature",
            "1.0",
            "--top-k",
            "50",
            "--top-p",
            "0.9",
            "--seed",
            seed,
            "--json",
            "--max-new-tokens",
            "16",
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
    let before_stop = &greedy[..greedy.find(stop).unwrap()];
    assert_eq!(json["text"].as_str().unwrap(), before_stop);
    // Streamed to the terminal: the same text, the stop string never shown.
    let (stdout, _) = inferlab(&["generate", "--model", model, "--prompt", "Hello", "--stop", stop]);
    assert_eq!(stdout.trim_end_matches('\n'), before_stop);
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

#[test]
fn bench_decode_reports_speed_over_every_row() {
    let tiny = common::fixtures_root().join("gpt2-tiny");
    for batch in ["1", "3"] {
        let (stdout, _) = inferlab(&[
            "bench",
            "decode",
            "--model",
            tiny.to_str().unwrap(),
            "--batch",
            batch,
            "--new-tokens",
            "6",
            "--json",
        ]);
        let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        for field in ["decode_tokens_per_s", "ttft_ms", "per_token_ms", "device", "dtype", "threads"] {
            assert!(!json[field].is_null(), "bench decode --json lacks {field}: {json}");
        }
        let steps: Vec<f64> = json["step_ms"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        assert_eq!(steps.len(), 6);
        assert_eq!(json["ttft_ms"].as_f64().unwrap(), steps[0]);
        let rows: f64 = batch.parse().unwrap();
        let expected = rows * 5.0 * 1000.0 / steps[1..].iter().sum::<f64>();
        assert!((json["decode_tokens_per_s"].as_f64().unwrap() - expected).abs() < 1e-6 * expected);
        assert_eq!(json["dtype"], "f32");
        assert!(json["f16_drift"].is_null());
    }
    // f16 weights: the same report, plus their accuracy on the f32 model's own greedy text.
    let (stdout, _) = inferlab(&[
        "bench",
        "decode",
        "--model",
        tiny.to_str().unwrap(),
        "--batch",
        "2",
        "--new-tokens",
        "6",
        "--dtype",
        "f16",
        "--json",
    ]);
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["dtype"], "f16");
    assert!(json["decode_tokens_per_s"].as_f64().unwrap() > 0.0);
    let drift = &json["f16_drift"];
    assert_eq!(drift["positions"], 8 + 6 - 1, "prompt + new tokens, each scored but the first");
    assert!(drift["mean_abs_logprob_change"].as_f64().unwrap() < 5e-3, "{drift}");
    assert!(drift["max_abs_logit_diff"].as_f64().unwrap() > 0.0, "f16 rounding moves the logits: {drift}");
    assert_eq!(drift["top1_agreement"], 1.0);
    // int8 weights and an f16 KV cache: their accuracy under its own name, the cache's size.
    let (stdout, _) = inferlab(&[
        "bench",
        "decode",
        "--model",
        tiny.to_str().unwrap(),
        "--new-tokens",
        "6",
        "--dtype",
        "int8",
        "--kv-dtype",
        "f16",
        "--json",
    ]);
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!((json["dtype"].as_str(), json["kv_dtype"].as_str()), (Some("int8"), Some("f16")));
    assert_eq!(json["kv_cache_bytes"], 2 * 2 * 64 * (8 + 6) * 2, "K and V × layers × width × tokens × 2 bytes");
    assert!(json["f16_drift"].is_null() && json["int8_drift"]["positions"] == 8 + 6 - 1, "{json}");
}

#[test]
fn bench_kernels_on_the_cpu_times_row_dots_against_the_matmul() {
    let tiny = common::fixtures_root().join("gpt2-tiny");
    let (stdout, _) = inferlab(&[
        "bench",
        "kernels",
        "--device",
        "cpu",
        "--model",
        tiny.to_str().unwrap(),
        "--reps",
        "1",
        "--new-tokens",
        "4",
        "--json",
    ]);
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["device"], "cpu");
    assert_eq!(json["kernels"].as_array().unwrap().len(), 0, "no WGSL on the CPU");
    let rows = json["row_dots"].as_array().unwrap();
    // Four GPT-2-small tables × 1, 8 and 16 rows.
    assert_eq!(rows.len(), 12);
    for r in rows {
        let (kernel, twin) = (r["kernel_ms"].as_f64().unwrap(), r["twin_ms"].as_f64().unwrap());
        assert!(kernel > 0.0 && twin > 0.0, "{r}");
        assert!((r["speedup"].as_f64().unwrap() - twin / kernel).abs() < 1e-9 * twin / kernel);
    }
    assert!(
        rows.iter().any(|r| r["layer"] == "head" && r["table"] == serde_json::json!([50257, 768]) && r["rows"] == 16)
    );
    // The same greedy tokens with the kernel and with the matmuls.
    assert_eq!(json["decode"]["same_tokens"], true);
    assert!(json["decode"]["kernels_on_tok_s"].as_f64().unwrap() > 0.0);
}

#[test]
fn generate_on_the_paged_cache_gives_the_greedy_ids() {
    let tiny = common::fixtures_root().join("gpt2-tiny");
    let prompt = &golden()["prompts"][2];
    let ids: Vec<String> = prompt["input_ids"].as_array().unwrap().iter().map(|v| v.to_string()).collect();
    let (stdout, _) = inferlab(&[
        "generate",
        "--model",
        tiny.to_str().unwrap(),
        "--prompt-ids",
        &ids.join(","),
        "--max-new-tokens",
        "24",
        "--kv",
        "paged",
        "--block-size",
        "5",
        "--json",
    ]);
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["generated_ids"], prompt["greedy"]["new_ids"]);
    assert_eq!(json["kv"], "paged:5");
}

#[test]
fn batch_runs_a_requests_file_and_reports_every_field() {
    let tiny = common::fixtures_root().join("gpt2-tiny");
    let golden = golden();
    let prompts = golden["prompts"].as_array().unwrap();
    let lines: Vec<String> = prompts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            serde_json::json!({ "prompt_ids": p["input_ids"], "max_new_tokens": 24, "arrival_ms": 2 * i }).to_string()
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("requests.jsonl");
    std::fs::write(&path, lines.join("\n")).unwrap();
    for policy in ["static", "dynamic", "adaptive", "continuous"] {
        let (stdout, _) = inferlab(&[
            "batch",
            "--model",
            tiny.to_str().unwrap(),
            "--requests",
            path.to_str().unwrap(),
            "--policy",
            policy,
            "--max-batch",
            "4",
            "--json",
        ]);
        let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        for (request, prompt) in json["requests"].as_array().unwrap().iter().zip(prompts) {
            assert_eq!(request["generated_ids"], prompt["greedy"]["new_ids"], "{policy}");
            assert_eq!(request["text"], prompt["greedy"]["text"], "{policy}");
            for field in ["index", "queue_ms", "ttft_ms", "latency_ms", "preemptions"] {
                assert!(!request[field].is_null(), "{policy}: requests[].{field}");
            }
            assert!(request["latency_ms"].as_f64().unwrap() >= request["ttft_ms"].as_f64().unwrap());
        }
        let stats = &json["stats"];
        for field in [
            "throughput_tok_s",
            "p50_latency_ms",
            "p99_latency_ms",
            "p50_ttft_ms",
            "mean_batch",
            "peak_blocks",
            "kv_waste_pct",
            "prefix_hit_rate",
        ] {
            assert!(stats[field].is_number(), "{policy}: stats.{field}");
        }
        assert!(stats["throughput_tok_s"].as_f64().unwrap() > 0.0);
    }
}

#[test]
fn bench_batching_compares_the_policies_and_the_simulator() {
    let tiny = common::fixtures_root().join("gpt2-tiny");
    let (stdout, _) = inferlab(&[
        "bench",
        "batching",
        "--model",
        tiny.to_str().unwrap(),
        "--requests",
        "12",
        "--rate",
        "200",
        "--prompt-len",
        "4..24",
        "--output-len",
        "2..20",
        "--json",
    ]);
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    for policy in ["static", "dynamic", "adaptive", "continuous"] {
        let p = &json["policies"][policy];
        assert_eq!(p["completed"], 12, "{policy}");
        assert!(p["throughput_tok_s"].as_f64().unwrap() > 0.0, "{policy}");
        assert!(p["simulated"]["throughput_tok_s"].as_f64().unwrap() > 0.0, "{policy}");
    }
    for ratio in ["continuous/static", "continuous/dynamic"] {
        assert!(json["ratios"][ratio]["throughput"].as_f64().unwrap() > 0.0, "{ratio}");
        assert!(json["ratios"][ratio]["p99_latency"].as_f64().unwrap() > 0.0, "{ratio}");
    }
}

#[test]
fn bench_step_fits_a_cost_that_simulate_reads() {
    let tiny = common::fixtures_root().join("gpt2-tiny");
    let (stdout, _) = inferlab(&["bench", "step", "--model", tiny.to_str().unwrap(), "--quick", "--json"]);
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert!(json["timings"].as_array().unwrap().len() >= 8);
    assert!(json["cost"]["per_token_ms"].as_f64().unwrap() >= 0.0);
    let dir = tempfile::tempdir().unwrap();
    let cost = dir.path().join("cost.json");
    std::fs::write(&cost, &stdout).unwrap();
    let (stdout, _) = inferlab(&[
        "simulate",
        "--policy",
        "static,continuous",
        "--rate",
        "50",
        "--requests",
        "10000",
        "--cost",
        cost.to_str().unwrap(),
        "--context",
        "256",
        "--prompt-len",
        "8..64",
        "--output-len",
        "8..64",
        "--json",
    ]);
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    for policy in ["static", "continuous"] {
        assert_eq!(json["policies"][policy]["completed"], 10000, "{policy}");
    }
    let trace = dir.path().join("trace.jsonl");
    let lines = [
        r#"{"prompt_tokens": 30, "max_new_tokens": 9, "arrival_ms": 0}"#,
        r#"{"prompt_ids": [1, 2, 3], "max_new_tokens": 4, "arrival_ms": 5}"#,
    ];
    std::fs::write(&trace, lines.join("\n")).unwrap();
    let (stdout, _) = inferlab(&[
        "simulate",
        "--policy",
        "continuous",
        "--trace",
        trace.to_str().unwrap(),
        "--cost",
        cost.to_str().unwrap(),
        "--context",
        "256",
        "--json",
    ]);
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["policies"]["continuous"]["completed"], 2);
    assert_eq!(json["policies"]["continuous"]["generated_tokens"], 13);
}

#[test]
fn generate_with_a_draft_model_equals_greedy_and_reports_the_speedup() {
    let root = common::fixtures_root();
    let assisted = &golden()["assisted_greedy_with_draft"];
    let result = &assisted["results"][0];
    let prompt =
        golden()["prompts"].as_array().unwrap().iter().find(|p| p["name"] == result["prompt"]).unwrap().clone();
    let (stdout, _) = inferlab(&[
        "generate",
        "--model",
        root.join("gpt2-tiny").to_str().unwrap(),
        "--prompt",
        prompt["text"].as_str().unwrap(),
        "--max-new-tokens",
        "24",
        "--draft",
        root.join("gpt2-tiny-draft").to_str().unwrap(),
        "--gamma",
        "3",
        "--json",
    ]);
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["generated_ids"], result["new_ids"]);
    let spec = &json["speculative"];
    for key in
        ["gamma", "alpha", "tokens_per_target_pass", "accepted_hist", "c", "theoretical_speedup", "measured_speedup"]
    {
        assert!(!spec[key].is_null(), "speculative.{key} missing: {spec}");
    }
    assert_eq!(spec["gamma"], 3);
    let hist: u64 = spec["accepted_hist"].as_array().unwrap().iter().map(|n| n.as_u64().unwrap()).sum();
    assert!(hist > 0 && spec["measured_speedup"].as_f64().unwrap() > 0.0, "{spec}");
}

#[test]
fn generate_with_beams_prints_the_golden_beams() {
    let prompt = golden()["prompts"][1].clone();
    let beam = &prompt["beam"];
    let tiny = common::fixtures_root().join("gpt2-tiny");
    let (stdout, _) = inferlab(&[
        "generate",
        "--model",
        tiny.to_str().unwrap(),
        "--prompt",
        prompt["text"].as_str().unwrap(),
        "--max-new-tokens",
        "16",
        "--num-beams",
        "4",
        "--num-return-sequences",
        "4",
        "--early-stopping",
        "true",
        "--json",
    ]);
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let beams = json["beams"].as_array().unwrap();
    assert_eq!(beams.len(), 4);
    for (i, b) in beams.iter().enumerate() {
        assert_eq!(b["ids"], beam["new_ids"][i], "beam {i}");
        assert!((b["score"].as_f64().unwrap() - beam["sequences_scores"][i].as_f64().unwrap()).abs() <= 1e-4);
        assert!(b["text"].is_string());
    }
    assert_eq!(json["generated_ids"], beam["new_ids"][0]);
}

#[test]
fn bench_speculative_and_beam_report_side_by_side() {
    let tiny = common::fixtures_root().join("gpt2-tiny");
    let tiny = tiny.to_str().unwrap();
    let bench = |extra: &[&str]| {
        let mut args = vec!["bench", "speculative", "--target", tiny, "--draft", "ngram:2", "--json"];
        args.extend_from_slice(extra);
        serde_json::from_str::<serde_json::Value>(&inferlab(&args).0).unwrap()
    };
    let json = bench(&["--draft", "layers:1", "--gammas", "1,2", "--new-tokens", "8"]);
    let rows = json["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 4);
    for row in rows {
        assert_eq!(row["same_output_as_plain"], true, "{row}");
        assert!(
            row["measured_speedup"].as_f64().unwrap() > 0.0 && row["theoretical_speedup"].as_f64().unwrap() > 0.0,
            "{row}"
        );
    }
    // A text prompt is read by the target's tokenizer: as many tokens as transformers' tokenizer gives it.
    let golden = golden();
    let prompt = golden["prompts"].as_array().unwrap().iter().max_by_key(|p| p["num_tokens"].as_u64()).unwrap();
    let json = bench(&["--gammas", "2", "--new-tokens", "4", "--prompt", prompt["text"].as_str().unwrap()]);
    assert_eq!(json["prompt_tokens"], prompt["num_tokens"], "{json}");
    let (stdout, _) = inferlab(&["bench", "beam", "--model", tiny, "--num-beams", "3", "--new-tokens", "8", "--json"]);
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["same_output"], true);
    for mode in ["paged", "contiguous", "recompute"] {
        assert!(json["runs"][mode]["ms"].as_f64().unwrap() > 0.0, "{mode}");
    }
}

/// Output piped into a reader that has stopped (`… --json | head -c 1`) ends the command
/// quietly, with no panic report.
#[test]
fn a_closed_stdout_ends_a_command_quietly() {
    use std::io::Read;
    let dir = common::fixtures_root().join("gpt2-tiny").to_string_lossy().into_owned();
    let mut child = Command::new(env!("CARGO_BIN_EXE_inferlab"))
        .args(["inspect", "--model", &dir, "--prompt-ids", "1,2,3", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(status.success(), "{status}: {stderr}");
}

/// OpenAI's sampling flags on `generate`: a bias of 100 forces a token; out-of-range values
/// and ids outside the vocabulary are refused with a message.
#[test]
fn generate_takes_logit_bias_and_penalties() {
    let dir = common::fixtures_root().join("gpt2-tiny").to_string_lossy().into_owned();
    let args = ["generate", "--model", &dir, "--prompt", "Hello", "--max-new-tokens", "3", "--json"];
    let (out, _) = inferlab(&[&args[..], &["--logit-bias", "1234=100", "--presence-penalty", "0.5"]].concat());
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["generated_ids"], serde_json::json!([1234, 1234, 1234]));
    for (bad, says) in [
        (vec!["--logit-bias", "50257=1"], "outside the vocabulary"),
        (vec!["--logit-bias", "7=-101"], "-100 to 100"),
        (vec!["--frequency-penalty", "2.5"], "-2 to 2"),
        (vec!["--logit-bias", "7"], "ID=BIAS"),
        (vec!["--num-beams", "2", "--logit-bias", "7=1"], "beam search ranks by log-probabilities"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_inferlab")).args([&args[..], &bad[..]].concat()).output().unwrap();
        assert!(!out.status.success(), "{bad:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says) && !stderr.contains("panicked"), "{bad:?}: {stderr}");
    }
}
