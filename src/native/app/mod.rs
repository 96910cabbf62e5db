//! `inferlab app`: the browser app's pages, computed by the native engine on this machine's
//! GPU (or CPU). As TensorBoard or Jupyter do, it serves the built web app on loopback and
//! opens it; the page's engine switch then talks to the native engine over a WebSocket
//! (`socket.rs`) with the same messages it sends its Web Worker, handled by the same code
//! (`crate::session`), on an engine thread that owns the device (`engine.rs`).
//!
//! The web app comes from its folder (trunk's `dist/`, found beside the binary) or, built with
//! the `embed` feature, from the binary itself (`web_app.rs`).

mod engine;
mod socket;
mod web_app;
#[cfg(feature = "desktop")]
mod window;

use std::future::IntoFuture;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use axum::Router;
use axum::routing::get;
use clap::Args;

use super::device::DeviceSpec;
use super::hub::DEFAULT_HUB;
use engine::AppEngine;
use socket::SocketState;
use web_app::WebApp;

#[derive(Args)]
pub struct AppArgs {
    /// The engine's device: cpu, wgpu (Vulkan / Metal / DX12) or cuda, optionally with an
    /// index (wgpu:1, cuda:1).
    #[arg(long, default_value = "wgpu")]
    device: DeviceSpec,
    /// A model to load when the page opens: a folder with config.json, model.safetensors and
    /// tokenizer.json, or a hub repo id (downloaded once into the native cache).
    #[arg(long)]
    model: Option<String>,
    /// Base URL of the model hub for repo ids.
    #[arg(long, env = "INFERLAB_HUB_URL", default_value = DEFAULT_HUB)]
    hub_url: String,
    /// Port on 127.0.0.1 (the app listens on loopback only); 0 picks a free one.
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Print the URL without opening a browser.
    #[arg(long)]
    no_open: bool,
    /// Open the lab in a window of its own instead of a browser tab (builds with the `desktop`
    /// feature); closing the window ends the app.
    #[arg(long)]
    window: bool,
    /// The built web app (`trunk build --release`) [default: $INFERLAB_DIST, else the app built
    /// into this binary (the `embed` feature), else `dist` beside the binary, else `./dist`].
    #[arg(long)]
    dist: Option<PathBuf>,
}

/// A token no other page can guess: 128 bits from the OS's random source.
fn new_token() -> Result<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no OS randomness for the access token: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The page's URL: the token, and the model to preload if one was named.
fn page_url(port: u16, token: &str, args: &AppArgs) -> String {
    let mut url = format!("http://127.0.0.1:{port}/?token={token}");
    if let Some(model) = &args.model {
        let model = std::fs::canonicalize(model).map(|p| p.display().to_string()).unwrap_or_else(|_| model.clone());
        url += &format!("&model={}", encode(&model));
        if args.hub_url != DEFAULT_HUB {
            url += &format!("&hub={}", encode(&args.hub_url));
        }
    }
    url
}

/// A line on stdout; the app keeps serving if nobody reads it any more (a closed pipe).
fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "{line}");
}

/// Percent-encodes a query value.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

pub fn run(args: AppArgs) -> Result<()> {
    #[cfg(not(feature = "desktop"))]
    if args.window {
        anyhow::bail!(
            "this inferlab was built without windows: build it with `--features desktop`, or leave out --window and open the printed URL in a browser"
        );
    }
    let web_app = Arc::new(WebApp::find(args.dist.clone())?);
    let (device, adapter) = args.device.init_described()?;
    let description = format!("{}: {adapter}", args.device);
    let engine = AppEngine::spawn(device, description, web_app.clone())?;
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")?;
    let (listener, url, routes) = runtime.block_on(bind(&args, &engine, &web_app))?;
    let server = axum::serve(listener, routes).with_graceful_shutdown(super::serve::stop_signal()).into_future();
    #[cfg(feature = "desktop")]
    if args.window {
        // The window's event loop must own the main thread; the server runs on the runtime's.
        runtime.spawn(async move {
            if let Err(e) = server.await {
                say(&format!("inferlab app: the HTTP server failed: {e}"));
            }
        });
        return window::open(&url);
    }
    if !args.no_open
        && let Err(e) = open::that_detached(&url)
    {
        say(&format!("inferlab app: could not open a browser ({e}); open the URL above"));
    }
    runtime.block_on(server).context("the HTTP server failed")
}

/// Listens on loopback and says where: the listener, the page's URL and the routes.
async fn bind(
    args: &AppArgs,
    engine: &Arc<AppEngine>,
    web_app: &WebApp,
) -> Result<(tokio::net::TcpListener, String, Router)> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port))
        .await
        .with_context(|| format!("cannot listen on 127.0.0.1:{} (is another program using the port?)", args.port))?;
    let port = listener.local_addr()?.port();
    let token = new_token()?;
    let url = page_url(port, &token, args);
    let state = Arc::new(SocketState { engine: engine.clone(), token, port });
    let routes = web_app.serve(Router::new().route("/ws", get(socket::upgrade)).with_state(state));
    say(&format!("inferlab app: the native engine on {} — open {url}", engine.description));
    say(&format!("inferlab app: serving {}; ctrl-c stops", web_app.describe()));
    Ok((listener, url, routes))
}
