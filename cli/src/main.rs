//! `zpanel`: the operator command line. Every failure prints one line on stderr and exits
//! non-zero; `exec` and `shell` exit with the remote command's or shell's code.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{ArgGroup, Args, Parser, Subcommand};
use zpanel_cli::api_tokens::{self, NewApiToken};
use zpanel_cli::audit::{self, AuditFormat, AuditQuery};
use zpanel_cli::client::{self, call_failed, status_message};
use zpanel_cli::config::Settings;
use zpanel_cli::display::rfc3339;
use zpanel_cli::docker::containers::{self, Launch};
use zpanel_cli::docker::stats::{self, StatsOptions};
use zpanel_cli::docker::{engine, images, logs, parse};
use zpanel_cli::exec::{ExecOptions, exec};
use zpanel_cli::files;
use zpanel_cli::files::copy::{CopyOptions, cp};
use zpanel_cli::files::download::cat;
use zpanel_cli::files::edit::{EditOptions, edit};
use zpanel_cli::files::location::Remote;
use zpanel_cli::files::ls::{LsOptions, ls};
use zpanel_cli::metrics::{self, MetricsOptions, step_seconds};
use zpanel_cli::shell::{ContainerShell, ShellOptions, shell};
use zpanel_cli::top::{self, TopOptions};
use zpanel_cli::users::{self, NewUser};
use zpanel_cli::{alerts, hosts, sessions, upgrade, workspaces};
use zpanel_proto::{
    ContainerAction, ContainerSpec, ContainerVerb, CreateJoinTokenRequest, DockerLogs,
    NetworkCreate, PortBinding, ProcessSort, PruneKind, Quotas, VolumeCreate, WhoAmIRequest,
};

