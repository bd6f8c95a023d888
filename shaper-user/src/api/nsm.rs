//! Routes of the network service manager (issue 5): providers and their applications, links,
//! subscriber sessions, and provider allocations.
//!
//! | method | path                                         | roles                                   |
//! |--------|----------------------------------------------|-----------------------------------------|
//! | GET    | `/v1/providers`                              | admin, csr                              |
//! | PUT    | `/v1/providers/{id}`                         | admin                                   |
//! | GET    | `/v1/providers/{id}`                         | admin, csr; provider: own               |
//! | DELETE | `/v1/providers/{id}`                         | admin                                   |
//! | GET    | `/v1/providers/{id}/applications`            | admin, csr; provider: own               |
//! | PUT    | `/v1/providers/{id}/applications/{app}`      | admin                                   |
//! | DELETE | `/v1/providers/{id}/applications/{app}`      | admin                                   |
//! | POST   | `/v1/providers/{id}/allocations`             | admin, csr; provider: own               |
//! | GET    | `/v1/providers/{id}/allocations`             | admin, csr; provider: own               |
//! | GET    | `/v1/providers/{id}/allocations/{alloc}`     | admin, csr; provider: own               |
//! | DELETE | `/v1/providers/{id}/allocations/{alloc}`     | admin, csr; provider: own               |
//! | GET    | `/v1/providers/{id}/deliveries`              | admin; provider: own (delivery log)     |
//! | GET    | `/v1/links`                                  | admin, csr, automation                  |
//! | PUT    | `/v1/links/{id}`                             | admin                                   |
//! | GET    | `/v1/sessions?subscriber=&ip=`               | admin, automation                       |
//! | PUT    | `/v1/sessions/{id}`                          | admin, automation                       |
//! | GET    | `/v1/sessions/{id}`                          | admin, automation                       |
//! | DELETE | `/v1/sessions/{id}`                          | admin, automation                       |
//!
//! A provider token reaches only the routes of its own provider: another provider's path is
//! 403, another provider's allocation id under its own path is 404 (ids are not secret, but
//! what they hold is). Webhook secrets are write-only.
//!
//! Every route answers 404 when the process runs no network service manager.
//!
//! Every string and collection is bounded ([`crate::nsm::validate`]): a path id or the
//! `subscriber` query beyond 128 bytes (or with a control character) is 400 naming the
//! parameter; a body field beyond its limit is 422 naming the field and the limit. Allocation
//! ids are 1..=9223372036854775807 (400 otherwise).

use std::collections::BTreeMap;
use std::net::IpAddr;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::auth::{Principal, Role};
use super::error::ApiError;
use super::routes::json_body;
use crate::nsm::model::{
    Allocation, AllocationRequest, Application, Classifier, LinkKind, Provider, ProviderKind,
    Session,
};
use crate::nsm::{LinkUsage, NsmService};
use crate::store::SessionStore;

pub use crate::nsm::NsmState;

/// Is `path` one of this module's routes? (Their authorization matrix is tested apart.)
#[must_use]
pub fn is_nsm_path(path: &str) -> bool {
    ["/v1/providers", "/v1/links", "/v1/sessions"]
        .iter()
        .any(|p| path == *p || path.starts_with(&format!("{p}/")))
}

// ---- bodies and views -------------------------------------------------------------------

/// `PUT /v1/providers/{id}`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderBody {
    pub kind: ProviderKind,
    pub name: String,
    #[serde(default)]
    pub prefixes: Vec<String>,
    #[serde(default)]
    pub webhook_url: Option<String>,
    #[serde(default)]
    pub webhook_secret: Option<String>,
}

/// A provider as shown: the webhook secret never leaves the controller.
#[derive(Clone, Debug, Serialize)]
pub struct ProviderView {
    pub id: String,
    pub kind: ProviderKind,
    pub name: String,
    pub prefixes: Vec<String>,
    pub webhook_url: Option<String>,
    pub webhook_secret_set: bool,
}

impl From<&Provider> for ProviderView {
    fn from(p: &Provider) -> Self {
        ProviderView {
            id: p.id.clone(),
            kind: p.kind,
            name: p.name.clone(),
            prefixes: p.prefixes.clone(),
            webhook_url: p.webhook_url.clone(),
            webhook_secret_set: p.webhook_secret.is_some(),
        }
    }
}

