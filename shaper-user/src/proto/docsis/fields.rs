//! Typed views of the settings shaper writes and reads: network access (3), class of service
//! (4), SNMP MIB objects (11), max CPE (18), service flows (24/25) and vendor-specific blocks
//! (43). Sizes and ranges: docs/PROTOCOLS.md §1 and CM-SP-MULPIv3.0 Annex C.
//!
//! Each `to_tlv` emits sub-TLVs in ascending type order (as rlaager/docsis does for Vector B);
//! each `from_tlv` checks lengths and ranges and names the sub-TLV at fault.

use super::tlv::{ConfigFile, Tlv, TlvPath};

/// TLV 3, network access control.
pub const NETWORK_ACCESS: u8 = 3;
/// TLV 4, DOCSIS 1.0 class of service.
pub const CLASS_OF_SERVICE: u8 = 4;
/// TLV 11, SNMP MIB object.
pub const SNMP_MIB_OBJECT: u8 = 11;
/// TLV 18, maximum number of CPEs.
pub const MAX_CPE: u8 = 18;
/// TLV 24, upstream service flow.
pub const US_SERVICE_FLOW: u8 = 24;
/// TLV 25, downstream service flow.
pub const DS_SERVICE_FLOW: u8 = 25;
/// TLV 43, vendor-specific information.
pub const VENDOR_SPECIFIC: u8 = 43;
/// Sub-TLV 43.8, the vendor's OUI.
pub const VENDOR_ID: u8 = 8;

/// QoS parameter set type bits (sub-TLV 6): provisioned, admitted, active (MULPI C.2.2.5.6).
pub const QOS_SET_ALL: u8 = 7;
/// Upstream scheduling type best effort (sub-TLV 24.15 value 2).
pub const SCHEDULING_BEST_EFFORT: u8 = 2;

/// A setting whose value does not fit its definition.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum FieldError {
    #[error("TLV {path}: {len} value bytes, expected {expected}")]
    Length {
        path: TlvPath,
        len: usize,
        expected: &'static str,
    },
    #[error("TLV {path}: value {value} outside {range}")]
    Range {
        path: TlvPath,
        value: u64,
        range: &'static str,
    },
    #[error("TLV {path}: appears twice; once is allowed")]
    Duplicate { path: TlvPath },
    #[error("TLV {path}: required but absent")]
    Missing { path: TlvPath },
    #[error("TLV {path}: expected an aggregate of sub-TLVs")]
    NotAggregate { path: TlvPath },
    #[error("TLV {path}: {what}")]
    Invalid { path: TlvPath, what: &'static str },
}

/// Reads a big-endian unsigned integer of exactly `width` bytes.
///
/// # Errors
/// [`FieldError::Length`] naming `path` for any other length.
pub fn uint(path: TlvPath, data: &[u8], width: usize) -> Result<u32, FieldError> {
    if data.len() != width {
        return Err(FieldError::Length {
            path,
            len: data.len(),
            expected: match width {
                1 => "1",
                2 => "2",
                _ => "4",
            },
        });
    }
    Ok(data.iter().fold(0u32, |acc, &b| (acc << 8) | u32::from(b)))
}

fn leaf_data(parent: Option<u8>, t: &Tlv) -> Result<&[u8], FieldError> {
    t.data().ok_or(FieldError::Invalid {
        path: TlvPath::new(parent, t.code()),
        what: "expected a value, found sub-TLVs",
    })
}

fn u8_of(parent: Option<u8>, t: &Tlv) -> Result<u8, FieldError> {
    let v = uint(TlvPath::new(parent, t.code()), leaf_data(parent, t)?, 1)?;
    Ok(u8::try_from(v).expect("one byte"))
}

fn u16_of(parent: Option<u8>, t: &Tlv) -> Result<u16, FieldError> {
    let v = uint(TlvPath::new(parent, t.code()), leaf_data(parent, t)?, 2)?;
    Ok(u16::try_from(v).expect("two bytes"))
}

fn u32_of(parent: Option<u8>, t: &Tlv) -> Result<u32, FieldError> {
    uint(TlvPath::new(parent, t.code()), leaf_data(parent, t)?, 4)
}

fn range_check(
    parent: Option<u8>,
    code: u8,
    value: u8,
    max: u8,
    range: &'static str,
) -> Result<u8, FieldError> {
    if value > max {
        return Err(FieldError::Range {
            path: TlvPath::new(parent, code),
            value: value.into(),
            range,
        });
    }
    Ok(value)
}

