//! The browser's terminal: a WebSocket relaying one viewer of a terminal session (JSON text
//! messages for control, binary messages for bytes; see ARCHITECTURE.md "The browser"),
//! and the routes that list and kill sessions.

use std::sync::Arc;

use axum::Json;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use zpanel_proto::{TerminalInfo, TerminalSize};

use super::auth::{Caller, check_origin};
use crate::service::terminal::{ContainerShell, TerminalChannel, TerminalEvent, TerminalRequest};
use crate::service::{AppState, ServiceError};

/// Largest message the page may send (input is typed or pasted).
const MAX_MESSAGE_BYTES: usize = 1024 * 1024;

#[derive(Deserialize)]
pub struct TerminalQuery {
    session: Option<String>,
    offset: Option<u64>,
    mode: Option<String>,
    cols: Option<u32>,
    rows: Option<u32>,
    /// A shell in this container instead of on the host...
    #[serde(default)]
    container: String,
    /// ...as this user (default: the image's)...
    #[serde(default)]
    user: String,
    /// ...running this command, split on spaces (default: `sh`).
    #[serde(default)]
    command: String,
}

/// A control message from the page.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum PageMessage {
    Resize { cols: u32, rows: u32 },
    Ack { offset: u64 },
}

pub async fn socket(
    State(state): State<Arc<AppState>>,
    Path(host): Path<String>,
    Query(query): Query<TerminalQuery>,
    headers: HeaderMap,
    caller: Caller,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ServiceError> {
    check_origin(&headers, &state)?;
    let watch = match query.mode.as_deref() {
        None | Some("control") => false,
        Some("watch") => true,
        Some(other) => {
            return Err(ServiceError::InvalidArgument(format!(
                "mode {other:?} is not control or watch"
            )));
        }
    };
    let request = match query.session {
        Some(session_id) => TerminalRequest::Attach {
            session_id,
            watch,
            output_offset: query.offset,
        },
        None => {
            let command = query.command.split_whitespace().map(String::from).collect();
            TerminalRequest::Open(ContainerShell::requested(
                query.container,
                query.user,
                command,
            )?)
        }
    };
    let size = TerminalSize {
        cols: query.cols.unwrap_or(80),
        rows: query.rows.unwrap_or(24),
    };
    Ok(upgrade
        .max_message_size(MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| async move {
            let opened = state
                .terminal(&caller.principal, &host, request, size)
                .await;
            relay(socket, opened).await;
        }))
}

fn text(value: serde_json::Value) -> Message {
    Message::Text(Utf8Bytes::from(value.to_string()))
}

/// Ends the socket with one line and a close code the page acts on: 4004 the session is
/// gone, 4003 refused, 4001 logged out, 4000 anything else (the page retries). A viewer
/// another one took control from is closed with 4009 (the page does not retry).
async fn fail(socket: &mut futures_util::stream::SplitSink<WebSocket, Message>, e: &ServiceError) {
    let code = match e {
        ServiceError::NotFound(_) => 4004,
        ServiceError::Unauthenticated => 4001,
        ServiceError::PermissionDenied(_)
        | ServiceError::Forbidden(_)
        | ServiceError::QuotaExceeded(_)
        | ServiceError::InvalidArgument(_)
        | ServiceError::SpawnFailed(_)
        | ServiceError::Conflict(_)
        | ServiceError::Engine(_) => 4003,
        _ => 4000,
    };
    let message = e.to_string();
    let _ = socket
        .send(text(
            serde_json::json!({"type": "error", "message": message}),
        ))
        .await;
    let reason: String = message.chars().take(100).collect();
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: Utf8Bytes::from(reason),
        })))
        .await;
}

