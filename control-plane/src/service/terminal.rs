//! Terminal sessions as every adapter sees them: open, attach (control or watch), list and
//! kill, with ownership checks, audit and recording. The shell lives on the daemon; a
//! [`TerminalChannel`] is one viewer's connection to it.

use std::time::Duration;

use bytes::Bytes;
use zpanel_proto::{
    ProcessExit, StreamAck, StreamChunk, StreamKind, TerminalInfo, TerminalMode, TerminalSize,
    open, open_result,
};

use super::audit::check;
use super::{Action, AppState, Principal, ServiceError, route_error};
use crate::recording::{Recordings, SharedRecording};
use crate::router::{Channel, ChannelEvent, HostRouter, InputQueue};
use crate::store::{HostRecord, TerminalRecord};

/// Largest terminal, in columns and in rows.
pub const MAX_TERMINAL_CELLS: u32 = 4096;
/// How long an attach waits for the host to come back online.
const ATTACH_WAIT: Duration = Duration::from_secs(10);
/// A shell inside a container instead of on the host.
#[derive(Debug, Clone, Default)]
pub struct ContainerShell {
    /// The container, by id or name.
    pub container: String,
    /// The user to run as; empty: the image's.
    pub user: String,
    /// What to run; empty: `sh`.
    pub command: Vec<String>,
}

impl ContainerShell {
    /// The shell a client asked for: in `container` when it names one.
    pub fn requested(
        container: String,
        user: String,
        command: Vec<String>,
    ) -> Result<Option<ContainerShell>, ServiceError> {
        if !container.is_empty() {
            return Ok(Some(ContainerShell {
                container,
                user,
                command,
            }));
        }
        if user.is_empty() && command.is_empty() {
            Ok(None)
        } else {
            Err(ServiceError::InvalidArgument(
                "a user or a command is for a shell in a container: name the container too".into(),
            ))
        }
    }
}

/// What a viewer asks for.
pub enum TerminalRequest {
    /// A new session: a login shell on the host, or a shell in a container.
    Open(Option<ContainerShell>),
    Attach {
        session_id: String,
        watch: bool,
        /// Output the viewer already has; `None` for the recent screen.
        output_offset: Option<u64>,
    },
}

/// Something that happened on the terminal, for the viewer.
#[derive(Debug)]
pub enum TerminalEvent {
    /// Output at an offset (contiguous, except after a watcher skipped ahead).
    Output(StreamChunk),
    /// The session holds every input byte below this offset.
    InputAck(u64),
    Exited(ProcessExit),
    /// The host's session dropped or the daemon ended the channel; the viewer may
    /// re-attach.
    Lost(String),
    /// Another viewer took control of the session; this viewer should not take it back
    /// by itself.
    TakenOver(String),
}

/// One viewer's connection to a terminal session.
pub struct TerminalChannel {
    channel: Channel,
    pub host: HostRecord,
    pub session: TerminalInfo,
    /// Where output starts for this viewer.
    pub output_offset: u64,
    /// Input the session already holds.
    pub input_offset: u64,
    pub watch: bool,
    recording: Option<SharedRecording>,
    /// Keystrokes on their way to the shell, paced by its input window.
    input: InputQueue,
}

/// Checks a size from a client.
pub fn check_size(cols: u32, rows: u32) -> Result<TerminalSize, ServiceError> {
    let range = 1..=MAX_TERMINAL_CELLS;
    if range.contains(&cols) && range.contains(&rows) {
        Ok(TerminalSize { cols, rows })
    } else {
        Err(ServiceError::InvalidArgument(format!(
            "terminal size {cols}x{rows} is out of range: columns and rows must be 1 to {MAX_TERMINAL_CELLS}"
        )))
    }
}

/// What a container shell runs and as whom, for the audit log: "sh as the image's user".
fn container_shell(shell: &ContainerShell) -> String {
    let command = if shell.command.is_empty() {
        "sh".to_string()
    } else {
        super::shell_words(&shell.command)
    };
    match shell.user.as_str() {
        "" => format!("{command} as the image's user"),
        user => format!("{command} as {user}"),
    }
}

