//! `zpanel shell`: a terminal session on a host. Opens a login shell there (or a command in
//! one of its containers, for `zpanel docker exec`; or attaches to a session with
//! `--attach`, read-only with `--watch`), puts the local terminal in raw mode
//! and relays keystrokes, window sizes and output. The session lives on the host, not in
//! this process: `~.` detaches and leaves it running, and when the connection to the control
//! plane drops the CLI re-attaches from the output it has and resends the input the host
//! has not got.

use std::io::{IsTerminal, Write};
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tonic::Code;
use zpanel_proto::{
    ProcessExit, StreamAck, StreamKind, TerminalAttachRequest, TerminalAttached,
    TerminalClientMessage, TerminalOpenRequest, TerminalServerMessage, TerminalSize,
    terminal_client_message, terminal_server_message,
};
use zpanel_shared::replay::{DEFAULT_WINDOW_BYTES, SharedReplay};

use crate::client::{self, status_message};
use crate::config::Settings;
use crate::escape::{self, EscapeFilter, Typed};
use crate::streaming::{
    ACK_DELAY, Output, Reconnect, WriteError, drain, exit_code, first_reply, is_transient,
    read_stdin, request_stream, send_stream,
};
use crate::tty::{self, RawMode};

/// Ctrl-D: what the shell reads after piped input ended, as if the user had typed it.
const END_OF_INPUT: &[u8] = b"\x04";
/// After piped input ended, how long the shell must be quiet before it gets a Ctrl-D, and
/// the longest wait between two of them.
const END_OF_INPUT_FIRST_WAIT: Duration = Duration::from_millis(250);
const END_OF_INPUT_MAX_WAIT: Duration = Duration::from_secs(4);

pub struct ShellOptions {
    pub host: String,
    /// Attach to this session instead of opening a new one.
    pub attach: Option<String>,
    /// Output only (with `attach`).
    pub watch: bool,
    /// How long to keep trying to re-attach after the connection drops.
    pub resume_for: Duration,
    /// Open the session inside this container instead of on the host (not with `attach`).
    pub container: Option<ContainerShell>,
}

/// A terminal session inside a container: `command` (empty: the host's default, `sh`) as
/// `user` (empty: the image's user).
pub struct ContainerShell {
    pub container: String,
    pub user: String,
    pub command: Vec<String>,
}

/// Runs the session until the shell exits or the user detaches; returns the exit code of
/// `zpanel`: the shell's (`128+N` for signal N), 0 after detaching.
pub async fn shell(settings: &Settings, options: ShellOptions) -> anyhow::Result<i32> {
    let stops = Stops::new().context("cannot watch for signals")?;
    let raw = RawMode::enter()
        .map_err(|e| anyhow::anyhow!("cannot put the terminal in raw mode: {e}"))?;
    let mut screen = Screen {
        raw: raw.is_some(),
        styled: std::io::stderr().is_terminal(),
        at_line_start: true,
    };
    let (keys_tx, keys) = mpsc::channel(1);
    let input = Arc::new(SharedReplay::new(DEFAULT_WINDOW_BYTES));
    if raw.is_some() || !options.watch {
        tokio::spawn(read_keys(
            input.clone(),
            raw.is_some(),
            !options.watch,
            keys_tx,
        ));
    }
    let mut local = Local {
        keys,
        end_of_input: None,
        window: if raw.is_some() {
            let resizes = signal(SignalKind::window_change());
            Some(resizes.context("cannot watch for window size changes")?)
        } else {
            None
        },
        stops,
        size: tty::window_size(),
    };
    let mut session = Session {
        id: options.attach.clone(),
        host: options.host.clone(),
        attached_before: false,
        output: Output::at(0),
        input: Input {
            buffer: input,
            base: 0,
        },
    };
    let ending = run(settings, &options, &mut session, &mut local, &mut screen).await;
    drop(raw);
    screen.raw = false;
    screen.end_line();
    match ending {
        Ok(Ending::Exited(exit)) => Ok(exit_code(&exit)),
        Ok(Ending::Detached { signal }) => {
            if let Some(id) = &session.id {
                screen.line(&format!(
                    "detached from session {id}; reattach with: {}",
                    reattach_command(&options, id)
                ));
            }
            Ok(signal.map_or(0, |n| 128 + n))
        }
        // Our stdout is closed (`| head`): leave the session running and end as SIGPIPE would.
        Ok(Ending::OutputClosed) => Ok(128 + 13),
        Err(Failure::TakenOver(message)) => anyhow::bail!(
            "{message}; take it back with: {}",
            reattach_command(&options, session.id.as_deref().unwrap_or_default())
        ),
        Err(Failure::Fatal(message) | Failure::Lost(message)) => anyhow::bail!(message),
    }
}

