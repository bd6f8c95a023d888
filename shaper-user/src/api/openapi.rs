//! The OpenAPI 3.1 document served at `/openapi.json`, written by hand. It covers exactly the
//! routes in [`super::ROUTES`] (a test checks both directions), and it is an exact contract:
//! every integer has its real range, every string its length limits (and a format or pattern
//! where the server parses it), every object that refuses unknown fields says so, and every
//! status a route answers is listed (errors as `application/problem+json`). A unit test
//! ([`tests`]) fails when an integer lacks `minimum`/`maximum` or a string lacks `maxLength`;
//! the test `api_schema` checks the document with an independent validator and runs
//! Schemathesis against a live `shaper run` with it.

mod nsm;
#[cfg(test)]
mod tests;

use serde_json::{Value, json};

/// Largest id of an event or allocation (ids are SQLite integers: `i64::MAX`).
pub const ID_MAX: u64 = 9_223_372_036_854_775_807;
/// Latest time a request may name: 9999-12-31T23:59:59.999Z, ms since the Unix epoch.
pub const TIME_MAX_MS: u64 = 253_402_300_799_999;
/// Largest QoS rate, bit/s.
pub const QOS_RATE_MAX: u64 = u32::MAX as u64;
/// Longest modem id.
pub const MODEM_ID_MAX: u64 = super::routes::MAX_MODEM_ID as u64;
/// Longest catalogue level name.
pub const LEVEL_MAX: u64 = 64;
/// Bound of free text the server writes (problem details, reasons, file names).
pub const TEXT_MAX: u64 = 65_536;
/// One million: the ppm of 100 %.
const PPM: u64 = 1_000_000;

pub(crate) fn problem(description: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/problem+json": { "schema": { "$ref": "#/components/schemas/Problem" } } }
    })
}

pub(crate) fn ok(description: &str, schema: Value) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": schema } } })
}

pub(crate) fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

pub(crate) fn nullable(name: &str, description: &str) -> Value {
    json!({ "oneOf": [ schema_ref(name), { "type": "null" } ], "description": description })
}

pub(crate) fn id_param(description: &str, schema: Value) -> Value {
    json!({ "name": "id", "in": "path", "required": true, "description": description, "schema": schema })
}

/// An integer within `min..=max`.
pub(crate) fn int(min: u64, max: u64, description: &str) -> Value {
    json!({ "type": "integer", "minimum": min, "maximum": max, "description": description })
}

/// An optional (nullable) integer within `min..=max`.
pub(crate) fn opt_int(min: u64, max: u64, description: &str) -> Value {
    json!({ "type": ["integer", "null"], "minimum": min, "maximum": max, "description": description })
}

/// A string of `min..=max` characters.
pub(crate) fn text(min: u64, max: u64, description: &str) -> Value {
    json!({ "type": "string", "minLength": min, "maxLength": max, "description": description })
}

/// An optional (nullable) string of `min..=max` characters.
pub(crate) fn opt_text(min: u64, max: u64, description: &str) -> Value {
    json!({ "type": ["string", "null"], "minLength": min, "maxLength": max, "description": description })
}

/// A time in ms since the Unix epoch, as requests may name it.
pub(crate) fn time_ms(description: &str) -> Value {
    int(0, TIME_MAX_MS, description)
}

pub(crate) fn list(name: &str, max: Option<u64>) -> Value {
    let mut v = json!({ "type": "array", "items": schema_ref(name) });
    if let Some(max) = max {
        v["maxItems"] = max.into();
    }
    v
}

fn modem_id() -> Value {
    json!({ "type": "string", "minLength": 1, "maxLength": MODEM_ID_MAX, "description": "Modem id (1 to 128 characters).", "examples": ["cm1"] })
}

fn event_id() -> Value {
    id_param(
        "Event id.",
        json!({ "type": "integer", "minimum": 1, "maximum": ID_MAX }),
    )
}

/// The common error responses of an authenticated route.
pub(crate) fn auth_errors(extra: &[(&str, &str)]) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert(
        "401".into(),
        problem("Missing or unknown bearer token (with `WWW-Authenticate: Bearer`)."),
    );
    m.insert(
        "403".into(),
        problem(
            "The token's role or subject does not reach the resource. Provider tokens are \
             refused on every modem and event route; subscriber tokens reach only their own \
             modem.",
        ),
    );
    m.insert(
        "500".into(),
        problem("A failure of the controller's own (its store, a worker task); the detail is logged, not sent."),
    );
    m.insert(
        "503".into(),
        problem("The controller is poisoned and must be reopened from its store."),
    );
    for (code, desc) in extra {
        m.insert((*code).into(), problem(desc));
    }
    m
}