impl TerminalChannel {
    /// The next event; `None` never happens before `Exited` or `Lost`.
    pub async fn next_event(&mut self) -> TerminalEvent {
        match self.channel.events.recv().await {
            Some(ChannelEvent::Data(chunk)) => {
                if let Some(recording) = &self.recording {
                    let mut recording = recording.lock().unwrap_or_else(|p| p.into_inner());
                    if let Err(e) = recording.output(chunk.offset, &chunk.payload) {
                        tracing::warn!(session = %self.session.session_id, "cannot write recording: {e}");
                    }
                }
                TerminalEvent::Output(chunk)
            }
            Some(ChannelEvent::Ack(ack)) => {
                self.input.acked(ack.offset);
                TerminalEvent::InputAck(ack.offset)
            }
            Some(ChannelEvent::Exited(exit)) => TerminalEvent::Exited(exit),
            Some(ChannelEvent::Closed(reason)) => TerminalEvent::Lost(reason),
            Some(ChannelEvent::Superseded(reason)) => TerminalEvent::TakenOver(reason),
            Some(
                ChannelEvent::FileDone(_)
                | ChannelEvent::FileChanged(_)
                | ChannelEvent::DockerUpdated(_)
                | ChannelEvent::DockerDone(_)
                | ChannelEvent::UpgradeDone(_),
            ) => TerminalEvent::Lost(
                "the host sent a file or Docker event on a terminal channel".into(),
            ),
            None => TerminalEvent::Lost("host session ended".into()),
        }
    }

    fn lost(e: crate::router::RouteError) -> ServiceError {
        ServiceError::Unavailable(format!("terminal connection lost: {e}; re-attach"))
    }

    /// Queues keystrokes at an input offset; repeats of queued input are dropped. Call
    /// [`TerminalChannel::flush_input`] after it.
    pub fn queue_input(&mut self, offset: u64, payload: Bytes) -> Result<(), ServiceError> {
        if self.watch {
            return Err(ServiceError::InvalidArgument(
                "this viewer is watching read-only; attach without watch to type".into(),
            ));
        }
        self.input
            .queue(offset, payload)
            .map_err(ServiceError::InvalidArgument)
    }

    /// Sends queued input while the shell's input window has room (the rest waits for
    /// acknowledgements, which arrive as [`TerminalEvent::InputAck`]).
    pub async fn flush_input(&mut self) -> Result<(), ServiceError> {
        self.input.flush(&self.channel).await.map_err(Self::lost)
    }

    /// The viewer has consumed output below `offset`.
    pub async fn ack(&self, offset: u64) -> Result<(), ServiceError> {
        let ack = StreamAck {
            stream: StreamKind::Stdout as i32,
            offset,
        };
        self.channel.send_ack(ack).await.map_err(Self::lost)
    }

    /// Resizes the session (sizes out of range are clamped: a window cannot be refused).
    pub async fn resize(&self, cols: u32, rows: u32) -> Result<(), ServiceError> {
        let (cols, rows) = (
            cols.clamp(1, MAX_TERMINAL_CELLS),
            rows.clamp(1, MAX_TERMINAL_CELLS),
        );
        let size = TerminalSize { cols, rows };
        if self.watch {
            return Ok(());
        }
        if let Some(recording) = &self.recording {
            let mut recording = recording.lock().unwrap_or_else(|p| p.into_inner());
            if let Err(e) = recording.resize(cols, rows) {
                tracing::warn!(session = %self.session.session_id, "cannot write recording: {e}");
            }
        }
        self.channel.send_resize(size).await.map_err(Self::lost)
    }

    /// The viewer saw the shell's exit: the daemon may forget the session.
    pub fn release(self) {
        self.channel.release();
    }
}

