//! The Docker service: the host's engine at `[docker] endpoint` (bollard), reached lazily and
//! again after a failure. Requests answered at once are in `requests`, what they answer with
//! in `convert`, channels that stream (logs, stats, events, pull, import) in `channel`, and
//! the shell inside a container a terminal runs in `shell`.

mod channel;
mod convert;
mod requests;
mod shell;
#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::errors::Error as EngineError;
use bollard::{API_DEFAULT_VERSION, BollardRequest, ClientVersion};
use zpanel_proto::{DockerError, DockerOutcome, DockerReply, OpenError, OpenResult, open_result};

pub use self::channel::DockerChannel;
pub use self::shell::container_shell;
use crate::config::check_docker_endpoint;

/// How long an engine has to answer the first request of a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a request may take before its answer starts (a stop waits longer: its own
/// timeout and this). Streams run as long as they last.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// Why a Docker request failed: the kind the control plane maps to a status, and one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DockerFailure {
    pub kind: DockerError,
    pub message: String,
}

impl DockerFailure {
    pub fn new(kind: DockerError, message: impl Into<String>) -> DockerFailure {
        DockerFailure {
            kind,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> DockerFailure {
        DockerFailure::new(DockerError::Invalid, message)
    }

    /// The same failure, its line naming `what` (`container web`) unless the engine's
    /// already does: the engine often names a container by its id where the user gave a name.
    pub fn naming(mut self, kind: &str, name: &str) -> DockerFailure {
        if !name.is_empty() && !self.message.contains(name) {
            self.message = format!("{kind} {name}: {}", self.message);
        }
        self
    }

    /// The refusal of an open: NOT_FOUND, BAD_REQUEST (invalid parameters) or REFUSED, with
    /// the Docker error and the line.
    pub fn refusal(self, channel_id: u64) -> OpenResult {
        let error = match self.kind {
            DockerError::NotFound => OpenError::NotFound,
            DockerError::Invalid => OpenError::BadRequest,
            _ => OpenError::Refused,
        };
        OpenResult {
            channel_id,
            error: error as i32,
            message: self.message,
            docker_error: self.kind as i32,
            ..OpenResult::default()
        }
    }

    /// How a pull or import that failed ended.
    pub fn outcome(self) -> DockerOutcome {
        DockerOutcome {
            error: self.kind as i32,
            message: self.message,
            reply: None,
        }
    }
}

/// The answer to a request answered at once.
pub fn answer(channel_id: u64, result: Result<DockerReply, DockerFailure>) -> OpenResult {
    match result {
        Ok(reply) => OpenResult {
            channel_id,
            reply: Some(open_result::Reply::Docker(reply)),
            ..OpenResult::default()
        },
        Err(failure) => failure.refusal(channel_id),
    }
}

/// A container, volume or network named by id or name (`what` says which): letters, digits,
/// `_`, `.` and `-`, as the engine allows. Names go into the engine's URL paths as they are,
/// so anything else (`/`, `..`, `?`) could reach another endpoint: it is refused.
pub fn object_name<'a>(what: &str, name: &'a str) -> Result<&'a str, DockerFailure> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
    match name.chars().next() {
        Some(first) if first.is_ascii_alphanumeric() && name.chars().all(allowed) => Ok(name),
        _ => Err(DockerFailure::invalid(format!(
            "{name:?} is not a {what} id or name (letters, digits, _ . -)"
        ))),
    }
}

/// An image reference or id (`registry:5000/team/app:1.2`, `app@sha256:...`), checked like
/// [`object_name`]: it goes into the engine's URL paths too.
pub fn image_name(name: &str) -> Result<&str, DockerFailure> {
    let allowed =
        |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '/' | ':' | '@');
    let starts_well = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    match starts_well && name.chars().all(allowed) && !name.contains("..") {
        true => Ok(name),
        false => Err(DockerFailure::invalid(format!(
            "{name:?} is not an image name (name[:tag] or name@digest)"
        ))),
    }
}

// === impl Docker ===

/// The engine of this host, as far as the daemon knows it.
pub struct Docker {
    endpoint: String,
    /// A client that spoke to the engine, at the API version they share; `None` until one
    /// did, and again after the engine stopped answering.
    client: Mutex<Option<bollard::Docker>>,
}

impl Docker {
    pub fn new(endpoint: String) -> Arc<Docker> {
        Arc::new(Docker {
            endpoint,
            client: Mutex::new(None),
        })
    }

