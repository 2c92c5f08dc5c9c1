//! Terminal sessions: login shells (or shells inside containers) in pseudo-terminals that
//! live in [`Terminals`], not in a channel, so viewers come and go (a closed tab, a reconnect,
//! a control-plane restart) while the shell keeps running. Output goes to a replay buffer
//! with history: the controller's acknowledgements drive its window, and with no controller
//! the shell never blocks. One controller types and resizes; watchers only read.

use std::collections::{BTreeSet, HashMap};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{Pid, User, geteuid};
use portable_pty::{CommandBuilder, MasterPty, PtySize};
use tokio::runtime::Handle;
use tokio::sync::watch;
use zpanel_proto::{
    ProcessExit, StreamKind, TerminalAttach, TerminalInfo, TerminalMode, TerminalOpen, TerminalSize,
};
use zpanel_shared::replay::{SharedReplay, StreamError, StreamSender, ViewerAck};
use zpanel_shared::unix_now;

use crate::config::TerminalAccounts;
use crate::input::{Input, InputCommand, InputError, InputWriter};

/// Bytes read from the terminal at once.
const READ_CHUNK: usize = 64 * 1024;
/// After a kill's SIGHUP, how long before SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(3);
/// How long an exited session's output and exit status wait for a viewer to re-attach.
const KEEP_EXITED: Duration = Duration::from_secs(5 * 60);
/// After the shell exits, how long its last output may still take to be read.
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(500);
/// Watchers of one session at most.
pub const MAX_WATCHERS: usize = 32;
/// Columns and rows at most.
const MAX_CELLS: u32 = 4096;
/// The size of a terminal whose opener did not say.
const DEFAULT_SIZE: TerminalSize = TerminalSize { cols: 80, rows: 24 };
/// Stack of a session's reader, writer and waiter threads: they hold little.
const THREAD_STACK_BYTES: usize = 256 * 1024;
/// Where Debian's util-linux puts `runuser`, which starts a shell as another account.
const RUNUSER: [&str; 2] = ["/usr/sbin/runuser", "/sbin/runuser"];
/// `PATH` of a shell for the daemon's own account, as `login` sets it.
const PATH_ROOT: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const PATH_USER: &str = "/usr/local/bin:/usr/bin:/bin";

#[derive(Debug, thiserror::Error)]
pub enum TerminalError {
    #[error(
        "terminal session {0} not found on this host (it ended, was killed, or the daemon restarted)"
    )]
    NotFound(String),
    #[error("terminal session {0} already exists")]
    Duplicate(String),
    #[error("a terminal session needs an id and an owner")]
    MissingId,
    #[error("terminal session {0} belongs to another user; only its owner can control or kill it")]
    NotOwner(String),
    #[error("this host already runs {0} terminal sessions, the most it allows; end one first")]
    TooManySessions(usize),
    #[error(
        "terminal session {0} already has {MAX_WATCHERS} watchers, the most it allows; try again later"
    )]
    TooManyWatchers(String),
    #[error("{0}")]
    Account(String),
    #[error("cannot start a shell for {account}: {reason}")]
    Spawn { account: String, reason: String },
    #[error("{0}")]
    Stream(#[from] StreamError),
    #[error("{0}")]
    Input(#[from] InputError),
    #[error("a watcher cannot type or resize; attach in control mode")]
    Watcher,
    #[error("another viewer took control of this session")]
    Replaced,
}

/// Sizes and times of [`Terminals`].
#[derive(Debug, Clone)]
pub struct TerminalLimits {
    /// Output a controller may have unacknowledged before the shell waits.
    pub window: usize,
    /// Acknowledged output kept for new viewers.
    pub scrollback: usize,
    /// A session with no viewer this long is killed.
    pub idle_timeout: Duration,
    /// Running sessions at most.
    pub max_sessions: usize,
}

/// How shells inside containers start: the daemon's own binary runs `container-shell`
/// against the engine, in the pseudo-terminal, as the daemon's own account.
#[derive(Debug, Clone, Default)]
pub struct ContainerShells {
    /// The engine's endpoint (`[docker]` of `bridge.toml`).
    pub endpoint: String,
    /// The daemon's binary; `None`: this process's own.
    pub program: Option<PathBuf>,
}

// === impl Terminals ===

/// All terminal sessions of this daemon.
pub struct Terminals {
    sessions: Mutex<HashMap<String, Arc<TerminalSession>>>,
    limits: TerminalLimits,
    accounts: TerminalAccounts,
    containers: ContainerShells,
}

impl Terminals {
    pub fn new(
        limits: TerminalLimits,
        accounts: TerminalAccounts,
        containers: ContainerShells,
    ) -> Arc<Terminals> {
        Arc::new(Terminals {
            sessions: Mutex::new(HashMap::new()),
            limits,
            accounts,
            containers,
        })
    }

    fn map(&self) -> MutexGuard<'_, HashMap<String, Arc<TerminalSession>>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, session_id: &str) -> Result<Arc<TerminalSession>, TerminalError> {
        self.map()
            .get(session_id)
            .cloned()
            .ok_or_else(|| TerminalError::NotFound(session_id.into()))
    }

    /// Starts a login shell for the owner's local account (or, when the request names a
    /// container, a shell inside it as the daemon's own account) and attaches the opener as
    /// its controller, from the first byte of output.
    pub fn open(&self, request: &TerminalOpen) -> Result<Viewer, TerminalError> {
        if request.session_id.is_empty() || request.owner_id.is_empty() {
            return Err(TerminalError::MissingId);
        }
        let mut sessions = self.map();
        if sessions.contains_key(&request.session_id) {
            return Err(TerminalError::Duplicate(request.session_id.clone()));
        }
        let running = sessions.values().filter(|s| !s.has_exited()).count();
        if running >= self.limits.max_sessions {
            return Err(TerminalError::TooManySessions(running));
        }
        let (account, program) = match request.container.as_str() {
            "" => {
                let account = Account::resolve(self.accounts.account_for(&request.owner_name))?;
                let program = account.login_shell();
                (account, program)
            }
            _ => {
                let account = Account::resolve(None)?;
                let program = account.container_shell(&self.containers, request)?;
                (account, program)
            }
        };
        let session = TerminalSession::start(request, &account, program, &self.limits)?;
        tracing::info!(terminal = %session.id, owner = %session.owner_name, account = %session.local_user, container = %session.container, "terminal session started");
        sessions.insert(session.id.clone(), session.clone());
        drop(sessions);
        session.attach(
            &request.owner_id,
            TerminalMode::Control,
            Some(0),
            request.size.as_ref(),
        )
    }

    /// Attaches a viewer to a running or exited session.
    pub fn attach(&self, request: &TerminalAttach) -> Result<Viewer, TerminalError> {
        self.get(&request.session_id)?.attach(
            &request.owner_id,
            request.mode(),
            request.output_offset,
            request.size.as_ref(),
        )
    }

    /// Running sessions, of `owner_id` only unless it is empty, oldest first.
    pub fn list(&self, owner_id: &str) -> Vec<TerminalInfo> {
        let mut sessions: Vec<TerminalInfo> = self
            .map()
            .values()
            .filter(|s| !s.has_exited() && (owner_id.is_empty() || s.owner_id == owner_id))
            .map(|s| s.info())
            .collect();
        sessions.sort_by(|a, b| (a.created_at, &a.session_id).cmp(&(b.created_at, &b.session_id)));
        sessions
    }

    /// Ends a session (of `owner_id` when it is not empty): SIGHUP to its processes, SIGKILL
    /// after a grace period. Its viewers see the end of output and the exit status; then it
    /// is forgotten.
    pub fn kill(&self, session_id: &str, owner_id: &str) -> Result<(), TerminalError> {
        let session = self.get(session_id)?;
        if !owner_id.is_empty() && session.owner_id != owner_id {
            return Err(TerminalError::NotOwner(session_id.into()));
        }
        tracing::info!(terminal = %session_id, "killing terminal session");
        session.viewers().released = true;
        session.hang_up();
        Ok(())
    }

    /// Forgets exited sessions once released or kept long enough, and kills sessions nobody
    /// viewed for the idle timeout.
    pub fn reap(&self) {
        let now = Instant::now();
        self.map().retain(|_, session| {
            let viewers = session.viewers();
            if let Some(exited_at) = *session.core.exited_at() {
                return !(viewers.released || now - exited_at > KEEP_EXITED);
            }
            let idle = viewers
                .unattended_since
                .is_some_and(|since| now - since > self.limits.idle_timeout);
            if idle {
                tracing::info!(terminal = %session.id, "killing terminal session nobody viewed for {:?}", self.limits.idle_timeout);
                session.hang_up();
            }
            !idle
        });
    }

    /// Runs [`Terminals::reap`] every second, for the daemon's life.
    pub async fn reap_forever(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            self.reap();
        }
    }
}

