//! The public routes of the one-line install: `/install.sh` (with this control plane's URL
//! filled in, see [`crate::install`]) and the daemon binaries with their checksums,
//! `/downloads/zpanel-bridge-linux-ARCH` and `/downloads/zpanel-bridge-linux-ARCH.sha256`.
//! No login: a host being installed has no credentials yet, and nothing here is secret (the
//! script checks what it downloads against the CA pin and the checksums). Only these exact
//! names are served; there is no listing and no other path under `/downloads`.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::downloads::DaemonBinary;
use crate::service::AppState;

const BINARY_PREFIX: &str = "zpanel-bridge-linux-";

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/install.sh", get(script))
        .route("/downloads/{file}", get(download))
}

async fn script(State(state): State<Arc<AppState>>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/x-shellscript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        state.install_script.text.clone(),
    )
        .into_response()
}

async fn download(State(state): State<Arc<AppState>>, Path(file): Path<String>) -> Response {
    let (arch, checksum) = match file.strip_prefix(BINARY_PREFIX) {
        Some(rest) => match rest.strip_suffix(".sha256") {
            Some(arch) => (arch.to_string(), true),
            None => (rest.to_string(), false),
        },
        None => return not_found(),
    };
    let found = {
        let state = state.clone();
        tokio::task::spawn_blocking(move || state.downloads.daemon(&arch)).await
    };
    let binary = match found {
        Ok(Ok(Some(binary))) => binary,
        Ok(Ok(None)) => return not_found(),
        Ok(Err(e)) => {
            tracing::warn!("cannot read the daemon binary {file}: {e}");
            return unavailable();
        }
        Err(e) => {
            tracing::warn!("cannot read the daemon binary {file}: {e}");
            return unavailable();
        }
    };
    if checksum {
        // The form `sha256sum -c` reads.
        return (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!(
                "{}  {}\n",
                binary.sha256,
                crate::downloads::file_name(&binary.arch)
            ),
        )
            .into_response();
    }
    serve_binary(binary).await
}

async fn serve_binary(binary: DaemonBinary) -> Response {
    let file = match tokio::fs::File::open(&binary.path).await {
        Ok(file) => file,
        Err(e) => {
            tracing::warn!("cannot open {}: {e}", binary.path.display());
            return unavailable();
        }
    };
    let stream = tokio_util::io::ReaderStream::new(file);
    Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, binary.size)
        .header(
            header::CONTENT_DISPOSITION,
            format!(
                "attachment; filename=\"{}\"",
                crate::downloads::file_name(&binary.arch)
            ),
        )
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| unavailable())
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "no such download\n").into_response()
}

fn unavailable() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "the daemon binary cannot be read; see the control plane's log\n",
    )
        .into_response()
}
