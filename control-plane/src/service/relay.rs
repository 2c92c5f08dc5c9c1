//! What the service's relays share: output streams read in order and acknowledged as they
//! are handed on, uploads sent within the host's input window until the host's verdict,
//! the events of a watch, and the stream of what a relay yields for the adapters.

use std::future::Future;

use bytes::Bytes;
use futures_util::Stream;
use zpanel_proto::{
    DockerOutcome, DockerUpdate, FileChange, FileWritten, StreamAck, StreamChunk, StreamKind,
};

use super::ServiceError;
use crate::router::{Channel, ChannelEvent, InputQueue, RouteError};
use crate::store::HostRecord;

/// Upload bytes a relay queues before it waits for the host's acknowledgements.
const UPLOAD_QUEUE_BYTES: usize = 512 * 1024;

/// Why a relay stopped.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The host ended the channel, with its reason.
    #[error("{0}")]
    Closed(String),
    /// The session to the host is gone.
    #[error(transparent)]
    Lost(#[from] RouteError),
    /// The host sent output out of order.
    #[error("{0}")]
    Disorder(String),
    /// The client's input does not follow what it sent before, or ignores flow control.
    #[error("{0}")]
    Input(String),
}

impl RelayError {
    /// The service error for a relay of `what` ("read", "upload", "log stream") that stopped.
    pub fn on(self, host: &HostRecord, what: &str) -> ServiceError {
        let name = &host.name;
        match self {
            RelayError::Closed(reason) => {
                ServiceError::Unavailable(format!("host {name} ended the {what}: {reason}"))
            }
            RelayError::Lost(e) => ServiceError::Unavailable(format!(
                "host {name}: the {what} was interrupted ({e}); try again"
            )),
            RelayError::Disorder(message) => {
                ServiceError::Internal(format!("host {name} broke the {what}: {message}"))
            }
            RelayError::Input(message) => ServiceError::InvalidArgument(message),
        }
    }
}

/// One kind of event a channel delivers.
pub trait HostEvent: Sized {
    /// The event, when it is of this kind.
    fn pick(event: ChannelEvent) -> Option<Self>;
}

impl HostEvent for FileChange {
    fn pick(event: ChannelEvent) -> Option<Self> {
        match event {
            ChannelEvent::FileChanged(change) => Some(change),
            _ => None,
        }
    }
}

impl HostEvent for FileWritten {
    fn pick(event: ChannelEvent) -> Option<Self> {
        match event {
            ChannelEvent::FileDone(done) => Some(done),
            _ => None,
        }
    }
}

impl HostEvent for DockerUpdate {
    fn pick(event: ChannelEvent) -> Option<Self> {
        match event {
            ChannelEvent::DockerUpdated(update) => Some(update),
            _ => None,
        }
    }
}

impl HostEvent for DockerOutcome {
    fn pick(event: ChannelEvent) -> Option<Self> {
        match event {
            ChannelEvent::DockerDone(outcome) => Some(outcome),
            _ => None,
        }
    }
}

/// The next event of kind `T` (others are skipped); an error when the channel ends.
pub async fn next_event<T: HostEvent>(channel: &mut Channel) -> Result<T, RelayError> {
    loop {
        match channel.events.recv().await {
            Some(ChannelEvent::Closed(reason)) => return Err(RelayError::Closed(reason)),
            Some(event) => {
                if let Some(wanted) = T::pick(event) {
                    return Ok(wanted);
                }
            }
            None => return Err(RouteError::SessionLost.into()),
        }
    }
}

/// Where one output stream is.
struct Cursor {
    stream: i32,
    next: u64,
    ended: bool,
}

/// A channel's output streams as a relay hands them on: in order, each chunk acknowledged
/// as it is handed on (what is returned counts as consumed), so the final consumer's pace
/// is the host's pace.
pub struct OutputReader {
    cursors: Vec<Cursor>,
}

impl OutputReader {
    /// Reads `streams`, each from its offset.
    pub fn new(streams: &[(StreamKind, u64)]) -> Self {
        OutputReader {
            cursors: streams
                .iter()
                .map(|&(stream, next)| Cursor {
                    stream: stream as i32,
                    next,
                    ended: false,
                })
                .collect(),
        }
    }

