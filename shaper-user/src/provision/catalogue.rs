//! The grant catalogue: what subscribers (and CSRs, where configured) may ask for.
//!
//! An admin defines levels in `[controller.grants]` (each a named QoS grant with a maximum
//! duration and an optional monthly quota per modem). A request that names a level
//! ([`EventRequest::level`]) gets the level's grant; the checks here hold for every request
//! that names one, whoever sends it:
//!
//! - the level exists;
//! - the request has a stop, no later than `max_duration_s` after its start;
//! - the modem has used the level fewer than `per_month` times, and all levels together fewer
//!   than the catalogue's `max_per_month`, in the current calendar month (UTC), counting every
//!   stored request that named a level (cancelled ones too: a quota is spent when granted).
//!
//! Which roles must name a level is the API's business (their identity is an API concept):
//! subscribers always, CSRs when `csr_from_catalogue = true`; admin and automation may send any
//! grant. Pure: the caller passes the time and the modem's past uses.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::events::{EventRequest, MAX_TIME_MS};
use super::qos::{QosError, QosLevel, ServiceTargets};

/// Longest level name.
pub const MAX_LEVEL_NAME: usize = 64;
/// Most levels in a catalogue.
pub const MAX_LEVELS: usize = 64;

/// `[controller.grants]` as written in the configuration file.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct GrantsSection {
    /// CSRs too must choose from the catalogue (subscribers always do).
    #[serde(default)]
    pub csr_from_catalogue: bool,
    /// Catalogue grants per modem per calendar month (UTC), all levels together.
    pub max_per_month: Option<u32>,
    #[serde(default)]
    pub level: Vec<LevelSection>,
}

/// `[[controller.grants.level]]`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LevelSection {
    pub name: String,
    pub max_down_bps: Option<u64>,
    pub max_up_bps: Option<u64>,
    pub committed_down_bps: Option<u64>,
    pub committed_up_bps: Option<u64>,
    pub burst_bytes: Option<u32>,
    pub priority: Option<u8>,
    pub mtu: Option<u16>,
    /// Longest grant of this level, in seconds.
    pub max_duration_s: u64,
    /// Grants of this level per modem per calendar month (UTC).
    pub per_month: Option<u32>,
}

/// One level, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Level {
    pub name: String,
    pub qos: QosLevel,
    pub max_duration_ms: u64,
    pub per_month: Option<u32>,
}

/// The catalogue, checked. The default is empty: subscribers can then ask for nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GrantCatalogue {
    pub csr_from_catalogue: bool,
    pub max_per_month: Option<u32>,
    levels: BTreeMap<String, Level>,
}

/// Why `[controller.grants]` was refused; each names the key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CatalogueError {
    #[error(
        "controller.grants.level[{index}].name: must be 1..={MAX_LEVEL_NAME} characters of letters, digits, '-', '_', '.'"
    )]
    BadName { index: usize },
    #[error("controller.grants.level[{index}].name: {name:?} is defined twice")]
    Duplicate { index: usize, name: String },
    #[error("controller.grants.level: at most {MAX_LEVELS} levels")]
    TooMany,
    #[error("controller.grants.level[{index}] ({name}): {error}")]
    Qos {
        index: usize,
        name: String,
        #[source]
        error: QosError,
    },
    #[error("controller.grants.level[{index}] ({name}): the level sets no QoS field")]
    Empty { index: usize, name: String },
    #[error("controller.grants.level[{index}].max_duration_s: must be 1..={max} seconds")]
    Duration { index: usize, max: u64 },
    #[error("controller.grants.{key}: 0 would refuse every grant; leave it out for no quota")]
    ZeroQuota { key: String },
}

/// Why a catalogue request was refused.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyRefusal {
    #[error("level {name:?} is not in the grant catalogue (levels: {known})")]
    UnknownLevel { name: String, known: String },
    #[error("level {level}: a stop time is required (at most {max_s} s after the start)")]
    NoStop { level: String, max_s: u64 },
    #[error("level {level}: {asked_s} s is longer than its maximum of {max_s} s")]
    TooLong {
        level: String,
        asked_s: u64,
        max_s: u64,
    },
    #[error("{what}: {used} of {limit} grants used this month; the quota renews at {renews_ms} ms")]
    QuotaUsed {
        what: String,
        used: u32,
        limit: u32,
        renews_ms: u64,
    },
}

