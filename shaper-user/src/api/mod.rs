//! The HTTP API (issue 3 item 5): JSON over axum, bearer tokens with roles ([`auth`]),
//! `application/problem+json` errors ([`error`]), an OpenAPI 3.1 document at `/openapi.json`
//! ([`openapi`]).
//!
//! The API is a thin shell over the synchronous [`Controller`]: each request authenticates,
//! parses and checks its input completely, then makes one controller call under the
//! controller's lock (on the blocking pool: the call writes SQLite). A refused call changes
//! nothing, so nothing is ever half-applied; a 201 means the event is in the store, a 200 from
//! `PUT /v1/modems/{id}/base` that the plan and its audit line are.
//!
//! Routes ([`ROUTES`] is the table the router is built from):
//!
//! | method | path                    | roles                                          |
//! |--------|-------------------------|------------------------------------------------|
//! | GET    | `/v1/modems/{id}`       | admin, csr, automation; subscriber: own modem  |
//! | PUT    | `/v1/modems/{id}/base`  | admin, csr, automation (replace the base plan) |
//! | GET    | `/v1/modems/{id}/audit` | admin, csr (who changed the base plan)         |
//! | POST   | `/v1/events`            | admin, csr, automation; subscriber: own modem  |
//! | GET    | `/v1/events`            | admin, csr, automation; subscriber: own modem  |
//! | GET    | `/v1/events/{id}`       | admin, csr, automation; subscriber: own modem  |
//! | PATCH  | `/v1/events/{id}`       | admin, csr, automation; subscriber: own events |
//! | DELETE | `/v1/events/{id}`       | admin, csr, automation; subscriber: own events |
//! | GET    | `/v1/catalogue`         | admin, csr, automation, subscriber (grant levels) |
//! | GET    | `/openapi.json`         | anyone (no token)                              |
//! | GET    | `/metrics`              | admin (Prometheus text format)                 |
//! | GET    | `/v1/modem-files`       | admin, csr (operator-dropped modem files)      |
//! | GET    | `/files/{name}`         | anyone (no token): the modem pipeline's files  |
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
//! provider's routes (applications, allocations, webhook log): see [`nsm`] for the network
//! service manager's routes and their roles.
//!
//! Starts and stops are fired by whoever calls [`Controller::tick`] (the daemon's timer), not
//! by the API: an immediate event is `pending` in the 201 answer and active after the next
//! tick.

#[cfg(test)]
mod admission_tests;
pub mod auth;
pub mod edge;
pub mod error;
pub mod nsm;
#[cfg(test)]
mod nsm_edge_tests;
#[cfg(test)]
mod nsm_tests;
pub mod openapi;
#[cfg(test)]
mod pipeline_tests;
pub mod routes;
pub mod shape;
#[cfg(test)]
mod tests;
pub mod views;

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

pub use crate::clock::{Clock, system_now_ms};
pub use crate::controller::ChangeHook;
pub use crate::controller::submit::SubmitQueue;
pub use crate::controller::ticker;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub controller: Arc<Mutex<Controller>>,
    pub tokens: Arc<TokenTable>,
    pub clock: Clock,
    /// What `GET /metrics` serves; `None` = 404.
    pub metrics: Option<Arc<Metrics>>,
    /// The network service manager (issue 5); `None` = its routes answer 404.
    pub nsm: Option<nsm::NsmState>,
    /// Submissions waiting for the next group commit ([`SubmitQueue`]).
    pub submits: Arc<SubmitQueue>,
    /// Notified after accepted submissions: the daemon's tick loop ([`ticker::tick_loop`])
    /// fires immediate events at once instead of at its next timer.
    pub wake: Arc<tokio::sync::Notify>,
    /// The commit thread of [`SubmitQueue`] fires the starts and stops due in the same commit
    /// as each batch ([`Controller::submit_batch_and_fire`]) and enforces them right after
    /// answering, so immediate events are enforced without waiting for the tick loop, with
    /// one fsync, and the acceptance rate cannot outrun enforcement. The daemon sets it; off by default
    /// (a test that drives ticks by hand sees submitted events stay pending).
    pub tick_after_commit: bool,
    /// See [`ChangeHook`].
    pub on_changes: Option<ChangeHook>,
    /// The controller's [`Controller::csr_from_catalogue_flag`]: read on every CSR request
    /// without taking the controller's lock (which a commit may hold for an fsync).
    pub csr_from_catalogue: Arc<std::sync::atomic::AtomicBool>,
    /// The modem pipeline's state (`pipeline` in `GET /v1/modems/{id}`,
    /// `GET /v1/modem-files`); `None` when it is off.
    pub pipeline: Option<Arc<PipelineShared>>,
    /// What `GET /files/{name}` serves (the pipeline's files); `None` = 404.
    pub files: Option<Arc<dyn Handler>>,
}

