//! The WebSocket transport of the pages' protocol: `GET /ws?token=…` upgrades when the
//! per-launch token matches and the request comes from this server's own page on a loopback
//! name; then each text message is a [`ToEngine`] as JSON and each reply a [`FromEngine`].
//! Anything else gets an `Error` message and the connection carries on.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};

use super::engine::AppEngine;
use crate::session::protocol::ToEngine;

/// The largest message the protocol handles (its messages are a few KB; a prompt fits).
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;
/// Past this, the socket itself closes (code 1009) without reading the message into memory.
const MAX_FRAME_BYTES: usize = 16 << 20;

pub struct SocketState {
    pub engine: Arc<AppEngine>,
    pub token: String,
    pub port: u16,
}

/// Whether `host` (a Host header, or an Origin without its scheme) names this server on
/// loopback: so a page of another site, even one whose name resolves to 127.0.0.1 (DNS
/// rebinding), cannot pass.
fn is_own_loopback(host: &str, port: u16) -> bool {
    let Some((name, host_port)) = host.rsplit_once(':') else { return false };
    matches!(name, "127.0.0.1" | "localhost" | "[::1]") && host_port.parse() == Ok(port)
}

/// Checks the token and the origin, then hands the socket to [`session`].
pub async fn upgrade(
    State(state): State<Arc<SocketState>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if query.get("token") != Some(&state.token) {
        return (StatusCode::UNAUTHORIZED, "missing or wrong token: open the URL that `inferlab app` printed")
            .into_response();
    }
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default();
    if !is_own_loopback(host, state.port) {
        return (
            StatusCode::FORBIDDEN,
            format!("the engine answers on 127.0.0.1:{} or localhost:{} only, not {host:?}", state.port, state.port),
        )
            .into_response();
    }
    // Browsers always send Origin; a page of another origin must not drive the engine.
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or_default();
        if origin.strip_prefix("http://").is_none_or(|o| !is_own_loopback(o, state.port)) {
            return (StatusCode::FORBIDDEN, format!("cross-origin WebSocket from {origin:?} refused")).into_response();
        }
    }
    ws.max_message_size(MAX_FRAME_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        .on_upgrade(move |socket| session(socket, state.engine.clone()))
}

/// One page's connection: its messages go to the engine, the engine's replies come back.
async fn session(socket: WebSocket, engine: Arc<AppEngine>) {
    let (mut sink, mut stream) = socket.split();
    let (out, mut replies) = tokio::sync::mpsc::unbounded_channel::<String>();
    let id = engine.attach(out);
    let writer = tokio::spawn(async move {
        while let Some(json) = replies.recv().await {
            if sink.send(Message::Text(json.into())).await.is_err() {
                return;
            }
        }
        // The engine dropped this page: another one took it over.
        let reason = "another page took over the native engine";
        let _ = sink.send(Message::Close(Some(CloseFrame { code: 4000, reason: reason.into() }))).await;
    });
    while let Some(Ok(message)) = stream.next().await {
        match message {
            Message::Text(text) if text.len() > MAX_MESSAGE_BYTES => {
                engine.reply_error(
                    id,
                    format!(
                        "a message of {} bytes is over the protocol's limit of {MAX_MESSAGE_BYTES} bytes",
                        text.len()
                    ),
                );
            }
            Message::Text(text) => match serde_json::from_str::<ToEngine>(&text) {
                Ok(message) => engine.submit(id, message),
                Err(e) => engine.reply_error(id, format!("the engine got a message it does not understand: {e}")),
            },
            Message::Binary(_) => engine.reply_error(id, "the engine takes JSON text messages, not binary ones".into()),
            Message::Close(_) => break,
            Message::Ping(_) | Message::Pong(_) => {}
        }
        if writer.is_finished() {
            break;
        }
    }
    writer.abort();
}

#[cfg(test)]
mod tests {
    use super::is_own_loopback;

    #[test]
    fn only_this_servers_loopback_names_pass() {
        for ok in ["127.0.0.1:8080", "localhost:8080", "[::1]:8080"] {
            assert!(is_own_loopback(ok, 8080), "{ok}");
        }
        for bad in
            ["127.0.0.1:8081", "evil.example:8080", "127.0.0.1", "localhost.evil.example:8080", "", "127.0.0.1:80x"]
        {
            assert!(!is_own_loopback(bad, 8080), "{bad}");
        }
    }
}
