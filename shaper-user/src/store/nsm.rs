//! Durable state of the network service manager (issue 5): providers, applications, links,
//! subscriber sessions, allocations and the webhook delivery log.
//!
//! Two narrow traits, so a distributed store (docs/ARCHITECTURE.md §6) is another implementation:
//!
//! - [`SessionStore`]: what a session source (RADIUS accounting, DHCP leases, an operator)
//!   calls — start or change a session, end it, look sessions up by id, address or
//!   subscriber. [`SqliteNsmStore`] implements it durably; the network service manager
//!   ([`crate::nsm::NsmService`]) implements it too, writing through to its store and
//!   releasing the allocations a session change invalidates. Session sources should call the
//!   service's implementation.
//! - [`NsmStore`]: everything else the service persists, plus loading it all at start-up.
//!
//! The tables live in the controller's SQLite file, next to the provisioning tables, with
//! their own schema version (table `nsm_schema`), so the two schemas migrate independently.
//! Every write is one `BEGIN IMMEDIATE` transaction, durable on return (WAL,
//! `synchronous=FULL`, as [`super::SqliteStore`]). Rows keep their objects as JSON beside the
//! columns that are indexed or constrained.

use std::net::IpAddr;
use std::path::Path;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::StoreError;
use crate::nsm::model::{Allocation, AllocationState, Application, Link, Provider, Session};

/// Schema version of the NSM tables (`nsm_schema.version`).
pub const NSM_SCHEMA_VERSION: i64 = 1;

const MIGRATIONS: &[&str] = &["
    CREATE TABLE nsm_providers (
        id   TEXT PRIMARY KEY NOT NULL CHECK (id <> ''),
        body TEXT NOT NULL
    ) STRICT;
    CREATE TABLE nsm_applications (
        provider TEXT NOT NULL REFERENCES nsm_providers (id),
        id       TEXT NOT NULL CHECK (id <> ''),
        body     TEXT NOT NULL,
        PRIMARY KEY (provider, id)
    ) STRICT;
    CREATE TABLE nsm_links (
        id   TEXT PRIMARY KEY NOT NULL CHECK (id <> ''),
        body TEXT NOT NULL
    ) STRICT;
    CREATE TABLE nsm_sessions (
        id         TEXT PRIMARY KEY NOT NULL CHECK (id <> ''),
        subscriber TEXT NOT NULL,
        prefix_key TEXT NOT NULL,
        active     INTEGER NOT NULL CHECK (active IN (0, 1)),
        body       TEXT NOT NULL
    ) STRICT;
    CREATE UNIQUE INDEX nsm_sessions_active_prefix ON nsm_sessions (prefix_key) WHERE active = 1;
    CREATE INDEX nsm_sessions_subscriber ON nsm_sessions (subscriber, active);
    CREATE TABLE nsm_allocations (
        id       INTEGER PRIMARY KEY CHECK (id > 0),
        provider TEXT NOT NULL,
        state    TEXT NOT NULL CHECK (state IN ('active', 'released')),
        body     TEXT NOT NULL
    ) STRICT;
    CREATE INDEX nsm_allocations_provider ON nsm_allocations (provider, id);
    CREATE TABLE nsm_webhook_deliveries (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        provider    TEXT NOT NULL,
        allocation  INTEGER NOT NULL,
        event       TEXT NOT NULL,
        url         TEXT NOT NULL,
        attempts    INTEGER NOT NULL,
        status      TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
        last_code   INTEGER,
        last_error  TEXT,
        created_ms  INTEGER NOT NULL,
        updated_ms  INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX nsm_webhook_deliveries_provider ON nsm_webhook_deliveries (provider, id);
"];

/// Why a session write was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionStoreError {
    /// The session is malformed or clashes with another (which field, and why).
    #[error(transparent)]
    Refused(#[from] crate::nsm::CatalogError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The session was stored, but releasing the allocations it invalidated failed in the
    /// data plane; they are released in the store and retried on restart.
    #[error("session {session}: releasing allocations: {detail}")]
    Enforce { session: String, detail: String },
}

/// Session intake (see the module documentation). Lookups see active sessions only.
pub trait SessionStore: Send {
    /// Starts a session or changes it (same id). Refused if another active session holds the
    /// address.
    fn upsert_session(&mut self, session: &Session) -> Result<(), SessionStoreError>;
    /// Ends a session at `at_ms`; the ended session, `None` if it was not active.
    fn end_session(&mut self, id: &str, at_ms: u64) -> Result<Option<Session>, SessionStoreError>;
    /// An active session by id.
    fn session(&self, id: &str) -> Result<Option<Session>, SessionStoreError>;
    /// The active session holding `ip` (IPv4 exactly, IPv6 as /128 or within a /64).
    fn session_by_ip(&self, ip: IpAddr) -> Result<Option<Session>, SessionStoreError>;
    /// The active sessions of a subscriber, by id.
    fn sessions_of_subscriber(&self, subscriber: &str) -> Result<Vec<Session>, SessionStoreError>;
}

/// One webhook delivery, as logged.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Delivery {
    pub id: i64,
    pub provider: String,
    pub allocation: u64,
    pub event: String,
    pub url: String,
    pub attempts: u32,
    /// `pending`, `delivered` or `failed` (attempts exhausted).
    pub status: String,
    pub last_code: Option<u16>,
    pub last_error: Option<String>,
    pub created_ms: u64,
    pub updated_ms: u64,
}

/// Everything the network service manager loads at start-up.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NsmSnapshot {
    pub providers: Vec<Provider>,
    pub applications: Vec<Application>,
    pub links: Vec<Link>,
    pub sessions: Vec<Session>,
    /// Active allocations only.
    pub allocations: Vec<Allocation>,
    /// The highest allocation id ever stored (ids are never reused).
    pub max_allocation_id: u64,
}

