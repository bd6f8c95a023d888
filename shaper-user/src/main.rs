//! The `shaper` command.

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tracing::info;

use shaper::{config, gateway};

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
    /// The lab demo: network namespaces sub — gw — net joined by veth pairs, the data plane on
    /// gw, real traffic with iperf3. Needs root, iperf3, iproute2 and ping.
    Demo,
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
            println!(
                "{}: ok ({} interfaces, {} classes, {} subscribers, {} rules)",
                config.display(),
                v.config.interfaces.len(),
                v.classes.len(),
                v.subscribers.len(),
                v.rules.len()
            );
        }),
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
        let mut gw = gateway::apply(v)?;
        if let Some(rb) = gw.dataplane.take_events() {
            tokio::spawn(async move {
                if let Err(e) = gateway::log_events(rb).await {
                    tracing::error!("event reader stopped: {e:#}");
                }
            });
        }
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => info!("interrupted"),
            _ = term.recv() => info!("terminated"),
        }
        if detach_on_exit {
            gw.dataplane.detach_all()?;
            info!("detached: enforcement removed");
        } else {
            info!("exiting; the data plane stays in force (pinned)");
        }
        Ok(())
    })
}