#[derive(Debug, Parser)]
#[command(
    name = "zpanel",
    version,
    about = "Operate a Zpanel fleet from the shell"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Save the control plane's URL and an API token (checked before saving).
    Login {
        #[arg(long)]
        server: String,
        #[arg(
            long,
            env = "ZPANEL_TOKEN",
            hide_env_values = true,
            required_unless_present = "token_file",
            conflicts_with = "token_file"
        )]
        token: Option<String>,
        /// Read the API token from this file (`-`: stdin) instead of the command line.
        #[arg(long, env = "ZPANEL_TOKEN_FILE")]
        token_file: Option<std::path::PathBuf>,
        /// Trust the control plane's internal CA with this pin (sha256:<hex>).
        #[arg(long)]
        ca_pin: Option<String>,
    },
    /// List hosts, or manage one.
    Hosts(HostsArgs),
    /// Join tokens for enrolling hosts.
    Tokens {
        #[command(subcommand)]
        action: TokensAction,
    },
    /// Run a command on a host: zpanel exec HOST -- CMD [ARG...]
    Exec {
        host: String,
        /// Kill the remote process group after this long (e.g. 30s, 5m).
        #[arg(long, value_parser = humantime::parse_duration)]
        timeout: Option<Duration>,
        /// Do not forward stdin (the command reads end-of-file).
        #[arg(short = 'n', long)]
        no_stdin: bool,
        /// Keep trying to re-attach this long when the connection drops.
        #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
        resume_for: Duration,
        #[arg(last = true, required = true, num_args = 1..)]
        command: Vec<String>,
    },
    /// Open an interactive shell on a host, or attach to one of its sessions. Type ~. after
    /// Enter to detach (the session keeps running), ~? for the other escapes.
    Shell {
        host: String,
        /// Attach to this session (see `zpanel sessions HOST`) instead of opening a new one.
        #[arg(long, value_name = "ID")]
        attach: Option<String>,
        /// Watch the session read-only.
        #[arg(long, requires = "attach")]
        watch: bool,
        /// Keep trying to re-attach this long when the connection drops.
        #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
        resume_for: Duration,
    },
    /// List a host's terminal sessions, or end one.
    Sessions(SessionsArgs),
    /// List a directory on a host: zpanel ls HOST:PATH (a relative PATH is under the host's
    /// first root).
    Ls {
        #[arg(value_name = "HOST:PATH")]
        path: String,
        /// Long format: mode, owner, group, size, modification time (UTC), symlink targets.
        #[arg(short = 'l', long)]
        long: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Include names starting with a dot.
        #[arg(short = 'a', long)]
        all: bool,
    },
    /// Print a file on a host: zpanel cat HOST:PATH
    Cat {
        #[arg(value_name = "HOST:PATH")]
        path: String,
        /// Keep trying to resume this long when the connection drops.
        #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
        resume_for: Duration,
    },
    /// Copy files: zpanel cp SRC DST, with HOST:PATH on either side or both (./a:b is a local
    /// path with a colon).
    Cp {
        /// Copy directories and everything in them.
        #[arg(short = 'r', long)]
        recursive: bool,
        #[arg(value_name = "SRC")]
        source: String,
        #[arg(value_name = "DST")]
        destination: String,
        /// Keep trying to resume this long when the connection drops.
        #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
        resume_for: Duration,
    },
    /// Edit a file on a host in $VISUAL or $EDITOR (default vi); it is saved back unless it
    /// changed on the host meanwhile.
    Edit {
        #[arg(value_name = "HOST:PATH")]
        path: String,
        /// Start from this local copy (the one kept after a conflict) and save it.
        #[arg(long, value_name = "FILE")]
        from: Option<std::path::PathBuf>,
        /// Save even if the host's file changed since it was read.
        #[arg(long)]
        force: bool,
        /// Keep trying to resume this long when the connection drops.
        #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
        resume_for: Duration,
    },
    /// Delete a file (or with -r a directory and everything in it) on a host.
    Rm {
        /// Delete directories and everything in them.
        #[arg(short = 'r', long)]
        recursive: bool,
        #[arg(value_name = "HOST:PATH")]
        path: String,
    },
    /// Rename or move a file on a host: zpanel mv HOST:SRC HOST:DST (into DST when it is a
    /// directory).
    Mv {
        /// Refuse to replace an existing DST.
        #[arg(short = 'n', long)]
        no_clobber: bool,
        #[arg(value_name = "HOST:SRC")]
        source: String,
        #[arg(value_name = "HOST:DST")]
        destination: String,
    },
    /// Make a directory on a host.
    Mkdir {
        /// Make missing parents too; an existing directory is fine.
        #[arg(short = 'p', long)]
        parents: bool,
        #[arg(value_name = "HOST:PATH")]
        path: String,
    },
    /// Users and their roles (admins).
    Users {
        #[command(subcommand)]
        action: UsersAction,
    },
    /// API tokens: create one for yourself (or, as an admin, for a user), list, revoke.
    ApiTokens {
        #[command(subcommand)]
        action: ApiTokensAction,
    },
    /// Workspaces: their hosts, members and quotas.
    Workspaces {
        #[command(subcommand)]
        action: WorkspacesAction,
    },
    /// Read the audit log (oldest first, the newest at the bottom), export it, or verify its
    /// hash chain.
    Audit(AuditArgs),
    /// Docker on a host: zpanel docker HOST ps | run | logs -f | stats | exec -it | images |
    /// pull | volumes | networks | ...
    Docker(DockerArgs),
    /// Alert rules, their history and notification channels: zpanel alerts list | create |
    /// delete | history | channels list|add|remove|test
    Alerts(alerts::AlertsArgs),
    /// A host's metrics over a range: the last value, minimum, average and maximum of each.
    Metrics {
        host: String,
        /// Start: a duration before now (5m, 24h, 7d), Unix seconds or RFC 3339.
        #[arg(long, default_value = "1h")]
        since: String,
        /// End, like --since (default: now).
        #[arg(long, value_name = "TIME")]
        until: Option<String>,
        /// Time per point (default: about 300 points over the range).
        #[arg(long, value_parser = humantime::parse_duration)]
        step: Option<Duration>,
        /// Only this metric and the ones below it (cpu, memory, disk.percent, ...); repeatable.
        #[arg(long = "metric", value_name = "NAME")]
        metrics: Vec<String>,
        /// Print the answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// A host's CPU, load, memory and top processes, redrawn until Ctrl-C or q.
    Top {
        host: String,
        #[arg(long, value_enum, default_value = "cpu")]
        sort: TopSort,
        /// How many processes to show (1 to 500).
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=500))]
        limit: u32,
        /// Time between redraws.
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        interval: Duration,
        /// Print once and exit (also when stdout is not a terminal).
        #[arg(long)]
        once: bool,
    },
}

/// What `top` sorts processes by.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum TopSort {
    Cpu,
    Memory,
}

#[derive(Debug, Args)]
struct DockerArgs {
    /// The host (name or id).
    host: String,
    #[command(subcommand)]
    command: DockerCommand,
}

