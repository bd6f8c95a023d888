//! The API's response views: what each route answers, as JSON.

use serde::Serialize;

use super::auth::client_key;
use crate::modem::pipeline::PipelineStatus;
use crate::provision::{BaseSource, Event, EventState, ModemAuditEntry, QosLevel, Source};

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum SourceView {
    Csr { user: String },
    Subscriber,
    Automation { trigger: String },
}

impl From<&Source> for SourceView {
    fn from(s: &Source) -> SourceView {
        match s {
            Source::Csr { user } => SourceView::Csr { user: user.clone() },
            Source::Subscriber => SourceView::Subscriber,
            Source::Automation { trigger } => SourceView::Automation {
                trigger: trigger.clone(),
            },
        }
    }
}

pub fn state_name(s: EventState) -> &'static str {
    s.as_str()
}

pub(super) fn parse_state(s: &str) -> Option<EventState> {
    [
        EventState::Pending,
        EventState::Active,
        EventState::Completed,
        EventState::Cancelled,
    ]
    .into_iter()
    .find(|st| state_name(*st).eq_ignore_ascii_case(s))
}

/// An event as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EventView {
    pub id: u64,
    pub modem: String,
    pub source: SourceView,
    pub qos: QosLevel,
    pub start_ms: Option<u64>,
    pub stop_ms: Option<u64>,
    /// The key as the client sent it.
    pub idempotency_key: Option<String>,
    /// The catalogue level it was asked as, if any.
    pub level: Option<String>,
    pub created_ms: u64,
    pub start_due_ms: u64,
    pub state: &'static str,
}

impl From<&Event> for EventView {
    fn from(e: &Event) -> EventView {
        EventView {
            id: e.id,
            modem: e.modem.clone(),
            source: (&e.source).into(),
            qos: e.qos,
            start_ms: e.start_ms,
            stop_ms: e.stop_ms,
            idempotency_key: e
                .idempotency_key
                .as_deref()
                .map(|k| client_key(k).to_owned()),
            level: e.level.clone(),
            created_ms: e.created_ms,
            start_due_ms: e.start_due_ms,
            state: state_name(e.state),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ModemView {
    pub id: String,
    pub base: QosLevel,
    pub effective: QosLevel,
    /// Whether the modem has a data-plane binding (an unbound modem is not enforced).
    pub bound: bool,
    /// The modem pipeline's state for the modem; `null` when the pipeline is off or has made
    /// no file for it yet.
    pub pipeline: Option<PipelineStatus>,
}

/// One line of a modem's base-plan audit trail (`GET /v1/modems/{id}/audit`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ModemAuditView {
    pub at_ms: u64,
    /// Who replaced the plan: `{"kind": "api", "role", "subject"}`, `{"kind": "config"}` (the
    /// configuration file, edited since the last run) or `{"kind": "file", "name"}` (a dropped
    /// DOCSIS file).
    pub by: BaseSource,
    pub old: QosLevel,
    pub new: QosLevel,
}

impl From<ModemAuditEntry> for ModemAuditView {
    fn from(e: ModemAuditEntry) -> ModemAuditView {
        ModemAuditView {
            at_ms: e.at_ms,
            by: e.by,
            old: e.old,
            new: e.new,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct SubmittedView {
    pub id: u64,
    pub duplicate: bool,
}

/// A level of the grant catalogue as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LevelView {
    pub name: String,
    pub qos: QosLevel,
    pub max_duration_s: u64,
    pub per_month: Option<u32>,
}

/// `GET /v1/catalogue`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CatalogueView {
    /// CSR tokens too must choose from it.
    pub csr_from_catalogue: bool,
    /// Catalogue grants per modem per calendar month (UTC), all levels together.
    pub max_per_month: Option<u32>,
    pub levels: Vec<LevelView>,
}
