//! The same files over HTTP (`GET /<name>`), for DSL CPE that fetch their configuration with
//! TR-069 `Download` over HTTP (docs/PROTOCOLS.md §2) and for operators.
//!
//! Status codes (RFC 9110 §15): 200 with `Content-Length`; 400 for a name that breaks a rule
//! of [`super::check_name`] (`..`, absolute, NUL, too long); 403 for a symlink leaving the root or a
//! non-file; 404 for a missing file; 500 otherwise. The mapping stays here rather than in
//! `api/error.rs` because this router shares no state or error type with the API.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::handler::{Handler, HandlerError, Shown};

/// A router serving `GET /<name>` (and HEAD) from `handler`, for the controller to mount or
/// nest (e.g. under `/files`).
pub fn router(handler: Arc<dyn Handler>) -> Router {
    Router::new()
        .route("/{*name}", get(serve))
        .with_state(handler)
}

/// The HTTP status for a handler failure.
#[must_use]
pub fn status(e: &HandlerError) -> StatusCode {
    match e {
        HandlerError::InvalidPath { .. } => StatusCode::BAD_REQUEST,
        HandlerError::OutsideRoot { .. } | HandlerError::NotAFile { .. } => StatusCode::FORBIDDEN,
        HandlerError::NotFound { .. } => StatusCode::NOT_FOUND,
        HandlerError::Io { source, .. }
            if source.kind() == std::io::ErrorKind::PermissionDenied =>
        {
            StatusCode::FORBIDDEN
        }
        HandlerError::TooLarge { .. } | HandlerError::Io { .. } | HandlerError::Root { .. } => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
}

async fn serve(State(handler): State<Arc<dyn Handler>>, Path(name): Path<String>) -> Response {
    match handler.open(&name) {
        Ok(data) => (
            [(header::CONTENT_TYPE, "application/octet-stream")],
            Body::from(Bytes::from_owner(data)),
        )
            .into_response(),
        Err(e) => {
            tracing::debug!(file = %Shown(&name), error = %e, "http file: refused");
            let code = status(&e);
            (code, code.canonical_reason().unwrap_or("error")).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;
    use crate::tftp::FsHandler;

    #[tokio::test]
    async fn serves_files_and_refuses_traversal() {
        let dir = std::env::temp_dir().join(format!("shaper-tftp-http-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("root/sub")).unwrap();
        std::fs::write(dir.join("root/cm.cfg"), vec![7u8; 600]).unwrap();
        std::fs::write(dir.join("secret"), b"s").unwrap();
        std::os::unix::fs::symlink(dir.join("secret"), dir.join("root/escape")).unwrap();
        let app = router(Arc::new(FsHandler::new(dir.join("root")).unwrap()));
        let get = |uri: &str| {
            let app = app.clone();
            let req = Request::get(uri).body(Body::empty()).unwrap();
            async move { app.oneshot(req).await.unwrap() }
        };
        let r = get("/cm.cfg").await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[header::CONTENT_LENGTH], "600");
        let body = r.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], &[7u8; 600][..]);
        for (uri, want) in [
            ("/missing.cfg", StatusCode::NOT_FOUND),
            ("/../secret", StatusCode::BAD_REQUEST),
            ("/%2e%2e/secret", StatusCode::BAD_REQUEST),
            ("/sub/%2e%2e/%2e%2e/secret", StatusCode::BAD_REQUEST),
            ("//etc/passwd", StatusCode::BAD_REQUEST),
            ("/a%00b", StatusCode::BAD_REQUEST),
            (
                format!("/{}.cfg", "a".repeat(5000)).as_str(),
                StatusCode::BAD_REQUEST,
            ),
            ("/escape", StatusCode::FORBIDDEN),
            ("/sub", StatusCode::FORBIDDEN),
        ] {
            assert_eq!(get(uri).await.status(), want, "{uri}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