/// The error responses of a route that reads a JSON body: `extra` plus 400 and 413.
pub(crate) fn body_errors(extra: &[(&str, &str)]) -> serde_json::Map<String, Value> {
    let mut m = auth_errors(extra);
    m.entry("400").or_insert_with(|| {
        problem("Malformed JSON, body shape, unknown field, wrong type or Content-Type; `field` names it.")
    });
    m.insert("413".into(), problem("Body too large."));
    m
}

pub(crate) fn responses(
    success: &[(&str, Value)],
    errors: serde_json::Map<String, Value>,
) -> Value {
    let mut m = errors;
    for (code, v) in success {
        m.insert((*code).into(), v.clone());
    }
    Value::Object(m)
}

fn rate(description: &str) -> Value {
    opt_int(8, QOS_RATE_MAX, description)
}

fn qos_schema() -> Value {
    json!({
        "type": "object",
        "description": "A QoS level; unknown fields are refused. As a grant, every field is optional and names only what it changes; as a base plan (PUT /v1/modems/{id}/base) it is the whole plan: an absent field is unset. A committed rate above the maximum the same level sets, or a burst below the level's MTU, is refused (422).",
        "additionalProperties": false,
        "properties": {
            "max_up_bps": rate("Maximum rate modem → network, bit/s (8..=4294967295)."),
            "max_down_bps": rate("Maximum rate network → modem, bit/s (8..=4294967295)."),
            "committed_up_bps": rate("Committed rate upstream, bit/s (8..=4294967295; ≤ max_up_bps when both are set)."),
            "committed_down_bps": rate("Committed rate downstream, bit/s (8..=4294967295; ≤ max_down_bps when both are set)."),
            "burst_bytes": opt_int(1280, u64::from(u32::MAX), "Token-bucket depth, bytes: at least the level's MTU, or 1500 without one (below: 422)."),
            "priority": opt_int(0, 7, "Traffic priority 0..=7, higher is better."),
            "mtu": opt_int(1280, 65535, "L3 MTU, bytes (1280..=65535)."),
            "targets": schema_ref("ServiceTargets")
        }
    })
}

fn ppm(description: &str) -> Value {
    opt_int(0, PPM, description)
}

fn target_ms(description: &str) -> Value {
    opt_int(1, u64::from(u32::MAX), description)
}