#[derive(Debug, Subcommand)]
enum DockerCommand {
    /// List the running containers (all of them with -a).
    Ps {
        #[arg(short = 'a', long)]
        all: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a container's inspect document (JSON).
    Inspect { container: String },
    /// Create and start a container; without -d, follow its logs until it ends and exit with
    /// its code.
    Run {
        /// Print its id and leave it running.
        #[arg(short = 'd', long)]
        detach: bool,
        #[command(flatten)]
        spec: SpecArgs,
    },
    /// Create a container without starting it; prints its id.
    Create {
        #[command(flatten)]
        spec: SpecArgs,
    },
    /// Start containers.
    Start {
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Stop containers: SIGTERM, then SIGKILL after the grace time.
    Stop {
        #[command(flatten)]
        grace: GraceArgs,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Restart containers.
    Restart {
        #[command(flatten)]
        grace: GraceArgs,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Send containers a signal (SIGKILL unless -s says another).
    Kill {
        /// The signal's name or number (KILL, SIGHUP, 15).
        #[arg(short = 's', long)]
        signal: Option<String>,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Pause every process in containers.
    Pause {
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Resume paused containers.
    Unpause {
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Remove containers.
    Rm {
        /// Remove running containers too (killing them).
        #[arg(short = 'f', long)]
        force: bool,
        /// Remove their anonymous volumes too.
        #[arg(short = 'v', long)]
        volumes: bool,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Rename a container.
    Rename { container: String, name: String },
    /// Print a container's logs: its stdout on stdout, its stderr on stderr.
    Logs {
        /// Keep printing what it writes until it stops.
        #[arg(short = 'f', long)]
        follow: bool,
        /// Only the last N lines.
        #[arg(long, value_name = "N")]
        tail: Option<u32>,
        /// Start each line with the engine's RFC 3339 time.
        #[arg(short = 't', long)]
        timestamps: bool,
        /// Only lines since a duration ago (10m, 2h), a unix time or an RFC 3339 time.
        #[arg(long, value_name = "WHEN", value_parser = parse::since)]
        since: Option<i64>,
        container: String,
    },
    /// CPU, memory, network and block I/O of containers (the running ones unless named),
    /// refreshed every second until Ctrl-C.
    Stats {
        /// One sample, then exit.
        #[arg(long)]
        no_stream: bool,
        /// Print JSON (one line per sample while streaming).
        #[arg(long)]
        json: bool,
        containers: Vec<String>,
    },
    /// List a container's processes.
    Top { container: String },
    /// Run a command (default sh) in a container in a terminal session: raw mode, resizes,
    /// ~. to detach (it keeps running; zpanel shell HOST --attach ID), its exit code.
    Exec {
        /// Accepted as docker has it: the command always gets stdin.
        #[arg(short = 'i', long)]
        interactive: bool,
        /// Accepted as docker has it: the command always runs in a terminal.
        #[arg(short = 't', long)]
        tty: bool,
        /// The user in the container (default: the image's).
        #[arg(short = 'u', long)]
        user: Option<String>,
        /// Keep trying to re-attach this long when the connection drops.
        #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
        resume_for: Duration,
        container: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// List images (with intermediate ones with -a).
    Images {
        #[arg(short = 'a', long)]
        all: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Pull an image from its registry; progress on stderr, then its id.
    Pull { image: String },
    /// Make an image from a root file system tarball (- for stdin); prints its id.
    Import {
        #[arg(value_name = "FILE|-")]
        file: std::path::PathBuf,
        #[arg(value_name = "REPO[:TAG]")]
        image: String,
    },
    /// Remove images.
    Rmi {
        /// Remove them even if tagged more than once or used by a stopped container.
        #[arg(short = 'f', long)]
        force: bool,
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Remove what is unused: stopped containers, dangling images (every unused one with
    /// -a), unused volumes or networks.
    Prune {
        what: PruneWhat,
        /// Images: every unused image, not only dangling ones.
        #[arg(short = 'a', long)]
        all: bool,
    },
    /// List volumes, or create or remove one.
    Volumes(VolumesArgs),
    /// List networks, or create or remove one.
    Networks(NetworksArgs),
    /// The engine: version, system, counts.
    Info {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// What `create` and `run` make, with docker's flags.
#[derive(Debug, Args)]
struct SpecArgs {
    /// The container's name (default: one the engine picks).
    #[arg(long)]
    name: Option<String>,
    /// An environment variable: KEY=VALUE, or KEY for its value here.
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE", value_parser = parse::env)]
    env: Vec<String>,
    /// Publish a port: [IP:]HOST:CONTAINER[/tcp|udp|sctp], or CONTAINER for any host port.
    #[arg(short = 'p', long = "publish", value_name = "SPEC", value_parser = parse::port)]
    publish: Vec<PortBinding>,
    /// Mount a volume or a host path: SOURCE:TARGET[:ro].
    #[arg(short = 'v', long = "volume", value_name = "SRC:DST[:ro]")]
    volume: Vec<String>,
    /// Restart policy: no, always, unless-stopped, on-failure or on-failure:N.
    #[arg(long, value_name = "POLICY", value_parser = parse::restart)]
    restart: Option<String>,
    /// Memory limit: 64m, 1g, ... (at least 6m).
    #[arg(short = 'm', long, value_name = "SIZE", value_parser = parse::memory)]
    memory: Option<u64>,
    /// CPU limit in CPUs: 0.5, 1.5, ...
    #[arg(long, value_name = "N", value_parser = parse::cpus)]
    cpus: Option<f64>,
    /// A label: KEY=VALUE.
    #[arg(short = 'l', long = "label", value_name = "KEY=VALUE", value_parser = parse::label)]
    label: Vec<(String, String)>,
    /// The working directory inside (default: the image's).
    #[arg(short = 'w', long, value_name = "DIR")]
    workdir: Option<String>,
    /// The user inside (default: the image's).
    #[arg(short = 'u', long)]
    user: Option<String>,
    /// The network to connect to (default: the engine's).
    #[arg(long)]
    network: Option<String>,
    /// Give the main process a terminal.
    #[arg(short = 't', long)]
    tty: bool,
    /// Keep the main process's stdin open (with -d; then zpanel docker HOST exec -it).
    #[arg(short = 'i', long)]
    interactive: bool,
    /// The image: NAME[:TAG] or an id (pull it first; run does not pull).
    image: String,
    /// The command (default: the image's).
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    command: Vec<String>,
}

impl From<SpecArgs> for ContainerSpec {
    fn from(a: SpecArgs) -> Self {
        ContainerSpec {
            image: a.image,
            name: a.name.unwrap_or_default(),
            command: a.command,
            env: a.env,
            ports: a.publish,
            volumes: a.volume,
            restart: a.restart.unwrap_or_default(),
            memory_bytes: a.memory.unwrap_or(0),
            cpus: a.cpus.unwrap_or(0.0),
            labels: a.label.into_iter().collect(),
            start: false,
            tty: a.tty,
            interactive: a.interactive,
            workdir: a.workdir.unwrap_or_default(),
            user: a.user.unwrap_or_default(),
            network: a.network.unwrap_or_default(),
        }
    }
}

#[derive(Debug, Args)]
struct GraceArgs {
    /// Seconds to wait before killing (default: the engine's, 10).
    #[arg(short = 't', long, value_name = "SECONDS")]
    time: Option<u32>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum PruneWhat {
    Containers,
    Images,
    Volumes,
    Networks,
}

impl From<PruneWhat> for PruneKind {
    fn from(what: PruneWhat) -> Self {
        match what {
            PruneWhat::Containers => PruneKind::Containers,
            PruneWhat::Images => PruneKind::Images,
            PruneWhat::Volumes => PruneKind::Volumes,
            PruneWhat::Networks => PruneKind::Networks,
        }
    }
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
struct VolumesArgs {
    #[command(subcommand)]
    action: Option<VolumesAction>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum VolumesAction {
    /// List volumes.
    Ls {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Create a volume; prints its name.
    Create {
        name: String,
        /// The volume driver (default: local).
        #[arg(long, value_name = "D")]
        driver: Option<String>,
    },
    /// Remove volumes.
    Rm {
        /// Remove them even if in use.
        #[arg(short = 'f', long)]
        force: bool,
        #[arg(required = true)]
        names: Vec<String>,
    },
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
struct NetworksArgs {
    #[command(subcommand)]
    action: Option<NetworksAction>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum NetworksAction {
    /// List networks.
    Ls {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Create a network; prints its id.
    Create {
        name: String,
        /// The network driver (default: bridge).
        #[arg(long, value_name = "D")]
        driver: Option<String>,
        /// No route to the outside.
        #[arg(long)]
        internal: bool,
    },
    /// Remove networks.
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
enum UsersAction {
    /// Add a user with a role: admin (global), or operator, developer or viewer in a workspace.
    Add {
        name: String,
        #[arg(long)]
        role: String,
        /// The workspace of a non-admin role (default: "default").
        #[arg(long, value_name = "W")]
        workspace: Option<String>,
        /// Read the password from the first line of stdin; without it the user signs in with
        /// API tokens only.
        #[arg(long)]
        password_stdin: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List users: roles, whether they have a password and TOTP.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove a user with their API tokens and browser sessions.
    Remove { name: String },
    /// Set a user's role: admin makes a global admin; another role is set in the workspace.
    SetRole {
        name: String,
        role: String,
        /// The workspace of a non-admin role (default: "default").
        #[arg(long, value_name = "W")]
        workspace: Option<String>,
    },
    /// Turn off a user's TOTP second factor (a lost phone).
    ResetTotp { name: String },
}

#[derive(Debug, Subcommand)]
enum ApiTokensAction {
    /// Create an API token; it is printed once, alone on stdout.
    Create {
        /// Whose token (admins; default: yours).
        #[arg(long, value_name = "U")]
        user: Option<String>,
        /// The one workspace it works in (default: the user's only one).
        #[arg(long, value_name = "W")]
        workspace: Option<String>,
        /// The role it acts with, at most the user's (default: the user's role there).
        #[arg(long, value_name = "R")]
        role: Option<String>,
        /// How long it lives, e.g. 12h, 30d (default: 90d).
        #[arg(long, value_name = "D", value_parser = api_tokens::parse_ttl)]
        ttl: Option<Duration>,
        /// A name to recognise it by in the list.
        #[arg(long, value_name = "N")]
        name: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List your API tokens (everyone's with --all, admins).
    List {
        #[arg(long)]
        all: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke an API token: it fails from now on.
    Revoke { id: String },
}

#[derive(Debug, Subcommand)]
enum WorkspacesAction {
    /// Create a workspace (quotas left out are unlimited).
    Create {
        name: String,
        #[command(flatten)]
        quotas: QuotaArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the workspaces you have a role in (all of them for admins).
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Change a workspace's quotas; the ones left out keep their value.
    #[command(group(
        ArgGroup::new("change")
            .args(["max_hosts", "max_terminals", "max_api_tokens"])
            .required(true)
            .multiple(true)
    ))]
    SetQuota {
        workspace: String,
        #[command(flatten)]
        quotas: QuotaArgs,
    },
    /// Move a host into a workspace.
    AddHost { workspace: String, host: String },
    /// Make a user a member of a workspace (or change their role there).
    AddMember {
        workspace: String,
        user: String,
        /// operator, developer or viewer.
        #[arg(long)]
        role: String,
    },
    /// Remove a user from a workspace.
    RemoveMember { workspace: String, user: String },
}

#[derive(Debug, Args)]
struct QuotaArgs {
    /// Most hosts in the workspace (0: unlimited).
    #[arg(long, value_name = "N")]
    max_hosts: Option<u64>,
    /// Most terminal sessions open at once on its hosts (0: unlimited).
    #[arg(long, value_name = "N")]
    max_terminals: Option<u64>,
    /// Most live API tokens working in it (0: unlimited).
    #[arg(long, value_name = "N")]
    max_api_tokens: Option<u64>,
}

impl From<QuotaArgs> for Quotas {
    fn from(q: QuotaArgs) -> Self {
        Quotas {
            max_hosts: q.max_hosts,
            max_terminals: q.max_terminals,
            max_api_tokens: q.max_api_tokens,
        }
    }
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
struct AuditArgs {
    #[command(subcommand)]
    action: Option<AuditAction>,
    #[command(flatten)]
    filters: AuditFilters,
    /// Print a JSON array of the entries, with all their fields.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum AuditAction {
    /// Print every matching entry as JSON lines, oldest first.
    Export(AuditFilters),
    /// Check the whole hash chain: exits 1 naming the first entry that does not verify.
    Verify,
}

#[derive(Debug, Args)]
struct AuditFilters {
    /// Entries about this host (name or id).
    #[arg(long, value_name = "H")]
    host: Option<String>,
    /// Entries by this user.
    #[arg(long, value_name = "U")]
    user: Option<String>,
    /// This action or its sub-actions ("file" matches "file.write").
    #[arg(long, value_name = "A")]
    action: Option<String>,
    /// Since a duration ago (1h, 7d) or an RFC 3339 time.
    #[arg(long, value_name = "D", value_parser = audit::parse_since)]
    since: Option<i64>,
    /// The newest N matching entries (default: 100; for export, and with 0, every match).
    #[arg(long, value_name = "N")]
    limit: Option<u32>,
}

impl AuditFilters {
    fn query(self, default_limit: u32) -> AuditQuery {
        AuditQuery {
            host: self.host.unwrap_or_default(),
            user: self.user.unwrap_or_default(),
            action: self.action.unwrap_or_default(),
            since: self.since.unwrap_or(0),
            limit: self.limit.unwrap_or(default_limit),
        }
    }
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
struct SessionsArgs {
    #[command(subcommand)]
    action: Option<SessionsAction>,
    /// The host (name or id).
    #[arg(required = true)]
    host: Option<String>,
    /// Every user's sessions, not only yours (admins).
    #[arg(long)]
    all: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum SessionsAction {
    /// End a session: its shell gets SIGHUP, whoever is attached sees it exit.
    Kill { host: String, id: String },
}

#[derive(Debug, Args)]
struct HostsArgs {
    #[command(subcommand)]
    action: Option<HostsAction>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum HostsAction {
    /// Delete a host: its session ends and its certificate is refused from now on.
    Rm { host: String },
    /// Revoke a host (admins): its session ends at once and its certificate is refused from
    /// now on; it stays listed, as revoked, until `zpanel hosts rm`.
    Revoke { host: String },
    /// Send the control plane's daemon binary to hosts (admins): each host checks it, swaps
    /// it in and restarts under systemd, and rolls back when the new daemon has no session
    /// in time.
    Upgrade {
        /// Host names or ids.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        hosts: Vec<String>,
        /// Every host you may upgrade (hosts offline or not under systemd are skipped).
        #[arg(long)]
        all: bool,
        /// Roll a host back when the new daemon has no session this long after the swap
        /// (default 2m).
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        rollback_after: Option<Duration>,
        /// Print each progress message as a JSON line.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum TokensAction {
    /// Create a join token and print the install command.
    Create {
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
        #[arg(long, default_value_t = 1)]
        uses: u32,
        /// The workspace the hosts join (default: "default").
        #[arg(long, value_name = "W")]
        workspace: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli: Cli = zpanel_shared::process::parse_args("zpanel", 2);
    let runtime = zpanel_shared::process::runtime("zpanel", Some(2));
    let code = match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("zpanel: {e:#}");
            if cfg!(unix) { 255 } else { 1 }
        }
    };
    // Exit without waiting for a blocked read of the terminal to finish.
    std::process::exit(code)
}

async fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Login {
            server,
            token,
            token_file,
            ca_pin,
        } => {
            let token = zpanel_shared::process::read_secret(token, token_file.as_deref())
                .context("cannot read the API token")?;
            let ca_pin = ca_pin
                .map(|p| zpanel_shared::tls::parse_pin(&p))
                .transpose()?;
            let settings = Settings {
                server: server.trim_end_matches('/').to_string(),
                token,
                ca_pin,
            };
            let mut client = client::connect(&settings).await?;
            let me = client
                .who_am_i(WhoAmIRequest {})
                .await
                .map_err(|s| anyhow::anyhow!("login failed: {}", status_message(&s)))?
                .into_inner();
            let path = settings.save()?;
            println!(
                "logged in to {} as {} ({}); settings in {}",
                settings.server,
                me.user,
                me.role,
                path.display()
            );
        }
        Command::Hosts(HostsArgs { action: None, json }) => {
            hosts::list(&Settings::load()?, json).await?;
        }
        Command::Hosts(HostsArgs {
            action: Some(HostsAction::Rm { host }),
            ..
        }) => hosts::delete(&Settings::load()?, host).await?,
        Command::Hosts(HostsArgs {
            action: Some(HostsAction::Revoke { host }),
            ..
        }) => hosts::revoke(&Settings::load()?, host).await?,
        Command::Hosts(HostsArgs {
            action:
                Some(HostsAction::Upgrade {
                    hosts,
                    all,
                    rollback_after,
                    json,
                }),
            json: json_before,
        }) => {
            let settings = Settings::load()?;
            upgrade::upgrade(&settings, hosts, all, rollback_after, json || json_before).await?
        }
        Command::Tokens {
            action:
                TokensAction::Create {
                    ttl,
                    uses,
                    workspace,
                    json,
                },
        } => {
            let settings = Settings::load()?;
            let mut client = client::connect(&settings).await?;
            let created = client
                .create_join_token(CreateJoinTokenRequest {
                    ttl_seconds: ttl.as_secs(),
                    uses,
                    workspace: workspace.clone().unwrap_or_default(),
                })
                .await
                .map_err(call_failed)?
                .into_inner();
            if json {
                let out = serde_json::json!({
                    "token": created.token,
                    "expires_at": rfc3339(created.expires_at),
                    "uses": created.uses,
                    "ca_pin": created.ca_pin,
                    "install_command": created.install_command,
                });
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                println!("token:      {}", created.token);
                println!(
                    "expires at: {} ({} use{})",
                    rfc3339(created.expires_at),
                    created.uses,
                    if created.uses == 1 { "" } else { "s" }
                );
                println!("CA pin:     {}", created.ca_pin);
                if let Some(workspace) = workspace {
                    println!("workspace:  {workspace}");
                }
                println!(
                    "\nRun this on the host to add it:\n\n  {}",
                    created.install_command
                );
            }
        }
        Command::Exec {
            host,
            timeout,
            no_stdin,
            resume_for,
            command,
        } => {
            let settings = Settings::load()?;
            let options = ExecOptions {
                host,
                argv: command,
                timeout,
                forward_stdin: !no_stdin,
                resume_for,
            };
            return exec(&settings, options).await;
        }
        Command::Shell {
            host,
            attach,
            watch,
            resume_for,
        } => {
            let settings = Settings::load()?;
            let options = ShellOptions {
                host,
                attach,
                watch,
                resume_for,
                container: None,
            };
            return shell(&settings, options).await;
        }
        Command::Sessions(SessionsArgs {
            action: Some(SessionsAction::Kill { host, id }),
            ..
        }) => sessions::kill(&Settings::load()?, host, id).await?,
        Command::Sessions(SessionsArgs {
            action: None,
            host,
            all,
            json,
        }) => {
            let host = host.context("name the host: zpanel sessions HOST")?;
            sessions::list(&Settings::load()?, host, all, json).await?;
        }
        Command::Ls {
            path,
            long,
            json,
            all,
        } => {
            let options = LsOptions { long, json, all };
            return ls(&Settings::load()?, &Remote::parse(&path)?, &options).await;
        }
        Command::Cat { path, resume_for } => {
            let (settings, remote) = (Settings::load()?, Remote::parse(&path)?);
            return files::interruptible(cat(&settings, &remote, resume_for)).await;
        }
        Command::Cp {
            recursive,
            source,
            destination,
            resume_for,
        } => {
            let options = CopyOptions {
                source,
                destination,
                recursive,
                resume_for,
            };
            let settings = Settings::load()?;
            let copied = async { cp(&settings, &options).await.map(|()| 0) };
            return files::interruptible(copied).await;
        }
        Command::Edit {
            path,
            from,
            force,
            resume_for,
        } => {
            let options = EditOptions {
                from,
                force,
                resume_for,
            };
            return edit(&Settings::load()?, &Remote::parse(&path)?, &options).await;
        }
        Command::Rm { recursive, path } => {
            files::rm(&Settings::load()?, &Remote::parse(&path)?, recursive).await?;
        }
        Command::Mv {
            no_clobber,
            source,
            destination,
        } => {
            let (from, to) = (Remote::parse(&source)?, Remote::parse(&destination)?);
            files::mv(&Settings::load()?, &from, &to, !no_clobber).await?;
        }
        Command::Mkdir { parents, path } => {
            files::mkdir(&Settings::load()?, &Remote::parse(&path)?, parents).await?;
        }
        Command::Users { action } => users_command(&Settings::load()?, action).await?,
        Command::ApiTokens { action } => api_tokens_command(&Settings::load()?, action).await?,
        Command::Workspaces { action } => workspaces_command(&Settings::load()?, action).await?,
        Command::Audit(AuditArgs {
            action: Some(AuditAction::Verify),
            ..
        }) => return audit::verify(&Settings::load()?).await,
        Command::Audit(AuditArgs {
            action: Some(AuditAction::Export(filters)),
            ..
        }) => {
            let query = filters.query(0);
            audit::list(&Settings::load()?, query, AuditFormat::JsonLines).await?;
        }
        Command::Audit(AuditArgs {
            action: None,
            filters,
            json,
        }) => {
            let format = if json {
                AuditFormat::Json
            } else {
                AuditFormat::Table
            };
            audit::list(&Settings::load()?, filters.query(100), format).await?;
        }
        Command::Docker(DockerArgs { host, command }) => {
            return docker_command(&Settings::load()?, &host, command).await;
        }
        Command::Alerts(args) => alerts::run(&Settings::load()?, args).await?,
        Command::Metrics {
            host,
            since,
            until,
            step,
            metrics,
            json,
        } => {
            // The times `docker logs --since` takes: unix seconds, a duration back, RFC 3339.
            let now = zpanel_shared::unix_now();
            let time = |text: &str| parse::since_at(text, now).map_err(anyhow::Error::msg);
            let options = MetricsOptions {
                since: time(&since)?,
                until: until.as_deref().map(time).transpose()?.unwrap_or(0),
                step: step_seconds(step)?,
                metrics,
                json,
            };
            metrics::metrics(&Settings::load()?, &host, options).await?;
        }
        Command::Top {
            host,
            sort,
            limit,
            interval,
            once,
        } => {
            let options = TopOptions {
                sort: match sort {
                    TopSort::Cpu => ProcessSort::Cpu,
                    TopSort::Memory => ProcessSort::Memory,
                },
                limit,
                interval: interval.max(Duration::from_millis(500)),
                once,
            };
            top::top(&Settings::load()?, &host, options).await?;
        }
    }
    Ok(0)
}

async fn users_command(settings: &Settings, action: UsersAction) -> anyhow::Result<()> {
    match action {
        UsersAction::Add {
            name,
            role,
            workspace,
            password_stdin,
            json,
        } => {
            let new = NewUser {
                name,
                role,
                workspace,
                password_stdin,
                json,
            };
            users::add(settings, new).await
        }
        UsersAction::List { json } => users::list(settings, json).await,
        UsersAction::Remove { name } => users::remove(settings, name).await,
        UsersAction::SetRole {
            name,
            role,
            workspace,
        } => users::set_role(settings, name, role, workspace).await,
        UsersAction::ResetTotp { name } => users::reset_totp(settings, name).await,
    }
}

async fn api_tokens_command(settings: &Settings, action: ApiTokensAction) -> anyhow::Result<()> {
    match action {
        ApiTokensAction::Create {
            user,
            workspace,
            role,
            ttl,
            name,
            json,
        } => {
            let new = NewApiToken {
                user,
                workspace,
                role,
                ttl,
                name,
                json,
            };
            api_tokens::create(settings, new).await
        }
        ApiTokensAction::List { all, json } => api_tokens::list(settings, all, json).await,
        ApiTokensAction::Revoke { id } => api_tokens::revoke(settings, id).await,
    }
}

async fn workspaces_command(settings: &Settings, action: WorkspacesAction) -> anyhow::Result<()> {
    match action {
        WorkspacesAction::Create { name, quotas, json } => {
            workspaces::create(settings, name, quotas.into(), json).await
        }
        WorkspacesAction::List { json } => workspaces::list(settings, json).await,
        WorkspacesAction::SetQuota { workspace, quotas } => {
            workspaces::set_quota(settings, workspace, quotas.into()).await
        }
        WorkspacesAction::AddHost { workspace, host } => {
            workspaces::add_host(settings, workspace, host).await
        }
        WorkspacesAction::AddMember {
            workspace,
            user,
            role,
        } => workspaces::add_member(settings, workspace, user, role).await,
        WorkspacesAction::RemoveMember { workspace, user } => {
            workspaces::remove_member(settings, workspace, user).await
        }
    }
}

/// `zpanel docker HOST ...`: the exit code of `zpanel`.
async fn docker_command(
    settings: &Settings,
    host: &str,
    command: DockerCommand,
) -> anyhow::Result<i32> {
    let act = |verb: ContainerVerb| ContainerAction {
        verb: verb as i32,
        ..ContainerAction::default()
    };
    let timed = |verb: ContainerVerb, grace: GraceArgs| ContainerAction {
        timeout_seconds: grace.time,
        ..act(verb)
    };
    match command {
        DockerCommand::Ps { all, json } => containers::ps(settings, host, all, json).await?,
        DockerCommand::Inspect { container } => {
            containers::inspect(settings, host, &container).await?;
        }
        DockerCommand::Run { detach, spec } => {
            let launch = if detach {
                Launch::Detached
            } else {
                Launch::Attached
            };
            return containers::create(settings, host, spec.into(), launch).await;
        }
        DockerCommand::Create { spec } => {
            return containers::create(settings, host, spec.into(), Launch::Create).await;
        }
        DockerCommand::Start { containers: names } => {
            return containers::act(settings, host, &names, act(ContainerVerb::Start)).await;
        }
        DockerCommand::Stop {
            grace,
            containers: names,
        } => {
            let action = timed(ContainerVerb::Stop, grace);
            return containers::act(settings, host, &names, action).await;
        }
        DockerCommand::Restart {
            grace,
            containers: names,
        } => {
            let action = timed(ContainerVerb::Restart, grace);
            return containers::act(settings, host, &names, action).await;
        }
        DockerCommand::Kill {
            signal,
            containers: names,
        } => {
            let action = ContainerAction {
                signal: signal.unwrap_or_default(),
                ..act(ContainerVerb::Kill)
            };
            return containers::act(settings, host, &names, action).await;
        }
        DockerCommand::Pause { containers: names } => {
            return containers::act(settings, host, &names, act(ContainerVerb::Pause)).await;
        }
        DockerCommand::Unpause { containers: names } => {
            return containers::act(settings, host, &names, act(ContainerVerb::Unpause)).await;
        }
        DockerCommand::Rm {
            force,
            volumes,
            containers: names,
        } => {
            let action = ContainerAction {
                force,
                volumes,
                ..act(ContainerVerb::Remove)
            };
            return containers::act(settings, host, &names, action).await;
        }
        DockerCommand::Rename { container, name } => {
            containers::rename(settings, host, container, name).await?;
        }
        DockerCommand::Logs {
            follow,
            tail,
            timestamps,
            since,
            container,
        } => {
            let request = DockerLogs {
                container,
                follow,
                tail,
                timestamps,
                since: since.unwrap_or(0),
            };
            return logs::logs(settings, host, request).await;
        }
        DockerCommand::Stats {
            no_stream,
            json,
            containers: names,
        } => {
            let options = StatsOptions {
                containers: names,
                stream: !no_stream,
                json,
            };
            return stats::stats(settings, host, options).await;
        }
        DockerCommand::Top { container } => containers::top(settings, host, &container).await?,
        DockerCommand::Exec {
            user,
            resume_for,
            container,
            command,
            ..
        } => {
            let options = ShellOptions {
                host: host.into(),
                attach: None,
                watch: false,
                resume_for,
                container: Some(ContainerShell {
                    container,
                    user: user.unwrap_or_default(),
                    command,
                }),
            };
            return shell(settings, options).await;
        }
        DockerCommand::Images { all, json } => images::list(settings, host, all, json).await?,
        DockerCommand::Pull { image } => images::pull(settings, host, image).await?,
        DockerCommand::Import { file, image } => {
            images::import(settings, host, &file, image).await?;
        }
        DockerCommand::Rmi {
            force,
            images: names,
        } => return images::remove(settings, host, &names, force).await,
        DockerCommand::Prune { what, all } => {
            engine::prune(settings, host, what.into(), all).await?;
        }
        DockerCommand::Volumes(VolumesArgs { action, json }) => match action {
            None => engine::volumes(settings, host, json).await?,
            Some(VolumesAction::Ls { json }) => engine::volumes(settings, host, json).await?,
            Some(VolumesAction::Create { name, driver }) => {
                let create = VolumeCreate {
                    name,
                    driver: driver.unwrap_or_default(),
                    ..VolumeCreate::default()
                };
                engine::create_volume(settings, host, create).await?;
            }
            Some(VolumesAction::Rm { force, names }) => {
                return engine::remove_volumes(settings, host, &names, force).await;
            }
        },
        DockerCommand::Networks(NetworksArgs { action, json }) => match action {
            None => engine::networks(settings, host, json).await?,
            Some(NetworksAction::Ls { json }) => engine::networks(settings, host, json).await?,
            Some(NetworksAction::Create {
                name,
                driver,
                internal,
            }) => {
                let create = NetworkCreate {
                    name,
                    driver: driver.unwrap_or_default(),
                    internal,
                    ..NetworkCreate::default()
                };
                engine::create_network(settings, host, create).await?;
            }
            Some(NetworksAction::Rm { names }) => {
                return engine::remove_networks(settings, host, &names).await;
            }
        },
        DockerCommand::Info { json } => return engine::info(settings, host, json).await,
    }
    Ok(0)
}
