//! Files on hosts for the browser and scripts (see ARCHITECTURE.md "Files"): JSON for
//! listings and operations, raw bytes for content (with ranges and versions as ETags),
//! tar for folders, Server-Sent Events for watches.

use std::convert::Infallible;
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use zpanel_proto::{
    FileChmod, FileChown, FileCopy, FileDelete, FileFind, FileInfo, FileList, FileMkdir, FileRead,
    FileRename, FileReply, FileRequest, FileStat, FileType, FileWrite, file_change, file_reply,
    file_request,
};

use super::auth::Caller;
use crate::service::files::FileReadChannel;
use crate::service::relay::items;
use crate::service::{AppState, ServiceError};

/// A listing page when the page does not say.
const DEFAULT_PAGE: u32 = 500;
/// What the browser shows for a write refused because the file changed.
const CHANGED_ON_DISK: &str = "changed on disk: reload, overwrite or compare";

#[derive(Serialize)]
pub struct InfoJson {
    path: String,
    name: String,
    #[serde(rename = "type")]
    kind: &'static str,
    size: u64,
    mode: u32,
    owner: String,
    group: String,
    modified_ms: i64,
    target: String,
    version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    sha256: Option<String>,
}

impl From<FileInfo> for InfoJson {
    fn from(info: FileInfo) -> Self {
        let kind = match info.r#type() {
            FileType::File => "file",
            FileType::Directory => "directory",
            FileType::Symlink => "symlink",
            FileType::Other | FileType::Unknown => "other",
        };
        let name = info
            .path
            .rsplit('/')
            .find(|part| !part.is_empty())
            .unwrap_or("/")
            .to_string();
        InfoJson {
            name,
            kind,
            size: info.size,
            mode: info.mode,
            owner: info.owner,
            group: info.group,
            modified_ms: info.modified_ns / 1_000_000,
            target: info.symlink_target,
            version: info.version,
            path: info.path,
            sha256: None,
        }
    }
}

fn reply_info(reply: FileReply) -> Result<InfoJson, ServiceError> {
    match reply.result {
        Some(file_reply::Result::Info(info)) => Ok(info.into()),
        _ => Err(ServiceError::Internal(
            "the host answered without the file's details".into(),
        )),
    }
}

#[derive(Deserialize)]
pub struct ListQuery {
    path: String,
    #[serde(default)]
    after: String,
    limit: Option<u32>,
}

#[derive(Serialize)]
pub struct ListingJson {
    directory: Option<InfoJson>,
    entries: Vec<InfoJson>,
    next_after: String,
}

async fn op(
    state: &AppState,
    caller: &Caller,
    host: &str,
    op: file_request::Op,
) -> Result<FileReply, ServiceError> {
    let request = FileRequest { op: Some(op) };
    state.file_op(&caller.principal, host, request).await
}

pub async fn list(
    State(state): State<Arc<AppState>>,
    Path(host): Path<String>,
    Query(query): Query<ListQuery>,
    caller: Caller,
) -> Result<Json<ListingJson>, ServiceError> {
    let list = FileList {
        path: query.path,
        after: query.after,
        limit: query.limit.unwrap_or(DEFAULT_PAGE),
    };
    let reply = op(&state, &caller, &host, file_request::Op::List(list)).await?;
    let Some(file_reply::Result::Listing(listing)) = reply.result else {
        return Err(ServiceError::Internal(
            "the host answered a listing without one".into(),
        ));
    };
    Ok(Json(ListingJson {
        directory: listing.directory.map(InfoJson::from),
        entries: listing.entries.into_iter().map(InfoJson::from).collect(),
        next_after: listing.next_after,
    }))
}

#[derive(Deserialize)]
pub struct PathQuery {
    path: String,
}

pub async fn stat(
    State(state): State<Arc<AppState>>,
    Path(host): Path<String>,
    Query(query): Query<PathQuery>,
    caller: Caller,
) -> Result<Json<InfoJson>, ServiceError> {
    let stat = FileStat { path: query.path };
    let reply = op(&state, &caller, &host, file_request::Op::Stat(stat)).await?;
    Ok(Json(reply_info(reply)?))
}