// === impl Account ===

/// The local account a shell runs as.
#[derive(Debug)]
struct Account {
    name: String,
    home: PathBuf,
    shell: PathBuf,
    /// `runuser`, when the account is not the daemon's own.
    runuser: Option<PathBuf>,
}

impl Account {
    /// The configured account (`None`: the daemon's own), checked against what the daemon
    /// can do.
    fn resolve(configured: Option<&str>) -> Result<Account, TerminalError> {
        let own = User::from_uid(geteuid()).ok().flatten();
        let user = match configured {
            Some(name) if own.as_ref().is_none_or(|own| own.name != name) => {
                User::from_name(name).ok().flatten().ok_or_else(|| {
                    TerminalError::Account(format!(
                        "local account {name} (from [terminal] in bridge.toml) does not exist on \
                         this host"
                    ))
                })?
            }
            _ => return Ok(Account::own(own)),
        };
        if !geteuid().is_root() {
            return Err(TerminalError::Account(format!(
                "cannot open a shell as {}: the daemon is not root, so it can only open shells as \
                 its own account; run it as root or change [terminal] in bridge.toml",
                user.name
            )));
        }
        let runuser = RUNUSER
            .iter()
            .map(PathBuf::from)
            .find(|path| path.exists())
            .ok_or_else(|| {
                TerminalError::Account(format!(
                    "cannot open a shell as {}: runuser (util-linux) is not installed",
                    user.name
                ))
            })?;
        Ok(Account {
            name: user.name,
            home: user.dir,
            shell: user.shell,
            runuser: Some(runuser),
        })
    }

    /// The daemon's own account, from the password database or else the environment.
    fn own(user: Option<User>) -> Account {
        let env = |name: &str, default: &str| std::env::var_os(name).unwrap_or(default.into());
        match user {
            Some(user) => Account {
                name: user.name,
                home: user.dir,
                shell: user.shell,
                runuser: None,
            },
            None => Account {
                name: env("USER", &geteuid().to_string())
                    .to_string_lossy()
                    .into_owned(),
                home: env("HOME", "/").into(),
                shell: "/bin/sh".into(),
                runuser: None,
            },
        }
    }

    /// The login shell: the shell itself with a login `argv[0]`, or `runuser -l` for another
    /// account (which sets `HOME`, `SHELL`, `USER`, `LOGNAME` and `PATH` and keeps `TERM`).
    fn login_shell(&self) -> Program {
        let mut command = match &self.runuser {
            Some(runuser) => {
                let mut command = CommandBuilder::new(runuser);
                command.args(["-w", "COLORTERM,LANG", "-l", "--", &self.name]);
                command.env_clear();
                command.cwd("/");
                command
            }
            None => {
                let mut command = CommandBuilder::new_default_prog();
                self.own_environment(&mut command);
                command
            }
        };
        terminal_environment(&mut command);
        Program {
            command,
            shown: self.shell.to_string_lossy().into_owned(),
            container: String::new(),
        }
    }

