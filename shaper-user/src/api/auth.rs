//! Bearer tokens and roles.
//!
//! Tokens are random strings handed to clients once; the controller keeps only their SHA-256
//! digests ([`hash_token`]) with a role and a subject. A request's token is hashed and compared
//! with every stored digest in constant time (no early exit, neither within a digest nor across
//! the table), so response timing tells nothing about how close a guess came.
//!
//! | role         | subject           | modem and event routes                               |
//! |--------------|-------------------|------------------------------------------------------|
//! | `admin`      | user name         | all modems; submits as `Csr { user: subject }`       |
//! | `csr`        | user name         | all modems; submits as `Csr { user: subject }`       |
//! | `automation` | trigger name      | all modems; submits as `Automation { trigger }`      |
//! | `subscriber` | modem id          | its own modem only; changes only its own events      |
//! | `provider`   | provider id       | none (403): providers reach only their applications  |
//!
//! Base plans (`PUT /v1/modems/{id}/base`) are changed by admin, CSR and automation tokens
//! only; their audit trail (`GET /v1/modems/{id}/audit`) is read by admin and CSR tokens.
//!
//! A subscriber may read every event of its modem, but modify or cancel only the events it
//! submitted itself (source `Subscriber`): a CSR's or an automation's grant on the modem (a
//! fair-use throttle, a billing upgrade) is not the subscriber's to change.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use super::AppState;
use super::error::ApiError;
use crate::provision::{Event, Source};
pub use crate::tokens::{Principal, Role, TokenEntry, TokenError, TokenTable, hash_token};

impl Principal {
    /// Who the engine records as the source of the caller's submissions; `None` for a provider.
    pub fn source(&self) -> Option<Source> {
        match self.role {
            Role::Admin | Role::Csr => Some(Source::Csr {
                user: self.subject.clone(),
            }),
            Role::Subscriber => Some(Source::Subscriber),
            Role::Automation => Some(Source::Automation {
                trigger: self.subject.clone(),
            }),
            Role::Provider => None,
        }
    }

    /// The modem and event routes are closed to providers.
    pub fn require_modem_routes(&self) -> Result<(), ApiError> {
        if self.role == Role::Provider {
            return Err(ApiError::Forbidden {
                detail: "provider tokens reach only the provider application routes, not \
                         modems or events"
                    .into(),
            });
        }
        Ok(())
    }

    /// The caller may read and submit for `modem`.
    pub fn require_modem(&self, modem: &str) -> Result<(), ApiError> {
        self.require_modem_routes()?;
        if self.role == Role::Subscriber && self.subject != modem {
            return Err(ApiError::Forbidden {
                detail: format!("a subscriber token reaches only modem {}", self.subject),
            });
        }
        Ok(())
    }

    /// The caller may replace base plans (`PUT /v1/modems/{id}/base`): admin, CSR and
    /// automation (a billing system changing plans) tokens, for every modem. A subscriber
    /// does not choose its own plan, and providers reach no modem.
    pub fn require_base_change(&self) -> Result<(), ApiError> {
        self.require_modem_routes()?;
        if self.role == Role::Subscriber {
            return Err(ApiError::Forbidden {
                detail: "a subscriber token cannot change a base plan; an admin, CSR or \
                         automation token can"
                    .into(),
            });
        }
        Ok(())
    }

    /// The caller may modify or cancel `event`.
    pub fn require_event_change(&self, event: &Event) -> Result<(), ApiError> {
        self.require_modem(&event.modem)?;
        if self.role == Role::Subscriber && event.source != Source::Subscriber {
            return Err(ApiError::Forbidden {
                detail: format!(
                    "event {} was not submitted by the subscriber; only its submitter's side \
                     (CSR, automation, admin) may change it",
                    event.id
                ),
            });
        }
        Ok(())
    }

