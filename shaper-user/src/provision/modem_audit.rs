//! The audit trail of modems' base plans: who replaced a modem's base plan, when, and from
//! what to what. Events have their own trail ([`super::AuditEntry`]); a base plan is not an
//! event (it has no start, stop or id), so its changes are recorded per modem.

use serde::{Deserialize, Serialize};

use super::QosLevel;

/// Who replaced a base plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum BaseSource {
    /// An API caller (`PUT /v1/modems/{id}/base`): its token's role and subject.
    Api { role: String, subject: String },
    /// The configuration file's `[[modem]]` plan, applied at `shaper run` start because it
    /// changed since the last run.
    Config,
    /// A DOCSIS configuration file dropped in the incoming directory.
    File { name: String },
}

impl std::fmt::Display for BaseSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BaseSource::Api { role, subject } => write!(f, "api:{role}:{subject}"),
            BaseSource::Config => f.write_str("config"),
            BaseSource::File { name } => write!(f, "file:{name}"),
        }
    }
}

/// One replacement of a modem's base plan. Only real changes are recorded (`old != new`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModemAuditEntry {
    /// When, ms since the Unix epoch.
    pub at_ms: u64,
    pub modem: String,
    pub by: BaseSource,
    pub old: QosLevel,
    pub new: QosLevel,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_serialize_tagged() {
        let api = BaseSource::Api {
            role: "csr".into(),
            subject: "alice".into(),
        };
        assert_eq!(
            serde_json::to_value(&api).unwrap(),
            serde_json::json!({ "kind": "api", "role": "csr", "subject": "alice" })
        );
        assert_eq!(
            serde_json::to_value(BaseSource::Config).unwrap(),
            serde_json::json!({ "kind": "config" })
        );
        let file = BaseSource::File {
            name: "cm1.cfg".into(),
        };
        let text = serde_json::to_string(&file).unwrap();
        assert_eq!(serde_json::from_str::<BaseSource>(&text).unwrap(), file);
        assert_eq!(api.to_string(), "api:csr:alice");
        assert_eq!(file.to_string(), "file:cm1.cfg");
    }
}
