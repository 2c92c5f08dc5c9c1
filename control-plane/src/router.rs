//! Routing: which live session holds each host, and channels into those sessions. Callers
//! use the [`HostRouter`] trait only; [`LocalRouter`] is the in-process implementation (one
//! control plane). A cluster implementation forwards channels to the replica holding the
//! session without its callers changing.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use zpanel_proto::frame::Body;
use zpanel_proto::{
    ChannelAck, ChannelData, Close, DockerError, DockerOutcome, DockerUpdate, ExecSignal,
    FileChange, FileCommit, FileError, FileWritten, OpenError, OpenResult, ProcessExit, StreamAck,
    StreamChunk, StreamKind, TerminalResize, TerminalSize, open,
};

use zpanel_shared::frame::MAX_CHUNK_BYTES;

use crate::metrics::Metrics;

/// How long a daemon has to answer an `Open`.
const OPEN_TIMEOUT: Duration = Duration::from_secs(30);
/// Events a channel may have queued: the daemon keeps at most this many data frames in
/// flight per stream (two output streams), plus control events.
pub const CHANNEL_EVENT_QUEUE: usize = 2 * zpanel_shared::replay::MAX_IN_FLIGHT_FRAMES + 16;

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("host is offline")]
    Offline,
    #[error("host session ended")]
    SessionLost,
    #[error("host did not answer within {0:?}")]
    Timeout(Duration),
    #[error("{message}")]
    Refused {
        code: OpenError,
        message: String,
        /// Why a file request was refused, when it was one.
        file_error: FileError,
        /// Why a Docker request failed, when it was one.
        docker_error: DockerError,
    },
}

/// What arrives on a channel from the host.
#[derive(Debug)]
pub enum ChannelEvent {
    Data(StreamChunk),
    Ack(StreamAck),
    Exited(ProcessExit),
    Closed(String),
    /// A newer viewer took this channel's place on the host.
    Superseded(String),
    /// A file write ended (committed or refused).
    FileDone(FileWritten),
    /// Something changed under a watched path.
    FileChanged(FileChange),
    /// A stats sample, an engine event or pull progress.
    DockerUpdated(DockerUpdate),
    /// A pull or import ended (the image, or the error).
    DockerDone(DockerOutcome),
    /// An upgrade's binary was swapped in (the daemon restarts now), or why not.
    UpgradeDone(zpanel_proto::UpgradeDone),
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The routing interface every adapter uses.
pub trait HostRouter: Send + Sync {
    /// Opens a channel to a host's daemon.
    fn open_channel(
        &self,
        host_id: &str,
        request: open::Request,
    ) -> BoxFuture<'_, Result<Channel, RouteError>>;
    fn is_online(&self, host_id: &str) -> bool;
    /// Ids of every host with a live session.
    fn online_hosts(&self) -> Vec<String>;
    /// Ends a host's session (for example when the host is deleted).
    fn disconnect(&self, host_id: &str);
    /// Changes whenever a host comes online, goes offline or is removed.
    fn changes(&self) -> watch::Receiver<u64>;
}

/// Input chunks and bytes a relay may have on their way to the daemon: the daemon's input
/// queue is bounded, so input beyond these marks waits in the relay (a large paste or upload
/// is paced by the daemon's acknowledgements, never dropped).
const INPUT_FRAMES_IN_FLIGHT: usize = zpanel_shared::replay::MAX_IN_FLIGHT_FRAMES / 2;
const INPUT_BYTES_IN_FLIGHT: u64 = 1024 * 1024;
/// Input a relay holds for a daemon that is not taking it; a client sending more ignores
/// the acknowledgements and is cut off.
const MAX_PENDING_INPUT: usize = 4 * 1024 * 1024;
/// Queued pieces are joined while together they stay below this (keystrokes become one
/// chunk); larger pieces travel as they came.
const JOIN_BELOW: usize = 16 * 1024;

/// A channel's input stream (`STDIN`) as a relay sends it: queued in order, deduplicated,
/// and sent within the daemon's input window.
pub struct InputQueue {
    /// Input waiting for room in the window, from offset `sent`: the client's pieces as
    /// they came (large ones are never copied; small ones, keystrokes, are joined).
    pending: VecDeque<Bytes>,
    pending_bytes: usize,
    sent: u64,
    /// End offsets of chunks sent and not yet acknowledged.
    in_flight: VecDeque<u64>,
    acked: u64,
    /// The end-of-stream chunk went out.
    finished: bool,
}

impl InputQueue {
    /// A queue whose next byte is at `offset` (what the daemon already holds).
    pub fn new(offset: u64) -> Self {
        InputQueue {
            pending: VecDeque::new(),
            pending_bytes: 0,
            sent: offset,
            in_flight: VecDeque::new(),
            acked: offset,
            finished: false,
        }
    }

