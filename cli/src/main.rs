//! `zpanel`: the operator command line. Every failure prints one line on stderr and exits
//! non-zero; `exec` and `shell` exit with the remote command's or shell's code.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use serde::Serialize;
use zpanel_cli::client::{self, call_failed, status_message};
use zpanel_cli::config::Settings;
use zpanel_cli::display::rfc3339;
use zpanel_cli::exec::{ExecOptions, exec};
use zpanel_cli::files;
use zpanel_cli::files::copy::{CopyOptions, cp};
use zpanel_cli::files::download::cat;
use zpanel_cli::files::edit::{EditOptions, edit};
use zpanel_cli::files::location::Remote;
use zpanel_cli::files::ls::{LsOptions, ls};
use zpanel_cli::sessions;
use zpanel_cli::shell::{ShellOptions, shell};
use zpanel_proto::{CreateJoinTokenRequest, DeleteHostRequest, ListHostsRequest, WhoAmIRequest};

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
}

#[derive(Debug, Subcommand)]
enum TokensAction {
    /// Create a join token and print the install command.
    Create {
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
        #[arg(long, default_value_t = 1)]
        uses: u32,
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
        Command::Hosts(HostsArgs { action: None, json }) => hosts(json).await?,
        Command::Hosts(HostsArgs {
            action: Some(HostsAction::Rm { host }),
            ..
        }) => {
            let settings = Settings::load()?;
            let mut client = client::connect(&settings).await?;
            let deleted = client
                .delete_host(DeleteHostRequest { host })
                .await
                .map_err(call_failed)?
                .into_inner();
            println!("deleted host {}", deleted.id);
        }
        Command::Tokens {
            action: TokensAction::Create { ttl, uses, json },
        } => {
            let settings = Settings::load()?;
            let mut client = client::connect(&settings).await?;
            let created = client
                .create_join_token(CreateJoinTokenRequest {
                    ttl_seconds: ttl.as_secs(),
                    uses,
                    workspace: String::new(),
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
    }
    Ok(0)
}

#[derive(Serialize)]
struct HostJson {
    id: String,
    name: String,
    status: &'static str,
    last_seen: Option<String>,
    os: String,
    kernel: String,
    arch: String,
    daemon_version: String,
    labels: std::collections::BTreeMap<String, String>,
}

async fn hosts(json: bool) -> anyhow::Result<()> {
    let settings = Settings::load()?;
    let mut client = client::connect(&settings).await?;
    let hosts = client
        .list_hosts(ListHostsRequest {})
        .await
        .map_err(call_failed)?
        .into_inner()
        .hosts;
    let rows: Vec<HostJson> = hosts
        .into_iter()
        .map(|h| HostJson {
            id: h.id,
            name: h.name,
            status: if h.online { "online" } else { "offline" },
            last_seen: (h.last_seen > 0).then(|| rfc3339(h.last_seen)),
            os: h.os,
            kernel: h.kernel,
            arch: h.arch,
            daemon_version: h.daemon_version,
            labels: h.labels.into_iter().collect(),
        })
        .collect();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).context("cannot encode hosts")?
        );
        return Ok(());
    }
    println!(
        "{:<36}  {:<20}  {:<7}  {:<20}  {:<32}  LABELS",
        "ID", "NAME", "STATUS", "LAST SEEN", "OS"
    );
    for h in rows {
        let labels: Vec<String> = h.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!(
            "{:<36}  {:<20}  {:<7}  {:<20}  {:<32}  {}",
            h.id,
            h.name,
            h.status,
            h.last_seen.as_deref().unwrap_or("never"),
            h.os,
            labels.join(",")
        );
    }
    Ok(())
}
