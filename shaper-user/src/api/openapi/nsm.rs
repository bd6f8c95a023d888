//! The network service manager's paths and schemas (issue 5; roles in [`crate::api::nsm`]).
//!
//! Bounds: ids and names 1..=128 characters, URLs ≤ 2048, secrets 16..=256, lists ≤ 64
//! entries, rates and capacities 8 (allocations) or 1 (links) ..= 400 Gbit/s
//! ([`crate::policy::MAX_RATE_BPS`]), addresses and prefixes by pattern.

use serde_json::{Value, json};

use super::{
    ID_MAX, TEXT_MAX, auth_errors, body_errors, id_param, int, list, ok, opt_int, opt_text,
    responses, schema_ref, text, time_ms,
};
use crate::policy::MAX_RATE_BPS;

/// Longest id or name.
const NAME_MAX: u64 = 128;
/// Longest URL.
const URL_MAX: u64 = 2048;
/// Most entries of a list in a request.
const LIST_MAX: u64 = 64;

/// An IPv4 address in dotted-quad form.
const IPV4: &str = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}";
/// An IPv6 address (RFC 4291 text forms without an embedded IPv4 part).
const IPV6: &str = "(([0-9a-fA-F]{1,4}:){7}[0-9a-fA-F]{1,4}|([0-9a-fA-F]{1,4}:){1,7}:|([0-9a-fA-F]{1,4}:){1,6}:[0-9a-fA-F]{1,4}|([0-9a-fA-F]{1,4}:){1,5}(:[0-9a-fA-F]{1,4}){1,2}|([0-9a-fA-F]{1,4}:){1,4}(:[0-9a-fA-F]{1,4}){1,3}|([0-9a-fA-F]{1,4}:){1,3}(:[0-9a-fA-F]{1,4}){1,4}|([0-9a-fA-F]{1,4}:){1,2}(:[0-9a-fA-F]{1,4}){1,5}|[0-9a-fA-F]{1,4}:(:[0-9a-fA-F]{1,4}){1,6}|:((:[0-9a-fA-F]{1,4}){1,7}|:))";
const V4_LEN: &str = "(3[0-2]|[12]?[0-9])";
const V6_LEN: &str = "(12[0-8]|1[01][0-9]|[1-9]?[0-9])";

/// An id (provider, application, link, session, subscriber, BRAS, gateway): 1 to 128
/// characters, no control characters (`nsm::validate::id`).
fn name(description: &str) -> Value {
    let mut v = text(1, NAME_MAX, description);
    v["pattern"] = json!(NO_CONTROL);
    v
}

/// A display name (provider, application): 1 to 256 characters (`nsm::validate`).
fn display(description: &str) -> Value {
    text(1, DISPLAY_MAX, description)
}

/// No control characters (Unicode general category Cc), as `char::is_control`.
const NO_CONTROL: &str = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$";
/// Longest display name.
const DISPLAY_MAX: u64 = 256;

/// An id parameter's schema with an example (what the lab tests register).
fn named(description: &str, example: &str) -> Value {
    let mut v = name(description);
    v["examples"] = json!([example]);
    v
}

/// Any IPv4 or IPv6 prefix (an IPv6 address without a length is a /128).
fn prefix(description: &str) -> Value {
    json!({
        "type": "string", "minLength": 1, "maxLength": 43, "description": description,
        "pattern": format!("^({IPV4}(/{V4_LEN})?|{IPV6}(/{V6_LEN})?)$")
    })
}

/// An IPv4 or IPv6 address.
fn address(nullable: bool, description: &str) -> Value {
    let ty = if nullable {
        json!(["string", "null"])
    } else {
        json!("string")
    };
    json!({
        "type": ty, "minLength": 2, "maxLength": 39, "description": description,
        "pattern": format!("^({IPV4}|{IPV6})$")
    })
}

fn ports(description: &str) -> Value {
    let port =
        "(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}|0)";
    json!({
        "type": ["string", "null"], "minLength": 1, "maxLength": 11, "description": description,
        "pattern": format!("^{port}(-{port})?$")
    })
}

