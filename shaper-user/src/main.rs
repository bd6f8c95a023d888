//! The `shaper` command.

use std::{
    path::PathBuf,
    process::ExitCode,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tokio::sync::watch;
use tracing::{error, info, warn};

use shaper::controller::Controller;
use shaper::{api, config, gateway};

/// The longest the tick task sleeps, whatever [`Controller::next_due`] says: immediate events
/// submitted through the API fire within this.
const MAX_TICK_WAIT_MS: u64 = 1000;
/// How long in-flight API requests get to finish on shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

#[derive(Parser)]
#[command(
    name = "shaper",
    version,
    about = "Dynamic QoS for broadband access networks: eBPF/XDP data plane and its controller"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Validate a configuration file and exit (non-zero, naming the offending key, if invalid).
    Check {
        #[arg(long, short, default_value = "configs/shaper.toml")]
        config: PathBuf,
    },
    /// Load the data plane, apply the configuration, attach to the interfaces and keep running.
    /// Enforcement stays in place after exit (pinned); `--detach-on-exit` removes it.
    Run {
        #[arg(long, short, default_value = "configs/shaper.toml")]
        config: PathBuf,
        /// Detach the programs and remove the pins when stopping.
        #[arg(long)]
        detach_on_exit: bool,
        /// Enter this named network namespace (`ip netns`) first. Prefer this to
        /// `ip netns exec`, which also gives the process a private mount namespace: pins made
        /// there die with the process, and enforcement with them.
        #[arg(long)]
        netns: Option<String>,
    },
    /// API token helpers.
    Token {
        #[command(subcommand)]
        cmd: TokenCmd,
    },
    /// The lab demo: network namespaces sub — gw — net joined by veth pairs, the data plane on
    /// gw, real traffic with iperf3. Needs root, iperf3, iproute2 and ping.
    Demo,
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Print the SHA-256 of TOKEN (64 hex digits): the `sha256` of a tokens-file entry.
    Hash { token: String },
}

fn read_config(path: &PathBuf) -> anyhow::Result<config::Validated> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    config::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let res = match cli.cmd {
        Cmd::Check { config } => read_config(&config).map(|v| {
            let controller = v.controller.as_ref().map_or(String::new(), |p| {
                format!(
                    "; controller on {} with {} modems",
                    p.listen,
                    p.modems.len()
                )
            });
            println!(
                "{}: ok ({} interfaces, {} classes, {} subscribers, {} rules{controller})",
                config.display(),
                v.config.interfaces.len(),
                v.classes.len(),
                v.subscribers.len(),
                v.rules.len()
            );
        }),
        Cmd::Token {
            cmd: TokenCmd::Hash { token },
        } => {
            println!("{}", api::hash_token(&token));
            Ok(())
        }
        Cmd::Run {
            config,
            detach_on_exit,
            netns,
        } => read_config(&config).and_then(|v| {
            if let Some(ns) = netns {
                enter_netns(&ns)?;
            }
            run(&v, detach_on_exit)
        }),
        Cmd::Demo => shaper::demo::run(),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Moves this (still single-threaded) process into a named network namespace; threads created
/// afterwards, the runtime's workers among them, inherit it.
fn enter_netns(name: &str) -> anyhow::Result<()> {
    use std::os::fd::AsRawFd as _;
    let path = format!("/var/run/netns/{name}");
    let f = std::fs::File::open(&path)
        .with_context(|| format!("network namespace {name:?} ({path})"))?;
    // SAFETY: setns(2) on an open namespace fd.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        anyhow::bail!(
            "entering network namespace {name:?}: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

fn run(v: &config::Validated, detach_on_exit: bool) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let gw = gateway::apply(v)?;
        if let Some(rb) = gw.lock().take_events() {
            tokio::spawn(async move {
                if let Err(e) = gateway::log_events(rb).await {
                    tracing::error!("event reader stopped: {e:#}");
                }
            });
        }
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut tasks = match &v.controller {
            Some(plan) => Some(start_controller(plan, &gw, stop_rx).await?),
            None => None,
        };
        let server_failed = async {
            match tasks.as_mut() {
                Some(t) => (&mut t.server).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => info!("interrupted"),
            _ = term.recv() => info!("terminated"),
            res = server_failed => {
                let _ = stop_tx.send(true);
                match res {
                    Ok(Ok(())) => anyhow::bail!("the API server stopped"),
                    Ok(Err(e)) => return Err(e.context("API server")),
                    Err(e) => anyhow::bail!("API server task: {e}"),
                }
            }
        }
        let _ = stop_tx.send(true);
        if let Some(t) = tasks {
            match tokio::time::timeout(SHUTDOWN_GRACE, t.server).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => warn!("API server: {e:#}"),
                Ok(Err(e)) => warn!("API server task: {e}"),
                Err(_) => warn!("API requests still running after {SHUTDOWN_GRACE:?}; dropped"),
            }
            if let Err(e) = t.ticker.await {
                warn!("tick task: {e}");
            }
            info!("controller stopped; its state is in the store");
        }
        if detach_on_exit {
            gw.lock().detach_all()?;
            info!("detached: enforcement removed");
        } else {
            info!("exiting; the data plane stays in force (pinned)");
        }
        Ok(())
    })
}

