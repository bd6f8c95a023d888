//! Behaviours Schemathesis found against a live `shaper run` (tests/api_schema.rs), fixed in
//! the API layer.

use super::*;

#[tokio::test]
async fn integral_floats_are_integers_and_other_floats_name_the_field() {
    let rig = Rig::new("floats");
    // JSON Schema (and the document) call 50000000.0 an integer: it is accepted as one.
    let (s, _, v) = rig
        .call(
            "POST",
            "/v1/events",
            Some("t-csr"),
            Some(
                json!({ "modem": "cm1", "qos": { "max_down_bps": 50_000_000.0, "priority": 5e0 } }),
            ),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = v["id"].as_u64().unwrap();
    let (s, _, ev) = rig
        .call("GET", &format!("/v1/events/{id}"), Some("t-csr"), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{ev}");
    assert_eq!(ev["qos"]["max_down_bps"], 50_000_000, "{ev}");
    assert_eq!(ev["qos"]["priority"], 5, "{ev}");
    // A fraction, or a float beyond 2^53 (not exact), is still refused, naming the field.
    for (body, field) in [
        (
            json!({ "modem": "cm1", "qos": { "max_down_bps": 1.5 } }),
            "qos.max_down_bps",
        ),
        (
            json!({ "modem": "cm1", "qos": { "priority": 1e300 } }),
            "qos.priority",
        ),
        (
            json!({ "modem": "cm1", "qos": grant(), "stop_ms": 1e16 }),
            "stop_ms",
        ),
    ] {
        let (s, _, v) = rig
            .call("POST", "/v1/events", Some("t-csr"), Some(body.clone()))
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {v}");
        assert_eq!(v["field"], field, "{body}: {v}");
    }
}

#[tokio::test]
async fn event_ids_outside_the_documented_range_are_bad_requests() {
    let rig = Rig::new("idrange");
    for id in [
        "0",
        "9223372036854775808",
        "18446744073709551615",
        "-1",
        "x",
    ] {
        for method in ["GET", "DELETE"] {
            let (s, _, v) = rig
                .call(method, &format!("/v1/events/{id}"), Some("t-csr"), None)
                .await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "{method} {id}: {v}");
            assert_eq!(v["field"], "id", "{v}");
            assert!(
                v["detail"]
                    .as_str()
                    .unwrap()
                    .contains("1..=9223372036854775807"),
                "{v}"
            );
        }
    }
    let (s, _, v) = rig
        .call("GET", "/v1/events/9223372036854775807", Some("t-csr"), None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
}

#[tokio::test]
async fn an_empty_or_overlong_modem_filter_is_a_bad_request() {
    let rig = Rig::new("modemfilter");
    let long = "m".repeat(129);
    for q in ["", long.as_str()] {
        let (s, _, v) = rig
            .call("GET", &format!("/v1/events?modem={q}"), Some("t-csr"), None)
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{q:?}: {v}");
        assert_eq!(v["field"], "modem", "{v}");
        assert!(v["detail"].as_str().unwrap().contains("1 to 128"), "{v}");
    }
    let (s, _, v) = rig
        .call(
            "GET",
            &format!("/v1/events?modem={}", "m".repeat(128)),
            Some("t-csr"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
}
