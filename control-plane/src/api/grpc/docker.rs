//! The Docker rpcs: logs, watches and pulls as response streams fed by the host's channel
//! at the client's pace, and imports taking the tarball from the client's stream.

use std::pin::Pin;

use futures_util::{Stream, StreamExt};
use tonic::{Status, Streaming};
use zpanel_proto::{
    DockerImportRequest, DockerLogsRequest, DockerPullRequest, DockerPullResponse, DockerReply,
    DockerUpdate, DockerWatchRequest, StreamChunk, docker_import_request, docker_pull_response,
    docker_reply, docker_watch_request,
};

use crate::service::docker::PullEvent;
use crate::service::relay::{Relay, items};
use crate::service::{AppState, Principal};

type Items<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;
pub type LogsStream = Items<StreamChunk>;
pub type WatchStream = Items<DockerUpdate>;
pub type PullStream = Items<DockerPullResponse>;

/// A relay's items as a response stream, each mapped to its message.
fn respond<R: Relay, T: Send + 'static>(relay: R, message: fn(R::Item) -> T) -> Items<T> {
    Box::pin(items(relay).map(move |item| item.map(message).map_err(Status::from)))
}

pub async fn logs(
    state: &AppState,
    principal: &Principal,
    body: DockerLogsRequest,
) -> Result<LogsStream, Status> {
    let logs = body
        .logs
        .ok_or_else(|| Status::invalid_argument("docker_logs needs logs"))?;
    let channel = state.docker_logs(principal, &body.host, logs).await?;
    Ok(respond(channel, |chunk| chunk))
}

pub async fn watch(
    state: &AppState,
    principal: &Principal,
    body: DockerWatchRequest,
) -> Result<WatchStream, Status> {
    let channel = match body.what {
        Some(docker_watch_request::What::Stats(stats)) => {
            state
                .docker_stats(principal, &body.host, stats.container)
                .await?
        }
        Some(docker_watch_request::What::Events(_)) => {
            state.docker_events(principal, &body.host).await?
        }
        None => {
            return Err(Status::invalid_argument(
                "docker_watch needs what to watch: stats or events",
            ));
        }
    };
    Ok(respond(channel, |update| update))
}

pub async fn pull(
    state: &AppState,
    principal: &Principal,
    body: DockerPullRequest,
) -> Result<PullStream, Status> {
    let image = body.pull.map(|pull| pull.image).unwrap_or_default();
    let channel = state.docker_pull(principal, &body.host, image).await?;
    Ok(respond(channel, |event| {
        let body = match event {
            PullEvent::Progress(progress) => docker_pull_response::Body::Progress(progress),
            PullEvent::Done(image_id) => docker_pull_response::Body::ImageId(image_id),
        };
        DockerPullResponse { body: Some(body) }
    }))
}

/// Takes the tarball from the client's stream (its end, or a chunk with eof, ends it) and
/// answers the image's id.
pub async fn import(
    state: &AppState,
    principal: &Principal,
    mut inbound: Streaming<DockerImportRequest>,
) -> Result<DockerReply, Status> {
    use docker_import_request::Body;
    let Some(Body::Start(start)) = inbound.message().await?.and_then(|m| m.body) else {
        return Err(Status::invalid_argument(
            "docker_import stream must start with start",
        ));
    };
    let image = start.request.map(|r| r.image).unwrap_or_default();
    let mut import = state.docker_import(principal, &start.host, image).await?;
    while let Some(message) = inbound.message().await? {
        let Some(Body::Data(chunk)) = message.body else {
            return Err(Status::invalid_argument(
                "start may only begin a docker_import stream",
            ));
        };
        let eof = chunk.eof;
        import.write_at(chunk.offset, chunk.payload).await?;
        if eof {
            break;
        }
    }
    let image_id = import.finish().await?;
    Ok(DockerReply {
        result: Some(docker_reply::Result::ImageId(image_id)),
    })
}