fn bool_of(parent: Option<u8>, t: &Tlv) -> Result<bool, FieldError> {
    Ok(range_check(parent, t.code(), u8_of(parent, t)?, 1, "0..=1")? == 1)
}

/// Sets `slot` once; a second instance of the same sub-TLV is an error.
fn once<T>(slot: &mut Option<T>, path: TlvPath, v: T) -> Result<(), FieldError> {
    if slot.replace(v).is_some() {
        return Err(FieldError::Duplicate { path });
    }
    Ok(())
}

impl Tlv {
    /// A leaf of `code` under `parent` holding `value` as a `width`-byte big-endian integer
    /// (the low `width` bytes of `value`).
    #[must_use]
    pub fn uint(parent: Option<u8>, code: u8, width: usize, value: u32) -> Tlv {
        Tlv::leaf(parent, code, value.to_be_bytes()[4 - width..].to_vec())
    }

    /// TLV 3, network access: 1 lets the CPEs behind the modem forward, 0 does not.
    #[must_use]
    pub fn network_access(on: bool) -> Tlv {
        Tlv::uint(None, NETWORK_ACCESS, 1, u32::from(on))
    }

    /// TLV 18, maximum number of CPE MAC addresses the modem learns.
    #[must_use]
    pub fn max_cpe(n: u8) -> Tlv {
        Tlv::uint(None, MAX_CPE, 1, u32::from(n))
    }
}

/// TLV 4, DOCSIS 1.0 class of service (docs/PROTOCOLS.md §1, type 4).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClassOfService {
    /// 4.1 class ID, 1..=16.
    pub class_id: u8,
    /// 4.2 maximum downstream rate, bit/s.
    pub max_rate_down: Option<u32>,
    /// 4.3 maximum upstream rate, bit/s.
    pub max_rate_up: Option<u32>,
    /// 4.4 upstream priority, 0..=7.
    pub priority_up: Option<u8>,
    /// 4.5 guaranteed minimum upstream rate, bit/s.
    pub guaranteed_up: Option<u32>,
    /// 4.6 maximum upstream burst, bytes.
    pub max_burst_up: Option<u16>,
    /// 4.7 baseline privacy enable.
    pub privacy_enable: Option<bool>,
}

impl ClassOfService {
    /// The TLV 4 aggregate.
    #[must_use]
    pub fn to_tlv(&self) -> Tlv {
        let p = Some(CLASS_OF_SERVICE);
        let ClassOfService {
            class_id,
            max_rate_down,
            max_rate_up,
            priority_up,
            guaranteed_up,
            max_burst_up,
            privacy_enable,
        } = *self;
        let mut subs = vec![Tlv::uint(p, 1, 1, class_id.into())];
        subs.extend(max_rate_down.map(|v| Tlv::uint(p, 2, 4, v)));
        subs.extend(max_rate_up.map(|v| Tlv::uint(p, 3, 4, v)));
        subs.extend(priority_up.map(|v| Tlv::uint(p, 4, 1, v.into())));
        subs.extend(guaranteed_up.map(|v| Tlv::uint(p, 5, 4, v)));
        subs.extend(max_burst_up.map(|v| Tlv::uint(p, 6, 2, v.into())));
        subs.extend(privacy_enable.map(|v| Tlv::uint(p, 7, 1, v.into())));
        Tlv::Aggregate {
            code: CLASS_OF_SERVICE,
            subs,
        }
    }

    /// Reads a TLV 4 aggregate; unknown sub-TLVs are ignored.
    ///
    /// # Errors
    /// [`FieldError`] naming the sub-TLV with a bad length, range or duplicate, or a missing
    /// class ID.
    pub fn from_tlv(t: &Tlv) -> Result<ClassOfService, FieldError> {
        let p = Some(CLASS_OF_SERVICE);
        let subs = t.subs().ok_or(FieldError::NotAggregate {
            path: TlvPath::new(None, t.code()),
        })?;
        let mut class_id = None;
        let mut c = ClassOfService::default();
        for s in subs {
            let path = TlvPath::new(p, s.code());
            match s.code() {
                1 => {
                    let v = u8_of(p, s)?;
                    if !(1..=16).contains(&v) {
                        return Err(FieldError::Range {
                            path,
                            value: v.into(),
                            range: "1..=16",
                        });
                    }
                    once(&mut class_id, path, v)?;
                }
                2 => once(&mut c.max_rate_down, path, u32_of(p, s)?)?,
                3 => once(&mut c.max_rate_up, path, u32_of(p, s)?)?,
                4 => once(
                    &mut c.priority_up,
                    path,
                    range_check(p, 4, u8_of(p, s)?, 7, "0..=7")?,
                )?,
                5 => once(&mut c.guaranteed_up, path, u32_of(p, s)?)?,
                6 => once(&mut c.max_burst_up, path, u16_of(p, s)?)?,
                7 => once(&mut c.privacy_enable, path, bool_of(p, s)?)?,
                _ => {}
            }
        }
        c.class_id = class_id.ok_or(FieldError::Missing {
            path: TlvPath::new(p, 1),
        })?;
        Ok(c)
    }
}

