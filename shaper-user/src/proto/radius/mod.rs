//! RADIUS, sans-IO (docs/ARCHITECTURE.md §1.6 and §7; RFC 5176).
//!
//! - [`packet`]: the codec (RFC 2865 §3 header, §5 attributes, §5.26 Vendor-Specific); unknown
//!   attributes and codes round-trip byte-exact.
//! - [`auth`]: Request/Response Authenticators and Message-Authenticator, signing and
//!   constant-time verification, with the secret as an argument.
//! - [`dict`]: the attribute table, declared once.
//!
//! The sockets live in `crate::notify` (CoA client and the CoA/accounting server), and so
//! does the mapping of QoS levels to rate attributes (`notify::rate`): this module imports
//! nothing of the crate.

pub mod auth;
pub mod dict;
pub mod packet;

#[cfg(test)]
mod tests;

pub use auth::{AuthError, encode_request, encode_response, verify_request, verify_response};
pub use packet::{Attribute, Code, DecodeError, EncodeError, Packet, SubAttribute, ValueError};

macro_rules! declare_error_causes {
    ($( $(#[$doc:meta])* $variant:ident = $code:literal, $name:literal; )*) => {
        /// Error-Cause values (RFC 5176 §3.5). Unknown values are kept in [`ErrorCause::Other`].
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum ErrorCause {
            $( $(#[$doc])* $variant, )*
            Other(u32),
        }

        impl ErrorCause {
            /// The attribute value.
            #[must_use]
            pub fn code(self) -> u32 {
                match self { $( ErrorCause::$variant => $code, )* ErrorCause::Other(c) => c }
            }

            /// The cause for a value.
            #[must_use]
            pub fn from_code(c: u32) -> ErrorCause {
                match c { $( $code => ErrorCause::$variant, )* c => ErrorCause::Other(c) }
            }

            /// The RFC 5176 name (as FreeRADIUS's `dictionary.rfc5176` spells it).
            #[must_use]
            pub fn name(self) -> &'static str {
                match self { $( ErrorCause::$variant => $name, )* ErrorCause::Other(_) => "Unknown" }
            }
        }
    };
}

declare_error_causes! {
    /// 201: a Disconnect left session state behind.
    ResidualSessionContextRemoved = 201, "Residual-Session-Context-Removed";
    InvalidEapPacket = 202, "Invalid-EAP-Packet";
    /// 401: the request carries an attribute the NAS does not support.
    UnsupportedAttribute = 401, "Unsupported-Attribute";
    /// 402: an attribute the NAS needs (e.g. session identification) is missing.
    MissingAttribute = 402, "Missing-Attribute";
    /// 403: NAS-IP-Address / NAS-Identifier name another NAS.
    NasIdentificationMismatch = 403, "NAS-Identification-Mismatch";
    /// 404: the request is otherwise invalid.
    InvalidRequest = 404, "Invalid-Request";
    UnsupportedService = 405, "Unsupported-Service";
    UnsupportedExtension = 406, "Unsupported-Extension";
    /// 407: an attribute's value is unacceptable.
    InvalidAttributeValue = 407, "Invalid-Attribute-Value";
    AdministrativelyProhibited = 501, "Administratively-Prohibited";
    RequestNotRoutable = 502, "Request-Not-Routable";
    /// 503: no session matches the identification attributes.
    SessionContextNotFound = 503, "Session-Context-Not-Found";
    SessionContextNotRemovable = 504, "Session-Context-Not-Removable";
    OtherProxyProcessingError = 505, "Other-Proxy-Processing-Error";
    /// 506: the NAS lacks the resources to apply the change.
    ResourcesUnavailable = 506, "Resources-Unavailable";
    RequestInitiated = 507, "Request-Initiated";
    MultipleSessionSelectionUnsupported = 508, "Multiple-Session-Selection-Unsupported";
}

impl std::fmt::Display for ErrorCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.name(), self.code())
    }
}