/// What the network service manager persists besides sessions.
pub trait NsmStore: SessionStore {
    fn put_provider(&mut self, p: &Provider) -> Result<(), StoreError>;
    fn delete_provider(&mut self, id: &str) -> Result<(), StoreError>;
    fn put_application(&mut self, a: &Application) -> Result<(), StoreError>;
    fn delete_application(&mut self, provider: &str, id: &str) -> Result<(), StoreError>;
    fn put_link(&mut self, l: &Link) -> Result<(), StoreError>;
    /// Stores new allocations or their new state, all in one transaction (a session change
    /// that ends several allocations releases them together).
    fn put_allocations(&mut self, allocs: &[&Allocation]) -> Result<(), StoreError>;
    /// Any allocation (active or released) by id.
    fn allocation(&self, id: u64) -> Result<Option<Allocation>, StoreError>;
    /// A provider's allocations (active and released), by id.
    fn allocations_of(&self, provider: &str) -> Result<Vec<Allocation>, StoreError>;
    fn load_nsm(&self) -> Result<NsmSnapshot, StoreError>;
    /// Logs a new webhook delivery; its id.
    fn start_delivery(&mut self, d: &Delivery) -> Result<i64, StoreError>;
    /// Records an attempt's outcome.
    fn record_attempt(
        &mut self,
        id: i64,
        attempts: u32,
        status: &str,
        code: Option<u16>,
        error: Option<&str>,
        now_ms: u64,
    ) -> Result<(), StoreError>;
    fn deliveries(&self, provider: &str) -> Result<Vec<Delivery>, StoreError>;
}

/// The SQLite implementation (see the module documentation).
pub struct SqliteNsmStore {
    conn: Connection,
}

fn sqlite(op: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |source| StoreError::Sqlite { op, source }
}

fn to_json<T: serde::Serialize>(what: &'static str, v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|source| StoreError::Encode { what, source })
}

fn from_json<T: serde::de::DeserializeOwned>(
    table: &'static str,
    key: &str,
    text: &str,
) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt {
        table,
        key: key.to_owned(),
        column: "body",
        detail: e.to_string(),
    })
}

/// A `u64` as SQLite's integer, refused beyond `i64::MAX` (never wrapped into a negative).
fn sql_int(what: &'static str, value: u64) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::OutOfRange { what, value })
}

/// The lookup key of a session prefix: the masked address and length.
fn prefix_key(text: &str) -> Result<String, SessionStoreError> {
    let p = crate::nsm::core::session_prefix(text)?;
    Ok(format!("{}/{}", p.addr, p.len))
}