/// Direction of a service flow: TLV 24 upstream, TLV 25 downstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    Up,
    Down,
}

impl Direction {
    /// The top-level TLV type of a flow in this direction.
    #[must_use]
    pub fn code(self) -> u8 {
        match self {
            Direction::Up => US_SERVICE_FLOW,
            Direction::Down => DS_SERVICE_FLOW,
        }
    }
}

/// TLV 24/25, a service flow (docs/PROTOCOLS.md §1, types 24/25; MULPI C.2.2.5).
/// Sub-TLVs this type does not name are kept in `other`, in order, after the named ones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceFlow {
    pub direction: Direction,
    /// .1 service flow reference, which classifiers point at.
    pub reference: Option<u16>,
    /// .2 service flow ID (assigned by the CMTS; absent in a provisioned file).
    pub sfid: Option<u32>,
    /// .4 service class name (written NUL-terminated).
    pub class_name: Option<String>,
    /// .6 QoS parameter set type bits: 1 provisioned, 2 admitted, 4 active.
    pub qos_param_set_type: Option<u8>,
    /// .7 traffic priority, 0..=7.
    pub traffic_priority: Option<u8>,
    /// .8 maximum sustained traffic rate, bit/s.
    pub max_sustained_rate: Option<u32>,
    /// .9 maximum traffic burst, bytes.
    pub max_traffic_burst: Option<u32>,
    /// .10 minimum reserved traffic rate, bit/s.
    pub min_reserved_rate: Option<u32>,
    /// .14 upstream maximum concatenated burst in bytes (2 B; `direction == Up`) or
    /// downstream maximum latency in µs (4 B; `direction == Down`).
    pub sub14: Option<u32>,
    /// 24.15 upstream scheduling type: 2 BE, 3 nRTPS, 4 RTPS, 5 UGS-AD, 6 UGS.
    pub scheduling_type: Option<u8>,
    /// Every other sub-TLV, byte-exact.
    pub other: Vec<Tlv>,
}

impl ServiceFlow {
    /// An empty flow in `direction`.
    #[must_use]
    pub fn new(direction: Direction) -> ServiceFlow {
        ServiceFlow {
            direction,
            reference: None,
            sfid: None,
            class_name: None,
            qos_param_set_type: None,
            traffic_priority: None,
            max_sustained_rate: None,
            max_traffic_burst: None,
            min_reserved_rate: None,
            sub14: None,
            scheduling_type: None,
            other: Vec::new(),
        }
    }

