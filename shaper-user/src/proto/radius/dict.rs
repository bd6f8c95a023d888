//! The attributes shaper reads and writes, declared once (docs/ARCHITECTURE.md §7, like dhcproto's
//! `declare_codes!`). Everything not listed here still round-trips byte-exact as an unknown
//! attribute; the table only gives names and value types.
//!
//! Sources: RFC 2865 §5 (standard attributes), RFC 2866 §5 (accounting), RFC 3162 §2.3
//! (Framed-IPv6-Prefix), RFC 4818 (Delegated-IPv6-Prefix), RFC 3579 §3.2
//! (Message-Authenticator), RFC 5176 §3.5 (Error-Cause), and the vendor dictionaries shipped
//! with FreeRADIUS 3.2 (`dictionary.mikrotik`, `dictionary.cisco`, `dictionary.erx`).

/// How an attribute's value is encoded (RFC 2865 §5, RFC 8044 data types).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueType {
    /// UTF-8 text (RFC 8044 §3.4).
    Text,
    /// Opaque octets (RFC 8044 §3.5).
    Octets,
    /// 32-bit unsigned, network order (RFC 8044 §3.1).
    Integer,
    /// IPv4 address (RFC 8044 §3.8).
    Ipv4,
    /// Seconds since the Unix epoch, 32 bits (RFC 8044 §3.2).
    Time,
    /// Reserved byte, prefix length, prefix (RFC 3162 §2.3, RFC 8044 §3.11).
    Ipv6Prefix,
    /// RFC 2868 §3.5 tagged text: a leading tag octet 0x01..=0x1f.
    TaggedText,
}

