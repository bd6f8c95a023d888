//! Bounds on everything the network service manager takes from outside (the API, RADIUS
//! accounting, the configuration): every string and every collection has a limit, and a
//! value beyond it is refused naming the field, its size and the limit — the value itself is
//! not echoed (it may be a megabyte). The checks of a provider and a link on their own live
//! here too; [`super::NsmCore`] calls them.
//!
//! | what                                             | limit                          |
//! |--------------------------------------------------|--------------------------------|
//! | ids: provider, application, link, session, subscriber, BRAS, gateway | 1..=[`MAX_ID_LEN`] bytes, no control characters |
//! | names: provider, application                     | 1..=[`MAX_NAME_LEN`] bytes     |
//! | `webhook_url`                                    | [`MAX_URL_LEN`] bytes          |
//! | `webhook_secret`                                 | 16..=[`MAX_SECRET_LEN`] bytes  |
//! | prefixes as text (provider, classifier, session) | [`MAX_PREFIX_TEXT_LEN`] bytes  |
//! | port ranges as text                              | [`MAX_PORTS_TEXT_LEN`] bytes   |
//! | provider `prefixes`                              | [`MAX_PREFIXES`] entries       |
//! | application `classifiers`                        | 1..=[`MAX_CLASSIFIERS`]        |
//! | active sessions of one subscriber                | [`MAX_SESSIONS_PER_SUBSCRIBER`] |

use super::error::{CatalogError, Refusal, invalid};
use super::model::{AllocationRequest, Application, Link, Provider, Session, parse_prefix};
use crate::policy::{MAX_RATE_BPS, Prefix};

/// Longest id (provider, application, link, session, subscriber, BRAS, gateway), bytes.
pub const MAX_ID_LEN: usize = 128;
/// Longest provider or application name, bytes.
pub const MAX_NAME_LEN: usize = 256;
/// Longest webhook URL, bytes.
pub const MAX_URL_LEN: usize = 2048;
/// Shortest webhook secret (it keys HMAC-SHA256), bytes.
pub const MIN_SECRET_LEN: usize = 16;
/// Longest webhook secret, bytes.
pub const MAX_SECRET_LEN: usize = 256;
/// Longest prefix as text ("ffff:…:ffff/128" is 43), bytes.
pub const MAX_PREFIX_TEXT_LEN: usize = 64;
/// Longest port range as text ("65535-65535" is 11), bytes.
pub const MAX_PORTS_TEXT_LEN: usize = 16;
/// Most prefixes a provider declares.
pub const MAX_PREFIXES: usize = 64;
/// Most classifiers of one application.
pub const MAX_CLASSIFIERS: usize = 32;
/// Most active sessions one subscriber holds at a time.
pub const MAX_SESSIONS_PER_SUBSCRIBER: usize = 32;

/// A value outside its bounds: the field and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {detail}")]
pub struct BoundError {
    pub field: String,
    pub detail: String,
}

impl From<BoundError> for CatalogError {
    fn from(e: BoundError) -> Self {
        invalid(e.field, e.detail)
    }
}

impl From<BoundError> for Refusal {
    fn from(e: BoundError) -> Self {
        Refusal::Invalid {
            field: e.field,
            detail: e.detail,
        }
    }
}

fn bound(field: impl Into<String>, detail: impl Into<String>) -> BoundError {
    BoundError {
        field: field.into(),
        detail: detail.into(),
    }
}

/// A string of at most `max` characters (`min` at least): characters (code points), as the
/// OpenAPI document's `maxLength` counts them.
pub fn text(field: &str, value: &str, min: usize, max: usize) -> Result<(), BoundError> {
    let len = value.chars().count();
    if len < min {
        return Err(bound(
            field,
            if min == 1 {
                "is empty".to_owned()
            } else {
                format!("is {len} characters long; it must be at least {min}")
            },
        ));
    }
    if len > max {
        return Err(bound(
            field,
            format!("is {len} characters long; the limit is {max}"),
        ));
    }
    Ok(())
}

/// An id: 1..=[`MAX_ID_LEN`] characters without control characters.
pub fn id(field: &str, value: &str) -> Result<(), BoundError> {
    text(field, value, 1, MAX_ID_LEN)?;
    if value.chars().any(char::is_control) {
        return Err(bound(field, "contains a control character"));
    }
    Ok(())
}