fn modem_schemas() -> Value {
    json!({
        "Modem": {
            "type": "object",
            "required": ["id", "base", "effective", "bound"],
            "properties": {
                "id": modem_id(),
                "base": schema_ref("QosLevel"),
                "effective": { "$ref": "#/components/schemas/QosLevel", "description": "Base plan with the active grants layered on it, normalized." },
                "bound": { "type": "boolean", "description": "Whether the modem has a data-plane binding (unbound modems are not enforced)." },
                "pipeline": nullable("ModemPipeline", "The modem pipeline's state; null when the pipeline is off or has made no file for the modem yet.")
            }
        },
        "BaseSource": {
            "description": "Who replaced a base plan.",
            "oneOf": [
                { "type": "object", "required": ["kind", "role", "subject"], "properties": { "kind": { "const": "api" }, "role": { "type": "string", "enum": ["admin", "csr", "subscriber", "provider", "automation"], "description": "The token's role." }, "subject": text(0, 128, "The token's subject (user or trigger name).") } },
                { "type": "object", "required": ["kind"], "properties": { "kind": { "const": "config" } }, "description": "The configuration file's plan, edited since the last run, applied at start." },
                { "type": "object", "required": ["kind", "name"], "properties": { "kind": { "const": "file" }, "name": text(1, 255, "The DOCSIS file dropped in the incoming directory.") } }
            ]
        },
        "ModemAuditEntry": {
            "type": "object",
            "required": ["at_ms", "by", "old", "new"],
            "properties": {
                "at_ms": int(0, u64::MAX, "When, ms since the Unix epoch."),
                "by": schema_ref("BaseSource"),
                "old": schema_ref("QosLevel"),
                "new": schema_ref("QosLevel")
            }
        },
        "ModemPipeline": {
            "type": "object",
            "required": ["version", "file", "version_file", "last_reboot", "failing", "file_failure", "reboot_failure"],
            "properties": {
                "version": int(1, u64::MAX, "Newest configuration-file version written (versions start at 1)."),
                "file": text(1, 255, "The stable file name (version 0): what DHCP hands the modem as its boot file; it always holds the newest version. Served by TFTP and at /files/{name}."),
                "version_file": opt_text(1, 255, "The file name of the newest version."),
                "last_reboot": nullable("RebootRecord", "The last reboot since the controller started; null if none yet."),
                "failing": { "type": "boolean", "description": "Whether file_failure or reboot_failure is set." },
                "file_failure": nullable("PipelineFailure", "Building or writing the file of the modem's current level fails (the modem keeps its previous file); null otherwise."),
                "reboot_failure": nullable("PipelineFailure", "Rebooting the modem onto its newest file fails; null otherwise.")
            }
        },
        "PipelineFailure": {
            "type": "object",
            "description": "A failing pipeline stage, retried with exponential backoff (1 s doubling to 5 min).",
            "required": ["stage", "last_error", "failing_since_ms", "attempts", "next_retry_ms"],
            "properties": {
                "stage": { "type": "string", "enum": ["build", "deliver", "reboot"] },
                "last_error": text(0, TEXT_MAX, "The newest attempt's error."),
                "failing_since_ms": int(0, u64::MAX, "When the first failed attempt ended, ms since the Unix epoch."),
                "attempts": int(0, u64::MAX, "Failed attempts since then."),
                "next_retry_ms": opt_int(0, u64::MAX, "When the next attempt is due, ms since the Unix epoch; null: not retried until the modem's level or the configuration changes.")
            }
        },
        "RebootRecord": {
            "type": "object",
            "required": ["method", "ok", "skipped", "attempts", "last_error", "at_ms", "version"],
            "properties": {
                "method": { "type": "string", "enum": ["snmp", "forcerenew", "command", "none"] },
                "ok": { "type": "boolean" },
                "skipped": { "type": "boolean", "description": "The modem has no reboot method: nothing was sent." },
                "attempts": int(0, u64::from(u32::MAX), "Attempts made (retries with exponential backoff)."),
                "last_error": opt_text(0, TEXT_MAX, "The last attempt's error, when it failed."),
                "at_ms": int(0, u64::MAX, "When it finished, ms since the Unix epoch."),
                "version": int(0, u64::MAX, "The file version it delivered.")
            }
        },
        "ModemFile": {
            "type": "object",
            "required": ["name", "ok", "modem", "reason", "at_ms", "moved_to"],
            "properties": {
                "name": text(0, 255, "The file name in the incoming directory."),
                "ok": { "type": "boolean", "description": "True: applied as the modem's base plan (moved to applied/); false: refused (moved to rejected/), nothing changed." },
                "modem": opt_text(0, TEXT_MAX, "The modem it named, when known."),
                "reason": text(0, TEXT_MAX, "Why it was refused (bad MIC, bad signature, malformed, unknown modem, …), or what was done."),
                "at_ms": int(0, u64::MAX, "When it was handled, ms since the Unix epoch."),
                "moved_to": opt_text(0, TEXT_MAX, "Where it went, relative to the incoming directory (rejected/x.cfg; rejected/x.cfg.<ms> when that name was taken: nothing there is replaced); null: it could not be moved (the reason says why), and it is not handled again until it changes.")
            }
        }
    })
}