#[derive(Deserialize)]
pub struct FindQuery {
    path: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    content: String,
    limit: Option<u32>,
}

#[derive(Serialize)]
pub struct FoundJson {
    matches: Vec<InfoJson>,
    truncated: bool,
}

pub async fn find(
    State(state): State<Arc<AppState>>,
    Path(host): Path<String>,
    Query(query): Query<FindQuery>,
    caller: Caller,
) -> Result<Json<FoundJson>, ServiceError> {
    let find = FileFind {
        path: query.path,
        name_glob: query.name,
        content: query.content,
        limit: query.limit.unwrap_or(0),
    };
    let reply = op(&state, &caller, &host, file_request::Op::Find(find)).await?;
    let Some(file_reply::Result::Found(found)) = reply.result else {
        return Err(ServiceError::Internal(
            "the host answered a search without results".into(),
        ));
    };
    Ok(Json(FoundJson {
        matches: found.matches.into_iter().map(InfoJson::from).collect(),
        truncated: found.truncated,
    }))
}

/// A change to files, as the page posts it.
#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum OpJson {
    Mkdir {
        path: String,
        #[serde(default)]
        parents: bool,
        #[serde(default)]
        mode: u32,
    },
    Rename {
        from: String,
        to: String,
        #[serde(default)]
        overwrite: bool,
    },
    Copy {
        from: String,
        to: String,
        #[serde(default)]
        recursive: bool,
        #[serde(default)]
        overwrite: bool,
    },
    Delete {
        path: String,
        #[serde(default)]
        recursive: bool,
    },
    Chmod {
        path: String,
        mode: u32,
    },
    Chown {
        path: String,
        #[serde(default)]
        owner: String,
        #[serde(default)]
        group: String,
    },
}

impl From<OpJson> for file_request::Op {
    fn from(op: OpJson) -> Self {
        use file_request::Op;
        match op {
            OpJson::Mkdir {
                path,
                parents,
                mode,
            } => Op::Mkdir(FileMkdir {
                path,
                parents,
                mode,
            }),
            OpJson::Rename {
                from,
                to,
                overwrite,
            } => Op::Rename(FileRename {
                from,
                to,
                overwrite,
            }),
            OpJson::Copy {
                from,
                to,
                recursive,
                overwrite,
            } => Op::Copy(FileCopy {
                from,
                to,
                recursive,
                overwrite,
            }),
            OpJson::Delete { path, recursive } => Op::Delete(FileDelete { path, recursive }),
            OpJson::Chmod { path, mode } => Op::Chmod(FileChmod { path, mode }),
            OpJson::Chown { path, owner, group } => Op::Chown(FileChown { path, owner, group }),
        }
    }
}

pub async fn change(
    State(state): State<Arc<AppState>>,
    Path(host): Path<String>,
    headers: HeaderMap,
    caller: Caller,
    body: Result<Json<OpJson>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<InfoJson>, ServiceError> {
    caller.check_change(&headers, &state)?;
    let Json(body) = body.map_err(|e| {
        ServiceError::InvalidArgument(format!("bad file operation: {}", e.body_text()))
    })?;
    let reply = op(&state, &caller, &host, body.into()).await?;
    Ok(Json(reply_info(reply)?))
}

#[derive(Deserialize)]
pub struct ContentQuery {
    path: String,
    /// `1` or `true`: as an attachment (the browser saves it).
    download: Option<String>,
}

/// A `Range` header the content route serves: one range of bytes.
#[derive(Debug, PartialEq, Eq)]
enum ByteRange {
    /// From an offset, to an offset (inclusive) or to the end.
    From(u64, Option<u64>),
    /// The last N bytes.
    Last(u64),
}

fn parse_range(range: &str) -> Option<ByteRange> {
    let (start, end) = range.strip_prefix("bytes=")?.split_once('-')?;
    match (start.trim(), end.trim()) {
        ("", last) => Some(ByteRange::Last(last.parse().ok()?)),
        (start, "") => Some(ByteRange::From(start.parse().ok()?, None)),
        (start, end) => {
            let (start, end) = (start.parse().ok()?, end.parse().ok()?);
            (start <= end).then_some(ByteRange::From(start, Some(end)))
        }
    }
}

/// Where a range starts and how long it is in a file of `size` bytes, if it is in it.
fn resolve_range(range: &ByteRange, size: u64) -> Option<(u64, u64)> {
    let last = size.checked_sub(1)?;
    let (start, end) = match *range {
        ByteRange::From(start, end) => (start, end.unwrap_or(last).min(last)),
        ByteRange::Last(count) => (size.saturating_sub(count), last),
    };
    (start <= end && end < size).then(|| (start, end - start + 1))
}

fn quoted(version: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!("\"{version}\"")).ok()
}