/// The controller's running parts.
struct ControllerTasks {
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
    ticker: tokio::task::JoinHandle<()>,
}

/// Opens the controller on the gateway's data plane, then serves its API on `plan.listen` and
/// fires its timed events until `stop` turns true.
async fn start_controller(
    plan: &config::ControllerPlan,
    gw: &gateway::Gateway,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<ControllerTasks> {
    let path = &plan.tokens_file;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("controller.tokens_file: reading {}", path.display()))?;
    let tokens =
        config::parse_tokens(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    if tokens.is_empty() {
        warn!(file = %path.display(), "no API tokens: every modem and event request gets 401");
    }
    let ctl = gateway::open_controller(plan, gw, api::system_now_ms())?;
    let ctl = Arc::new(Mutex::new(ctl));
    let listener = tokio::net::TcpListener::bind(plan.listen)
        .await
        .with_context(|| format!("controller.listen: binding {}", plan.listen))?;
    info!(listen = %listener.local_addr()?, tokens = tokens.len(), "API serving");
    let metrics = shaper::metrics::Metrics::new(
        Some(gw.dataplane.clone()),
        Some(ctl.clone()),
        Arc::new(api::system_now_ms),
    )
    .context("metrics registry")?;
    let app = api::router(
        api::AppState::new(ctl.clone(), Arc::new(tokens)).with_metrics(Arc::new(metrics)),
    );
    let mut server_stop = stop.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = server_stop.wait_for(|s| *s).await;
            })
            .await
            .map_err(anyhow::Error::from)
    });
    let ticker = tokio::spawn(tick_loop(ctl, stop));
    Ok(ControllerTasks { server, ticker })
}

/// Calls [`Controller::tick`] when the next start or stop is due, and at least every
/// [`MAX_TICK_WAIT_MS`] (immediate events, retries of failed enforcements).
async fn tick_loop(ctl: Arc<Mutex<Controller>>, mut stop: watch::Receiver<bool>) {
    let mut last_error: Option<String> = None;
    loop {
        let next = match ctl.lock() {
            Ok(c) => c.next_due(),
            Err(_) => {
                error!("the controller lock is poisoned by a panic; timed events stop");
                return;
            }
        };
        let now = api::system_now_ms();
        let wait = next.map_or(MAX_TICK_WAIT_MS, |due| {
            due.saturating_sub(now).min(MAX_TICK_WAIT_MS)
        });
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let c = ctl.clone();
        let res = tokio::task::spawn_blocking(move || {
            let mut c = c
                .lock()
                .map_err(|_| "the controller lock is poisoned".to_string())?;
            c.tick(api::system_now_ms()).map_err(|e| e.to_string())
        })
        .await;
        match res {
            Ok(Ok(changes)) => {
                last_error = None;
                for ch in changes {
                    info!(
                        modem = ch.modem,
                        event = ch.cause,
                        kind = ?ch.kind,
                        lag_ms = api::system_now_ms().saturating_sub(ch.due_ms),
                        "QoS change"
                    );
                }
            }
            Ok(Err(e)) => {
                if last_error.as_deref() != Some(e.as_str()) {
                    error!("controller tick: {e}");
                    last_error = Some(e);
                }
            }
            Err(e) => {
                error!("controller tick panicked: {e}; timed events stop");
                return;
            }
        }
    }
}
