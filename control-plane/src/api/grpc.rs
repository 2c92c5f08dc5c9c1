//! The operator gRPC API (`zpanel.v1.Operator`), used by the `zpanel` CLI.

mod access;
mod alerts;
mod docker;
mod metrics;

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::Stream;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};
use zpanel_proto::operator_server::{Operator, OperatorServer};
use zpanel_proto::{
    CreateJoinTokenRequest, CreateJoinTokenResponse, DeleteHostRequest, DeleteHostResponse,
    ExecClientMessage, ExecServerMessage, ExecStarted, FileOpRequest, FileReply, Host,
    KillTerminalRequest, KillTerminalResponse, ListHostsRequest, ListHostsResponse,
    ListTerminalsRequest, ListTerminalsResponse, ReadFileRequest, ReadFileResponse,
    RevokeHostRequest, RevokeHostResponse, StreamKind, TerminalAttached, TerminalClientMessage,
    TerminalServerMessage, UpgradeHostsRequest, WhoAmIRequest, WhoAmIResponse, WriteFileAccepted,
    WriteFileRequest, WriteFileResponse, exec_client_message, exec_server_message,
    read_file_response, terminal_client_message, terminal_server_message, write_file_request,
    write_file_response,
};

use crate::router::ChannelEvent;
use crate::service::Principal;
use crate::service::files::{FileReadChannel, FileWriteChannel};
use crate::service::relay::Relay;
use crate::service::terminal::{ContainerShell, TerminalChannel, TerminalEvent, TerminalRequest};
use crate::service::{AppState, ExecChannel, ServiceError};

/// Messages queued towards one exec client before the relay waits for it.
const EXEC_CLIENT_QUEUE: usize = 64;
const SIGTERM: i32 = 15;

impl From<ServiceError> for Status {
    fn from(e: ServiceError) -> Self {
        let message = e.to_string();
        match e {
            ServiceError::Unauthenticated | ServiceError::BadCredentials => {
                Status::unauthenticated(message)
            }
            ServiceError::RateLimited(_) => Status::resource_exhausted(message),
            ServiceError::PermissionDenied(_) | ServiceError::Forbidden(_) => {
                Status::permission_denied(message)
            }
            ServiceError::TotpRequired => Status::unauthenticated(message),
            ServiceError::QuotaExceeded(_) => Status::resource_exhausted(message),
            ServiceError::NotFound(_) => Status::not_found(message),
            ServiceError::InvalidArgument(_) => Status::invalid_argument(message),
            ServiceError::Conflict(_) => Status::already_exists(message),
            ServiceError::Changed(_) => Status::failed_precondition(message),
            ServiceError::NoSpace(_) => Status::resource_exhausted(message),
            ServiceError::Unavailable(_) => Status::unavailable(message),
            ServiceError::SpawnFailed(_) => Status::failed_precondition(message),
            ServiceError::Engine(_) => Status::internal(message),
            ServiceError::Internal(_) => Status::internal(message),
        }
    }
}

pub fn service(state: Arc<AppState>) -> OperatorServer<OperatorApi> {
    OperatorServer::new(OperatorApi { state })
}

pub struct OperatorApi {
    state: Arc<AppState>,
}

impl OperatorApi {
    async fn principal<T>(&self, request: &Request<T>) -> Result<Principal, Status> {
        let token = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let address = request
            .extensions()
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map_or(std::net::Ipv4Addr::UNSPECIFIED.into(), |info| info.0.ip());
        Ok(self.state.authenticate(token, address).await?)
    }
}

type ExecStream = Pin<Box<dyn Stream<Item = Result<ExecServerMessage, Status>> + Send>>;
type UpgradeStream =
    Pin<Box<dyn Stream<Item = Result<zpanel_proto::UpgradeProgress, Status>> + Send>>;
type AuditStream = Pin<Box<dyn Stream<Item = Result<zpanel_proto::AuditEntry, Status>> + Send>>;
type TerminalStream = Pin<Box<dyn Stream<Item = Result<TerminalServerMessage, Status>> + Send>>;
type ReadFileStream = Pin<Box<dyn Stream<Item = Result<ReadFileResponse, Status>> + Send>>;
type WriteFileStream = Pin<Box<dyn Stream<Item = Result<WriteFileResponse, Status>> + Send>>;

