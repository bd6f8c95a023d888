//! The OpenAPI 3.1 document served at `/openapi.json`, written by hand. It covers exactly the
//! routes in [`super::ROUTES`] (a test checks both directions).

use serde_json::{Value, json};

fn problem(description: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/problem+json": { "schema": { "$ref": "#/components/schemas/Problem" } } }
    })
}

fn ok(description: &str, schema: Value) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": schema } } })
}

fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn id_param(description: &str, schema: Value) -> Value {
    json!({ "name": "id", "in": "path", "required": true, "description": description, "schema": schema })
}

fn opt(ty: &str, description: &str) -> Value {
    json!({ "type": [ty, "null"], "description": description })
}

/// The common error responses of an authenticated route.
fn auth_errors(extra: &[(&str, &str)]) -> serde_json::Map<String, Value> {
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
        "503".into(),
        problem("The controller is poisoned and must be reopened from its store."),
    );
    for (code, desc) in extra {
        m.insert((*code).into(), problem(desc));
    }
    m
}

fn responses(success: &[(&str, Value)], errors: serde_json::Map<String, Value>) -> Value {
    let mut m = errors;
    for (code, v) in success {
        m.insert((*code).into(), v.clone());
    }
    Value::Object(m)
}

fn qos_schema() -> Value {
    json!({
        "type": "object",
        "description": "A QoS level; unknown fields are refused. As a grant, every field is optional and names only what it changes; as a base plan (PUT /v1/modems/{id}/base) it is the whole plan: an absent field is unset.",
        "additionalProperties": false,
        "properties": {
            "max_up_bps": opt("integer", "Maximum rate modem → network, bit/s (8..=policy maximum)."),
            "max_down_bps": opt("integer", "Maximum rate network → modem, bit/s."),
            "committed_up_bps": opt("integer", "Committed rate upstream, bit/s (≤ max_up_bps when both are set)."),
            "committed_down_bps": opt("integer", "Committed rate downstream, bit/s."),
            "burst_bytes": opt("integer", "Token-bucket depth, bytes (≥ the MTU, or 1500)."),
            "priority": opt("integer", "Traffic priority 0..=7, higher is better."),
            "mtu": opt("integer", "L3 MTU, bytes (≥ 1280)."),
            "targets": schema_ref("ServiceTargets")
        }
    })
}