    /// `container-shell` of the daemon's binary, with the environment of the daemon's own
    /// account: the command (default `sh`) runs inside the container through the engine.
    fn container_shell(
        &self,
        shells: &ContainerShells,
        request: &TerminalOpen,
    ) -> Result<Program, TerminalError> {
        // The running binary itself, through /proc: its path may name a newer binary (or
        // none) once an upgrade replaced the file.
        let program = shells
            .program
            .clone()
            .unwrap_or_else(|| PathBuf::from("/proc/self/exe"));
        let argv = match request.command.is_empty() {
            true => vec!["sh".to_string()],
            false => request.command.clone(),
        };
        let mut command = CommandBuilder::new(program);
        // `--flag=value`: a value that starts with dashes stays a value.
        command.arg("container-shell");
        command.arg(format!("--endpoint={}", shells.endpoint));
        command.arg(format!("--container={}", request.container));
        if !request.container_user.is_empty() {
            command.arg(format!("--user={}", request.container_user));
        }
        command.arg("--");
        command.args(&argv);
        self.own_environment(&mut command);
        terminal_environment(&mut command);
        Ok(Program {
            command,
            shown: argv.join(" "),
            container: request.container.clone(),
        })
    }

    /// The environment and directory of a shell of the daemon's own account, as `login`
    /// sets them.
    fn own_environment(&self, command: &mut CommandBuilder) {
        command.env_clear();
        let shell = match self.shell.as_os_str().is_empty() {
            true => Path::new("/bin/sh"),
            false => self.shell.as_path(),
        };
        command.env("SHELL", shell);
        command.env("HOME", &self.home);
        command.env("USER", &self.name);
        command.env("LOGNAME", &self.name);
        let path = if geteuid().is_root() {
            PATH_ROOT
        } else {
            PATH_USER
        };
        command.env("PATH", path);
        command.cwd(if self.home.is_dir() {
            self.home.as_path()
        } else {
            Path::new("/")
        });
    }
}

/// What every terminal's program gets: the terminal type, colours and language.
fn terminal_environment(command: &mut CommandBuilder) {
    let lang = std::env::var_os("LANG").unwrap_or_else(|| "C.UTF-8".into());
    command.env("TERM", "xterm-256color");
    command.env("COLORTERM", "truecolor");
    command.env("LANG", lang);
}

/// What a session's pseudo-terminal runs, and how the session describes it.
struct Program {
    command: CommandBuilder,
    /// `TerminalInfo.command`: the shell's path, or the command run in the container.
    shown: String,
    /// The container the program runs in; empty for a shell on the host.
    container: String,
}

// === impl TerminalSession ===

/// What a session shares with its threads.
struct Core {
    output: SharedReplay,
    /// A controller is attached, so output waits for its acknowledgements; with none, output
    /// is acknowledged as it is produced. Changed only under the output buffer's lock.
    controlled: AtomicBool,
    exit: watch::Sender<Option<ProcessExit>>,
    exited_at: Mutex<Option<Instant>>,
    /// Unix seconds of the last input, output or attachment.
    last_activity: AtomicI64,
}

impl Core {
    fn touch(&self) {
        self.last_activity.store(unix_now(), Ordering::Relaxed);
    }

    fn exited_at(&self) -> MutexGuard<'_, Option<Instant>> {
        self.exited_at.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Who is attached to a session.
struct Viewers {
    /// Numbers attachments, so a replaced controller's late calls change nothing.
    next: u64,
    controller: Option<u64>,
    watchers: BTreeSet<u64>,
    /// Since when nobody is attached; `None` while someone is.
    unattended_since: Option<Instant>,
    /// Forget the session as soon as its shell exited.
    released: bool,
}

/// One login shell in a pseudo-terminal.
pub struct TerminalSession {
    pub id: String,
    pub owner_id: String,
    owner_name: String,
    local_user: String,
    command: String,
    container: String,
    created_at: i64,
    /// The shell's process (or `runuser`'s), leader of the terminal's own session.
    leader: Pid,
    core: Arc<Core>,
    input: Input,
    master: Mutex<Box<dyn MasterPty + Send>>,
    size: Mutex<TerminalSize>,
    viewers: Mutex<Viewers>,
}

impl TerminalSession {
    fn start(
        request: &TerminalOpen,
        account: &Account,
        program: Program,
        limits: &TerminalLimits,
    ) -> Result<Arc<TerminalSession>, TerminalError> {
        let spawn_error = |reason: String| TerminalError::Spawn {
            account: account.name.clone(),
            reason,
        };
        let size = clamp(request.size.as_ref());
        let pair = portable_pty::native_pty_system()
            .openpty(pty_size(&size))
            .map_err(|e| spawn_error(format!("no pseudo-terminal: {e:#}")))?;
        let child = pair
            .slave
            .spawn_command(program.command)
            .map_err(|e| spawn_error(format!("{e:#}")))?;
        drop(pair.slave);
        let leader = Pid::from_raw(child.process_id().map_or(0, |pid| pid as i32));
        // The waiter thread reaps the shell with waitpid, for its signal number.
        drop(child);
        let (input, input_writer) = Input::new();
        let core = Arc::new(Core {
            output: SharedReplay::with_history(limits.window, limits.scrollback),
            controlled: AtomicBool::new(false),
            exit: watch::Sender::new(None),
            exited_at: Mutex::new(None),
            last_activity: AtomicI64::new(unix_now()),
        });
        let session = Arc::new(TerminalSession {
            id: request.session_id.clone(),
            owner_id: request.owner_id.clone(),
            owner_name: request.owner_name.clone(),
            local_user: account.name.clone(),
            command: program.shown,
            container: program.container,
            created_at: unix_now(),
            leader,
            core: core.clone(),
            input,
            master: Mutex::new(pair.master),
            size: Mutex::new(size),
            viewers: Mutex::new(Viewers {
                next: 0,
                controller: None,
                watchers: BTreeSet::new(),
                unattended_since: Some(Instant::now()),
                released: false,
            }),
        });
        if let Err(e) = session.start_threads(input_writer) {
            session.hang_up();
            return Err(spawn_error(e.to_string()));
        }
        Ok(session)
    }

