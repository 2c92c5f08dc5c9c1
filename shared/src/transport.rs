//! The bridge session's transport: protobuf frames over one WebSocket, a writer that batches
//! queued frames, and dead-peer detection. Both ends drive their session through [`run`],
//! so framing, limits and timeouts are the same on both sides.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use zpanel_proto::frame::Body;

use crate::frame::{self, FrameError};

/// How a session ended.
#[derive(Debug, thiserror::Error)]
pub enum SessionEnd {
    #[error("peer closed the session")]
    PeerClosed,
    #[error("no frame from the peer for {0:?}")]
    PeerSilent(Duration),
    #[error("session closed locally")]
    LocalClosed,
    #[error("transport error: {0}")]
    Transport(#[from] tokio_tungstenite::tungstenite::Error),
    #[error("protocol violation: {0}")]
    Protocol(String),
}

impl SessionEnd {
    /// The session ended because the peer sent something it may not: a malformed,
    /// oversized or out-of-place frame.
    pub fn is_refused_input(&self) -> bool {
        matches!(
            self,
            SessionEnd::Protocol(_)
                | SessionEnd::Transport(tokio_tungstenite::tungstenite::Error::Capacity(_))
        )
    }
}

impl From<FrameError> for SessionEnd {
    fn from(e: FrameError) -> Self {
        SessionEnd::Protocol(e.to_string())
    }
}

/// Initial read buffer of a session. tungstenite's default (128 KiB, zero-filled on the
/// first read) would cost every idle session that much; a buffer grows to fit a large
/// frame once its header is read.
const READ_BUFFER_BYTES: usize = 16 * 1024;

/// WebSocket limits matching the frame limit, so oversized messages are refused before
/// they are buffered.
pub fn websocket_config(max_frame_bytes: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .max_message_size(Some(max_frame_bytes))
        .max_frame_size(Some(max_frame_bytes))
}

/// Drives a session until it ends: frames queued on `outbound` are written (batched), every
/// frame received goes to `on_frame`, and a peer silent for `dead_after` is declared dead.
/// `on_frame` must not block: it hands work to other tasks and returns.
pub async fn run<S>(
    ws: WebSocketStream<S>,
    mut outbound: mpsc::Receiver<Body>,
    dead_after: Duration,
    max_frame_bytes: usize,
    mut on_frame: impl FnMut(Body) -> Result<(), SessionEnd>,
) -> SessionEnd
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut sink, mut stream) = ws.split();
    let writer = async {
        while let Some(body) = outbound.recv().await {
            sink.feed(Message::Binary(frame::encode(body))).await?;
            while let Ok(body) = outbound.try_recv() {
                sink.feed(Message::Binary(frame::encode(body))).await?;
            }
            sink.flush().await?;
        }
        let _ = sink.close().await;
        Ok::<_, tokio_tungstenite::tungstenite::Error>(())
    };
    let reader = async {
        loop {
            let message = match tokio::time::timeout(dead_after, stream.next()).await {
                Err(_) => return SessionEnd::PeerSilent(dead_after),
                Ok(None) => return SessionEnd::PeerClosed,
                Ok(Some(Err(e))) => return SessionEnd::Transport(e),
                Ok(Some(Ok(message))) => message,
            };
            match message {
                Message::Binary(bytes) => {
                    let body = match frame::decode(bytes, max_frame_bytes) {
                        Ok(body) => body,
                        Err(e) => return e.into(),
                    };
                    if let Err(end) = on_frame(body) {
                        return end;
                    }
                }
                Message::Close(_) => return SessionEnd::PeerClosed,
                Message::Text(_) => {
                    return SessionEnd::Protocol("text message on a binary session".into());
                }
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            }
        }
    };
    tokio::select! {
        end = reader => end,
        written = writer => match written {
            Ok(()) => SessionEnd::LocalClosed,
            Err(e) => SessionEnd::Transport(e),
        },
    }
}
