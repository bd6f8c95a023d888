//! Why the network service manager refuses: [`Refusal`] for allocation requests (with the
//! 3GPP Rx result code each maps to), [`CatalogError`] for providers, applications, links and
//! sessions. Each variant names the field or constraint, what was asked and what is left.

use super::model::Dir;

/// Why an allocation was refused, naming the constraint, what was asked and what is left. The
/// 3GPP Rx result code of each variant is [`Refusal::result_code`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("unknown provider {0}")]
    UnknownProvider(String),
    #[error("provider {provider} has no application {application}")]
    UnknownApplication {
        provider: String,
        application: String,
    },
    #[error(
        "application {application}: classifier {index} reaches {prefix}, outside provider \
         {provider}'s declared prefixes [{declared}]"
    )]
    NotEntitled {
        provider: String,
        application: String,
        index: usize,
        prefix: String,
        declared: String,
    },
    #[error("{field}: {detail}")]
    Invalid { field: String, detail: String },
    #[error("{field}: {detail}")]
    SessionNotAvailable { field: &'static str, detail: String },
    #[error("session {session}: its {role} {link} has no registered capacity")]
    NoLink {
        session: String,
        role: &'static str,
        link: String,
    },
    #[error(
        "link {link} {dir}: requested {requested_bps} bit/s, but only {available_bps} bit/s \
         of {limit_bps} bit/s (capacity {capacity_bps} × overbooking) is left \
         ({committed_bps} bit/s committed)"
    )]
    CapacityExceeded {
        link: String,
        dir: Dir,
        requested_bps: u64,
        available_bps: u64,
        committed_bps: u64,
        limit_bps: u64,
        capacity_bps: u64,
    },
}

impl Refusal {
    /// The Diameter Rx Experimental-Result-Code (3GPP TS 29.214 §5.5, docs/PROTOCOLS.md §6) the
    /// refusal corresponds to: 5065 IP-CAN_SESSION_NOT_AVAILABLE, 5063
    /// REQUESTED_SERVICE_NOT_AUTHORIZED, 5061 INVALID_SERVICE_INFORMATION, and 5006
    /// DIAMETER_RESOURCES_EXCEEDED (RFC 6733) for capacity.
    #[must_use]
    pub fn result_code(&self) -> u32 {
        match self {
            Refusal::SessionNotAvailable { .. } => 5065,
            Refusal::NotEntitled { .. } | Refusal::UnknownProvider(_) => 5063,
            Refusal::UnknownApplication { .. } | Refusal::Invalid { .. } => 5061,
            Refusal::NoLink { .. } | Refusal::CapacityExceeded { .. } => 5006,
        }
    }

    /// A short machine-readable reason.
    #[must_use]
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::UnknownProvider(_) => "unknown_provider",
            Refusal::UnknownApplication { .. } => "unknown_application",
            Refusal::NotEntitled { .. } => "service_not_authorized",
            Refusal::Invalid { .. } => "invalid_service_information",
            Refusal::SessionNotAvailable { .. } => "session_not_available",
            Refusal::NoLink { .. } => "link_not_registered",
            Refusal::CapacityExceeded { .. } => "capacity_exceeded",
        }
    }
}

/// Why a session, link, provider or application change was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    #[error("{field}: {detail}")]
    Invalid { field: String, detail: String },
    #[error("{what} {id} is unknown")]
    Unknown { what: &'static str, id: String },
    #[error("address {prefix} is already held by active session {other}")]
    AddressTaken { prefix: String, other: String },
    #[error("{what} {id} is still used by {users}")]
    InUse {
        what: &'static str,
        id: String,
        users: String,
    },
    /// A new capacity of a link below what is committed on it.
    #[error(
        "link {link} {dir}: a capacity of {capacity_bps} bit/s allows {limit_bps} bit/s \
         (capacity × overbooking), below the {committed_bps} bit/s committed on it; release \
         allocations first"
    )]
    BelowCommitted {
        link: String,
        dir: Dir,
        capacity_bps: u64,
        limit_bps: u64,
        committed_bps: u64,
    },
    /// A count limit reached by the change (e.g. the active sessions of one subscriber).
    #[error("{field}: {detail}")]
    Limit { field: String, detail: String },
}

pub(crate) fn invalid(field: impl Into<String>, detail: impl Into<String>) -> CatalogError {
    CatalogError::Invalid {
        field: field.into(),
        detail: detail.into(),
    }
}
