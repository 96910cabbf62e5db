//! `inferlab app --window` (the `desktop` feature): the lab in a native window of its own, the
//! system's web view (WebKitGTK, WKWebView, WebView2 through wry) in a tao window, showing the
//! page `inferlab app` serves on loopback. The page talks to the native engine over the same
//! WebSocket, with the same guards (token, Host, Origin), as in a browser tab.

use anyhow::{Context, Result};
use tao::dpi::LogicalSize;
use tao::event::{Event, WindowEvent};
use tao::event_loop::{ControlFlow, EventLoop};
use tao::window::WindowBuilder;
use wry::WebViewBuilder;

/// Opens `url` in a window and runs the window's event loop on this (the main) thread until
/// the window is closed; then the process exits (the server's threads with it).
pub fn open(url: &str) -> Result<()> {
    let event_loop = EventLoop::new();
    let window = WindowBuilder::new()
        .with_title("inferlab")
        .with_inner_size(LogicalSize::new(1280.0, 860.0))
        .build(&event_loop)
        .context("cannot open a window (is there a display? DISPLAY / WAYLAND_DISPLAY)")?;
    let builder = WebViewBuilder::new().with_url(url);
    #[cfg(any(target_os = "windows", target_os = "macos"))]
    let webview = builder.build(&window);
    #[cfg(not(any(target_os = "windows", target_os = "macos")))]
    let webview = {
        use tao::platform::unix::WindowExtUnix;
        use wry::WebViewBuilderExtUnix;
        let vbox = window.default_vbox().context("the window has no GTK box for the web view")?;
        builder.build_gtk(vbox)
    };
    let webview = webview.context("cannot create the web view (on Linux: is WebKitGTK 4.1 installed?)")?;
    event_loop.run(move |event, _, control_flow| {
        // The web view lives as long as the loop.
        let _ = &webview;
        *control_flow = ControlFlow::Wait;
        if let Event::WindowEvent { event: WindowEvent::CloseRequested, .. } = event {
            *control_flow = ControlFlow::Exit;
        }
    })
}