fn ip_keys(ip: IpAddr) -> Vec<String> {
    match ip {
        IpAddr::V4(a) => vec![format!("{a}/32")],
        IpAddr::V6(a) => {
            let net = std::net::Ipv6Addr::from(u128::from(a) & !((1u128 << 64) - 1));
            vec![format!("{a}/128"), format!("{net}/64")]
        }
    }
}

impl SqliteNsmStore {
    /// Opens (creating if needed) the NSM tables in the SQLite file at `path` (the
    /// controller's store file, or a file of their own).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let mut conn = Connection::open(path.as_ref()).map_err(sqlite("nsm open"))?;
        conn.busy_timeout(super::sqlite::BUSY_TIMEOUT)
            .map_err(sqlite("nsm busy timeout"))?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .map_err(sqlite("nsm journal_mode"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::NotWal { found: mode });
        }
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(sqlite("nsm synchronous"))?;
        conn.pragma_update(None, "foreign_keys", true)
            .map_err(sqlite("nsm foreign_keys"))?;
        Self::migrate(&mut conn)?;
        Ok(SqliteNsmStore { conn })
    }

    fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
        loop {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sqlite("nsm migrate: begin"))?;
            tx.execute_batch(
                "CREATE TABLE IF NOT EXISTS nsm_schema (version INTEGER NOT NULL) STRICT;",
            )
            .map_err(sqlite("nsm migrate: schema table"))?;
            let version: i64 = tx
                .query_row("SELECT version FROM nsm_schema", [], |r| r.get(0))
                .optional()
                .map_err(sqlite("nsm migrate: read version"))?
                .unwrap_or(0);
            if version > NSM_SCHEMA_VERSION {
                return Err(StoreError::SchemaTooNew {
                    found: version,
                    supported: NSM_SCHEMA_VERSION,
                });
            }
            if version == NSM_SCHEMA_VERSION {
                tx.commit().map_err(sqlite("nsm migrate: commit"))?;
                return Ok(());
            }
            let step = usize::try_from(version).map_err(|_| StoreError::Corrupt {
                table: "nsm_schema",
                key: "version".into(),
                column: "version",
                detail: format!("negative version {version}"),
            })?;
            tx.execute_batch(MIGRATIONS[step])
                .map_err(sqlite("nsm migrate: apply step"))?;
            tx.execute("DELETE FROM nsm_schema", [])
                .map_err(sqlite("nsm migrate: version"))?;
            tx.execute(
                "INSERT INTO nsm_schema (version) VALUES (?1)",
                [version + 1],
            )
            .map_err(sqlite("nsm migrate: version"))?;
            tx.commit().map_err(sqlite("nsm migrate: commit"))?;
        }
    }

    fn write(&mut self, op: &'static str) -> Result<rusqlite::Transaction<'_>, StoreError> {
        self.conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sqlite(op))
    }

    fn query_sessions(
        &self,
        sql: &str,
        args: &[&dyn rusqlite::ToSql],
    ) -> Result<Vec<Session>, StoreError> {
        let mut stmt = self.conn.prepare_cached(sql).map_err(sqlite("sessions"))?;
        let rows: Vec<(String, String)> = stmt
            .query_map(args, |r| Ok((r.get(0)?, r.get(1)?)))
            .and_then(Iterator::collect)
            .map_err(sqlite("sessions"))?;
        rows.iter()
            .map(|(id, body)| from_json("nsm_sessions", id, body))
            .collect()
    }

    fn bodies<T: serde::de::DeserializeOwned>(
        &self,
        table: &'static str,
        sql: &str,
        args: &[&dyn rusqlite::ToSql],
    ) -> Result<Vec<T>, StoreError> {
        let mut stmt = self.conn.prepare_cached(sql).map_err(sqlite(table))?;
        let rows: Vec<(String, String)> = stmt
            .query_map(args, |r| Ok((r.get(0)?, r.get(1)?)))
            .and_then(Iterator::collect)
            .map_err(sqlite(table))?;
        rows.iter()
            .map(|(key, body)| from_json(table, key, body))
            .collect()
    }
}

