//! `ip netns` RAII guard and process helpers with timeouts.

use std::ffi::OsStr;
use std::io::Read;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

/// Default timeout for short configuration commands (`ip`, `tc`, `sysctl`).
pub const CMD_TIMEOUT: Duration = Duration::from_secs(30);

static NS_COUNTER: AtomicU32 = AtomicU32::new(0);

/// Run `cmd` to completion, capturing stdout and stderr, killing it after `timeout`.
///
/// The exit status is *not* checked; a timeout is an error that carries what the command
/// printed so far.
pub fn output_with_timeout(cmd: &mut Command, timeout: Duration) -> Result<Output> {
    let desc = describe(cmd);
    let proc = BgProcess::spawn(cmd, desc)?;
    proc.wait_timeout(timeout)
}

/// Like [`output_with_timeout`] but fails unless the command exits 0; returns stdout.
pub fn run_checked(cmd: &mut Command, timeout: Duration) -> Result<String> {
    let desc = describe(cmd);
    let out = output_with_timeout(cmd, timeout)?;
    if !out.status.success() {
        bail!(
            "`{desc}` failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// A background child process; killed (SIGKILL) and reaped when dropped.
///
/// stdout and stderr are captured by reader threads (so a chatty child never blocks on a full
/// pipe) and handed back by [`BgProcess::wait_timeout`].
pub struct BgProcess {
    desc: String,
    child: Option<Child>,
    stdout: Option<JoinHandle<Vec<u8>>>,
    stderr: Option<JoinHandle<Vec<u8>>>,
}

impl BgProcess {
    /// Spawn `cmd` with stdin closed and stdout/stderr captured.
    pub fn spawn(cmd: &mut Command, desc: impl Into<String>) -> Result<BgProcess> {
        let desc = desc.into();
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("spawning `{desc}`"))?;
        let stdout = child.stdout.take().map(reader_thread);
        let stderr = child.stderr.take().map(reader_thread);
        Ok(BgProcess {
            desc,
            child: Some(child),
            stdout,
            stderr,
        })
    }

    /// The command line this process was started with.
    pub fn desc(&self) -> &str {
        &self.desc
    }

    /// OS process id.
    pub fn id(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// `true` while the child has not exited.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Wait for the child to exit, at most `timeout`; then kill it and fail.
    pub fn wait_timeout(mut self, timeout: Duration) -> Result<Output> {
        let deadline = Instant::now() + timeout;
        let status = loop {
            let child = self.child.as_mut().expect("child present until consumed");
            if let Some(st) = child.try_wait().context("try_wait")? {
                break Some(st);
            }
            if Instant::now() >= deadline {
                break None;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        match status {
            Some(st) => Ok(self.collect(st)),
            None => {
                let out = self.kill_collect();
                Err(anyhow!(
                    "`{}` timed out after {:?}; stdout: {} stderr: {}",
                    self.desc,
                    timeout,
                    tail(&out.stdout),
                    tail(&out.stderr)
                ))
            }
        }
    }

    /// Kill the child now and return what it printed.
    pub fn kill(mut self) -> Output {
        self.kill_collect()
    }

    fn kill_collect(&mut self) -> Output {
        let mut child = self.child.take().expect("child present until consumed");
        let _ = child.kill();
        let st = child.wait().unwrap_or_else(|_| exit_status_failed());
        self.child = None;
        self.collect_status(st)
    }

    fn collect(&mut self, st: ExitStatus) -> Output {
        self.child = None;
        self.collect_status(st)
    }

    fn collect_status(&mut self, status: ExitStatus) -> Output {
        let stdout = self
            .stdout
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        let stderr = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        Output {
            status,
            stdout,
            stderr,
        }
    }
}

impl Drop for BgProcess {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // The pipes close when the child dies; reap the reader threads.
        if let Some(h) = self.stdout.take() {
            let _ = h.join();
        }
        if let Some(h) = self.stderr.take() {
            let _ = h.join();
        }
    }
}

fn reader_thread<R: Read + Send + 'static>(mut r: R) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

fn exit_status_failed() -> ExitStatus {
    use std::os::unix::process::ExitStatusExt;
    ExitStatus::from_raw(1 << 8)
}

fn tail(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    let s = s.trim();
    let n = s.chars().count();
    if n > 2000 {
        s.chars().skip(n - 2000).collect()
    } else {
        s.to_string()
    }
}

/// RAII guard for a network namespace (`ip netns add NAME` / `ip netns del NAME`).
///
/// On drop, every process still inside the namespace (`ip netns pids`) is killed and the
/// namespace is deleted. Errors on drop are printed, never panicked on.
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Create a namespace with exactly this name (fails if it exists). Brings `lo` up.
    pub fn new(name: &str) -> Result<NetNs> {
        run_checked(Command::new("ip").args(["netns", "add", name]), CMD_TIMEOUT)
            .with_context(|| format!("creating netns {name}"))?;
        let ns = NetNs {
            name: name.to_string(),
        };
        ns.run(["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Create a namespace named `{prefix}-{pid}-{counter}`, unique within this host as long as
    /// pids are.
    pub fn unique(prefix: &str) -> Result<NetNs> {
        NetNs::new(&unique_name(prefix))
    }

    /// The namespace name (as given to `ip netns`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A `Command` that runs `program` inside the namespace (`ip netns exec NAME program`).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    fn command_from<I, S>(&self, args: I) -> Result<Command>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut it = args.into_iter();
        let prog = it.next().ok_or_else(|| anyhow!("empty command"))?;
        let mut c = self.command(prog);
        c.args(it);
        Ok(c)
    }

    /// Run `args` inside the namespace and return its output, whatever the exit status
    /// (killed after [`CMD_TIMEOUT`]).
    pub fn exec<I, S>(&self, args: I) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.exec_timeout(args, CMD_TIMEOUT)
    }

    /// [`NetNs::exec`] with an explicit timeout.
    pub fn exec_timeout<I, S>(&self, args: I, timeout: Duration) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        output_with_timeout(&mut self.command_from(args)?, timeout)
    }

    /// Run `args` inside the namespace; fail (with its stderr) unless it exits 0. Returns stdout.
    pub fn run<I, S>(&self, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        run_checked(&mut self.command_from(args)?, CMD_TIMEOUT)
            .with_context(|| format!("in netns {}", self.name))
    }

    /// Start `args` in the background inside the namespace. The returned guard kills it on drop.
    pub fn spawn<I, S>(&self, args: I) -> Result<BgProcess>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut c = self.command_from(args)?;
        let desc = describe(&c);
        BgProcess::spawn(&mut c, desc)
    }

    /// `sysctl -w key=value` inside the namespace (only per-netns keys make sense: `net.*`).
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        self.run(["sysctl", "-q", "-w", &format!("{key}={value}")])
            .map(|_| ())
    }

    /// Interface index of `ifname` inside the namespace (from `ip -j link show`).
    pub fn ifindex(&self, ifname: &str) -> Result<u32> {
        let out = self.run(["ip", "-j", "link", "show", "dev", ifname])?;
        parse_ifindex(&out).with_context(|| format!("ifindex of {ifname} in {}", self.name))
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Kill what still runs inside (processes this test started there), then delete.
        if let Ok(out) = output_with_timeout(
            Command::new("ip").args(["netns", "pids", &self.name]),
            CMD_TIMEOUT,
        ) {
            for pid in String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
                .filter(|&p| p > 1)
            {
                // SAFETY: plain kill(2) on a pid found inside our own namespace.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
        match output_with_timeout(
            Command::new("ip").args(["netns", "del", &self.name]),
            CMD_TIMEOUT,
        ) {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!(
                "lab: ip netns del {} failed: {}",
                self.name,
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => eprintln!("lab: ip netns del {}: {e:#}", self.name),
        }
    }
}

/// `{prefix}-{pid}-{counter}`.
pub fn unique_name(prefix: &str) -> String {
    let n = NS_COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{n}", std::process::id())
}

/// Parse the `ifindex` of the first entry of `ip -j link show` output.
pub fn parse_ifindex(json: &str) -> Result<u32> {
    let v: serde_json::Value = serde_json::from_str(json).context("ip -j link output")?;
    v.get(0)
        .and_then(|l| l.get("ifindex"))
        .and_then(|i| i.as_u64())
        .map(|i| i as u32)
        .ok_or_else(|| anyhow!("no ifindex in {json}"))
}

/// Run `f` on a fresh thread that first enters the network namespace `name` (the
/// `/var/run/netns/NAME` bind mount `ip netns add` creates) with `setns(CLONE_NEWNET)`, and
/// return what `f` returns. Only that thread changes namespace, so the caller stays where it
/// is; a panic inside `f` is re-raised here.
///
/// Use it for what resolves interfaces in the *current* namespace: attaching XDP/TC programs
/// by name or ifindex (`Dataplane::attach_xdp`, aya's `Xdp::attach`), `if_nametoindex`.
/// Objects created inside (e.g. a `Dataplane`, an `aya::Ebpf`) can be returned and used from
/// any thread afterwards: map updates and dropping links do not depend on the namespace.
pub fn in_netns<T, F>(name: &str, f: F) -> Result<T>
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    use std::os::fd::AsRawFd;
    let path = format!("/var/run/netns/{name}");
    let file = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
    std::thread::scope(|s| {
        let h = s.spawn(|| -> Result<T> {
            // SAFETY: setns(2) on an open namespace fd; affects only this (scoped) thread.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            if rc != 0 {
                bail!(
                    "setns({path}, CLONE_NEWNET): {}",
                    std::io::Error::last_os_error()
                );
            }
            Ok(f())
        });
        match h.join() {
            Ok(r) => r,
            Err(payload) => std::panic::resume_unwind(payload),
        }
    })
}

impl NetNs {
    /// [`in_netns`] for this namespace.
    pub fn run_in<T, F>(&self, f: F) -> Result<T>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        in_netns(&self.name, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_differ() {
        let a = unique_name("t");
        let b = unique_name("t");
        assert_ne!(a, b);
        assert!(a.starts_with(&format!("t-{}-", std::process::id())));
    }

    #[test]
    fn ifindex_parse() {
        let j = r#"[{"ifindex":7,"ifname":"sub0","flags":["UP"]}]"#;
        assert_eq!(parse_ifindex(j).unwrap(), 7);
        assert!(parse_ifindex("[]").is_err());
    }

    #[test]
    fn timeout_kills() {
        let t0 = Instant::now();
        let r = output_with_timeout(Command::new("sleep").arg("5"), Duration::from_millis(200));
        assert!(r.is_err());
        assert!(t0.elapsed() < Duration::from_secs(3));
        let ok =
            output_with_timeout(Command::new("echo").arg("hi"), Duration::from_secs(5)).unwrap();
        assert_eq!(String::from_utf8_lossy(&ok.stdout).trim(), "hi");
    }
}