fn event_schemas() -> Value {
    let start = || {
        opt_int(
            0,
            TIME_MAX_MS,
            "Start, ms since the Unix epoch (0..=253402300799999, through 9999-12-31T23:59:59.999Z); absent or null = immediate (at the controller's next tick).",
        )
    };
    let stop = || {
        opt_int(
            0,
            TIME_MAX_MS,
            "Stop, ms since the Unix epoch (0..=253402300799999); absent or null = until cancelled. Must lie after start_ms and after now (422 otherwise).",
        )
    };
    json!({
        "Source": {
            "oneOf": [
                { "type": "object", "required": ["kind", "user"], "properties": { "kind": { "const": "csr" }, "user": text(0, 128, "The CSR's token subject.") } },
                { "type": "object", "required": ["kind"], "properties": { "kind": { "const": "subscriber" } } },
                { "type": "object", "required": ["kind", "trigger"], "properties": { "kind": { "const": "automation" }, "trigger": text(0, 128, "The automation token's subject.") } }
            ]
        },
        "EventState": { "type": "string", "enum": ["pending", "active", "completed", "cancelled"] },
        "Event": {
            "type": "object",
            "required": ["id", "modem", "source", "qos", "start_ms", "stop_ms", "idempotency_key", "created_ms", "start_due_ms", "state"],
            "properties": {
                "id": int(1, ID_MAX, "Event id."),
                "modem": modem_id(),
                "source": schema_ref("Source"),
                "qos": schema_ref("QosLevel"),
                "start_ms": opt_int(0, TIME_MAX_MS, "Requested start, ms since the Unix epoch; null = immediate."),
                "stop_ms": opt_int(0, TIME_MAX_MS, "Requested stop; null = until cancelled."),
                "idempotency_key": opt_text(1, 200, "The Idempotency-Key it was submitted with."),
                "level": opt_text(1, LEVEL_MAX, "The grant catalogue level it was asked as, if any."),
                "created_ms": int(0, u64::MAX, "When it was submitted, ms since the Unix epoch."),
                "start_due_ms": int(0, u64::MAX, "When the grant takes (took) effect."),
                "state": schema_ref("EventState")
            }
        },
        "CreateEvent": {
            "type": "object",
            "required": ["modem"],
            "anyOf": [ { "required": ["qos"] }, { "required": ["level"] } ],
            "additionalProperties": false,
            "description": "A grant on one modem: its QoS (`qos`) or a catalogue level (`level`, GET /v1/catalogue), exactly one of them (both: 422, field qos).",
            "examples": [ { "modem": "cm1", "qos": { "max_down_bps": 50_000_000, "priority": 5 } } ],
            "properties": {
                "modem": modem_id(),
                "qos": schema_ref("QosLevel"),
                "level": text(1, LEVEL_MAX, "A level from the grant catalogue (GET /v1/catalogue): its grant, maximum duration and monthly quota. Subscribers (and CSRs, with controller.grants.csr_from_catalogue) must name one; a level is its own grant, so qos is then left out."),
                "start_ms": start(),
                "stop_ms": stop()
            }
        },
        "PatchEvent": {
            "type": "object",
            "additionalProperties": false,
            "minProperties": 1,
            "description": "Fields present replace the event's (null: immediate start / no stop); qos replaces the whole grant.",
            "properties": {
                "start_ms": start(),
                "stop_ms": stop(),
                "qos": schema_ref("QosLevel")
            }
        },
        "Submitted": {
            "type": "object",
            "required": ["id", "duplicate"],
            "properties": {
                "id": int(1, ID_MAX, "The event's id."),
                "duplicate": { "type": "boolean", "description": "True for an idempotent retry: nothing new was created." }
            }
        }
    })
}

fn components() -> Value {
    let mut schemas = json!({
        "Problem": {
            "type": "object",
            "description": "RFC 9457 problem details.",
            "required": ["type", "title", "status", "detail"],
            "properties": {
                "type": { "type": "string", "format": "uri-reference", "minLength": 1, "maxLength": 256 },
                "title": text(1, 256, "Short summary of the problem type."),
                "status": int(400, 599, "The HTTP status."),
                "detail": text(0, TEXT_MAX, "What was wrong, naming the limit where one was crossed."),
                "field": text(0, TEXT_MAX, "The offending field (JSON path in the body, path or query parameter, or header name), for 400 and 422."),
                "reason": text(1, 64, "Why the network service manager refused (capacity_exceeded, session_not_available, ...)."),
                "result_code": int(0, u64::from(u32::MAX), "The 3GPP Rx / Diameter result code of the refusal (5006, 5061, 5063, 5065).")
            }
        },
        "ServiceTargets": {
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "availability_ppm": ppm("Availability, parts per million (0..=1000000)."),
                "error_rate_ppm": ppm("Errored-packet ratio, ppm (0..=1000000)."),
                "loss_ppm": ppm("Loss ratio under congestion, ppm (0..=1000000)."),
                "setup_time_ms": target_ms("Connection setup time, ms (1..=4294967295)."),
                "repair_time_ms": target_ms("Fault repair time, ms (1..=4294967295).")
            }
        },
        "QosLevel": qos_schema()
    });
    let all = schemas.as_object_mut().expect("object");
    for part in [modem_schemas(), event_schemas()] {
        all.extend(part.as_object().expect("object").clone());
    }
    json!({
        "securitySchemes": {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "Opaque token; the controller stores only its SHA-256. Roles: admin, csr, subscriber (own modem only), provider (own applications only: no modem or event route), automation."
            }
        },
        "schemas": schemas
    })
}