impl AppState {
    /// Opens a new terminal session on a host, or attaches to one.
    pub async fn terminal(
        &self,
        principal: &Principal,
        host: &str,
        request: TerminalRequest,
        size: TerminalSize,
    ) -> Result<TerminalChannel, ServiceError> {
        let host = self.host_for(principal, Action::Terminal, host).await?;
        let size = check_size(size.cols, size.rows)?;
        match request {
            TerminalRequest::Open(container) => {
                if container.is_some() {
                    self.authorize(principal, Action::UseDocker, Some(&host.workspace_id))
                        .await?;
                }
                self.terminal_open(principal, host, size, container.unwrap_or_default())
                    .await
            }
            TerminalRequest::Attach {
                session_id,
                watch,
                output_offset,
            } => {
                self.terminal_attach(principal, host, &session_id, watch, output_offset, size)
                    .await
            }
        }
    }

    async fn terminal_open(
        &self,
        principal: &Principal,
        host: HostRecord,
        size: TerminalSize,
        container: ContainerShell,
    ) -> Result<TerminalChannel, ServiceError> {
        self.check_terminal_quota(&host.workspace_id).await?;
        let session_id = uuid::Uuid::new_v4().to_string();
        let record = TerminalRecord {
            id: session_id.clone(),
            host_id: host.id.clone(),
            owner_id: principal.user_id.clone(),
            owner_name: principal.user_name.clone(),
            created_at: crate::store::now(),
            recording: if self.record_terminals {
                Recordings::relative_path(&host.id, &session_id)
            } else {
                String::new()
            },
            recorded_bytes: 0,
        };
        let request = open::Request::TerminalOpen(zpanel_proto::TerminalOpen {
            session_id: session_id.clone(),
            owner_id: principal.user_id.clone(),
            owner_name: principal.user_name.clone(),
            size: Some(size),
            container: container.container.clone(),
            container_user: container.user.clone(),
            command: container.command.clone(),
        });
        let result = self.router.open_channel(&host.id, request).await;
        let session = match container.container.as_str() {
            "" => format!("session {session_id}"),
            name => format!(
                "session {session_id} in container {name} ({})",
                container_shell(&container)
            ),
        };
        let detail = match (&result, record.recording.is_empty()) {
            (Err(e), _) => format!("{session}: {e}"),
            (Ok(_), true) => format!("{session}, not recorded"),
            (Ok(_), false) => format!("{session}, recording {}", record.recording),
        };
        let outcome = if result.is_ok() { "ok" } else { "failed" };
        self.audit(
            self.entry(principal, "terminal.open")
                .host(&host.id, &host.workspace_id)
                .target(&session_id)
                .detail(detail)
                .outcome(outcome),
        )
        .await;
        let channel = result.map_err(|e| route_error(&host, e))?;
        self.store.insert_terminal_session(&record).await?;
        self.viewer(channel, host, &record, false)
    }

    async fn terminal_attach(
        &self,
        principal: &Principal,
        host: HostRecord,
        session_id: &str,
        watch: bool,
        output_offset: Option<u64>,
        size: TerminalSize,
    ) -> Result<TerminalChannel, ServiceError> {
        let not_found = || {
            ServiceError::NotFound(format!(
                "no terminal session {session_id:?} on host {}; `zpanel sessions {}` lists them",
                host.name, host.name
            ))
        };
        let record = self
            .store
            .terminal_session(session_id)
            .await?
            .filter(|record| record.host_id == host.id)
            .ok_or_else(not_found)?;
        if record.owner_id != principal.user_id {
            // Someone else's session: admins may watch it, nobody may type into it.
            if !watch {
                return Err(ServiceError::PermissionDenied(
                    "you may not type into another user's terminal (attach with watch to observe)"
                        .into(),
                ));
            }
            self.authorize(
                principal,
                Action::WatchAnyTerminal,
                Some(&host.workspace_id),
            )
            .await?;
        }
        let deadline = tokio::time::Instant::now() + ATTACH_WAIT;
        while !self.router.is_online(&host.id) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mode = if watch {
            TerminalMode::Watch
        } else {
            TerminalMode::Control
        };
        let request = open::Request::TerminalAttach(zpanel_proto::TerminalAttach {
            session_id: session_id.to_string(),
            owner_id: record.owner_id.clone(),
            mode: mode as i32,
            output_offset,
            size: Some(size),
        });
        let channel = self
            .router
            .open_channel(&host.id, request)
            .await
            .map_err(|e| route_error(&host, e))?;
        let detail = format!(
            "session {session_id} of {}, {}",
            record.owner_name,
            if watch { "watch" } else { "control" }
        );
        self.audit(
            self.entry(principal, "terminal.attach")
                .host(&host.id, &host.workspace_id)
                .target(session_id)
                .detail(detail),
        )
        .await;
        self.viewer(channel, host, &record, watch)
    }

