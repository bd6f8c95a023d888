//! How the engine keeps an event's times and grant compactly (a gateway holds millions of
//! pending events): times with a sentinel for `None`, a grant as a mask of the fields it sets
//! and their values.

use super::qos::{QosLevel, ServiceTargets};

/// `None` of a packed time ([`Record`]).
pub(super) const NO_TIME: u64 = u64::MAX;

pub(super) fn pack_time(t: Option<u64>) -> u64 {
    t.unwrap_or(NO_TIME)
}

pub(super) fn unpack_time(t: u64) -> Option<u64> {
    (t != NO_TIME).then_some(t)
}

/// A grant packed for keeping: which [`QosLevel`] fields are set (`mask`, bit `i` = field
/// `i` in declaration order) and their values, in that order. A grant sets few fields, so
/// this takes 16 bytes plus 8 per set field instead of `QosLevel`'s 120.
#[derive(Clone, Debug)]
pub(super) struct PackedQos {
    mask: u16,
    vals: Box<[u64]>,
}

impl PackedQos {
    pub(super) fn pack(q: &QosLevel) -> PackedQos {
        // Destructured without `..`: a new field must be added here.
        let QosLevel {
            max_up_bps,
            max_down_bps,
            committed_up_bps,
            committed_down_bps,
            burst_bytes,
            priority,
            mtu,
            targets:
                ServiceTargets {
                    availability_ppm,
                    error_rate_ppm,
                    loss_ppm,
                    setup_time_ms,
                    repair_time_ms,
                },
        } = *q;
        let fields = [
            max_up_bps,
            max_down_bps,
            committed_up_bps,
            committed_down_bps,
            burst_bytes.map(u64::from),
            priority.map(u64::from),
            mtu.map(u64::from),
            availability_ppm.map(u64::from),
            error_rate_ppm.map(u64::from),
            loss_ppm.map(u64::from),
            setup_time_ms.map(u64::from),
            repair_time_ms.map(u64::from),
        ];
        let mut mask = 0u16;
        let mut vals = Vec::new();
        for (i, f) in fields.into_iter().enumerate() {
            if let Some(v) = f {
                mask |= 1 << i;
                vals.push(v);
            }
        }
        PackedQos {
            mask,
            vals: vals.into_boxed_slice(),
        }
    }

    pub(super) fn unpack(&self) -> QosLevel {
        let mut vals = self.vals.iter().copied();
        let f: [Option<u64>; 12] = std::array::from_fn(|i| {
            (self.mask & (1 << i) != 0).then(|| vals.next().expect("one value per set bit"))
        });
        // The narrow fields were widened by `pack`: narrowing them back cannot fail.
        let narrow = |v: Option<u64>| v.map(|v| u32::try_from(v).expect("packed from a u32"));
        QosLevel {
            max_up_bps: f[0],
            max_down_bps: f[1],
            committed_up_bps: f[2],
            committed_down_bps: f[3],
            burst_bytes: narrow(f[4]),
            priority: f[5].map(|v| u8::try_from(v).expect("packed from a u8")),
            mtu: f[6].map(|v| u16::try_from(v).expect("packed from a u16")),
            targets: ServiceTargets {
                availability_ppm: narrow(f[7]),
                error_rate_ppm: narrow(f[8]),
                loss_ppm: narrow(f[9]),
                setup_time_ms: narrow(f[10]),
                repair_time_ms: narrow(f[11]),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_qos_round_trips_every_field() {
        let full = QosLevel {
            max_up_bps: Some(1),
            max_down_bps: Some(u64::MAX - 1),
            committed_up_bps: Some(3),
            committed_down_bps: Some(4),
            burst_bytes: Some(u32::MAX),
            priority: Some(7),
            mtu: Some(9000),
            targets: ServiceTargets {
                availability_ppm: Some(999_900),
                error_rate_ppm: Some(10),
                loss_ppm: Some(0),
                setup_time_ms: Some(2000),
                repair_time_ms: Some(3_600_000),
            },
        };
        for q in [
            full,
            QosLevel::default(),
            QosLevel {
                max_down_bps: Some(5),
                mtu: Some(1500),
                ..QosLevel::default()
            },
        ] {
            let p = PackedQos::pack(&q);
            assert_eq!(p.vals.len(), p.mask.count_ones() as usize);
            assert_eq!(p.unpack(), q);
        }
        assert_eq!(unpack_time(pack_time(None)), None);
        assert_eq!(unpack_time(pack_time(Some(42))), Some(42));
    }
}