async fn relay(socket: WebSocket, opened: Result<TerminalChannel, ServiceError>) {
    let (mut sink, mut stream) = socket.split();
    let mut terminal = match opened {
        Ok(terminal) => terminal,
        Err(e) => return fail(&mut sink, &e).await,
    };
    let attached = serde_json::json!({
        "type": "attached",
        "session": terminal.session.session_id,
        "host": terminal.host.id,
        "host_name": terminal.host.name,
        "output_offset": terminal.output_offset,
        "input_offset": terminal.input_offset,
        "mode": if terminal.watch { "watch" } else { "control" },
        "local_user": terminal.session.local_user,
        "container": terminal.session.container,
    });
    if sink.send(text(attached)).await.is_err() {
        return;
    }
    let mut output_next = terminal.output_offset;
    let mut input_next = terminal.input_offset;
    loop {
        tokio::select! {
            event = terminal.next_event() => {
                let message = match event {
                    TerminalEvent::Output(chunk) => {
                        let end = chunk.offset + chunk.payload.len() as u64;
                        if end <= output_next {
                            continue;
                        }
                        if chunk.offset > output_next {
                            let skip = text(serde_json::json!({"type": "skip", "to": chunk.offset}));
                            if sink.send(skip).await.is_err() {
                                return;
                            }
                            output_next = chunk.offset;
                        }
                        let fresh = chunk.payload.slice((output_next - chunk.offset) as usize..);
                        output_next = end;
                        Message::Binary(fresh)
                    }
                    TerminalEvent::InputAck(offset) => {
                        text(serde_json::json!({"type": "input_ack", "offset": offset}))
                    }
                    TerminalEvent::Exited(exit) => {
                        let exited = text(serde_json::json!({"type": "exit", "code": exit.code, "signal": exit.signal}));
                        let _ = sink.send(exited).await;
                        let _ = sink.send(Message::Close(Some(CloseFrame { code: 1000, reason: Utf8Bytes::from_static("session ended") }))).await;
                        return terminal.release();
                    }
                    TerminalEvent::TakenOver(reason) => {
                        let message = text(serde_json::json!({"type": "error", "message": reason}));
                        let _ = sink.send(message).await;
                        let close = CloseFrame { code: 4009, reason: Utf8Bytes::from_static("taken over") };
                        let _ = sink.send(Message::Close(Some(close))).await;
                        return;
                    }
                    TerminalEvent::Lost(reason) => {
                        let e = ServiceError::Unavailable(format!("connection to the host lost ({reason}); reconnecting"));
                        return fail(&mut sink, &e).await;
                    }
                };
                if sink.send(message).await.is_err() {
                    return;
                }
            }
            message = stream.next() => {
                let result = match message {
                    Some(Ok(Message::Binary(_))) if terminal.watch => Ok(()),
                    Some(Ok(Message::Binary(bytes))) => {
                        let offset = input_next;
                        input_next += bytes.len() as u64;
                        terminal.queue_input(offset, bytes)
                    }
                    Some(Ok(Message::Text(body))) => match serde_json::from_str::<PageMessage>(&body) {
                        Ok(PageMessage::Resize { cols, rows }) => terminal.resize(cols, rows).await,
                        Ok(PageMessage::Ack { offset }) => terminal.ack(offset.min(output_next)).await,
                        Err(e) => Err(ServiceError::InvalidArgument(format!("bad terminal message: {e}"))),
                    },
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => Ok(()),
                    Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                };
                if let Err(e) = result {
                    return fail(&mut sink, &e).await;
                }
            }
        }
        if let Err(e) = terminal.flush_input().await {
            return fail(&mut sink, &e).await;
        }
    }
}

#[derive(Serialize)]
pub struct TerminalJson {
    id: String,
    owner: String,
    local_user: String,
    created_at: i64,
    cols: u32,
    rows: u32,
    viewers: u32,
    last_activity: i64,
    /// The container the shell runs in; empty for a shell on the host.
    container: String,
}

impl From<TerminalInfo> for TerminalJson {
    fn from(info: TerminalInfo) -> Self {
        let size = info.size.unwrap_or_default();
        TerminalJson {
            id: info.session_id,
            owner: info.owner_name,
            local_user: info.local_user,
            created_at: info.created_at,
            cols: size.cols,
            rows: size.rows,
            viewers: info.viewers,
            last_activity: info.last_activity,
            container: info.container,
        }
    }
}

#[derive(Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    all: bool,
}

pub async fn list(
    State(state): State<Arc<AppState>>,
    Path(host): Path<String>,
    Query(query): Query<ListQuery>,
    caller: Caller,
) -> Result<Json<Vec<TerminalJson>>, ServiceError> {
    let (_, sessions) = state
        .terminal_list(&caller.principal, &host, query.all)
        .await?;
    Ok(Json(sessions.into_iter().map(TerminalJson::from).collect()))
}

pub async fn kill(
    State(state): State<Arc<AppState>>,
    Path((host, session_id)): Path<(String, String)>,
    headers: HeaderMap,
    caller: Caller,
) -> Result<StatusCode, ServiceError> {
    caller.check_change(&headers, &state)?;
    state
        .terminal_kill(&caller.principal, &host, &session_id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
