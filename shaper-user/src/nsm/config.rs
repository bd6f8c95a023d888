//! `[nsm]` in `shaper.toml`: the network service manager, checked before anything binds.
//!
//! ```toml
//! [nsm]
//! overbooking = 1.2            # committed rates may reach capacity × 1.2 per link direction
//! dataplane = true             # enforce allocations in this gateway's data plane
//! class_first = 512            # data-plane classes for allocations (one per direction)
//! class_last = 1023
//! htb_minor_first = 0x100      # HTB classes for allocations on the interfaces' trees
//! htb_minor_last = 0x1ff       #   (rate = committed, ceil, prio = 7 − priority)
//! local_gateway = "gw1"        # sessions behind this gateway are enforced here; a session
//!                              #   behind neither it nor a [[nsm.gateway]] is refused
//! webhooks = true              # POST signed notices to providers' webhook URLs
//! bras = false                 # RADIUS CoA to the BRAS (needs [[radius.bras]])
//!
//! [nsm.retry]                  # webhook and remote-gateway retries
//! attempts = 6
//! base_ms = 500
//! max_ms = 30000
//! timeout_ms = 10000
//!
//! [[nsm.link]]                 # capacities registered at start (the API can change them)
//! id = "gw1"
//! kind = "gateway"
//! capacity_up = "1G"
//! capacity_down = "10G"
//!
//! [[nsm.gateway]]              # remote gateways: POST of their desired allocation state
//! id = "gw2"
//! url = "http://192.0.2.2:9180/v1/allocations"
//! ```

use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::http::HttpUrl;
use super::model::{Link, LinkKind};
use super::notify::RetryPolicy;
use crate::config::{ConfigError, Rate};

fn yes() -> bool {
    true
}

fn one() -> f64 {
    1.0
}

/// `[nsm.retry]`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RetrySection {
    pub attempts: u32,
    pub base_ms: u64,
    pub max_ms: u64,
    pub timeout_ms: u64,
}

impl Default for RetrySection {
    fn default() -> Self {
        let r = RetryPolicy::default();
        Self {
            attempts: r.attempts,
            base_ms: u64::try_from(r.base.as_millis()).unwrap_or(500),
            max_ms: u64::try_from(r.max.as_millis()).unwrap_or(30_000),
            timeout_ms: u64::try_from(r.timeout.as_millis()).unwrap_or(10_000),
        }
    }
}

/// `[[nsm.link]]`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LinkSection {
    pub id: String,
    pub kind: LinkKind,
    pub capacity_up: Rate,
    pub capacity_down: Rate,
}

/// `[[nsm.gateway]]`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GatewaySection {
    pub id: String,
    pub url: String,
}

/// `[nsm]`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NsmSection {
    /// SQLite file of the manager's tables; default: the controller's store.
    pub store: Option<PathBuf>,
    #[serde(default = "one")]
    pub overbooking: f64,
    #[serde(default = "yes")]
    pub dataplane: bool,
    pub class_first: Option<u32>,
    pub class_last: Option<u32>,
    pub rule_first: Option<u32>,
    pub rule_last: Option<u32>,
    /// HTB minors for allocations on the trees of interfaces with `htb_link_rate` (subscriber
    /// side: downstream, upstream side: upstream); absent = policer only.
    pub htb_minor_first: Option<u16>,
    pub htb_minor_last: Option<u16>,
    pub local_gateway: Option<String>,
    #[serde(default = "yes")]
    pub webhooks: bool,
    #[serde(default)]
    pub bras: bool,
    #[serde(default)]
    pub retry: RetrySection,
    #[serde(default, rename = "link")]
    pub links: Vec<LinkSection>,
    #[serde(default, rename = "gateway")]
    pub gateways: Vec<GatewaySection>,
}

/// `[nsm]`, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct NsmPlan {
    pub store: Option<PathBuf>,
    pub overbooking_permille: u32,
    pub dataplane: bool,
    pub classes: RangeInclusive<u32>,
    pub rule_ids: RangeInclusive<u32>,
    pub htb_minors: Option<RangeInclusive<u16>>,
    pub local_gateway: Option<String>,
    pub webhooks: bool,
    pub bras: bool,
    pub retry: RetryPolicy,
    pub links: Vec<Link>,
    pub gateways: Vec<(String, HttpUrl)>,
}

impl NsmPlan {
    /// The gateways a session may be behind: the local one and the remote ones.
    #[must_use]
    pub fn known_gateways(&self) -> std::collections::BTreeSet<String> {
        self.local_gateway
            .iter()
            .cloned()
            .chain(self.gateways.iter().map(|(id, _)| id.clone()))
            .collect()
    }
}

fn err(key: impl Into<String>, msg: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.into(),
        msg: msg.into(),
    }
}

/// Default class ids for allocations: below the controller's default first class (1024).
pub const DEFAULT_CLASSES: RangeInclusive<u32> = 512..=1023;
/// Default rule ids (= precedences) for allocation rules.
pub const DEFAULT_RULE_IDS: RangeInclusive<u32> = 1_000_000..=1_999_999;