fn components() -> Value {
    json!({
        "securitySchemes": {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "Opaque token; the controller stores only its SHA-256. Roles: admin, csr, subscriber (own modem only), provider (own applications only: no modem or event route), automation."
            }
        },
        "schemas": {
            "Problem": {
                "type": "object",
                "description": "RFC 9457 problem details.",
                "required": ["type", "title", "status", "detail"],
                "properties": {
                    "type": { "type": "string", "format": "uri-reference" },
                    "title": { "type": "string" },
                    "status": { "type": "integer" },
                    "detail": { "type": "string" },
                    "field": { "type": "string", "description": "The offending field (JSON path in the body, path or query parameter, or header name), for 400 and 422." },
                    "reason": { "type": "string", "description": "Why the network service manager refused (capacity_exceeded, session_not_available, ...)." },
                    "result_code": { "type": "integer", "description": "The 3GPP Rx / Diameter result code of the refusal (5006, 5061, 5063, 5065)." }
                }
            },
            "ServiceTargets": {
                "type": "object",
                "additionalProperties": false,
                "properties": {
                    "availability_ppm": opt("integer", "Availability, parts per million (≤ 1000000)."),
                    "error_rate_ppm": opt("integer", "Errored-packet ratio, ppm."),
                    "loss_ppm": opt("integer", "Loss ratio under congestion, ppm."),
                    "setup_time_ms": opt("integer", "Connection setup time, ms (> 0)."),
                    "repair_time_ms": opt("integer", "Fault repair time, ms (> 0).")
                }
            },
            "QosLevel": qos_schema(),
            "Modem": {
                "type": "object",
                "required": ["id", "base", "effective", "bound"],
                "properties": {
                    "id": { "type": "string" },
                    "base": schema_ref("QosLevel"),
                    "effective": { "$ref": "#/components/schemas/QosLevel", "description": "Base plan with the active grants layered on it, normalized." },
                    "bound": { "type": "boolean", "description": "Whether the modem has a data-plane binding (unbound modems are not enforced)." },
                    "pipeline": {
                        "oneOf": [ schema_ref("ModemPipeline"), { "type": "null" } ],
                        "description": "The modem pipeline's state; null when the pipeline is off or has neither made nor failed to make a file for the modem yet."
                    }
                }
            },
            "BaseSource": {
                "description": "Who replaced a base plan.",
                "oneOf": [
                    { "type": "object", "required": ["kind", "role", "subject"], "properties": { "kind": { "const": "api" }, "role": { "type": "string", "description": "The token's role." }, "subject": { "type": "string", "description": "The token's subject (user or trigger name)." } } },
                    { "type": "object", "required": ["kind"], "properties": { "kind": { "const": "config" } }, "description": "The configuration file's plan, edited since the last run, applied at start." },
                    { "type": "object", "required": ["kind", "name"], "properties": { "kind": { "const": "file" }, "name": { "type": "string", "description": "The DOCSIS file dropped in the incoming directory." } } }
                ]
            },
            "ModemAuditEntry": {
                "type": "object",
                "required": ["at_ms", "by", "old", "new"],
                "properties": {
                    "at_ms": { "type": "integer", "description": "When, ms since the Unix epoch." },
                    "by": schema_ref("BaseSource"),
                    "old": schema_ref("QosLevel"),
                    "new": schema_ref("QosLevel")
                }
            },
            "ModemPipeline": {
                "type": "object",
                "required": ["version", "file", "version_file", "last_reboot", "failing", "file_failure", "reboot_failure"],
                "properties": {
                    "version": { "type": "integer", "description": "Newest configuration-file version written (versions start at 1)." },
                    "file": { "type": "string", "description": "The stable file name (version 0): what DHCP hands the modem as its boot file; it always holds the newest version. Served by TFTP and at /files/{name}." },
                    "version_file": opt("string", "The file name of the newest version."),
                    "last_reboot": {
                        "oneOf": [ schema_ref("RebootRecord"), { "type": "null" } ],
                        "description": "The last reboot since the controller started; null if none yet."
                    },
                    "failing": { "type": "boolean", "description": "Whether file_failure or reboot_failure is set." },
                    "file_failure": {
                        "oneOf": [ schema_ref("PipelineFailure"), { "type": "null" } ],
                        "description": "Building or writing the file of the modem's current level fails (the modem keeps its previous file); null otherwise."
                    },
                    "reboot_failure": {
                        "oneOf": [ schema_ref("PipelineFailure"), { "type": "null" } ],
                        "description": "Rebooting the modem onto its newest file fails; null otherwise."
                    }
                }
            },
            "PipelineFailure": {
                "type": "object",
                "description": "A failing pipeline stage, retried with exponential backoff (1 s doubling to 5 min).",
                "required": ["stage", "last_error", "failing_since_ms", "attempts", "next_retry_ms"],
                "properties": {
                    "stage": { "type": "string", "enum": ["build", "deliver", "reboot"] },
                    "last_error": { "type": "string", "description": "The newest attempt's error." },
                    "failing_since_ms": { "type": "integer", "description": "When the first failed attempt ended, ms since the Unix epoch." },
                    "attempts": { "type": "integer", "description": "Failed attempts since then." },
                    "next_retry_ms": opt("integer", "When the next attempt is due, ms since the Unix epoch; null: not retried until the modem's level or the configuration changes.")
                }
            },
            "RebootRecord": {
                "type": "object",
                "required": ["method", "ok", "skipped", "attempts", "last_error", "at_ms", "version"],
                "properties": {
                    "method": { "type": "string", "enum": ["snmp", "forcerenew", "command", "none"] },
                    "ok": { "type": "boolean" },
                    "skipped": { "type": "boolean", "description": "The modem has no reboot method: nothing was sent." },
                    "attempts": { "type": "integer", "description": "Attempts made (retries with exponential backoff)." },
                    "last_error": opt("string", "The last attempt's error, when it failed."),
                    "at_ms": { "type": "integer", "description": "When it finished, ms since the Unix epoch." },
                    "version": { "type": "integer", "description": "The file version it delivered." }
                }
            },
            "ModemFile": {
                "type": "object",
                "required": ["name", "ok", "modem", "reason", "at_ms", "moved_to"],
                "properties": {
                    "name": { "type": "string", "description": "The file name in the incoming directory." },
                    "ok": { "type": "boolean", "description": "True: applied as the modem's base plan (moved to applied/); false: refused (moved to rejected/), nothing changed." },
                    "modem": opt("string", "The modem it named, when known."),
                    "reason": { "type": "string", "description": "Why it was refused (bad MIC, bad signature, malformed, unknown modem, not a regular file, over 1 MiB, …), or what was done." },
                    "at_ms": { "type": "integer" },
                    "moved_to": opt("string", "Where it went, relative to the incoming directory (rejected/x.cfg; rejected/x.cfg.<ms> when that name was taken: nothing there is replaced); null: it could not be moved (the reason says why), and it is not handled again until it changes.")
                }
            },
            "Source": {
                "oneOf": [
                    { "type": "object", "required": ["kind", "user"], "properties": { "kind": { "const": "csr" }, "user": { "type": "string" } } },
                    { "type": "object", "required": ["kind"], "properties": { "kind": { "const": "subscriber" } } },
                    { "type": "object", "required": ["kind", "trigger"], "properties": { "kind": { "const": "automation" }, "trigger": { "type": "string" } } }
                ]
            },
            "EventState": { "type": "string", "enum": ["pending", "active", "completed", "cancelled"] },
            "Event": {
                "type": "object",
                "required": ["id", "modem", "source", "qos", "start_ms", "stop_ms", "idempotency_key", "created_ms", "start_due_ms", "state"],
                "properties": {
                    "id": { "type": "integer" },
                    "modem": { "type": "string" },
                    "source": schema_ref("Source"),
                    "qos": schema_ref("QosLevel"),
                    "start_ms": opt("integer", "Requested start, ms since the Unix epoch; null = immediate."),
                    "stop_ms": opt("integer", "Requested stop; null = until cancelled."),
                    "idempotency_key": opt("string", "The Idempotency-Key it was submitted with."),
                    "level": opt("string", "The grant catalogue level it was asked as, if any."),
                    "created_ms": { "type": "integer" },
                    "start_due_ms": { "type": "integer", "description": "When the grant takes (took) effect." },
                    "state": schema_ref("EventState")
                }
            },
            "CreateEvent": {
                "type": "object",
                "required": ["modem"],
                "additionalProperties": false,
                "description": "Exactly one of qos and level.",
                "properties": {
                    "modem": { "type": "string", "minLength": 1, "maxLength": 128 },
                    "qos": schema_ref("QosLevel"),
                    "level": { "type": "string", "minLength": 1, "maxLength": 64, "description": "A level of the grant catalogue (GET /v1/catalogue): its grant, maximum duration and monthly quota. Subscribers (and CSRs, with controller.grants.csr_from_catalogue) must name one." },
                    "start_ms": opt("integer", "Start, ms since the Unix epoch; absent or null = immediate (at the controller's next tick)."),
                    "stop_ms": opt("integer", "Stop; absent or null = until cancelled. Must be after start_ms and now.")
                }
            },
            "PatchEvent": {
                "type": "object",
                "additionalProperties": false,
                "minProperties": 1,
                "description": "Fields present replace the event's (null: immediate start / no stop); qos replaces the whole grant.",
                "properties": {
                    "start_ms": opt("integer", "New start."),
                    "stop_ms": opt("integer", "New stop."),
                    "qos": schema_ref("QosLevel")
                }
            },
            "Submitted": {
                "type": "object",
                "required": ["id", "duplicate"],
                "properties": {
                    "id": { "type": "integer" },
                    "duplicate": { "type": "boolean", "description": "True for an idempotent retry: nothing new was created." }
                }
            }
        }
    })
}

