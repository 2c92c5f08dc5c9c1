//! The service core: what every adapter (REST, gRPC, later MCP) calls. Authentication,
//! authorisation and audit happen here, once.

pub mod access;
pub mod alerts;
pub mod audit;
pub mod docker;
pub mod files;
pub mod lifecycle;
pub mod limits;
pub mod login;
pub mod metrics;
pub mod relay;
pub mod terminal;
pub mod upgrade;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use zpanel_proto::{DockerError, FileError, open};

pub use crate::access::{Action, Principal, Role};
use crate::bridge::HostAllowList;
use crate::ca::CaState;
use crate::metrics::Metrics;
use crate::router::{Channel, HostRouter, LocalRouter, RouteError};
use crate::store::{
    AuditEntry, DEFAULT_WORKSPACE, HostFacts, HostRecord, NewHost, Store, StoreError,
    WorkspaceRecord,
};

/// Longest a join token may live.
const MAX_JOIN_TOKEN_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// How long a resumed exec waits for its host to come back.
const RESUME_WAIT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("missing or invalid API token; run `zpanel login` with a valid token")]
    Unauthenticated,
    #[error("wrong user name or password")]
    BadCredentials,
    #[error("too many attempts or failures; try again in {} s", .0.as_secs().max(1))]
    RateLimited(Duration),
    /// The caller's role (or lack of one) does not allow the action.
    #[error("{0}")]
    PermissionDenied(String),
    /// A user with a second factor signed in without its code.
    #[error("this account needs a TOTP code from its authenticator app")]
    TotpRequired,
    /// A workspace quota is used up.
    #[error("{0}")]
    QuotaExceeded(String),
    /// Refused for a reason other than the role (origin, CSRF token, ownership).
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    Conflict(String),
    /// A file changed since the version the writer read.
    #[error("{0}")]
    Changed(String),
    #[error("{0}")]
    NoSpace(String),
    #[error("{0}")]
    Unavailable(String),
    /// The host could not start the command (not found, not executable).
    #[error("{0}")]
    SpawnFailed(String),
    /// A host's Docker engine failed the request for a reason of its own.
    #[error("{0}")]
    Engine(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NameTaken(name) => ServiceError::Conflict(format!(
                "host name {name:?} is already taken; join with --name to pick another"
            )),
            StoreError::Exists(message) => ServiceError::Conflict(message),
            other => ServiceError::Internal(other.to_string()),
        }
    }
}

/// Everything the adapters share.
pub struct AppState {
    pub store: Store,
    /// The CAs in force (two during a CA rotation) and the listeners' TLS identity.
    pub ca: Arc<CaState>,
    pub router: Arc<LocalRouter>,
    pub metrics: Arc<Metrics>,
    pub allowed_hosts: HostAllowList,
    pub public_url: String,
    pub bridge_url: String,
    pub heartbeat_interval: Duration,
    pub host_cert_ttl: Duration,
    /// Whether terminal sessions are recorded, and the open recordings.
    pub record_terminals: bool,
    pub recordings: crate::recording::Recordings,
    pub limits: limits::Limits,
    /// How long a browser session lasts.
    pub web_session_ttl: Duration,
    /// Alert evaluation's settings and the notification sender.
    pub alerts: alerts::Alerts,
    /// Host metrics: the writer's queue, the latest samples, the live broadcast.
    pub telemetry: Arc<metrics::MetricsService>,
    /// `install.sh` as served, with this control plane's URL, and its sha256.
    pub install_script: crate::install::InstallScript,
    /// The daemon binaries handed to `install.sh` and to upgrades.
    pub downloads: crate::downloads::Downloads,
}

/// A host as listed.
pub struct HostView {
    pub record: HostRecord,
    pub online: bool,
    /// The name of the host's workspace.
    pub workspace: String,
}

pub struct JoinTokenCreated {
    pub token: String,
    pub expires_at: i64,
    pub uses: u32,
    pub install_command: String,
    pub ca_pin: String,
}

pub struct EnrollRequest {
    pub token: String,
    pub csr_pem: String,
    pub name: String,
    pub labels: std::collections::BTreeMap<String, String>,
    /// The certificate of an earlier enrolment of the same machine (see
    /// `Authorities::previous_host`).
    pub previous_cert_pem: Option<String>,
    pub facts: HostFacts,
}