    fn start_threads(&self, input: InputWriter) -> std::io::Result<()> {
        let master = self.master();
        let reader = master.try_clone_reader().map_err(std::io::Error::other)?;
        let writer = master.take_writer().map_err(std::io::Error::other)?;
        drop(master);
        let runtime = Handle::current();
        let thread = |name: &str| {
            std::thread::Builder::new()
                .name(name.into())
                .stack_size(THREAD_STACK_BYTES)
        };
        let (core, output_runtime) = (self.core.clone(), runtime.clone());
        thread("terminal-output").spawn(move || read_output(reader, &core, &output_runtime))?;
        thread("terminal-input").spawn(move || write_input(writer, input))?;
        let (core, leader) = (self.core.clone(), self.leader);
        thread("terminal-wait").spawn(move || wait_shell(leader, &core, &runtime))?;
        Ok(())
    }

    fn master(&self) -> MutexGuard<'_, Box<dyn MasterPty + Send>> {
        self.master.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn viewers(&self) -> MutexGuard<'_, Viewers> {
        self.viewers.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn has_exited(&self) -> bool {
        self.core.exit.borrow().is_some()
    }

    /// The output stream, numbered from the session's start.
    pub fn output(&self) -> &SharedReplay {
        &self.core.output
    }

    /// The shell's exit, once it happened.
    pub fn exit(&self) -> watch::Receiver<Option<ProcessExit>> {
        self.core.exit.subscribe()
    }

    /// Input bytes received so far: where a controller resends from.
    pub fn input_offset(&self) -> u64 {
        self.input.offset()
    }

    /// Input bytes written to the terminal, as it changes.
    pub fn input_written(&self) -> watch::Receiver<u64> {
        self.input.written()
    }

    pub fn info(&self) -> TerminalInfo {
        let viewers = self.viewers();
        let count = viewers.watchers.len() + usize::from(viewers.controller.is_some());
        drop(viewers);
        TerminalInfo {
            session_id: self.id.clone(),
            owner_id: self.owner_id.clone(),
            owner_name: self.owner_name.clone(),
            local_user: self.local_user.clone(),
            created_at: self.created_at,
            size: Some(*self.size.lock().unwrap_or_else(|p| p.into_inner())),
            viewers: u32::try_from(count).unwrap_or(u32::MAX),
            last_activity: self.core.last_activity.load(Ordering::Relaxed),
            output_bytes: self.core.output.with(|buffer| buffer.end()),
            command: self.command.clone(),
            container: self.container.clone(),
        }
    }

    /// Attaches a viewer from `output_offset` (absent or no longer held: the oldest byte
    /// held). A controller must be the owner; it replaces the current controller.
    fn attach(
        self: &Arc<Self>,
        owner_id: &str,
        mode: TerminalMode,
        output_offset: Option<u64>,
        size: Option<&TerminalSize>,
    ) -> Result<Viewer, TerminalError> {
        let control = mode == TerminalMode::Control;
        if control && owner_id != self.owner_id {
            return Err(TerminalError::NotOwner(self.id.clone()));
        }
        let mut viewers = self.viewers();
        if !control && viewers.watchers.len() >= MAX_WATCHERS {
            return Err(TerminalError::TooManyWatchers(self.id.clone()));
        }
        let output_from = self.core.output.with(|buffer| {
            let from = match output_offset {
                None => buffer.start(),
                Some(offset) if offset > buffer.end() => {
                    return Err(StreamError::BeyondEnd {
                        offset,
                        end: buffer.end(),
                    });
                }
                Some(offset) => offset.max(buffer.start()),
            };
            if control {
                buffer.ack(from)?;
                self.core.controlled.store(true, Ordering::SeqCst);
            }
            Ok(from)
        })?;
        viewers.next += 1;
        let number = viewers.next;
        if control {
            viewers.controller = Some(number);
        } else {
            viewers.watchers.insert(number);
        }
        viewers.unattended_since = None;
        drop(viewers);
        if let Some(size) = size.filter(|_| control) {
            self.resize(size);
        }
        self.core.touch();
        Ok(Viewer {
            session: self.clone(),
            number,
            mode,
            output_from,
            acked: ViewerAck::at(output_from),
        })
    }

    /// Resizes the terminal (clamped to 1..=4096); the foreground job gets SIGWINCH.
    fn resize(&self, size: &TerminalSize) {
        let size = clamp(Some(size));
        if let Err(e) = self.master().resize(pty_size(&size)) {
            tracing::debug!(terminal = %self.id, "resize: {e:#}");
        }
        *self.size.lock().unwrap_or_else(|p| p.into_inner()) = size;
    }

    /// SIGHUP to every process of the terminal's session, SIGKILL after a grace period.
    fn hang_up(&self) {
        let leader = self.leader;
        tokio::spawn(async move {
            let hang_up = move || signal_session(leader, Signal::SIGHUP);
            let _ = tokio::task::spawn_blocking(hang_up).await;
            tokio::time::sleep(KILL_GRACE).await;
            let _ =
                tokio::task::spawn_blocking(move || signal_session(leader, Signal::SIGKILL)).await;
        });
    }
}

fn clamp(size: Option<&TerminalSize>) -> TerminalSize {
    let size = size.unwrap_or(&DEFAULT_SIZE);
    TerminalSize {
        cols: size.cols.clamp(1, MAX_CELLS),
        rows: size.rows.clamp(1, MAX_CELLS),
    }
}

fn pty_size(size: &TerminalSize) -> PtySize {
    PtySize {
        cols: u16::try_from(size.cols).unwrap_or(u16::MAX),
        rows: u16::try_from(size.rows).unwrap_or(u16::MAX),
        pixel_width: 0,
        pixel_height: 0,
    }
}

// === impl Viewer ===

/// One attachment to a session: the controller or a watcher.
pub struct Viewer {
    session: Arc<TerminalSession>,
    number: u64,
    mode: TerminalMode,
    output_from: u64,
    acked: ViewerAck,
}

impl Viewer {
    pub fn session(&self) -> &Arc<TerminalSession> {
        &self.session
    }

