//! Images: `images`, `pull` (a line on stderr each time a layer changes state, a progress
//! line while one downloads, then the image's id on stdout), `import` (a local tarball
//! streamed to the host with bounded memory; the image's id on stdout) and `rmi`.

use std::path::Path;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;
use zpanel_proto::{
    DockerImport, DockerImportRequest, DockerImportStart, DockerPull, DockerPullRequest, ImageList,
    ImageRemove, ImageSummary, PullProgress, StreamChunk, StreamKind, docker_import_request,
    docker_pull_response, docker_reply, docker_request,
};
use zpanel_shared::frame::MAX_CHUNK_BYTES;

use super::{each, request, short_id, unexpected};
use crate::client::{self, call_failed};
use crate::config::Settings;
use crate::display::{self, ago};
use crate::files::progress::{Progress, human_bytes};
use crate::files::{io_reason, local_error};
use crate::streaming::request_stream;

/// Chunks of an import read ahead of what the call has sent.
const IMPORT_CHUNKS_AHEAD: usize = 8;

#[derive(Debug, serde::Serialize)]
struct ImageJson<'a> {
    id: &'a str,
    tags: &'a [String],
    size: u64,
    /// Unix seconds, as the API says it.
    created: i64,
    /// -1 when the engine did not count.
    containers: i64,
}

impl<'a> From<&'a ImageSummary> for ImageJson<'a> {
    fn from(i: &'a ImageSummary) -> Self {
        ImageJson {
            id: &i.id,
            tags: &i.tags,
            size: i.size,
            created: i.created,
            containers: i.containers,
        }
    }
}

/// `images [-a] [--json]`.
pub async fn list(settings: &Settings, host: &str, all: bool, json: bool) -> anyhow::Result<()> {
    let mut client = client::connect(settings).await?;
    let op = docker_request::Op::Images(ImageList { all });
    let images = match request(&mut client, host, op).await? {
        docker_reply::Result::Images(listing) => listing.images,
        _ => return Err(unexpected("an image list")),
    };
    if json {
        let rows: Vec<ImageJson> = images.iter().map(ImageJson::from).collect();
        return display::print_json(&rows, "images");
    }
    print!("{}", table(&images, zpanel_shared::unix_now()));
    Ok(())
}

/// One row per tag, as `docker images` does; `<none>` for a dangling image.
fn table(images: &[ImageSummary], now: i64) -> String {
    let header = ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"];
    let rows = images.iter().flat_map(|image| {
        let names: Vec<(String, String)> = if image.tags.is_empty() {
            vec![repository_and_tag("")]
        } else {
            image.tags.iter().map(|t| repository_and_tag(t)).collect()
        };
        names.into_iter().map(|(repository, tag)| {
            [
                repository,
                tag,
                short_id(&image.id),
                ago(image.created, now),
                human_bytes(image.size as f64),
            ]
        })
    });
    display::table(header, rows)
}

/// `repo:tag` as its two parts (a registry's port is not a tag); `<none>` for what is
/// missing.
fn repository_and_tag(reference: &str) -> (String, String) {
    let (repository, tag) = zpanel_shared::image::split_reference(reference);
    let part = |text: Option<&str>| match text {
        None | Some("" | "<none>") => "<none>".to_string(),
        Some(text) => text.to_string(),
    };
    (part(Some(repository)), part(tag))
}

/// `pull IMAGE`.
pub async fn pull(settings: &Settings, host: &str, image: String) -> anyhow::Result<()> {
    let mut client = client::connect(settings).await?;
    let request = DockerPullRequest {
        host: host.into(),
        pull: Some(DockerPull { image }),
    };
    let mut responses = client
        .docker_pull(request)
        .await
        .map_err(call_failed)?
        .into_inner();
    let mut shown = PullDisplay::default();
    let image_id = loop {
        let response = responses.message().await.map_err(|status| {
            shown.bar_done();
            call_failed(status)
        })?;
        match response.and_then(|r| r.body) {
            Some(docker_pull_response::Body::Progress(progress)) => shown.update(progress),
            Some(docker_pull_response::Body::ImageId(id)) => break id,
            None => {
                shown.bar_done();
                return Err(unexpected("the pulled image's id"));
            }
        }
    };
    shown.bar_done();
    println!("{image_id}");
    Ok(())
}