fn event_links() -> Value {
    let by_id =
        |op: &str| json!({ "operationId": op, "parameters": { "id": "$response.body#/id" } });
    json!({
        "GetEvent": by_id("getEvent"),
        "PatchEvent": by_id("patchEvent"),
        "CancelEvent": by_id("cancelEvent")
    })
}

fn modem_paths() -> Value {
    let json_body = |name: &str| json!({ "required": true, "content": { "application/json": { "schema": schema_ref(name) } } });
    let modem_param = || id_param("Modem id.", modem_id());
    let modem_links = json!({
        "GetModem": { "operationId": "getModem", "parameters": { "id": "$request.path.id" } },
        "GetModemAudit": { "operationId": "getModemAudit", "parameters": { "id": "$request.path.id" } }
    });
    let mut base_responses = responses(
        &[(
            "200",
            ok("The modem after the change.", schema_ref("Modem")),
        )],
        body_errors(&[
            ("404", "Unknown modem."),
            (
                "422",
                "Invalid plan (committed above maximum, burst below the MTU); `field` names it (e.g. committed_down_bps).",
            ),
        ]),
    );
    base_responses["200"]["links"] = modem_links;
    json!({
        "/v1/modems/{id}": {
            "get": {
                "operationId": "getModem",
                "summary": "A modem's base plan, effective QoS and binding state.",
                "description": "Roles: admin, csr, automation; subscriber for its own modem only.",
                "parameters": [ modem_param() ],
                "responses": responses(
                    &[("200", ok("The modem.", schema_ref("Modem")))],
                    auth_errors(&[("404", "Unknown modem.")])
                )
            }
        },
        "/v1/modems/{id}/base": {
            "put": {
                "operationId": "putModemBase",
                "summary": "Replace a modem's base plan (the QoS it has when no grant is active).",
                "description": "Roles: admin, csr, automation (a billing system changing plans); subscriber and provider tokens get 403. The body is the whole new plan: a field left out is unset (not limited), not kept. The plan and an audit line (who, when, old and new plan: GET /v1/modems/{id}/audit) are durable before the answer; the modem's active grants stay layered over the new plan, and its effective level is enforced (data plane, modem pipeline) before the answer. Putting the plan the modem already has changes nothing. The plan survives restarts: the configuration file's [[modem]] plan replaces it only once that plan is edited.",
                "parameters": [ modem_param() ],
                "requestBody": json_body("QosLevel"),
                "responses": base_responses
            }
        },
        "/v1/modems/{id}/audit": {
            "get": {
                "operationId": "getModemAudit",
                "summary": "Who replaced the modem's base plan, when, from what to what; oldest first.",
                "description": "Roles: admin, csr. Changes by the API, by a dropped DOCSIS file, and by the configuration file (applied at start when its plan was edited) are listed; the plan a modem was created with is not a change.",
                "parameters": [ modem_param() ],
                "responses": responses(
                    &[("200", ok("The trail.", list("ModemAuditEntry", None)))],
                    auth_errors(&[("404", "Unknown modem.")])
                )
            }
        },
        "/v1/catalogue": {
            "get": {
                "operationId": "getCatalogue",
                "summary": "The grant catalogue: the levels subscribers (and CSRs, if so configured) choose from, with their maximum duration and monthly quota.",
                "description": "Roles: admin, csr, automation, subscriber.",
                "responses": responses(
                    &[("200", ok("The catalogue.", json!({
                        "type": "object",
                        "required": ["csr_from_catalogue", "max_per_month", "levels"],
                        "properties": {
                            "csr_from_catalogue": { "type": "boolean" },
                            "max_per_month": opt_int(1, u64::from(u32::MAX), "Catalogue grants per modem per calendar month (UTC), all levels together; null: no such limit."),
                            "levels": { "type": "array", "maxItems": 64, "items": {
                                "type": "object",
                                "required": ["name", "qos", "max_duration_s", "per_month"],
                                "properties": {
                                    "name": text(1, LEVEL_MAX, "The level's name."),
                                    "qos": schema_ref("QosLevel"),
                                    "max_duration_s": int(1, TIME_MAX_MS / 1000, "Longest grant of this level."),
                                    "per_month": opt_int(1, u64::from(u32::MAX), "Grants of this level per modem per calendar month (UTC); null: no such limit.")
                                }
                            } }
                        }
                    })))],
                    auth_errors(&[])
                )
            }
        },
        "/v1/modem-files": {
            "get": {
                "operationId": "listModemFiles",
                "summary": "Modem configuration files operators dropped in the incoming directory, as handled, oldest first (the last 256).",
                "description": "Roles: admin, csr. Empty when the modem pipeline or its incoming directory is off.",
                "responses": responses(
                    &[("200", ok("The files.", list("ModemFile", Some(256))))],
                    auth_errors(&[])
                )
            }
        },
        "/files/{name}": {
            "get": {
                "operationId": "getFile",
                "summary": "A modem configuration file the pipeline wrote (the same files TFTP serves).",
                "description": "No token: modems cannot present one, and the names are 128-bit HMACs no one without the name key can guess. Only `<name>.cfg` directly in the pipeline's directory.",
                "security": [],
                "parameters": [ { "name": "name", "in": "path", "required": true, "schema": text(1, 255, "File name.") } ],
                "responses": {
                    "200": { "description": "The file.", "content": { "application/octet-stream": { "schema": { "type": "string", "contentMediaType": "application/octet-stream", "maxLength": TEXT_MAX } } } },
                    "404": problem("No such file, or the modem pipeline is off."),
                    "500": problem("Reading the file failed.")
                }
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics (text exposition format 0.0.4). Admin tokens only: the top-flow series carry subscribers' peer addresses.",
                "responses": {
                    "200": {
                        "description": "Per-class packets, bytes and drops by reason, policer buckets, global data-plane counters, top flows, events by source and state, scheduler lag, enforcement latency.",
                        "content": { "text/plain; version=0.0.4": { "schema": { "type": "string", "maxLength": 16_777_216 } } }
                    },
                    "401": problem("Missing or unknown bearer token (with `WWW-Authenticate: Bearer`)."),
                    "403": problem("The token is not an admin token."),
                    "404": problem("This process serves no metrics."),
                    "500": problem("Reading the metrics failed.")
                }
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document.",
                "security": [],
                "responses": { "200": ok("OpenAPI 3.1 document.", json!({ "type": "object" })) }
            }
        }
    })
}

