//! Telling the BRAS a subscriber's new rate (docs/ARCHITECTURE.md §1.6: the BRAS is
//! told by RADIUS CoA, RFC 5176).
//!
//! The subscriber's sessions come from the [`SessionStore`] that accounting fills; each
//! session's BRAS (NAS-IP-Address, NAS-Identifier) is looked up in a [`BrasDirectory`] for its
//! CoA address, secret and rate profile; one CoA-Request goes per session, identified the way
//! the BRAS reported it (Acct-Session-Id, User-Name, Framed-IP-Address, NAS identification),
//! and each result is returned with its [`CoaOutcome`].

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::coa::{CoaClient, CoaError, CoaOutcome, NasTarget};
use crate::provision::QosLevel;
use crate::sessions::{Session, SessionSelector, SessionStore, SessionStoreError};

/// One BRAS: how sessions name it, and how to reach its CoA port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrasEntry {
    /// Matches a session's NAS-IP-Address (when both are set).
    pub nas_ip: Option<Ipv4Addr>,
    /// Matches a session's NAS-Identifier (when both are set).
    pub nas_identifier: Option<String>,
    pub target: NasTarget,
}

/// The BRASes shaper sends CoA to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BrasDirectory(pub Vec<BrasEntry>);

impl BrasDirectory {
    /// The first entry whose set fields all match the session's BRAS, and that sets at least
    /// one of them.
    #[must_use]
    pub fn target_for(&self, s: &Session) -> Option<&NasTarget> {
        self.0
            .iter()
            .find(|e| {
                (e.nas_ip.is_some() || e.nas_identifier.is_some())
                    && e.nas_ip.is_none_or(|ip| s.nas_ip == Some(ip))
                    && e.nas_identifier
                        .as_deref()
                        .is_none_or(|n| s.nas_identifier.as_deref() == Some(n))
            })
            .map(|e| &e.target)
    }
}

/// Why a subscriber's BRAS could not be told.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("subscriber {0} has no session in the session table")]
    NoSession(String),
    #[error(
        "session {session}: no BRAS configured for NAS-IP-Address {nas_ip:?} / NAS-Identifier {nas_identifier:?}"
    )]
    UnknownBras {
        session: String,
        nas_ip: Option<Ipv4Addr>,
        nas_identifier: Option<String>,
    },
    #[error("session table: {0}")]
    Store(#[from] SessionStoreError),
    #[error("CoA to {nas}: {source}")]
    Coa {
        nas: SocketAddr,
        #[source]
        source: CoaError,
    },
}

/// The result for one session.
#[derive(Debug)]
pub struct SessionNotice {
    pub acct_session_id: String,
    pub result: Result<CoaOutcome, NotifyError>,
}

/// See the module documentation.
pub struct BrasNotifier {
    client: Arc<CoaClient>,
    sessions: Arc<dyn SessionStore>,
    directory: BrasDirectory,
}

impl std::fmt::Debug for BrasNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrasNotifier")
            .field("directory", &self.directory)
            .finish_non_exhaustive()
    }
}

impl BrasNotifier {
    #[must_use]
    pub fn new(
        client: Arc<CoaClient>,
        sessions: Arc<dyn SessionStore>,
        directory: BrasDirectory,
    ) -> BrasNotifier {
        BrasNotifier {
            client,
            sessions,
            directory,
        }
    }

    /// Sends `qos` to the BRAS of every session of `subscriber` (User-Name), one at a time.
    pub async fn subscriber_qos(
        &self,
        subscriber: &str,
        qos: &QosLevel,
    ) -> Result<Vec<SessionNotice>, NotifyError> {
        let sel = SessionSelector {
            user_name: Some(subscriber.to_owned()),
            ..SessionSelector::default()
        };
        let sessions = self.sessions.find(&sel)?;
        if sessions.is_empty() {
            return Err(NotifyError::NoSession(subscriber.to_owned()));
        }
        let mut out = Vec::with_capacity(sessions.len());
        for s in sessions {
            out.push(self.session_qos(&s, qos).await);
        }
        Ok(out)
    }

    /// Sends `qos` to the BRAS of one session (found in the directory), naming the session
    /// the way the BRAS reported it.
    pub async fn session_qos(&self, s: &Session, qos: &QosLevel) -> SessionNotice {
        let result = match self.directory.target_for(s) {
            None => Err(NotifyError::UnknownBras {
                session: s.acct_session_id.clone(),
                nas_ip: s.nas_ip,
                nas_identifier: s.nas_identifier.clone(),
            }),
            Some(nas) => self
                .client
                .coa(nas, &SessionSelector::for_session(s), qos)
                .await
                .map_err(|source| NotifyError::Coa {
                    nas: nas.addr,
                    source,
                }),
        };
        SessionNotice {
            acct_session_id: s.acct_session_id.clone(),
            result,
        }
    }