/// `PUT /v1/providers/{id}/applications/{app}`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplicationBody {
    pub name: String,
    pub classifiers: Vec<Classifier>,
}

/// `PUT /v1/links/{id}`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkBody {
    pub kind: LinkKind,
    pub capacity_up_bps: u64,
    pub capacity_down_bps: u64,
}

/// `PUT /v1/sessions/{id}`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionBody {
    pub subscriber: String,
    pub prefix: String,
    pub bras: String,
    pub gateway: String,
    /// Start time; default now.
    #[serde(default)]
    pub since_ms: Option<u64>,
}

// ---- helpers ----------------------------------------------------------------------------

async fn with_nsm<T, F>(state: &AppState, f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&mut NsmService, u64) -> Result<T, ApiError> + Send + 'static,
{
    let nsm = state.nsm.clone().ok_or_else(|| ApiError::NotFound {
        detail: "this process runs no network service manager ([nsm] in the configuration)".into(),
    })?;
    let clock = state.clock.clone();
    let notifiers = nsm.notifiers.clone();
    let (res, jobs) = tokio::task::spawn_blocking(move || {
        let Ok(mut svc) = nsm.service.lock() else {
            let e = ApiError::Unavailable {
                detail: "the network service manager lock is poisoned by an earlier panic".into(),
            };
            return (Err(e), Vec::new());
        };
        let res = f(&mut svc, clock());
        // Notifications of whatever changed, even if the call failed part-way (a session
        // change that released allocations before its own write failed).
        (res, svc.take_jobs())
    })
    .await
    .map_err(|e| ApiError::Internal {
        detail: format!("network service manager task failed: {e}"),
    })?;
    notifiers.dispatch(jobs);
    res
}

/// A path or query parameter naming an id: within the ids' bounds
/// ([`crate::nsm::validate::MAX_ID_LEN`] bytes, no control characters), else 400.
fn bounded_id(field: &str, value: String) -> Result<String, ApiError> {
    crate::nsm::validate::id(field, &value).map_err(|e| ApiError::BadRequest {
        field: Some(e.field),
        detail: e.detail,
    })?;
    Ok(value)
}

fn one_param(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(id) = path.map_err(|e| ApiError::BadRequest {
        field: Some("id".into()),
        detail: e.body_text(),
    })?;
    bounded_id("id", id)
}

fn two_params(
    path: Result<Path<(String, String)>, PathRejection>,
    second: &str,
) -> Result<(String, String), ApiError> {
    let Path((first, other)) = path.map_err(|e| ApiError::BadRequest {
        field: Some(second.into()),
        detail: e.body_text(),
    })?;
    Ok((bounded_id("id", first)?, bounded_id(second, other)?))
}

/// Allocation ids are 1..=i64::MAX (SQLite's integer keys): anything else is 400 here, never
/// a store error.
fn alloc_id(raw: &str) -> Result<u64, ApiError> {
    let bad = |detail: String| ApiError::BadRequest {
        field: Some("alloc".into()),
        detail,
    };
    let id: u64 = raw.parse().map_err(|_| {
        bad(format!(
            "allocation id {raw:?} is not a non-negative integer"
        ))
    })?;
    if id == 0 || i64::try_from(id).is_err() {
        return Err(bad(format!(
            "allocation id {id} is outside 1..={}",
            i64::MAX
        )));
    }
    Ok(id)
}

fn require(p: &Principal, roles: &[Role], what: &str) -> Result<(), ApiError> {
    if roles.contains(&p.role) {
        Ok(())
    } else {
        Err(ApiError::Forbidden {
            detail: format!(
                "{what} needs a token of role {}",
                roles
                    .iter()
                    .map(|r| r.as_str())
                    .collect::<Vec<_>>()
                    .join(" or ")
            ),
        })
    }
}

/// Admin and CSR reach every provider; a provider token only its own.
fn require_provider(p: &Principal, provider: &str) -> Result<(), ApiError> {
    match p.role {
        Role::Admin | Role::Csr => Ok(()),
        Role::Provider if p.subject == provider => Ok(()),
        Role::Provider => Err(ApiError::Forbidden {
            detail: format!("a provider token reaches only provider {}", p.subject),
        }),
        _ => Err(ApiError::Forbidden {
            detail: "provider routes need an admin, csr or provider token".into(),
        }),
    }
}

