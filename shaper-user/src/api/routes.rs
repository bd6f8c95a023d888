//! Request handlers, request bodies and response views.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Deserializer};

use super::AppState;
use super::auth::Principal;
use super::error::ApiError;
use crate::controller::Controller;
use crate::modem::pipeline::{FileRecord, PipelineShared};
use crate::provision::{
    Amendment, BaseSource, Event, EventRequest, EventState, QosLevel, ServiceTargets, Submitted,
};

/// Longest accepted `Idempotency-Key`.
pub const MAX_IDEMPOTENCY_KEY: usize = 200;

/// Longest modem id (the document's bound, `openapi::MODEM_ID_MAX`).
pub const MAX_MODEM_ID: usize = 128;

// ---- request bodies ---------------------------------------------------------------------

/// Service targets in a request; every field optional, unknown fields refused.
#[derive(Clone, Copy, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TargetsBody {
    pub availability_ppm: Option<u32>,
    pub error_rate_ppm: Option<u32>,
    pub loss_ppm: Option<u32>,
    pub setup_time_ms: Option<u32>,
    pub repair_time_ms: Option<u32>,
}

/// A QoS level in a request; every field optional, unknown fields refused (a misspelt field
/// must not silently mean "unchanged" or "unlimited"). As an event's grant it names only what
/// it changes; as a base plan (`PUT /v1/modems/{id}/base`) it is the whole plan.
#[derive(Clone, Copy, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QosBody {
    pub max_up_bps: Option<u64>,
    pub max_down_bps: Option<u64>,
    pub committed_up_bps: Option<u64>,
    pub committed_down_bps: Option<u64>,
    pub burst_bytes: Option<u32>,
    pub priority: Option<u8>,
    pub mtu: Option<u16>,
    pub targets: TargetsBody,
}

impl From<QosBody> for QosLevel {
    fn from(q: QosBody) -> QosLevel {
        QosLevel {
            max_up_bps: q.max_up_bps,
            max_down_bps: q.max_down_bps,
            committed_up_bps: q.committed_up_bps,
            committed_down_bps: q.committed_down_bps,
            burst_bytes: q.burst_bytes,
            priority: q.priority,
            mtu: q.mtu,
            targets: ServiceTargets {
                availability_ppm: q.targets.availability_ppm,
                error_rate_ppm: q.targets.error_rate_ppm,
                loss_ppm: q.targets.loss_ppm,
                setup_time_ms: q.targets.setup_time_ms,
                repair_time_ms: q.targets.repair_time_ms,
            },
        }
    }
}

/// `POST /v1/events`: a grant (`qos`) or a catalogue level (`level`), not both.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateEvent {
    pub modem: String,
    #[serde(default)]
    pub qos: Option<QosBody>,
    /// A level of the grant catalogue (`GET /v1/catalogue`); subscribers must name one.
    #[serde(default)]
    pub level: Option<String>,
    #[serde(default)]
    pub start_ms: Option<u64>,
    #[serde(default)]
    pub stop_ms: Option<u64>,
}

/// `PATCH /v1/events/{id}`: the fields present replace the event's; `null` for a time means
/// "none" (immediate start, no stop). `qos` replaces the whole grant.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchEvent {
    #[serde(default, deserialize_with = "present")]
    pub start_ms: Option<Option<u64>>,
    #[serde(default, deserialize_with = "present")]
    pub stop_ms: Option<Option<u64>>,
    #[serde(default)]
    pub qos: Option<QosBody>,
}

/// A field that is present (even as `null`) is `Some`.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<u64>>, D::Error> {
    Option::<u64>::deserialize(d).map(Some)
}

pub use super::views::*;

// ---- input helpers ----------------------------------------------------------------------

/// Runs `f` on the controller under its lock, on the blocking pool, with the time now.
async fn with_controller<T, F>(state: &AppState, f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&mut Controller, u64) -> Result<T, ApiError> + Send + 'static,
{
    let controller = state.controller.clone();
    let clock = state.clock.clone();
    tokio::task::spawn_blocking(move || {
        let mut ctl = crate::controller::lock(&controller, || clock());
        f(&mut ctl, clock())
    })
    .await
    .map_err(|e| ApiError::Internal {
        detail: format!("controller task failed: {e}"),
    })?
}