    /// Where the engine is reached (`unix:///var/run/docker.sock`).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn cached(&self) -> std::sync::MutexGuard<'_, Option<bollard::Docker>> {
        self.client.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A client of the engine: the one that last answered, or a new connection (whose API
    /// version is the highest both sides speak).
    pub async fn client(&self) -> Result<bollard::Docker, DockerFailure> {
        if let Some(client) = self.cached().clone() {
            return Ok(client);
        }
        let client = self.connect().await.map_err(|e| self.failure(&e))?;
        *self.cached() = Some(client.clone());
        Ok(client)
    }

    /// Asks the engine its API version (unversioned, which every engine answers) and opens
    /// a client speaking the lower of it and bollard's.
    async fn connect(&self) -> Result<bollard::Docker, EngineError> {
        let probe = open(&self.endpoint, API_DEFAULT_VERSION)?.with_request_modifier(unversioned);
        let version = tokio::time::timeout(CONNECT_TIMEOUT, probe.version())
            .await
            .map_err(|_| EngineError::RequestTimeoutError)??;
        let engine = version
            .api_version
            .as_deref()
            .and_then(parse_api_version)
            .ok_or(EngineError::APIVersionParseError {})?;
        let shared = match engine < *API_DEFAULT_VERSION {
            true => engine,
            false => *API_DEFAULT_VERSION,
        };
        tracing::debug!(endpoint = %self.endpoint, api = %shared, "docker engine answers");
        open(&self.endpoint, &shared)
    }

    /// The failure an engine error is: the engine's own line, or that no engine answers (the
    /// next request connects again).
    pub fn failure(&self, e: &EngineError) -> DockerFailure {
        let failure = failure(&self.endpoint, e);
        if failure.kind == DockerError::Unavailable {
            self.cached().take();
        }
        failure
    }
}

/// A client of the engine at `endpoint` speaking `version` (no request made yet).
fn open(endpoint: &str, version: &ClientVersion) -> Result<bollard::Docker, EngineError> {
    check_docker_endpoint(endpoint)
        .map_err(|reason| EngineError::UnsupportedURISchemeError { uri: reason })?;
    let timeout = REQUEST_TIMEOUT.as_secs();
    match endpoint.split_once("://") {
        Some(("unix", _)) => bollard::Docker::connect_with_unix(endpoint, timeout, version),
        _ => bollard::Docker::connect_with_http(endpoint, timeout, version),
    }
}

/// `1.41` as a client version.
fn parse_api_version(text: &str) -> Option<ClientVersion> {
    let (major, minor) = text.split_once('.')?;
    Some(ClientVersion {
        major_version: major.parse().ok()?,
        minor_version: minor.parse().ok()?,
    })
}

/// A request without its `/vX.Y` prefix: the engine answers at its own API version.
fn unversioned(mut request: BollardRequest) -> BollardRequest {
    let uri = request.uri().clone();
    let Some(tail) = uri
        .path_and_query()
        .and_then(|path| path.as_str().strip_prefix("/v"))
        .and_then(|rest| rest.split_once('/'))
        .map(|(_, tail)| format!("/{tail}"))
    else {
        return request;
    };
    let mut parts = uri.into_parts();
    parts.path_and_query = tail.parse().ok();
    if let Ok(uri) = hyper::Uri::from_parts(parts) {
        *request.uri_mut() = uri;
    }
    request
}

/// Maps an engine error: 404 NOT_FOUND, 409 CONFLICT, 400 INVALID, a connection that fails
/// UNAVAILABLE, anything else ENGINE; the line is the engine's own.
fn failure(endpoint: &str, e: &EngineError) -> DockerFailure {
    let unavailable = |cause: String| {
        DockerFailure::new(
            DockerError::Unavailable,
            format!(
                "no Docker engine answers at {endpoint}: {cause}; start it or set [docker] \
                 endpoint in bridge.toml"
            ),
        )
    };
    match e {
        EngineError::DockerResponseServerError {
            status_code,
            message,
        } => {
            let kind = match status_code {
                404 => DockerError::NotFound,
                409 => DockerError::Conflict,
                400 => DockerError::Invalid,
                _ => DockerError::Engine,
            };
            DockerFailure::new(kind, engine_line(message))
        }
        EngineError::DockerStreamError { error } => {
            DockerFailure::new(DockerError::Engine, engine_line(error))
        }
        EngineError::SocketNotFoundError(path) => unavailable(format!("{path} does not exist")),
        EngineError::UnsupportedURISchemeError { uri } => unavailable(uri.clone()),
        EngineError::RequestTimeoutError => unavailable("it did not answer in time".into()),
        EngineError::HyperLegacyError { err } if err.is_connect() => unavailable(deepest(err)),
        EngineError::IOError { err }
            if matches!(
                err.kind(),
                std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::NotFound
                    | std::io::ErrorKind::PermissionDenied
            ) =>
        {
            unavailable(deepest(err))
        }
        // A stream the engine stopped answering midway (it went away or restarted).
        EngineError::HyperResponseError { .. } | EngineError::IOError { .. } => DockerFailure::new(
            DockerError::Engine,
            format!(
                "the connection to the Docker engine at {endpoint} broke: {}",
                deepest(e)
            ),
        ),
        other => DockerFailure::new(DockerError::Engine, engine_line(&deepest(other))),
    }
}

/// The innermost cause of an error: "connection refused (os error 111)", not "client error
/// (Connect)".
fn deepest(e: &(dyn std::error::Error + 'static)) -> String {
    let mut inner = e;
    while let Some(source) = inner.source() {
        inner = source;
    }
    engine_line(&inner.to_string())
}

/// The engine's message as one lower-case line: "No such container: web" becomes "no such
/// container: web"; names and acronyms keep their case.
fn engine_line(message: &str) -> String {
    let line = message.split_whitespace().collect::<Vec<_>>().join(" ");
    let line = line.trim_end_matches('.');
    let mut chars = line.chars();
    match (chars.next(), chars.next()) {
        (Some(first), Some(second)) if first.is_uppercase() && second.is_lowercase() => {
            first.to_lowercase().chain(line.chars().skip(1)).collect()
        }
        _ => line.to_string(),
    }
}
