//! The hub download path, end to end, against a loopback HTTP server that serves the fixture
//! folders with the hub's layout (`/{repo}/resolve/main/{file}`): first load downloads into
//! the cache, the second is served from the cache with the server gone.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

use inferlab::native::hub::{fetch_repo, is_repo_id};

/// Serves `root/{name}/{file}` as `/{org}/{name}/resolve/main/{file}` until `requests` have
/// been answered or the test ends. Returns the base URL and the request counter.
fn serve_fixtures(root: PathBuf) -> (String, Arc<AtomicUsize>) {
    let server = tiny_http::Server::http("127.0.0.1:0").expect("bind loopback");
    let url = format!("http://{}", server.server_addr().to_ip().expect("ip address"));
    let served = Arc::new(AtomicUsize::new(0));
    let counter = served.clone();
    thread::spawn(move || {
        for request in server.incoming_requests() {
            counter.fetch_add(1, Ordering::SeqCst);
            let parts: Vec<&str> = request.url().trim_start_matches('/').split('/').collect();
            let file = match parts.as_slice() {
                [_org, name, "resolve", "main", file] => Some(root.join(name).join(file)),
                _ => None,
            };
            let response = match file.and_then(|f| std::fs::read(f).ok()) {
                Some(bytes) => tiny_http::Response::from_data(bytes).boxed(),
                None => tiny_http::Response::from_string("not found").with_status_code(404).boxed(),
            };
            let _ = request.respond(response);
        }
    });
    (url, served)
}

#[test]
fn repo_ids_are_told_from_paths() {
    assert!(is_repo_id("gpt2"));
    assert!(is_repo_id("openai-community/gpt2"));
    assert!(!is_repo_id("./gpt2"));
    assert!(!is_repo_id("/models/gpt2"));
    assert!(!is_repo_id("a/b/c"));
    assert!(!is_repo_id("../x"));
}

#[test]
fn downloads_once_then_uses_the_cache() {
    let (url, served) = serve_fixtures(common::fixtures_root());
    let cache = tempfile::tempdir().unwrap();
    let dir = fetch_repo(&url, "test-org/gpt2-tiny", cache.path(), false).expect("download");
    for file in ["config.json", "model.safetensors", "tokenizer.json"] {
        let ours = std::fs::read(dir.join(file)).unwrap();
        let original = std::fs::read(common::fixtures_root().join("gpt2-tiny").join(file)).unwrap();
        assert!(ours == original, "{file} differs after download");
    }
    assert_eq!(served.load(Ordering::SeqCst), 3);
    fetch_repo(&url, "test-org/gpt2-tiny", cache.path(), false).expect("cached");
    assert_eq!(served.load(Ordering::SeqCst), 3, "a cached model is not downloaded again");

    let missing = fetch_repo(&url, "test-org/no-such-model", cache.path(), false).unwrap_err();
    assert!(format!("{missing:#}").contains("404"), "{missing:#}");
}

#[test]
fn cli_generates_from_a_hub_repo() {
    let (url, _) = serve_fixtures(common::fixtures_root());
    let cache = tempfile::tempdir().unwrap();
    let golden: serde_json::Value =
        serde_json::from_slice(&std::fs::read(common::fixtures_root().join("gpt2-tiny/golden.json")).unwrap()).unwrap();
    let prompt = &golden["prompts"][1];
    let ids: Vec<String> = prompt["input_ids"].as_array().unwrap().iter().map(|v| v.to_string()).collect();
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_inferlab"))
            .args([
                "generate",
                "--model",
                "test-org/gpt2-tiny",
                "--max-new-tokens",
                "24",
                "--json",
                "--prompt-ids",
                &ids.join(","),
            ])
            .env("INFERLAB_HUB_URL", &url)
            .env("INFERLAB_CACHE", cache.path())
            .output()
            .unwrap()
    };
    let out = run();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["generated_ids"], prompt["greedy"]["new_ids"]);
    assert!(cache.path().join("models--test-org--gpt2-tiny/model.safetensors").is_file());
}