pub struct Enrolled {
    pub host_id: String,
    pub name: String,
    pub cert_pem: String,
    pub ca_pem: String,
    pub bridge_url: String,
    pub cert_expires_at: i64,
}

/// An exec channel and what the client needs to know about it.
pub struct ExecChannel {
    pub channel: Channel,
    pub exec_id: String,
    pub host_id: String,
}

impl AppState {
    /// The caller behind an API token. An address that keeps presenting bad tokens is
    /// locked out for a while.
    pub async fn authenticate(
        &self,
        token: Option<&str>,
        address: IpAddr,
    ) -> Result<Principal, ServiceError> {
        let token = token.ok_or(ServiceError::Unauthenticated)?;
        let key = address.to_string();
        if let Err(wait) = self.limits.api_tokens.check(&key) {
            return Err(ServiceError::RateLimited(wait));
        }
        match self.store.authenticate(token).await? {
            Some(principal) => Ok(principal),
            None => {
                if self.limits.api_tokens.fail(&key) {
                    self.audit(
                        AuditEntry::new("-", "api_token.lockout")
                            .target(&key)
                            .detail("too many unknown, expired or revoked API tokens")
                            .outcome("refused"),
                    )
                    .await;
                }
                Err(ServiceError::Unauthenticated)
            }
        }
    }

    /// The hosts the caller can see.
    pub async fn list_hosts(&self, principal: &Principal) -> Result<Vec<HostView>, ServiceError> {
        let online: std::collections::HashSet<String> =
            self.router.online_hosts().into_iter().collect();
        let now = crate::store::now();
        let workspaces = self.workspace_names().await?;
        Ok(self
            .store
            .list_hosts()
            .await?
            .into_iter()
            .filter(|record| {
                audit::check(principal, Action::ListHosts, Some(&record.workspace_id)).is_ok()
            })
            .map(|mut record| {
                let online = online.contains(&record.id);
                if online {
                    record.last_seen = Some(now);
                }
                let workspace = workspaces
                    .get(&record.workspace_id)
                    .cloned()
                    .unwrap_or_default();
                HostView {
                    record,
                    online,
                    workspace,
                }
            })
            .collect())
    }

    pub async fn delete_host(
        &self,
        principal: &Principal,
        id_or_name: &str,
    ) -> Result<String, ServiceError> {
        let host = self
            .host_for(principal, Action::DeleteHost, id_or_name)
            .await?;
        self.allowed_hosts.revoke(&host.id);
        self.router.disconnect(&host.id);
        self.store.delete_host(&host.id).await?;
        self.audit(
            self.entry(principal, "host.delete")
                .host(&host.id, &host.workspace_id)
                .target(&host.name),
        )
        .await;
        Ok(host.id)
    }

    /// Every workspace's name by its id, for views that name a record's workspace.
    async fn workspace_names(
        &self,
    ) -> Result<std::collections::HashMap<String, String>, ServiceError> {
        Ok(self
            .store
            .list_workspaces()
            .await?
            .into_iter()
            .map(|w| (w.id, w.name))
            .collect())
    }

    /// A workspace by id or name (default: the default workspace) the caller may do `action`
    /// in; a refusal is audited like every other.
    pub async fn workspace_for(
        &self,
        principal: &Principal,
        action: Action,
        workspace: Option<&str>,
    ) -> Result<WorkspaceRecord, ServiceError> {
        let workspace = self
            .workspace(workspace.unwrap_or(DEFAULT_WORKSPACE))
            .await?;
        self.authorize(principal, action, Some(&workspace.id))
            .await?;
        Ok(workspace)
    }

