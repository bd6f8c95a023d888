//! API tests of the modem pipeline's failures (issue 11 items 5 and 7): `GET /v1/modems/{id}`
//! and `GET /metrics` over a controller with a real [`DocsisPipeline`], and `GET /files/{name}`
//! with names no file can have.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use super::*;
use crate::controller::{ControllerConfig, Disabled};
use crate::modem::pipeline::{
    ConfigDirHandler, DocsisPipeline, PipelineKeys, PipelineOptions, RETRY_FIRST,
};
use crate::policy::SubscriberKey;
use crate::proto::docsis::{CmtsKey, TrustedKeys};
use crate::provision::QosLevel;
use crate::store::{SqliteStore, TempDir};

const T0: u64 = 1_700_000_000_000;

struct Rig {
    _dir: TempDir,
    state: AppState,
    /// The pipeline's clock.
    now: Arc<AtomicU64>,
    /// cm1's stable file.
    stable: std::path::PathBuf,
}

impl Rig {
    fn new(name: &str) -> Rig {
        let dir = TempDir::new(&format!("api-pipeline-{name}"));
        let cfg = dir.path().join("cfg");
        let opts = PipelineOptions::new(
            cfg.clone(),
            dir.path().join("cmts.key"),
            dir.path().join("name.key"),
        );
        let keys = PipelineKeys {
            cmts: CmtsKey::new(b"cmts-secret"),
            signer: None,
            trusted: TrustedKeys::new(),
            name_key: [5; 32],
        };
        let now = Arc::new(AtomicU64::new(T0));
        let n = now.clone();
        let p = DocsisPipeline::open(
            &opts,
            keys,
            BTreeMap::new(),
            tokio::runtime::Handle::current(),
        )
        .unwrap()
        .with_clock(Arc::new(move || n.load(SeqCst)));
        let shared = p.shared();
        let stable = p.store().path("cm1", 0);
        let store = SqliteStore::open(dir.path().join("shaper.db")).unwrap();
        let (mut ctl, _) = Controller::open(
            ControllerConfig::default(),
            Box::new(store),
            Box::new(Disabled),
            Box::new(p),
            Vec::new(),
            T0,
        )
        .unwrap();
        let key = SubscriberKey {
            addr: "198.18.0.1".parse().unwrap(),
            len: 32,
        };
        let binding = ctl.propose_binding("cm1", vec![key]).unwrap();
        let base = QosLevel {
            max_down_bps: Some(10_000_000),
            ..QosLevel::default()
        };
        ctl.add_modem(binding, base, T0).unwrap();
        let controller = Arc::new(Mutex::new(ctl));
        let tokens = TokenTable::new([TokenEntry {
            sha256_hex: hash_token("t-admin"),
            role: Role::Admin,
            subject: "root".into(),
        }])
        .unwrap();
        let clock: Clock = Arc::new(move || T0);
        let metrics = crate::metrics::Metrics::new(None, Some(controller.clone()), clock).unwrap();
        // As the daemon does: metrics first, then the pipeline (its failures join the metrics).
        let state = AppState::new(controller, Arc::new(tokens))
            .with_metrics(Arc::new(metrics))
            .with_pipeline(shared, Arc::new(ConfigDirHandler::new(&cfg).unwrap()));
        Rig {
            _dir: dir,
            state,
            now,
            stable,
        }
    }