/// Submits `req` through the group commit ([`super::SubmitQueue`]) and waits until the batch
/// holding it is durable.
async fn group_submit(state: &AppState, req: EventRequest) -> Result<Submitted, ApiError> {
    let answer = state.submits.submit(
        || crate::controller::submit::CommitDeps {
            controller: state.controller.clone(),
            clock: state.clock.clone(),
            wake: state.wake.clone(),
            tick_after_commit: state.tick_after_commit,
            on_changes: state.on_changes.clone(),
        },
        req,
    )?;
    let result = answer.await.map_err(|_| ApiError::Internal {
        detail: "the group commit holding this request ended without an answer".into(),
    })?;
    Ok(result?)
}

/// A JSON body: `Content-Type` must be JSON, and the body must deserialize into `T`; the
/// error names the offending field.
pub(crate) fn json_body<T: super::shape::ApiBody>(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let is_json = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|m| m.trim().to_ascii_lowercase())
        .is_some_and(|m| {
            m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
        });
    if !is_json {
        return Err(ApiError::BadRequest {
            field: Some("Content-Type".into()),
            detail: "the body must be JSON (Content-Type: application/json)".into(),
        });
    }
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge {
                detail: e.body_text(),
            }
        } else {
            ApiError::BadRequest {
                field: None,
                detail: e.body_text(),
            }
        }
    })?;
    // An array where the schema wants an object (serde would take it, fields by position).
    // A body that is not JSON at all falls through to serde's precise syntax error. Without a
    // `[` there is no array: the common body is parsed once, not twice.
    let may_hold_array = body.contains(&b'[');
    if let Some(v) = may_hold_array
        .then(|| serde_json::from_slice::<serde_json::Value>(&body).ok())
        .flatten()
    {
        if let Some(path) = super::shape::array_for_object(&v, T::SCHEMA) {
            let at = if path.is_empty() {
                "the body".to_owned()
            } else {
                path.clone()
            };
            return Err(ApiError::BadRequest {
                detail: format!("{at}: expected a JSON object, found an array"),
                field: (!path.is_empty()).then_some(path),
            });
        }
    }
    let mut de = serde_json::Deserializer::from_slice(&body);
    let value = match serde_path_to_error::deserialize(&mut de) {
        Err(e) if e.inner().to_string().contains("floating point") => {
            // `35.0` is the integer 35 to JSON Schema (and to the document): read the body
            // again with integral floats as integers. Only on this error: the common body is
            // parsed once.
            let mut v: serde_json::Value =
                serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest {
                    field: None,
                    detail: e.to_string(),
                })?;
            integral_floats_as_integers(&mut v);
            return serde_path_to_error::deserialize(v).map_err(body_error);
        }
        r => r,
    }
    .map_err(body_error)?;
    // Trailing characters after the value are a syntax error too.
    de.end().map_err(|e| ApiError::BadRequest {
        field: None,
        detail: e.to_string(),
    })?;
    Ok(value)
}

/// Largest integer a JSON float holds exactly (2^53): beyond it `1e19` may not be the
/// integer the client wrote.
const EXACT_FLOAT_MAX: f64 = 9_007_199_254_740_992.0;

/// Replaces every float with no fractional part (`35.0`, `1e3`) within ±2^53 by the same
/// integer; other floats stay (and serde refuses them where an integer belongs).
fn integral_floats_as_integers(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            if f.fract() == 0.0 && f.abs() <= EXACT_FLOAT_MAX {
                #[allow(
                    clippy::cast_possible_truncation,
                    reason = "integral and within ±2^53: exact"
                )]
                let i = f as i64;
                *v = i.into();
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(integral_floats_as_integers),
        serde_json::Value::Object(m) => m.values_mut().for_each(integral_floats_as_integers),
        _ => {}
    }
}