    /// Queues bytes at `offset`; bytes already queued are dropped, a gap is refused.
    pub fn queue(&mut self, offset: u64, payload: Bytes) -> Result<(), String> {
        let queued_end = self.sent + self.pending_bytes as u64;
        if offset > queued_end {
            return Err(format!(
                "input at offset {offset} leaves a gap after {queued_end}"
            ));
        }
        let repeated = (queued_end - offset) as usize;
        if repeated < payload.len() {
            let fresh = payload.slice(repeated..);
            self.pending_bytes += fresh.len();
            match self.pending.back_mut() {
                Some(last) if last.len() + fresh.len() <= JOIN_BELOW => {
                    let mut joined = BytesMut::with_capacity(last.len() + fresh.len());
                    joined.extend_from_slice(last);
                    joined.extend_from_slice(&fresh);
                    *last = joined.freeze();
                }
                _ => self.pending.push_back(fresh),
            }
        }
        if self.pending_bytes > MAX_PENDING_INPUT {
            return Err(
                "more than 4 MiB of input waiting for the host: the client ignored flow control"
                    .into(),
            );
        }
        Ok(())
    }

    /// The daemon holds every input byte below `offset`.
    pub fn acked(&mut self, offset: u64) {
        self.acked = self.acked.max(offset);
        while self.in_flight.front().is_some_and(|end| *end <= offset) {
            self.in_flight.pop_front();
        }
    }

    /// Bytes queued and not sent yet.
    pub fn pending(&self) -> usize {
        self.pending_bytes
    }

    /// Offset below which the daemon holds everything.
    pub fn acked_offset(&self) -> u64 {
        self.acked
    }

    fn ready(&self) -> bool {
        self.in_flight.len() < INPUT_FRAMES_IN_FLIGHT
            && self.sent.saturating_sub(self.acked) < INPUT_BYTES_IN_FLIGHT
    }

    /// Sends queued input while the window has room.
    pub async fn flush(&mut self, channel: &Channel) -> Result<(), RouteError> {
        self.flush_with_eof(channel, false).await
    }

    /// Like [`InputQueue::flush`], ending the stream after the last queued byte.
    pub async fn flush_with_eof(&mut self, channel: &Channel, eof: bool) -> Result<(), RouteError> {
        while self.ready() && !self.finished && (!self.pending.is_empty() || eof) {
            let mut piece = self.pending.pop_front().unwrap_or_default();
            if piece.len() > MAX_CHUNK_BYTES {
                self.pending.push_front(piece.split_off(MAX_CHUNK_BYTES));
            }
            self.pending_bytes -= piece.len();
            let end = self.sent + piece.len() as u64;
            let last = eof && self.pending.is_empty();
            let chunk = StreamChunk {
                stream: StreamKind::Stdin as i32,
                offset: self.sent,
                payload: piece,
                eof: last,
            };
            channel.send_data(chunk).await?;
            self.in_flight.push_back(end);
            self.sent = end;
            self.finished = last;
        }
        Ok(())
    }
}

/// One open channel, as its user sees it. Dropping it closes the channel.
pub struct Channel {
    id: u64,
    outbound: mpsc::Sender<Body>,
    pub events: mpsc::Receiver<ChannelEvent>,
    pub opened: OpenResult,
    guard: ChannelGuard,
}

impl Channel {
    async fn send(&self, body: Body) -> Result<(), RouteError> {
        self.outbound
            .send(body)
            .await
            .map_err(|_| RouteError::SessionLost)
    }

    pub async fn send_data(&self, chunk: StreamChunk) -> Result<(), RouteError> {
        Metrics::add(&self.guard.metrics.bytes_routed, chunk.payload.len() as u64);
        self.send(Body::Data(ChannelData {
            channel_id: self.id,
            chunk: Some(chunk),
        }))
        .await
    }