/// A response stream fed by a relay task through a bounded queue.
fn queued<T: Send + 'static>(
    rx: mpsc::Receiver<Result<T, Status>>,
) -> Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>> {
    Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

#[tonic::async_trait]
impl Operator for OperatorApi {
    async fn add_user(
        &self,
        request: Request<zpanel_proto::AddUserRequest>,
    ) -> Result<Response<zpanel_proto::User>, Status> {
        let principal = self.principal(&request).await?;
        let body = request.into_inner();
        let user = self
            .state
            .users_add(
                &principal,
                &body.name,
                access::role(&body.role)?,
                access::optional(&body.workspace),
                access::optional(&body.password),
            )
            .await?;
        Ok(Response::new(access::user(user)))
    }

    async fn list_users(
        &self,
        request: Request<zpanel_proto::ListUsersRequest>,
    ) -> Result<Response<zpanel_proto::ListUsersResponse>, Status> {
        let principal = self.principal(&request).await?;
        let users = self.state.users_list(&principal).await?;
        Ok(Response::new(zpanel_proto::ListUsersResponse {
            users: users.into_iter().map(access::user).collect(),
        }))
    }

    async fn remove_user(
        &self,
        request: Request<zpanel_proto::RemoveUserRequest>,
    ) -> Result<Response<zpanel_proto::RemoveUserResponse>, Status> {
        let principal = self.principal(&request).await?;
        let name = request.into_inner().name;
        self.state.users_remove(&principal, &name).await?;
        Ok(Response::new(zpanel_proto::RemoveUserResponse {}))
    }

    async fn set_user_role(
        &self,
        request: Request<zpanel_proto::SetUserRoleRequest>,
    ) -> Result<Response<zpanel_proto::User>, Status> {
        let principal = self.principal(&request).await?;
        let body = request.into_inner();
        let user = self
            .state
            .users_set_role(
                &principal,
                &body.name,
                access::role(&body.role)?,
                access::optional(&body.workspace),
            )
            .await?;
        Ok(Response::new(access::user(user)))
    }

    async fn reset_user_totp(
        &self,
        request: Request<zpanel_proto::ResetUserTotpRequest>,
    ) -> Result<Response<zpanel_proto::ResetUserTotpResponse>, Status> {
        let principal = self.principal(&request).await?;
        let name = request.into_inner().name;
        self.state.users_reset_totp(&principal, &name).await?;
        Ok(Response::new(zpanel_proto::ResetUserTotpResponse {}))
    }

    async fn create_workspace(
        &self,
        request: Request<zpanel_proto::CreateWorkspaceRequest>,
    ) -> Result<Response<zpanel_proto::Workspace>, Status> {
        let principal = self.principal(&request).await?;
        let body = request.into_inner();
        let quotas = access::quotas(body.quotas, Default::default());
        let workspace = self
            .state
            .workspaces_create(&principal, &body.name, quotas)
            .await?;
        let role = principal.role_in(&workspace.id);
        Ok(Response::new(access::workspace(workspace, role)))
    }

    async fn list_workspaces(
        &self,
        request: Request<zpanel_proto::ListWorkspacesRequest>,
    ) -> Result<Response<zpanel_proto::ListWorkspacesResponse>, Status> {
        let principal = self.principal(&request).await?;
        let workspaces = self.state.workspaces_list(&principal).await?;
        Ok(Response::new(zpanel_proto::ListWorkspacesResponse {
            workspaces: workspaces
                .into_iter()
                .map(|(w, role)| access::workspace(w, role))
                .collect(),
        }))
    }

    async fn set_workspace_quota(
        &self,
        request: Request<zpanel_proto::SetWorkspaceQuotaRequest>,
    ) -> Result<Response<zpanel_proto::Workspace>, Status> {
        let principal = self.principal(&request).await?;
        let body = request.into_inner();
        let current = self.state.workspace(&body.workspace).await?;
        let quotas = access::quotas(body.quotas, current.quotas);
        let workspace = self
            .state
            .workspaces_set_quota(&principal, &current.id, quotas)
            .await?;
        let role = principal.role_in(&workspace.id);
        Ok(Response::new(access::workspace(workspace, role)))
    }

    async fn add_workspace_host(
        &self,
        request: Request<zpanel_proto::AddWorkspaceHostRequest>,
    ) -> Result<Response<zpanel_proto::AddWorkspaceHostResponse>, Status> {
        let principal = self.principal(&request).await?;
        let body = request.into_inner();
        self.state
            .workspaces_add_host(&principal, &body.workspace, &body.host)
            .await?;
        Ok(Response::new(zpanel_proto::AddWorkspaceHostResponse {}))
    }

    async fn add_workspace_member(
        &self,
        request: Request<zpanel_proto::AddWorkspaceMemberRequest>,
    ) -> Result<Response<zpanel_proto::AddWorkspaceMemberResponse>, Status> {
        let principal = self.principal(&request).await?;
        let body = request.into_inner();
        self.state
            .workspaces_add_member(
                &principal,
                &body.workspace,
                &body.user,
                access::role(&body.role)?,
            )
            .await?;
        Ok(Response::new(zpanel_proto::AddWorkspaceMemberResponse {}))
    }

    async fn remove_workspace_member(
        &self,
        request: Request<zpanel_proto::RemoveWorkspaceMemberRequest>,
    ) -> Result<Response<zpanel_proto::RemoveWorkspaceMemberResponse>, Status> {
        let principal = self.principal(&request).await?;
        let body = request.into_inner();
        self.state
            .workspaces_remove_member(&principal, &body.workspace, &body.user)
            .await?;
        Ok(Response::new(
            zpanel_proto::RemoveWorkspaceMemberResponse {},
        ))
    }

    async fn create_api_token(
        &self,
        request: Request<zpanel_proto::CreateApiTokenRequest>,
    ) -> Result<Response<zpanel_proto::CreateApiTokenResponse>, Status> {
        let principal = self.principal(&request).await?;
        let wanted = access::api_token_request(request.into_inner())?;
        let created = self.state.api_tokens_create(&principal, wanted).await?;
        Ok(Response::new(zpanel_proto::CreateApiTokenResponse {
            token: created.token,
            info: Some(access::api_token(created.record)),
        }))
    }

    async fn list_api_tokens(
        &self,
        request: Request<zpanel_proto::ListApiTokensRequest>,
    ) -> Result<Response<zpanel_proto::ListApiTokensResponse>, Status> {
        let principal = self.principal(&request).await?;
        let all = request.into_inner().all;
        let tokens = self.state.api_tokens_list(&principal, all).await?;
        Ok(Response::new(zpanel_proto::ListApiTokensResponse {
            tokens: tokens.into_iter().map(access::api_token).collect(),
        }))
    }

    async fn revoke_api_token(
        &self,
        request: Request<zpanel_proto::RevokeApiTokenRequest>,
    ) -> Result<Response<zpanel_proto::RevokeApiTokenResponse>, Status> {
        let principal = self.principal(&request).await?;
        let id = request.into_inner().id;
        self.state.api_tokens_revoke(&principal, &id).await?;
        Ok(Response::new(zpanel_proto::RevokeApiTokenResponse {}))
    }

    type ListAuditStream = AuditStream;

    async fn list_audit(
        &self,
        request: Request<zpanel_proto::ListAuditRequest>,
    ) -> Result<Response<AuditStream>, Status> {
        let principal = self.principal(&request).await?;
        let filter = access::audit_filter(request.get_ref());
        let entries = self.state.audit_query(&principal, filter).await?;
        let stream =
            futures_util::stream::iter(entries.into_iter().map(|e| Ok(access::audit_entry(e))));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn verify_audit(
        &self,
        request: Request<zpanel_proto::VerifyAuditRequest>,
    ) -> Result<Response<zpanel_proto::VerifyAuditResponse>, Status> {
        let principal = self.principal(&request).await?;
        let response = match self.state.audit_verify(&principal).await? {
            Ok(entries) => zpanel_proto::VerifyAuditResponse {
                ok: true,
                entries,
                ..Default::default()
            },
            Err(broken) => zpanel_proto::VerifyAuditResponse {
                ok: false,
                broken_at: broken.id,
                reason: broken.reason,
                ..Default::default()
            },
        };
        Ok(Response::new(response))
    }

    async fn who_am_i(
        &self,
        request: Request<WhoAmIRequest>,
    ) -> Result<Response<WhoAmIResponse>, Status> {
        let principal = self.principal(&request).await?;
        let workspace = match principal
            .token
            .as_ref()
            .and_then(|t| t.workspace.as_deref())
        {
            Some(id) => self.state.workspace(id).await?.name,
            None => String::new(),
        };
        Ok(Response::new(WhoAmIResponse {
            role: principal
                .top_role()
                .map(|r| r.to_string())
                .unwrap_or_default(),
            user: principal.user_name,
            server_version: zpanel_shared::VERSION.into(),
            workspace,
        }))
    }

    async fn list_hosts(
        &self,
        request: Request<ListHostsRequest>,
    ) -> Result<Response<ListHostsResponse>, Status> {
        let principal = self.principal(&request).await?;
        let views = self.state.list_hosts(&principal).await?;
        let upgradable = self.state.upgrades_available(&views).await;
        let hosts = views
            .into_iter()
            .map(|view| Host {
                upgrade_available: upgradable.contains(&view.record.id),
                id: view.record.id,
                name: view.record.name,
                online: view.online,
                last_seen: view.record.last_seen.unwrap_or(0),
                os: view.record.os,
                kernel: view.record.kernel,
                arch: view.record.arch,
                daemon_version: view.record.daemon_version,
                labels: view.record.labels.into_iter().collect(),
                enrolled_at: view.record.enrolled_at,
                workspace: view.workspace,
                daemon_sha256: view.record.daemon_sha256,
                revoked_at: view.record.revoked_at.unwrap_or(0),
                cert_expires_at: view.record.cert_expires_at,
                cert_ca_pin: view.record.cert_ca_pin,
            })
            .collect();
        Ok(Response::new(ListHostsResponse { hosts }))
    }

    async fn delete_host(
        &self,
        request: Request<DeleteHostRequest>,
    ) -> Result<Response<DeleteHostResponse>, Status> {
        let principal = self.principal(&request).await?;
        let id = self
            .state
            .delete_host(&principal, &request.into_inner().host)
            .await?;
        Ok(Response::new(DeleteHostResponse { id }))
    }

    async fn revoke_host(
        &self,
        request: Request<RevokeHostRequest>,
    ) -> Result<Response<RevokeHostResponse>, Status> {
        let principal = self.principal(&request).await?;
        let id = self
            .state
            .revoke_host(&principal, &request.into_inner().host)
            .await?;
        Ok(Response::new(RevokeHostResponse { id }))
    }

    type UpgradeHostsStream = UpgradeStream;

    async fn upgrade_hosts(
        &self,
        request: Request<UpgradeHostsRequest>,
    ) -> Result<Response<UpgradeStream>, Status> {
        let principal = self.principal(&request).await?;
        let body = request.into_inner();
        let upgrade = crate::service::upgrade::UpgradeRequest {
            hosts: body.hosts,
            all: body.all,
            rollback_after: (body.rollback_after_secs > 0)
                .then(|| Duration::from_secs(u64::from(body.rollback_after_secs))),
        };
        let progress = self.state.upgrade_hosts(&principal, upgrade).await?;
        let stream = futures_util::stream::unfold(progress, |mut progress| async move {
            let p = progress.recv().await?;
            let message = zpanel_proto::UpgradeProgress {
                host: p.host,
                state: p.state.as_str().into(),
                detail: p.detail,
                from_sha256: p.from_sha256,
                to_sha256: p.to_sha256,
            };
            Some((Ok(message), progress))
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn create_join_token(
        &self,
        request: Request<CreateJoinTokenRequest>,
    ) -> Result<Response<CreateJoinTokenResponse>, Status> {
        let principal = self.principal(&request).await?;
        let body = request.into_inner();
        let created = self
            .state
            .create_join_token(
                &principal,
                Duration::from_secs(body.ttl_seconds),
                body.uses,
                Some(body.workspace.as_str()).filter(|w| !w.is_empty()),
            )
            .await?;
        Ok(Response::new(CreateJoinTokenResponse {
            token: created.token,
            expires_at: created.expires_at,
            uses: created.uses,
            install_command: created.install_command,
            ca_pin: created.ca_pin,
        }))
    }

    type ExecStream = ExecStream;

    async fn exec(
        &self,
        request: Request<Streaming<ExecClientMessage>>,
    ) -> Result<Response<ExecStream>, Status> {
        let principal = self.principal(&request).await?;
        let mut inbound = request.into_inner();
        let first = inbound
            .message()
            .await?
            .and_then(|m| m.body)
            .ok_or_else(|| {
                Status::invalid_argument("exec stream must start with open or resume")
            })?;
        let exec = match first {
            exec_client_message::Body::Open(open) => {
                let timeout = Duration::from_millis(open.timeout_ms);
                self.state
                    .exec_start(&principal, &open.host, open.argv, timeout)
                    .await?
            }
            exec_client_message::Body::Resume(resume) => {
                self.state
                    .exec_resume(
                        &principal,
                        &resume.host,
                        resume.exec_id,
                        resume.stdout_offset,
                        resume.stderr_offset,
                    )
                    .await?
            }
            _ => {
                return Err(Status::invalid_argument(
                    "exec stream must start with open or resume",
                ));
            }
        };
        let (tx, rx) = mpsc::channel(EXEC_CLIENT_QUEUE);
        let started = ExecStarted {
            exec_id: exec.exec_id.clone(),
            host_id: exec.host_id.clone(),
            stdin_offset: exec.channel.opened.stdin_offset,
        };
        let _ = tx
            .send(Ok(server_message(exec_server_message::Body::Started(
                started,
            ))))
            .await;
        tokio::spawn(relay_exec(exec, inbound, tx));
        Ok(Response::new(queued(rx)))
    }

    type TerminalStream = TerminalStream;

    async fn terminal(
        &self,
        request: Request<Streaming<TerminalClientMessage>>,
    ) -> Result<Response<TerminalStream>, Status> {
        use terminal_client_message::Body as Client;
        let principal = self.principal(&request).await?;
        let mut inbound = request.into_inner();
        let first = inbound.message().await?.and_then(|m| m.body);
        let (host, request, size) = match first {
            Some(Client::Open(open)) => {
                let container =
                    ContainerShell::requested(open.container, open.container_user, open.command)?;
                (open.host, TerminalRequest::Open(container), open.size)
            }
            Some(Client::Attach(attach)) => (
                attach.host,
                TerminalRequest::Attach {
                    session_id: attach.session_id,
                    watch: attach.watch,
                    output_offset: attach.output_offset,
                },
                attach.size,
            ),
            _ => {
                return Err(Status::invalid_argument(
                    "terminal stream must start with open or attach",
                ));
            }
        };
        let size = size.unwrap_or(zpanel_proto::TerminalSize { cols: 80, rows: 24 });
        let terminal = self
            .state
            .terminal(&principal, &host, request, size)
            .await?;
        let attached = TerminalAttached {
            host_id: terminal.host.id.clone(),
            session: Some(terminal.session.clone()),
            output_offset: terminal.output_offset,
            input_offset: terminal.input_offset,
            watch: terminal.watch,
        };
        let (tx, rx) = mpsc::channel(EXEC_CLIENT_QUEUE);
        let _ = tx
            .send(Ok(TerminalServerMessage {
                body: Some(terminal_server_message::Body::Attached(attached)),
            }))
            .await;
        tokio::spawn(relay_terminal(terminal, inbound, tx));
        Ok(Response::new(queued(rx)))
    }

    async fn list_terminals(
        &self,
        request: Request<ListTerminalsRequest>,
    ) -> Result<Response<ListTerminalsResponse>, Status> {
        let principal = self.principal(&request).await?;
        let body = request.into_inner();
        let (host, sessions) = self
            .state
            .terminal_list(&principal, &body.host, body.all)
            .await?;
        Ok(Response::new(ListTerminalsResponse {
            host_id: host.id,
            sessions,
        }))
    }

    async fn file_op(
        &self,
        request: Request<FileOpRequest>,
    ) -> Result<Response<FileReply>, Status> {
        let principal = self.principal(&request).await?;
        let body = request.into_inner();
        let request = body
            .request
            .ok_or_else(|| Status::invalid_argument("file_op needs a request"))?;
        let reply = self.state.file_op(&principal, &body.host, request).await?;
        Ok(Response::new(reply))
    }

    type ReadFileStream = ReadFileStream;

    async fn read_file(
        &self,
        request: Request<ReadFileRequest>,
    ) -> Result<Response<ReadFileStream>, Status> {
        let principal = self.principal(&request).await?;
        let body = request.into_inner();
        let read = body
            .read
            .ok_or_else(|| Status::invalid_argument("read_file needs a read"))?;
        let offset = read.offset;
        let reader = self.state.file_read(&principal, &body.host, read).await?;
        let (tx, rx) = mpsc::channel(EXEC_CLIENT_QUEUE);
        let info = read_file_response::Body::Info(reader.info.clone());
        let _ = tx.send(Ok(ReadFileResponse { body: Some(info) })).await;
        tokio::spawn(relay_read(reader, offset, tx));
        Ok(Response::new(queued(rx)))
    }

    type WriteFileStream = WriteFileStream;

    async fn write_file(
        &self,
        request: Request<Streaming<WriteFileRequest>>,
    ) -> Result<Response<WriteFileStream>, Status> {
        let principal = self.principal(&request).await?;
        let mut inbound = request.into_inner();
        let Some(write_file_request::Body::Start(start)) =
            inbound.message().await?.and_then(|m| m.body)
        else {
            return Err(Status::invalid_argument(
                "write_file stream must start with start",
            ));
        };
        let write = start
            .write
            .ok_or_else(|| Status::invalid_argument("write_file start needs a write"))?;
        let writer = self
            .state
            .file_write(&principal, &start.host, write)
            .await?;
        let (tx, rx) = mpsc::channel(EXEC_CLIENT_QUEUE);
        let accepted = write_file_response::Body::Accepted(WriteFileAccepted {
            offset: writer.resume_offset,
        });
        let _ = tx
            .send(Ok(WriteFileResponse {
                body: Some(accepted),
            }))
            .await;
        tokio::spawn(relay_write(self.state.clone(), writer, inbound, tx));
        Ok(Response::new(queued(rx)))
    }

    async fn docker(
        &self,
        request: Request<zpanel_proto::DockerOpRequest>,
    ) -> Result<Response<zpanel_proto::DockerReply>, Status> {
        let principal = self.principal(&request).await?;
        let body = request.into_inner();
        let request = body
            .request
            .ok_or_else(|| Status::invalid_argument("docker needs a request"))?;
        let reply = self.state.docker(&principal, &body.host, request).await?;
        Ok(Response::new(reply))
    }

    type DockerLogsStream = docker::LogsStream;

    async fn docker_logs(
        &self,
        request: Request<zpanel_proto::DockerLogsRequest>,
    ) -> Result<Response<docker::LogsStream>, Status> {
        let principal = self.principal(&request).await?;
        let stream = docker::logs(&self.state, &principal, request.into_inner()).await?;
        Ok(Response::new(stream))
    }

    type DockerWatchStream = docker::WatchStream;

    async fn docker_watch(
        &self,
        request: Request<zpanel_proto::DockerWatchRequest>,
    ) -> Result<Response<docker::WatchStream>, Status> {
        let principal = self.principal(&request).await?;
        let stream = docker::watch(&self.state, &principal, request.into_inner()).await?;
        Ok(Response::new(stream))
    }

    type DockerPullStream = docker::PullStream;

    async fn docker_pull(
        &self,
        request: Request<zpanel_proto::DockerPullRequest>,
    ) -> Result<Response<docker::PullStream>, Status> {
        let principal = self.principal(&request).await?;
        let stream = docker::pull(&self.state, &principal, request.into_inner()).await?;
        Ok(Response::new(stream))
    }

    async fn docker_import(
        &self,
        request: Request<Streaming<zpanel_proto::DockerImportRequest>>,
    ) -> Result<Response<zpanel_proto::DockerReply>, Status> {
        let principal = self.principal(&request).await?;
        let reply = docker::import(&self.state, &principal, request.into_inner()).await?;
        Ok(Response::new(reply))
    }

    async fn query_metrics(
        &self,
        request: Request<zpanel_proto::QueryMetricsRequest>,
    ) -> Result<Response<zpanel_proto::QueryMetricsResponse>, Status> {
        let principal = self.principal(&request).await?;
        let answer = metrics::query(&self.state, &principal, request.into_inner()).await?;
        Ok(Response::new(answer))
    }

    async fn list_processes(
        &self,
        request: Request<zpanel_proto::ListProcessesRequest>,
    ) -> Result<Response<zpanel_proto::ProcessListing>, Status> {
        let principal = self.principal(&request).await?;
        let answer = metrics::processes(&self.state, &principal, request.into_inner()).await?;
        Ok(Response::new(answer))
    }

    async fn list_alert_rules(
        &self,
        request: Request<zpanel_proto::ListAlertRulesRequest>,
    ) -> Result<Response<zpanel_proto::ListAlertRulesResponse>, Status> {
        let principal = self.principal(&request).await?;
        let answer = alerts::list_rules(&self.state, &principal, request.into_inner()).await?;
        Ok(Response::new(answer))
    }

    async fn create_alert_rule(
        &self,
        request: Request<zpanel_proto::CreateAlertRuleRequest>,
    ) -> Result<Response<zpanel_proto::AlertRule>, Status> {
        let principal = self.principal(&request).await?;
        let answer = alerts::create_rule(&self.state, &principal, request.into_inner()).await?;
        Ok(Response::new(answer))
    }

    async fn delete_alert_rule(
        &self,
        request: Request<zpanel_proto::DeleteAlertRuleRequest>,
    ) -> Result<Response<zpanel_proto::DeleteAlertRuleResponse>, Status> {
        let principal = self.principal(&request).await?;
        let answer = alerts::delete_rule(&self.state, &principal, request.into_inner()).await?;
        Ok(Response::new(answer))
    }

    async fn list_alert_channels(
        &self,
        request: Request<zpanel_proto::ListAlertChannelsRequest>,
    ) -> Result<Response<zpanel_proto::ListAlertChannelsResponse>, Status> {
        let principal = self.principal(&request).await?;
        let answer = alerts::list_channels(&self.state, &principal, request.into_inner()).await?;
        Ok(Response::new(answer))
    }

    async fn create_alert_channel(
        &self,
        request: Request<zpanel_proto::CreateAlertChannelRequest>,
    ) -> Result<Response<zpanel_proto::AlertChannel>, Status> {
        let principal = self.principal(&request).await?;
        let answer = alerts::create_channel(&self.state, &principal, request.into_inner()).await?;
        Ok(Response::new(answer))
    }

    async fn delete_alert_channel(
        &self,
        request: Request<zpanel_proto::DeleteAlertChannelRequest>,
    ) -> Result<Response<zpanel_proto::DeleteAlertChannelResponse>, Status> {
        let principal = self.principal(&request).await?;
        let answer = alerts::delete_channel(&self.state, &principal, request.into_inner()).await?;
        Ok(Response::new(answer))
    }

    async fn test_alert_channel(
        &self,
        request: Request<zpanel_proto::TestAlertChannelRequest>,
    ) -> Result<Response<zpanel_proto::TestAlertChannelResponse>, Status> {
        let principal = self.principal(&request).await?;
        let answer = alerts::test_channel(&self.state, &principal, request.into_inner()).await?;
        Ok(Response::new(answer))
    }

    async fn list_alert_events(
        &self,
        request: Request<zpanel_proto::ListAlertEventsRequest>,
    ) -> Result<Response<zpanel_proto::ListAlertEventsResponse>, Status> {
        let principal = self.principal(&request).await?;
        let answer = alerts::list_events(&self.state, &principal, request.into_inner()).await?;
        Ok(Response::new(answer))
    }

    async fn kill_terminal(
        &self,
        request: Request<KillTerminalRequest>,
    ) -> Result<Response<KillTerminalResponse>, Status> {
        let principal = self.principal(&request).await?;
        let body = request.into_inner();
        self.state
            .terminal_kill(&principal, &body.host, &body.session_id)
            .await?;
        Ok(Response::new(KillTerminalResponse {}))
    }
}

/// Moves a terminal viewer's traffic between the client's stream and the host until the
/// shell exits or either side goes away (the session stays on the host, detached).
async fn relay_terminal(
    mut terminal: TerminalChannel,
    mut inbound: Streaming<TerminalClientMessage>,
    tx: mpsc::Sender<Result<TerminalServerMessage, Status>>,
) {
    use terminal_client_message::Body as Client;
    use terminal_server_message::Body as Server;
    loop {
        let result = tokio::select! {
            message = inbound.message() => match message {
                Ok(Some(TerminalClientMessage { body: Some(Client::Input(chunk)) })) => {
                    terminal.queue_input(chunk.offset, chunk.payload)
                }
                Ok(Some(TerminalClientMessage { body: Some(Client::Ack(ack)) })) => terminal.ack(ack.offset).await,
                Ok(Some(TerminalClientMessage { body: Some(Client::Resize(size)) })) => {
                    terminal.resize(size.cols, size.rows).await
                }
                Ok(Some(_)) => Err(ServiceError::InvalidArgument(
                    "open and attach may only start a terminal stream".into(),
                )),
                Ok(None) | Err(_) => return,
            },
            event = terminal.next_event() => {
                let message = match event {
                    TerminalEvent::Output(chunk) => Server::Output(chunk),
                    TerminalEvent::InputAck(offset) => Server::InputAck(zpanel_proto::StreamAck {
                        stream: StreamKind::Stdin as i32,
                        offset,
                    }),
                    TerminalEvent::Exited(exit) => {
                        let _ = tx.send(Ok(TerminalServerMessage { body: Some(Server::Exit(exit)) })).await;
                        return terminal.release();
                    }
                    TerminalEvent::Lost(reason) => {
                        let e = ServiceError::Unavailable(format!(
                            "connection to the host lost ({reason}); re-attach"
                        ));
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                    TerminalEvent::TakenOver(reason) => {
                        let _ = tx.send(Err(Status::aborted(reason))).await;
                        return;
                    }
                };
                if tx.send(Ok(TerminalServerMessage { body: Some(message) })).await.is_err() {
                    return;
                }
                Ok(())
            }
        };
        if let Err(e) = result.and(terminal.flush_input().await) {
            let _ = tx.send(Err(e.into())).await;
            return;
        }
    }
}

fn server_message(body: exec_server_message::Body) -> ExecServerMessage {
    ExecServerMessage { body: Some(body) }
}

/// Moves an exec's traffic between the client's stream and the host's channel until the
/// client has everything (then the job is released) or either side goes away (then the
/// job stays on the host, detached, for the client to resume).
async fn relay_exec(
    exec: ExecChannel,
    mut inbound: Streaming<ExecClientMessage>,
    tx: mpsc::Sender<Result<ExecServerMessage, Status>>,
) {
    use exec_client_message::Body as Client;
    use exec_server_message::Body as Server;
    let ExecChannel { mut channel, .. } = exec;
    let mut exited = false;
    loop {
        tokio::select! {
            message = inbound.message() => {
                let sent = match message {
                    Ok(Some(ExecClientMessage { body: Some(Client::Stdin(mut chunk)) })) => {
                        chunk.stream = StreamKind::Stdin as i32;
                        channel.send_data(chunk).await
                    }
                    Ok(Some(ExecClientMessage { body: Some(Client::Ack(ack)) })) => channel.send_ack(ack).await,
                    Ok(Some(ExecClientMessage { body: Some(Client::Cancel(_)) })) => channel.send_signal(SIGTERM).await,
                    Ok(Some(_)) => {
                        let _ = tx.send(Err(Status::invalid_argument("open and resume may only start an exec stream"))).await;
                        return;
                    }
                    Ok(None) if exited => return channel.release(),
                    Ok(None) | Err(_) => return,
                };
                if sent.is_err() {
                    let _ = tx.send(Err(Status::unavailable("host session lost; resume the exec"))).await;
                    return;
                }
            }
            event = channel.events.recv() => {
                let message = match event {
                    Some(ChannelEvent::Data(chunk)) => Server::Output(chunk),
                    Some(ChannelEvent::Ack(ack)) => Server::StdinAck(ack),
                    Some(ChannelEvent::Exited(exit)) => {
                        exited = true;
                        Server::Exit(exit)
                    }
                    Some(ChannelEvent::FileDone(_) | ChannelEvent::FileChanged(_) | ChannelEvent::DockerUpdated(_) | ChannelEvent::DockerDone(_) | ChannelEvent::UpgradeDone(_)) => {
                        let _ = tx.send(Err(Status::internal("the host sent a file or Docker event on an exec channel"))).await;
                        return;
                    }
                    Some(ChannelEvent::Closed(reason) | ChannelEvent::Superseded(reason)) => {
                        let _ = tx.send(Err(Status::unavailable(format!("host channel closed: {reason}")))).await;
                        return;
                    }
                    None => {
                        let _ = tx.send(Err(Status::unavailable("host session lost; resume the exec"))).await;
                        return;
                    }
                };
                if tx.send(Ok(server_message(message))).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Streams a file's content to the client; the client's pace (HTTP/2 flow control) is the
/// host's pace.
async fn relay_read(
    mut reader: FileReadChannel,
    mut offset: u64,
    tx: mpsc::Sender<Result<ReadFileResponse, Status>>,
) {
    loop {
        let (message, last) = match reader.next().await {
            Ok(next) => {
                let chunk = zpanel_proto::StreamChunk {
                    stream: StreamKind::Stdout as i32,
                    offset,
                    eof: next.is_none(),
                    payload: next.clone().unwrap_or_default(),
                };
                offset += chunk.payload.len() as u64;
                let body = read_file_response::Body::Data(chunk);
                (Ok(ReadFileResponse { body: Some(body) }), next.is_none())
            }
            Err(e) => (Err(e.into()), true),
        };
        if tx.send(message).await.is_err() || last {
            return;
        }
    }
}

/// Moves an upload from the client to the host, acknowledging what the host holds, until
/// the client's last chunk (eof) and the host's verdict.
async fn relay_write(
    state: Arc<AppState>,
    mut writer: FileWriteChannel,
    mut inbound: Streaming<WriteFileRequest>,
    tx: mpsc::Sender<Result<WriteFileResponse, Status>>,
) {
    let mut acked = writer.acked();
    let result = loop {
        let chunk = match inbound.message().await {
            Ok(Some(WriteFileRequest {
                body: Some(write_file_request::Body::Data(chunk)),
            })) => chunk,
            Ok(Some(WriteFileRequest {
                body: Some(write_file_request::Body::Sha256(sha256)),
            })) => {
                writer.expect_sha256(sha256);
                continue;
            }
            Ok(Some(_)) => {
                break Err(ServiceError::InvalidArgument(
                    "start may only begin a write_file stream".into(),
                ));
            }
            // The client went away before the end: the host keeps a resumable upload.
            Ok(None) | Err(_) => return,
        };
        let eof = chunk.eof;
        if let Err(e) = writer.write_at(chunk.offset, chunk.payload).await {
            break Err(e);
        }
        if writer.acked() > acked {
            acked = writer.acked();
            let ack = zpanel_proto::StreamAck {
                stream: StreamKind::Stdin as i32,
                offset: acked,
            };
            let message = WriteFileResponse {
                body: Some(write_file_response::Body::Ack(ack)),
            };
            if tx.send(Ok(message)).await.is_err() {
                return;
            }
        }
        if eof {
            break writer.finish(&state).await;
        }
    };
    let message = match result {
        Ok(done) => Ok(WriteFileResponse {
            body: Some(write_file_response::Body::Done(done)),
        }),
        Err(e) => Err(e.into()),
    };
    let _ = tx.send(message).await;
}
