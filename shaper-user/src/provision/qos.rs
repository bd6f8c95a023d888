//! QoS levels: what a provisioning event asks for, and what a modem's base plan is.
//!
//! Every field is optional so that one type serves both as a full plan (the base) and as a
//! *grant* that only names what it changes: "200 Mbit/s down from 18:00 to 20:00" leaves the
//! upstream, priority and service targets of whatever lies beneath it alone. Layering is
//! [`QosLevel::overlay`]; the consistency rules that must hold after layering are
//! [`QosLevel::normalized`].

use serde::{Deserialize, Serialize};

use crate::policy::MIN_MTU;

/// Lowest rate the data plane's policer represents (one byte per second).
pub const MIN_RATE_BPS: u64 = 8;
/// Highest rate a provisioned level may carry: 4,294,967,295 bit/s. Every sink must hold it:
/// the DOCSIS configuration file's maximum sustained and minimum reserved rate TLVs (25.8,
/// 25.10) are 32-bit fields (DOCSIS 3.1's extended rates are not implemented), HTB and the
/// data plane's policer (up to `policy::MAX_RATE_BPS`) hold more. A level above it is refused
/// at the edge instead of being enforced in the data plane and then failing in the file.
pub const MAX_RATE_BPS: u64 = u32::MAX as u64;
/// Smallest burst: one full-size Ethernet frame; a smaller bucket drops every full-size packet
/// whatever the rate. With an MTU set the floor is the MTU (as `policy::ClassConfig` requires).
pub const MIN_BURST_BYTES: u32 = 1500;
/// Highest priority (DOCSIS traffic priority and HTB `prio` both use 0..=7).
pub const MAX_PRIORITY: u8 = 7;
/// One million parts per million: the ceiling of every ratio target.
pub const PPM: u32 = 1_000_000;

/// Service targets of a *minimum* QoS. They are stored and carried to the modem configuration
/// and to reports; the data plane does not enforce them, so they only need to be well-formed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ServiceTargets {
    /// Availability, parts per million of time (999_900 = 99.99 %).
    pub availability_ppm: Option<u32>,
    /// Errored-packet (error performance) ratio, parts per million.
    pub error_rate_ppm: Option<u32>,
    /// Loss ratio under congestion, parts per million.
    pub loss_ppm: Option<u32>,
    /// Connection setup time, milliseconds.
    pub setup_time_ms: Option<u32>,
    /// Fault detection and correction time, milliseconds.
    pub repair_time_ms: Option<u32>,
}

/// A QoS level: a base plan or a grant layered on one. Rates are bit/s of L3 bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct QosLevel {
    /// Maximum sustained rate, modem → network (HTB `ceil` upstream).
    pub max_up_bps: Option<u64>,
    /// Maximum sustained rate, network → modem.
    pub max_down_bps: Option<u64>,
    /// Committed (minimum reserved) rate upstream (HTB `rate`).
    pub committed_up_bps: Option<u64>,
    /// Committed rate downstream.
    pub committed_down_bps: Option<u64>,
    /// Token-bucket depth in bytes.
    pub burst_bytes: Option<u32>,
    /// Traffic priority, 0..=7, higher is better.
    pub priority: Option<u8>,
    /// L3 MTU policy in bytes.
    pub mtu: Option<u16>,
    /// Service targets of the minimum QoS.
    pub targets: ServiceTargets,
}

