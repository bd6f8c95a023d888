//! Errors of the HTTP API, and the one place they become HTTP statuses.
//!
//! Every error response is `application/problem+json` (RFC 9457): `type`, `title`, `status`,
//! `detail`, and — for input errors — a `field` member naming the offending field (a JSON path
//! such as `qos.max_down_bps`, a path or query parameter, or a header name).

use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::controller::ControllerError;
use crate::provision::{EventError, PolicyRefusal, ProvisionError, QosError};

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Why a request failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// No usable bearer token (401).
    #[error("{detail}")]
    Unauthenticated { detail: String, invalid_token: bool },
    /// Malformed request: JSON syntax or shape, header, path or query parameter (400).
    #[error("{detail}")]
    BadRequest {
        field: Option<String>,
        detail: String,
    },
    /// The token's role or subject does not reach the resource (403).
    #[error("{detail}")]
    Forbidden { detail: String },
    /// Unknown modem, event or route (404).
    #[error("{detail}")]
    NotFound { detail: String },
    /// The request clashes with the resource's state: idempotency key reused for another
    /// request, event no longer pending or already finished (409).
    #[error("{detail}")]
    Conflict { detail: String },
    /// Well-formed, but semantically invalid QoS or timing (422).
    #[error("{field}: {detail}")]
    Unprocessable { field: String, detail: String },
    /// The body exceeds the size limit (413).
    #[error("{detail}")]
    PayloadTooLarge { detail: String },
    /// The request target (path and query) exceeds its limit (414).
    #[error("{detail}")]
    UriTooLong { detail: String },
    /// The controller refuses work until it is reopened from its store (503).
    #[error("{detail}")]
    Unavailable { detail: String },
    /// A failure of the controller's own (500). The detail is logged, not sent.
    #[error("{detail}")]
    Internal { detail: String },
    /// An allocation or session change refused by the network service manager: 409 when it
    /// clashes with the network's state (capacity, sessions), 422 when the request itself is
    /// invalid or not entitled. `reason` and the 3GPP `result_code` go into the problem body.
    #[error("{detail}")]
    Refused {
        conflict: bool,
        field: Option<String>,
        reason: &'static str,
        result_code: Option<u32>,
        detail: String,
    },
}

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    title: &'static str,
    status: u16,
    detail: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    result_code: Option<u32>,
}

impl ApiError {
    /// The HTTP status: the only mapping of errors to statuses in the API.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthenticated { .. } => StatusCode::UNAUTHORIZED,
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UriTooLong { .. } => StatusCode::URI_TOO_LONG,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Refused { conflict: true, .. } => StatusCode::CONFLICT,
            ApiError::Refused {
                conflict: false, ..
            } => StatusCode::UNPROCESSABLE_ENTITY,
        }
    }

    /// The problem `type` URI and `title`.
    fn kind(&self) -> (&'static str, &'static str) {
        match self {
            ApiError::Unauthenticated { .. } => {
                ("urn:shaper:problem:unauthenticated", "Unauthenticated")
            }
            ApiError::BadRequest { .. } => ("urn:shaper:problem:bad-request", "Malformed request"),
            ApiError::Forbidden { .. } => ("urn:shaper:problem:forbidden", "Forbidden"),
            ApiError::NotFound { .. } => ("urn:shaper:problem:not-found", "Not found"),
            ApiError::Conflict { .. } => ("urn:shaper:problem:conflict", "Conflict"),
            ApiError::Unprocessable { .. } => {
                ("urn:shaper:problem:invalid", "Invalid QoS or timing")
            }
            ApiError::PayloadTooLarge { .. } => {
                ("urn:shaper:problem:too-large", "Request body too large")
            }
            ApiError::UriTooLong { .. } => ("urn:shaper:problem:uri-too-long", "URI too long"),
            ApiError::Unavailable { .. } => ("urn:shaper:problem:unavailable", "Unavailable"),
            ApiError::Internal { .. } => ("urn:shaper:problem:internal", "Internal error"),
            ApiError::Refused { .. } => ("urn:shaper:problem:refused", "Request refused"),
        }
    }

    /// The offending field, for input errors.
    pub fn field(&self) -> Option<&str> {
        match self {
            ApiError::BadRequest { field, .. } => field.as_deref(),
            ApiError::Unprocessable { field, .. } => Some(field),
            ApiError::Refused { field, .. } => field.as_deref(),
            _ => None,
        }
    }

    fn detail(&self) -> &str {
        match self {
            ApiError::Unauthenticated { detail, .. }
            | ApiError::BadRequest { detail, .. }
            | ApiError::Forbidden { detail }
            | ApiError::NotFound { detail }
            | ApiError::Conflict { detail }
            | ApiError::Unprocessable { detail, .. }
            | ApiError::PayloadTooLarge { detail }
            | ApiError::UriTooLong { detail }
            | ApiError::Unavailable { detail }
            | ApiError::Refused { detail, .. } => detail,
            ApiError::Internal { .. } => "the controller failed; see its log",
        }
    }
}