/// The document.
pub fn document() -> Value {
    let event_id = id_param("Event id.", json!({ "type": "integer", "minimum": 0 }));
    let json_body = |name: &str| json!({ "required": true, "content": { "application/json": { "schema": schema_ref(name) } } });
    let mut doc = json!({
        "openapi": "3.1.0",
        "info": {
            "title": "shaper",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Dynamic QoS for ISP access networks: provisioning events on modems. Every error is application/problem+json (RFC 9457). Starts and stops fire at the controller's tick, not in the request."
        },
        "security": [ { "bearer": [] } ],
        "paths": {
            "/v1/modems/{id}": {
                "get": {
                    "operationId": "getModem",
                    "summary": "A modem's base plan, effective QoS and binding state.",
                    "description": "Roles: admin, csr, automation; subscriber for its own modem only.",
                    "parameters": [ id_param("Modem id.", json!({ "type": "string" })) ],
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
                    "parameters": [ id_param("Modem id.", json!({ "type": "string" })) ],
                    "requestBody": json_body("QosLevel"),
                    "responses": responses(
                        &[("200", ok("The modem after the change.", schema_ref("Modem")))],
                        auth_errors(&[
                            ("400", "Malformed JSON, an unknown field or Content-Type; `field` names it."),
                            ("404", "Unknown modem."),
                            ("413", "Body too large."),
                            ("422", "Invalid plan (a rate below 8 bit/s or above the maximum, committed above maximum, burst below one MTU, ...); `field` names it (e.g. max_down_bps).")
                        ])
                    )
                }
            },
            "/v1/modems/{id}/audit": {
                "get": {
                    "operationId": "getModemAudit",
                    "summary": "Who replaced the modem's base plan, when, from what to what; oldest first.",
                    "description": "Roles: admin, csr. Changes by the API, by a dropped DOCSIS file, and by the configuration file (applied at start when its plan was edited) are listed; the plan a modem was created with is not a change.",
                    "parameters": [ id_param("Modem id.", json!({ "type": "string" })) ],
                    "responses": responses(
                        &[("200", ok("The trail.", json!({ "type": "array", "items": schema_ref("ModemAuditEntry") })))],
                        auth_errors(&[("404", "Unknown modem.")])
                    )
                }
            },
            "/v1/events": {
                "post": {
                    "operationId": "createEvent",
                    "summary": "Submit a QoS grant on one modem.",
                    "description": "The source is the token's: csr/admin → csr{user}, subscriber → subscriber (own modem only), automation → automation{trigger}. The event is durable before the answer. An Idempotency-Key (scoped to the token's principal) makes retries safe.",
                    "parameters": [ {
                        "name": "Idempotency-Key", "in": "header", "required": false,
                        "description": "1 to 200 visible ASCII characters.",
                        "schema": { "type": "string", "minLength": 1, "maxLength": 200 }
                    } ],
                    "requestBody": json_body("CreateEvent"),
                    "responses": responses(
                        &[
                            ("201", ok("Accepted and stored; Location names the event.", schema_ref("Submitted"))),
                            ("200", ok("An idempotent retry: the original event's id, duplicate = true.", schema_ref("Submitted")))
                        ],
                        auth_errors(&[
                            ("400", "Malformed JSON, body shape, Content-Type or Idempotency-Key; `field` names it."),
                            ("404", "Unknown modem."),
                            ("403", "The role must name a catalogue level, or the level's monthly quota is used up."),
                            ("409", "The Idempotency-Key was used for a different request, or the committed rate does not fit the links' free capacity."),
                            ("413", "Body too large."),
                            ("422", "Invalid QoS, timing or level; `field` names it (e.g. qos.priority, stop_ms, level)."),
                            ("503", "The store did not keep the request; nothing of it was applied.")
                        ])
                    )
                },
                "get": {
                    "operationId": "listEvents",
                    "summary": "List events, by id.",
                    "description": "Subscriber tokens see only their own modem's events.",
                    "parameters": [
                        { "name": "modem", "in": "query", "required": false, "schema": { "type": "string" } },
                        { "name": "state", "in": "query", "required": false, "schema": schema_ref("EventState") }
                    ],
                    "responses": responses(
                        &[("200", ok("The events.", json!({ "type": "array", "items": schema_ref("Event") })))],
                        auth_errors(&[("400", "Unknown query parameter or state; `field` names it.")])
                    )
                }
            },
            "/v1/events/{id}": {
                "get": {
                    "operationId": "getEvent",
                    "summary": "One event.",
                    "parameters": [ event_id.clone() ],
                    "responses": responses(
                        &[("200", ok("The event.", schema_ref("Event")))],
                        auth_errors(&[("400", "The id is not an integer."), ("404", "Unknown event.")])
                    )
                },
                "patch": {
                    "operationId": "patchEvent",
                    "summary": "Change a pending event's timing or grant.",
                    "description": "Subscriber tokens may change only events they submitted, on their own modem.",
                    "parameters": [ event_id.clone() ],
                    "requestBody": json_body("PatchEvent"),
                    "responses": responses(
                        &[("200", ok("The amended event.", schema_ref("Event")))],
                        auth_errors(&[
                            ("400", "Malformed JSON or id; `field` names it."),
                            ("404", "Unknown event."),
                            ("409", "The event is no longer pending."),
                            ("413", "Body too large."),
                            ("422", "Invalid QoS or timing, or an empty patch; `field` names it.")
                        ])
                    )
                },
                "delete": {
                    "operationId": "cancelEvent",
                    "summary": "Cancel a pending or active event (an active grant is reverted at once).",
                    "description": "Subscriber tokens may cancel only events they submitted, on their own modem.",
                    "parameters": [ event_id ],
                    "responses": responses(
                        &[("200", ok("The cancelled event.", schema_ref("Event")))],
                        auth_errors(&[
                            ("400", "The id is not an integer."),
                            ("404", "Unknown event."),
                            ("409", "The event is already completed or cancelled.")
                        ])
                    )
                }
            },
            "/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "summary": "This document.",
                    "security": [],
                    "responses": { "200": ok("OpenAPI 3.1 document.", json!({ "type": "object" })) }
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
                                "max_per_month": { "type": ["integer", "null"], "minimum": 1, "maximum": 4294967295u64 },
                                "levels": { "type": "array", "items": {
                                    "type": "object",
                                    "required": ["name", "qos", "max_duration_s", "per_month"],
                                    "properties": {
                                        "name": { "type": "string", "minLength": 1, "maxLength": 64 },
                                        "qos": schema_ref("QosLevel"),
                                        "max_duration_s": { "type": "integer", "minimum": 1, "maximum": 253402300799u64 },
                                        "per_month": { "type": ["integer", "null"], "minimum": 1, "maximum": 4294967295u64 }
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
                        &[("200", ok("The files.", json!({ "type": "array", "items": schema_ref("ModemFile") })))],
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
                    "parameters": [ { "name": "name", "in": "path", "required": true, "schema": { "type": "string" } } ],
                    "responses": {
                        "200": { "description": "The file.", "content": { "application/octet-stream": { "schema": { "type": "string", "contentMediaType": "application/octet-stream" } } } },
                        "404": problem("No such file, or the modem pipeline is off.")
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
                            "content": { "text/plain; version=0.0.4": { "schema": { "type": "string" } } }
                        },
                        "401": problem("Missing or unknown bearer token (with `WWW-Authenticate: Bearer`)."),
                        "403": problem("The token is not an admin token."),
                        "404": problem("This process serves no metrics."),
                        "500": problem("Reading the metrics failed.")
                    }
                }
            }
        },
        "components": components()
    });
    let (paths, schemas) = nsm_document();
    doc["paths"]
        .as_object_mut()
        .expect("paths is an object")
        .extend(paths);
    doc["components"]["schemas"]
        .as_object_mut()
        .expect("schemas is an object")
        .extend(schemas);
    doc
}