impl AppState {
    /// State with the system clock.
    pub fn new(controller: Arc<Mutex<Controller>>, tokens: Arc<TokenTable>) -> AppState {
        let csr_from_catalogue = controller
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .csr_from_catalogue_flag();
        AppState {
            csr_from_catalogue,
            controller,
            tokens,
            clock: Arc::new(system_now_ms),
            metrics: None,
            nsm: None,
            submits: Arc::default(),
            wake: Arc::default(),
            tick_after_commit: false,
            on_changes: None,
            pipeline: None,
            files: None,
        }
    }

    /// The same state, showing the modem pipeline's state and serving its files.
    #[must_use]
    pub fn with_pipeline(self, pipeline: Arc<PipelineShared>, files: Arc<dyn Handler>) -> AppState {
        if let Some(m) = &self.metrics {
            m.attach_pipeline(pipeline.clone());
        }
        AppState {
            pipeline: Some(pipeline),
            files: Some(files),
            ..self
        }
    }

    /// The same state, calling `hook` after the QoS changes it enforces ([`ChangeHook`]).
    #[must_use]
    pub fn with_change_hook(self, hook: ChangeHook) -> AppState {
        AppState {
            on_changes: Some(hook),
            ..self
        }
    }

    /// The same state, serving the network service manager's routes ([`nsm`]).
    #[must_use]
    pub fn with_nsm(self, nsm: nsm::NsmState) -> AppState {
        AppState {
            nsm: Some(nsm),
            ..self
        }
    }

    /// The same state, with [`AppState::tick_after_commit`] on.
    #[must_use]
    pub fn ticking_after_commit(self) -> AppState {
        AppState {
            tick_after_commit: true,
            ..self
        }
    }

    /// The same state, serving `metrics` at `GET /metrics`.
    #[must_use]
    pub fn with_metrics(self, metrics: Arc<Metrics>) -> AppState {
        if let Some(p) = &self.pipeline {
            metrics.attach_pipeline(p.clone());
        }
        AppState {
            metrics: Some(metrics),
            ..self
        }
    }
}

/// One route of the API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    pub method: &'static str,
    /// axum path syntax, which is also OpenAPI's (`{id}`).
    pub path: &'static str,
}