    fn viewer(
        &self,
        channel: Channel,
        host: HostRecord,
        record: &TerminalRecord,
        watch: bool,
    ) -> Result<TerminalChannel, ServiceError> {
        let Some(open_result::Reply::Terminal(session)) = channel.opened.reply.clone() else {
            return Err(ServiceError::Internal(format!(
                "host {} answered a terminal request without the session",
                host.name
            )));
        };
        let size = session.size.unwrap_or_default();
        let recording = if record.recording.is_empty() {
            None
        } else {
            match self.recordings.open(record, size.cols, size.rows) {
                Ok(recording) => Some(recording),
                Err(e) => {
                    tracing::error!(session = %record.id, "cannot open the recording {}: {e}", record.recording);
                    None
                }
            }
        };
        Ok(TerminalChannel {
            output_offset: channel.opened.output_offset,
            input_offset: channel.opened.stdin_offset,
            input: InputQueue::new(channel.opened.stdin_offset),
            channel,
            host,
            session,
            watch,
            recording,
        })
    }

    /// The terminal sessions on a host: the caller's own, or everyone's (`all`, admins).
    pub async fn terminal_list(
        &self,
        principal: &Principal,
        host: &str,
        all: bool,
    ) -> Result<(HostRecord, Vec<TerminalInfo>), ServiceError> {
        let host = self.host_for(principal, Action::Terminal, host).await?;
        let owner_id = if all {
            self.authorize(
                principal,
                Action::WatchAnyTerminal,
                Some(&host.workspace_id),
            )
            .await?;
            String::new()
        } else {
            principal.user_id.clone()
        };
        let sessions = self.sessions_on(&host, owner_id).await?;
        Ok((host, sessions))
    }

    /// How many terminal sessions a host holds (0 when it cannot be asked).
    pub(super) async fn terminal_count(&self, host: &HostRecord) -> u64 {
        self.sessions_on(host, String::new())
            .await
            .map_or(0, |sessions| sessions.len() as u64)
    }

    /// The sessions on a host, of one owner or (with an empty id) of everyone.
    async fn sessions_on(
        &self,
        host: &HostRecord,
        owner_id: String,
    ) -> Result<Vec<TerminalInfo>, ServiceError> {
        let request = open::Request::TerminalList(zpanel_proto::TerminalList { owner_id });
        let channel = self
            .router
            .open_channel(&host.id, request)
            .await
            .map_err(|e| route_error(host, e))?;
        Ok(match channel.opened.reply.clone() {
            Some(open_result::Reply::Terminals(listing)) => listing.sessions,
            _ => Vec::new(),
        })
    }

    /// Ends a terminal session: the caller's own, or anyone's for admins.
    pub async fn terminal_kill(
        &self,
        principal: &Principal,
        host: &str,
        session_id: &str,
    ) -> Result<(), ServiceError> {
        let host = self.host_for(principal, Action::Terminal, host).await?;
        let owner_id = match check(
            principal,
            Action::WatchAnyTerminal,
            Some(&host.workspace_id),
        ) {
            Ok(_) => String::new(),
            Err(_) => principal.user_id.clone(),
        };
        let request = open::Request::TerminalKill(zpanel_proto::TerminalKill {
            session_id: session_id.to_string(),
            owner_id,
        });
        let result = self.router.open_channel(&host.id, request).await;
        self.audit(
            self.entry(principal, "terminal.kill")
                .host(&host.id, &host.workspace_id)
                .target(session_id)
                .outcome(if result.is_ok() { "ok" } else { "failed" }),
        )
        .await;
        result.map_err(|e| route_error(&host, e))?;
        self.recordings.close(session_id);
        Ok(())
    }
}