    pub async fn send_ack(&self, ack: StreamAck) -> Result<(), RouteError> {
        self.send(Body::Ack(ChannelAck {
            channel_id: self.id,
            ack: Some(ack),
        }))
        .await
    }

    pub async fn send_resize(&self, size: TerminalSize) -> Result<(), RouteError> {
        self.send(Body::TerminalResize(TerminalResize {
            channel_id: self.id,
            size: Some(size),
        }))
        .await
    }

    /// A write's sha256 learnt at its end, before the last chunk.
    pub async fn send_file_commit(&self, sha256: String) -> Result<(), RouteError> {
        self.send(Body::FileCommit(FileCommit {
            channel_id: self.id,
            sha256,
        }))
        .await
    }

    pub async fn send_signal(&self, signal: i32) -> Result<(), RouteError> {
        self.send(Body::ExecSignal(ExecSignal {
            channel_id: self.id,
            signal,
        }))
        .await
    }

    /// Closes the channel telling the daemon the client is done with the job.
    pub fn release(mut self) {
        self.guard.release = true;
    }
}

struct ChannelGuard {
    id: u64,
    session: Arc<SessionHandle>,
    metrics: Arc<Metrics>,
    release: bool,
}

impl Drop for ChannelGuard {
    fn drop(&mut self) {
        if self.session.remove_channel(self.id) {
            let close = Close {
                channel_id: self.id,
                reason: "closed by client".into(),
                release: self.release,
                superseded: false,
            };
            let _ = self.session.outbound.try_send(Body::Close(close));
        }
        self.metrics.channels_open.fetch_sub(1, Ordering::Relaxed);
    }
}

struct ChannelSlot {
    events: mpsc::Sender<ChannelEvent>,
    opened: Option<oneshot::Sender<OpenResult>>,
}

/// A live bridge session as the router sees it.
pub struct SessionHandle {
    pub host_id: String,
    /// Distinguishes this session from an earlier or later one of the same host.
    pub session_id: u64,
    pub outbound: mpsc::Sender<Body>,
    pub ended: CancellationToken,
    /// A certificate renewal for this session's host is being signed.
    pub renewing: std::sync::atomic::AtomicBool,
    channels: Mutex<HashMap<u64, ChannelSlot>>,
    next_channel: AtomicU64,
}

/// What the session should do about a frame for a channel.
pub enum Delivery {
    Delivered,
    UnknownChannel,
    /// The channel's queue is full: the daemon ignored flow control; the channel is closed.
    Overflow,
}

impl SessionHandle {
    pub fn new(host_id: String, session_id: u64, outbound: mpsc::Sender<Body>) -> Self {
        SessionHandle {
            host_id,
            session_id,
            outbound,
            ended: CancellationToken::new(),
            renewing: std::sync::atomic::AtomicBool::new(false),
            channels: Mutex::new(HashMap::new()),
            next_channel: AtomicU64::new(1),
        }
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<u64, ChannelSlot>> {
        self.channels.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn remove_channel(&self, id: u64) -> bool {
        self.slots().remove(&id).is_some()
    }

    /// Hands a daemon's answer to the waiting opener.
    pub fn deliver_open_result(&self, result: OpenResult) -> Delivery {
        let mut slots = self.slots();
        match slots
            .get_mut(&result.channel_id)
            .and_then(|slot| slot.opened.take())
        {
            Some(opener) => {
                let _ = opener.send(result);
                Delivery::Delivered
            }
            None => Delivery::UnknownChannel,
        }
    }

    /// Queues an event for a channel without ever waiting.
    pub fn deliver(&self, channel_id: u64, event: ChannelEvent) -> Delivery {
        let mut slots = self.slots();
        let Some(slot) = slots.get(&channel_id) else {
            return Delivery::UnknownChannel;
        };
        match slot.events.try_send(event) {
            Ok(()) => Delivery::Delivered,
            Err(mpsc::error::TrySendError::Closed(_)) => Delivery::UnknownChannel,
            Err(mpsc::error::TrySendError::Full(_)) => {
                slots.remove(&channel_id);
                Delivery::Overflow
            }
        }
    }

    /// The daemon closed a channel.
    pub fn channel_closed(&self, close: Close) -> Delivery {
        match self.slots().remove(&close.channel_id) {
            Some(slot) => {
                let event = if close.superseded {
                    ChannelEvent::Superseded(close.reason)
                } else {
                    ChannelEvent::Closed(close.reason)
                };
                let _ = slot.events.try_send(event);
                Delivery::Delivered
            }
            None => Delivery::UnknownChannel,
        }
    }

    /// Fails every channel of an ended session; their users see the channel close.
    pub fn fail_all(&self, reason: &str) {
        for (_, slot) in self.slots().drain() {
            let _ = slot.events.try_send(ChannelEvent::Closed(reason.into()));
        }
    }
}

/// The single-node router: sessions of this process, in a map.
pub struct LocalRouter {
    sessions: Mutex<HashMap<String, Arc<SessionHandle>>>,
    metrics: Arc<Metrics>,
    changed: watch::Sender<u64>,
}

impl LocalRouter {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        LocalRouter {
            sessions: Mutex::new(HashMap::new()),
            metrics,
            changed: watch::Sender::new(0),
        }
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<SessionHandle>>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes `session` the host's live session. The newest session always wins: an older
    /// one still registered is a connection the daemon has already given up on.
    pub fn register(&self, session: Arc<SessionHandle>) {
        if let Some(old) = self.sessions().insert(session.host_id.clone(), session) {
            old.ended.cancel();
        }
        self.bump();
    }

    fn bump(&self) {
        self.changed.send_modify(|generation| *generation += 1);
    }

    /// Removes `session` if it is still the host's live session; says whether it was.
    pub fn unregister(&self, session: &SessionHandle) -> bool {
        let mut sessions = self.sessions();
        let current = sessions
            .get(&session.host_id)
            .is_some_and(|s| s.session_id == session.session_id);
        if current {
            sessions.remove(&session.host_id);
            drop(sessions);
            self.bump();
        }
        current
    }

    /// The host's live session, to send it a session-level frame (`RenewNow`).
    pub fn get(&self, host_id: &str) -> Option<Arc<SessionHandle>> {
        self.sessions().get(host_id).cloned()
    }

    async fn open(&self, host_id: &str, request: open::Request) -> Result<Channel, RouteError> {
        let session = self.get(host_id).ok_or(RouteError::Offline)?;
        let id = session.next_channel.fetch_add(1, Ordering::Relaxed);
        let (events_tx, events) = mpsc::channel(CHANNEL_EVENT_QUEUE);
        let (opened_tx, opened_rx) = oneshot::channel();
        session.slots().insert(
            id,
            ChannelSlot {
                events: events_tx,
                opened: Some(opened_tx),
            },
        );
        self.metrics.channels_open.fetch_add(1, Ordering::Relaxed);
        let guard = ChannelGuard {
            id,
            session: session.clone(),
            metrics: self.metrics.clone(),
            release: false,
        };
        let open = zpanel_proto::Open {
            channel_id: id,
            request: Some(request),
        };
        session
            .outbound
            .send(Body::Open(open))
            .await
            .map_err(|_| RouteError::SessionLost)?;
        let opened = match tokio::time::timeout(OPEN_TIMEOUT, opened_rx).await {
            Err(_) => return Err(RouteError::Timeout(OPEN_TIMEOUT)),
            Ok(Err(_)) => return Err(RouteError::SessionLost),
            Ok(Ok(result)) => result,
        };
        let code = opened.error();
        if code != OpenError::None {
            session.remove_channel(id);
            return Err(RouteError::Refused {
                code,
                file_error: opened.file_error(),
                docker_error: opened.docker_error(),
                message: opened.message,
            });
        }
        Ok(Channel {
            id,
            outbound: session.outbound.clone(),
            events,
            opened,
            guard,
        })
    }
}

impl HostRouter for LocalRouter {
    fn open_channel(
        &self,
        host_id: &str,
        request: open::Request,
    ) -> BoxFuture<'_, Result<Channel, RouteError>> {
        let host_id = host_id.to_string();
        Box::pin(async move { self.open(&host_id, request).await })
    }

    fn is_online(&self, host_id: &str) -> bool {
        self.sessions().contains_key(host_id)
    }

    fn online_hosts(&self) -> Vec<String> {
        self.sessions().keys().cloned().collect()
    }

    fn disconnect(&self, host_id: &str) {
        if let Some(session) = self.sessions().remove(host_id) {
            session.ended.cancel();
        }
        self.bump();
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}
