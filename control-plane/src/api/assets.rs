//! The browser page's files (built from `web/` by `build.rs` and embedded in the binary):
//! `/` is the page, `/assets/…` its bundles. Every file under `/assets/` has a content hash
//! in its name and may be cached for good; the page itself is revalidated on every load.
//! Every response carries a strict Content-Security-Policy: the page loads nothing but its
//! own files and talks to nothing but its own origin.

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// One embedded file.
struct Asset {
    /// URL path, such as `/index.html` or `/assets/app-3KZ2Q7XA.js`.
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
    /// The same bytes gzipped, when that is smaller.
    gzip: Option<&'static [u8]>,
}

static ASSETS: &[Asset] = include!(concat!(env!("OUT_DIR"), "/web_assets.rs"));

/// Scripts, styles, images and connections only from our own origin. xterm.js sets inline
/// styles, hence `'unsafe-inline'` for styles (never for scripts). `connect-src 'self'`
/// covers the same-origin `wss:` terminal socket.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
    style-src 'self' 'unsafe-inline'; img-src 'self'; connect-src 'self'; object-src 'none'; \
    base-uri 'none'; form-action 'self'; frame-ancestors 'none'";
const CACHE_FOREVER: &str = "public, max-age=31536000, immutable";
const CACHE_REVALIDATE: &str = "no-cache";

/// The page's routes: `/` and `/assets/{file}`, for `Router::merge`.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(asset))
        .route("/assets/{*file}", get(asset))
}

/// Answers a GET for `/` (the page) or one of its files, and 404 for anything else.
pub async fn asset(uri: Uri, headers: HeaderMap) -> Response {
    let path = match uri.path() {
        "/" => "/index.html",
        path => path,
    };
    let Some(asset) = ASSETS.iter().find(|a| a.path == path) else {
        return with_security_headers(
            (
                StatusCode::NOT_FOUND,
                [(header::CACHE_CONTROL, CACHE_REVALIDATE)],
                "not found\n",
            )
                .into_response(),
        );
    };
    let cache = if asset.path.starts_with("/assets/") {
        CACHE_FOREVER
    } else {
        CACHE_REVALIDATE
    };
    let mut response = Response::builder()
        .header(header::CONTENT_TYPE, asset.content_type)
        .header(header::CACHE_CONTROL, cache);
    let body = match asset.gzip {
        Some(gzip) if accepts_gzip(&headers) => {
            response = response.header(header::CONTENT_ENCODING, "gzip");
            gzip
        }
        _ => asset.body,
    };
    if asset.gzip.is_some() {
        response = response.header(header::VARY, "accept-encoding");
    }
    let response = response
        .body(Body::from(body))
        .expect("static header values are valid");
    with_security_headers(response)
}

fn with_security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// Whether `Accept-Encoding` lists gzip (or `*`) without `q=0`.
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            let name = parts.next().unwrap_or_default();
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q == 0.0)
            });
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::to_bytes;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn get(path: &str, accept_encoding: Option<&str>) -> Response {
        let mut request = Request::get(path);
        if let Some(value) = accept_encoding {
            request = request.header(header::ACCEPT_ENCODING, value);
        }
        router::<()>()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    fn header(response: &Response, name: header::HeaderName) -> &str {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    async fn text(response: Response) -> String {
        let body = to_bytes(response.into_body(), usize::MAX).await.unwrap();
        String::from_utf8(body.to_vec()).unwrap()
    }

    /// The `/assets/…` paths the page refers to.
    fn asset_paths(html: &str) -> Vec<String> {
        html.split('"')
            .filter(|part| part.starts_with("/assets/"))
            .map(str::to_string)
            .collect()
    }

    #[tokio::test]
    async fn the_page_is_revalidated_and_locked_down() {
        let response = get("/", None).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            header(&response, header::CONTENT_TYPE),
            "text/html; charset=utf-8"
        );
        assert_eq!(header(&response, header::CACHE_CONTROL), "no-cache");
        assert_eq!(header(&response, header::X_CONTENT_TYPE_OPTIONS), "nosniff");
        let csp = header(&response, header::CONTENT_SECURITY_POLICY);
        assert!(csp.starts_with("default-src 'self';"), "{csp}");
        assert!(csp.contains("script-src 'self';"), "{csp}");
        assert!(csp.contains("connect-src 'self'"), "{csp}");
        assert!(text(response).await.contains("<title>Zpanel</title>"));
    }

    #[tokio::test]
    async fn every_file_the_page_names_is_served_with_its_type_and_cached_for_good() {
        let html = text(get("/", None).await).await;
        let paths = asset_paths(&html);
        assert!(
            paths.iter().any(|p| p.ends_with(".js")) && paths.iter().any(|p| p.ends_with(".css")),
            "the page names its script and stylesheet: {paths:?}"
        );
        for path in paths {
            let response = get(&path, None).await;
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            let expected_type = match path.rsplit_once('.').unwrap().1 {
                "js" => "text/javascript; charset=utf-8",
                "css" => "text/css; charset=utf-8",
                "svg" => "image/svg+xml",
                other => panic!("unexpected asset type {other} in {path}"),
            };
            assert_eq!(
                header(&response, header::CONTENT_TYPE),
                expected_type,
                "{path}"
            );
            assert_eq!(
                header(&response, header::CACHE_CONTROL),
                "public, max-age=31536000, immutable",
                "{path}"
            );
            assert_eq!(header(&response, header::X_CONTENT_TYPE_OPTIONS), "nosniff");
            assert!(
                !to_bytes(response.into_body(), usize::MAX)
                    .await
                    .unwrap()
                    .is_empty()
            );
        }
    }

    #[tokio::test]
    async fn gzip_goes_only_to_browsers_that_accept_it() {
        let html = text(get("/", None).await).await;
        let script = asset_paths(&html)
            .into_iter()
            .find(|p| p.ends_with(".js"))
            .expect("a script");
        let plain = get(&script, None).await;
        assert_eq!(header(&plain, header::CONTENT_ENCODING), "");
        assert_eq!(header(&plain, header::VARY), "accept-encoding");
        let plain = to_bytes(plain.into_body(), usize::MAX).await.unwrap();

        let gzipped = get(&script, Some("br, gzip;q=0.8")).await;
        assert_eq!(header(&gzipped, header::CONTENT_ENCODING), "gzip");
        let gzipped = to_bytes(gzipped.into_body(), usize::MAX).await.unwrap();
        assert_eq!(&gzipped[..2], b"\x1f\x8b", "a gzip stream");
        assert!(gzipped.len() < plain.len());

        let refused = get(&script, Some("gzip;q=0")).await;
        assert_eq!(header(&refused, header::CONTENT_ENCODING), "");
    }

    #[tokio::test]
    async fn unknown_paths_are_404() {
        for path in ["/assets/nope.js", "/assets/../index.html"] {
            let response = get(path, None).await;
            assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
            assert_eq!(header(&response, header::X_CONTENT_TYPE_OPTIONS), "nosniff");
        }
        // The handler alone (as a router's fallback, say) knows only the page's files.
        for path in ["/nope", "/index.htm", "/assets/", "/api/v1/nope"] {
            let response = asset(Uri::from_static(path), HeaderMap::new()).await;
            assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        }
    }
}