fn rate(min: u64, description: &str) -> Value {
    opt_int(min, MAX_RATE_BPS, description)
}

fn capacity(description: &str) -> Value {
    int(1, MAX_RATE_BPS, description)
}

fn schemas() -> Value {
    let classifier = json!({
        "type": "object", "additionalProperties": false,
        "required": ["direction", "provider_prefix"],
        "description": "Literal packet fields of one direction: down = to the subscriber (provider side is the source), up = from the subscriber. The subscriber side is scoped by each allocation. Ports need a protocol that carries them (6, 17, 132) or none; a range's low port must not exceed its high port.",
        "properties": {
            "direction": { "type": "string", "enum": ["up", "down"] },
            "proto": opt_int(0, 255, "IP protocol number 0..=255 (6, 17, 132 carry ports); null = any."),
            "provider_prefix": prefix("Provider-side prefix; must lie in the provider's prefixes."),
            "provider_ports": ports("\"443\" or \"5000-5100\"; null = any."),
            "subscriber_ports": ports("Subscriber-side port range; null = any.")
        }
    });
    json!({
        "ProviderBody": {
            "type": "object", "additionalProperties": false, "required": ["kind", "name"],
            "description": "A webhook URL and its secret come together or not at all.",
            "properties": {
                "kind": { "type": "string", "enum": ["asp", "nsp"] },
                "name": display("Display name (1 to 256 characters)."),
                "prefixes": { "type": "array", "maxItems": LIST_MAX, "items": prefix("A server prefix."), "description": "The provider's server prefixes (entitlement), at most 64." },
                "webhook_url": { "type": ["string", "null"], "minLength": 8, "maxLength": URL_MAX, "pattern": "^http://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?$", "description": "http:// URL (≤ 2048 characters) allocation notices are POSTed to." },
                "webhook_secret": opt_text(16, 256, "HMAC-SHA256 key (16 to 256 characters) of X-Shaper-Signature: sha256=<hex>. Write-only.")
            }
        },
        "Provider": {
            "type": "object",
            "properties": {
                "id": name("Provider id."), "kind": { "type": "string", "enum": ["asp", "nsp"] }, "name": display("Display name."),
                "prefixes": { "type": "array", "maxItems": LIST_MAX, "items": text(1, 49, "A server prefix.") },
                "webhook_url": opt_text(0, URL_MAX, "Webhook URL."),
                "webhook_secret_set": { "type": "boolean" }
            }
        },
        "Classifier": classifier,
        "ApplicationBody": {
            "type": "object", "additionalProperties": false, "required": ["name", "classifiers"],
            "properties": {
                "name": display("Display name (1 to 256 characters)."),
                "classifiers": { "type": "array", "minItems": 1, "maxItems": LIST_MAX, "items": schema_ref("Classifier") }
            }
        },
        "Application": {
            "type": "object",
            "properties": {
                "provider": name("Provider id."), "id": name("Application id."), "name": display("Display name."),
                "classifiers": { "type": "array", "maxItems": LIST_MAX, "items": schema_ref("Classifier") }
            }
        },
        "AllocationRequest": {
            "type": "object", "additionalProperties": false, "required": ["application", "scope"],
            "description": "At least one direction needs a committed rate; a ceiling needs the rate of its direction and lies between it and 400 Gbit/s.",
            "examples": [ { "application": "video", "scope": { "subscriber": "cm1" }, "down_bps": 2_000_000, "priority": 6 } ],
            "properties": {
                "application": name("Application id of the provider."),
                "scope": {
                    "type": "object", "additionalProperties": false,
                    "description": "A subscriber (all its sessions), an address (its session), or both (the address must be the subscriber's).",
                    "properties": { "subscriber": opt_text(1, NAME_MAX, "Subscriber id."), "ip": address(true, "IPv4 or IPv6 address.") }
                },
                "down_bps": rate(8, "Committed rate to the subscriber, bit/s (charged against capacity)."),
                "up_bps": rate(8, "Committed rate from the subscriber, bit/s."),
                "ceil_down_bps": rate(8, "Shaping ceiling (≥ the rate); the policer polices at it."),
                "ceil_up_bps": rate(8, "Shaping ceiling upstream."),
                "burst_bytes": opt_int(1500, u64::from(u32::MAX), "Token-bucket depth (≥ one frame: 1500 or the MTU); default 250 ms of the ceiling."),
                "priority": int(0, 7, "Higher is better: DSCP (RFC 4594 classes) and HTB prio 7 − priority."),
                "dscp": opt_int(0, 63, "DSCP 0..=63 instead of the priority's."),
                "max_delay_ms": opt_int(0, u64::from(u32::MAX), "Delay target, carried to BRAS and provider."),
                "max_loss_ppm": opt_int(0, u64::from(u32::MAX), "Loss target, carried to BRAS and provider."),
                "mtu": opt_int(1280, 65535, "L3 MTU policy (1280..=65535): MSS clamp and ICMP too-big.")
            }
        },
        "Allocation": {
            "type": "object",
            "properties": {
                "id": int(1, ID_MAX, "Allocation id."), "provider": name("Provider id."), "request": schema_ref("AllocationRequest"),
                "sessions": { "type": "array", "items": name("Session id.") },
                "charges": { "type": "array", "items": { "type": "object", "properties": { "link": name("Link id."), "dir": { "type": "string", "enum": ["up", "down"] }, "bps": int(0, MAX_RATE_BPS, "Committed rate charged.") } } },
                "dscp": int(0, 63, "DSCP marked."),
                "state": { "type": "string", "enum": ["active", "released"] },
                "created_ms": int(0, u64::MAX, "When admitted."),
                "released_ms": opt_int(0, u64::MAX, "When released."),
                "release_reason": opt_text(0, TEXT_MAX, "Why released.")
            }
        },
        "Delivery": {
            "type": "object",
            "properties": {
                "id": int(1, ID_MAX, "Delivery id."), "provider": name("Provider id."), "allocation": int(1, ID_MAX, "Allocation id."),
                "event": { "type": "string", "enum": ["allocated", "released"] }, "url": text(0, URL_MAX, "Target URL."),
                "attempts": int(0, u64::from(u32::MAX), "Attempts made."), "status": { "type": "string", "enum": ["pending", "delivered", "failed"] },
                "last_code": opt_int(0, 65535, "Last HTTP status (webhook) or RADIUS response code (radius-coa)."), "last_error": opt_text(0, TEXT_MAX, "Last error."),
                "created_ms": int(0, u64::MAX, "When queued."), "updated_ms": int(0, u64::MAX, "Last attempt.")
            }
        },
        "LinkBody": {
            "type": "object", "additionalProperties": false, "required": ["kind", "capacity_up_bps", "capacity_down_bps"],
            "properties": {
                "kind": { "type": "string", "enum": ["gateway", "bras", "link"] },
                "capacity_up_bps": capacity("Capacity upstream, bit/s (1..=400 Gbit/s)."),
                "capacity_down_bps": capacity("Capacity downstream, bit/s (1..=400 Gbit/s).")
            }
        },
        "Link": {
            "type": "object",
            "properties": {
                "id": name("Link id."), "kind": { "type": "string", "enum": ["gateway", "bras", "link"] },
                "capacity_up_bps": capacity("Capacity upstream."), "capacity_down_bps": capacity("Capacity downstream.")
            }
        },
        "LinkUsage": {
            "type": "object",
            "properties": {
                "id": name("Link id."), "kind": { "type": "string", "enum": ["gateway", "bras", "link"] },
                "capacity_up_bps": capacity("Capacity upstream."), "capacity_down_bps": capacity("Capacity downstream."),
                "committed_up_bps": int(0, u64::MAX, "Committed upstream."), "committed_down_bps": int(0, u64::MAX, "Committed downstream."),
                "limit_up_bps": int(0, u64::MAX, "capacity × overbooking"), "limit_down_bps": int(0, u64::MAX, "capacity × overbooking")
            }
        },
        "SessionBody": {
            "type": "object", "additionalProperties": false, "required": ["subscriber", "prefix", "bras", "gateway"],
            "properties": {
                "subscriber": name("Subscriber id."),
                "prefix": {
                    "type": "string", "minLength": 2, "maxLength": 43,
                    "description": "IPv4 address (/32), IPv6 address (/128) or IPv6 /64.",
                    "pattern": format!("^({IPV4}(/32)?|{IPV6}(/(128|64))?)$")
                },
                "bras": name("BRAS the session sits behind."), "gateway": name("Gateway the session sits behind."),
                "since_ms": opt_int(0, super::TIME_MAX_MS, "Start; default now.")
            }
        },
        "Session": {
            "type": "object",
            "properties": {
                "id": name("Session id."), "subscriber": name("Subscriber id."), "prefix": text(2, 49, "Session prefix."),
                "bras": name("BRAS."), "gateway": name("Gateway."), "since_ms": time_ms("Start."),
                "ended_ms": opt_int(0, u64::MAX, "When it ended.")
            }
        }
    })
}