fn known_provider(svc: &NsmService, id: &str) -> Result<(), ApiError> {
    if svc.core().provider(id).is_none() {
        return Err(ApiError::NotFound {
            detail: format!("unknown provider {id}"),
        });
    }
    Ok(())
}

fn created<T: Serialize>(location: String, body: T) -> Response {
    let mut resp = (StatusCode::CREATED, Json(body)).into_response();
    if let Ok(v) = location.parse() {
        resp.headers_mut().insert(axum::http::header::LOCATION, v);
    }
    resp
}

// ---- providers and applications ---------------------------------------------------------

/// `GET /v1/providers`.
pub async fn list_providers(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<Vec<ProviderView>>, ApiError> {
    require(&principal, &[Role::Admin, Role::Csr], "listing providers")?;
    with_nsm(&state, |svc, _| {
        let mut v: Vec<ProviderView> = svc.core().providers().map(ProviderView::from).collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(Json(v))
    })
    .await
}

/// `PUT /v1/providers/{id}`.
pub async fn put_provider(
    State(state): State<AppState>,
    principal: Principal,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ProviderView>, ApiError> {
    require(&principal, &[Role::Admin], "registering a provider")?;
    let id = one_param(path)?;
    let b: ProviderBody = json_body(&headers, body)?;
    let p = Provider {
        id,
        kind: b.kind,
        name: b.name,
        prefixes: b.prefixes,
        webhook_url: b.webhook_url,
        webhook_secret: b.webhook_secret,
    };
    with_nsm(&state, move |svc, _| {
        let view = ProviderView::from(&p);
        svc.put_provider(p)?;
        Ok(Json(view))
    })
    .await
}

/// `GET /v1/providers/{id}`.
pub async fn get_provider(
    State(state): State<AppState>,
    principal: Principal,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<ProviderView>, ApiError> {
    let id = one_param(path)?;
    require_provider(&principal, &id)?;
    with_nsm(&state, move |svc, _| {
        svc.core()
            .provider(&id)
            .map(|p| Json(ProviderView::from(p)))
            .ok_or_else(|| ApiError::NotFound {
                detail: format!("unknown provider {id}"),
            })
    })
    .await
}

/// `DELETE /v1/providers/{id}`.
pub async fn delete_provider(
    State(state): State<AppState>,
    principal: Principal,
    path: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    require(&principal, &[Role::Admin], "removing a provider")?;
    let id = one_param(path)?;
    with_nsm(&state, move |svc, _| {
        svc.delete_provider(&id)?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

/// `GET /v1/providers/{id}/applications`.
pub async fn list_applications(
    State(state): State<AppState>,
    principal: Principal,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Vec<Application>>, ApiError> {
    let id = one_param(path)?;
    require_provider(&principal, &id)?;
    with_nsm(&state, move |svc, _| {
        known_provider(svc, &id)?;
        Ok(Json(
            svc.core().applications(&id).into_iter().cloned().collect(),
        ))
    })
    .await
}

/// `PUT /v1/providers/{id}/applications/{app}`.
pub async fn put_application(
    State(state): State<AppState>,
    principal: Principal,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Application>, ApiError> {
    require(&principal, &[Role::Admin], "registering an application")?;
    let (provider, id) = two_params(path, "app")?;
    let b: ApplicationBody = json_body(&headers, body)?;
    let app = Application {
        provider,
        id,
        name: b.name,
        classifiers: b.classifiers,
    };
    with_nsm(&state, move |svc, _| {
        known_provider(svc, &app.provider)?;
        svc.put_application(app.clone())?;
        Ok(Json(app))
    })
    .await
}

/// `DELETE /v1/providers/{id}/applications/{app}`.
pub async fn delete_application(
    State(state): State<AppState>,
    principal: Principal,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    require(&principal, &[Role::Admin], "removing an application")?;
    let (provider, id) = two_params(path, "app")?;
    with_nsm(&state, move |svc, _| {
        svc.delete_application(&provider, &id)?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

// ---- allocations ------------------------------------------------------------------------

/// `POST /v1/providers/{id}/allocations`: admit or refuse (409 capacity / session, 422
/// invalid or not entitled; the problem's `reason` and `result_code` say which).
pub async fn create_allocation(
    State(state): State<AppState>,
    principal: Principal,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let provider = one_param(path)?;
    require_provider(&principal, &provider)?;
    let req: AllocationRequest = json_body(&headers, body)?;
    let alloc = with_nsm(&state, move |svc, now| {
        known_provider(svc, &provider)?;
        Ok(svc.allocate(&provider, req, now)?)
    })
    .await?;
    Ok(created(
        format!("/v1/providers/{}/allocations/{}", alloc.provider, alloc.id),
        alloc,
    ))
}

/// `GET /v1/providers/{id}/allocations?state=active|released`.
pub async fn list_allocations(
    State(state): State<AppState>,
    principal: Principal,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<BTreeMap<String, String>>, QueryRejection>,
) -> Result<Json<Vec<Allocation>>, ApiError> {
    let provider = one_param(path)?;
    require_provider(&principal, &provider)?;
    let Query(query) = query.map_err(|e| ApiError::BadRequest {
        field: None,
        detail: e.body_text(),
    })?;
    let mut wanted = None;
    for (k, v) in query {
        match (k.as_str(), v.as_str()) {
            ("state", "active") => wanted = Some(crate::nsm::model::AllocationState::Active),
            ("state", "released") => wanted = Some(crate::nsm::model::AllocationState::Released),
            ("state", other) => {
                return Err(ApiError::BadRequest {
                    field: Some("state".into()),
                    detail: format!("state {other:?} is not active or released"),
                });
            }
            (other, _) => {
                return Err(ApiError::BadRequest {
                    field: Some(other.to_owned()),
                    detail: format!("unknown query parameter {other:?} (state)"),
                });
            }
        }
    }
    with_nsm(&state, move |svc, _| {
        known_provider(svc, &provider)?;
        let v = svc
            .allocations_of(&provider)?
            .into_iter()
            .filter(|a| wanted.is_none_or(|w| a.state == w))
            .collect();
        Ok(Json(v))
    })
    .await
}

/// `GET /v1/providers/{id}/allocations/{alloc}`.
pub async fn get_allocation(
    State(state): State<AppState>,
    principal: Principal,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<Allocation>, ApiError> {
    let (provider, raw) = two_params(path, "alloc")?;
    require_provider(&principal, &provider)?;
    let id = alloc_id(&raw)?;
    with_nsm(&state, move |svc, _| {
        Ok(Json(svc.allocation(&provider, id)?))
    })
    .await
}

/// `DELETE /v1/providers/{id}/allocations/{alloc}`: releases it (3GPP: STR → rule removal).
pub async fn delete_allocation(
    State(state): State<AppState>,
    principal: Principal,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<Allocation>, ApiError> {
    let (provider, raw) = two_params(path, "alloc")?;
    require_provider(&principal, &provider)?;
    let id = alloc_id(&raw)?;
    let reason = format!("released by {} {}", principal.role, principal.subject);
    with_nsm(&state, move |svc, now| {
        Ok(Json(svc.release(&provider, id, &reason, now)?))
    })
    .await
}

/// `GET /v1/providers/{id}/deliveries`: the delivery log of the provider's allocation notices:
/// its webhook, and the BRAS CoA of its allocations (`url` `radius-coa://<bras>?session=<id>`,
/// `last_code` the RADIUS response code; see [`crate::notify::run`]).
pub async fn list_deliveries(
    State(state): State<AppState>,
    principal: Principal,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Vec<crate::store::Delivery>>, ApiError> {
    let provider = one_param(path)?;
    if principal.role == Role::Csr {
        return Err(ApiError::Forbidden {
            detail: "the webhook log needs an admin or the provider's own token".into(),
        });
    }
    require_provider(&principal, &provider)?;
    with_nsm(&state, move |svc, _| {
        known_provider(svc, &provider)?;
        Ok(Json(svc.deliveries(&provider)?))
    })
    .await
}

// ---- links ------------------------------------------------------------------------------

/// `GET /v1/links`: capacity, committed rates and limits.
pub async fn list_links(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<Vec<LinkUsage>>, ApiError> {
    require(
        &principal,
        &[Role::Admin, Role::Csr, Role::Automation],
        "listing links",
    )?;
    with_nsm(&state, |svc, _| Ok(Json(svc.links()))).await
}

/// `PUT /v1/links/{id}`.
pub async fn put_link(
    State(state): State<AppState>,
    principal: Principal,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<crate::nsm::model::Link>, ApiError> {
    require(&principal, &[Role::Admin], "registering a link")?;
    let id = one_param(path)?;
    let b: LinkBody = json_body(&headers, body)?;
    let link = crate::nsm::model::Link {
        id,
        kind: b.kind,
        capacity_up_bps: b.capacity_up_bps,
        capacity_down_bps: b.capacity_down_bps,
    };
    with_nsm(&state, move |svc, _| {
        svc.put_link(link.clone())?;
        Ok(Json(link))
    })
    .await
}

// ---- sessions ---------------------------------------------------------------------------

const SESSION_ROLES: [Role; 2] = [Role::Admin, Role::Automation];

/// `PUT /v1/sessions/{id}`: starts or changes a session (a changed session ends the
/// allocations admitted on it).
pub async fn put_session(
    State(state): State<AppState>,
    principal: Principal,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Session>, ApiError> {
    require(&principal, &SESSION_ROLES, "session intake")?;
    let id = one_param(path)?;
    let b: SessionBody = json_body(&headers, body)?;
    with_nsm(&state, move |svc, now| {
        let s = Session {
            id,
            subscriber: b.subscriber,
            prefix: b.prefix,
            bras: b.bras,
            gateway: b.gateway,
            since_ms: b.since_ms.unwrap_or(now),
            ended_ms: None,
        };
        svc.upsert_session(&s)?;
        Ok(Json(s))
    })
    .await
}

/// `GET /v1/sessions/{id}`.
pub async fn get_session(
    State(state): State<AppState>,
    principal: Principal,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Session>, ApiError> {
    require(&principal, &SESSION_ROLES, "reading sessions")?;
    let id = one_param(path)?;
    with_nsm(&state, move |svc, _| {
        SessionStore::session(svc, &id)?
            .map(Json)
            .ok_or_else(|| ApiError::NotFound {
                detail: format!("no active session {id}"),
            })
    })
    .await
}

/// `DELETE /v1/sessions/{id}`: ends the session and releases its allocations.
pub async fn delete_session(
    State(state): State<AppState>,
    principal: Principal,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Session>, ApiError> {
    require(&principal, &SESSION_ROLES, "session intake")?;
    let id = one_param(path)?;
    with_nsm(&state, move |svc, now| {
        svc.end_session(&id, now)?
            .map(Json)
            .ok_or_else(|| ApiError::NotFound {
                detail: format!("no active session {id}"),
            })
    })
    .await
}

/// `GET /v1/sessions?subscriber=&ip=`: active sessions (all without a filter).
pub async fn list_sessions(
    State(state): State<AppState>,
    principal: Principal,
    query: Result<Query<BTreeMap<String, String>>, QueryRejection>,
) -> Result<Json<Vec<Session>>, ApiError> {
    require(&principal, &SESSION_ROLES, "reading sessions")?;
    let Query(query) = query.map_err(|e| ApiError::BadRequest {
        field: None,
        detail: e.body_text(),
    })?;
    let mut subscriber = None;
    let mut ip: Option<IpAddr> = None;
    for (k, v) in query {
        match k.as_str() {
            "subscriber" => subscriber = Some(bounded_id("subscriber", v)?),
            "ip" => {
                ip = Some(v.parse().map_err(|_| ApiError::BadRequest {
                    field: Some("ip".into()),
                    detail: format!("{v:?} is not an IP address"),
                })?);
            }
            other => {
                return Err(ApiError::BadRequest {
                    field: Some(other.to_owned()),
                    detail: format!("unknown query parameter {other:?} (subscriber, ip)"),
                });
            }
        }
    }
    with_nsm(&state, move |svc, _| {
        let mut v: Vec<Session> = match (&subscriber, ip) {
            (_, Some(ip)) => svc.session_by_ip(ip)?.into_iter().collect(),
            (Some(s), None) => svc.sessions_of_subscriber(s)?,
            (None, None) => svc.core().sessions().cloned().collect(),
        };
        if let Some(s) = &subscriber {
            v.retain(|x| x.subscriber == *s);
        }
        v.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(Json(v))
    })
    .await
}