/// What `pull` shows on stderr: a line when a layer's state changes, and (on a terminal) a
/// progress line for the layer that last moved.
#[derive(Default)]
struct PullDisplay {
    /// Each layer's last state shown.
    states: std::collections::HashMap<String, String>,
    /// The progress line: the layer and state it is about.
    bar: Option<((String, String), Progress)>,
}

impl PullDisplay {
    fn update(&mut self, progress: PullProgress) {
        let PullProgress {
            id,
            status,
            current,
            total,
        } = progress;
        if self.states.get(&id) != Some(&status) {
            self.bar_done();
            eprintln!("{}", state_line(&id, &status));
            self.states.insert(id.clone(), status.clone());
        }
        if total == 0 {
            return;
        }
        let key = (id, status);
        if self.bar.as_ref().is_none_or(|(shown, _)| *shown != key) {
            self.bar_done();
            let label = state_line(&key.0, &key.1);
            self.bar = Some((key, Progress::on_terminal(label, Some(total))));
        }
        if let Some((_, bar)) = &mut self.bar {
            bar.update(current.min(total));
        }
    }

    /// Erases the progress line.
    fn bar_done(&mut self) {
        if let Some((_, mut bar)) = self.bar.take() {
            bar.clear();
        }
    }
}

fn state_line(layer: &str, status: &str) -> String {
    if layer.is_empty() {
        status.to_string()
    } else {
        format!("{layer}: {status}")
    }
}

/// `import FILE|- IMAGE`: the tarball streamed as it is read.
pub async fn import(
    settings: &Settings,
    host: &str,
    file: &Path,
    image: String,
) -> anyhow::Result<()> {
    let from_stdin = file == Path::new("-");
    let (reader, total): (Box<dyn AsyncRead + Send + Unpin>, Option<u64>) = if from_stdin {
        (Box::new(tokio::io::stdin()), None)
    } else {
        let opened = tokio::fs::File::open(file)
            .await
            .map_err(|e| local_error(file, &e))?;
        let size = opened.metadata().await.ok().map(|m| m.len());
        (Box::new(opened), size)
    };
    let mut client = client::connect(settings).await?;
    let (tx, requests) = request_stream(IMPORT_CHUNKS_AHEAD);
    let start = DockerImportStart {
        host: host.into(),
        request: Some(DockerImport {
            image: image.clone(),
        }),
    };
    let _ = tx
        .send(import_message(docker_import_request::Body::Start(start)))
        .await;
    let progress = Progress::on_terminal(format!("{host}: import {image}"), total);
    // `tx` outlives the call: a read that fails drops the call (the host discards what it
    // got) before the request stream could end as if the tarball were whole.
    let send = send_tarball(reader, &tx, progress);
    let call = client.docker_import(requests);
    tokio::pin!(send, call);
    let mut sent = false;
    let imported = loop {
        tokio::select! {
            imported = &mut call => break imported,
            read = &mut send, if !sent => {
                read.map_err(|e| {
                    if from_stdin {
                        anyhow::anyhow!("cannot read stdin: {}", io_reason(&e))
                    } else {
                        local_error(file, &e)
                    }
                })?;
                sent = true;
            }
        }
    };
    let reply = imported.map_err(call_failed)?.into_inner();
    match reply.result {
        Some(docker_reply::Result::ImageId(id)) => {
            println!("{id}");
            Ok(())
        }
        _ => Err(unexpected("the imported image's id")),
    }
}

fn import_message(body: docker_import_request::Body) -> DockerImportRequest {
    DockerImportRequest { body: Some(body) }
}