fn name_ok(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= MAX_LEVEL_NAME
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

impl GrantCatalogue {
    /// Checks `[controller.grants]`.
    ///
    /// # Errors
    /// The first key that is wrong.
    pub fn from_section(s: &GrantsSection) -> Result<GrantCatalogue, CatalogueError> {
        if s.level.len() > MAX_LEVELS {
            return Err(CatalogueError::TooMany);
        }
        if s.max_per_month == Some(0) {
            return Err(CatalogueError::ZeroQuota {
                key: "max_per_month".into(),
            });
        }
        let mut levels = BTreeMap::new();
        for (index, l) in s.level.iter().enumerate() {
            if !name_ok(&l.name) {
                return Err(CatalogueError::BadName { index });
            }
            let qos = QosLevel {
                max_down_bps: l.max_down_bps,
                max_up_bps: l.max_up_bps,
                committed_down_bps: l.committed_down_bps,
                committed_up_bps: l.committed_up_bps,
                burst_bytes: l.burst_bytes,
                priority: l.priority,
                mtu: l.mtu,
                targets: ServiceTargets::default(),
            };
            let name = l.name.clone();
            if qos.is_empty() {
                return Err(CatalogueError::Empty { index, name });
            }
            qos.validate().map_err(|error| CatalogueError::Qos {
                index,
                name: name.clone(),
                error,
            })?;
            let max_s = MAX_TIME_MS / 1000;
            if l.max_duration_s == 0 || l.max_duration_s > max_s {
                return Err(CatalogueError::Duration { index, max: max_s });
            }
            if l.per_month == Some(0) {
                return Err(CatalogueError::ZeroQuota {
                    key: format!("level[{index}].per_month"),
                });
            }
            let level = Level {
                name: name.clone(),
                qos,
                max_duration_ms: l.max_duration_s * 1000,
                per_month: l.per_month,
            };
            if levels.insert(name.clone(), level).is_some() {
                return Err(CatalogueError::Duplicate { index, name });
            }
        }
        Ok(GrantCatalogue {
            csr_from_catalogue: s.csr_from_catalogue,
            max_per_month: s.max_per_month,
            levels,
        })
    }

    pub fn level(&self, name: &str) -> Option<&Level> {
        self.levels.get(name)
    }

    pub fn levels(&self) -> impl Iterator<Item = &Level> {
        self.levels.values()
    }

    pub fn is_empty(&self) -> bool {
        self.levels.is_empty()
    }

    fn known(&self) -> String {
        if self.levels.is_empty() {
            "none defined".into()
        } else {
            self.levels.keys().cloned().collect::<Vec<_>>().join(", ")
        }
    }

    /// The level a request names, or why it cannot have it.
    ///
    /// # Errors
    /// [`PolicyRefusal::UnknownLevel`].
    pub fn lookup(&self, name: &str) -> Result<&Level, PolicyRefusal> {
        self.levels
            .get(name)
            .ok_or_else(|| PolicyRefusal::UnknownLevel {
                name: name.chars().take(MAX_LEVEL_NAME).collect(),
                known: self.known(),
            })
    }

    /// Checks a request that names `level` (its grant already set from the level) at
    /// `now_ms`. `used` are the modem's earlier catalogue grants `(level, created_ms)` (any
    /// age: those before this month's start are ignored).
    ///
    /// # Errors
    /// The first rule the request breaks.
    pub fn check(
        &self,
        req: &EventRequest,
        level: &Level,
        now_ms: u64,
        used: &[(String, u64)],
    ) -> Result<(), PolicyRefusal> {
        let max_s = level.max_duration_ms / 1000;
        let Some(stop) = req.stop_ms else {
            return Err(PolicyRefusal::NoStop {
                level: level.name.clone(),
                max_s,
            });
        };
        let start = super::events::start_due(req.start_ms, now_ms);
        let asked = stop.saturating_sub(start);
        if asked > level.max_duration_ms {
            return Err(PolicyRefusal::TooLong {
                level: level.name.clone(),
                asked_s: asked.div_ceil(1000),
                max_s,
            });
        }
        let (month, renews_ms) = month_of(now_ms);
        let this_month = used.iter().filter(|(_, at)| *at >= month);
        if let Some(limit) = level.per_month {
            let n = this_month.clone().filter(|(l, _)| *l == level.name).count();
            let used = u32::try_from(n).unwrap_or(u32::MAX);
            if used >= limit {
                return Err(PolicyRefusal::QuotaUsed {
                    what: format!("level {}", level.name),
                    used,
                    limit,
                    renews_ms,
                });
            }
        }
        if let Some(limit) = self.max_per_month {
            let used = u32::try_from(this_month.count()).unwrap_or(u32::MAX);
            if used >= limit {
                return Err(PolicyRefusal::QuotaUsed {
                    what: "all levels".into(),
                    used,
                    limit,
                    renews_ms,
                });
            }
        }
        Ok(())
    }
}

/// The start of the calendar month (UTC) holding `now_ms`, and the start of the next one,
/// in milliseconds since the Unix epoch.
pub fn month_of(now_ms: u64) -> (u64, u64) {
    use jiff::{Timestamp, tz::TimeZone};
    let ms = i64::try_from(now_ms.min(MAX_TIME_MS)).unwrap_or(i64::MAX);
    let t = Timestamp::from_millisecond(ms).unwrap_or(Timestamp::MAX);
    let z = t.to_zoned(TimeZone::UTC);
    let first = z
        .first_of_month()
        .and_then(|d| d.start_of_day())
        .expect("the first of a month in UTC exists");
    let next = first
        .checked_add(jiff::Span::new().months(1))
        .unwrap_or_else(|_| first.clone());
    let to_ms = |z: &jiff::Zoned| u64::try_from(z.timestamp().as_millisecond()).unwrap_or(0);
    (to_ms(&first), to_ms(&next))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provision::Source;

    fn section() -> GrantsSection {
        toml::from_str(
            r#"
            max_per_month = 3
            [[level]]
            name = "boost-100"
            max_down_bps = 100_000_000
            max_duration_s = 7200
            per_month = 2
            [[level]]
            name = "gaming"
            priority = 6
            max_duration_s = 3600
            "#,
        )
        .unwrap()
    }

    fn req(start: Option<u64>, stop: Option<u64>) -> EventRequest {
        EventRequest {
            modem: "cm1".into(),
            source: Source::Subscriber,
            qos: QosLevel::default(),
            start_ms: start,
            stop_ms: stop,
            idempotency_key: None,
            level: Some("boost-100".into()),
        }
    }

    // 2026-12-08T00:00:00Z and the month around it.
    const NOW: u64 = 1_796_688_000_000;
    const DEC: u64 = 1_796_083_200_000;
    const JAN: u64 = 1_798_761_600_000;

    #[test]
    fn months_are_calendar_months_in_utc() {
        assert_eq!(month_of(NOW), (DEC, JAN));
        assert_eq!(month_of(DEC), (DEC, JAN));
        assert_eq!(month_of(JAN - 1), (DEC, JAN));
        assert_eq!(month_of(0), (0, 2_678_400_000));
    }

    #[test]
    fn duration_quota_and_level_rules() {
        let c = GrantCatalogue::from_section(&section()).unwrap();
        let boost = c.lookup("boost-100").unwrap();
        assert_eq!(boost.qos.max_down_bps, Some(100_000_000));
        assert!(matches!(
            c.lookup("turbo"),
            Err(PolicyRefusal::UnknownLevel { known, .. }) if known == "boost-100, gaming"
        ));
        assert_eq!(
            c.check(&req(None, None), boost, NOW, &[]),
            Err(PolicyRefusal::NoStop {
                level: "boost-100".into(),
                max_s: 7200
            })
        );
        assert_eq!(
            c.check(&req(None, Some(NOW + 7_200_000)), boost, NOW, &[]),
            Ok(())
        );
        assert_eq!(
            c.check(&req(None, Some(NOW + 7_200_001)), boost, NOW, &[]),
            Err(PolicyRefusal::TooLong {
                level: "boost-100".into(),
                asked_s: 7201,
                max_s: 7200
            })
        );
        // Measured from the start, not from now.
        let later = req(Some(NOW + 1000), Some(NOW + 1000 + 7_200_000));
        assert_eq!(c.check(&later, boost, NOW, &[]), Ok(()));
        // Per level: two this month; last month's do not count.
        let used = vec![
            ("boost-100".to_owned(), DEC - 1),
            ("boost-100".to_owned(), DEC),
            ("boost-100".to_owned(), NOW - 5),
        ];
        assert!(matches!(
            c.check(&req(None, Some(NOW + 1000)), boost, NOW, &used),
            Err(PolicyRefusal::QuotaUsed {
                used: 2,
                limit: 2,
                renews_ms: JAN,
                ..
            })
        ));
        // All levels together: three this month.
        let gaming = c.lookup("gaming").unwrap();
        let used = vec![
            ("boost-100".to_owned(), DEC),
            ("gaming".to_owned(), DEC + 1),
            ("gaming".to_owned(), DEC + 2),
        ];
        let mut r = req(None, Some(NOW + 1000));
        r.level = Some("gaming".into());
        assert!(matches!(
            c.check(&r, gaming, NOW, &used),
            Err(PolicyRefusal::QuotaUsed {
                used: 3,
                limit: 3,
                ..
            })
        ));
        assert_eq!(c.check(&r, gaming, JAN, &used), Ok(()), "a new month");
    }

    #[test]
    fn bad_sections_name_the_key() {
        let mut s = section();
        s.level[1].name = "boost-100".into();
        assert!(matches!(
            GrantCatalogue::from_section(&s),
            Err(CatalogueError::Duplicate { index: 1, .. })
        ));
        let mut s = section();
        s.level[0].max_down_bps = Some(5_000_000_000);
        let e = GrantCatalogue::from_section(&s).unwrap_err();
        assert!(e.to_string().contains("level[0] (boost-100)"), "{e}");
        let mut s = section();
        s.level[0].name = "no spaces".into();
        assert_eq!(
            GrantCatalogue::from_section(&s),
            Err(CatalogueError::BadName { index: 0 })
        );
        let mut s = section();
        s.level[1].max_duration_s = 0;
        assert!(matches!(
            GrantCatalogue::from_section(&s),
            Err(CatalogueError::Duration { index: 1, .. })
        ));
        let mut s = section();
        s.level[1].priority = None;
        assert!(matches!(
            GrantCatalogue::from_section(&s),
            Err(CatalogueError::Empty { index: 1, .. })
        ));
        let mut s = section();
        s.max_per_month = Some(0);
        assert!(matches!(
            GrantCatalogue::from_section(&s),
            Err(CatalogueError::ZeroQuota { .. })
        ));
    }
}