/// A body's deserialization error as a 400 naming the field.
fn body_error<E: std::fmt::Display>(e: serde_path_to_error::Error<E>) -> ApiError {
    let path = e.path().to_string();
    let inner = e.into_inner();
    let mut field = (path != ".").then_some(path);
    // A missing field is reported at its parent: name the field itself.
    let message = inner.to_string();
    if let Some(name) = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(name, _)| name)
    {
        field = Some(match field {
            Some(parent) => format!("{parent}.{name}"),
            None => name.to_owned(),
        });
    }
    ApiError::BadRequest {
        detail: match &field {
            Some(f) => format!("{f}: {inner}"),
            None => inner.to_string(),
        },
        field,
    }
}

/// The `Idempotency-Key` header, if any: 1..=200 visible ASCII characters.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let mut values = headers.get_all("idempotency-key").iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let bad = |detail: &str| ApiError::BadRequest {
        field: Some("Idempotency-Key".into()),
        detail: detail.into(),
    };
    if values.next().is_some() {
        return Err(bad("the Idempotency-Key header is repeated"));
    }
    let key = value
        .to_str()
        .map_err(|_| bad("the Idempotency-Key header is not visible ASCII"))?;
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY {
        return Err(bad(
            "the Idempotency-Key header must be 1 to 200 characters",
        ));
    }
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad(
            "the Idempotency-Key header must be visible ASCII without spaces",
        ));
    }
    Ok(Some(key.to_owned()))
}

fn path_id(path: Result<Path<String>, PathRejection>) -> Result<u64, ApiError> {
    let bad = |detail: String| ApiError::BadRequest {
        field: Some("id".into()),
        detail,
    };
    let Path(raw) = path.map_err(|e| bad(e.body_text()))?;
    raw.parse()
        .ok()
        .filter(|id| (1..=super::openapi::ID_MAX).contains(id))
        .ok_or_else(|| {
            bad(format!(
                "event id {raw:?} is not an integer within 1..={}",
                super::openapi::ID_MAX
            ))
        })
}

/// The `{id}` of a modem route.
fn modem_id(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(id) = path.map_err(|e| ApiError::BadRequest {
        field: Some("id".into()),
        detail: e.body_text(),
    })?;
    Ok(id)
}

/// A modem as the API shows it. Read under the controller's lock: the pipeline updates its
/// state within the controller's calls, so the view matches the levels.
fn modem_view(
    ctl: &Controller,
    id: String,
    pipeline: Option<&PipelineShared>,
) -> Result<ModemView, ApiError> {
    let base = *ctl.engine().base(&id).ok_or_else(|| ApiError::NotFound {
        detail: format!("unknown modem {id}"),
    })?;
    Ok(ModemView {
        pipeline: pipeline.and_then(|p| p.status(&id)),
        effective: ctl.effective(&id).unwrap_or(base),
        bound: ctl.binding(&id).is_some(),
        base,
        id,
    })
}

fn event_of(ctl: &Controller, id: u64) -> Result<Event, ApiError> {
    ctl.engine().event(id).ok_or_else(|| ApiError::NotFound {
        detail: format!("unknown event {id}"),
    })
}

// ---- handlers ---------------------------------------------------------------------------