fn event_paths() -> Value {
    let json_body = |name: &str| json!({ "required": true, "content": { "application/json": { "schema": schema_ref(name) } } });
    let mut created = ok(
        "Accepted and stored; Location names the event.",
        schema_ref("Submitted"),
    );
    created["links"] = event_links();
    let mut retried = ok(
        "An idempotent retry: the original event's id, duplicate = true.",
        schema_ref("Submitted"),
    );
    retried["links"] = event_links();
    let id_400 = "The id is not an integer within 1..=9223372036854775807.";
    json!({
        "/v1/events": {
            "post": {
                "operationId": "createEvent",
                "summary": "Submit a QoS grant on one modem.",
                "description": "The source is the token's: csr/admin → csr{user}, subscriber → subscriber (own modem only), automation → automation{trigger}. The event is durable before the answer. An Idempotency-Key (scoped to the token's principal) makes retries safe.",
                "parameters": [ {
                    "name": "Idempotency-Key", "in": "header", "required": false,
                    "description": "1 to 200 visible ASCII characters.",
                    "schema": { "type": "string", "minLength": 1, "maxLength": 200, "pattern": "^[!-~]{1,200}$" }
                } ],
                "requestBody": json_body("CreateEvent"),
                "responses": responses(
                    &[("201", created), ("200", retried)],
                    body_errors(&[
                        ("403", "The role must name a catalogue level, or the level's monthly quota is used up."),
                        ("404", "Unknown modem."),
                        ("409", "The Idempotency-Key was used for a different request, or the committed rate does not fit the free capacity of the modem's links."),
                        ("422", "Invalid QoS, timing or level (an empty grant, committed above maximum, a stop not after the start or now, an unknown level, longer than the level allows, qos beside a level); `field` names it (e.g. qos.committed_down_bps, stop_ms, level)."),
                        ("503", "The store did not keep the request; nothing of it was applied (retry).")
                    ])
                )
            },
            "get": {
                "operationId": "listEvents",
                "summary": "List events, by id.",
                "description": "Subscriber tokens see only their own modem's events.",
                "parameters": [
                    { "name": "modem", "in": "query", "required": false, "schema": modem_id() },
                    { "name": "state", "in": "query", "required": false, "schema": schema_ref("EventState") }
                ],
                "responses": responses(
                    &[("200", ok("The events.", list("Event", None)))],
                    auth_errors(&[("400", "Unknown query parameter or state; `field` names it.")])
                )
            }
        },
        "/v1/events/{id}": {
            "get": {
                "operationId": "getEvent",
                "summary": "One event.",
                "parameters": [ event_id() ],
                "responses": responses(
                    &[("200", ok("The event.", schema_ref("Event")))],
                    auth_errors(&[("400", id_400), ("404", "Unknown event.")])
                )
            },
            "patch": {
                "operationId": "patchEvent",
                "summary": "Change a pending event's timing or grant.",
                "description": "Subscriber tokens may change only events they submitted, on their own modem.",
                "parameters": [ event_id() ],
                "requestBody": json_body("PatchEvent"),
                "responses": responses(
                    &[("200", ok("The amended event.", schema_ref("Event")))],
                    body_errors(&[
                        ("404", "Unknown event."),
                        ("409", "The event is no longer pending."),
                        ("422", "Invalid QoS or timing, or an empty patch; `field` names it.")
                    ])
                )
            },
            "delete": {
                "operationId": "cancelEvent",
                "summary": "Cancel a pending or active event (an active grant is reverted at once). The event stays readable, with state cancelled.",
                "description": "Subscriber tokens may cancel only events they submitted, on their own modem.",
                "parameters": [ event_id() ],
                "responses": responses(
                    &[("200", ok("The cancelled event.", schema_ref("Event")))],
                    auth_errors(&[
                        ("400", id_400),
                        ("404", "Unknown event."),
                        ("409", "The event is already completed or cancelled.")
                    ])
                )
            }
        }
    })
}

