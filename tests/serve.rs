//! `inferlab serve` end to end, on loopback: the real binary, started and stopped per test.
//! Parity with the fixtures' transformers goldens through the API (plain, streamed, batched in
//! one request and across concurrent requests), a table of bad requests, a load test with
//! early hang-ups and 429s that must lose nothing and leak no KV block, a drain on SIGTERM, and
//! clear start-up errors.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{fixtures_root, golden, model_dirs};
use inferlab::native::bench::serve::{ServeBenchArgs, bench};
use serde_json::{Value, json};

struct Server {
    child: Child,
    url: String,
    lines: std::sync::Mutex<std::sync::mpsc::Receiver<String>>,
}

impl Server {
    /// Starts `inferlab serve --port 0 ARGS…` and waits until `/health` says ready.
    fn start(args: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_inferlab"))
            .args(["serve", "--port", "0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("inferlab runs");
        let (send, lines) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = send.send(line);
            }
        });
        let first = lines.recv_timeout(Duration::from_secs(60)).expect("serve prints where it listens");
        let url = first
            .split("listening on ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .unwrap_or_else(|| panic!("no address in {first:?}"))
            .to_string();
        let server = Server { child, url, lines: lines.into() };
        let deadline = Instant::now() + Duration::from_secs(120);
        while get(&server.url, "/health").0 != 200 {
            assert!(Instant::now() < deadline, "the server never became ready");
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    fn tiny(args: &[&str]) -> Server {
        let dir = fixtures_root().join("gpt2-tiny");
        let mut all = vec!["--model", dir.to_str().unwrap()];
        all.extend_from_slice(args);
        Server::start(&all)
    }

    fn post(&self, body: &Value) -> (u16, Value) {
        post_raw(&self.url, "/v1/completions", body.to_string().as_bytes())
    }

    /// A metric's value summed over its label sets.
    fn metric(&self, name: &str) -> f64 {
        let (status, text) = get_text(&self.url, "/metrics");
        assert_eq!(status, 200);
        text.lines()
            .filter(|l| l.split(['{', ' ']).next() == Some(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(300)))
        .build()
        .into()
}

fn get_text(url: &str, path: &str) -> (u16, String) {
    match agent().get(format!("{url}{path}")).call() {
        Ok(r) => (r.status().as_u16(), r.into_body().read_to_string().unwrap_or_default()),
        Err(_) => (0, String::new()),
    }
}

fn get(url: &str, path: &str) -> (u16, Value) {
    let (status, text) = get_text(url, path);
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn post_raw(url: &str, path: &str, body: &[u8]) -> (u16, Value) {
    let response = agent()
        .post(format!("{url}{path}"))
        .header("content-type", "application/json")
        .send(body)
        .expect("the server answers");
    let status = response.status().as_u16();
    let text = response.into_body().read_to_string().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}")))
}

/// A streamed request's data events, `[DONE]` excluded (asserted last).
fn stream(url: &str, body: &Value) -> Vec<Value> {
    stream_from(url, "/v1/completions", body)
}

fn stream_from(url: &str, path: &str, body: &Value) -> Vec<Value> {
    let response = agent().post(format!("{url}{path}")).send(body.to_string().as_str()).unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let text = response.into_body().read_to_string().unwrap();
    let data: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
    assert_eq!(data.last(), Some(&"[DONE]"), "the stream ends with [DONE]: {text}");
    data[..data.len() - 1].iter().map(|d| serde_json::from_str(d).unwrap()).collect()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|i| i.as_u64().unwrap() as u32).collect()
}

#[test]
fn greedy_answers_equal_the_goldens_plain_streamed_and_batched() {
    for dir in model_dirs() {
        let golden = golden(&dir);
        let server = Server::start(&["--model", dir.to_str().unwrap(), "--max-batch", "4"]);
        let name = dir.file_name().unwrap().to_str().unwrap();
        let (status, models) = get(&server.url, "/v1/models");
        assert_eq!((status, models["data"][0]["id"].as_str()), (200, Some(name)));
        let request = |ids: &[u32], n: usize| json!({"model": name, "prompt": ids, "max_tokens": n, "temperature": 0, "return_token_ids": true});
        // Concurrent requests, one per prompt: each gets exactly transformers' greedy ids.
        std::thread::scope(|scope| {
            for p in &golden.prompts {
                let (server, model) = (&server, &golden.model);
                let body = request(&p.input_ids, p.greedy.new_ids.len());
                scope.spawn(move || {
                    let (status, answer) = server.post(&body);
                    assert_eq!(status, 200, "{answer}");
                    let choice = &answer["choices"][0];
                    assert_eq!(ids(&choice["token_ids"]), p.greedy.new_ids, "{model}: {}", p.name);
                    assert_eq!(choice["finish_reason"], "length");
                    assert_eq!(answer["usage"]["completion_tokens"], p.greedy.new_ids.len());
                    assert_eq!(answer["usage"]["prompt_tokens"], p.input_ids.len());
                    // The same request streamed: the chunks join to the plain answer.
                    let mut streamed_body = body.clone();
                    streamed_body["stream"] = json!(true);
                    let chunks = stream(&server.url, &streamed_body);
                    let text: String = chunks.iter().map(|c| c["choices"][0]["text"].as_str().unwrap()).collect();
                    let streamed: Vec<u32> = chunks.iter().flat_map(|c| ids(&c["choices"][0]["token_ids"])).collect();
                    assert_eq!(text, choice["text"].as_str().unwrap(), "{}", p.name);
                    assert_eq!(streamed, p.greedy.new_ids);
                    assert_eq!(chunks.last().unwrap()["choices"][0]["finish_reason"], "length");
                });
            }
        });
        // All prompts in one request (a list of token-id lists): choices in prompt order.
        let max = golden.prompts.iter().map(|p| p.greedy.new_ids.len()).min().unwrap();
        let all: Vec<&Vec<u32>> = golden.prompts.iter().map(|p| &p.input_ids).collect();
        let (status, answer) = server.post(
            &json!({"model": name, "prompt": all, "max_tokens": max, "temperature": 0, "return_token_ids": true}),
        );
        assert_eq!(status, 200, "{answer}");
        for (i, p) in golden.prompts.iter().enumerate() {
            assert_eq!(answer["choices"][i]["index"], i);
            assert_eq!(
                ids(&answer["choices"][i]["token_ids"]),
                p.greedy.new_ids[..max],
                "{}: batched {}",
                golden.model,
                p.name
            );
        }
        assert_eq!(server.metric("inferlab_kv_blocks_used"), 0.0);
    }
    // f16 weights on the CPU: every prompt in one batched request, still transformers' ids.
    let dir = fixtures_root().join("gpt2-tiny");
    let golden = golden(&dir);
    let server = Server::start(&["--model", dir.to_str().unwrap(), "--dtype", "f16"]);
    let all: Vec<&Vec<u32>> = golden.prompts.iter().map(|p| &p.input_ids).collect();
    let max = golden.prompts.iter().map(|p| p.greedy.new_ids.len()).min().unwrap();
    let (status, answer) = server.post(
        &json!({"model": "gpt2-tiny", "prompt": all, "max_tokens": max, "temperature": 0, "return_token_ids": true}),
    );
    assert_eq!(status, 200, "{answer}");
    for (i, p) in golden.prompts.iter().enumerate() {
        assert_eq!(ids(&answer["choices"][i]["token_ids"]), p.greedy.new_ids[..max], "f16: {}", p.name);
    }
}

#[test]
fn sampling_stop_echo_and_logprobs_behave_like_openai() {
    let server = Server::tiny(&[]);
    let model = "gpt2-tiny";
    // n = 3 with a seed: reproducible, and the choices differ.
    let body = json!({"model": model, "prompt": "The quick brown fox", "max_tokens": 12, "temperature": 1.0, "top_p": 0.9, "n": 3, "seed": 7});
    let (s1, a) = server.post(&body);
    let (s2, b) = server.post(&body);
    assert_eq!((s1, s2), (200, 200));
    let texts = |v: &Value| {
        v["choices"].as_array().unwrap().iter().map(|c| c["text"].as_str().unwrap().to_string()).collect::<Vec<_>>()
    };
    assert_eq!(texts(&a), texts(&b), "same seed, same choices");
    assert_eq!(texts(&a).len(), 3);
    assert!(texts(&a)[0] != texts(&a)[1] || texts(&a)[1] != texts(&a)[2], "the choices are drawn independently");
    // A stop string taken from the greedy text cuts it there.
    let greedy = json!({"model": model, "prompt": "Hello world", "max_tokens": 24, "temperature": 0});
    let (_, plain) = server.post(&greedy);
    let text = plain["choices"][0]["text"].as_str().unwrap().to_string();
    let cut = text.char_indices().map(|(i, _)| i).nth(text.chars().count() / 2).unwrap();
    let stop: String = text[cut..].chars().take(3).collect();
    let expected = &text[..text.find(&stop).unwrap()];
    let (_, stopped) = server
        .post(&json!({"model": model, "prompt": "Hello world", "max_tokens": 24, "temperature": 0, "stop": [stop]}));
    assert_eq!(stopped["choices"][0]["text"].as_str().unwrap(), expected);
    assert_eq!(stopped["choices"][0]["finish_reason"], "stop");
    // Echo puts the prompt first; logprobs give one entry per token with its top alternatives.
    let (_, echoed) = server
        .post(&json!({"model": model, "prompt": "Hello world", "max_tokens": 24, "temperature": 0, "echo": true}));
    assert_eq!(echoed["choices"][0]["text"].as_str().unwrap(), format!("Hello world{text}"));
    let (_, lp) = server
        .post(&json!({"model": model, "prompt": "Hello world", "max_tokens": 5, "temperature": 0, "logprobs": 3}));
    let logprobs = &lp["choices"][0]["logprobs"];
    assert_eq!(logprobs["tokens"].as_array().unwrap().len(), 5);
    for (chosen, top) in
        logprobs["token_logprobs"].as_array().unwrap().iter().zip(logprobs["top_logprobs"].as_array().unwrap())
    {
        let top: Vec<f64> = top.as_object().unwrap().values().map(|v| v.as_f64().unwrap()).collect();
        assert!(!top.is_empty() && top.len() <= 3);
        let best = top.iter().copied().fold(f64::MIN, f64::max);
        assert!((chosen.as_f64().unwrap() - best).abs() < 1e-5, "greedy picks the likeliest token");
        assert!(best <= 0.0);
    }
    // Usage in a stream when asked for.
    let chunks = stream(
        &server.url,
        &json!({"model": model, "prompt": "Hi", "max_tokens": 4, "stream": true, "stream_options": {"include_usage": true}}),
    );
    assert_eq!(chunks.last().unwrap()["usage"]["completion_tokens"], 4);
}

/// `echo` with `logprobs`: the prompt's own log-probabilities, as lm-evaluation-harness asks
/// for them (token-id lists, `max_tokens` 0 or 1), against transformers' teacher-forced ones.
#[test]
fn echo_with_logprobs_scores_the_prompt_like_transformers() {
    let server = Server::tiny(&[]);
    let dir = common::model_dirs().into_iter().find(|d| d.ends_with("gpt2-tiny")).unwrap();
    let golden = common::golden(&dir);
    let scoring = common::golden_scoring(&dir);
    // The fixtures' teacher-forced continuation, scored without generating.
    let tf = &golden.teacher_forced;
    let ids = [tf.prompt_ids.clone(), tf.continuation_ids.clone()].concat();
    let body =
        json!({"model": "gpt2-tiny", "prompt": ids, "max_tokens": 0, "echo": true, "logprobs": 5, "temperature": 0});
    let (status, answer) = server.post(&body);
    assert_eq!(status, 200, "{answer}");
    let choice = &answer["choices"][0];
    assert_eq!(choice["finish_reason"], "length");
    assert_eq!(answer["usage"]["completion_tokens"], 0);
    let token_logprobs = choice["logprobs"]["token_logprobs"].as_array().unwrap();
    assert_eq!(token_logprobs.len(), ids.len(), "one entry per prompt token");
    assert!(
        token_logprobs[0].is_null() && choice["logprobs"]["top_logprobs"][0].is_null(),
        "nothing predicts the first token"
    );
    for (j, expected) in tf.token_logprobs.iter().enumerate() {
        let ours = token_logprobs[tf.prompt_ids.len() + j].as_f64().unwrap();
        assert!((ours - expected).abs() <= 1e-4, "continuation token {j}: {ours} vs transformers' {expected}");
    }
    // Choices of one prompt share its scores (it is scored once).
    let mut two = body.clone();
    two["n"] = json!(2);
    let (status, both) = server.post(&two);
    assert_eq!(status, 200, "{both}");
    assert_eq!(both["choices"].as_array().unwrap().len(), 2);
    for choice in both["choices"].as_array().unwrap() {
        assert_eq!(choice["logprobs"]["token_logprobs"], answer["choices"][0]["logprobs"]["token_logprobs"]);
    }
    // Every prompt as a batch of token-id lists, one new token each (lm-eval's request): each
    // prompt position's score and top 5 against transformers', then the generated token's.
    let prompts: Vec<&common::PromptScores> =
        scoring.prompt_logprobs.iter().filter(|p| p.input_ids.len() > 1).collect();
    let ids: Vec<&Vec<u32>> = prompts.iter().map(|p| &p.input_ids).collect();
    let body =
        json!({"model": "gpt2-tiny", "prompt": ids, "max_tokens": 1, "echo": true, "logprobs": 5, "temperature": 0});
    let (status, answer) = server.post(&body);
    assert_eq!(status, 200, "{answer}");
    for (choice, prompt) in answer["choices"].as_array().unwrap().iter().zip(&prompts) {
        let lp = &choice["logprobs"];
        assert_eq!(lp["token_logprobs"].as_array().unwrap().len(), prompt.input_ids.len() + 1, "{}", prompt.prompt);
        for (i, expected) in prompt.logprobs.iter().enumerate().skip(1) {
            let expected = expected.as_ref().unwrap();
            let ours = lp["token_logprobs"][i].as_f64().unwrap();
            assert!(
                (ours - expected.logprob).abs() <= 1e-4,
                "{} position {i}: {ours} vs {}",
                prompt.prompt,
                expected.logprob
            );
            let mut top: Vec<f64> =
                lp["top_logprobs"][i].as_object().unwrap().values().map(|v| v.as_f64().unwrap()).collect();
            top.sort_by(|a, b| b.total_cmp(a));
            // Distinct ids can decode to the same text (a key then holds one of them).
            for (k, t) in top.iter().enumerate() {
                assert!(
                    expected.top_logprobs.iter().any(|e| (e - t).abs() <= 1e-4),
                    "{} position {i} top {k}: {t}",
                    prompt.prompt
                );
            }
        }
        let text = choice["text"].as_str().unwrap();
        assert!(text.starts_with(&prompt_text(&dir, &prompt.input_ids)), "the prompt is echoed first");
    }
    // Streamed: the prompt's scores arrive in the first chunk, then the tokens.
    let first = &tf.prompt_ids;
    let chunks = stream(
        &server.url,
        &json!({"model": "gpt2-tiny", "prompt": first, "max_tokens": 2, "echo": true, "logprobs": 1, "stream": true, "temperature": 0}),
    );
    let columns: Vec<usize> =
        chunks.iter().filter_map(|c| c["choices"][0]["logprobs"]["token_logprobs"].as_array().map(Vec::len)).collect();
    assert_eq!(columns.first(), Some(&first.len()), "{chunks:?}");
    assert_eq!(columns.iter().sum::<usize>(), first.len() + 2);
}

fn prompt_text(dir: &Path, ids: &[u32]) -> String {
    let json = std::fs::read(dir.join("tokenizer.json")).unwrap();
    let tokenizer = inferlab::engine::model::tokenizer::Tokenizer::from_bytes(&json).unwrap();
    tokenizer.decode(ids).unwrap()
}

/// `logit_bias` of 100 on a token makes greedy decoding emit only it; presence and frequency
/// penalties are accepted and change a seeded draw (their exact effect is `tests/sampling.rs`').
#[test]
fn logit_bias_and_penalties_through_the_api() {
    let server = Server::tiny(&[]);
    let body = json!({"model": "gpt2-tiny", "prompt": "Hello", "max_tokens": 5, "temperature": 0, "logit_bias": {"1234": 100}, "return_token_ids": true});
    let (status, answer) = server.post(&body);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(ids(&answer["choices"][0]["token_ids"]), vec![1234; 5]);
    let draw = |extra: Value| {
        let mut body = json!({"model": "gpt2-tiny", "prompt": "Hello", "max_tokens": 24, "temperature": 1, "seed": 5, "return_token_ids": true});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        let (status, answer) = server.post(&body);
        assert_eq!(status, 200, "{answer}");
        ids(&answer["choices"][0]["token_ids"])
    };
    let plain = draw(json!({}));
    assert_eq!(plain, draw(json!({})), "same seed, same draw");
    assert_ne!(plain, draw(json!({"frequency_penalty": 2.0, "presence_penalty": 2.0})));
}

/// vLLM's `/tokenize` and `/detokenize` against the fixtures' ids (transformers' tokenizer).
#[test]
fn tokenize_and_detokenize_use_the_served_tokenizer() {
    let server = Server::tiny(&[]);
    let golden = golden(&model_dirs()[0]);
    for prompt in &golden.prompts {
        let (status, answer) = post_raw(
            &server.url,
            "/tokenize",
            json!({"model": "gpt2-tiny", "prompt": prompt.text}).to_string().as_bytes(),
        );
        assert_eq!(status, 200, "{answer}");
        assert_eq!(ids(&answer["tokens"]), prompt.input_ids, "{}", prompt.name);
        assert_eq!(answer["count"], prompt.input_ids.len());
        assert_eq!(answer["max_model_len"], 256);
        let (status, back) =
            post_raw(&server.url, "/detokenize", json!({"tokens": prompt.input_ids}).to_string().as_bytes());
        assert_eq!(status, 200, "{back}");
        assert_eq!(back["prompt"], prompt.text, "{}", prompt.name);
    }
    let (_, strs) = post_raw(
        &server.url,
        "/tokenize",
        json!({"prompt": "The quick brown fox", "return_token_strs": true}).to_string().as_bytes(),
    );
    assert_eq!(strs["token_strs"], json!(["The", " quick", " brown", " fox"]));
    for (path, body, status, code) in [
        ("/detokenize", json!({"tokens": [50257]}), 400, "invalid_value"),
        ("/tokenize", json!({"model": "gpt2-tiny"}), 400, "invalid_request"),
        ("/tokenize", json!({"model": "other", "prompt": "a"}), 404, "model_not_found"),
    ] {
        let (got, answer) = post_raw(&server.url, path, body.to_string().as_bytes());
        assert_eq!((got, answer["error"]["code"].as_str()), (status, Some(code)), "{path} {body}: {answer}");
    }
}

/// `/v1/chat/completions` renders the messages with `--chat-template` (minijinja) and answers
/// what `/v1/completions` answers for the rendered prompt, in chat shapes, streamed or not.
#[test]
fn chat_completions_render_the_template_and_answer_as_the_completion() {
    let dir = tempfile::tempdir().unwrap();
    let template = dir.path().join("chat.jinja");
    std::fs::write(
        &template,
        "{% for m in messages %}{% if m.role not in ['system', 'user', 'assistant'] %}{{ raise_exception('unknown role ' ~ m.role) }}{% endif %}{{ m.role }}: {{ m.content }}\n{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}",
    )
    .unwrap();
    let server = Server::tiny(&["--chat-template", template.to_str().unwrap()]);
    let messages = json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": [{"type": "text", "text": "Hello"}]}]);
    let chat = json!({"model": "gpt2-tiny", "messages": messages, "max_tokens": 8, "temperature": 0});
    let (status, answer) = post_raw(&server.url, "/v1/chat/completions", chat.to_string().as_bytes());
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["object"], "chat.completion");
    assert!(answer["id"].as_str().unwrap().starts_with("chatcmpl-"));
    let message = &answer["choices"][0]["message"];
    assert_eq!(message["role"], "assistant");
    let (_, plain) = server.post(&json!({"model": "gpt2-tiny", "prompt": "system: Be brief.\nuser: Hello\nassistant:", "max_tokens": 8, "temperature": 0}));
    assert_eq!(message["content"], plain["choices"][0]["text"], "the rendered prompt, completed");
    assert_eq!(answer["choices"][0]["finish_reason"], plain["choices"][0]["finish_reason"]);
    assert_eq!(answer["usage"], plain["usage"]);
    // Streamed: chat chunks, the role in the first delta only, the same text.
    let mut streamed = chat.clone();
    streamed["stream"] = json!(true);
    let chunks = stream_from(&server.url, "/v1/chat/completions", &streamed);
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk"), "{chunks:?}");
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(chunks[1..].iter().all(|c| c["choices"][0]["delta"].get("role").is_none()));
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(text, message["content"].as_str().unwrap());
    // The template's own refusal, and requests a chat cannot take.
    for (body, code) in [
        (json!({"model": "gpt2-tiny", "messages": [{"role": "tool", "content": "x"}]}), "invalid_value"),
        (json!({"model": "gpt2-tiny", "messages": []}), "invalid_type"),
        (json!({"model": "gpt2-tiny", "messages": messages, "logprobs": true}), "unsupported_parameter"),
        (json!({"model": "gpt2-tiny", "messages": messages, "prompt": "x"}), "unknown_parameter"),
    ] {
        let (status, answer) = post_raw(&server.url, "/v1/chat/completions", body.to_string().as_bytes());
        assert_eq!((status, answer["error"]["code"].as_str()), (400, Some(code)), "{body}: {answer}");
    }
    // Without a template: a 400 that says how to give one.
    let bare = Server::tiny(&[]);
    let (status, answer) = post_raw(&bare.url, "/v1/chat/completions", chat.to_string().as_bytes());
    assert_eq!(status, 400);
    assert_eq!(answer["error"]["code"], "chat_template_missing");
    assert!(answer["error"]["message"].as_str().unwrap().contains("--chat-template"));
}

#[test]
fn metrics_families_are_there_before_the_first_request() {
    let server = Server::tiny(&[]);
    let (_, text) = get_text(&server.url, "/metrics");
    for family in [
        "inferlab_generated_tokens_total",
        "inferlab_prompt_tokens_total",
        "inferlab_ttft_seconds_count",
        "inferlab_itl_seconds_count",
        "inferlab_e2e_latency_seconds_count",
    ] {
        assert!(text.lines().any(|l| l.starts_with(family) && l.ends_with(" 0")), "{family} at 0 in:\n{text}");
    }
}

#[test]
fn bad_requests_get_openai_errors_and_the_server_keeps_serving() {
    let server = Server::tiny(&["--num-blocks", "64", "--max-body-bytes", "65536"]);
    let m = "gpt2-tiny";
    let long: Vec<u32> = vec![464; 256];
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("not JSON", b"{\"model\": ".to_vec(), 400, "invalid_json"),
        ("a JSON array", b"[1, 2]".to_vec(), 400, "invalid_type"),
        ("empty body", b"".to_vec(), 400, "invalid_json"),
        ("no model", json!({"prompt": "a"}).to_string().into_bytes(), 400, "missing_field"),
        ("model not a string", json!({"model": 3, "prompt": "a"}).to_string().into_bytes(), 400, "invalid_type"),
        ("unknown model", json!({"model": "gpt5", "prompt": "a"}).to_string().into_bytes(), 404, "model_not_found"),
        ("no prompt", json!({"model": m}).to_string().into_bytes(), 400, "missing_field"),
        ("empty prompt", json!({"model": m, "prompt": ""}).to_string().into_bytes(), 400, "invalid_value"),
        ("empty prompt list", json!({"model": m, "prompt": []}).to_string().into_bytes(), 400, "invalid_value"),
        ("empty token list", json!({"model": m, "prompt": [[]]}).to_string().into_bytes(), 400, "invalid_value"),
        ("prompt a number", json!({"model": m, "prompt": 5}).to_string().into_bytes(), 400, "invalid_type"),
        ("mixed prompt list", json!({"model": m, "prompt": ["a", 5]}).to_string().into_bytes(), 400, "invalid_type"),
        (
            "token id past the vocabulary",
            json!({"model": m, "prompt": [50257]}).to_string().into_bytes(),
            400,
            "invalid_value",
        ),
        ("negative token id", json!({"model": m, "prompt": [-1]}).to_string().into_bytes(), 400, "invalid_value"),
        (
            "prompt fills the context",
            json!({"model": m, "prompt": long}).to_string().into_bytes(),
            400,
            "context_length_exceeded",
        ),
        (
            "prompt + max_tokens past the context",
            json!({"model": m, "prompt": vec![1; 200], "max_tokens": 100}).to_string().into_bytes(),
            400,
            "context_length_exceeded",
        ),
        (
            "max_tokens 0",
            json!({"model": m, "prompt": "a", "max_tokens": 0}).to_string().into_bytes(),
            400,
            "invalid_value",
        ),
        (
            "max_tokens negative",
            json!({"model": m, "prompt": "a", "max_tokens": -5}).to_string().into_bytes(),
            400,
            "invalid_value",
        ),
        (
            "max_tokens absurd",
            json!({"model": m, "prompt": "a", "max_tokens": 1_000_000_000_000u64}).to_string().into_bytes(),
            400,
            "context_length_exceeded",
        ),
        (
            "max_tokens a string",
            json!({"model": m, "prompt": "a", "max_tokens": "10"}).to_string().into_bytes(),
            400,
            "invalid_type",
        ),
        (
            "max_tokens fractional",
            json!({"model": m, "prompt": "a", "max_tokens": 2.5}).to_string().into_bytes(),
            400,
            "invalid_value",
        ),
        (
            "temperature < 0",
            json!({"model": m, "prompt": "a", "temperature": -0.1}).to_string().into_bytes(),
            400,
            "invalid_value",
        ),
        (
            "temperature > 2",
            json!({"model": m, "prompt": "a", "temperature": 2.5}).to_string().into_bytes(),
            400,
            "invalid_value",
        ),
        (
            "temperature a string",
            json!({"model": m, "prompt": "a", "temperature": "hot"}).to_string().into_bytes(),
            400,
            "invalid_type",
        ),
        ("top_p 0", json!({"model": m, "prompt": "a", "top_p": 0}).to_string().into_bytes(), 400, "invalid_value"),
        (
            "top_p that rounds to 0 in f32 (a fuzz finding)",
            json!({"model": m, "prompt": "a", "top_p": 1e-50}).to_string().into_bytes(),
            400,
            "invalid_value",
        ),
        ("top_p > 1", json!({"model": m, "prompt": "a", "top_p": 1.5}).to_string().into_bytes(), 400, "invalid_value"),
        ("top_k < -1", json!({"model": m, "prompt": "a", "top_k": -2}).to_string().into_bytes(), 400, "invalid_value"),
        ("n 0", json!({"model": m, "prompt": "a", "n": 0}).to_string().into_bytes(), 400, "invalid_value"),
        ("n absurd", json!({"model": m, "prompt": "a", "n": 1000}).to_string().into_bytes(), 400, "invalid_value"),
        (
            "n × tokens over the KV pool",
            json!({"model": m, "prompt": "a", "n": 16, "max_tokens": 200}).to_string().into_bytes(),
            400,
            "kv_pool_exceeded",
        ),
        (
            "five stop strings",
            json!({"model": m, "prompt": "a", "stop": ["a", "b", "c", "d", "e"]}).to_string().into_bytes(),
            400,
            "invalid_value",
        ),
        (
            "empty stop string",
            json!({"model": m, "prompt": "a", "stop": ""}).to_string().into_bytes(),
            400,
            "invalid_value",
        ),
        ("stop a number", json!({"model": m, "prompt": "a", "stop": 3}).to_string().into_bytes(), 400, "invalid_type"),
        (
            "stream a string",
            json!({"model": m, "prompt": "a", "stream": "yes"}).to_string().into_bytes(),
            400,
            "invalid_type",
        ),
        (
            "stream_options without stream",
            json!({"model": m, "prompt": "a", "stream_options": {"include_usage": true}}).to_string().into_bytes(),
            400,
            "invalid_value",
        ),
        (
            "logprobs 6",
            json!({"model": m, "prompt": "a", "logprobs": 6}).to_string().into_bytes(),
            400,
            "invalid_value",
        ),
        (
            "presence_penalty out of range",
            json!({"model": m, "prompt": "a", "presence_penalty": -2.5}).to_string().into_bytes(),
            400,
            "invalid_value",
        ),
        (
            "frequency_penalty out of range",
            json!({"model": m, "prompt": "a", "frequency_penalty": 9}).to_string().into_bytes(),
            400,
            "invalid_value",
        ),
        (
            "best_of other than n",
            json!({"model": m, "prompt": "a", "best_of": 3}).to_string().into_bytes(),
            400,
            "unsupported_parameter",
        ),
        (
            "suffix",
            json!({"model": m, "prompt": "a", "suffix": "b"}).to_string().into_bytes(),
            400,
            "unsupported_parameter",
        ),
        (
            "logit_bias for a token outside the vocabulary",
            json!({"model": m, "prompt": "a", "logit_bias": {"50257": -100}}).to_string().into_bytes(),
            400,
            "invalid_value",
        ),
        (
            "logit_bias past 100",
            json!({"model": m, "prompt": "a", "logit_bias": {"50256": 101}}).to_string().into_bytes(),
            400,
            "invalid_value",
        ),
        (
            "seed a string",
            json!({"model": m, "prompt": "a", "seed": "x"}).to_string().into_bytes(),
            400,
            "invalid_type",
        ),
        (
            "repetition_penalty 0",
            json!({"model": m, "prompt": "a", "repetition_penalty": 0}).to_string().into_bytes(),
            400,
            "invalid_value",
        ),
        (
            "unknown field",
            json!({"model": m, "prompt": "a", "max_token": 5}).to_string().into_bytes(),
            400,
            "unknown_parameter",
        ),
        (
            "body over the size limit",
            json!({"model": m, "prompt": "a".repeat(70_000)}).to_string().into_bytes(),
            413,
            "body_too_large",
        ),
    ];
    assert!(cases.len() >= 30);
    for (label, body, status, code) in &cases {
        let (got, answer) = post_raw(&server.url, "/v1/completions", body);
        assert_eq!((got, answer["error"]["code"].as_str()), (*status, Some(*code)), "{label}: {answer}");
        let error = &answer["error"];
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()) && error["type"].is_string(),
            "{label}: {answer}"
        );
    }
    let (status, answer) = post_raw(&server.url, "/v1/nothing", b"{}");
    assert_eq!((status, answer["error"]["code"].as_str()), (404, Some("not_found")));
    let (status, answer) = get(&server.url, "/v1/completions");
    assert_eq!((status, answer["error"]["code"].as_str()), (405, Some("method_not_allowed")));
    // Still serving, and every bad request was counted by status.
    let (status, answer) = server.post(&json!({"model": m, "prompt": "Hello", "max_tokens": 3}));
    assert_eq!(status, 200, "{answer}");
    assert!(server.metric("inferlab_http_requests_total") >= cases.len() as f64 + 1.0);
    assert_eq!(server.metric("inferlab_kv_blocks_used"), 0.0);
}