/// `GET /v1/modems/{id}`.
pub async fn get_modem(
    State(state): State<AppState>,
    principal: Principal,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<ModemView>, ApiError> {
    let id = modem_id(path)?;
    principal.require_modem(&id)?;
    let shared = state.pipeline.clone();
    with_controller(&state, move |ctl, _| {
        modem_view(ctl, id, shared.as_deref()).map(Json)
    })
    .await
}

/// `PUT /v1/modems/{id}/base`: replaces the modem's base plan with the body (a whole plan:
/// absent fields are unset, not kept). Stored with its audit line (who, when, old and new
/// plan) before the answer; the answer is the modem after the change, its active grants
/// layered over the new plan. Putting the plan the modem already has changes and audits
/// nothing (PUT is idempotent).
pub async fn put_modem_base(
    State(state): State<AppState>,
    principal: Principal,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ModemView>, ApiError> {
    principal.require_base_change()?;
    let id = modem_id(path)?;
    let plan = QosLevel::from(json_body::<QosBody>(&headers, body)?);
    plan.validate().map_err(|e| ApiError::invalid_qos("", &e))?;
    let by = BaseSource::Api {
        role: principal.role.as_str().to_owned(),
        subject: principal.subject,
    };
    let (shared, hook) = (state.pipeline.clone(), state.on_changes.clone());
    with_controller(&state, move |ctl, now| {
        if ctl.set_base(&id, plan, by, now)? {
            if let Some(hook) = hook {
                hook(ctl, std::slice::from_ref(&id));
            }
        }
        modem_view(ctl, id, shared.as_deref()).map(Json)
    })
    .await
}

/// `GET /v1/modems/{id}/audit`: who replaced the modem's base plan, when, from what to what,
/// oldest first (admin and CSR tokens).
pub async fn modem_audit(
    State(state): State<AppState>,
    principal: Principal,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Vec<ModemAuditView>>, ApiError> {
    if !matches!(principal.role, super::Role::Admin | super::Role::Csr) {
        return Err(ApiError::Forbidden {
            detail: "the base-plan audit trail needs an admin or CSR token".into(),
        });
    }
    let id = modem_id(path)?;
    with_controller(&state, move |ctl, _| {
        let trail = ctl.modem_audit(&id)?;
        Ok(Json(trail.into_iter().map(ModemAuditView::from).collect()))
    })
    .await
}

/// `POST /v1/events`.
pub async fn create_event(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    principal.require_modem_routes()?;
    let key = idempotency_key(&headers)?;
    let body: CreateEvent = json_body(&headers, body)?;
    principal.require_modem(&body.modem)?;
    let source = principal.source().expect("providers were refused above");
    if body.level.is_none() && restricted(&state, &principal).await? {
        return Err(ApiError::Forbidden {
            detail: format!(
                "{} tokens ask for a level of the grant catalogue (\"level\"; GET /v1/catalogue lists them), not for a grant of their own",
                principal.role
            ),
        });
    }
    if let Some(l) = &body.level {
        if l.is_empty() || l.len() > crate::provision::catalogue::MAX_LEVEL_NAME {
            return Err(ApiError::Unprocessable {
                field: "level".into(),
                detail: format!(
                    "a level name is 1..={} characters",
                    crate::provision::catalogue::MAX_LEVEL_NAME
                ),
            });
        }
    }
    let qos = match (body.qos, &body.level) {
        (Some(q), None) => q.into(),
        (None, Some(_)) => QosLevel::default(),
        (Some(_), Some(_)) => {
            return Err(ApiError::Unprocessable {
                field: "qos".into(),
                detail: "give a level or a qos, not both: a level is its own grant".into(),
            });
        }
        (None, None) => {
            return Err(ApiError::Unprocessable {
                field: "qos".into(),
                detail: "the request names neither a qos nor a catalogue level".into(),
            });
        }
    };
    let req = EventRequest {
        modem: body.modem,
        source,
        qos,
        start_ms: body.start_ms,
        stop_ms: body.stop_ms,
        idempotency_key: key.map(|k| principal.scoped_key(&k)),
        level: body.level,
    };
    let submitted = group_submit(&state, req).await?;
    let status = if submitted.duplicate {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let view = SubmittedView {
        id: submitted.id,
        duplicate: submitted.duplicate,
    };
    let mut resp = (status, Json(view)).into_response();
    if let Ok(location) = format!("/v1/events/{}", submitted.id).parse() {
        resp.headers_mut()
            .insert(axum::http::header::LOCATION, location);
    }
    Ok(resp)
}

/// `GET /v1/events?modem=&state=`.
pub async fn list_events(
    State(state): State<AppState>,
    principal: Principal,
    query: Result<Query<BTreeMap<String, String>>, QueryRejection>,
) -> Result<Json<Vec<EventView>>, ApiError> {
    principal.require_modem_routes()?;
    let Query(query) = query.map_err(|e| ApiError::BadRequest {
        field: None,
        detail: e.body_text(),
    })?;
    let mut modem = None;
    let mut wanted = None;
    for (name, value) in query {
        match name.as_str() {
            "modem" => {
                let len = value.chars().count();
                if !(1..=MAX_MODEM_ID).contains(&len) {
                    return Err(ApiError::BadRequest {
                        field: Some("modem".into()),
                        detail: format!(
                            "modem: a modem id has 1 to {MAX_MODEM_ID} characters, not {len}"
                        ),
                    });
                }
                modem = Some(value);
            }
            "state" => {
                wanted = Some(parse_state(&value).ok_or_else(|| ApiError::BadRequest {
                    field: Some("state".into()),
                    detail: format!(
                        "state {value:?} is not one of pending, active, completed, cancelled"
                    ),
                })?)
            }
            other => {
                return Err(ApiError::BadRequest {
                    field: Some(other.to_owned()),
                    detail: format!("unknown query parameter {other:?} (modem, state)"),
                });
            }
        }
    }
    if let Some(m) = &modem {
        principal.require_modem(m)?;
    }
    let own = (principal.role == super::Role::Subscriber).then(|| principal.subject.clone());
    with_controller(&state, move |ctl, _| {
        let events = ctl
            .engine()
            .events()
            .filter(|e| modem.as_ref().is_none_or(|m| *m == e.modem))
            .filter(|e| own.as_ref().is_none_or(|m| *m == e.modem))
            .filter(|e| wanted.is_none_or(|s| s == e.state))
            .map(|e| EventView::from(&e))
            .collect();
        Ok(Json(events))
    })
    .await
}

/// `GET /v1/events/{id}`.
pub async fn get_event(
    State(state): State<AppState>,
    principal: Principal,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<EventView>, ApiError> {
    principal.require_modem_routes()?;
    let id = path_id(path)?;
    with_controller(&state, move |ctl, _| {
        let event = event_of(ctl, id)?;
        principal.require_modem(&event.modem)?;
        Ok(Json(EventView::from(&event)))
    })
    .await
}

/// `PATCH /v1/events/{id}`: merges the body into the pending event and amends it.
pub async fn patch_event(
    State(state): State<AppState>,
    principal: Principal,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<EventView>, ApiError> {
    principal.require_modem_routes()?;
    let id = path_id(path)?;
    let patch: PatchEvent = json_body(&headers, body)?;
    if patch.qos.is_some() && restricted(&state, &principal).await? {
        return Err(ApiError::Forbidden {
            detail: format!(
                "{} tokens change only the times of a grant; cancel it and ask for another catalogue level",
                principal.role
            ),
        });
    }
    if patch.start_ms.is_none() && patch.stop_ms.is_none() && patch.qos.is_none() {
        return Err(ApiError::Unprocessable {
            field: "body".into(),
            detail: "the patch sets none of start_ms, stop_ms, qos".into(),
        });
    }
    with_controller(&state, move |ctl, now| {
        let event = event_of(ctl, id)?;
        principal.require_event_change(&event)?;
        let amendment = Amendment {
            start_ms: patch.start_ms.unwrap_or(event.start_ms),
            stop_ms: patch.stop_ms.unwrap_or(event.stop_ms),
            qos: patch.qos.map_or(event.qos, QosLevel::from),
        };
        ctl.modify(id, amendment, now)?;
        Ok(Json(EventView::from(&event_of(ctl, id)?)))
    })
    .await
}

/// `DELETE /v1/events/{id}`: cancels the event (an active grant is reverted at once).
pub async fn delete_event(
    State(state): State<AppState>,
    principal: Principal,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<EventView>, ApiError> {
    principal.require_modem_routes()?;
    let id = path_id(path)?;
    let hook = state.on_changes.clone();
    with_controller(&state, move |ctl, now| {
        let event = event_of(ctl, id)?;
        principal.require_event_change(&event)?;
        ctl.cancel(id, now)?;
        // Cancelling an active grant changes the modem's effective QoS at once.
        if let Some(hook) = hook.filter(|_| event.state == EventState::Active) {
            hook(ctl, std::slice::from_ref(&event.modem));
        }
        Ok(Json(EventView::from(&event_of(ctl, id)?)))
    })
    .await
}

/// Whether the caller's role must take its grants from the catalogue: subscribers always,
/// CSRs when `controller.grants.csr_from_catalogue` is set.
async fn restricted(state: &AppState, principal: &Principal) -> Result<bool, ApiError> {
    match principal.role {
        super::Role::Subscriber => Ok(true),
        super::Role::Csr => Ok(state
            .csr_from_catalogue
            .load(std::sync::atomic::Ordering::Relaxed)),
        _ => Ok(false),
    }
}

/// `GET /v1/catalogue`: the grant levels subscribers (and CSRs, if so configured) choose from.
pub async fn catalogue(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<CatalogueView>, ApiError> {
    principal.require_modem_routes()?;
    with_controller(&state, |ctl, _| {
        let c = ctl.catalogue();
        Ok(Json(CatalogueView {
            csr_from_catalogue: c.csr_from_catalogue,
            max_per_month: c.max_per_month,
            levels: c
                .levels()
                .map(|l| LevelView {
                    name: l.name.clone(),
                    qos: l.qos,
                    max_duration_s: l.max_duration_ms / 1000,
                    per_month: l.per_month,
                })
                .collect(),
        }))
    })
    .await
}

/// `GET /openapi.json`.
pub async fn openapi_json() -> Json<serde_json::Value> {
    Json(super::openapi::document())
}

/// `GET /metrics`: the Prometheus text exposition (admin only; see the module docs).
pub async fn metrics(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Response, ApiError> {
    if principal.role != super::Role::Admin {
        return Err(ApiError::Forbidden {
            detail: "metrics need an admin token".into(),
        });
    }
    let metrics = state.metrics.clone().ok_or_else(|| ApiError::NotFound {
        detail: "this process serves no metrics".into(),
    })?;
    // Reading the maps takes the data plane's and the controller's locks: off the runtime.
    let text = tokio::task::spawn_blocking(move || metrics.render())
        .await
        .map_err(|e| ApiError::Internal {
            detail: format!("metrics task: {e}"),
        })?
        .map_err(|e| ApiError::Internal {
            detail: format!("rendering metrics: {e}"),
        })?;
    Ok(([(CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response())
}

/// `GET /v1/modem-files`: the operator-dropped files the controller handled, oldest first
/// (admin and CSR tokens).
pub async fn modem_files(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<Vec<FileRecord>>, ApiError> {
    if !matches!(principal.role, super::Role::Admin | super::Role::Csr) {
        return Err(ApiError::Forbidden {
            detail: "modem files need an admin or CSR token".into(),
        });
    }
    Ok(Json(
        state
            .pipeline
            .as_ref()
            .map(|p| p.files())
            .unwrap_or_default(),
    ))
}

/// `GET /files/{name}`: a modem configuration file, without authentication (see the module
/// documentation). A name no file can have (too long, malformed) is 404 like a missing file;
/// messages show at most the first 64 characters of the name ([`crate::tftp::handler::Shown`]).
pub async fn file(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(name) = path.map_err(|e| ApiError::BadRequest {
        field: Some("name".into()),
        detail: e.body_text(),
    })?;
    let not_found = || ApiError::NotFound {
        detail: format!("no file {}", crate::tftp::handler::Shown(&name)),
    };
    let handler = state.files.clone().ok_or_else(not_found)?;
    let n = name.clone();
    let data = tokio::task::spawn_blocking(move || handler.open(&n))
        .await
        .map_err(|e| ApiError::Internal {
            detail: format!("file task: {e}"),
        })?
        .map_err(|e| match crate::tftp::http::status(&e) {
            StatusCode::NOT_FOUND | StatusCode::BAD_REQUEST | StatusCode::FORBIDDEN => not_found(),
            _ => ApiError::Internal {
                detail: format!("serving a modem file: {e}"),
            },
        })?;
    Ok((
        [(CONTENT_TYPE, "application/octet-stream")],
        axum::body::Body::from(Bytes::from_owner(data)),
    )
        .into_response())
}

/// Any path no route serves.
pub async fn no_route() -> ApiError {
    ApiError::NotFound {
        detail: "no such route; see /openapi.json".into(),
    }
}
