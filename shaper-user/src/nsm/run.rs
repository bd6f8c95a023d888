//! Wiring the network service manager into `shaper run`: open it on its store and the
//! gateway's data plane, build its notifiers from `[nsm]`, and feed it the committed rates of
//! the provisioning controller's modems.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use tracing::{info, warn};

use super::config::NsmPlan;
use super::enforce::{AllocationEnforcer, AllocationTarget, NoDataplane};
use super::notify::{
    GatewayNotifier, HttpGateway, Notifier, Notifiers, RemoteGateway, WebhookNotifier,
};
use super::service::{NsmConfig, NsmService};
use crate::config::ControllerPlan;
use crate::controller::Controller;
use crate::gateway::Gateway;
use crate::nsm::NsmState;
use crate::store::{NsmStore, SqliteNsmStore};

/// Opens the manager of `plan` (store: `nsm.store`, else the controller's) on the gateway's
/// data plane, registers the configured links, and builds the notifiers. `trees` are the HTB
/// trees allocations get classes on (with `nsm.htb_minor_*`): the subscriber-facing
/// interface's shapes downstream, the upstream-facing one's upstream.
pub fn open(
    plan: &NsmPlan,
    controller: &ControllerPlan,
    gw: &Gateway,
    trees: Vec<(super::model::Dir, crate::dataplane::htb::HtbTree)>,
    clock: crate::clock::Clock,
) -> anyhow::Result<NsmState> {
    let path = plan
        .store
        .clone()
        .unwrap_or_else(|| controller.store.clone());
    let store = SqliteNsmStore::open(&path)
        .with_context(|| format!("nsm.store: opening {}", path.display()))?;
    let target: Box<dyn AllocationTarget> = if plan.dataplane {
        let mut e = AllocationEnforcer::new(
            gw.dataplane.clone(),
            plan.classes.clone(),
            plan.rule_ids.clone(),
        );
        if let Some(minors) = &plan.htb_minors {
            for (dir, tree) in trees {
                info!(interface = tree.ifname(), %dir, "allocations get HTB classes");
                e = e.with_htb(dir, tree, minors.clone());
            }
        }
        Box::new(e)
    } else {
        Box::new(NoDataplane)
    };
    let mut svc = NsmService::open(
        NsmConfig {
            overbooking_permille: plan.overbooking_permille,
            gateways: Some(plan.known_gateways()),
        },
        Box::new(store),
        target,
        clock(),
    )
    .context("opening the network service manager")?;
    for l in &plan.links {
        let shortfall = svc
            .put_configured_link(l.clone())
            .with_context(|| format!("nsm.link {}", l.id))?;
        if let Some(e) = shortfall {
            warn!("nsm.link {}: {e}", l.id);
        }
    }
    for (id, error) in svc.unenforced() {
        warn!(
            allocation = id,
            error, "allocation not enforced after restore"
        );
    }
    let provider: Option<Arc<dyn Notifier>> = if plan.webhooks {
        let log = SqliteNsmStore::open(&path).with_context(|| {
            format!("nsm.store: opening {} for the webhook log", path.display())
        })?;
        let log: Arc<Mutex<Box<dyn NsmStore>>> = Arc::new(Mutex::new(Box::new(log)));
        Some(Arc::new(WebhookNotifier::new(log, plan.retry, clock)))
    } else {
        None
    };
    let remote: HashMap<String, Arc<dyn RemoteGateway>> = plan
        .gateways
        .iter()
        .map(|(id, url)| {
            let g: Arc<dyn RemoteGateway> = Arc::new(HttpGateway {
                id: id.clone(),
                url: url.clone(),
                retry: plan.retry,
            });
            (id.clone(), g)
        })
        .collect();
    let gateways: Arc<dyn Notifier> = Arc::new(GatewayNotifier {
        local: plan.local_gateway.clone(),
        remote,
    });
    info!(
        store = %path.display(),
        links = svc.links().len(),
        sessions = svc.core().session_count(),
        allocations = svc.core().allocations().count(),
        "network service manager open"
    );
    Ok(NsmState {
        service: Arc::new(Mutex::new(svc)),
        notifiers: Notifiers {
            // RADIUS CoA to the BRAS (`nsm.bras`): `crate::notify::run::attach_bras`, which
            // `shaper run` calls next (it needs `[radius]` and the controller).
            bras: None,
            gateways: Some(gateways),
            provider,
        },
    })
}

/// Feeds the committed rates of `modems`' effective QoS (every bound modem when `None`) into
/// the manager: a modem id is the subscriber id of its sessions.
pub fn feed_provisioned(ctl: &Controller, svc: &mut NsmService, modems: Option<&[String]>) {
    let all: Vec<String>;
    let modems = match modems {
        Some(m) => m,
        None => {
            all = ctl.bindings().map(|b| b.modem.clone()).collect();
            &all
        }
    };
    for m in modems {
        let q = ctl.effective(m).unwrap_or_default();
        svc.set_provisioned(
            m,
            q.committed_up_bps.unwrap_or(0),
            q.committed_down_bps.unwrap_or(0),
        );
    }
}

/// Admits provisioning grants' committed rates against the free capacity of the links the
/// modem's sessions sit behind (their gateway and BRAS, where registered), as allocations
/// are: a modem id is the subscriber id of its sessions. Only the increase over what the
/// modem holds now is charged; a modem without a session on a registered link crosses no
/// link the manager knows and is admitted. The controller asks while it holds its own lock
/// (lock order: controller, then manager).
pub struct NsmAdmission(pub Arc<Mutex<NsmService>>);

impl crate::controller::GrantAdmission for NsmAdmission {
    fn admit(&self, modem: &str, up_bps: u64, down_bps: u64) -> Result<(), String> {
        use super::model::Dir;
        let svc = self
            .0
            .lock()
            .map_err(|_| "the network service manager's lock is poisoned".to_owned())?;
        let core = svc.core();
        let (held_up, held_down) = core.provisioned(modem);
        let mut links: Vec<&str> = core
            .sessions_of(modem)
            .into_iter()
            .flat_map(|s| [s.gateway.as_str(), s.bras.as_str()])
            .collect();
        links.sort_unstable();
        links.dedup();
        for link in core.links().filter(|l| links.contains(&l.id.as_str())) {
            for (dir, want, held) in [(Dir::Up, up_bps, held_up), (Dir::Down, down_bps, held_down)]
            {
                let extra = want.saturating_sub(held);
                if extra == 0 {
                    continue;
                }
                let limit = core.limit(link, dir);
                let committed = core.committed(&link.id, dir);
                let left = limit.saturating_sub(committed);
                if extra > left {
                    return Err(format!(
                        "link {} {dir}: {want} bit/s committed asked for modem {modem} ({extra} more than it holds); \
                         {left} bit/s left of {limit} ({committed} committed)",
                        link.id
                    ));
                }
            }
        }
        Ok(())
    }
}