    pub fn is_controller(&self) -> bool {
        self.mode == TerminalMode::Control
    }

    /// Where this viewer's output starts.
    pub fn output_from(&self) -> u64 {
        self.output_from
    }

    /// Sends this viewer's output, from where it starts.
    pub fn output_sender(&self) -> StreamSender {
        StreamSender::for_viewer(StreamKind::Stdout, self.output_from, self.acked.clone())
    }

    /// Fails unless this viewer is the session's current controller.
    fn check_control(&self, viewers: &Viewers) -> Result<(), TerminalError> {
        match (
            self.is_controller(),
            viewers.controller == Some(self.number),
        ) {
            (false, _) => Err(TerminalError::Watcher),
            (true, false) => Err(TerminalError::Replaced),
            (true, true) => Ok(()),
        }
    }

    /// Input from the controller, numbered per session. Never waits.
    pub fn input(&self, offset: u64, payload: Bytes) -> Result<(), TerminalError> {
        self.check_control(&self.session.viewers())?;
        // A terminal's input has no end: end-of-file is a byte (Ctrl-D) the shell reads.
        self.session.input.accept(offset, payload, false)?;
        self.session.core.touch();
        Ok(())
    }

    /// The viewer has the output below `offset`; the controller's acknowledgement also
    /// makes room in the window.
    pub fn ack(&self, offset: u64) -> Result<(), TerminalError> {
        let viewers = self.session.viewers();
        let controls = self.check_control(&viewers).is_ok();
        self.session.core.output.with(|buffer| {
            if controls {
                buffer.ack(offset)?;
            } else if offset > buffer.end() {
                return Err(StreamError::AckBeyondEnd {
                    offset,
                    end: buffer.end(),
                });
            }
            self.acked.advance(offset);
            Ok(())
        })?;
        Ok(())
    }

    /// The controller's window changed size.
    pub fn resize(&self, size: &TerminalSize) -> Result<(), TerminalError> {
        self.check_control(&self.session.viewers())?;
        self.session.resize(size);
        Ok(())
    }

    /// Ends this attachment; the shell keeps running. A controller that `release`s says it
    /// needs nothing more once the shell exited.
    pub fn detach(&self, release: bool) {
        let mut viewers = self.session.viewers();
        if viewers.controller == Some(self.number) {
            viewers.controller = None;
            viewers.released |= release;
            let core = &self.session.core;
            core.output.with(|buffer| {
                core.controlled.store(false, Ordering::SeqCst);
                let _ = buffer.ack(buffer.end());
            });
        } else {
            viewers.watchers.remove(&self.number);
        }
        if viewers.controller.is_none() && viewers.watchers.is_empty() {
            viewers.unattended_since.get_or_insert_with(Instant::now);
        }
    }

    /// Whether `self` ends `other`'s attachment: a controller replaces the older controller
    /// of the same session.
    pub fn replaces(&self, other: &Viewer) -> bool {
        self.is_controller()
            && other.is_controller()
            && Arc::ptr_eq(&self.session, &other.session)
            && self.number != other.number
    }
}

// === the session's threads ===

/// Moves the terminal's output into the replay buffer: waiting for window space while a
/// controller is attached, acknowledging it at once otherwise. Ends when every process let
/// go of the terminal or the session's output was finished.
fn read_output(mut pty: Box<dyn Read + Send>, core: &Core, runtime: &Handle) {
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let space = runtime.block_on(core.output.wait_for(|buffer| {
            (buffer.space() > 0 || buffer.is_finished()).then(|| buffer.space())
        }));
        if space == 0 {
            return;
        }
        let read = match pty.read(&mut buf[..space.min(READ_CHUNK)]) {
            Ok(0) => break,
            Ok(read) => read,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let data = Bytes::copy_from_slice(&buf[..read]);
        let pushed = core.output.with(|buffer| {
            if buffer.is_finished() {
                return false;
            }
            buffer.push(data);
            if !core.controlled.load(Ordering::SeqCst) {
                let _ = buffer.ack(buffer.end());
            }
            true
        });
        if !pushed {
            return;
        }
        core.touch();
    }
    core.output.with(|buffer| buffer.finish());
}

/// Writes the controller's input to the terminal. Bytes the terminal no longer takes are
/// discarded but still counted. Ends when the session is forgotten.
fn write_input(pty: Box<dyn Write + Send>, mut input: InputWriter) {
    let mut pty = Some(pty);
    while let Some(command) = input.blocking_recv() {
        if let InputCommand::Data(bytes) = command {
            if let Some(writer) = pty.as_mut()
                && writer
                    .write_all(&bytes)
                    .and_then(|()| writer.flush())
                    .is_err()
            {
                pty = None;
            }
            input.wrote(bytes.len());
        }
    }
}

/// Waits for the shell to exit, lets the reader take its last output, then ends the output
/// stream and records the exit.
fn wait_shell(leader: Pid, core: &Core, runtime: &Handle) {
    let exit = loop {
        match waitpid(leader, None) {
            Ok(WaitStatus::Exited(_, code)) => {
                break ProcessExit {
                    code,
                    signal: 0,
                    timed_out: false,
                };
            }
            Ok(WaitStatus::Signaled(_, signal, _)) => {
                break ProcessExit {
                    code: 0,
                    signal: signal as i32,
                    timed_out: false,
                };
            }
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => {
                tracing::warn!("cannot wait for a terminal's shell: {e}");
                break ProcessExit {
                    code: 255,
                    signal: 0,
                    timed_out: false,
                };
            }
        }
    };
    let drained = core
        .output
        .wait_for(|buffer| buffer.is_finished().then_some(()));
    let _ = runtime.block_on(async { tokio::time::timeout(DRAIN_AFTER_EXIT, drained).await });
    core.output.with(|buffer| buffer.finish());
    *core.exited_at() = Some(Instant::now());
    core.exit.send_replace(Some(exit));
}

/// Sends `signal` to every process of the terminal session led by `leader`, whatever
/// process group it is in: the shell (or `runuser` and its shell), its jobs, their children.
fn signal_session(leader: Pid, signal: Signal) {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        let _ = nix::sys::signal::killpg(leader, signal);
        return;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        if session_of(&stat) == Some(leader.as_raw()) {
            let _ = kill(Pid::from_raw(pid), signal);
        }
    }
}