fn body_of(reader: FileReadChannel) -> Body {
    Body::from_stream(items(reader))
}

fn attachment(name: &str) -> Option<HeaderValue> {
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' {
                c
            } else {
                '_'
            }
        })
        .collect();
    HeaderValue::from_str(&format!("attachment; filename=\"{safe}\"")).ok()
}

pub async fn content(
    State(state): State<Arc<AppState>>,
    Path(host): Path<String>,
    Query(query): Query<ContentQuery>,
    headers: HeaderMap,
    caller: Caller,
) -> Result<Response, ServiceError> {
    let range = match headers
        .get(header::RANGE)
        .map(|v| v.to_str().ok().and_then(parse_range))
    {
        Some(Some(range)) => Some(range),
        Some(None) => return Ok(StatusCode::RANGE_NOT_SATISFIABLE.into_response()),
        None => None,
    };
    // The whole file, or the part a range names. The read's answer describes the file
    // (a symlink's target, not the link), so sizes come from it.
    let (offset, length) = match range {
        Some(ByteRange::From(start, end)) => (start, end.map_or(0, |end| end - start + 1)),
        _ => (0, 0),
    };
    let read = FileRead {
        path: query.path.clone(),
        offset,
        length,
        ..FileRead::default()
    };
    let mut reader = state.file_read(&caller.principal, &host, read).await?;
    let size = reader.info.size;
    let part = match &range {
        None => None,
        Some(range) => match resolve_range(range, size) {
            None => {
                let mut response = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
                if let Ok(value) = HeaderValue::from_str(&format!("bytes */{size}")) {
                    response.headers_mut().insert(header::CONTENT_RANGE, value);
                }
                return Ok(response);
            }
            Some((start, length)) => {
                if start != offset {
                    // The last N bytes: now that the size is known, read them.
                    let read = FileRead {
                        path: query.path,
                        offset: start,
                        length,
                        version: reader.info.version.clone(),
                        ..FileRead::default()
                    };
                    reader = state.file_read(&caller.principal, &host, read).await?;
                }
                Some((start, length))
            }
        },
    };
    let info = InfoJson::from(reader.info.clone());
    let (status, length) = match part {
        Some((_, length)) => (StatusCode::PARTIAL_CONTENT, length),
        None => (StatusCode::OK, size),
    };
    let mut response = (status, body_of(reader)).into_response();
    let response_headers = response.headers_mut();
    response_headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    response_headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    response_headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    response_headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(etag) = quoted(&info.version) {
        response_headers.insert(header::ETAG, etag);
    }
    if let Some((start, length)) = part {
        let range = format!("bytes {start}-{}/{size}", start + length - 1);
        if let Ok(value) = HeaderValue::from_str(&range) {
            response_headers.insert(header::CONTENT_RANGE, value);
        }
    }
    if matches!(query.download.as_deref(), Some("1" | "true"))
        && let Some(value) = attachment(&info.name)
    {
        response_headers.insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

pub async fn archive(
    State(state): State<Arc<AppState>>,
    Path(host): Path<String>,
    Query(query): Query<PathQuery>,
    caller: Caller,
) -> Result<Response, ServiceError> {
    let read = FileRead {
        path: query.path,
        tar: true,
        ..FileRead::default()
    };
    let reader = state.file_read(&caller.principal, &host, read).await?;
    let name = format!("{}.tar", InfoJson::from(reader.info.clone()).name);
    let mut response = body_of(reader).into_response();
    let response_headers = response.headers_mut();
    response_headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-tar"),
    );
    if let Some(value) = attachment(&name) {
        response_headers.insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

#[derive(Deserialize)]
pub struct PutQuery {
    path: String,
    #[serde(default)]
    mode: u32,
    #[serde(default)]
    parents: bool,
}

/// The version named by `If-Match: "VERSION"` (a weak or list form is refused).
fn if_match(headers: &HeaderMap) -> Result<String, ServiceError> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(String::new());
    };
    value
        .to_str()
        .ok()
        .and_then(|v| v.trim().strip_prefix('"')?.strip_suffix('"'))
        .filter(|v| !v.contains('"'))
        .map(str::to_string)
        .ok_or_else(|| ServiceError::InvalidArgument("If-Match must be one quoted version".into()))
}

pub async fn put(
    State(state): State<Arc<AppState>>,
    Path(host): Path<String>,
    Query(query): Query<PutQuery>,
    headers: HeaderMap,
    caller: Caller,
    body: Body,
) -> Result<Response, ServiceError> {
    caller.check_change(&headers, &state)?;
    let create_only = headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == b"*");
    let write = FileWrite {
        path: query.path.clone(),
        expected_version: if_match(&headers)?,
        create_only,
        mode: query.mode,
        parents: query.parents,
        ..FileWrite::default()
    };
    let written = async {
        let mut writer = state.file_write(&caller.principal, &host, write).await?;
        let mut chunks = body.into_data_stream();
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|e| {
                ServiceError::InvalidArgument(format!("the upload was cut off: {e}"))
            })?;
            writer.write(chunk).await?;
        }
        writer.finish(&state).await
    };
    match written.await {
        Ok(written) => {
            let sha256 = written.sha256;
            let mut info = InfoJson::from(written.info.unwrap_or_default());
            info.sha256 = Some(sha256);
            Ok(Json(info).into_response())
        }
        Err(ServiceError::Changed(_)) => {
            let stat = FileStat { path: query.path };
            let current = op(&state, &caller, &host, file_request::Op::Stat(stat))
                .await
                .and_then(reply_info)
                .ok();
            let body = serde_json::json!({"error": CHANGED_ON_DISK, "current": current});
            Ok((StatusCode::CONFLICT, Json(body)).into_response())
        }
        Err(e) => Err(e),
    }
}