    /// The next chunk with content or an end of stream (eof); `None` once every stream
    /// ended.
    pub async fn next(&mut self, channel: &mut Channel) -> Result<Option<StreamChunk>, RelayError> {
        loop {
            if self.cursors.iter().all(|cursor| cursor.ended) {
                return Ok(None);
            }
            match channel.events.recv().await {
                Some(ChannelEvent::Data(chunk)) => {
                    let Some(cursor) = self.cursors.iter_mut().find(|c| c.stream == chunk.stream)
                    else {
                        return Err(RelayError::Disorder(format!(
                            "output on stream {}, which this channel does not have",
                            chunk.stream
                        )));
                    };
                    if chunk.offset != cursor.next {
                        return Err(RelayError::Disorder(format!(
                            "output at offset {} instead of {}",
                            chunk.offset, cursor.next
                        )));
                    }
                    cursor.next += chunk.payload.len() as u64;
                    cursor.ended |= chunk.eof;
                    let ack = StreamAck {
                        stream: chunk.stream,
                        offset: cursor.next,
                    };
                    channel.send_ack(ack).await?;
                    if !chunk.payload.is_empty() || chunk.eof {
                        return Ok(Some(chunk));
                    }
                }
                Some(ChannelEvent::Closed(reason)) => return Err(RelayError::Closed(reason)),
                None => return Err(RouteError::SessionLost.into()),
                Some(_) => {}
            }
        }
    }
}

/// Input (stream `STDIN`) sent to a host within its input window, then the host's verdict
/// `V` (which may come early: a refusal).
pub struct Upload<V> {
    channel: Channel,
    input: InputQueue,
    /// Offset after the last byte the client sent.
    sent: u64,
    verdict: Option<V>,
}

impl<V: HostEvent> Upload<V> {
    /// An upload whose host already holds the bytes below `offset`.
    pub fn new(channel: Channel, offset: u64) -> Self {
        Upload {
            channel,
            input: InputQueue::new(offset),
            sent: offset,
            verdict: None,
        }
    }

    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// The host holds every byte below this offset.
    pub fn acked(&self) -> u64 {
        self.input.acked_offset()
    }

    /// Offset after the last byte the client sent.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// The host's verdict, when it came before the end of the input.
    pub fn verdict(&self) -> Option<&V> {
        self.verdict.as_ref()
    }

    fn on_event(&mut self, event: Option<ChannelEvent>) -> Result<(), RelayError> {
        match event {
            Some(ChannelEvent::Ack(ack)) => self.input.acked(ack.offset),
            Some(ChannelEvent::Closed(reason)) => return Err(RelayError::Closed(reason)),
            None => return Err(RouteError::SessionLost.into()),
            Some(event) => {
                if let Some(verdict) = V::pick(event) {
                    self.verdict = Some(verdict);
                }
            }
        }
        Ok(())
    }

    /// Input at `offset` (bytes the host already has are skipped). Waits while too much is
    /// unacknowledged, and returns early when the host gave its verdict.
    pub async fn write_at(&mut self, offset: u64, payload: Bytes) -> Result<(), RelayError> {
        self.sent = self.sent.max(offset + payload.len() as u64);
        self.input
            .queue(offset, payload)
            .map_err(RelayError::Input)?;
        loop {
            if self.verdict.is_some() {
                return Ok(());
            }
            self.input.flush(&self.channel).await?;
            if self.input.pending() < UPLOAD_QUEUE_BYTES {
                return Ok(());
            }
            let event = self.channel.events.recv().await;
            self.on_event(event)?;
        }
    }

    /// Ends the input and waits for the host's verdict.
    pub async fn finish(&mut self) -> Result<V, RelayError> {
        loop {
            if let Some(verdict) = self.verdict.take() {
                return Ok(verdict);
            }
            self.input.flush_with_eof(&self.channel, true).await?;
            let event = self.channel.events.recv().await;
            self.on_event(event)?;
        }
    }

    /// The channel, to read what follows the verdict (an upgrade: the session's end).
    pub fn into_channel(self) -> Channel {
        self.channel
    }

    /// Closes the channel telling the host the upload is over.
    pub fn release(self) {
        self.channel.release();
    }
}

/// Something a relay hands on item by item until its end.
pub trait Relay: Send + Sized + 'static {
    type Item: Send + 'static;

    /// The next item; `None` at the end.
    fn next(&mut self) -> impl Future<Output = Result<Option<Self::Item>, ServiceError>> + Send;
}

/// A relay's items as a stream: an error is its last item.
pub fn items<R: Relay>(relay: R) -> impl Stream<Item = Result<R::Item, ServiceError>> + Send {
    futures_util::stream::unfold(Some(relay), |relay| async move {
        let mut relay = relay?;
        match relay.next().await {
            Ok(Some(item)) => Some((Ok(item), Some(relay))),
            Ok(None) => None,
            Err(e) => Some((Err(e), None)),
        }
    })
}