/// The session id in a `/proc/PID/stat` line: `pid (comm) state ppid pgrp session …`, where
/// `comm` may hold spaces and parentheses.
fn session_of(stat: &str) -> Option<i32> {
    let fields = &stat[stat.rfind(')')? + 1..];
    fields.split_whitespace().nth(3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use zpanel_shared::replay::Read as ReplayRead;

    /// How long any one step of a test may take.
    const STEP: Duration = Duration::from_secs(20);

    fn limits() -> TerminalLimits {
        TerminalLimits {
            window: 1 << 20,
            scrollback: 1 << 20,
            idle_timeout: Duration::from_secs(600),
            max_sessions: 8,
        }
    }

    fn open_request(session_id: &str) -> TerminalOpen {
        TerminalOpen {
            session_id: session_id.into(),
            owner_id: "u-alice".into(),
            owner_name: "alice".into(),
            size: Some(TerminalSize { cols: 80, rows: 24 }),
            ..TerminalOpen::default()
        }
    }

    fn attach_request(
        session_id: &str,
        owner_id: &str,
        mode: TerminalMode,
        output_offset: Option<u64>,
    ) -> TerminalAttach {
        TerminalAttach {
            session_id: session_id.into(),
            owner_id: owner_id.into(),
            mode: mode as i32,
            output_offset,
            size: None,
        }
    }

    /// A viewer as a client drives it: reads and acknowledges output, types input.
    struct Client {
        viewer: Viewer,
        sender: StreamSender,
        /// Output received, from `viewer.output_from()`.
        received: Vec<u8>,
        typed: u64,
    }

    impl Client {
        fn new(viewer: Viewer) -> Client {
            Client {
                sender: viewer.output_sender(),
                viewer,
                received: Vec::new(),
                typed: 0,
            }
        }

        fn next_offset(&self) -> u64 {
            self.viewer.output_from() + self.received.len() as u64
        }

        fn type_line(&mut self, line: &str) {
            let bytes = Bytes::from(format!("{line}\r"));
            let len = bytes.len() as u64;
            self.viewer.input(self.typed, bytes).unwrap();
            self.typed += len;
        }

        /// Reads until the output holds `needle` after `from` (an index in `received`), or
        /// the end of output; true when found.
        async fn read_until(&mut self, needle: &str, from: usize) -> bool {
            let found = |received: &[u8]| {
                received[from.min(received.len())..]
                    .windows(needle.len())
                    .any(|w| w == needle.as_bytes())
            };
            while !found(&self.received) {
                let output = self.viewer.session().output();
                let next = tokio::time::timeout(STEP, self.sender.next(output))
                    .await
                    .unwrap_or_else(|_| {
                        panic!(
                            "no {needle:?} in {:?}",
                            String::from_utf8_lossy(&self.received)
                        )
                    })
                    .unwrap();
                let Some(chunk) = next else { return false };
                if chunk.eof {
                    return false;
                }
                assert_eq!(chunk.offset, self.next_offset(), "output is contiguous");
                self.received.extend_from_slice(&chunk.payload);
                self.viewer.ack(self.next_offset()).unwrap();
            }
            true
        }

        /// Reads to the end of output and returns the exit.
        async fn read_to_exit(&mut self) -> ProcessExit {
            assert!(!self.read_until("\u{0}never\u{0}", 0).await);
            let mut exit = self.viewer.session().exit();
            let exit = tokio::time::timeout(STEP, exit.wait_for(Option::is_some))
                .await
                .unwrap()
                .unwrap();
            exit.unwrap()
        }

        fn text(&self) -> String {
            String::from_utf8_lossy(&self.received).into_owned()
        }
    }

    /// Everything the session still holds, waiting until it contains `needle`.
    async fn held_output_with(session: &TerminalSession, needle: &str) -> (u64, String) {
        tokio::time::timeout(STEP, async {
            loop {
                let (start, text) = session.output().with(|buffer| {
                    let mut text = Vec::new();
                    while let Ok(ReplayRead::Data(data)) =
                        buffer.read_at(buffer.start() + text.len() as u64, usize::MAX)
                    {
                        text.extend_from_slice(&data);
                    }
                    (buffer.start(), String::from_utf8_lossy(&text).into_owned())
                });
                if text.contains(needle) {
                    return (start, text);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("the session's output never held {needle:?}"))
    }

    #[tokio::test]
    async fn a_login_shell_runs_commands_and_follows_resizes() {
        let terminals = Terminals::new(
            limits(),
            TerminalAccounts::default(),
            ContainerShells::default(),
        );
        let mut client = Client::new(terminals.open(&open_request("t1")).unwrap());
        client.type_line("echo $TERM $COLORTERM $((6*7)); case $0 in -*) echo login-shell;; esac");
        assert!(
            client
                .read_until("xterm-256color truecolor 42\r\nlogin-shell", 0)
                .await
        );
        let session = client.viewer.session().clone();
        let own = User::from_uid(geteuid()).unwrap().unwrap();
        assert_eq!(session.info().local_user, own.name);

        client
            .viewer
            .resize(&TerminalSize {
                cols: 100,
                rows: 30,
            })
            .unwrap();
        let mark = client.received.len();
        client.type_line("stty size");
        assert!(client.read_until("30 100", mark).await);
        // sizes are clamped to 1..=4096
        client
            .viewer
            .resize(&TerminalSize {
                cols: 0,
                rows: 100_000,
            })
            .unwrap();
        assert_eq!(
            session.info().size,
            Some(TerminalSize {
                cols: 1,
                rows: 4096
            })
        );
        client.type_line("exit 3");
        let exit = client.read_to_exit().await;
        assert_eq!((exit.code, exit.signal), (3, 0));
    }

    #[tokio::test]
    async fn a_paste_larger_than_the_window_arrives_whole() {
        let terminals = Terminals::new(
            limits(),
            TerminalAccounts::default(),
            ContainerShells::default(),
        );
        let mut client = Client::new(terminals.open(&open_request("paste")).unwrap());
        client.type_line("stty -echo; wc -c; stty echo");
        assert!(client.read_until("wc -c; stty echo\r\n", 0).await);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let paste = format!("{}\n", "x".repeat(1023)).repeat(6 * 1024);
        let mut written = client.viewer.session().input_written();
        for piece in paste.as_bytes().chunks(128 * 1024) {
            let sent = client.typed;
            tokio::time::timeout(STEP, written.wait_for(|w| sent - *w < 1 << 20))
                .await
                .expect("the shell takes its input")
                .unwrap();
            client
                .viewer
                .input(client.typed, Bytes::copy_from_slice(piece))
                .unwrap();
            client.typed += piece.len() as u64;
        }
        client
            .viewer
            .input(client.typed, Bytes::from_static(b"\x04"))
            .unwrap();
        assert!(client.read_until("6291456", 0).await);
    }

    #[tokio::test]
    async fn a_detached_session_keeps_running_and_a_viewer_resumes_from_its_offset() {
        // a window far smaller than the output: with nobody attached the shell never waits
        let limits = TerminalLimits {
            window: 16 * 1024,
            ..limits()
        };
        let terminals = Terminals::new(
            limits,
            TerminalAccounts::default(),
            ContainerShells::default(),
        );
        let mut first = Client::new(terminals.open(&open_request("t2")).unwrap());
        first.type_line("seq 1 20000; echo done-$((1+1))");
        assert!(first.read_until("seq 1 20000", 0).await);
        first.viewer.detach(false);
        let session = first.viewer.session().clone();
        held_output_with(&session, "done-2").await;

        let resume_at = first.next_offset();
        let request = attach_request("t2", "u-alice", TerminalMode::Control, Some(resume_at));
        let mut second = Client::new(terminals.attach(&request).unwrap());
        assert_eq!(second.viewer.output_from(), resume_at);
        assert!(second.read_until("done-2", 0).await);

        // lines as the screen shows them: what follows the last carriage return
        let whole = format!("{}{}", first.text(), second.text());
        let numbers: Vec<u32> = whole
            .split('\n')
            .filter_map(|line| {
                line.trim_end_matches('\r')
                    .rsplit('\r')
                    .next()?
                    .parse()
                    .ok()
            })
            .collect();
        let first_wrong = numbers.iter().zip(1..).position(|(n, i)| *n != i);
        assert_eq!(
            (numbers.len(), first_wrong),
            (20000, None),
            "every line once"
        );
    }

    #[tokio::test]
    async fn viewers_with_no_state_start_at_the_oldest_byte_held() {
        let limits = TerminalLimits {
            window: 16 * 1024,
            scrollback: 4096,
            ..limits()
        };
        let terminals = Terminals::new(
            limits,
            TerminalAccounts::default(),
            ContainerShells::default(),
        );
        let mut opener = Client::new(terminals.open(&open_request("t3")).unwrap());
        opener.type_line("seq 1 20000; echo done-$((1+1))");
        opener.viewer.detach(false);
        let session = opener.viewer.session().clone();
        let (start, held) = held_output_with(&session, "done-2").await;
        assert!(start > 0, "old output was dropped");
        assert!(held.len() <= 4096 + 1024, "only the history is kept");

        for offset in [None, Some(0)] {
            let request = attach_request("t3", "u-bob", TerminalMode::Watch, offset);
            let mut watcher = Client::new(terminals.attach(&request).unwrap());
            assert_eq!(watcher.viewer.output_from(), start);
            assert!(watcher.read_until("done-2", 0).await);
        }
        let end = session.info().output_bytes;
        let request = attach_request("t3", "u-alice", TerminalMode::Control, Some(end + 1));
        assert!(matches!(
            terminals.attach(&request),
            Err(TerminalError::Stream(StreamError::BeyondEnd { .. }))
        ));
    }

    #[tokio::test]
    async fn watchers_read_and_only_the_owner_controls() {
        let terminals = Terminals::new(
            limits(),
            TerminalAccounts::default(),
            ContainerShells::default(),
        );
        let mut controller = Client::new(terminals.open(&open_request("t4")).unwrap());
        let watch = attach_request("t4", "u-bob", TerminalMode::Watch, None);
        let mut watcher = Client::new(terminals.attach(&watch).unwrap());
        assert!(matches!(
            watcher.viewer.input(0, Bytes::from_static(b"x")),
            Err(TerminalError::Watcher)
        ));
        let steal = attach_request("t4", "u-bob", TerminalMode::Control, None);
        assert!(matches!(
            terminals.attach(&steal),
            Err(TerminalError::NotOwner(_))
        ));

        controller.type_line("echo $((6*7))");
        assert!(controller.read_until("42\r\n", 0).await);
        assert!(watcher.read_until("42\r\n", 0).await);
        assert_eq!(controller.viewer.session().info().viewers, 2);

        // a newer controller replaces the older one
        let take_over = attach_request("t4", "u-alice", TerminalMode::Control, None);
        let _newer = terminals.attach(&take_over).unwrap();
        assert!(matches!(
            controller
                .viewer
                .input(controller.typed, Bytes::from_static(b"x")),
            Err(TerminalError::Replaced)
        ));
        assert_eq!(
            TerminalError::Replaced.to_string(),
            "another viewer took control of this session"
        );

        let more: Vec<Viewer> = (1..MAX_WATCHERS)
            .map(|_| terminals.attach(&watch).unwrap())
            .collect();
        assert!(matches!(
            terminals.attach(&watch),
            Err(TerminalError::TooManyWatchers(_))
        ));
        assert_eq!(
            more.len() + 2,
            controller.viewer.session().info().viewers as usize
        );
    }

    #[tokio::test]
    async fn kill_hangs_up_every_process_of_the_session() {
        let terminals = Terminals::new(
            limits(),
            TerminalAccounts::default(),
            ContainerShells::default(),
        );
        let mut client = Client::new(terminals.open(&open_request("t5")).unwrap());
        client.type_line("sleep 1000 & echo job=$!.");
        assert!(client.read_until("\njob=", 0).await);
        assert!(client.read_until(".", 0).await);
        let text = client.text();
        let job: i32 = text[text.rfind("job=").unwrap() + 4..text.rfind('.').unwrap()]
            .parse()
            .unwrap();

        assert!(matches!(
            terminals.kill("t5", "u-bob"),
            Err(TerminalError::NotOwner(_))
        ));
        terminals.kill("t5", "u-alice").unwrap();
        let exit = client.read_to_exit().await;
        assert!(exit.signal == 1 || exit.code == 129, "{exit:?}");
        tokio::time::timeout(STEP, async {
            while kill(Pid::from_raw(job), None).is_ok() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the background job was hung up too");
        assert!(terminals.list("").is_empty());
        terminals.reap();
        assert!(matches!(
            terminals.attach(&attach_request("t5", "u-alice", TerminalMode::Watch, None)),
            Err(TerminalError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn an_exited_session_waits_for_its_viewer_until_released() {
        let terminals = Terminals::new(
            limits(),
            TerminalAccounts::default(),
            ContainerShells::default(),
        );
        let mut client = Client::new(terminals.open(&open_request("t6")).unwrap());
        client.type_line("exit 7");
        assert_eq!(client.read_to_exit().await.code, 7);
        client.viewer.detach(false);
        terminals.reap();
        assert!(
            terminals.list("u-alice").is_empty(),
            "only running sessions are listed"
        );

        let request = attach_request("t6", "u-alice", TerminalMode::Control, Some(0));
        let mut again = Client::new(terminals.attach(&request).unwrap());
        assert_eq!(again.read_to_exit().await.code, 7);
        again.viewer.detach(true);
        terminals.reap();
        assert!(matches!(
            terminals.attach(&request),
            Err(TerminalError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn sessions_nobody_views_are_killed_after_the_idle_timeout() {
        let limits = TerminalLimits {
            idle_timeout: Duration::from_millis(200),
            max_sessions: 2,
            ..limits()
        };
        let terminals = Terminals::new(
            limits,
            TerminalAccounts::default(),
            ContainerShells::default(),
        );
        let viewed = terminals.open(&open_request("viewed")).unwrap();
        let idle = terminals.open(&open_request("idle")).unwrap();
        assert!(matches!(
            terminals.open(&open_request("third")),
            Err(TerminalError::TooManySessions(2))
        ));
        assert!(matches!(
            terminals.open(&open_request("idle")),
            Err(TerminalError::Duplicate(_))
        ));
        let listed: Vec<String> = terminals
            .list("u-alice")
            .into_iter()
            .map(|info| info.session_id)
            .collect();
        assert_eq!(listed.len(), 2);
        assert!(terminals.list("u-bob").is_empty());

        idle.detach(false);
        tokio::time::sleep(Duration::from_millis(300)).await;
        terminals.reap();
        let listed: Vec<String> = terminals
            .list("")
            .into_iter()
            .map(|info| info.session_id)
            .collect();
        assert_eq!(listed, ["viewed"]);
        let mut exit = idle.session().exit();
        tokio::time::timeout(STEP, exit.wait_for(Option::is_some))
            .await
            .expect("the idle session's shell was killed")
            .unwrap();
        assert!(viewed.session().exit().borrow().is_none());
    }

    #[tokio::test]
    async fn other_accounts_need_root_and_an_existing_account() {
        let missing = TerminalAccounts {
            user: Some("no-such-account-zp".into()),
            ..TerminalAccounts::default()
        };
        let terminals = Terminals::new(limits(), missing, ContainerShells::default());
        let Err(e) = terminals.open(&open_request("t7")) else {
            panic!("a missing account was accepted");
        };
        assert_eq!(
            e.to_string(),
            "local account no-such-account-zp (from [terminal] in bridge.toml) does not exist on \
             this host"
        );

        // `nobody` exists everywhere and has no login shell: runuser starts nologin
        let nobody = TerminalAccounts {
            users: [("alice".to_string(), "nobody".to_string())].into(),
            ..TerminalAccounts::default()
        };
        let terminals = Terminals::new(limits(), nobody, ContainerShells::default());
        match terminals.open(&open_request("t8")) {
            Ok(viewer) => {
                assert!(geteuid().is_root());
                assert_eq!(viewer.session().info().local_user, "nobody");
                let mut client = Client::new(viewer);
                assert_ne!(client.read_to_exit().await.code, 0);
                assert!(client.text().contains("not available"), "{}", client.text());
            }
            Err(e) => {
                assert!(!geteuid().is_root(), "{e}");
                assert!(e.to_string().contains("the daemon is not root"), "{e}");
            }
        }
    }

    #[test]
    fn the_session_id_is_read_past_the_command_name() {
        assert_eq!(session_of("42 (a) b) c) S 1 42 40 0 -1"), Some(40));
        assert_eq!(session_of("garbage"), None);
    }
}