macro_rules! declare_attrs {
    ($( $(#[$doc:meta])* $const:ident = $code:literal, $name:literal, $ty:ident; )*) => {
        $( $(#[$doc])* pub const $const: u8 = $code; )*
        /// `(code, name, type)` of every standard attribute in this table.
        pub const STANDARD: &[(u8, &str, ValueType)] = &[ $( ($code, $name, ValueType::$ty), )* ];
    };
}

macro_rules! declare_vendor_attrs {
    ($( $(#[$doc:meta])* $const:ident = ($vendor:expr, $code:literal), $name:literal, $ty:ident; )*) => {
        $( $(#[$doc])* pub const $const: (u32, u8) = ($vendor, $code); )*
        /// `(vendor, code, name, type)` of every vendor attribute in this table.
        pub const VENDOR: &[(u32, u8, &str, ValueType)] =
            &[ $( ($vendor, $code, $name, ValueType::$ty), )* ];
    };
}

declare_attrs! {
    /// RFC 2865 §5.1.
    USER_NAME = 1, "User-Name", Text;
    /// RFC 2865 §5.4.
    NAS_IP_ADDRESS = 4, "NAS-IP-Address", Ipv4;
    /// RFC 2865 §5.5.
    NAS_PORT = 5, "NAS-Port", Integer;
    /// RFC 2865 §5.8.
    FRAMED_IP_ADDRESS = 8, "Framed-IP-Address", Ipv4;
    /// RFC 2865 §5.11: accel-ppp's default rate attribute (the "plain" profile).
    FILTER_ID = 11, "Filter-Id", Text;
    /// RFC 2865 §5.18.
    REPLY_MESSAGE = 18, "Reply-Message", Text;
    /// RFC 2865 §5.25.
    CLASS = 25, "Class", Octets;
    /// RFC 2865 §5.26: vendor id + sub-attributes.
    VENDOR_SPECIFIC = 26, "Vendor-Specific", Octets;
    /// RFC 2865 §5.27.
    SESSION_TIMEOUT = 27, "Session-Timeout", Integer;
    /// RFC 2865 §5.28.
    IDLE_TIMEOUT = 28, "Idle-Timeout", Integer;
    /// RFC 2865 §5.30.
    CALLED_STATION_ID = 30, "Called-Station-Id", Text;
    /// RFC 2865 §5.31.
    CALLING_STATION_ID = 31, "Calling-Station-Id", Text;
    /// RFC 2865 §5.32.
    NAS_IDENTIFIER = 32, "NAS-Identifier", Text;
    /// RFC 2865 §5.33.
    PROXY_STATE = 33, "Proxy-State", Octets;
    /// RFC 2866 §5.1: Start 1, Stop 2, Interim-Update 3 (RFC 2869 §2.1), On 7, Off 8.
    ACCT_STATUS_TYPE = 40, "Acct-Status-Type", Integer;
    /// RFC 2866 §5.2.
    ACCT_DELAY_TIME = 41, "Acct-Delay-Time", Integer;
    /// RFC 2866 §5.3.
    ACCT_INPUT_OCTETS = 42, "Acct-Input-Octets", Integer;
    /// RFC 2866 §5.4.
    ACCT_OUTPUT_OCTETS = 43, "Acct-Output-Octets", Integer;
    /// RFC 2866 §5.5.
    ACCT_SESSION_ID = 44, "Acct-Session-Id", Text;
    /// RFC 2866 §5.7.
    ACCT_SESSION_TIME = 46, "Acct-Session-Time", Integer;
    /// RFC 2866 §5.10.
    ACCT_TERMINATE_CAUSE = 49, "Acct-Terminate-Cause", Integer;
    /// RFC 2866 §5.11.
    ACCT_MULTI_SESSION_ID = 50, "Acct-Multi-Session-Id", Text;
    /// RFC 2869 §5.3.
    EVENT_TIMESTAMP = 55, "Event-Timestamp", Time;
    /// RFC 2869 §5.16: seconds between a session's Interim-Updates.
    ACCT_INTERIM_INTERVAL = 85, "Acct-Interim-Interval", Integer;
    /// RFC 2869 §5.17.
    NAS_PORT_ID = 87, "NAS-Port-Id", Text;
    /// RFC 3579 §3.2: HMAC-MD5 over the packet.
    MESSAGE_AUTHENTICATOR = 80, "Message-Authenticator", Octets;
    /// RFC 3162 §2.3.
    FRAMED_IPV6_PREFIX = 97, "Framed-IPv6-Prefix", Ipv6Prefix;
    /// RFC 5176 §3.5.
    ERROR_CAUSE = 101, "Error-Cause", Integer;
    /// RFC 4818 §3.
    DELEGATED_IPV6_PREFIX = 123, "Delegated-IPv6-Prefix", Ipv6Prefix;
}

/// MikroTik's SMI enterprise number (`dictionary.mikrotik`).
pub const VENDOR_MIKROTIK: u32 = 14988;
/// Cisco's SMI enterprise number (`dictionary.cisco`).
pub const VENDOR_CISCO: u32 = 9;
/// Juniper E-series (ex-Unisphere/ERX) enterprise number (`dictionary.erx`).
pub const VENDOR_ERX: u32 = 4874;

declare_vendor_attrs! {
    /// RouterOS rate limit string (docs/PROTOCOLS.md §4).
    MIKROTIK_RATE_LIMIT = (VENDOR_MIKROTIK, 8), "Mikrotik-Rate-Limit", Text;
    /// `name=value` pairs, the Cisco catch-all.
    CISCO_AVPAIR = (VENDOR_CISCO, 1), "Cisco-AVPair", Text;
    /// Policy applied to traffic from the subscriber.
    ERX_INGRESS_POLICY_NAME = (VENDOR_ERX, 10), "ERX-Ingress-Policy-Name", Text;
    /// Policy applied to traffic to the subscriber.
    ERX_EGRESS_POLICY_NAME = (VENDOR_ERX, 11), "ERX-Egress-Policy-Name", Text;
    /// QoS profile attached to the subscriber interface.
    ERX_QOS_PROFILE_NAME = (VENDOR_ERX, 26), "ERX-Qos-Profile-Name", Text;
    /// Dynamic service to activate, `name(arg,...)`; tagged so several can be activated.
    ERX_SERVICE_ACTIVATE = (VENDOR_ERX, 65), "ERX-Service-Activate", TaggedText;
    /// Dynamic service to deactivate, by name.
    ERX_SERVICE_DEACTIVATE = (VENDOR_ERX, 66), "ERX-Service-Deactivate", Text;
}

/// Name and type of a standard attribute, if this table knows it.
#[must_use]
pub fn standard(code: u8) -> Option<(&'static str, ValueType)> {
    STANDARD
        .iter()
        .find(|(c, ..)| *c == code)
        .map(|&(_, n, t)| (n, t))
}

/// Name and type of a vendor attribute, if this table knows it.
#[must_use]
pub fn vendor(vendor: u32, code: u8) -> Option<(&'static str, ValueType)> {
    VENDOR
        .iter()
        .find(|(v, c, ..)| *v == vendor && *c == code)
        .map(|&(_, _, n, t)| (n, t))
}

/// Acct-Status-Type values (RFC 2866 §5.1, RFC 2869 §2.1).
pub mod acct_status {
    pub const START: u32 = 1;
    pub const STOP: u32 = 2;
    pub const INTERIM_UPDATE: u32 = 3;
    pub const ACCOUNTING_ON: u32 = 7;
    pub const ACCOUNTING_OFF: u32 = 8;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_named() {
        for (i, (c, n, _)) in STANDARD.iter().enumerate() {
            assert!(
                STANDARD[i + 1..].iter().all(|(c2, ..)| c2 != c),
                "duplicate {c}"
            );
            assert_eq!(standard(*c).map(|x| x.0), Some(*n));
        }
        assert_eq!(
            vendor(14988, 8),
            Some(("Mikrotik-Rate-Limit", ValueType::Text))
        );
        assert_eq!(
            vendor(4874, 65),
            Some(("ERX-Service-Activate", ValueType::TaggedText))
        );
        assert_eq!(standard(101).map(|x| x.0), Some("Error-Cause"));
        assert_eq!(standard(200), None);
    }
}