/// Checks `[nsm]` against the rest of the configuration: the data plane's class limit, the
/// configured classes and rules, and the controller's class range.
pub fn validate(
    s: &NsmSection,
    max_classes: u32,
    config_classes: &[u32],
    config_rules: &[u32],
    controller_classes: Option<&RangeInclusive<u32>>,
    reserved_minors: &[u16],
    bras_configured: bool,
) -> Result<NsmPlan, ConfigError> {
    if !(s.overbooking.is_finite() && s.overbooking > 0.0 && s.overbooking <= 100.0) {
        return Err(err("nsm.overbooking", "must be above 0 and at most 100"));
    }
    let classes = s.class_first.unwrap_or(*DEFAULT_CLASSES.start())
        ..=s.class_last.unwrap_or(*DEFAULT_CLASSES.end());
    if *classes.start() == 0 || classes.start() > classes.end() {
        return Err(err(
            "nsm.class_first",
            format!("{classes:?} is not a range of class ids above 0"),
        ));
    }
    if *classes.end() >= max_classes {
        return Err(err(
            "nsm.class_last",
            format!(
                "{} is beyond dataplane.limits.max_classes ({max_classes})",
                classes.end()
            ),
        ));
    }
    if let Some(c) = config_classes.iter().find(|c| classes.contains(c)) {
        return Err(err(
            "nsm.class_first",
            format!("class {c} of the configuration lies in nsm's classes {classes:?}"),
        ));
    }
    if let Some(ctl) = controller_classes {
        if ctl.start() <= classes.end() && classes.start() <= ctl.end() {
            return Err(err(
                "nsm.class_first",
                format!("nsm's classes {classes:?} overlap the controller's {ctl:?}"),
            ));
        }
    }
    let rule_ids = s.rule_first.unwrap_or(*DEFAULT_RULE_IDS.start())
        ..=s.rule_last.unwrap_or(*DEFAULT_RULE_IDS.end());
    if *rule_ids.start() == 0 || rule_ids.start() > rule_ids.end() || *rule_ids.end() == u32::MAX {
        return Err(err(
            "nsm.rule_first",
            format!("{rule_ids:?} is not a range of rule ids in 1..4294967295"),
        ));
    }
    if let Some(r) = config_rules.iter().find(|r| rule_ids.contains(r)) {
        return Err(err(
            "nsm.rule_first",
            format!("rule {r} of the configuration lies in nsm's rule ids {rule_ids:?}"),
        ));
    }
    let htb_minors = match (s.htb_minor_first, s.htb_minor_last) {
        (None, None) => None,
        (Some(a), Some(b)) => {
            if a < crate::dataplane::htb::MIN_MINOR || b > crate::dataplane::htb::MAX_MINOR || a > b
            {
                return Err(err(
                    "nsm.htb_minor_first",
                    format!(
                        "{a:#x}..={b:#x} is not a range within {:#x}..={:#x}",
                        crate::dataplane::htb::MIN_MINOR,
                        crate::dataplane::htb::MAX_MINOR
                    ),
                ));
            }
            if let Some(m) = reserved_minors.iter().find(|m| (a..=b).contains(*m)) {
                return Err(err(
                    "nsm.htb_minor_first",
                    format!("HTB minor {m:#x} of the configuration lies in {a:#x}..={b:#x}"),
                ));
            }
            Some(a..=b)
        }
        _ => {
            return Err(err(
                "nsm.htb_minor_last",
                "give both htb_minor_first and htb_minor_last, or neither",
            ));
        }
    };
    if s.bras && !bras_configured {
        return Err(err(
            "nsm.bras",
            "BRAS notification (RADIUS CoA) needs [[radius.bras]]: the BRASes to send CoA to",
        ));
    }
    let retry = RetryPolicy {
        attempts: s.retry.attempts,
        base: Duration::from_millis(s.retry.base_ms),
        max: Duration::from_millis(s.retry.max_ms),
        timeout: Duration::from_millis(s.retry.timeout_ms),
    };
    if retry.attempts == 0 {
        return Err(err("nsm.retry.attempts", "must be at least 1"));
    }
    if retry.timeout.is_zero() {
        return Err(err("nsm.retry.timeout_ms", "must be above 0"));
    }
    let mut links = Vec::new();
    for (i, l) in s.links.iter().enumerate() {
        let link = Link {
            id: l.id.clone(),
            kind: l.kind,
            capacity_up_bps: l.capacity_up.0,
            capacity_down_bps: l.capacity_down.0,
        };
        super::NsmCore::check_link(&link).map_err(|e| match e {
            super::CatalogError::Invalid { field, detail } => err(
                format!("nsm.link[{i}].{}", field.trim_end_matches("_bps")),
                detail,
            ),
            other => err(format!("nsm.link[{i}]"), other.to_string()),
        })?;
        if links.iter().any(|x: &Link| x.id == link.id) {
            return Err(err(format!("nsm.link[{i}].id"), "listed twice"));
        }
        links.push(link);
    }
    if let Some(local) = &s.local_gateway {
        super::validate::id("nsm.local_gateway", local).map_err(|e| err(e.field, e.detail))?;
    }
    let mut gateways = Vec::new();
    for (i, g) in s.gateways.iter().enumerate() {
        super::validate::id(&format!("nsm.gateway[{i}].id"), &g.id)
            .map_err(|e| err(e.field, e.detail))?;
        if gateways
            .iter()
            .any(|(id, _): &(String, HttpUrl)| *id == g.id)
        {
            return Err(err(format!("nsm.gateway[{i}].id"), "listed twice"));
        }
        if s.local_gateway.as_deref() == Some(g.id.as_str()) {
            return Err(err(
                format!("nsm.gateway[{i}].id"),
                "is the local gateway, which this process enforces itself",
            ));
        }
        let url = HttpUrl::parse(&g.url)
            .map_err(|e| err(format!("nsm.gateway[{i}].url"), e.to_string()))?;
        gateways.push((g.id.clone(), url));
    }
    Ok(NsmPlan {
        store: s.store.clone(),
        overbooking_permille: (s.overbooking * 1000.0).round() as u32,
        dataplane: s.dataplane,
        classes,
        rule_ids,
        htb_minors,
        local_gateway: s.local_gateway.clone(),
        webhooks: s.webhooks,
        bras: s.bras,
        retry,
        links,
        gateways,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<NsmPlan, ConfigError> {
        let s: NsmSection = toml::from_str(text).unwrap();
        validate(
            &s,
            65_536,
            &[1, 600],
            &[10],
            Some(&(1024..=65_535)),
            &[0x20, 0xfffe],
            false,
        )
    }

    #[test]
    fn the_shipped_example_validates() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../configs/shaper.toml"
        ))
        .unwrap();
        // The commented [controller] example and the [nsm] and [radius] examples after it,
        // uncommented.
        let (v, _dir) = crate::config::tests::shipped_example(&text);
        let nsm = v.nsm.expect("the example has [nsm]");
        assert_eq!(nsm.overbooking_permille, 1200);
        assert_eq!(nsm.classes, 512..=1023);
        assert_eq!(nsm.links[0].capacity_down_bps, 10_000_000_000);
    }

    #[test]
    fn defaults_and_errors_name_the_key() {
        let p = parse("class_first = 700\n[[link]]\nid = \"gw1\"\nkind = \"gateway\"\ncapacity_up = \"1G\"\ncapacity_down = \"10G\"\n").unwrap();
        assert_eq!(p.overbooking_permille, 1000);
        assert_eq!(p.classes, 700..=1023);
        assert_eq!(p.links[0].capacity_down_bps, 10_000_000_000);
        assert_eq!(parse("").unwrap_err().key, "nsm.class_first"); // class 600 inside 512..=1023
        assert_eq!(
            parse("class_first = 700\noverbooking = 0").unwrap_err().key,
            "nsm.overbooking"
        );
        assert_eq!(
            parse("class_first = 700\nclass_last = 2000")
                .unwrap_err()
                .key,
            "nsm.class_first"
        );
        assert_eq!(
            parse("class_first = 700\nbras = true").unwrap_err().key,
            "nsm.bras"
        );
        assert_eq!(
            parse("class_first = 700\n[[gateway]]\nid = \"g\"\nurl = \"https://x/\"")
                .unwrap_err()
                .key,
            "nsm.gateway[0].url"
        );
        assert_eq!(
            parse("class_first = 700\n[[link]]\nid = \"g\"\nkind = \"link\"\ncapacity_up = 0\ncapacity_down = 1").unwrap_err().key,
            "nsm.link[0].capacity_up"
        );
    }

    #[test]
    fn gateway_ids_are_bounded_unique_and_known() {
        let long = "g".repeat(super::super::validate::MAX_ID_LEN + 1);
        let e = parse(&format!("class_first = 700\nlocal_gateway = \"{long}\"")).unwrap_err();
        assert_eq!(e.key, "nsm.local_gateway");
        assert!(e.msg.contains("limit is 128"), "{}", e.msg);
        let gw = |id: &str| format!("[[gateway]]\nid = \"{id}\"\nurl = \"http://192.0.2.2/\"\n");
        let e = parse(&format!("class_first = 700\n{}", gw(&long))).unwrap_err();
        assert_eq!(e.key, "nsm.gateway[0].id");
        let e = parse(&format!("class_first = 700\n{}{}", gw("gw2"), gw("gw2"))).unwrap_err();
        assert_eq!(
            (e.key.as_str(), e.msg.as_str()),
            ("nsm.gateway[1].id", "listed twice")
        );
        let p = parse(&format!(
            "class_first = 700\nlocal_gateway = \"gw1\"\n{}{}",
            gw("gw3"),
            gw("gw2")
        ))
        .unwrap();
        assert_eq!(
            p.known_gateways().into_iter().collect::<Vec<_>>(),
            ["gw1", "gw2", "gw3"]
        );
    }
}