    /// The idempotency key as the engine stores it: scoped to the caller, so that two callers
    /// choosing the same key never collide (nor learn of each other's events).
    pub fn scoped_key(&self, key: &str) -> String {
        format!(
            "api:{}:{}:{}:{key}",
            self.role,
            self.subject.len(),
            self.subject
        )
    }
}

/// The client's part of a key made by [`Principal::scoped_key`]; any other key unchanged.
pub fn client_key(stored: &str) -> &str {
    let parse = || {
        let rest = stored.strip_prefix("api:")?;
        let (role, rest) = rest.split_once(':')?;
        Role::ALL.iter().find(|r| r.as_str() == role)?;
        let (len, rest) = rest.split_once(':')?;
        let len: usize = len.parse().ok()?;
        let rest = rest.get(len..)?;
        rest.strip_prefix(':')
    };
    parse().unwrap_or(stored)
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let mut values = parts.headers.get_all(AUTHORIZATION).iter();
        let Some(value) = values.next() else {
            return Err(ApiError::Unauthenticated {
                detail: "no Authorization header; send `Authorization: Bearer <token>`".into(),
                invalid_token: false,
            });
        };
        // Two credentials: which one is meant is not for the server to guess.
        let more = values.count();
        if more > 0 {
            return Err(ApiError::BadRequest {
                field: Some("Authorization".into()),
                detail: format!(
                    "{} Authorization headers; send exactly one `Authorization: Bearer <token>`",
                    more + 1
                ),
            });
        }
        let value = value.to_str().map_err(|_| ApiError::BadRequest {
            field: Some("Authorization".into()),
            detail: "the Authorization header is not visible ASCII".into(),
        })?;
        let token = value
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .filter(|token| !token.is_empty())
            .ok_or_else(|| ApiError::Unauthenticated {
                detail: "the Authorization header is not `Bearer <token>`".into(),
                invalid_token: false,
            })?;
        state
            .tokens
            .lookup(token)
            .ok_or_else(|| ApiError::Unauthenticated {
                detail: "unknown bearer token".into(),
                invalid_token: true,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_sha256_hex() {
        assert_eq!(
            hash_token("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn table_lookup_and_validation() {
        let entry = |token: &str, role, subject: &str| TokenEntry {
            sha256_hex: hash_token(token),
            role,
            subject: subject.into(),
        };
        let t = TokenTable::new([
            entry("t-admin", Role::Admin, "root"),
            entry("t-sub", Role::Subscriber, "cm1"),
        ])
        .unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(
            t.lookup("t-sub"),
            Some(Principal {
                role: Role::Subscriber,
                subject: "cm1".into()
            })
        );
        assert_eq!(t.lookup("t-su"), None);
        assert_eq!(t.lookup(""), None);
        let mut upper = entry("x", Role::Csr, "bob");
        upper.sha256_hex = upper.sha256_hex.to_uppercase();
        assert!(TokenTable::new([upper]).unwrap().lookup("x").is_some());
        assert_eq!(
            TokenTable::new([TokenEntry {
                sha256_hex: "abc".into(),
                role: Role::Csr,
                subject: "bob".into()
            }])
            .unwrap_err(),
            TokenError::BadHash { index: 0 }
        );
        assert_eq!(
            TokenTable::new([entry("x", Role::Csr, "")]).unwrap_err(),
            TokenError::EmptySubject { index: 0 }
        );
        assert_eq!(
            TokenTable::new([entry("x", Role::Csr, "a"), entry("x", Role::Admin, "b")])
                .unwrap_err(),
            TokenError::Duplicate { index: 1, first: 0 }
        );
    }

    #[test]
    fn scoped_keys_round_trip() {
        let p = Principal {
            role: Role::Csr,
            subject: "a:b".into(),
        };
        let k = p.scoped_key("k:1");
        assert_eq!(k, "api:csr:3:a:b:k:1");
        assert_eq!(client_key(&k), "k:1");
        assert_eq!(client_key("plain"), "plain");
        assert_eq!(client_key("api:nobody:1:a:k"), "api:nobody:1:a:k");
    }
}