fn reattach_command(options: &ShellOptions, id: &str) -> String {
    let watch = if options.watch { " --watch" } else { "" };
    format!("zpanel shell {} --attach {id}{watch}", options.host)
}

/// Attaches, and re-attaches after every dropped connection, until the session ends for us.
async fn run(
    settings: &Settings,
    options: &ShellOptions,
    session: &mut Session,
    local: &mut Local,
    screen: &mut Screen,
) -> Result<Ending, Failure> {
    let mut reconnect = Reconnect::new(options.resume_for);
    loop {
        let reason = match attempt(settings, options, session, local, screen, &mut reconnect).await
        {
            Err(Failure::Lost(reason)) if session.attached_before => reason,
            // Nothing to re-attach to yet.
            Err(Failure::Lost(reason)) => return Err(Failure::Fatal(reason)),
            other => return other,
        };
        if !reconnect.is_down() {
            screen.notice("[connection lost; reconnecting…]");
        }
        let Some(delay) = reconnect.lost() else {
            let id = session.id.as_deref().unwrap_or_default();
            return Err(Failure::Fatal(format!(
                "lost the connection to session {id} on {}: {reason}; reattach with: {}",
                options.host,
                reattach_command(options, id)
            )));
        };
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            signal = local.detach_requested() => return Ok(Ending::Detached { signal }),
        }
    }
}

/// How the session ended for this process.
enum Ending {
    Exited(ProcessExit),
    /// `~.`, the local terminal went away, or a signal (`Some(N)`) asked us to stop.
    Detached {
        signal: Option<i32>,
    },
    OutputClosed,
}

enum Failure {
    /// The connection dropped; re-attach.
    Lost(String),
    /// Another controller took the session over: re-attaching would take it back from them.
    TakenOver(String),
    /// Nothing to retry.
    Fatal(String),
}

/// A dropped connection is re-attached after; anything else ends `zpanel shell`. ABORTED is
/// not a dropped connection here: another controller took the session over.
fn failed(status: tonic::Status) -> Failure {
    match status.code() {
        Code::Aborted => Failure::TakenOver(status_message(&status)),
        code if is_transient(code) => Failure::Lost(status_message(&status)),
        _ => Failure::Fatal(status_message(&status)),
    }
}

fn message(body: terminal_client_message::Body) -> TerminalClientMessage {
    TerminalClientMessage { body: Some(body) }
}

/// What this process knows of the session.
struct Session {
    /// Known once attached (from the start with `--attach`).
    id: Option<String>,
    /// As the user named it at first, the host's id once attached.
    host: String,
    attached_before: bool,
    output: Output,
    input: Input,
}

impl Session {
    /// The request that starts a call, and the output offset it asks for.
    fn first_request(
        &self,
        options: &ShellOptions,
        size: TerminalSize,
    ) -> (terminal_client_message::Body, Option<u64>) {
        use terminal_client_message::Body;
        let Some(session_id) = self.id.clone() else {
            let container = options.container.as_ref();
            let open = TerminalOpenRequest {
                host: self.host.clone(),
                size: Some(size),
                container: container.map(|c| c.container.clone()).unwrap_or_default(),
                container_user: container.map(|c| c.user.clone()).unwrap_or_default(),
                command: container.map(|c| c.command.clone()).unwrap_or_default(),
            };
            return (Body::Open(open), Some(0));
        };
        // The first attachment to an existing session shows its recent screen.
        let output_offset = self.attached_before.then(|| self.output.next());
        let attach = TerminalAttachRequest {
            host: self.host.clone(),
            session_id,
            watch: options.watch,
            output_offset,
            size: Some(size),
        };
        (Body::Attach(attach), output_offset)
    }

    /// Takes in what the control plane said about the attachment.
    fn attached(
        &mut self,
        attached: &TerminalAttached,
        requested: Option<u64>,
        screen: &mut Screen,
    ) -> Result<(), Failure> {
        if self.id.is_none() {
            let id = attached
                .session
                .as_ref()
                .map(|s| s.session_id.clone())
                .filter(|id| !id.is_empty())
                .ok_or_else(|| {
                    Failure::Fatal("the control plane did not name the new session".into())
                })?;
            self.id = Some(id);
        }
        self.host = attached.host_id.clone();
        match requested {
            None => self.output = Output::at(attached.output_offset),
            Some(requested) => self.skip_to(attached.output_offset.max(requested), screen),
        }
        self.attached_before = true;
        Ok(())
    }