    /// The TLV 24/25 aggregate.
    ///
    /// # Errors
    /// [`FieldError`] for a value the wire format cannot hold: a downstream scheduling type,
    /// an upstream sub-TLV 14 above 65535, a priority above 7, a class name with a NUL.
    pub fn to_tlv(&self) -> Result<Tlv, FieldError> {
        let ServiceFlow {
            direction,
            reference,
            sfid,
            class_name,
            qos_param_set_type,
            traffic_priority,
            max_sustained_rate,
            max_traffic_burst,
            min_reserved_rate,
            sub14,
            scheduling_type,
            other,
        } = self;
        let code = direction.code();
        let p = Some(code);
        let mut subs = Vec::with_capacity(10 + other.len());
        subs.extend(reference.map(|v| Tlv::uint(p, 1, 2, v.into())));
        subs.extend(sfid.map(|v| Tlv::uint(p, 2, 4, v)));
        if let Some(name) = class_name {
            if name.contains('\0') {
                return Err(FieldError::Invalid {
                    path: TlvPath::new(p, 4),
                    what: "service class name contains a NUL",
                });
            }
            let mut d = name.as_bytes().to_vec();
            d.push(0);
            subs.push(Tlv::leaf(p, 4, d));
        }
        subs.extend(qos_param_set_type.map(|v| Tlv::uint(p, 6, 1, v.into())));
        if let Some(v) = *traffic_priority {
            subs.push(Tlv::uint(p, 7, 1, range_check(p, 7, v, 7, "0..=7")?.into()));
        }
        subs.extend(max_sustained_rate.map(|v| Tlv::uint(p, 8, 4, v)));
        subs.extend(max_traffic_burst.map(|v| Tlv::uint(p, 9, 4, v)));
        subs.extend(min_reserved_rate.map(|v| Tlv::uint(p, 10, 4, v)));
        match (direction, *sub14) {
            (_, None) => {}
            (Direction::Up, Some(v)) => {
                let v16 = u16::try_from(v).map_err(|_| FieldError::Range {
                    path: TlvPath::new(p, 14),
                    value: v.into(),
                    range: "0..=65535",
                })?;
                subs.push(Tlv::uint(p, 14, 2, v16.into()));
            }
            (Direction::Down, Some(v)) => subs.push(Tlv::uint(p, 14, 4, v)),
        }
        match (direction, *scheduling_type) {
            (_, None) => {}
            (Direction::Up, Some(v)) => subs.push(Tlv::uint(p, 15, 1, v.into())),
            (Direction::Down, Some(_)) => {
                return Err(FieldError::Invalid {
                    path: TlvPath::new(p, 15),
                    what: "scheduling type is an upstream (TLV 24) parameter",
                });
            }
        }
        subs.extend(other.iter().cloned());
        Ok(Tlv::Aggregate { code, subs })
    }

    /// Reads a TLV 24/25 aggregate.
    ///
    /// # Errors
    /// [`FieldError`] naming the sub-TLV with a bad length, range or duplicate.
    pub fn from_tlv(t: &Tlv) -> Result<ServiceFlow, FieldError> {
        let code = t.code();
        let direction = match code {
            US_SERVICE_FLOW => Direction::Up,
            DS_SERVICE_FLOW => Direction::Down,
            _ => {
                return Err(FieldError::Invalid {
                    path: TlvPath::new(None, code),
                    what: "not a service flow (24 or 25)",
                });
            }
        };
        let subs = t.subs().ok_or(FieldError::NotAggregate {
            path: TlvPath::new(None, code),
        })?;
        let p = Some(code);
        let mut f = ServiceFlow::new(direction);
        for s in subs {
            let path = TlvPath::new(p, s.code());
            match (s.code(), direction) {
                (1, _) => once(&mut f.reference, path, u16_of(p, s)?)?,
                (2, _) => once(&mut f.sfid, path, u32_of(p, s)?)?,
                (4, _) => {
                    let d = leaf_data(p, s)?;
                    let name = d.strip_suffix(&[0]).ok_or(FieldError::Invalid {
                        path,
                        what: "service class name is not NUL-terminated",
                    })?;
                    let name = std::str::from_utf8(name)
                        .ok()
                        .filter(|n| !n.contains('\0'))
                        .ok_or(FieldError::Invalid {
                            path,
                            what: "service class name is not one UTF-8 string",
                        })?;
                    once(&mut f.class_name, path, name.to_owned())?;
                }
                (6, _) => once(&mut f.qos_param_set_type, path, u8_of(p, s)?)?,
                (7, _) => once(
                    &mut f.traffic_priority,
                    path,
                    range_check(p, 7, u8_of(p, s)?, 7, "0..=7")?,
                )?,
                (8, _) => once(&mut f.max_sustained_rate, path, u32_of(p, s)?)?,
                (9, _) => once(&mut f.max_traffic_burst, path, u32_of(p, s)?)?,
                (10, _) => once(&mut f.min_reserved_rate, path, u32_of(p, s)?)?,
                (14, Direction::Up) => once(&mut f.sub14, path, u16_of(p, s)?.into())?,
                (14, Direction::Down) => once(&mut f.sub14, path, u32_of(p, s)?)?,
                (15, Direction::Up) => once(&mut f.scheduling_type, path, u8_of(p, s)?)?,
                _ => f.other.push(s.clone()),
            }
        }
        Ok(f)
    }
}

/// TLV 43, vendor-specific information: sub-TLV 8 (the OUI) first, then the vendor's own
/// sub-TLVs (MULPI C.1.1.17). Modems skip blocks whose OUI is not theirs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VendorSpecific {
    pub oui: [u8; 3],
    /// The sub-TLVs after the OUI, byte-exact.
    pub subs: Vec<Tlv>,
}