    /// The directory this notifier looks BRASes up in.
    #[must_use]
    pub fn directory(&self) -> &BrasDirectory {
        &self.directory
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;
    use crate::clock::Clock;
    use crate::notify::RateProfile;
    use crate::notify::coa::RetryPolicy;
    use crate::notify::coa_server::{
        ClientConfig, CoaRefusal, CoaSink, RadiusServer, RadiusServerConfig,
    };
    use crate::proto::radius::{Code, ErrorCause};
    use crate::sessions::SessionTable;

    /// The BRAS side: our own server with a sink that records what it was told and refuses
    /// session "s-gone".
    #[derive(Default)]
    struct Bras(Mutex<Vec<(SessionSelector, QosLevel)>>);

    impl CoaSink for Bras {
        fn coa(&self, target: SessionSelector, qos: QosLevel) -> Result<(), CoaRefusal> {
            if target.acct_session_id.as_deref() == Some("s-gone") {
                return Err(CoaRefusal::SessionNotFound);
            }
            self.0.lock().unwrap().push((target, qos));
            Ok(())
        }
        fn disconnect(&self, _: SessionSelector) -> Result<(), CoaRefusal> {
            Ok(())
        }
    }

    fn session(id: &str, nas: &str) -> Session {
        Session {
            acct_session_id: id.into(),
            subscriber: Some("cm1".into()),
            framed_ipv4: Some("198.18.0.10".parse().unwrap()),
            framed_ipv6_prefix: None,
            delegated_ipv6_prefix: None,
            calling_station_id: None,
            nas_ip: None,
            nas_identifier: Some(nas.into()),
            gateway: None,
            since_ms: 0,
            updated_ms: 0,
        }
    }

    #[tokio::test]
    async fn each_session_goes_to_its_bras_and_reports_its_outcome() {
        let bras = Arc::new(Bras::default());
        let config = RadiusServerConfig {
            coa_listen: "127.0.0.1:0".parse().unwrap(),
            acct_listen: None,
            clients: vec![ClientConfig {
                addr: "127.0.0.1".parse().unwrap(),
                secret: "bras-secret".into(),
                require_message_authenticator: true,
                name: None,
            }],
            ..RadiusServerConfig::default()
        };
        let server = Arc::new(
            RadiusServer::new(config, bras.clone(), Arc::new(SessionTable::new())).unwrap(),
        );
        let clock: Clock = Arc::new(crate::clock::system_now_ms);
        let handle = server.spawn(clock).await.unwrap();

        let table = Arc::new(SessionTable::new());
        // Each on an address of its own (a session on a held address supersedes the holder).
        for (i, (id, nas)) in [("s1", "bras1"), ("s-gone", "bras1"), ("s3", "bras-unknown")]
            .into_iter()
            .enumerate()
        {
            let mut s = session(id, nas);
            s.framed_ipv4 = Some(std::net::Ipv4Addr::new(198, 18, 0, 10 + i as u8));
            table.start(s).unwrap();
        }
        let directory = BrasDirectory(vec![BrasEntry {
            nas_ip: None,
            nas_identifier: Some("bras1".into()),
            target: NasTarget {
                addr: handle.coa_addr,
                secret: "bras-secret".into(),
                profile: RateProfile::Mikrotik,
                message_authenticator: true,
                require_response_message_authenticator: true,
            },
        }]);
        let client = CoaClient::bind(
            "127.0.0.1:0".parse().unwrap(),
            RetryPolicy {
                initial_timeout: Duration::from_secs(1),
                max_timeout: Duration::from_secs(1),
                attempts: 2,
            },
        )
        .await
        .unwrap();
        let notifier = BrasNotifier::new(Arc::new(client), table, directory);
        let qos = QosLevel {
            max_up_bps: Some(4_000_000),
            max_down_bps: Some(30_000_000),
            ..QosLevel::default()
        };
        let mut notices = notifier.subscriber_qos("cm1", &qos).await.unwrap();
        notices.sort_by(|a, b| a.acct_session_id.cmp(&b.acct_session_id));
        let ids: Vec<&str> = notices.iter().map(|n| n.acct_session_id.as_str()).collect();
        assert_eq!(ids, ["s-gone", "s1", "s3"]);
        match &notices[0].result {
            Err(NotifyError::Coa {
                source: CoaError::Nak { outcome, .. },
                ..
            }) => assert_eq!(
                outcome.error_cause,
                Some(ErrorCause::SessionContextNotFound)
            ),
            other => panic!("s-gone: {other:?}"),
        }
        assert_eq!(notices[1].result.as_ref().unwrap().code, Some(Code::CoaAck));
        assert!(matches!(
            notices[2].result,
            Err(NotifyError::UnknownBras { .. })
        ));
        let seen = bras.0.lock().unwrap().clone();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].0.acct_session_id.as_deref(), Some("s1"));
        assert_eq!(seen[0].0.user_name.as_deref(), Some("cm1"));
        assert_eq!(seen[0].1.max_down_bps, Some(30_000_000));
        assert_eq!(seen[0].1.max_up_bps, Some(4_000_000));
        assert!(matches!(
            notifier.subscriber_qos("nobody", &qos).await,
            Err(NotifyError::NoSession(_))
        ));
        handle.shutdown().await;
    }
}