    /// Output continues at `offset`: says so when that leaves out bytes we never got.
    fn skip_to(&mut self, offset: u64, screen: &mut Screen) {
        let missing = offset.saturating_sub(self.output.next());
        if missing > 0 {
            screen.notice(&format!("[{missing} bytes of output skipped]"));
            self.output = Output::at(offset);
        }
    }
}

/// Keystrokes kept until the host holds them. The buffer counts from this process's first
/// keystroke, the session from its first input: `base` is the session offset of our first.
struct Input {
    buffer: Arc<SharedReplay>,
    base: u64,
}

impl Input {
    /// Where to resend from (in the buffer's numbering) when the session holds input up to
    /// `held`. Input beyond ours (typed by another controller meanwhile) moves our
    /// numbering along.
    fn resume_at(&mut self, held: u64, first: bool) -> u64 {
        let end = self.buffer.with(|b| b.end());
        if first {
            self.base = held;
        } else if held > self.base + end {
            self.base = held - end;
        }
        held.saturating_sub(self.base)
    }

    fn acked(&self, held: u64) {
        let _ = self.buffer.with(|b| b.ack(held.saturating_sub(self.base)));
    }
}

/// One connection's worth of the session.
async fn attempt(
    settings: &Settings,
    options: &ShellOptions,
    session: &mut Session,
    local: &mut Local,
    screen: &mut Screen,
    reconnect: &mut Reconnect,
) -> Result<Ending, Failure> {
    use terminal_server_message::Body;
    let (first, requested) = session.first_request(options, local.size);
    let (tx, mut responses, attached) = tokio::select! {
        opened = open(settings, first) => opened?,
        signal = local.detach_requested() => return Ok(Ending::Detached { signal }),
    };
    let first_attachment = !session.attached_before;
    if reconnect.is_down() {
        screen.notice("[reconnected]");
    } else if options.watch && first_attachment && screen.raw {
        screen.notice("[watching read-only; type ~. to detach]");
    }
    reconnect.connected();
    session.attached(&attached, requested, screen)?;
    let input_pump = (!options.watch).then(|| {
        let from = session
            .input
            .resume_at(attached.input_offset, first_attachment);
        let base = session.input.base;
        tokio::spawn(send_stream(
            session.input.buffer.clone(),
            StreamKind::Stdin,
            from,
            tx.clone(),
            move |mut chunk| {
                chunk.offset += base;
                message(terminal_client_message::Body::Input(chunk))
            },
        ))
    });
    let mut stdout = tokio::io::stdout();
    let mut ack_due = false;
    let ending = loop {
        let end_of_input_due = local.end_of_input.as_ref().map(EndOfInput::due);
        let reply = tokio::select! {
            reply = responses.message() => reply,
            _ = tokio::time::sleep(ACK_DELAY), if ack_due => {
                send_ack(&tx, &mut session.output, true).await;
                ack_due = false;
                continue;
            }
            _ = tokio::time::sleep_until(end_of_input_due.unwrap_or_else(Instant::now)),
                if end_of_input_due.is_some() =>
            {
                if let Some(end_of_input) = &mut local.end_of_input {
                    end_of_input.quiet(&session.input.buffer);
                }
                continue;
            }
            event = local.next() => match event {
                LocalEvent::Detach { signal } => break Ok(Ending::Detached { signal }),
                LocalEvent::Resize(size) => {
                    if !options.watch {
                        let _ = tx.send(message(terminal_client_message::Body::Resize(size))).await;
                    }
                    continue;
                }
                LocalEvent::InputEnded => continue,
            },
        };
        match reply {
            Ok(Some(TerminalServerMessage { body: Some(body) })) => match body {
                Body::Output(chunk) => {
                    // A watcher that fell behind what the host holds continues further on.
                    session.skip_to(chunk.offset, screen);
                    match session.output.write(&mut stdout, chunk).await {
                        Ok(written) => screen.wrote(&written),
                        Err(WriteError::Closed(_)) => break Ok(Ending::OutputClosed),
                        Err(WriteError::Broken(e)) => {
                            break Err(Failure::Fatal(format!("output stream broken: {e}")));
                        }
                    }
                    send_ack(&tx, &mut session.output, false).await;
                    ack_due = true;
                    if let Some(end_of_input) = &mut local.end_of_input {
                        end_of_input.busy();
                    }
                }
                Body::InputAck(ack) => session.input.acked(ack.offset),
                Body::Exit(exit) => {
                    send_ack(&tx, &mut session.output, true).await;
                    break Ok(Ending::Exited(exit));
                }
                Body::Attached(_) => {}
            },
            Ok(Some(TerminalServerMessage { body: None })) => {}
            Ok(None) => break Err(Failure::Lost("the control plane ended the stream".into())),
            Err(status) => break Err(failed(status)),
        }
    };
    if let Some(pump) = input_pump {
        pump.abort();
    }
    if let Ok(Ending::Exited(_)) = ending {
        drop(tx);
        drain(&mut responses).await;
    }
    ending
}