#[test]
fn load_with_hang_ups_and_429s_loses_nothing_and_leaks_no_block() {
    let server = Server::tiny(&["--devices", "cpu,cpu", "--max-queue", "16", "--max-batch", "8"]);
    #[derive(clap::Parser)]
    struct Load {
        #[command(flatten)]
        args: ServeBenchArgs,
    }
    let load = |requests: usize, rate: f64, seed: u64| {
        let flags = format!(
            "--url {} --requests {requests} --rate {rate} --workload-seed {seed} --concurrency 64 --prompt-len 8..8 --output-len 1..24 --lengths uniform --temperature 0.8 --disconnect 0.1",
            server.url
        );
        <Load as clap::Parser>::parse_from(std::iter::once("bench").chain(flags.split(' '))).args
    };
    // A burst from 64 clients at once against a queue of 16 (429s guaranteed), then a paced
    // stream: 1,000 requests in all, each completed, refused or hung up on — none lost.
    let burst = bench(&load(200, 0.0, 3)).expect("the burst ran");
    let paced = bench(&load(800, 60.0, 4)).expect("the paced load ran");
    for report in [&burst, &paced] {
        assert_eq!(
            report.completed + report.rejected_429 + report.cancelled + report.failed,
            report.requests,
            "{report:?}"
        );
        assert_eq!(report.failed, 0, "{:?}", report.failures);
    }
    assert!(paced.cancelled > 0, "some clients hung up: {paced:?}");
    assert!(burst.rejected_429 > 0, "a queue of 16 under a burst from 64 clients must refuse some: {burst:?}");
    assert!(paced.completed > 300, "{paced:?}");
    let report = paced;
    // Hung-up requests are aborted by the engine: soon nothing runs and no block is held.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let held = (
            server.metric("inferlab_kv_blocks_used"),
            server.metric("inferlab_running"),
            server.metric("inferlab_queue_depth"),
        );
        if held == (0.0, 0.0, 0.0) {
            break;
        }
        assert!(Instant::now() < deadline, "still held after the load (blocks, running, queued): {held:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(server.metric("inferlab_kv_blocks_free") > 0.0);
    assert!(server.metric("inferlab_ttft_seconds_count") >= report.completed as f64);
    let admitted = 1000 - burst.rejected_429 - report.rejected_429;
    assert!(server.metric("inferlab_request_outcomes_total") >= admitted as f64);
    // The load generator's command line and JSON contract.
    let out = Command::new(env!("CARGO_BIN_EXE_inferlab"))
        .args([
            "bench",
            "serve",
            "--url",
            &server.url,
            "--requests",
            "12",
            "--concurrency",
            "4",
            "--rate",
            "50",
            "--output-len",
            "2..6",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    for field in [
        "completed",
        "rejected_429",
        "cancelled",
        "failed",
        "throughput_rps",
        "output_tokens_per_s",
        "ttft_ms",
        "itl_ms",
        "latency_ms",
    ] {
        assert!(report.get(field).is_some(), "bench serve --json lacks {field}: {report}");
    }
    assert_eq!(report["completed"], 12);
}

/// A streamed request sent over a raw socket, so the test decides when the client hangs up.
struct RawClient(std::net::TcpStream);

impl RawClient {
    fn send(url: &str, body: &Value) -> RawClient {
        use std::io::Write;
        let mut socket = std::net::TcpStream::connect(url.trim_start_matches("http://")).unwrap();
        let body = body.to_string();
        let head = format!(
            "POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        socket.write_all(head.as_bytes()).unwrap();
        socket.write_all(body.as_bytes()).unwrap();
        RawClient(socket)
    }

    /// Reads until the first SSE data event has arrived.
    fn first_chunk(&mut self) {
        use std::io::Read;
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&seen).contains("data: ") {
            let n = self.0.read(&mut buf).unwrap();
            assert!(n > 0, "the stream closed before its first chunk");
            seen.extend_from_slice(&buf[..n]);
        }
    }

    fn hang_up(self) {
        let _ = self.0.shutdown(std::net::Shutdown::Both);
    }
}

impl Server {
    /// Polls a metric (summed over labels) until `ok` holds; panics with its last value after 20 s.
    fn wait_for(&self, name: &str, ok: impl Fn(f64) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut value = self.metric(name);
        while !ok(value) {
            assert!(Instant::now() < deadline, "{name} stayed at {value}");
            std::thread::sleep(Duration::from_millis(20));
            value = self.metric(name);
        }
    }
}

/// A client that hangs up is aborted: the one running (after its first chunk of a long
/// answer) and the one still queued behind it. Both are counted as cancelled, their blocks are
/// free, and the running one generated far fewer tokens than it was asked for.
#[test]
fn hung_up_requests_are_aborted_running_or_queued() {
    let server = Server::tiny(&["--max-batch", "1"]);
    let long = json!({"model": "gpt2-tiny", "prompt": [15496], "max_tokens": 250, "ignore_eos": true,
        "temperature": 0, "stream": true});
    let mut running = RawClient::send(&server.url, &long);
    running.first_chunk();
    let queued = RawClient::send(&server.url, &long);
    server.wait_for("inferlab_waiting", |v| v == 1.0);
    assert_eq!(server.metric("inferlab_cancelled_sequences_total"), 0.0);
    queued.hang_up();
    server.wait_for("inferlab_cancelled_sequences_total", |v| v == 1.0);
    server.wait_for("inferlab_waiting", |v| v == 0.0);
    assert_eq!(server.metric("inferlab_running"), 1.0, "the running one runs on (it takes seconds)");
    running.hang_up();
    server.wait_for("inferlab_cancelled_sequences_total", |v| v == 2.0);
    server.wait_for("inferlab_kv_blocks_used", |v| v == 0.0);
    server.wait_for("inferlab_running", |v| v == 0.0);
    let generated = server.metric("inferlab_generated_tokens_total");
    assert!(generated < 125.0, "aborted after {generated} of 250 tokens: the hang-up was noticed late");
}

/// A KV pool too small for four sequences at once forces preemption (a sequence's blocks are
/// freed and its tokens recomputed later): every stream must still be exactly its solo run, no
/// token twice and none lost, greedy (transformers' goldens) and with seeded sampling, with an
/// f32 and an f16 cache.
#[test]
fn preempted_streams_equal_their_solo_runs() {
    let dir = fixtures_root().join("gpt2-tiny");
    let golden = golden(&dir);
    for kv_dtype in ["f32", "f16"] {
        // The longest prompt and its answer take 20 blocks of 4; four sequences need up to 52.
        let server =
            Server::tiny(&["--max-batch", "4", "--block-size", "4", "--num-blocks", "24", "--kv-dtype", kv_dtype]);
        let body = |prompt: &[u32], sampled: bool| {
            let n = 24;
            match sampled {
                false => json!({"model": "gpt2-tiny", "prompt": prompt, "max_tokens": n, "temperature": 0,
                    "ignore_eos": true, "return_token_ids": true, "stream": true}),
                true => json!({"model": "gpt2-tiny", "prompt": prompt, "max_tokens": n, "temperature": 0.9,
                    "top_k": 40, "seed": 11, "ignore_eos": true, "return_token_ids": true, "stream": true}),
            }
        };
        let streamed = |sampled: bool, concurrent: bool| -> Vec<Vec<u32>> {
            let run = |prompt: &Vec<u32>| -> Vec<u32> {
                let chunks = stream(&server.url, &body(prompt, sampled));
                chunks.iter().flat_map(|c| ids(&c["choices"][0]["token_ids"])).collect()
            };
            match concurrent {
                true => std::thread::scope(|scope| {
                    let run = &run;
                    let handles: Vec<_> =
                        golden.prompts.iter().map(|p| scope.spawn(move || run(&p.input_ids))).collect();
                    handles.into_iter().map(|h| h.join().unwrap()).collect()
                }),
                false => golden.prompts.iter().map(|p| run(&p.input_ids)).collect(),
            }
        };
        for sampled in [false, true] {
            let before = server.metric("inferlab_preemptions_total");
            let together = streamed(sampled, true);
            let preempted = server.metric("inferlab_preemptions_total") - before;
            assert!(preempted > 0.0, "{kv_dtype}, sampled {sampled}: the small pool never preempted");
            let solo = streamed(sampled, false);
            for ((p, ours), alone) in golden.prompts.iter().zip(&together).zip(&solo) {
                let label = format!("{kv_dtype} cache, sampled {sampled}, {} ({preempted} preemptions)", p.name);
                assert_eq!(ours, alone, "{label}: the stream differs from its solo run");
                if !sampled {
                    assert_eq!(ours, &p.greedy.new_ids, "{label}: transformers' greedy ids");
                }
            }
        }
        assert_eq!(server.metric("inferlab_kv_blocks_used"), 0.0);
    }
}

#[test]
fn sigterm_drains_running_streams_and_refuses_new_requests() {
    let tokenizer = fixtures_root().join("tokenizer");
    let mut server = Server::start(&[
        "--model",
        "random:distilgpt2",
        "--tokenizer",
        tokenizer.to_str().unwrap(),
        "--drain-timeout",
        "60",
    ]);
    let url = server.url.clone();
    let body = json!({"model": "random:distilgpt2", "prompt": "Once upon a time", "max_tokens": 48, "ignore_eos": true, "stream": true, "return_token_ids": true});
    let (started, first_chunks) = std::sync::mpsc::channel();
    let streams: Vec<_> = (0..4)
        .map(|_| {
            let (url, body, started) = (url.clone(), body.clone(), started.clone());
            std::thread::spawn(move || {
                let response = agent().post(format!("{url}/v1/completions")).send(body.to_string().as_str()).unwrap();
                let mut reader = BufReader::new(response.into_body().into_reader());
                let (mut tokens, mut line, mut done) = (0, String::new(), false);
                while reader.read_line(&mut line).unwrap_or(0) > 0 {
                    if let Some(data) = line.trim().strip_prefix("data: ") {
                        if data == "[DONE]" {
                            done = true;
                        } else {
                            tokens += serde_json::from_str::<Value>(data).unwrap()["choices"][0]["token_ids"]
                                .as_array()
                                .unwrap()
                                .len();
                            let _ = started.send(());
                        }
                    }
                    line.clear();
                }
                (tokens, done)
            })
        })
        .collect();
    for _ in 0..4 {
        first_chunks.recv_timeout(Duration::from_secs(120)).expect("every stream started");
    }
    let pid = server.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let drained = Instant::now() + Duration::from_secs(5);
    while !server.lines.lock().unwrap().try_iter().any(|l| l.contains("draining")) {
        assert!(Instant::now() < drained, "the server did not start draining");
        std::thread::sleep(Duration::from_millis(20));
    }
    // New requests are refused: the listener is closed (or, on a kept-alive connection, 503).
    let refused = agent()
        .post(format!("{url}/v1/completions"))
        .send(json!({"model": "random:distilgpt2", "prompt": "x", "max_tokens": 2}).to_string().as_str());
    if let Ok(response) = refused {
        assert_eq!(response.status().as_u16(), 503);
    }
    for stream in streams {
        assert_eq!(stream.join().unwrap(), (48, true), "a running stream finished whole");
    }
    let status = wait_exit(&mut server.child, Duration::from_secs(30));
    assert!(status.success(), "drained and exited 0: {status:?}");
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "the process did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn start_up_errors_are_clear() {
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_inferlab")).arg("serve").args(args).output().unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let missing = Path::new(env!("CARGO_MANIFEST_DIR")).join("no-such-model");
    let err = run(&["--model", missing.to_str().unwrap(), "--hub-url", "http://127.0.0.1:9"]);
    assert!(err.contains("neither a model folder nor a hub repo id"), "{err}");
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port().to_string();
    let tiny = fixtures_root().join("gpt2-tiny");
    let err = run(&["--model", tiny.to_str().unwrap(), "--port", &port]);
    assert!(err.contains("cannot listen"), "{err}");
    let err = run(&["--model", tiny.to_str().unwrap(), "--device", "cuda", "--port", "0"]);
    assert!(err.contains("without CUDA") || err.contains("cuda"), "{err}");
    let err = run(&["--model", "random:gpt2", "--port", "0"]);
    assert!(err.contains("--tokenizer"), "{err}");
    let err = run(&["--model", tiny.to_str().unwrap(), "--device", "cuda", "--dtype", "f16", "--port", "0"]);
    assert!(err.contains("CUDA keeps f32"), "{err}");
    let err = run(&["--model", tiny.to_str().unwrap(), "--policy", "adaptive"]);
    assert!(err.contains("adaptive"), "{err}");
    let broken = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(broken.path(), "{% for m in %}").unwrap();
    let err =
        run(&["--model", tiny.to_str().unwrap(), "--chat-template", broken.path().to_str().unwrap(), "--port", "0"]);
    assert!(err.contains("the chat template does not compile"), "{err}");
}