/// A malformed QoS level. Each variant names the field so an API can point at it.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum QosError {
    #[error("{field}: {value} bit/s is below the minimum {MIN_RATE_BPS} bit/s")]
    RateTooLow { field: &'static str, value: u64 },
    #[error("{field}: {value} bit/s is above the maximum {MAX_RATE_BPS} bit/s")]
    RateTooHigh { field: &'static str, value: u64 },
    #[error("{field}: committed {committed} bit/s is above the maximum rate {max} bit/s")]
    CommittedAboveMax {
        field: &'static str,
        committed: u64,
        max: u64,
    },
    #[error("burst_bytes: {burst} bytes is below one MTU ({min} bytes)")]
    BurstTooSmall { burst: u32, min: u32 },
    #[error("priority: {0} is outside 0..={MAX_PRIORITY}")]
    PriorityOutOfRange(u8),
    #[error("mtu: {0} bytes is below the minimum {MIN_MTU}")]
    MtuTooSmall(u16),
    #[error("{field}: {value} ppm is above {PPM} ppm (100 %)")]
    RatioOutOfRange { field: &'static str, value: u32 },
    #[error("{field}: a time target of 0 ms cannot be met")]
    ZeroTime { field: &'static str },
}

impl ServiceTargets {
    /// Fields of `self` that are set replace those of `base`.
    pub fn overlay(&self, base: &ServiceTargets) -> ServiceTargets {
        ServiceTargets {
            availability_ppm: self.availability_ppm.or(base.availability_ppm),
            error_rate_ppm: self.error_rate_ppm.or(base.error_rate_ppm),
            loss_ppm: self.loss_ppm.or(base.loss_ppm),
            setup_time_ms: self.setup_time_ms.or(base.setup_time_ms),
            repair_time_ms: self.repair_time_ms.or(base.repair_time_ms),
        }
    }

    /// True when no target is set.
    pub fn is_empty(&self) -> bool {
        *self == ServiceTargets::default()
    }

    /// Ratios within 0..=100 %, times non-zero.
    pub fn validate(&self) -> Result<(), QosError> {
        for (field, v) in [
            ("targets.availability_ppm", self.availability_ppm),
            ("targets.error_rate_ppm", self.error_rate_ppm),
            ("targets.loss_ppm", self.loss_ppm),
        ] {
            if let Some(value) = v.filter(|&v| v > PPM) {
                return Err(QosError::RatioOutOfRange { field, value });
            }
        }
        for (field, v) in [
            ("targets.setup_time_ms", self.setup_time_ms),
            ("targets.repair_time_ms", self.repair_time_ms),
        ] {
            if v == Some(0) {
                return Err(QosError::ZeroTime { field });
            }
        }
        Ok(())
    }
}

impl QosLevel {
    /// The level with `self` layered on `base`: every field `self` sets wins, every field it
    /// leaves `None` comes from `base`. Layering is associative, which is what lets a revert
    /// recompute the effective level from the remaining layers instead of "undoing" anything.
    pub fn overlay(&self, base: &QosLevel) -> QosLevel {
        QosLevel {
            max_up_bps: self.max_up_bps.or(base.max_up_bps),
            max_down_bps: self.max_down_bps.or(base.max_down_bps),
            committed_up_bps: self.committed_up_bps.or(base.committed_up_bps),
            committed_down_bps: self.committed_down_bps.or(base.committed_down_bps),
            burst_bytes: self.burst_bytes.or(base.burst_bytes),
            priority: self.priority.or(base.priority),
            mtu: self.mtu.or(base.mtu),
            targets: self.targets.overlay(&base.targets),
        }
    }

    /// True when the level sets nothing (a grant that would change nothing).
    pub fn is_empty(&self) -> bool {
        *self == QosLevel::default()
    }

    /// The burst floor for this level: its MTU, or one Ethernet frame without one.
    fn burst_floor(&self) -> u32 {
        self.mtu.map_or(MIN_BURST_BYTES, u32::from)
    }

    /// Checks the fields that are set, on their own: rates within the policer's range,
    /// committed ≤ maximum in each direction *when the same level sets both*, burst ≥ one MTU,
    /// priority ≤ 7, MTU ≥ 1280, well-formed service targets.
    ///
    /// Consistency across layers (a grant's committed rate against a maximum set by another
    /// layer) is not an error here: layers come and go independently, so it is resolved after
    /// layering by [`QosLevel::normalized`].
    pub fn validate(&self) -> Result<(), QosError> {
        for (field, v) in [
            ("max_up_bps", self.max_up_bps),
            ("max_down_bps", self.max_down_bps),
            ("committed_up_bps", self.committed_up_bps),
            ("committed_down_bps", self.committed_down_bps),
        ] {
            match v {
                Some(value) if value < MIN_RATE_BPS => {
                    return Err(QosError::RateTooLow { field, value });
                }
                Some(value) if value > MAX_RATE_BPS => {
                    return Err(QosError::RateTooHigh { field, value });
                }
                _ => {}
            }
        }
        for (field, committed, max) in [
            ("committed_up_bps", self.committed_up_bps, self.max_up_bps),
            (
                "committed_down_bps",
                self.committed_down_bps,
                self.max_down_bps,
            ),
        ] {
            if let (Some(committed), Some(max)) = (committed, max) {
                if committed > max {
                    return Err(QosError::CommittedAboveMax {
                        field,
                        committed,
                        max,
                    });
                }
            }
        }
        if let Some(mtu) = self.mtu {
            if mtu < MIN_MTU {
                return Err(QosError::MtuTooSmall(mtu));
            }
        }
        if let Some(burst) = self.burst_bytes {
            let min = self.burst_floor();
            if burst < min {
                return Err(QosError::BurstTooSmall { burst, min });
            }
        }
        if let Some(p) = self.priority {
            if p > MAX_PRIORITY {
                return Err(QosError::PriorityOutOfRange(p));
            }
        }
        self.targets.validate()
    }

    /// Makes a layered level consistent for the data plane (HTB needs `rate ≤ ceil`, the
    /// policer needs a burst of at least one MTU):
    ///
    /// - a committed rate above the maximum in force is lowered to that maximum: a cap (a
    ///   fair-use throttle, an abuse block) is never exceeded because an independent grant
    ///   reserved more;
    /// - with a maximum rate in force, the burst is raised to the burst floor (the MTU, or
    ///   1500 bytes) when it is absent or below it.
    ///
    /// Applied to every effective level; idempotent.
    pub fn normalized(&self) -> QosLevel {
        let mut q = *self;
        if let (Some(c), Some(m)) = (q.committed_up_bps, q.max_up_bps) {
            q.committed_up_bps = Some(c.min(m));
        }
        if let (Some(c), Some(m)) = (q.committed_down_bps, q.max_down_bps) {
            q.committed_down_bps = Some(c.min(m));
        }
        if q.max_up_bps.is_some() || q.max_down_bps.is_some() {
            let floor = q.burst_floor();
            q.burst_bytes = Some(q.burst_bytes.map_or(floor, |b| b.max(floor)));
        }
        q
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rates(max_down: u64, committed_down: u64) -> QosLevel {
        QosLevel {
            max_down_bps: Some(max_down),
            committed_down_bps: Some(committed_down),
            burst_bytes: Some(15_000),
            ..QosLevel::default()
        }
    }

    #[test]
    fn overlay_set_fields_win_unset_fields_inherit() {
        let base = QosLevel {
            max_up_bps: Some(10_000_000),
            priority: Some(1),
            targets: ServiceTargets {
                availability_ppm: Some(999_000),
                ..ServiceTargets::default()
            },
            ..rates(100_000_000, 1_000_000)
        };
        let grant = QosLevel {
            max_down_bps: Some(200_000_000),
            targets: ServiceTargets {
                loss_ppm: Some(100),
                ..ServiceTargets::default()
            },
            ..QosLevel::default()
        };
        let eff = grant.overlay(&base);
        assert_eq!(eff.max_down_bps, Some(200_000_000));
        assert_eq!(eff.max_up_bps, Some(10_000_000));
        assert_eq!(eff.committed_down_bps, Some(1_000_000));
        assert_eq!(eff.priority, Some(1));
        assert_eq!(eff.targets.availability_ppm, Some(999_000));
        assert_eq!(eff.targets.loss_ppm, Some(100));
        assert_eq!(QosLevel::default().overlay(&base), base);
    }

    #[test]
    fn validate_names_the_field() {
        assert_eq!(rates(100, 10).validate(), Ok(()));
        assert_eq!(
            rates(100, 200).validate(),
            Err(QosError::CommittedAboveMax {
                field: "committed_down_bps",
                committed: 200,
                max: 100
            })
        );
        let q = QosLevel {
            max_up_bps: Some(7),
            ..QosLevel::default()
        };
        assert_eq!(
            q.validate(),
            Err(QosError::RateTooLow {
                field: "max_up_bps",
                value: 7
            })
        );
        let q = QosLevel {
            max_down_bps: Some(MAX_RATE_BPS),
            ..QosLevel::default()
        };
        assert_eq!(q.validate(), Ok(()));
        // 5 Gbit/s: the data plane could police it, the DOCSIS file could not carry it.
        let q = QosLevel {
            max_down_bps: Some(5_000_000_000),
            ..QosLevel::default()
        };
        assert_eq!(
            q.validate(),
            Err(QosError::RateTooHigh {
                field: "max_down_bps",
                value: 5_000_000_000
            })
        );
        let q = QosLevel {
            committed_up_bps: Some(MAX_RATE_BPS + 1),
            ..QosLevel::default()
        };
        assert!(matches!(
            q.validate(),
            Err(QosError::RateTooHigh {
                field: "committed_up_bps",
                ..
            })
        ));
        let q = QosLevel {
            priority: Some(8),
            ..QosLevel::default()
        };
        assert_eq!(q.validate(), Err(QosError::PriorityOutOfRange(8)));
        let q = QosLevel {
            mtu: Some(1279),
            ..QosLevel::default()
        };
        assert_eq!(q.validate(), Err(QosError::MtuTooSmall(1279)));
        let q = QosLevel {
            burst_bytes: Some(1499),
            ..QosLevel::default()
        };
        assert_eq!(
            q.validate(),
            Err(QosError::BurstTooSmall {
                burst: 1499,
                min: 1500
            })
        );
        let q = QosLevel {
            burst_bytes: Some(3000),
            mtu: Some(9000),
            ..QosLevel::default()
        };
        assert_eq!(
            q.validate(),
            Err(QosError::BurstTooSmall {
                burst: 3000,
                min: 9000
            })
        );
        let q = QosLevel {
            targets: ServiceTargets {
                loss_ppm: Some(PPM + 1),
                ..ServiceTargets::default()
            },
            ..QosLevel::default()
        };
        assert_eq!(
            q.validate(),
            Err(QosError::RatioOutOfRange {
                field: "targets.loss_ppm",
                value: PPM + 1
            })
        );
        let q = QosLevel {
            targets: ServiceTargets {
                repair_time_ms: Some(0),
                ..ServiceTargets::default()
            },
            ..QosLevel::default()
        };
        assert_eq!(
            q.validate(),
            Err(QosError::ZeroTime {
                field: "targets.repair_time_ms"
            })
        );
    }

    #[test]
    fn normalized_caps_committed_and_floors_burst() {
        let cap = QosLevel {
            max_down_bps: Some(20),
            ..QosLevel::default()
        };
        let commit = QosLevel {
            committed_down_bps: Some(50),
            ..QosLevel::default()
        };
        let n = commit.overlay(&cap).normalized();
        assert_eq!(n.committed_down_bps, Some(20));
        assert_eq!(n.burst_bytes, Some(MIN_BURST_BYTES));
        assert_eq!(n.normalized(), n);
        let jumbo = QosLevel {
            mtu: Some(9000),
            ..QosLevel::default()
        };
        assert_eq!(
            jumbo.overlay(&rates(100, 10)).normalized().burst_bytes,
            Some(15_000)
        );
        assert_eq!(
            jumbo
                .overlay(&QosLevel {
                    burst_bytes: Some(1500),
                    ..rates(100, 10)
                })
                .normalized()
                .burst_bytes,
            Some(9000)
        );
        assert_eq!(QosLevel::default().normalized(), QosLevel::default());
    }
}