    /// A join token for hosts to join `workspace` (default: the default workspace).
    pub async fn create_join_token(
        &self,
        principal: &Principal,
        ttl: Duration,
        uses: u32,
        workspace: Option<&str>,
    ) -> Result<JoinTokenCreated, ServiceError> {
        let workspace = self
            .workspace_for(principal, Action::CreateJoinToken, workspace)
            .await?;
        if ttl.is_zero() || ttl > MAX_JOIN_TOKEN_TTL {
            return Err(ServiceError::InvalidArgument(
                "token ttl must be between 1s and 30d".into(),
            ));
        }
        if uses == 0 || uses > 100_000 {
            return Err(ServiceError::InvalidArgument(
                "token uses must be between 1 and 100000".into(),
            ));
        }
        let token = crate::store::new_token("zpj");
        let expires_at = crate::store::now() + ttl.as_secs() as i64;
        self.store
            .create_join_token(
                &token,
                uses,
                expires_at,
                &principal.user_name,
                &workspace.id,
            )
            .await?;
        self.audit(
            self.entry(principal, "join_token.create")
                .workspace(&workspace.id)
                .detail(format!("uses={uses} ttl={}s", ttl.as_secs())),
        )
        .await;
        let ca_pin = self.ca.pin();
        // Pasted on the new host: fetches the served install.sh, checks it against its
        // sha256 (the host cannot check the control plane's certificate yet) and runs it.
        let install_command = crate::install::install_command(
            &self.public_url,
            &self.install_script.sha256,
            &token,
            &ca_pin,
        );
        Ok(JoinTokenCreated {
            token,
            expires_at,
            uses,
            install_command,
            ca_pin,
        })
    }

    /// Enrols a host: takes one use of the join token, signs the host's CSR, records the
    /// host in the token's workspace. An address that keeps presenting bad join tokens is
    /// locked out for a while.
    pub async fn enroll(
        &self,
        request: EnrollRequest,
        address: IpAddr,
    ) -> Result<Enrolled, ServiceError> {
        let key = address.to_string();
        if let Err(wait) = self.limits.enrolment.check(&key) {
            return Err(ServiceError::RateLimited(wait));
        }
        let name = request.name.trim().to_string();
        access::check_name("host", &name)?;
        if request.labels.len() > zpanel_shared::enroll::MAX_LABELS {
            return Err(ServiceError::InvalidArgument(format!(
                "a host has at most {} labels",
                zpanel_shared::enroll::MAX_LABELS
            )));
        }
        for (key, value) in &request.labels {
            zpanel_shared::enroll::check_label(key, value)
                .map_err(ServiceError::InvalidArgument)?;
        }
        let again = self.enrolled_before(&request).await?;
        if self.store.host_name_taken(&name).await?
            && again.as_ref().is_none_or(|host| host.name != name)
        {
            return Err(StoreError::NameTaken(name).into());
        }
        let host_id = match &again {
            Some(host) => host.id.clone(),
            None => uuid::Uuid::new_v4().to_string(),
        };
        let cert = self
            .ca
            .sign_host_csr(&request.csr_pem, &host_id, self.host_cert_ttl)
            .map_err(|e| ServiceError::InvalidArgument(e.to_string()))?;
        let (token_id, workspace_id) = match self.store.consume_join_token(&request.token).await? {
            Ok(taken) => taken,
            Err(refusal) => {
                self.limits.enrolment.fail(&key);
                self.audit(
                    AuditEntry::new("-", "host.enroll")
                        .credential(format!("address:{key}"))
                        .target(&name)
                        .detail(refusal.to_string())
                        .outcome("refused"),
                )
                .await;
                return Err(ServiceError::InvalidArgument(refusal.to_string()));
            }
        };
        let same_workspace = again
            .as_ref()
            .is_some_and(|host| host.workspace_id == workspace_id);
        let quota = match same_workspace {
            true => Ok(()),
            false => self.check_host_quota(&workspace_id).await,
        };
        let inserted = match quota {
            Ok(()) => {
                let new_host = NewHost {
                    id: &host_id,
                    name: &name,
                    labels: &request.labels,
                    facts: &request.facts,
                    cert_serial: &cert.serial,
                    cert_expires_at: cert.expires_at,
                    workspace_id: &workspace_id,
                };
                match again {
                    Some(_) => self.store.reenrol_host(new_host).await,
                    None => self.store.insert_host(new_host).await,
                }
                .map_err(Into::into)
            }
            Err(e) => Err(e),
        };
        if let Err(e) = inserted {
            self.store.refund_join_token(&token_id).await?;
            return Err(e);
        }
        self.store.set_host_ca_pin(&host_id, &cert.ca_pin).await?;
        self.allowed_hosts.allow(&host_id);
        self.audit(
            AuditEntry::new(&format!("join-token:{token_id}"), "host.enroll")
                .credential(format!("address:{key}"))
                .host(&host_id, &workspace_id)
                .target(&name)
                .detail(match again {
                    Some(_) => "again, as the same machine",
                    None => "",
                }),
        )
        .await;
        tracing::info!(host = %host_id, %name, again = again.is_some(), "host enrolled");
        Ok(Enrolled {
            host_id,
            name,
            cert_pem: cert.cert_pem,
            ca_pem: cert.ca_bundle,
            bridge_url: self.bridge_url.clone(),
            cert_expires_at: cert.expires_at,
        })
    }

