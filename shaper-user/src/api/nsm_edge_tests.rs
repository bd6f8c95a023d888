//! API tests of the network service manager's edge: data-plane limits refused with 409 and
//! nothing left behind, out-of-range ids, bounded strings and collections, link capacity
//! below what is committed, sessions behind unknown gateways, one Authorization header, and
//! problem bodies for what hyper refuses before the router (a real server on loopback).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceExt;

use super::nsm_tests::Rig;
use crate::dataplane::rules::compile;
use crate::nsm::{AllocEnforceError, AllocationTarget, EnforcePlan, NsmConfig};
use crate::policy::Rule;

/// A data plane standing in for the real one's rule tables: it lays every rule set out with
/// the data plane's own compiler ([`compile`]), so a set it cannot hold (more than 8 rules on
/// one (protocol, source, destination) key) is refused with the error the real one gives.
#[derive(Clone, Default)]
struct RuleTables {
    applied: Arc<Mutex<BTreeMap<u64, Vec<Rule>>>>,
}

impl AllocationTarget for RuleTables {
    fn apply(&mut self, plan: &EnforcePlan) -> Result<(), AllocEnforceError> {
        let mut applied = self.applied.lock().unwrap();
        let mut set: Vec<Rule> = applied.values().flatten().copied().collect();
        let mut rules = Vec::new();
        for (prefix, cs) in &plan.scopes {
            for c in cs.iter().filter(|c| plan_rate(plan, c.direction) > 0) {
                let (proto, src, dst, sport, dport) = c.fields(*prefix);
                // Distinct ids (and precedences): the allocation's id, then its rule's index.
                let index = u32::try_from(rules.len()).unwrap();
                let id = u32::try_from(plan.id).unwrap() * 100 + index + 1;
                rules.push(Rule {
                    id,
                    proto,
                    src,
                    dst,
                    sport,
                    dport,
                    precedence: id,
                    class: 1,
                });
            }
        }
        set.extend(rules.iter().copied());
        compile(&set, 0, 0).map_err(|e| AllocEnforceError::Rules {
            id: plan.id,
            source: e.into(),
        })?;
        applied.insert(plan.id, rules);
        Ok(())
    }

    fn remove(&mut self, id: u64) -> Result<(), AllocEnforceError> {
        self.applied.lock().unwrap().remove(&id);
        Ok(())
    }
}

fn plan_rate(plan: &EnforcePlan, dir: crate::nsm::model::Dir) -> u64 {
    match dir {
        crate::nsm::model::Dir::Up => plan.rate_up,
        crate::nsm::model::Dir::Down => plan.rate_down,
    }
}

async fn committed_down(rig: &Rig) -> Value {
    let (_, links) = rig.call("GET", "/v1/links", Some("t-admin"), None).await;
    links[0]["committed_down_bps"].clone()
}

