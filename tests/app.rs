//! `inferlab app`: the real binary on loopback, its native engine driven over the WebSocket
//! with the pages' protocol (the typed messages the page's bridge sends), and its guards:
//! the per-launch token, same-origin upgrades, bad and oversized messages.

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{fixtures_root, golden, model_dirs};
use inferlab::engine::decode::sampling::SamplingParams;
use inferlab::engine::kv::KvMode;
use inferlab::engine::model::weight_dtype::WeightDtype;
use inferlab::session::protocol::{FromEngine, ModelInfo, ModelSource, Run, ToEngine};
use tungstenite::client::IntoClientRequest;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

type Socket = WebSocket<MaybeTlsStream<TcpStream>>;

struct App {
    child: Child,
    port: u16,
    token: String,
    _dist: tempfile::TempDir,
}

/// A stand-in for trunk's dist/: a page, and the demo pair.
fn dist() -> tempfile::TempDir {
    let dist = tempfile::tempdir().unwrap();
    std::fs::write(dist.path().join("index.html"), "<!doctype html><title>inferlab</title>").unwrap();
    for model in ["target", "draft"] {
        let (from, to) =
            (Path::new(env!("CARGO_MANIFEST_DIR")).join("web/demo").join(model), dist.path().join("demo").join(model));
        std::fs::create_dir_all(&to).unwrap();
        for file in ["config.json", "tokenizer.json", "model.safetensors"] {
            std::fs::copy(from.join(file), to.join(file)).unwrap();
        }
    }
    dist
}