fn problem_response(
    status: StatusCode,
    kind: (&'static str, &'static str),
    detail: &str,
    field: Option<&str>,
    refusal: Option<(&str, Option<u32>)>,
) -> Response {
    let body = serde_json::to_vec(&Problem {
        kind: kind.0,
        title: kind.1,
        status: status.as_u16(),
        detail,
        field,
        reason: refusal.map(|r| r.0),
        result_code: refusal.and_then(|r| r.1),
    })
    .expect("a problem serializes");
    let mut resp = (status, body).into_response();
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    resp
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal { detail } = &self {
            tracing::error!(%detail, "API request failed");
        }
        let refusal = match &self {
            ApiError::Refused {
                reason,
                result_code,
                ..
            } => Some((*reason, *result_code)),
            _ => None,
        };
        let mut resp = problem_response(
            self.status(),
            self.kind(),
            self.detail(),
            self.field(),
            refusal,
        );
        if let ApiError::Unauthenticated { invalid_token, .. } = self {
            let challenge = if invalid_token {
                "Bearer realm=\"shaper\", error=\"invalid_token\""
            } else {
                "Bearer realm=\"shaper\""
            };
            resp.headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        }
        resp
    }
}

/// Middleware: an error response that is not problem+json (axum's own 405, for one) gets a
/// problem body for its status; its status and other headers (`Allow`) stay.
pub async fn problem_bodies(resp: Response) -> Response {
    let status = resp.status();
    let is_problem = resp
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == PROBLEM_JSON.as_bytes());
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return resp;
    }
    let (mut parts, _) = resp.into_parts();
    let title = status.canonical_reason().unwrap_or("Error");
    let detail = match status {
        StatusCode::METHOD_NOT_ALLOWED => "the route does not take this method (see Allow)",
        _ => title,
    };
    let (fresh, body) =
        problem_response(status, ("about:blank", title), detail, None, None).into_parts();
    parts.headers.remove(CONTENT_LENGTH);
    parts
        .headers
        .insert(CONTENT_TYPE, fresh.headers[CONTENT_TYPE].clone());
    Response::from_parts(parts, body)
}

impl ApiError {
    /// 422 for an invalid QoS level found at `prefix` in the body (`"qos."`, or `""` when
    /// the body is the level itself): `field` names the offending field under it.
    pub fn invalid_qos(prefix: &str, e: &QosError) -> ApiError {
        ApiError::Unprocessable {
            field: format!("{prefix}{}", qos_field(e)),
            detail: e.to_string(),
        }
    }
}