#[tokio::test]
async fn the_ninth_allocation_on_one_rule_key_is_409_and_leaves_nothing_behind() {
    let tables = RuleTables::default();
    let rig = Rig::with("rule-key", NsmConfig::default(), Box::new(tables.clone()));
    rig.seed().await;
    // Each allocation for 198.18.0.10 is one down rule on the key (17, 198.19.0.0/24,
    // 198.18.0.10/32); the data plane holds 8 per key.
    let body = json!({ "application": "app", "scope": { "ip": "198.18.0.10" }, "down_bps": 1000 });
    for i in 0..8 {
        let (s, a) = rig
            .call(
                "POST",
                "/v1/providers/p1/allocations",
                Some("t-p1"),
                Some(body.clone()),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "allocation {i}: {a}");
    }
    assert_eq!(committed_down(&rig).await, 8000);
    let (s, p) = rig
        .call(
            "POST",
            "/v1/providers/p1/allocations",
            Some("t-p1"),
            Some(body.clone()),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{p}");
    assert_eq!(p["reason"], "dataplane_rule_limit", "{p}");
    assert_eq!(p["result_code"], 5006);
    let detail = p["detail"].as_str().unwrap();
    assert!(detail.contains("at most 8 rules per such key"), "{detail}");
    // Nothing of it stays: not listed, not charged, not in the data plane.
    let (_, list) = rig
        .call("GET", "/v1/providers/p1/allocations", Some("t-p1"), None)
        .await;
    assert_eq!(list.as_array().unwrap().len(), 8, "{list}");
    assert_eq!(committed_down(&rig).await, 8000);
    assert_eq!(tables.applied.lock().unwrap().len(), 8);
    // Another subscriber's key still has room.
    let (s, a) = rig
        .call(
            "POST",
            "/v1/providers/p1/allocations",
            Some("t-p1"),
            Some(
                json!({ "application": "app", "scope": { "ip": "198.18.0.11" }, "down_bps": 1000 }),
            ),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{a}");
}

#[tokio::test]
async fn allocation_ids_beyond_sqlite_integers_are_400_never_500() {
    let rig = Rig::new("alloc-ids");
    rig.seed().await;
    for (method, id, want) in [
        ("DELETE", "9223372036854775808", 400),
        ("GET", "9223372036854775808", 400),
        ("GET", "18446744073709551615", 400),
        ("GET", "18446744073709551616", 400),
        ("DELETE", "0", 400),
        ("GET", "-1", 400),
        ("GET", "9223372036854775807", 404),
        ("DELETE", "9223372036854775807", 404),
    ] {
        let uri = format!("/v1/providers/p1/allocations/{id}");
        let (s, p) = rig.call(method, &uri, Some("t-p1"), None).await;
        assert_eq!(s.as_u16(), want, "{method} {uri}: {p}");
        if want == 400 {
            assert_eq!(p["field"], "alloc", "{p}");
        }
    }
}

/// A PUT whose answer is an error; its problem body.
async fn refused(rig: &Rig, uri: &str, body: Value, want: u16) -> Value {
    let (s, p) = rig.call("PUT", uri, Some("t-admin"), Some(body)).await;
    assert_eq!(s.as_u16(), want, "PUT {uri}: {p}");
    assert!(
        p.to_string().len() < 1024,
        "the refusal does not echo the value"
    );
    p
}

#[tokio::test]
async fn oversized_strings_and_collections_are_refused_naming_the_field_and_limit() {
    let rig = Rig::new("bounds");
    rig.seed().await;
    let mb = "x".repeat(1 << 20);
    let provider = |name: &str, prefixes: Vec<String>| json!({ "kind": "asp", "name": name, "prefixes": prefixes });
    let p = refused(
        &rig,
        "/v1/providers/p9",
        provider(&mb, vec!["198.19.9.0/24".into()]),
        422,
    )
    .await;
    assert_eq!(p["field"], "name");
    assert!(
        p["detail"].as_str().unwrap().contains("limit is 256"),
        "{p}"
    );
    let many: Vec<String> = (0..65).map(|i| format!("198.19.{i}.0/24")).collect();
    let p = refused(&rig, "/v1/providers/p9", provider("p9", many), 422).await;
    assert_eq!(p["field"], "prefixes");
    assert!(p["detail"].as_str().unwrap().contains("limit is 64"), "{p}");
    let p = refused(
        &rig,
        "/v1/providers/p9",
        provider("p9", vec![format!("198.19.9.0/24{mb}")]),
        422,
    )
    .await;
    assert_eq!(p["field"], "prefixes[0]");
    let p = refused(
        &rig,
        "/v1/providers/p9",
        json!({ "kind": "asp", "name": "p9", "webhook_url": format!("http://h/{mb}"), "webhook_secret": "0123456789abcdef" }),
        422,
    )
    .await;
    assert_eq!(p["field"], "webhook_url");
    let long_id = "p".repeat(129);
    let (s, p) = rig
        .call(
            "PUT",
            &format!("/v1/providers/{long_id}"),
            Some("t-admin"),
            Some(provider("p9", vec![])),
        )
        .await;
    assert_eq!(
        (s, p["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("id"))
    );
    assert!(
        p["detail"].as_str().unwrap().contains("limit is 128"),
        "{p}"
    );
    // Applications: the number of classifiers, the size of their strings.
    let classifier = |ports: &str| json!({ "direction": "down", "proto": 17, "provider_prefix": "198.19.0.0/24", "provider_ports": ports });
    let p = refused(
        &rig,
        "/v1/providers/p1/applications/big",
        json!({ "name": "big", "classifiers": vec![classifier("1"); 33] }),
        422,
    )
    .await;
    assert_eq!(p["field"], "classifiers");
    assert!(p["detail"].as_str().unwrap().contains("limit is 32"), "{p}");
    let p = refused(
        &rig,
        "/v1/providers/p1/applications/big",
        json!({ "name": "big", "classifiers": [classifier(&mb)] }),
        422,
    )
    .await;
    assert_eq!(p["field"], "classifiers[0].provider_ports");
    let (s, p) = rig
        .call(
            "PUT",
            &format!("/v1/providers/p1/applications/{long_id}"),
            Some("t-admin"),
            Some(json!({ "name": "big", "classifiers": [classifier("1")] })),
        )
        .await;
    assert_eq!(
        (s, p["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("app"))
    );
    // Sessions, links, allocations, queries.
    let p = refused(
        &rig,
        "/v1/sessions/s9",
        json!({ "subscriber": mb, "prefix": "198.18.0.99", "bras": "b", "gateway": "gw1" }),
        422,
    )
    .await;
    assert_eq!(p["field"], "subscriber");
    let (s, p) = rig
        .call(
            "PUT",
            &format!("/v1/links/{long_id}"),
            Some("t-admin"),
            Some(json!({ "kind": "link", "capacity_up_bps": 1, "capacity_down_bps": 1 })),
        )
        .await;
    assert_eq!(
        (s, p["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("id"))
    );
    let (s, p) = rig
        .call(
            "POST",
            "/v1/providers/p1/allocations",
            Some("t-p1"),
            Some(json!({ "application": mb, "scope": { "subscriber": "cm1" }, "down_bps": 1000 })),
        )
        .await;
    assert_eq!(
        (s, p["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("application"))
    );
    assert!(p.to_string().len() < 1024);
    let (s, p) = rig
        .call(
            "GET",
            &format!("/v1/sessions?subscriber={long_id}"),
            Some("t-admin"),
            None,
        )
        .await;
    assert_eq!(
        (s, p["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("subscriber"))
    );
    // None of them changed anything.
    let (s, _) = rig
        .call("GET", "/v1/providers/p9", Some("t-admin"), None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (_, apps) = rig
        .call(
            "GET",
            "/v1/providers/p1/applications",
            Some("t-admin"),
            None,
        )
        .await;
    assert_eq!(apps.as_array().unwrap().len(), 1);
    let (_, sessions) = rig.call("GET", "/v1/sessions", Some("t-admin"), None).await;
    assert_eq!(sessions.as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn a_link_capacity_below_what_is_committed_is_409_naming_it() {
    let rig = Rig::new("link-committed");
    rig.seed().await;
    let (s, a) = rig.allocate("t-p1", "p1", 40_000_000).await;
    assert_eq!(s, StatusCode::CREATED, "{a}");
    let link = |down: u64| json!({ "kind": "gateway", "capacity_up_bps": 10_000_000, "capacity_down_bps": down });
    let p = refused(&rig, "/v1/links/gw1", link(30_000_000), 409).await;
    assert_eq!(p["field"], "capacity_down_bps");
    assert_eq!(p["reason"], "capacity_below_committed");
    let detail = p["detail"].as_str().unwrap();
    assert!(
        detail.contains("link gw1 down") && detail.contains("40000000 bit/s committed"),
        "{detail}"
    );
    let (_, links) = rig.call("GET", "/v1/links", Some("t-admin"), None).await;
    assert_eq!(links[0]["capacity_down_bps"], 50_000_000, "unchanged");
    // Down to what is committed is fine.
    rig.ok("PUT", "/v1/links/gw1", link(40_000_000)).await;
    let (_, links) = rig.call("GET", "/v1/links", Some("t-admin"), None).await;
    assert_eq!(links[0]["capacity_down_bps"], 40_000_000);
}

#[tokio::test]
async fn a_session_behind_an_unknown_gateway_is_refused_naming_the_known_ones() {
    let config = NsmConfig {
        gateways: Some(BTreeSet::from(["gw1".to_owned(), "gw2".to_owned()])),
        ..NsmConfig::default()
    };
    let rig = Rig::with("gateways", config, Box::new(crate::nsm::NoDataplane));
    rig.seed().await;
    let p = refused(
        &rig,
        "/v1/sessions/s9",
        json!({ "subscriber": "cm9", "prefix": "198.18.0.99", "bras": "b", "gateway": "gw9" }),
        422,
    )
    .await;
    assert_eq!(p["field"], "gateway");
    let detail = p["detail"].as_str().unwrap();
    assert!(
        detail.contains("gateway gw9 is unknown") && detail.contains("gw1, gw2"),
        "{detail}"
    );
    let (s, _) = rig
        .call("GET", "/v1/sessions/s9", Some("t-admin"), None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    rig.ok(
        "PUT",
        "/v1/sessions/s9",
        json!({ "subscriber": "cm9", "prefix": "198.18.0.99", "bras": "b", "gateway": "gw2" }),
    )
    .await;
}

/// A request through the router with the given Authorization header values.
async fn with_authorization(rig: &Rig, values: &[&[u8]]) -> (StatusCode, Value) {
    let mut req = Request::builder().method("GET").uri("/v1/providers");
    for v in values {
        req = req.header(
            "authorization",
            axum::http::HeaderValue::from_bytes(v).unwrap(),
        );
    }
    let resp = rig
        .app()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    if !status.is_success() {
        assert_eq!(
            resp.headers()["content-type"],
            super::error::PROBLEM_JSON,
            "{status}"
        );
    }
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test]
async fn one_authorization_header_exactly() {
    let rig = Rig::new("auth-headers");
    let (s, p) = with_authorization(&rig, &[b"Bearer t-admin", b"Bearer t-p1"]).await;
    assert_eq!(
        (s, p["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("Authorization"))
    );
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("2 Authorization headers")
    );
    let (s, _) = with_authorization(&rig, &[b"Bearer t-p1", b"Bearer t-admin"]).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "the first does not win");
    let (s, p) = with_authorization(&rig, &[b"Bearer \xfft-admin"]).await;
    assert_eq!(
        (s, p["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("Authorization"))
    );
    let (s, _) = with_authorization(&rig, &[b"Basic dXNlcjpwdw=="]).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = with_authorization(&rig, &[b"Bearer t-admin"]).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn a_long_request_target_is_414_problem_json() {
    let rig = Rig::new("uri-414");
    let uri = format!("/v1/providers/{}", "x".repeat(super::edge::MAX_URI_LEN));
    let (s, p) = rig.call("GET", &uri, Some("t-admin"), None).await;
    assert_eq!(s, StatusCode::URI_TOO_LONG, "{p}");
    assert!(
        p["detail"].as_str().unwrap().contains("limit is 8192"),
        "{p}"
    );
}

/// Sends `request` raw to `addr` and reads the answer until the server closes or a complete
/// response (head and `content-length` body) arrived: (status, content-type, body).
async fn raw(addr: std::net::SocketAddr, request: &[u8]) -> (u16, String, String) {
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(request).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), conn.read(&mut buf))
            .await
            .expect("an answer within 5 s")
            .unwrap_or(0);
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head.lines().find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse::<usize>().unwrap())
            });
            if len.is_some_and(|len| body.len() >= len) {
                break;
            }
        }
    }
    let text = String::from_utf8(got).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("a response head");
    let status = head[9..12].parse().unwrap();
    let ctype = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type:")
                .map(|v| v.trim().to_owned())
        })
        .unwrap_or_default();
    (status, ctype, body.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_hyper_refuses_before_the_router_gets_a_problem_body() {
    let rig = Rig::new("edge-server");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = rig.app();
    let server = tokio::spawn(async move {
        axum::serve(super::edge::ProblemListener(listener), app)
            .await
            .unwrap();
    });
    let long = format!(
        "GET /v1/providers/{} HTTP/1.1\r\nhost: x\r\n\r\n",
        "x".repeat(70_000)
    );
    let control =
        b"GET /v1/providers HTTP/1.1\r\nhost: x\r\nauthorization: Bearer t-\x01admin\r\n\r\n";
    let cases: [(&[u8], u16, &str); 4] = [
        (long.as_bytes(), 414, "64 KiB"),
        (control, 400, "malformed"),
        (b"GET /v1/providers HTTP/1.1\r\nhost: x\r\n\r\n", 401, "Authorization"),
        (
            b"GET /v1/providers HTTP/1.1\r\nhost: x\r\nauthorization: Bearer t-admin\r\nauthorization: Bearer t-p1\r\n\r\n",
            400,
            "2 Authorization headers",
        ),
    ];
    for (request, want, words) in cases {
        let (status, ctype, body) = raw(addr, request).await;
        assert_eq!(status, want, "{body}");
        assert_eq!(ctype, "application/problem+json", "{status}: {body}");
        let p: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(p["status"], want);
        assert!(p["detail"].as_str().unwrap().contains(words), "{p}");
    }
    server.abort();
}