impl SessionStore for SqliteNsmStore {
    fn upsert_session(&mut self, s: &Session) -> Result<(), SessionStoreError> {
        let key = prefix_key(&s.prefix)?;
        let body = to_json("session", s)?;
        let tx = self.write("upsert_session")?;
        let other: Option<String> = tx
            .query_row(
                "SELECT id FROM nsm_sessions WHERE prefix_key = ?1 AND active = 1 AND id <> ?2",
                params![key, s.id],
                |r| r.get(0),
            )
            .optional()
            .map_err(sqlite("upsert_session"))?;
        if let Some(other) = other {
            return Err(crate::nsm::CatalogError::AddressTaken {
                prefix: s.prefix.clone(),
                other,
            }
            .into());
        }
        tx.execute(
            "INSERT INTO nsm_sessions (id, subscriber, prefix_key, active, body) \
             VALUES (?1, ?2, ?3, 1, ?4) ON CONFLICT (id) DO UPDATE SET \
             subscriber = ?2, prefix_key = ?3, active = 1, body = ?4",
            params![s.id, s.subscriber, key, body],
        )
        .map_err(sqlite("upsert_session"))?;
        tx.commit().map_err(sqlite("upsert_session"))?;
        Ok(())
    }

    fn end_session(&mut self, id: &str, at_ms: u64) -> Result<Option<Session>, SessionStoreError> {
        let Some(mut s) = SessionStore::session(self, id)? else {
            return Ok(None);
        };
        s.ended_ms = Some(at_ms);
        let body = to_json("session", &s)?;
        let tx = self.write("end_session")?;
        tx.execute(
            "UPDATE nsm_sessions SET active = 0, body = ?2 WHERE id = ?1",
            params![id, body],
        )
        .map_err(sqlite("end_session"))?;
        tx.commit().map_err(sqlite("end_session"))?;
        Ok(Some(s))
    }

    fn session(&self, id: &str) -> Result<Option<Session>, SessionStoreError> {
        Ok(self
            .query_sessions(
                "SELECT id, body FROM nsm_sessions WHERE id = ?1 AND active = 1",
                &[&id],
            )?
            .pop())
    }

    fn session_by_ip(&self, ip: IpAddr) -> Result<Option<Session>, SessionStoreError> {
        for key in ip_keys(ip) {
            if let Some(s) = self
                .query_sessions(
                    "SELECT id, body FROM nsm_sessions WHERE prefix_key = ?1 AND active = 1",
                    &[&key],
                )?
                .pop()
            {
                return Ok(Some(s));
            }
        }
        Ok(None)
    }

    fn sessions_of_subscriber(&self, subscriber: &str) -> Result<Vec<Session>, SessionStoreError> {
        Ok(self.query_sessions(
            "SELECT id, body FROM nsm_sessions WHERE subscriber = ?1 AND active = 1 ORDER BY id",
            &[&subscriber],
        )?)
    }
}

impl NsmStore for SqliteNsmStore {
    fn put_provider(&mut self, p: &Provider) -> Result<(), StoreError> {
        let body = to_json("provider", p)?;
        let tx = self.write("put_provider")?;
        tx.execute(
            "INSERT INTO nsm_providers (id, body) VALUES (?1, ?2) \
             ON CONFLICT (id) DO UPDATE SET body = ?2",
            params![p.id, body],
        )
        .map_err(sqlite("put_provider"))?;
        tx.commit().map_err(sqlite("put_provider"))
    }

    fn delete_provider(&mut self, id: &str) -> Result<(), StoreError> {
        let tx = self.write("delete_provider")?;
        tx.execute("DELETE FROM nsm_providers WHERE id = ?1", [id])
            .map_err(sqlite("delete_provider"))?;
        tx.commit().map_err(sqlite("delete_provider"))
    }

    fn put_application(&mut self, a: &Application) -> Result<(), StoreError> {
        let body = to_json("application", a)?;
        let tx = self.write("put_application")?;
        tx.execute(
            "INSERT INTO nsm_applications (provider, id, body) VALUES (?1, ?2, ?3) \
             ON CONFLICT (provider, id) DO UPDATE SET body = ?3",
            params![a.provider, a.id, body],
        )
        .map_err(sqlite("put_application"))?;
        tx.commit().map_err(sqlite("put_application"))
    }