    /// The host a machine enrolling again was, when it proves it (see
    /// `Authorities::previous_host`); a revoked one must be deleted first.
    async fn enrolled_before(
        &self,
        request: &EnrollRequest,
    ) -> Result<Option<HostRecord>, ServiceError> {
        let Some(cert_pem) = &request.previous_cert_pem else {
            return Ok(None);
        };
        let Some(host_id) = self
            .ca
            .authorities()
            .previous_host(cert_pem, &request.csr_pem)
        else {
            return Ok(None);
        };
        let Some(host) = self.store.find_host(&host_id).await? else {
            return Ok(None);
        };
        if let Some(at) = host.revoked_at {
            return Err(ServiceError::Forbidden(format!(
                "this machine is host {}, revoked at {}: delete it (`zpanel hosts rm {}`) before enrolling the machine again",
                host.name,
                lifecycle::rfc3339(at),
                host.name
            )));
        }
        Ok(Some(host))
    }

    /// When a daemon should renew a certificate expiring at `not_after`: with a third of the
    /// configured lifetime left, so a host that is offline for a while still has time.
    pub fn renew_after(&self, not_after: i64) -> i64 {
        not_after - (self.host_cert_ttl.as_secs() / 3) as i64
    }

    /// Signs a new certificate for an enrolled host's key (from its CSR), over its session.
    pub async fn renew_host_certificate(
        &self,
        host_id: &str,
        csr_pem: &str,
    ) -> Result<crate::ca::HostCertificate, ServiceError> {
        let host = self.store.find_host(host_id).await?;
        if let Some(at) = host.as_ref().and_then(|h| h.revoked_at) {
            return Err(ServiceError::Forbidden(format!(
                "this host was revoked at {}; {}",
                lifecycle::rfc3339(at),
                lifecycle::REVOKED_ADVICE
            )));
        }
        let cert = self
            .ca
            .sign_host_csr(csr_pem, host_id, self.host_cert_ttl)
            .map_err(|e| ServiceError::InvalidArgument(e.to_string()))?;
        self.store
            .update_host_certificate(host_id, &cert.serial, cert.expires_at)
            .await?;
        self.store.set_host_ca_pin(host_id, &cert.ca_pin).await?;
        let workspace = host.map(|h| h.workspace_id).unwrap_or_default();
        self.audit(
            AuditEntry::new(host_id, "host.certificate.renew")
                .credential("host certificate")
                .host(host_id, &workspace)
                .detail(format!("serial {} from CA {}", cert.serial, cert.ca_pin)),
        )
        .await;
        tracing::info!(host = %host_id, expires_at = cert.expires_at, "host certificate renewed");
        Ok(cert)
    }

    /// Starts a command on a host.
    pub async fn exec_start(
        &self,
        principal: &Principal,
        host: &str,
        argv: Vec<String>,
        timeout: Duration,
    ) -> Result<ExecChannel, ServiceError> {
        let host = self.host_for(principal, Action::Exec, host).await?;
        if argv.is_empty() || argv[0].is_empty() {
            return Err(ServiceError::InvalidArgument(
                "no command given: zpanel exec HOST -- CMD [ARG...]".into(),
            ));
        }
        let exec_id = uuid::Uuid::new_v4().to_string();
        let command_line = shell_words(&argv);
        self.store
            .insert_exec(&exec_id, &host.id, &principal.user_id)
            .await?;
        let request = open::Request::ExecStart(zpanel_proto::ExecStart {
            exec_id: exec_id.clone(),
            argv,
            timeout_ms: timeout.as_millis() as u64,
        });
        let result = self.router.open_channel(&host.id, request).await;
        self.audit(
            self.entry(principal, "exec")
                .host(&host.id, &host.workspace_id)
                .target(&exec_id)
                .detail(&command_line)
                .outcome(if result.is_ok() { "ok" } else { "failed" }),
        )
        .await;
        let channel = result.map_err(|e| route_error(&host, e))?;
        Ok(ExecChannel {
            channel,
            exec_id,
            host_id: host.id,
        })
    }