impl App {
    /// `inferlab app --device cpu --no-open --port 0` on a stand-in dist/; reads the URL it prints.
    fn start() -> App {
        let dist = dist();
        let mut child = Command::new(env!("CARGO_BIN_EXE_inferlab"))
            .args(["app", "--device", "cpu", "--no-open", "--port", "0", "--dist"])
            .arg(dist.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("inferlab runs");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        stdout.read_line(&mut first).unwrap();
        // The rest of its output is read and dropped, as a terminal would.
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        let url = first.split("open ").nth(1).unwrap_or_else(|| panic!("no URL in {first:?}")).trim();
        let port = url
            .split("127.0.0.1:")
            .nth(1)
            .and_then(|s| s.split('/').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {url}"));
        let token = url.split("token=").nth(1).unwrap_or_else(|| panic!("no token in {url}")).to_string();
        assert_eq!(token.len(), 32, "a 128-bit token");
        App { child, port, token, _dist: dist }
    }

    /// Opens the socket as a page would: `token` in the URL, `origin` and `host` as headers.
    fn request(&self, token: Option<&str>, origin: &str, host: Option<&str>) -> Result<Socket, tungstenite::Error> {
        let query = token.map(|t| format!("?token={t}")).unwrap_or_default();
        let mut request = format!("ws://127.0.0.1:{}/ws{query}", self.port).into_client_request().unwrap();
        request.headers_mut().insert("origin", origin.parse().unwrap());
        if let Some(host) = host {
            request.headers_mut().insert("host", host.parse().unwrap());
        }
        let (socket, _) = tungstenite::connect(request)?;
        if let MaybeTlsStream::Plain(stream) = socket.get_ref() {
            stream.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
        }
        Ok(socket)
    }

    fn own_origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn connect(&self) -> Socket {
        let mut socket = self.request(Some(&self.token), &self.own_origin(), None).expect("the page connects");
        match next(&mut socket) {
            FromEngine::Ready { webgpu: Ok(device) } => assert!(device.starts_with("cpu: CPU"), "{device}"),
            other => panic!("expected Ready, got {other:?}"),
        }
        socket
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn send(socket: &mut Socket, message: &ToEngine) {
    socket.send(Message::text(serde_json::to_string(message).unwrap())).unwrap();
}

/// The next protocol message (pings and pongs skipped).
fn next(socket: &mut Socket) -> FromEngine {
    loop {
        match socket.read().expect("the engine answers") {
            Message::Text(text) => {
                return serde_json::from_str(&text)
                    .unwrap_or_else(|e| panic!("not a FromEngine message ({e}): {text}"));
            }
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Messages until one that `last` accepts; an Error first fails the test.
fn until(socket: &mut Socket, last: impl Fn(&FromEngine) -> bool) -> Vec<FromEngine> {
    let mut seen = vec![];
    loop {
        let message = next(socket);
        if let FromEngine::Error { message } = &message {
            panic!("the engine failed: {message}");
        }
        let done = last(&message);
        seen.push(message);
        if done {
            return seen;
        }
    }
}

fn error(socket: &mut Socket) -> String {
    match next(socket) {
        FromEngine::Error { message } => message,
        other => panic!("expected an Error, got {other:?}"),
    }
}

/// Loads a fixture folder; returns what `Loaded` says of it.
fn load_folder(socket: &mut Socket, dir: &std::path::Path) -> ModelInfo {
    send(
        socket,
        &ToEngine::Load(ModelSource::Hub {
            hub: "http://127.0.0.1:9".into(),
            repo: dir.to_str().unwrap().into(),
            weights: WeightDtype::F32,
            kv_f16: false,
        }),
    );
    match until(socket, |m| matches!(m, FromEngine::Loaded { .. })).pop() {
        Some(FromEngine::Loaded { info, .. }) => info,
        other => panic!("expected Loaded, got {other:?}"),
    }
}

/// A greedy generation as the Playground (or the KV page, without a cache) asks for it.
fn generate(
    socket: &mut Socket,
    run: Run,
    prompt: &str,
    max_new_tokens: usize,
    kv: &str,
) -> (Vec<u32>, Vec<u32>, usize) {
    send(
        socket,
        &ToEngine::Generate {
            run,
            prompt: prompt.into(),
            max_new_tokens,
            sampling: SamplingParams::default(),
            kv: kv.parse().unwrap(),
        },
    );
    let messages = until(socket, |m| matches!(m, FromEngine::Done { .. }));
    let prompt_ids = messages
        .iter()
        .find_map(|m| if let FromEngine::Prompt { ids, .. } = m { Some(ids.clone()) } else { None })
        .expect("the prompt's ids");
    let tokens = messages.iter().filter(|m| matches!(m, FromEngine::Token { .. })).count();
    let Some(FromEngine::Done { ids, .. }) = messages.last() else { unreachable!() };
    (prompt_ids, ids.clone(), tokens)
}

#[test]
fn greedy_over_the_socket_equals_the_goldens_with_and_without_the_cache() {
    let app = App::start();
    let mut socket = app.connect();
    for dir in model_dirs() {
        load_folder(&mut socket, &dir);
        for prompt in golden(&dir).prompts {
            let expected = &prompt.greedy.new_ids;
            let (prompt_ids, ids, tokens) =
                generate(&mut socket, Run::WithCache, &prompt.text, expected.len(), "contiguous");
            assert_eq!(prompt_ids, prompt.input_ids, "{}: {}", dir.display(), prompt.name);
            assert_eq!(&ids, expected, "{}: {}", dir.display(), prompt.name);
            assert_eq!(tokens, ids.len(), "a Token message per token");
        }
        let first = &golden(&dir).prompts[0];
        let (_, ids, _) = generate(&mut socket, Run::WithoutCache, &first.text, 8, "none");
        assert_eq!(ids, first.greedy_no_cache.new_ids[..8], "{}: without the cache", dir.display());
    }
}

#[test]
fn kernels_off_applies_to_the_next_load_and_keeps_hf_greedy() {
    let app = App::start();
    let mut socket = app.connect();
    let dir = &model_dirs()[0];
    assert!(load_folder(&mut socket, dir).kernels, "kernels on by default");
    send(&mut socket, &ToEngine::SetKernels(false));
    assert!(!load_folder(&mut socket, dir).kernels, "the load after SetKernels(false) runs the twins");
    let prompt = &golden(dir).prompts[0];
    let (_, ids, _) = generate(&mut socket, Run::WithCache, &prompt.text, prompt.greedy.new_ids.len(), "contiguous");
    assert_eq!(ids, prompt.greedy.new_ids, "the twins decode HF's greedy ids");
}

#[test]
fn bad_messages_get_clear_errors_and_the_engine_carries_on() {
    let app = App::start();
    let mut socket = app.connect();
    socket.send(Message::text("{not json")).unwrap();
    assert!(error(&mut socket).contains("does not understand"));
    socket.send(Message::text(r#"{"Fly":{"to":"the moon"}}"#)).unwrap();
    assert!(error(&mut socket).contains("unknown variant `Fly`"));
    socket.send(Message::binary(vec![1u8, 2, 3])).unwrap();
    assert!(error(&mut socket).contains("not binary"));
    socket.send(Message::text("x".repeat(2 << 20))).unwrap();
    assert!(error(&mut socket).contains("over the protocol's limit"));
    send(
        &mut socket,
        &ToEngine::Generate {
            run: Run::Playground,
            prompt: "hi".into(),
            max_new_tokens: 4,
            sampling: SamplingParams::default(),
            kv: KvMode::Contiguous,
        },
    );
    assert!(error(&mut socket).contains("no model is loaded"));
    let missing = fixtures_root().join("no-such-model");
    send(
        &mut socket,
        &ToEngine::Load(ModelSource::Hub {
            hub: "http://127.0.0.1:9".into(),
            repo: missing.to_str().unwrap().into(),
            weights: WeightDtype::F32,
            kv_f16: false,
        }),
    );
    let message = error(&mut socket);
    assert!(
        message.contains("no-such-model") && message.contains("neither a model folder nor a hub repo id"),
        "{message}"
    );
    send(&mut socket, &ToEngine::Load(ModelSource::Files { weights: WeightDtype::F32, kv_f16: false }));
    assert!(error(&mut socket).contains("type the folder"));
    // Everything above was refused; the engine still loads and generates.
    let dir = fixtures_root().join("gpt2-tiny");
    load_folder(&mut socket, &dir);
    let first = &golden(&dir).prompts[0];
    // A KV mode the engine does not know, as a page's JSON could carry it: the typed message
    // cannot hold one, so the text is written by hand.
    let mut message = serde_json::to_value(ToEngine::Generate {
        run: Run::Playground,
        prompt: first.text.clone(),
        max_new_tokens: 4,
        sampling: SamplingParams::default(),
        kv: KvMode::Contiguous,
    })
    .unwrap();
    message["Generate"]["kv"] = "bad-kv".into();
    socket.send(Message::text(message.to_string())).unwrap();
    assert!(error(&mut socket).contains("unknown KV mode"));
    assert_eq!(generate(&mut socket, Run::Playground, &first.text, 4, "contiguous").1, first.greedy.new_ids[..4]);
}

#[test]
fn only_this_launchs_page_may_drive_the_engine() {
    let app = App::start();
    let status = |result: Result<Socket, tungstenite::Error>| match result {
        Err(tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(e) => panic!("{e}"),
        Ok(_) => 101,
    };
    let origin = app.own_origin();
    assert_eq!(status(app.request(Some("0123456789abcdef0123456789abcdef"), &origin, None)), 401, "a wrong token");
    assert_eq!(status(app.request(None, &origin, None)), 401, "no token");
    assert_eq!(status(app.request(Some(&app.token), "http://evil.example", None)), 403, "another site's page");
    assert_eq!(status(app.request(Some(&app.token), "http://127.0.0.1:1", None)), 403, "another local server's page");
    let rebound = format!("rebound.example:{}", app.port);
    assert_eq!(
        status(app.request(Some(&app.token), &format!("http://{rebound}"), Some(&rebound))),
        403,
        "DNS rebinding"
    );

    // The page itself is served, with no token needed.
    let page =
        ureq::get(&format!("http://127.0.0.1:{}/", app.port)).call().unwrap().into_body().read_to_string().unwrap();
    assert!(page.contains("inferlab"));

    // A second page takes the engine over; the first is told why; the model stays loaded.
    let mut first = app.connect();
    load_folder(&mut first, &fixtures_root().join("gpt2-tiny"));
    let mut second = app.connect();
    match next(&mut second) {
        FromEngine::Loaded { info, .. } => assert!(info.name.ends_with("gpt2-tiny"), "{}", info.name),
        other => panic!("expected the loaded model, got {other:?}"),
    }
    match first.read() {
        Ok(Message::Close(Some(frame))) => assert!(frame.reason.contains("another page took over"), "{frame:?}"),
        other => panic!("expected a close frame, got {other:?}"),
    }
    // A message past the socket's own limit closes that socket only.
    let _ = second.send(Message::text("x".repeat(17 << 20)));
    assert!(
        std::iter::from_fn(|| second.read().ok()).all(|m| !matches!(m, Message::Text(_))),
        "no answer to a 17 MiB message"
    );
    let mut third = app.connect();
    send(&mut third, &ToEngine::Load(ModelSource::Demo));
    until(&mut third, |m| matches!(m, FromEngine::Loaded { info, .. } if info.demo));
    send(&mut third, &ToEngine::LoadDraft(ModelSource::Demo));
    until(&mut third, |m| matches!(m, FromEngine::DraftLoaded { info } if info.demo && info.config.n_layer == 2));
}

#[test]
fn start_up_errors_are_clear() {
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_inferlab")).arg("app").args(args).output().unwrap();
        assert!(!out.status.success(), "{args:?} should fail");
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let empty = tempfile::tempdir().unwrap();
    assert!(run(&["--no-open", "--dist", empty.path().to_str().unwrap()]).contains("no built web app (index.html)"));
    let dist = dist();
    let dist = dist.path().to_str().unwrap();
    let message = run(&["--no-open", "--device", "cuda", "--dist", dist]);
    assert!(message.contains("without CUDA") || message.contains("CUDA"), "{message}");
    assert!(run(&["--no-open", "--device", "tpu", "--dist", dist]).contains("unknown device"));
}