    fn delete_application(&mut self, provider: &str, id: &str) -> Result<(), StoreError> {
        let tx = self.write("delete_application")?;
        tx.execute(
            "DELETE FROM nsm_applications WHERE provider = ?1 AND id = ?2",
            [provider, id],
        )
        .map_err(sqlite("delete_application"))?;
        tx.commit().map_err(sqlite("delete_application"))
    }

    fn put_link(&mut self, l: &Link) -> Result<(), StoreError> {
        let body = to_json("link", l)?;
        let tx = self.write("put_link")?;
        tx.execute(
            "INSERT INTO nsm_links (id, body) VALUES (?1, ?2) \
             ON CONFLICT (id) DO UPDATE SET body = ?2",
            params![l.id, body],
        )
        .map_err(sqlite("put_link"))?;
        tx.commit().map_err(sqlite("put_link"))
    }

    fn put_allocations(&mut self, allocs: &[&Allocation]) -> Result<(), StoreError> {
        let bodies = allocs
            .iter()
            .map(|a| to_json("allocation", a))
            .collect::<Result<Vec<_>, _>>()?;
        let ids = allocs
            .iter()
            .map(|a| sql_int("allocation id", a.id))
            .collect::<Result<Vec<_>, _>>()?;
        let tx = self.write("put_allocations")?;
        for ((a, id), body) in allocs.iter().zip(ids).zip(bodies) {
            let state = match a.state {
                AllocationState::Active => "active",
                AllocationState::Released => "released",
            };
            tx.execute(
                "INSERT INTO nsm_allocations (id, provider, state, body) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (id) DO UPDATE SET state = ?3, body = ?4",
                params![id, a.provider, state, body],
            )
            .map_err(sqlite("put_allocations"))?;
        }
        tx.commit().map_err(sqlite("put_allocations"))
    }

    fn allocation(&self, id: u64) -> Result<Option<Allocation>, StoreError> {
        // No stored allocation has an id beyond SQLite's integers.
        let Ok(id) = i64::try_from(id) else {
            return Ok(None);
        };
        Ok(self
            .bodies(
                "nsm_allocations",
                "SELECT CAST(id AS TEXT), body FROM nsm_allocations WHERE id = ?1",
                &[&id],
            )?
            .pop())
    }

    fn allocations_of(&self, provider: &str) -> Result<Vec<Allocation>, StoreError> {
        self.bodies(
            "nsm_allocations",
            "SELECT CAST(id AS TEXT), body FROM nsm_allocations WHERE provider = ?1 ORDER BY id",
            &[&provider],
        )
    }

    fn load_nsm(&self) -> Result<NsmSnapshot, StoreError> {
        let max_allocation_id: i64 = self
            .conn
            .query_row(
                "SELECT COALESCE(MAX(id), 0) FROM nsm_allocations",
                [],
                |r| r.get(0),
            )
            .map_err(sqlite("load_nsm"))?;
        Ok(NsmSnapshot {
            providers: self.bodies(
                "nsm_providers",
                "SELECT id, body FROM nsm_providers ORDER BY id",
                &[],
            )?,
            applications: self.bodies(
                "nsm_applications",
                "SELECT id, body FROM nsm_applications ORDER BY provider, id",
                &[],
            )?,
            links: self.bodies("nsm_links", "SELECT id, body FROM nsm_links ORDER BY id", &[])?,
            sessions: self.query_sessions(
                "SELECT id, body FROM nsm_sessions WHERE active = 1 ORDER BY id",
                &[],
            )?,
            allocations: self.bodies(
                "nsm_allocations",
                "SELECT CAST(id AS TEXT), body FROM nsm_allocations WHERE state = 'active' ORDER BY id",
                &[],
            )?,
            max_allocation_id: u64::try_from(max_allocation_id).unwrap_or(0),
        })
    }