/// The field an invalid QoS level names (within the `qos` object).
fn qos_field(e: &QosError) -> &'static str {
    match e {
        QosError::RateTooLow { field, .. }
        | QosError::RateTooHigh { field, .. }
        | QosError::CommittedAboveMax { field, .. }
        | QosError::RatioOutOfRange { field, .. }
        | QosError::ZeroTime { field } => field,
        QosError::BurstTooSmall { .. } => "burst_bytes",
        QosError::PriorityOutOfRange(_) => "priority",
        QosError::MtuTooSmall(_) => "mtu",
    }
}

impl From<EventError> for ApiError {
    fn from(e: EventError) -> Self {
        let field = match &e {
            EventError::EmptyModem
            | EventError::ModemTooLong { .. }
            | EventError::ModemControlChar => "modem".to_owned(),
            EventError::EmptyIdempotencyKey | EventError::IdempotencyKeyTooLong { .. } => {
                "Idempotency-Key".to_owned()
            }
            EventError::TimeOutOfRange { field, .. } => (*field).to_owned(),
            EventError::EmptyGrant => "qos".to_owned(),
            EventError::Qos(q) => format!("qos.{}", qos_field(q)),
            EventError::StopNotAfterStart { .. } | EventError::StopInPast { .. } => {
                "stop_ms".to_owned()
            }
        };
        ApiError::Unprocessable {
            field,
            detail: e.to_string(),
        }
    }
}

impl From<ControllerError> for ApiError {
    fn from(e: ControllerError) -> Self {
        match e {
            ControllerError::Provision(p) => match p {
                ProvisionError::Invalid(e) => e.into(),
                ProvisionError::InvalidBase { error, .. } => ApiError::Unprocessable {
                    field: format!("base.{}", qos_field(&error)),
                    detail: error.to_string(),
                },
                ProvisionError::UnknownModem(_) | ProvisionError::UnknownEvent(_) => {
                    ApiError::NotFound {
                        detail: p.to_string(),
                    }
                }
                ProvisionError::ModemExists(_)
                | ProvisionError::NotPending { .. }
                | ProvisionError::Finished { .. }
                | ProvisionError::Conflict { .. } => ApiError::Conflict {
                    detail: p.to_string(),
                },
            },
            ControllerError::UnknownModem(_) => ApiError::NotFound {
                detail: e.to_string(),
            },
            ControllerError::Policy(ref p) => match p {
                PolicyRefusal::UnknownLevel { .. } => ApiError::Unprocessable {
                    field: "level".into(),
                    detail: e.to_string(),
                },
                PolicyRefusal::NoStop { .. } | PolicyRefusal::TooLong { .. } => {
                    ApiError::Unprocessable {
                        field: "stop_ms".into(),
                        detail: e.to_string(),
                    }
                }
                PolicyRefusal::QuotaUsed { .. } => ApiError::Forbidden {
                    detail: e.to_string(),
                },
            },
            ControllerError::LevelQos(_) => ApiError::Unprocessable {
                field: "qos".into(),
                detail: e.to_string(),
            },
            ControllerError::Admission(_) => ApiError::Conflict {
                detail: e.to_string(),
            },
            ControllerError::Poisoned(_)
            | ControllerError::BatchNotOpened(_)
            | ControllerError::NotStored(_)
            | ControllerError::NotCommitted(_) => ApiError::Unavailable {
                detail: e.to_string(),
            },
            ControllerError::Store(_)
            | ControllerError::Restore(_)
            | ControllerError::Binding { .. }
            | ControllerError::NotBound(_)
            | ControllerError::AlreadyBound(_)
            | ControllerError::Enforce(_)
            | ControllerError::PipelineUnconfigured
            | ControllerError::Pipeline(_) => ApiError::Internal {
                detail: e.to_string(),
            },
        }
    }
}