/// The network service manager's paths and schemas (issue 5; roles in [`super::nsm`]).
#[allow(
    clippy::too_many_lines,
    reason = "one JSON literal per route, kept together"
)]
fn nsm_document() -> (
    serde_json::Map<String, Value>,
    serde_json::Map<String, Value>,
) {
    let json_body = |name: &str| json!({ "required": true, "content": { "application/json": { "schema": schema_ref(name) } } });
    let pid = id_param("Provider id.", json!({ "type": "string" }));
    let app_param = json!({ "name": "app", "in": "path", "required": true, "description": "Application id.", "schema": { "type": "string" } });
    let alloc_param = json!({ "name": "alloc", "in": "path", "required": true, "description": "Allocation id.", "schema": { "type": "integer", "minimum": 0 } });
    let list = |name: &str| json!({ "type": "array", "items": schema_ref(name) });
    let refused = "Refused by the network service manager: `reason` (capacity_exceeded, link_not_registered, session_not_available, dataplane_exhausted) and the 3GPP Rx `result_code` (5006, 5065) are in the problem; the detail names the link or session, what was requested and what is left.";
    let invalid = "Invalid or not entitled (`reason` invalid_service_information 5061, service_not_authorized 5063, unknown_application 5061); `field` names the offending field.";
    let paths = json!({
        "/v1/providers": {
            "get": {
                "operationId": "listProviders", "summary": "Registered providers (webhook secrets are never shown). Roles: admin, csr.",
                "responses": responses(&[("200", ok("The providers.", list("Provider")))], auth_errors(&[("404", "No network service manager runs.")]))
            }
        },
        "/v1/providers/{id}": {
            "put": {
                "operationId": "putProvider", "summary": "Register or change a provider. Role: admin.",
                "parameters": [ pid.clone() ], "requestBody": json_body("ProviderBody"),
                "responses": responses(&[("200", ok("The provider.", schema_ref("Provider")))], auth_errors(&[("400", "Malformed body; `field` names it."), ("404", "No network service manager runs."), ("422", "Invalid field (prefix, webhook URL or secret), or the new prefixes would leave an application outside them.")]))
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
                "responses": responses(&[("200", ok("The applications.", list("Application")))], auth_errors(&[("404", "Unknown provider.")]))
            }
        },
        "/v1/providers/{id}/applications/{app}": {
            "put": {
                "operationId": "putApplication", "summary": "Register or change an application (its traffic classifiers). Role: admin.",
                "parameters": [ pid.clone(), app_param.clone() ], "requestBody": json_body("ApplicationBody"),
                "responses": responses(&[("200", ok("The application.", schema_ref("Application")))], auth_errors(&[("400", "Malformed body."), ("404", "Unknown provider."), ("409", "Active allocations use the application."), ("422", "A classifier is malformed or reaches outside the provider's prefixes; `field` names it (classifiers[i].provider_prefix).")]))
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
                "responses": responses(&[("201", ok("Admitted; Location names it.", schema_ref("Allocation")))], auth_errors(&[("400", "Malformed body; `field` names it."), ("404", "Unknown provider."), ("409", refused), ("422", invalid)]))
            },
            "get": {
                "operationId": "listAllocations", "summary": "A provider's allocations, active and released. Roles: admin, csr; provider: own.",
                "parameters": [ pid.clone(), { "name": "state", "in": "query", "required": false, "schema": { "type": "string", "enum": ["active", "released"] } } ],
                "responses": responses(&[("200", ok("The allocations.", list("Allocation")))], auth_errors(&[("400", "Unknown query parameter."), ("404", "Unknown provider.")]))
            }
        },
        "/v1/providers/{id}/allocations/{alloc}": {
            "get": {
                "operationId": "getAllocation", "summary": "One allocation of the provider. Roles: admin, csr; provider: own.",
                "parameters": [ pid.clone(), alloc_param.clone() ],
                "responses": responses(&[("200", ok("The allocation.", schema_ref("Allocation")))], auth_errors(&[("400", "The id is not an integer."), ("404", "The provider has no such allocation.")]))
            },
            "delete": {
                "operationId": "releaseAllocation", "summary": "Release an allocation: capacity is freed, enforcement removed, targets notified (3GPP STR). Roles: admin, csr; provider: own.",
                "parameters": [ pid.clone(), alloc_param ],
                "responses": responses(&[("200", ok("The released allocation.", schema_ref("Allocation")))], auth_errors(&[("400", "The id is not an integer."), ("404", "The provider has no such allocation."), ("409", "Already released.")]))
            }
        },
        "/v1/providers/{id}/deliveries": {
            "get": {
                "operationId": "listDeliveries", "summary": "The provider's delivery log: its webhook (attempts, status, last HTTP status and error) and the RADIUS CoA to the BRAS of its allocations (url radius-coa://<bras>?session=<id>, last_code the RADIUS code: 44 CoA-ACK, 45 CoA-NAK). Roles: admin; provider: own.",
                "parameters": [ pid ],
                "responses": responses(&[("200", ok("The deliveries.", list("Delivery")))], auth_errors(&[("404", "Unknown provider.")]))
            }
        },
        "/v1/links": {
            "get": {
                "operationId": "listLinks", "summary": "Links and gateways with capacity, committed rates and limits. Roles: admin, csr, automation.",
                "responses": responses(&[("200", ok("The links.", list("LinkUsage")))], auth_errors(&[("404", "No network service manager runs.")]))
            }
        },
        "/v1/links/{id}": {
            "put": {
                "operationId": "putLink", "summary": "Register a link or gateway or change its capacity. Role: admin.",
                "parameters": [ id_param("Link id (a session's gateway or bras names it).", json!({ "type": "string" })) ], "requestBody": json_body("LinkBody"),
                "responses": responses(&[("200", ok("The link.", schema_ref("Link")))], auth_errors(&[("400", "Malformed body."), ("422", "A capacity is 0 or above 400 Gbit/s; `field` names it.")]))
            }
        },
        "/v1/sessions": {
            "get": {
                "operationId": "listSessions", "summary": "Active sessions, optionally by subscriber or address. Roles: admin, automation.",
                "parameters": [
                    { "name": "subscriber", "in": "query", "required": false, "schema": { "type": "string" } },
                    { "name": "ip", "in": "query", "required": false, "schema": { "type": "string" } }
                ],
                "responses": responses(&[("200", ok("The sessions.", list("Session")))], auth_errors(&[("400", "Unknown query parameter or bad address.")]))
            }
        },
        "/v1/sessions/{id}": {
            "put": {
                "operationId": "putSession", "summary": "Start or change a subscriber session. A change of address, subscriber, BRAS or gateway releases the allocations admitted on it. Roles: admin, automation.",
                "parameters": [ id_param("Session id (e.g. RADIUS Acct-Session-Id).", json!({ "type": "string" })) ], "requestBody": json_body("SessionBody"),
                "responses": responses(&[("200", ok("The session.", schema_ref("Session")))], auth_errors(&[("400", "Malformed body."), ("409", "Another active session holds the address."), ("422", "Invalid field (prefix: IPv4 /32, IPv6 /128 or /64).")]))
            },
            "get": {
                "operationId": "getSession", "summary": "One active session. Roles: admin, automation.",
                "parameters": [ id_param("Session id.", json!({ "type": "string" })) ],
                "responses": responses(&[("200", ok("The session.", schema_ref("Session")))], auth_errors(&[("404", "No active session with this id.")]))
            },
            "delete": {
                "operationId": "endSession", "summary": "End a session; its allocations are released. Roles: admin, automation.",
                "parameters": [ id_param("Session id.", json!({ "type": "string" })) ],
                "responses": responses(&[("200", ok("The ended session.", schema_ref("Session")))], auth_errors(&[("404", "No active session with this id.")]))
            }
        }
    });
    let classifier = json!({
        "type": "object", "additionalProperties": false,
        "required": ["direction", "provider_prefix"],
        "description": "Literal packet fields of one direction: down = to the subscriber (provider side is the source), up = from the subscriber. The subscriber side is scoped by each allocation.",
        "properties": {
            "direction": { "type": "string", "enum": ["up", "down"] },
            "proto": opt("integer", "IP protocol number (6, 17, 132 carry ports); null = any."),
            "provider_prefix": { "type": "string", "description": "Provider-side prefix; must lie in the provider's prefixes." },
            "provider_ports": opt("string", "\"443\" or \"5000-5100\"; null = any."),
            "subscriber_ports": opt("string", "Subscriber-side port range; null = any.")
        }
    });
    let schemas = json!({
        "ProviderBody": {
            "type": "object", "additionalProperties": false, "required": ["kind", "name"],
            "properties": {
                "kind": { "type": "string", "enum": ["asp", "nsp"] },
                "name": { "type": "string" },
                "prefixes": { "type": "array", "items": { "type": "string" }, "description": "The provider's server prefixes (entitlement)." },
                "webhook_url": opt("string", "http:// URL allocation notices are POSTed to."),
                "webhook_secret": opt("string", "HMAC-SHA256 key (≥ 16 characters) of X-Shaper-Signature: sha256=<hex>. Write-only.")
            }
        },
        "Provider": {
            "type": "object",
            "properties": {
                "id": { "type": "string" }, "kind": { "type": "string", "enum": ["asp", "nsp"] }, "name": { "type": "string" },
                "prefixes": { "type": "array", "items": { "type": "string" } },
                "webhook_url": opt("string", "Webhook URL."),
                "webhook_secret_set": { "type": "boolean" }
            }
        },
        "Classifier": classifier,
        "ApplicationBody": {
            "type": "object", "additionalProperties": false, "required": ["name", "classifiers"],
            "properties": { "name": { "type": "string" }, "classifiers": { "type": "array", "minItems": 1, "items": schema_ref("Classifier") } }
        },
        "Application": {
            "type": "object",
            "properties": { "provider": { "type": "string" }, "id": { "type": "string" }, "name": { "type": "string" }, "classifiers": { "type": "array", "items": schema_ref("Classifier") } }
        },
        "AllocationRequest": {
            "type": "object", "additionalProperties": false, "required": ["application", "scope"],
            "properties": {
                "application": { "type": "string" },
                "scope": {
                    "type": "object", "additionalProperties": false,
                    "description": "A subscriber (all its sessions), an address (its session), or both (the address must be the subscriber's).",
                    "properties": { "subscriber": opt("string", "Subscriber id."), "ip": opt("string", "IPv4 or IPv6 address.") }
                },
                "down_bps": opt("integer", "Committed rate to the subscriber, bit/s (charged against capacity)."),
                "up_bps": opt("integer", "Committed rate from the subscriber, bit/s."),
                "ceil_down_bps": opt("integer", "Shaping ceiling (≥ the rate); the policer polices at it."),
                "ceil_up_bps": opt("integer", "Shaping ceiling upstream."),
                "burst_bytes": opt("integer", "Token-bucket depth (≥ one frame); default 250 ms of the ceiling."),
                "priority": { "type": "integer", "minimum": 0, "maximum": 7, "description": "Higher is better: DSCP (RFC 4594 classes) and HTB prio 7 − priority." },
                "dscp": opt("integer", "DSCP 0..=63 instead of the priority's."),
                "max_delay_ms": opt("integer", "Delay target, carried to BRAS and provider."),
                "max_loss_ppm": opt("integer", "Loss target, carried to BRAS and provider."),
                "mtu": opt("integer", "L3 MTU policy (≥ 1280): MSS clamp and ICMP too-big.")
            }
        },
        "Allocation": {
            "type": "object",
            "properties": {
                "id": { "type": "integer" }, "provider": { "type": "string" }, "request": schema_ref("AllocationRequest"),
                "sessions": { "type": "array", "items": { "type": "string" } },
                "charges": { "type": "array", "items": { "type": "object", "properties": { "link": { "type": "string" }, "dir": { "type": "string", "enum": ["up", "down"] }, "bps": { "type": "integer" } } } },
                "dscp": { "type": "integer" },
                "state": { "type": "string", "enum": ["active", "released"] },
                "created_ms": { "type": "integer" },
                "released_ms": opt("integer", "When released."),
                "release_reason": opt("string", "Why released.")
            }
        },
        "Delivery": {
            "type": "object",
            "properties": {
                "id": { "type": "integer" }, "provider": { "type": "string" }, "allocation": { "type": "integer" },
                "event": { "type": "string", "enum": ["allocated", "released"] }, "url": { "type": "string" },
                "attempts": { "type": "integer" }, "status": { "type": "string", "enum": ["pending", "delivered", "failed"] },
                "last_code": opt("integer", "Last HTTP status (webhook) or RADIUS response code (radius-coa)."), "last_error": opt("string", "Last error."),
                "created_ms": { "type": "integer" }, "updated_ms": { "type": "integer" }
            }
        },
        "LinkBody": {
            "type": "object", "additionalProperties": false, "required": ["kind", "capacity_up_bps", "capacity_down_bps"],
            "properties": {
                "kind": { "type": "string", "enum": ["gateway", "bras", "link"] },
                "capacity_up_bps": { "type": "integer", "minimum": 1 },
                "capacity_down_bps": { "type": "integer", "minimum": 1 }
            }
        },
        "Link": {
            "type": "object",
            "properties": { "id": { "type": "string" }, "kind": { "type": "string" }, "capacity_up_bps": { "type": "integer" }, "capacity_down_bps": { "type": "integer" } }
        },
        "LinkUsage": {
            "type": "object",
            "properties": {
                "id": { "type": "string" }, "kind": { "type": "string" },
                "capacity_up_bps": { "type": "integer" }, "capacity_down_bps": { "type": "integer" },
                "committed_up_bps": { "type": "integer" }, "committed_down_bps": { "type": "integer" },
                "limit_up_bps": { "type": "integer", "description": "capacity × overbooking" }, "limit_down_bps": { "type": "integer" }
            }
        },
        "SessionBody": {
            "type": "object", "additionalProperties": false, "required": ["subscriber", "prefix", "bras", "gateway"],
            "properties": {
                "subscriber": { "type": "string" },
                "prefix": { "type": "string", "description": "IPv4 address, IPv6 address (/128) or IPv6 /64." },
                "bras": { "type": "string" }, "gateway": { "type": "string" },
                "since_ms": opt("integer", "Start; default now.")
            }
        },
        "Session": {
            "type": "object",
            "properties": {
                "id": { "type": "string" }, "subscriber": { "type": "string" }, "prefix": { "type": "string" },
                "bras": { "type": "string" }, "gateway": { "type": "string" }, "since_ms": { "type": "integer" },
                "ended_ms": opt("integer", "When it ended.")
            }
        }
    });
    (
        paths.as_object().expect("object").clone(),
        schemas.as_object().expect("object").clone(),
    )
}
