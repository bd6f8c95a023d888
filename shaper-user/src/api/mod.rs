//! The HTTP API (issue 3 item 5): JSON over axum, bearer tokens with roles ([`auth`]),
//! `application/problem+json` errors ([`error`]), an OpenAPI 3.1 document at `/openapi.json`
//! ([`openapi`]).
//!
//! The API is a thin shell over the synchronous [`Controller`]: each request authenticates,
//! parses and checks its input completely, then makes one controller call under the
//! controller's lock (on the blocking pool: the call writes SQLite). A refused call changes
//! nothing, so nothing is ever half-applied; a 201 means the event is in the store.
//!
//! Routes ([`ROUTES`] is the table the router is built from):
//!
//! | method | path                 | roles                                          |
//! |--------|----------------------|------------------------------------------------|
//! | GET    | `/v1/modems/{id}`    | admin, csr, automation; subscriber: own modem  |
//! | POST   | `/v1/events`         | admin, csr, automation; subscriber: own modem  |
//! | GET    | `/v1/events`         | admin, csr, automation; subscriber: own modem  |
//! | GET    | `/v1/events/{id}`    | admin, csr, automation; subscriber: own modem  |
//! | PATCH  | `/v1/events/{id}`    | admin, csr, automation; subscriber: own events |
//! | DELETE | `/v1/events/{id}`    | admin, csr, automation; subscriber: own events |
//! | GET    | `/openapi.json`      | anyone (no token)                              |
//! | GET    | `/metrics`           | admin (Prometheus text format)                 |
//! | GET    | `/v1/modem-files`    | admin, csr (operator-dropped modem files)      |
//! | GET    | `/files/{name}`      | anyone (no token): the modem pipeline's files  |
//!
//! `/files/{name}` serves the modem configuration files the pipeline writes, as TFTP does,
//! without authentication: modems cannot present a token, and the names are 128-bit HMACs no
//! one can guess (docs/MODEM-CONFIG.md). Only `<name>.cfg` directly in the pipeline's
//! directory is served; 404 when the pipeline is off.
//!
//! `/metrics` ([`crate::metrics`]) needs an admin token because its top-flow series carry
//! subscribers' peer addresses: give Prometheus one (`authorization: { credentials_file: ... }`
//! in the scrape config). It answers 404 when the process serves no metrics.
//!
//! Provider tokens get 403 on every modem and event route: providers reach only their own
//! applications, whose routes come with issue 5.
//!
//! Starts and stops are fired by whoever calls [`Controller::tick`] (the daemon's timer), not
//! by the API: an immediate event is `pending` in the 201 answer and active after the next
//! tick.

pub mod auth;
pub mod error;
pub mod openapi;
pub mod routes;
#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::http::Method;
use axum::routing::{MethodFilter, MethodRouter, on};

use crate::controller::Controller;
use crate::metrics::Metrics;
use crate::modem::pipeline::PipelineShared;
use crate::tftp::Handler;

pub use auth::{Principal, Role, TokenEntry, TokenError, TokenTable, hash_token};
pub use error::ApiError;

/// Milliseconds since the Unix epoch; a virtual clock in tests.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub controller: Arc<Mutex<Controller>>,
    pub tokens: Arc<TokenTable>,
    pub clock: Clock,
    /// What `GET /metrics` serves; `None` = 404.
    pub metrics: Option<Arc<Metrics>>,
    /// The modem pipeline's state (`pipeline` in `GET /v1/modems/{id}`,
    /// `GET /v1/modem-files`); `None` when it is off.
    pub pipeline: Option<Arc<PipelineShared>>,
    /// What `GET /files/{name}` serves (the pipeline's files); `None` = 404.
    pub files: Option<Arc<dyn Handler>>,
}

impl AppState {
    /// State with the system clock.
    pub fn new(controller: Arc<Mutex<Controller>>, tokens: Arc<TokenTable>) -> AppState {
        AppState {
            controller,
            tokens,
            clock: Arc::new(system_now_ms),
            metrics: None,
            pipeline: None,
            files: None,
        }
    }

    /// The same state, showing the modem pipeline's state and serving its files.
    #[must_use]
    pub fn with_pipeline(self, pipeline: Arc<PipelineShared>, files: Arc<dyn Handler>) -> AppState {
        AppState {
            pipeline: Some(pipeline),
            files: Some(files),
            ..self
        }
    }

    /// The same state, serving `metrics` at `GET /metrics`.
    #[must_use]
    pub fn with_metrics(self, metrics: Arc<Metrics>) -> AppState {
        AppState {
            metrics: Some(metrics),
            ..self
        }
    }
}

/// The wall clock in milliseconds since the Unix epoch (0 before it).
pub fn system_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// One route of the API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    pub method: &'static str,
    /// axum path syntax, which is also OpenAPI's (`{id}`).
    pub path: &'static str,
}

/// Every route the router serves; the OpenAPI document covers exactly these.
pub const ROUTES: [Route; 10] = [
    Route {
        method: "GET",
        path: "/v1/modems/{id}",
    },
    Route {
        method: "POST",
        path: "/v1/events",
    },
    Route {
        method: "GET",
        path: "/v1/events",
    },
    Route {
        method: "GET",
        path: "/v1/events/{id}",
    },
    Route {
        method: "PATCH",
        path: "/v1/events/{id}",
    },
    Route {
        method: "DELETE",
        path: "/v1/events/{id}",
    },
    Route {
        method: "GET",
        path: "/openapi.json",
    },
    Route {
        method: "GET",
        path: "/metrics",
    },
    Route {
        method: "GET",
        path: "/v1/modem-files",
    },
    Route {
        method: "GET",
        path: "/files/{name}",
    },
];

fn handler(route: Route) -> MethodRouter<AppState> {
    let filter = MethodFilter::try_from(
        Method::from_bytes(route.method.as_bytes()).expect("route methods are valid"),
    )
    .expect("route methods are filterable");
    match (route.method, route.path) {
        ("GET", "/v1/modems/{id}") => on(filter, routes::get_modem),
        ("POST", "/v1/events") => on(filter, routes::create_event),
        ("GET", "/v1/events") => on(filter, routes::list_events),
        ("GET", "/v1/events/{id}") => on(filter, routes::get_event),
        ("PATCH", "/v1/events/{id}") => on(filter, routes::patch_event),
        ("DELETE", "/v1/events/{id}") => on(filter, routes::delete_event),
        ("GET", "/openapi.json") => on(filter, routes::openapi_json),
        ("GET", "/metrics") => on(filter, routes::metrics),
        ("GET", "/v1/modem-files") => on(filter, routes::modem_files),
        ("GET", "/files/{name}") => on(filter, routes::file),
        (method, path) => unreachable!("no handler for {method} {path}"),
    }
}

/// The API router, built from [`ROUTES`]. Unknown paths get a problem+json 404, wrong methods
/// a problem+json 405 (with `Allow`).
pub fn router(state: AppState) -> Router {
    ROUTES
        .iter()
        .fold(Router::new(), |r, route| {
            r.route(route.path, handler(*route))
        })
        .fallback(routes::no_route)
        .layer(axum::middleware::map_response(error::problem_bodies))
        .with_state(state)
}
