//! The `shaper` command as an operator meets it: `check` accepts the shipped configuration and
//! refuses a broken one with the offending key and a non-zero exit.

use std::process::Command;

fn shaper(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_shaper"))
        .args(args)
        .output()
        .expect("run shaper");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const SHIPPED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/shaper.toml");

#[test]
fn check_accepts_the_shipped_config() {
    let (code, out, err) = shaper(&["check", "--config", SHIPPED]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("ok (2 interfaces, 3 classes, 2 subscribers, 1 rules)"),
        "{out}"
    );
}

#[test]
fn check_names_the_offending_key() {
    let text = std::fs::read_to_string(SHIPPED)
        .unwrap()
        .replace("burst = 250000", "burst = 100");
    let path = std::env::temp_dir().join(format!("shaper-cli-{}.toml", std::process::id()));
    std::fs::write(&path, text).unwrap();
    let (code, _, err) = shaper(&["check", "--config", path.to_str().unwrap()]);
    std::fs::remove_file(&path).ok();
    assert_eq!(code, 1);
    assert!(
        err.contains(
            "class[0].burst: class 1: burst 100 bytes is smaller than one MTU (1500 bytes)"
        ),
        "{err}"
    );
    let (code, _, err) = shaper(&["check", "--config", "/nonexistent/shaper.toml"]);
    assert_eq!(code, 1);
    assert!(err.contains("reading /nonexistent/shaper.toml"), "{err}");
}

#[test]
fn run_refuses_an_unknown_interface_without_attaching_anything() {
    let text = std::fs::read_to_string(SHIPPED)
        .unwrap()
        .replace("name = \"sub0\"", "name = \"nosuchif0\"")
        .replace("interface = \"sub0\"", "interface = \"nosuchif0\"")
        .replace(
            "/sys/fs/bpf/shaper\"",
            &format!("/sys/fs/bpf/shaper-cli-{}\"", std::process::id()),
        );
    let path = std::env::temp_dir().join(format!("shaper-cli-run-{}.toml", std::process::id()));
    std::fs::write(&path, text).unwrap();
    let (code, _, err) = shaper(&["run", "--config", path.to_str().unwrap()]);
    std::fs::remove_file(&path).ok();
    assert_eq!(code, 1);
    assert!(
        err.contains("interface[0].name: no interface \"nosuchif0\" in this network namespace"),
        "{err}"
    );
    assert!(
        !std::path::Path::new(&format!("/sys/fs/bpf/shaper-cli-{}", std::process::id())).exists(),
        "nothing may be loaded or pinned before the configuration is known to fit this host"
    );
}