/// The paths and schemas.
#[allow(
    clippy::too_many_lines,
    reason = "one JSON literal per route, kept together"
)]
pub(super) fn document() -> (
    serde_json::Map<String, Value>,
    serde_json::Map<String, Value>,
) {
    let json_body = |name: &str| json!({ "required": true, "content": { "application/json": { "schema": schema_ref(name) } } });
    let pid = id_param(
        "Provider id.",
        named("Provider id (1 to 128 characters).", "p1"),
    );
    let app_param = json!({ "name": "app", "in": "path", "required": true, "description": "Application id.", "schema": named("Application id (1 to 128 characters).", "video") });
    let alloc_param = json!({ "name": "alloc", "in": "path", "required": true, "description": "Allocation id.", "schema": { "type": "integer", "minimum": 1, "maximum": ID_MAX } });
    let sid = || {
        id_param(
            "Session id (e.g. RADIUS Acct-Session-Id).",
            named("Session id (1 to 128 characters).", "s1"),
        )
    };
    let refused = "Refused by the network service manager: `reason` (capacity_exceeded, link_not_registered, session_not_available, dataplane_exhausted) and the 3GPP Rx `result_code` (5006, 5065) are in the problem; the detail names the link or session, what was requested and what is left.";
    let invalid = "Invalid or not entitled (`reason` invalid_service_information 5061, service_not_authorized 5063, unknown_application 5061); `field` names the offending field.";
    let no_nsm = "No network service manager runs.";
    let same_id =
        |op: &str| json!({ "operationId": op, "parameters": { "id": "$request.path.id" } });
    let mut provider_ok = ok("The provider.", schema_ref("Provider"));
    provider_ok["links"] = json!({ "GetProvider": same_id("getProvider"), "ListApplications": same_id("listApplications"), "ListAllocations": same_id("listAllocations") });
    let mut allocated = ok("Admitted; Location names it.", schema_ref("Allocation"));
    let by_alloc = |op: &str| json!({ "operationId": op, "parameters": { "id": "$request.path.id", "alloc": "$response.body#/id" } });
    allocated["links"] = json!({ "GetAllocation": by_alloc("getAllocation"), "ReleaseAllocation": by_alloc("releaseAllocation") });
    let mut session_ok = ok("The session.", schema_ref("Session"));
    session_ok["links"] =
        json!({ "GetSession": same_id("getSession"), "EndSession": same_id("endSession") });
    let alloc_400 = "The allocation id is not an integer within 1..=9223372036854775807.";
    let paths = json!({
        "/v1/providers": {
            "get": {
                "operationId": "listProviders", "summary": "Registered providers (webhook secrets are never shown). Roles: admin, csr.",
                "responses": responses(&[("200", ok("The providers.", list("Provider", None)))], auth_errors(&[("404", no_nsm)]))
            }
        },
        "/v1/providers/{id}": {
            "put": {
                "operationId": "putProvider", "summary": "Register or change a provider. Role: admin.",
                "parameters": [ pid.clone() ], "requestBody": json_body("ProviderBody"),
                "responses": responses(&[("200", provider_ok)], body_errors(&[("404", no_nsm), ("422", "Invalid field (prefix, webhook URL or secret, a URL without a secret or a secret without a URL), or the new prefixes would leave an application outside them.")]))
            },
            "get": {
                "operationId": "getProvider", "summary": "One provider. Roles: admin, csr; provider: own.",
                "parameters": [ pid.clone() ],
                "responses": responses(&[("200", ok("The provider.", schema_ref("Provider")))], auth_errors(&[("404", "Unknown provider.")]))
            },
            "delete": {
                "operationId": "deleteProvider", "summary": "Remove a provider without applications. Role: admin.",
                "parameters": [ pid.clone() ],
                "responses": responses(&[("204", json!({ "description": "Removed." }))], auth_errors(&[("404", "Unknown provider."), ("409", "The provider still has applications.")]))
            }
        },
        "/v1/providers/{id}/applications": {
            "get": {
                "operationId": "listApplications", "summary": "A provider's applications. Roles: admin, csr; provider: own.",
                "parameters": [ pid.clone() ],
                "responses": responses(&[("200", ok("The applications.", list("Application", None)))], auth_errors(&[("404", "Unknown provider.")]))
            }
        },
        "/v1/providers/{id}/applications/{app}": {
            "put": {
                "operationId": "putApplication", "summary": "Register or change an application (its traffic classifiers). Role: admin.",
                "parameters": [ pid.clone(), app_param.clone() ], "requestBody": json_body("ApplicationBody"),
                "responses": responses(&[("200", ok("The application.", schema_ref("Application")))], body_errors(&[("404", "Unknown provider."), ("409", "Active allocations use the application."), ("422", "A classifier is malformed or reaches outside the provider's prefixes; `field` names it (classifiers[i].provider_prefix).")]))
            },
            "delete": {
                "operationId": "deleteApplication", "summary": "Remove an application no active allocation uses. Role: admin.",
                "parameters": [ pid.clone(), app_param ],
                "responses": responses(&[("204", json!({ "description": "Removed." }))], auth_errors(&[("404", "Unknown application."), ("409", "Active allocations use it.")]))
            }
        },
        "/v1/providers/{id}/allocations": {
            "post": {
                "operationId": "createAllocation", "summary": "Ask for a QoS level for an application's traffic to a subscriber (3GPP Rx AAR). Roles: admin, csr; provider: own.",
                "description": "Validated against the session store (subscriber or address online, behind which BRAS and gateway), the provider's entitlement (its declared prefixes) and the capacity left on every link the sessions sit behind (committed rates ≤ capacity × overbooking). Admitted allocations are enforced in the data plane and stored before the 201; the BRAS, gateways and provider webhook are notified after.",
                "parameters": [ pid.clone() ], "requestBody": json_body("AllocationRequest"),
                "responses": responses(&[("201", allocated)], body_errors(&[("404", "Unknown provider."), ("409", refused), ("422", invalid)]))
            },
            "get": {
                "operationId": "listAllocations", "summary": "A provider's allocations, active and released. Roles: admin, csr; provider: own.",
                "parameters": [ pid.clone(), { "name": "state", "in": "query", "required": false, "schema": { "type": "string", "enum": ["active", "released"] } } ],
                "responses": responses(&[("200", ok("The allocations.", list("Allocation", None)))], auth_errors(&[("400", "Unknown query parameter or state."), ("404", "Unknown provider.")]))
            }
        },
        "/v1/providers/{id}/allocations/{alloc}": {
            "get": {
                "operationId": "getAllocation", "summary": "One allocation of the provider. Roles: admin, csr; provider: own.",
                "parameters": [ pid.clone(), alloc_param.clone() ],
                "responses": responses(&[("200", ok("The allocation.", schema_ref("Allocation")))], auth_errors(&[("400", alloc_400), ("404", "The provider has no such allocation.")]))
            },
            "delete": {
                "operationId": "releaseAllocation", "summary": "Release an allocation: capacity is freed, enforcement removed, targets notified (3GPP STR). The allocation stays readable, with state released. Roles: admin, csr; provider: own.",
                "parameters": [ pid.clone(), alloc_param ],
                "responses": responses(&[("200", ok("The released allocation.", schema_ref("Allocation")))], auth_errors(&[("400", alloc_400), ("404", "The provider has no such allocation."), ("409", "Already released.")]))
            }
        },
        "/v1/providers/{id}/deliveries": {
            "get": {
                "operationId": "listDeliveries", "summary": "The provider's delivery log: its webhook (attempts, status, last HTTP status and error) and the RADIUS CoA to the BRAS of its allocations (url radius-coa://<bras>?session=<id>, last_code the RADIUS code: 44 CoA-ACK, 45 CoA-NAK). Roles: admin; provider: own.",
                "parameters": [ pid ],
                "responses": responses(&[("200", ok("The deliveries.", list("Delivery", None)))], auth_errors(&[("404", "Unknown provider.")]))
            }
        },
        "/v1/links": {
            "get": {
                "operationId": "listLinks", "summary": "Links and gateways with capacity, committed rates and limits. Roles: admin, csr, automation.",
                "responses": responses(&[("200", ok("The links.", list("LinkUsage", None)))], auth_errors(&[("404", no_nsm)]))
            }
        },
        "/v1/links/{id}": {
            "put": {
                "operationId": "putLink", "summary": "Register a link or gateway or change its capacity. Role: admin.",
                "parameters": [ id_param("Link id (a session's gateway or bras names it).", name("Link id (1 to 128 characters).")) ], "requestBody": json_body("LinkBody"),
                "responses": responses(&[("200", ok("The link.", schema_ref("Link")))], body_errors(&[("404", no_nsm), ("409", "The new capacity (× overbooking) is below what is committed on the link; `field` names the direction."), ("422", "A capacity is 0 or above 400 Gbit/s; `field` names it.")]))
            }
        },
        "/v1/sessions": {
            "get": {
                "operationId": "listSessions", "summary": "Active sessions, optionally by subscriber or address. Roles: admin, automation.",
                "parameters": [
                    { "name": "subscriber", "in": "query", "required": false, "schema": name("Subscriber id.") },
                    { "name": "ip", "in": "query", "required": false, "schema": address(false, "IPv4 or IPv6 address.") }
                ],
                "responses": responses(&[("200", ok("The sessions.", list("Session", None)))], auth_errors(&[("400", "Unknown query parameter or bad address."), ("404", no_nsm)]))
            }
        },
        "/v1/sessions/{id}": {
            "put": {
                "operationId": "putSession", "summary": "Start or change a subscriber session. A change of address, subscriber, BRAS or gateway releases the allocations admitted on it. Roles: admin, automation.",
                "parameters": [ sid() ], "requestBody": json_body("SessionBody"),
                "responses": responses(&[("200", session_ok)], body_errors(&[("404", no_nsm), ("409", "Another active session holds the address."), ("422", "Invalid field (prefix: IPv4 /32, IPv6 /128 or /64).")]))
            },
            "get": {
                "operationId": "getSession", "summary": "One active session. Roles: admin, automation.",
                "parameters": [ sid() ],
                "responses": responses(&[("200", ok("The session.", schema_ref("Session")))], auth_errors(&[("404", "No active session with this id.")]))
            },
            "delete": {
                "operationId": "endSession", "summary": "End a session; its allocations are released. Roles: admin, automation.",
                "parameters": [ sid() ],
                "responses": responses(&[("200", ok("The ended session.", schema_ref("Session")))], auth_errors(&[("404", "No active session with this id.")]))
            }
        }
    });
    (
        paths.as_object().expect("object").clone(),
        schemas().as_object().expect("object").clone(),
    )
}