/// A collection of at most `max` entries.
pub fn count(field: &str, len: usize, max: usize) -> Result<(), BoundError> {
    if len > max {
        return Err(bound(
            field,
            format!("has {len} entries; the limit is {max}"),
        ));
    }
    Ok(())
}

/// Checks a provider on its own: id, name, prefixes, webhook URL with its secret.
pub fn provider(p: &Provider) -> Result<Vec<Prefix>, CatalogError> {
    id("id", &p.id)?;
    text("name", &p.name, 1, MAX_NAME_LEN)?;
    count("prefixes", p.prefixes.len(), MAX_PREFIXES)?;
    let prefixes = p
        .prefixes
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let field = format!("prefixes[{i}]");
            text(&field, s, 1, MAX_PREFIX_TEXT_LEN)?;
            parse_prefix(s).map_err(|d| invalid(field, d))
        })
        .collect::<Result<Vec<_>, CatalogError>>()?;
    match (&p.webhook_url, &p.webhook_secret) {
        (Some(url), Some(secret)) => {
            text("webhook_url", url, 1, MAX_URL_LEN)?;
            super::http::HttpUrl::parse(url).map_err(|e| invalid("webhook_url", e.to_string()))?;
            if secret.len() < MIN_SECRET_LEN {
                return Err(invalid(
                    "webhook_secret",
                    format!("must be at least {MIN_SECRET_LEN} characters (it keys HMAC-SHA256)"),
                ));
            }
            text("webhook_secret", secret, MIN_SECRET_LEN, MAX_SECRET_LEN)?;
        }
        (Some(_), None) => {
            return Err(invalid("webhook_secret", "a webhook URL needs a secret"));
        }
        (None, Some(_)) => {
            return Err(invalid("webhook_url", "a webhook secret without a URL"));
        }
        (None, None) => {}
    }
    Ok(prefixes)
}

/// The bounds of an application (its classifiers are compiled and checked against the
/// provider by [`super::NsmCore::check_application`]).
pub fn application(app: &Application) -> Result<(), BoundError> {
    id("provider", &app.provider)?;
    id("id", &app.id)?;
    text("name", &app.name, 1, MAX_NAME_LEN)?;
    count("classifiers", app.classifiers.len(), MAX_CLASSIFIERS)?;
    for (i, c) in app.classifiers.iter().enumerate() {
        text(
            &format!("classifiers[{i}].provider_prefix"),
            &c.provider_prefix,
            0,
            MAX_PREFIX_TEXT_LEN,
        )?;
        for (name, v) in [
            ("provider_ports", &c.provider_ports),
            ("subscriber_ports", &c.subscriber_ports),
        ] {
            if let Some(v) = v {
                text(
                    &format!("classifiers[{i}].{name}"),
                    v,
                    0,
                    MAX_PORTS_TEXT_LEN,
                )?;
            }
        }
    }
    Ok(())
}

/// Checks a link on its own: an id, and capacity in both directions.
pub fn link(link: &Link) -> Result<(), CatalogError> {
    id("id", &link.id)?;
    for (field, v) in [
        ("capacity_up_bps", link.capacity_up_bps),
        ("capacity_down_bps", link.capacity_down_bps),
    ] {
        if v == 0 || v > MAX_RATE_BPS {
            return Err(invalid(field, format!("{v} is outside 1..={MAX_RATE_BPS}")));
        }
    }
    Ok(())
}

/// The bounds of a session's fields (its address is checked by [`super::session_prefix`]).
pub fn session(s: &Session) -> Result<(), BoundError> {
    for (field, v) in [
        ("id", &s.id),
        ("subscriber", &s.subscriber),
        ("bras", &s.bras),
        ("gateway", &s.gateway),
    ] {
        id(field, v)?;
    }
    text("prefix", &s.prefix, 1, MAX_PREFIX_TEXT_LEN)
}

/// The bounds of an allocation request's strings (checked before anything is looked up, so
/// no refusal echoes an oversized value).
pub fn request(req: &AllocationRequest) -> Result<(), BoundError> {
    id("application", &req.application)?;
    if let Some(sub) = &req.scope.subscriber {
        id("scope.subscriber", sub)?;
    }
    Ok(())
}
