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
        "description": "A QoS level. As a grant, every field is optional and names only what it changes; unknown fields are refused.",
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
                    "field": { "type": "string", "description": "The offending field (JSON path in the body, path or query parameter, or header name), for 400 and 422." }
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
                        "description": "The modem pipeline's state; null when the pipeline is off or has made no file for the modem yet."
                    }
                }
            },
            "ModemPipeline": {
                "type": "object",
                "required": ["version", "file", "version_file", "last_reboot"],
                "properties": {
                    "version": { "type": "integer", "description": "Newest configuration-file version written (versions start at 1)." },
                    "file": { "type": "string", "description": "The stable file name (version 0): what DHCP hands the modem as its boot file; it always holds the newest version. Served by TFTP and at /files/{name}." },
                    "version_file": opt("string", "The file name of the newest version."),
                    "last_reboot": {
                        "oneOf": [ schema_ref("RebootRecord"), { "type": "null" } ],
                        "description": "The last reboot since the controller started; null if none yet."
                    }
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
                "required": ["name", "ok", "modem", "reason", "at_ms"],
                "properties": {
                    "name": { "type": "string", "description": "The file name in the incoming directory." },
                    "ok": { "type": "boolean", "description": "True: applied as the modem's base plan (moved to applied/); false: refused (moved to rejected/), nothing changed." },
                    "modem": opt("string", "The modem it named, when known."),
                    "reason": { "type": "string", "description": "Why it was refused (bad MIC, bad signature, malformed, unknown modem, …), or what was done." },
                    "at_ms": { "type": "integer" }
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
                    "created_ms": { "type": "integer" },
                    "start_due_ms": { "type": "integer", "description": "When the grant takes (took) effect." },
                    "state": schema_ref("EventState")
                }
            },
            "CreateEvent": {
                "type": "object",
                "required": ["modem", "qos"],
                "additionalProperties": false,
                "properties": {
                    "modem": { "type": "string" },
                    "qos": schema_ref("QosLevel"),
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
    json!({
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
                            ("409", "The Idempotency-Key was used for a different request."),
                            ("413", "Body too large."),
                            ("422", "Invalid QoS or timing; `field` names it (e.g. qos.priority, stop_ms).")
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
    })
}