impl From<crate::nsm::Refusal> for ApiError {
    fn from(r: crate::nsm::Refusal) -> Self {
        use crate::nsm::Refusal;
        let (conflict, field) = match &r {
            Refusal::UnknownProvider(_) => {
                return ApiError::NotFound {
                    detail: r.to_string(),
                };
            }
            Refusal::UnknownApplication { .. } | Refusal::NotEntitled { .. } => {
                (false, Some("application".to_owned()))
            }
            Refusal::Invalid { field, .. } => (false, Some(field.clone())),
            Refusal::SessionNotAvailable { field, .. } => (true, Some((*field).to_owned())),
            Refusal::NoLink { .. } | Refusal::CapacityExceeded { .. } => (true, None),
        };
        ApiError::Refused {
            conflict,
            field,
            reason: r.reason(),
            result_code: Some(r.result_code()),
            detail: r.to_string(),
        }
    }
}

impl From<crate::nsm::CatalogError> for ApiError {
    fn from(e: crate::nsm::CatalogError) -> Self {
        use crate::nsm::CatalogError;
        match &e {
            CatalogError::Invalid { field, .. } => ApiError::Unprocessable {
                field: field.clone(),
                detail: e.to_string(),
            },
            CatalogError::Unknown { .. } => ApiError::NotFound {
                detail: e.to_string(),
            },
            CatalogError::AddressTaken { .. } => ApiError::Refused {
                conflict: true,
                field: Some("prefix".into()),
                reason: "address_taken",
                result_code: None,
                detail: e.to_string(),
            },
            CatalogError::InUse { .. } => ApiError::Conflict {
                detail: e.to_string(),
            },
            CatalogError::BelowCommitted { dir, .. } => ApiError::Refused {
                conflict: true,
                field: Some(format!("capacity_{dir}_bps")),
                reason: "capacity_below_committed",
                result_code: None,
                detail: e.to_string(),
            },
            CatalogError::Limit { field, .. } => ApiError::Refused {
                conflict: true,
                field: Some(field.clone()),
                reason: "limit_reached",
                result_code: None,
                detail: e.to_string(),
            },
        }
    }
}

impl From<crate::nsm::NsmError> for ApiError {
    fn from(e: crate::nsm::NsmError) -> Self {
        use crate::dataplane::DataplaneError;
        use crate::dataplane::rules::CompileError;
        use crate::nsm::{AllocEnforceError, NsmError};
        match e {
            NsmError::Refused(r) => r.into(),
            NsmError::Catalog(c) => c.into(),
            NsmError::UnknownAllocation { .. } => ApiError::NotFound {
                detail: e.to_string(),
            },
            NsmError::AlreadyReleased { .. } => ApiError::Conflict {
                detail: e.to_string(),
            },
            NsmError::Enforce(AllocEnforceError::Exhausted { .. }) => ApiError::Refused {
                conflict: true,
                field: None,
                reason: "dataplane_exhausted",
                result_code: Some(5006),
                detail: e.to_string(),
            },
            // The data plane's tables cannot hold the rule set with the allocation's rules
            // (e.g. more than 8 rules on one (protocol, source, destination) key): refused
            // before anything of it was written, so nothing is left behind.
            NsmError::Enforce(AllocEnforceError::Rules {
                source:
                    DataplaneError::Rules(
                        CompileError::ChainTooLong { .. } | CompileError::TooManyShapes { .. },
                    )
                    | DataplaneError::Full { .. },
                ..
            }) => ApiError::Refused {
                conflict: true,
                field: None,
                reason: "dataplane_rule_limit",
                result_code: Some(5006),
                detail: e.to_string(),
            },
            NsmError::Enforce(_) | NsmError::Store(_) => ApiError::Internal {
                detail: e.to_string(),
            },
        }
    }
}

impl From<crate::store::SessionStoreError> for ApiError {
    fn from(e: crate::store::SessionStoreError) -> Self {
        use crate::store::SessionStoreError;
        match e {
            SessionStoreError::Refused(c) => c.into(),
            SessionStoreError::Store(_) | SessionStoreError::Enforce { .. } => ApiError::Internal {
                detail: e.to_string(),
            },
        }
    }
}