/// A folder's or file's changes as Server-Sent Events, while the page listens.
pub async fn watch(
    State(state): State<Arc<AppState>>,
    Path(host): Path<String>,
    Query(query): Query<PathQuery>,
    caller: Caller,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ServiceError> {
    let watch = state
        .file_watch(&caller.principal, &host, query.path)
        .await?;
    let events = futures_util::stream::unfold(watch, |mut watch| async move {
        let change = watch.next().await.ok()?;
        let kind = match change.kind() {
            file_change::Kind::Created => "created",
            file_change::Kind::Modified => "modified",
            file_change::Kind::Removed => "removed",
            file_change::Kind::Renamed => "renamed",
            file_change::Kind::Unknown => "modified",
        };
        let data = serde_json::json!({"kind": kind, "path": change.path});
        let event = Event::default().event("change").json_data(data).ok()?;
        Some((Ok(event), watch))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let resolve = |range: &str, size| resolve_range(&parse_range(range)?, size);
        assert_eq!(resolve("bytes=0-9", 100), Some((0, 10)));
        assert_eq!(resolve("bytes=90-", 100), Some((90, 10)));
        assert_eq!(resolve("bytes=-10", 100), Some((90, 10)));
        assert_eq!(resolve("bytes=95-200", 100), Some((95, 5)));
        assert_eq!(resolve("bytes=100-", 100), None);
        assert_eq!(resolve("bytes=5-1", 100), None);
        assert_eq!(resolve("bytes=0-0", 0), None);
        assert_eq!(resolve("items=0-1", 100), None);
    }
}