type Opened = (
    mpsc::Sender<TerminalClientMessage>,
    tonic::Streaming<TerminalServerMessage>,
    TerminalAttached,
);

/// Connects and starts a call with `first`; answers once the control plane attached us.
async fn open(
    settings: &Settings,
    first: terminal_client_message::Body,
) -> Result<Opened, Failure> {
    let mut client = client::connect(settings)
        .await
        .map_err(|e| Failure::Lost(format!("{e:#}")))?;
    let (tx, requests) = request_stream(64);
    let _ = tx.send(message(first)).await;
    let mut responses = client
        .terminal(requests)
        .await
        .map_err(failed)?
        .into_inner();
    let reply = first_reply(&mut responses).await.map_err(failed)?;
    match reply.body {
        Some(terminal_server_message::Body::Attached(attached)) => Ok((tx, responses, attached)),
        _ => Err(Failure::Fatal(
            "the control plane did not attach the terminal".into(),
        )),
    }
}

/// Acknowledges written output: always when `all`, else once enough has accumulated.
async fn send_ack(tx: &mpsc::Sender<TerminalClientMessage>, output: &mut Output, all: bool) {
    if let Some(offset) = output.ack_due(all) {
        let ack = StreamAck {
            stream: StreamKind::Stdout as i32,
            offset,
        };
        let _ = tx
            .send(message(terminal_client_message::Body::Ack(ack)))
            .await;
    }
}

// === the local side ===

enum LocalEvent {
    Detach {
        signal: Option<i32>,
    },
    Resize(TerminalSize),
    /// Piped input ended (see [`EndOfInput`]).
    InputEnded,
}

/// What the keyboard reader reports.
enum Keys {
    /// `~.`, or the terminal went away.
    Detach,
    /// Piped input ended.
    Ended,
}

/// What happens on this machine while the session runs: keys asking to detach, window
/// size changes, and signals asking us to stop.
struct Local {
    keys: mpsc::Receiver<Keys>,
    /// Set once piped input ended.
    end_of_input: Option<EndOfInput>,
    /// SIGWINCH, when stdin is a terminal.
    window: Option<Signal>,
    stops: Stops,
    /// The size the session last heard of.
    size: TerminalSize,
}