    /// Re-attaches to one's own running or finished exec, waiting a while for its host to
    /// return.
    pub async fn exec_resume(
        &self,
        principal: &Principal,
        host: &str,
        exec_id: String,
        stdout_offset: u64,
        stderr_offset: u64,
    ) -> Result<ExecChannel, ServiceError> {
        let host = self.host_for(principal, Action::Exec, host).await?;
        let owner = self.store.exec_owner(&exec_id).await?;
        if owner != Some((host.id.clone(), principal.user_id.clone())) {
            return Err(ServiceError::NotFound(format!(
                "no command {exec_id} of yours on host {}",
                host.name
            )));
        }
        let deadline = tokio::time::Instant::now() + RESUME_WAIT;
        while !self.router.is_online(&host.id) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let request = open::Request::ExecAttach(zpanel_proto::ExecAttach {
            exec_id: exec_id.clone(),
            stdout_offset,
            stderr_offset,
        });
        let channel = self
            .router
            .open_channel(&host.id, request)
            .await
            .map_err(|e| route_error(&host, e))?;
        Ok(ExecChannel {
            channel,
            exec_id,
            host_id: host.id,
        })
    }
}

impl AppState {
    /// Opens a channel to a host's daemon; a refusal becomes the service error it means.
    async fn open_on(
        &self,
        host: &HostRecord,
        request: open::Request,
    ) -> Result<Channel, ServiceError> {
        self.router
            .open_channel(&host.id, request)
            .await
            .map_err(|e| route_error(host, e))
    }
}

fn route_error(host: &HostRecord, e: RouteError) -> ServiceError {
    use zpanel_proto::OpenError;
    match e {
        RouteError::Offline => match host.revoked_at {
            Some(at) => lifecycle::revoked(host, at),
            None => ServiceError::Unavailable(format!("host {} is offline", host.name)),
        },
        RouteError::SessionLost | RouteError::Timeout(_) => {
            ServiceError::Unavailable(format!("host {}: {e}", host.name))
        }
        RouteError::Refused {
            file_error,
            message,
            ..
        } if file_error != FileError::None => {
            files::file_error(file_error, format!("host {}: {message}", host.name))
        }
        RouteError::Refused {
            docker_error,
            message,
            ..
        } if docker_error != DockerError::None => {
            docker::docker_error(docker_error, format!("host {}: {message}", host.name))
        }
        RouteError::Refused {
            code: OpenError::NotFound | OpenError::ReplayLost,
            message,
            ..
        } => ServiceError::NotFound(format!("host {}: {message}", host.name)),
        RouteError::Refused {
            code: OpenError::SpawnFailed,
            message,
            ..
        } => ServiceError::SpawnFailed(format!("host {}: {message}", host.name)),
        RouteError::Refused {
            code: OpenError::Forbidden,
            message,
            ..
        } => ServiceError::Forbidden(format!("host {}: {message}", host.name)),
        RouteError::Refused { message, .. } => {
            ServiceError::InvalidArgument(format!("host {}: {message}", host.name))
        }
    }
}

/// A command line as a person would type it, for the audit log.
pub fn shell_words(argv: &[String]) -> String {
    argv.iter()
        .map(|arg| {
            if !arg.is_empty()
                && arg
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c))
            {
                arg.clone()
            } else {
                format!("'{}'", arg.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_command_lines_for_the_audit_log() {
        let argv = ["sh", "-c", "echo 'hi' there"].map(String::from);
        assert_eq!(shell_words(&argv), r"sh -c 'echo '\''hi'\'' there'");
    }
}