/// Sends the tarball as stream STDIN from 0, the last chunk with eof. Stops quietly when the
/// call went away (its own error says why).
async fn send_tarball(
    mut reader: impl AsyncRead + Unpin,
    tx: &mpsc::Sender<DockerImportRequest>,
    mut progress: Progress,
) -> std::io::Result<()> {
    let mut offset = 0u64;
    loop {
        let mut buffer = vec![0u8; MAX_CHUNK_BYTES];
        let read = match reader.read(&mut buffer).await {
            Ok(read) => read,
            Err(e) => {
                progress.clear();
                return Err(e);
            }
        };
        buffer.truncate(read);
        let chunk = StreamChunk {
            stream: StreamKind::Stdin as i32,
            offset,
            payload: Bytes::from(buffer),
            eof: read == 0,
        };
        if tx
            .send(import_message(docker_import_request::Body::Data(chunk)))
            .await
            .is_err()
        {
            progress.clear();
            return Ok(());
        }
        if read == 0 {
            progress.finish();
            return Ok(());
        }
        offset += read as u64;
        progress.update(offset);
    }
}

/// `rmi [-f] IMAGE...`.
pub async fn remove(
    settings: &Settings,
    host: &str,
    images: &[String],
    force: bool,
) -> anyhow::Result<i32> {
    each(settings, host, images, |image| {
        docker_request::Op::RemoveImage(ImageRemove {
            image: image.into(),
            force,
        })
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_split_into_repository_and_tag() {
        let split = |r| repository_and_tag(r);
        let pair = |a: &str, b: &str| (a.to_string(), b.to_string());
        assert_eq!(split("busybox:latest"), pair("busybox", "latest"));
        assert_eq!(
            split("localhost:5000/team/app:1.2"),
            pair("localhost:5000/team/app", "1.2")
        );
        assert_eq!(
            split("localhost:5000/app"),
            pair("localhost:5000/app", "<none>")
        );
        assert_eq!(split("<none>:<none>"), pair("<none>", "<none>"));
        assert_eq!(split(""), pair("<none>", "<none>"));
    }

    #[test]
    fn the_table_has_a_row_per_tag() {
        let now = 1_800_000_000;
        let image = ImageSummary {
            id: "sha256:0123456789abcdef".into(),
            tags: vec!["zpanel-test/busybox:latest".into(), "busybox:1".into()],
            size: 4_400_000,
            created: now - 3 * 86400,
            containers: 2,
        };
        let dangling = ImageSummary {
            id: "sha256:fedcba9876543210".into(),
            size: 100,
            created: now - 60,
            ..ImageSummary::default()
        };
        assert_eq!(
            table(&[image, dangling], now),
            "REPOSITORY           TAG     IMAGE ID      CREATED  SIZE\n\
             zpanel-test/busybox  latest  0123456789ab  3d ago   4.2 MiB\n\
             busybox              1       0123456789ab  3d ago   4.2 MiB\n\
             <none>               <none>  fedcba987654  1m ago   100 B\n"
        );
    }

    #[tokio::test]
    async fn a_tarball_is_sent_in_order_and_ends_with_eof() {
        let content = vec![7u8; MAX_CHUNK_BYTES + 10];
        let (tx, mut rx) = mpsc::channel(16);
        send_tarball(&content[..], &tx, Progress::hidden())
            .await
            .unwrap();
        drop(tx);
        let mut chunks = Vec::new();
        while let Some(DockerImportRequest {
            body: Some(docker_import_request::Body::Data(chunk)),
        }) = rx.recv().await
        {
            chunks.push((chunk.offset, chunk.payload.len(), chunk.eof));
        }
        assert_eq!(
            chunks,
            [
                (0, MAX_CHUNK_BYTES, false),
                (MAX_CHUNK_BYTES as u64, 10, false),
                (MAX_CHUNK_BYTES as u64 + 10, 0, true)
            ]
        );
    }
}