    async fn call(&self, method: &str, uri: &str, body: Option<Value>) -> (StatusCode, String) {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header("authorization", "Bearer t-admin");
        let req = match body {
            Some(b) => req
                .header("content-type", "application/json")
                .body(Body::from(b.to_string())),
            None => req.body(Body::empty()),
        }
        .unwrap();
        let resp = router(self.state.clone()).oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    async fn pipeline(&self) -> Value {
        let (s, body) = self.call("GET", "/v1/modems/cm1", None).await;
        assert_eq!(s, StatusCode::OK, "{body}");
        serde_json::from_str::<Value>(&body).unwrap()["pipeline"].clone()
    }

    /// The value of the metrics sample `line` starts with (e.g. `name{label="x"}`).
    async fn metric(&self, series: &str) -> f64 {
        let (s, text) = self.call("GET", "/metrics", None).await;
        assert_eq!(s, StatusCode::OK, "{text}");
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
            .parse()
            .unwrap()
    }

    fn tick(&self, at: u64) {
        self.now.store(at, SeqCst);
        self.state.controller.lock().unwrap().tick(at).unwrap();
    }
}

#[tokio::test]
async fn a_modem_whose_file_cannot_be_delivered_shows_it_until_a_retry_works() {
    let rig = Rig::new("deliver");
    assert_eq!(rig.pipeline().await["version"], 1);
    assert_eq!(rig.pipeline().await["failing"], false);
    assert_eq!(
        rig.metric("shaper_modem_pipeline_failing_modems").await,
        0.0
    );
    // The stable name is taken by a directory: no new file can be delivered there.
    std::fs::remove_file(&rig.stable).unwrap();
    std::fs::create_dir(&rig.stable).unwrap();
    let (s, body) = rig
        .call(
            "PUT",
            "/v1/modems/cm1/base",
            Some(json!({ "max_down_bps": 20_000_000 })),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let p = rig.pipeline().await;
    assert_eq!(p["failing"], true, "{p}");
    let f = &p["file_failure"];
    assert_eq!(f["stage"], "deliver", "{p}");
    assert_eq!(f["attempts"], 1, "{p}");
    assert_eq!(f["failing_since_ms"], T0, "{p}");
    assert_eq!(f["next_retry_ms"], T0 + 1_000, "{p}");
    assert!(f["last_error"].as_str().unwrap().contains("writing"), "{p}");
    assert_eq!(p["reboot_failure"], Value::Null);
    assert_eq!(p["version"], 1, "the modem keeps its previous file");
    assert_eq!(
        rig.metric("shaper_modem_pipeline_failing_modems").await,
        1.0
    );
    let deliver = "shaper_modem_pipeline_failures_total{stage=\"deliver\"}";
    assert_eq!(rig.metric(deliver).await, 1.0);
    assert_eq!(
        rig.metric("shaper_modem_pipeline_failures_total{stage=\"build\"}")
            .await,
        0.0
    );
    // The controller retries on every tick; the pipeline tries again only at its retry time.
    for at in [T0 + 100, T0 + 500, T0 + 999] {
        rig.tick(at);
    }
    assert_eq!(rig.pipeline().await["file_failure"]["attempts"], 1);
    assert_eq!(rig.metric(deliver).await, 1.0);
    rig.tick(T0 + 1_000);
    let f = rig.pipeline().await["file_failure"].clone();
    assert_eq!(
        (f["attempts"].as_u64(), f["next_retry_ms"].as_u64()),
        (Some(2), Some(T0 + 3_000))
    );
    assert_eq!(rig.metric(deliver).await, 2.0);
    // Fixed: the next retry delivers it and clears the failure.
    std::fs::remove_dir(&rig.stable).unwrap();
    rig.tick(T0 + 2_999);
    assert_eq!(rig.pipeline().await["failing"], true);
    rig.tick(T0 + 3_000);
    let p = rig.pipeline().await;
    assert_eq!(p["failing"], false, "{p}");
    assert_eq!(p["file_failure"], Value::Null, "{p}");
    assert_eq!(p["version"], 2, "{p}");
    assert!(rig.stable.is_file());
    assert_eq!(
        rig.metric("shaper_modem_pipeline_failing_modems").await,
        0.0
    );
    assert_eq!(rig.metric(deliver).await, 2.0, "a total");
    assert!(RETRY_FIRST.as_millis() == 1_000);
}

#[tokio::test]
async fn file_names_no_file_can_have_are_404_not_500_and_not_echoed_whole() {
    let rig = Rig::new("names");
    let (logs, _guard) = crate::tftp::testlog::capture();
    let long = format!("/files/{}.cfg", "a".repeat(5000));
    let (s, body) = rig.call("GET", &long, None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{body}");
    let problem: Value = serde_json::from_str(&body).unwrap();
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.len() < 200, "{detail}");
    assert!(detail.contains('…'), "{detail}");
    let text = logs.text();
    assert!(!text.contains(&"a".repeat(65)), "{text}");
    assert!(!text.contains("ERROR"), "{text}");
    for name in ["%00.cfg", "..%2F..%2Fetc%2Fpasswd", "a%2Fb.cfg"] {
        let (s, body) = rig.call("GET", &format!("/files/{name}"), None).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{name}: {body}");
    }
}