/// Every route the router serves; the OpenAPI document covers exactly these.
pub const ROUTES: [Route; 31] = [
    Route {
        method: "GET",
        path: "/v1/modems/{id}",
    },
    Route {
        method: "PUT",
        path: "/v1/modems/{id}/base",
    },
    Route {
        method: "GET",
        path: "/v1/modems/{id}/audit",
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
        path: "/v1/catalogue",
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
        path: "/v1/providers",
    },
    Route {
        method: "PUT",
        path: "/v1/providers/{id}",
    },
    Route {
        method: "GET",
        path: "/v1/providers/{id}",
    },
    Route {
        method: "DELETE",
        path: "/v1/providers/{id}",
    },
    Route {
        method: "GET",
        path: "/v1/providers/{id}/applications",
    },
    Route {
        method: "PUT",
        path: "/v1/providers/{id}/applications/{app}",
    },
    Route {
        method: "DELETE",
        path: "/v1/providers/{id}/applications/{app}",
    },
    Route {
        method: "POST",
        path: "/v1/providers/{id}/allocations",
    },
    Route {
        method: "GET",
        path: "/v1/providers/{id}/allocations",
    },
    Route {
        method: "GET",
        path: "/v1/providers/{id}/allocations/{alloc}",
    },
    Route {
        method: "DELETE",
        path: "/v1/providers/{id}/allocations/{alloc}",
    },
    Route {
        method: "GET",
        path: "/v1/providers/{id}/deliveries",
    },
    Route {
        method: "GET",
        path: "/v1/links",
    },
    Route {
        method: "PUT",
        path: "/v1/links/{id}",
    },
    Route {
        method: "GET",
        path: "/v1/sessions",
    },
    Route {
        method: "PUT",
        path: "/v1/sessions/{id}",
    },
    Route {
        method: "GET",
        path: "/v1/sessions/{id}",
    },
    Route {
        method: "DELETE",
        path: "/v1/sessions/{id}",
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
        ("PUT", "/v1/modems/{id}/base") => on(filter, routes::put_modem_base),
        ("GET", "/v1/modems/{id}/audit") => on(filter, routes::modem_audit),
        ("POST", "/v1/events") => on(filter, routes::create_event),
        ("GET", "/v1/events") => on(filter, routes::list_events),
        ("GET", "/v1/events/{id}") => on(filter, routes::get_event),
        ("PATCH", "/v1/events/{id}") => on(filter, routes::patch_event),
        ("DELETE", "/v1/events/{id}") => on(filter, routes::delete_event),
        ("GET", "/v1/catalogue") => on(filter, routes::catalogue),
        ("GET", "/openapi.json") => on(filter, routes::openapi_json),
        ("GET", "/metrics") => on(filter, routes::metrics),
        ("GET", "/v1/providers") => on(filter, nsm::list_providers),
        ("PUT", "/v1/providers/{id}") => on(filter, nsm::put_provider),
        ("GET", "/v1/providers/{id}") => on(filter, nsm::get_provider),
        ("DELETE", "/v1/providers/{id}") => on(filter, nsm::delete_provider),
        ("GET", "/v1/providers/{id}/applications") => on(filter, nsm::list_applications),
        ("PUT", "/v1/providers/{id}/applications/{app}") => on(filter, nsm::put_application),
        ("DELETE", "/v1/providers/{id}/applications/{app}") => on(filter, nsm::delete_application),
        ("POST", "/v1/providers/{id}/allocations") => on(filter, nsm::create_allocation),
        ("GET", "/v1/providers/{id}/allocations") => on(filter, nsm::list_allocations),
        ("GET", "/v1/providers/{id}/allocations/{alloc}") => on(filter, nsm::get_allocation),
        ("DELETE", "/v1/providers/{id}/allocations/{alloc}") => on(filter, nsm::delete_allocation),
        ("GET", "/v1/providers/{id}/deliveries") => on(filter, nsm::list_deliveries),
        ("GET", "/v1/links") => on(filter, nsm::list_links),
        ("PUT", "/v1/links/{id}") => on(filter, nsm::put_link),
        ("GET", "/v1/sessions") => on(filter, nsm::list_sessions),
        ("PUT", "/v1/sessions/{id}") => on(filter, nsm::put_session),
        ("GET", "/v1/sessions/{id}") => on(filter, nsm::get_session),
        ("DELETE", "/v1/sessions/{id}") => on(filter, nsm::delete_session),
        ("GET", "/v1/modem-files") => on(filter, routes::modem_files),
        ("GET", "/files/{name}") => on(filter, routes::file),
        (method, path) => unreachable!("no handler for {method} {path}"),
    }
}

/// The API router, built from [`ROUTES`]. Unknown paths get a problem+json 404, wrong methods
/// a problem+json 405 (with `Allow`), request targets beyond [`edge::MAX_URI_LEN`] a
/// problem+json 414. Serve it on an [`edge::ProblemListener`] so that the requests hyper
/// refuses itself get problem bodies too.
pub fn router(state: AppState) -> Router {
    ROUTES
        .iter()
        .fold(Router::new(), |r, route| {
            r.route(route.path, handler(*route))
        })
        .fallback(routes::no_route)
        .layer(axum::middleware::map_request(edge::bounded_uri))
        .layer(axum::middleware::map_response(error::problem_bodies))
        .with_state(state)
}