    fn start_delivery(&mut self, d: &Delivery) -> Result<i64, StoreError> {
        let allocation = sql_int("allocation id", d.allocation)?;
        let created_ms = sql_int("created_ms", d.created_ms)?;
        let updated_ms = sql_int("updated_ms", d.updated_ms)?;
        let tx = self.write("start_delivery")?;
        tx.execute(
            "INSERT INTO nsm_webhook_deliveries (provider, allocation, event, url, attempts, \
             status, last_code, last_error, created_ms, updated_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                d.provider,
                allocation,
                d.event,
                d.url,
                d.attempts,
                d.status,
                d.last_code,
                d.last_error,
                created_ms,
                updated_ms
            ],
        )
        .map_err(sqlite("start_delivery"))?;
        let id = tx.last_insert_rowid();
        tx.commit().map_err(sqlite("start_delivery"))?;
        Ok(id)
    }

    fn record_attempt(
        &mut self,
        id: i64,
        attempts: u32,
        status: &str,
        code: Option<u16>,
        error: Option<&str>,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let now_ms = sql_int("updated_ms", now_ms)?;
        let tx = self.write("record_attempt")?;
        tx.execute(
            "UPDATE nsm_webhook_deliveries SET attempts = ?2, status = ?3, last_code = ?4, \
             last_error = ?5, updated_ms = ?6 WHERE id = ?1",
            params![id, attempts, status, code, error, now_ms],
        )
        .map_err(sqlite("record_attempt"))?;
        tx.commit().map_err(sqlite("record_attempt"))
    }

    fn deliveries(&self, provider: &str) -> Result<Vec<Delivery>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, provider, allocation, event, url, attempts, status, last_code, \
                 last_error, created_ms, updated_ms FROM nsm_webhook_deliveries \
                 WHERE provider = ?1 ORDER BY id",
            )
            .map_err(sqlite("deliveries"))?;
        stmt.query_map([provider], |r| {
            Ok(Delivery {
                id: r.get(0)?,
                provider: r.get(1)?,
                allocation: r.get(2)?,
                event: r.get(3)?,
                url: r.get(4)?,
                attempts: r.get(5)?,
                status: r.get(6)?,
                last_code: r.get(7)?,
                last_error: r.get(8)?,
                created_ms: r.get(9)?,
                updated_ms: r.get(10)?,
            })
        })
        .and_then(Iterator::collect)
        .map_err(sqlite("deliveries"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nsm::model::{AllocationRequest, Classifier, Dir, LinkKind, ProviderKind, Scope};
    use crate::store::TempDir;

    fn session(id: &str, sub: &str, prefix: &str) -> Session {
        Session {
            id: id.into(),
            subscriber: sub.into(),
            prefix: prefix.into(),
            bras: "bras1".into(),
            gateway: "gw1".into(),
            since_ms: 1,
            ended_ms: None,
        }
    }

    #[test]
    fn sessions_round_trip_and_look_up_by_ip_and_subscriber() {
        let dir = TempDir::new("nsm-sessions");
        let path = dir.path().join("s.db");
        let mut st = SqliteNsmStore::open(&path).unwrap();
        st.upsert_session(&session("s1", "cm1", "198.18.0.10"))
            .unwrap();
        st.upsert_session(&session("s2", "cm1", "2001:db8:0:10::/64"))
            .unwrap();
        st.upsert_session(&session("s3", "cm2", "198.18.0.11"))
            .unwrap();
        let clash = st.upsert_session(&session("s4", "cm3", "198.18.0.10"));
        assert!(
            matches!(clash, Err(SessionStoreError::Refused(crate::nsm::CatalogError::AddressTaken { ref other, .. })) if other == "s1"),
            "{clash:?}"
        );
        assert_eq!(
            st.session_by_ip("198.18.0.10".parse().unwrap())
                .unwrap()
                .unwrap()
                .id,
            "s1"
        );
        assert_eq!(
            st.session_by_ip("2001:db8:0:10::99".parse().unwrap())
                .unwrap()
                .unwrap()
                .id,
            "s2"
        );
        assert_eq!(
            st.sessions_of_subscriber("cm1")
                .unwrap()
                .iter()
                .map(|s| s.id.as_str())
                .collect::<Vec<_>>(),
            ["s1", "s2"]
        );
        let ended = st.end_session("s1", 50).unwrap().unwrap();
        assert_eq!(ended.ended_ms, Some(50));
        assert!(st.end_session("s1", 60).unwrap().is_none());
        assert!(
            st.session_by_ip("198.18.0.10".parse().unwrap())
                .unwrap()
                .is_none()
        );
        // The address is free again once its session ended.
        st.upsert_session(&session("s4", "cm3", "198.18.0.10"))
            .unwrap();
        drop(st);
        let st = SqliteNsmStore::open(&path).unwrap();
        let snap = st.load_nsm().unwrap();
        let ids: Vec<&str> = snap.sessions.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["s2", "s3", "s4"]);
    }

    #[test]
    fn catalogue_allocations_and_deliveries_round_trip() {
        let dir = TempDir::new("nsm-catalogue");
        let path = dir.path().join("c.db");
        let mut st = SqliteNsmStore::open(&path).unwrap();
        let p = Provider {
            id: "p1".into(),
            kind: ProviderKind::Asp,
            name: "Video".into(),
            prefixes: vec!["198.19.0.0/24".into()],
            webhook_url: Some("http://127.0.0.1:9/hook".into()),
            webhook_secret: Some("0123456789abcdef".into()),
        };
        st.put_provider(&p).unwrap();
        let app = Application {
            provider: "p1".into(),
            id: "tv".into(),
            name: "TV".into(),
            classifiers: vec![Classifier {
                direction: Dir::Down,
                proto: Some(17),
                provider_prefix: "198.19.0.0/24".into(),
                provider_ports: Some("5000".into()),
                subscriber_ports: None,
            }],
        };
        st.put_application(&app).unwrap();
        // Applications belong to a stored provider.
        let orphan = Application {
            provider: "nobody".into(),
            ..app.clone()
        };
        assert!(st.put_application(&orphan).is_err());
        let link = Link {
            id: "gw1".into(),
            kind: LinkKind::Gateway,
            capacity_up_bps: 1_000_000,
            capacity_down_bps: 2_000_000,
        };
        st.put_link(&link).unwrap();
        let mut alloc = Allocation {
            id: 7,
            provider: "p1".into(),
            request: AllocationRequest {
                application: "tv".into(),
                scope: Scope {
                    subscriber: Some("cm1".into()),
                    ip: None,
                },
                down_bps: Some(1000),
                up_bps: None,
                ceil_down_bps: None,
                ceil_up_bps: None,
                burst_bytes: None,
                priority: 5,
                dscp: None,
                max_delay_ms: None,
                max_loss_ppm: None,
                mtu: None,
            },
            sessions: vec!["s1".into()],
            charges: vec![],
            dscp: 40,
            state: AllocationState::Active,
            created_ms: 5,
            released_ms: None,
            release_reason: None,
        };
        st.put_allocations(&[&alloc]).unwrap();
        assert_eq!(st.load_nsm().unwrap().allocations, vec![alloc.clone()]);
        alloc.state = AllocationState::Released;
        alloc.released_ms = Some(9);
        st.put_allocations(&[&alloc]).unwrap();
        let snap = st.load_nsm().unwrap();
        assert!(snap.allocations.is_empty());
        assert_eq!(snap.max_allocation_id, 7);
        assert_eq!(st.allocation(7).unwrap(), Some(alloc.clone()));
        assert_eq!(st.allocations_of("p1").unwrap(), vec![alloc]);
        assert_eq!(snap.providers, vec![p]);
        assert_eq!(snap.applications, vec![app]);
        assert_eq!(snap.links, vec![link]);
        let id = st
            .start_delivery(&Delivery {
                id: 0,
                provider: "p1".into(),
                allocation: 7,
                event: "allocated".into(),
                url: "http://127.0.0.1:9/hook".into(),
                attempts: 0,
                status: "pending".into(),
                last_code: None,
                last_error: None,
                created_ms: 10,
                updated_ms: 10,
            })
            .unwrap();
        st.record_attempt(id, 2, "delivered", Some(204), None, 12)
            .unwrap();
        let d = st.deliveries("p1").unwrap();
        assert_eq!(
            (d[0].attempts, d[0].status.as_str(), d[0].last_code),
            (2, "delivered", Some(204))
        );
    }

    #[test]
    fn newer_nsm_schema_is_refused() {
        let dir = TempDir::new("nsm-schema");
        let path = dir.path().join("v.db");
        drop(SqliteNsmStore::open(&path).unwrap());
        let c = Connection::open(&path).unwrap();
        c.execute("UPDATE nsm_schema SET version = 99", []).unwrap();
        drop(c);
        assert!(matches!(
            SqliteNsmStore::open(&path),
            Err(StoreError::SchemaTooNew { found: 99, .. })
        ));
    }
}