impl VendorSpecific {
    /// The TLV 43 aggregate.
    #[must_use]
    pub fn to_tlv(&self) -> Tlv {
        let mut subs = Vec::with_capacity(1 + self.subs.len());
        subs.push(Tlv::leaf(
            Some(VENDOR_SPECIFIC),
            VENDOR_ID,
            self.oui.to_vec(),
        ));
        subs.extend(self.subs.iter().cloned());
        Tlv::Aggregate {
            code: VENDOR_SPECIFIC,
            subs,
        }
    }

    /// Reads a TLV 43 aggregate.
    ///
    /// # Errors
    /// [`FieldError`] when the first sub-TLV is not a 3-byte 43.8.
    pub fn from_tlv(t: &Tlv) -> Result<VendorSpecific, FieldError> {
        let path = TlvPath::new(None, t.code());
        let subs = t.subs().ok_or(FieldError::NotAggregate { path })?;
        let p = Some(VENDOR_SPECIFIC);
        let Some((first, rest)) = subs.split_first() else {
            return Err(FieldError::Missing {
                path: TlvPath::new(p, VENDOR_ID),
            });
        };
        if first.code() != VENDOR_ID {
            return Err(FieldError::Invalid {
                path: TlvPath::new(p, first.code()),
                what: "the first sub-TLV of a vendor block must be 43.8 (vendor OUI)",
            });
        }
        let d = leaf_data(p, first)?;
        let oui: [u8; 3] = d.try_into().map_err(|_| FieldError::Length {
            path: TlvPath::new(p, VENDOR_ID),
            len: d.len(),
            expected: "3",
        })?;
        Ok(VendorSpecific {
            oui,
            subs: rest.to_vec(),
        })
    }
}

impl ConfigFile {
    fn single(&self, code: u8) -> Result<Option<&Tlv>, FieldError> {
        let mut it = self.tlvs.iter().filter(|t| t.code() == code);
        let first = it.next();
        if it.next().is_some() {
            return Err(FieldError::Duplicate {
                path: TlvPath::new(None, code),
            });
        }
        Ok(first)
    }

    /// TLV 3, if present.
    ///
    /// # Errors
    /// A bad length or value, or two instances.
    pub fn network_access(&self) -> Result<Option<bool>, FieldError> {
        self.single(NETWORK_ACCESS)?
            .map(|t| bool_of(None, t))
            .transpose()
    }

    /// TLV 18, if present.
    ///
    /// # Errors
    /// A bad length, or two instances.
    pub fn max_cpe(&self) -> Result<Option<u8>, FieldError> {
        self.single(MAX_CPE)?.map(|t| u8_of(None, t)).transpose()
    }

    /// TLV 4, if present.
    ///
    /// # Errors
    /// As [`ClassOfService::from_tlv`], or two instances.
    pub fn class_of_service(&self) -> Result<Option<ClassOfService>, FieldError> {
        self.single(CLASS_OF_SERVICE)?
            .map(ClassOfService::from_tlv)
            .transpose()
    }

    /// Every TLV 24 and 25, in file order.
    ///
    /// # Errors
    /// As [`ServiceFlow::from_tlv`].
    pub fn service_flows(&self) -> Result<Vec<ServiceFlow>, FieldError> {
        self.tlvs
            .iter()
            .filter(|t| matches!(t.code(), US_SERVICE_FLOW | DS_SERVICE_FLOW))
            .map(ServiceFlow::from_tlv)
            .collect()
    }

    /// Every TLV 43, in file order.
    ///
    /// # Errors
    /// As [`VendorSpecific::from_tlv`].
    pub fn vendor_specific(&self) -> Result<Vec<VendorSpecific>, FieldError> {
        self.tlvs
            .iter()
            .filter(|t| t.code() == VENDOR_SPECIFIC)
            .map(VendorSpecific::from_tlv)
            .collect()
    }

    /// Every TLV 11 value (one BER VarBind each), in file order.
    #[must_use]
    pub fn snmp_objects(&self) -> Vec<super::snmp::VarBind> {
        self.tlvs
            .iter()
            .filter(|t| t.code() == SNMP_MIB_OBJECT)
            .filter_map(Tlv::data)
            .map(|d| super::snmp::VarBind(d.to_vec()))
            .collect()
    }
}