impl Local {
    async fn next(&mut self) -> LocalEvent {
        loop {
            let window = &mut self.window;
            let resized = async {
                match window {
                    Some(window) => window.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                Some(keys) = self.keys.recv() => match keys {
                    Keys::Detach => return LocalEvent::Detach { signal: None },
                    Keys::Ended => {
                        self.end_of_input = Some(EndOfInput::new());
                        return LocalEvent::InputEnded;
                    }
                },
                Some(()) = resized => {
                    let size = tty::window_size();
                    if size != self.size {
                        self.size = size;
                        return LocalEvent::Resize(size);
                    }
                }
                signal = self.stops.recv() => return LocalEvent::Detach { signal: Some(signal) },
            }
        }
    }

    /// Waits for a request to detach, taking note of size changes meanwhile.
    async fn detach_requested(&mut self) -> Option<i32> {
        loop {
            if let LocalEvent::Detach { signal } = self.next().await {
                return signal;
            }
        }
    }
}

/// The signals that end `zpanel shell` (detached, the terminal restored) instead of
/// killing it with the terminal left raw.
struct Stops {
    terminate: Signal,
    hangup: Signal,
    interrupt: Signal,
}

impl Stops {
    fn new() -> std::io::Result<Stops> {
        Ok(Stops {
            terminate: signal(SignalKind::terminate())?,
            hangup: signal(SignalKind::hangup())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    /// The number of the next stop signal.
    async fn recv(&mut self) -> i32 {
        tokio::select! {
            _ = self.terminate.recv() => SignalKind::terminate().as_raw_value(),
            _ = self.hangup.recv() => SignalKind::hangup().as_raw_value(),
            _ = self.interrupt.recv() => SignalKind::interrupt().as_raw_value(),
        }
    }
}

/// Piped input ended: the shell gets a Ctrl-D each time it has been quiet for a while (our
/// input all taken, no output), so it reads end-of-file at its prompt. Once is not always
/// enough: a Ctrl-D that arrives while a command runs with the terminal in line mode is
/// that command's end-of-file, or is lost, and the shell never sees it.
struct EndOfInput {
    quiet_since: Instant,
    wait: Duration,
}

impl EndOfInput {
    fn new() -> Self {
        EndOfInput {
            quiet_since: Instant::now(),
            wait: END_OF_INPUT_FIRST_WAIT,
        }
    }

    fn due(&self) -> Instant {
        self.quiet_since + self.wait
    }

    /// The shell printed something: it is not waiting at its prompt.
    fn busy(&mut self) {
        self.quiet_since = Instant::now();
        self.wait = END_OF_INPUT_FIRST_WAIT;
    }

    /// Quiet for long enough: a Ctrl-D once the host has all our input, and a longer wait
    /// before the next one.
    fn quiet(&mut self, input: &SharedReplay) {
        self.quiet_since = Instant::now();
        let all_taken = input.with(|b| b.acked() == b.end());
        if all_taken {
            input.with(|b| b.push(Bytes::from_static(END_OF_INPUT)));
            self.wait = (self.wait * 2).min(END_OF_INPUT_MAX_WAIT);
        }
    }
}

/// Reads the keyboard (or piped stdin) into `input` for the session. With a terminal,
/// recognises the escape sequences.
async fn read_keys(
    input: Arc<SharedReplay>,
    terminal: bool,
    forward: bool,
    keys: mpsc::Sender<Keys>,
) {
    let mut escapes = EscapeFilter::default();
    let ended = read_stdin(&input, |bytes| {
        let typed = if terminal {
            escapes.feed(bytes)
        } else {
            Typed {
                send: bytes.to_vec(),
                ..Typed::default()
            }
        };
        if forward && !typed.send.is_empty() {
            input.with(|b| b.push(Bytes::from(typed.send)));
        }
        if typed.help {
            let help = escape::HELP.replace('\n', "\r\n");
            let _ = write!(std::io::stderr(), "\r\n{help}\r\n");
        }
        if typed.detach {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .await;
    let report = if ended && !terminal {
        Keys::Ended
    } else {
        Keys::Detach
    };
    let _ = keys.send(report).await;
}

/// Our own lines among the session's output, on stderr: each on a line of its own, dim
/// when stderr is a terminal.
struct Screen {
    /// The terminal is raw: a line ends with CR LF.
    raw: bool,
    styled: bool,
    /// The session's output last ended a line.
    at_line_start: bool,
}

impl Screen {
    fn wrote(&mut self, output: &[u8]) {
        if let Some(last) = output.last() {
            self.at_line_start = *last == b'\n';
        }
    }

    fn newline(&self) -> &'static str {
        if self.raw { "\r\n" } else { "\n" }
    }

    /// Moves to the start of a line if the output left the cursor in one.
    fn end_line(&mut self) {
        if !self.at_line_start {
            let _ = write!(std::io::stderr(), "{}", self.newline());
            self.at_line_start = true;
        }
    }

    fn line(&mut self, text: &str) {
        self.end_line();
        let _ = write!(std::io::stderr(), "{text}{}", self.newline());
    }

    fn notice(&mut self, text: &str) {
        if self.styled {
            self.line(&format!("\x1b[2m{text}\x1b[0m"));
        } else {
            self.line(text);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> Input {
        Input {
            buffer: Arc::new(SharedReplay::new(1024)),
            base: 0,
        }
    }

    #[test]
    fn keystrokes_typed_before_the_first_attachment_follow_the_sessions_input() {
        let mut input = input();
        input.buffer.with(|b| b.push(Bytes::from_static(b"ls\r")));
        assert_eq!(input.resume_at(120, true), 0, "everything is resent");
        assert_eq!(input.base, 120);
        input.acked(122);
        assert_eq!(input.buffer.with(|b| b.acked()), 2);
        assert_eq!(input.resume_at(122, false), 2);
    }

    #[test]
    fn input_typed_elsewhere_meanwhile_moves_the_numbering_along() {
        let mut input = input();
        input.buffer.with(|b| b.push(Bytes::from_static(b"abc")));
        assert_eq!(input.resume_at(0, true), 0);
        assert_eq!(input.resume_at(10, false), 3);
        assert_eq!(input.base, 7);
    }
}