/// The document.
pub fn document() -> Value {
    let mut paths = modem_paths();
    let all = paths.as_object_mut().expect("object");
    all.extend(event_paths().as_object().expect("object").clone());
    let mut doc = json!({
        "openapi": "3.1.0",
        "info": {
            "title": "shaper",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Dynamic QoS for ISP access networks: provisioning events on modems. Every error is application/problem+json (RFC 9457). Starts and stops fire at the controller's tick, not in the request. Every integer and string in this document states the range the server accepts; a request outside it gets a 400 or 422 naming the field and the limit."
        },
        "security": [ { "bearer": [] } ],
        "paths": paths,
        "components": components()
    });
    let (paths, schemas) = nsm::document();
    doc["paths"]
        .as_object_mut()
        .expect("paths is an object")
        .extend(paths);
    doc["components"]["schemas"]
        .as_object_mut()
        .expect("schemas is an object")
        .extend(schemas);
    document_parameter_errors(&mut doc);
    doc
}

/// Every operation with a path or query parameter answers 400 when one is out of its bounds
/// (too long, a control character, an integer out of range): documented once, here, for all
/// of them, so no route can forget it.
fn document_parameter_errors(doc: &mut Value) {
    let Some(paths) = doc["paths"].as_object_mut() else {
        return;
    };
    for item in paths.values_mut() {
        let Some(ops) = item.as_object_mut() else {
            continue;
        };
        for op in ops.values_mut() {
            let has_params = op["parameters"]
                .as_array()
                .is_some_and(|ps| ps.iter().any(|p| p["in"] == "path" || p["in"] == "query"));
            if let (true, Some(responses)) = (has_params, op["responses"].as_object_mut()) {
                responses.entry("400").or_insert_with(|| {
                    problem("A path or query parameter is out of its bounds; `field` names it.")
                });
            }
        }
    }
}
