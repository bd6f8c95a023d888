//! Issue 11 item 2: committed rates granted through provisioning are admitted against the
//! links' free capacity like providers' allocations, refused with the constraint, and what
//! was admitted is charged so the next allocation sees it.

use axum::http::StatusCode;
use serde_json::json;

use super::nsm_tests::Rig;
use crate::policy::SubscriberKey;
use crate::provision::QosLevel;

const T0: u64 = 1_700_000_000_000;

#[tokio::test]
async fn committed_grants_are_admitted_against_link_capacity() {
    let rig = Rig::new("grant-admission");
    rig.seed().await; // gw1: 50 Mbit/s down; cm1 and cm2 have sessions behind it.
    let nsm = rig.state.nsm.clone().unwrap();
    {
        let mut ctl = rig.state.controller.lock().unwrap();
        for (i, m) in ["cm1", "cm2"].into_iter().enumerate() {
            let key = SubscriberKey {
                addr: format!("198.18.0.{}", 10 + i).parse().unwrap(),
                len: 32,
            };
            let b = ctl.propose_binding(m, vec![key]).unwrap();
            ctl.add_modem(b, QosLevel::default(), T0).unwrap();
        }
        ctl.set_admission(Box::new(crate::nsm::run::NsmAdmission(nsm.service.clone())));
    }
    let grant = |modem: &str, committed: u64| {
        json!({ "modem": modem, "qos": {
            "max_down_bps": 1_000_000_000u64, "committed_down_bps": committed } })
    };
    // The case: 1 Gbit/s committed on a 50 Mbit/s link. Refused, naming the link,
    // what was asked and what is left; nothing is stored.
    let (s, v) = rig
        .call(
            "POST",
            "/v1/events",
            Some("t-csr"),
            Some(grant("cm1", 1_000_000_000)),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    let detail = v["detail"].as_str().unwrap();
    assert!(
        detail.contains("link gw1 down") && detail.contains("50000000 bit/s left"),
        "{detail}"
    );
    assert_eq!(
        rig.state
            .controller
            .lock()
            .unwrap()
            .engine()
            .events()
            .count(),
        0
    );
    // 30 Mbit/s fits; once in force it is charged on the link (as the daemon's change hook
    // feeds it), so 30 more for cm2 no longer fit, and a provider gets only what is left.
    let (s, v) = rig
        .call(
            "POST",
            "/v1/events",
            Some("t-csr"),
            Some(grant("cm1", 30_000_000)),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    {
        let mut ctl = rig.state.controller.lock().unwrap();
        ctl.tick(T0 + 1).unwrap();
        let mut svc = nsm.service.lock().unwrap();
        crate::nsm::run::feed_provisioned(&ctl, &mut svc, None);
    }
    let (s, v) = rig
        .call(
            "POST",
            "/v1/events",
            Some("t-auto"),
            Some(grant("cm2", 30_000_000)),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("20000000 bit/s left"),
        "{v}"
    );
    // A grant that raises cm1's own committed rate is charged only the increase.
    let (s, v) = rig
        .call(
            "POST",
            "/v1/events",
            Some("t-admin"),
            Some(grant("cm1", 45_000_000)),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, v) = rig.allocate("t-p1", "p1", 30_000_000).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    let (s, v) = rig.allocate("t-p1", "p1", 20_000_000).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
}
