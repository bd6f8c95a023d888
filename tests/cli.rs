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

/// `shaper check` reads every file `shaper run` will: a bad tokens file fails the check
/// (before, only `run` found it, after the data plane was already applied).
#[test]
fn check_refuses_a_bad_tokens_file() {
    let dir = std::env::temp_dir().join(format!("shaper-cli-tokens-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let tokens = dir.join("tokens.toml");
    let config = dir.join("shaper.toml");
    let text = format!(
        "{}\n[controller]\nstore = \"{}\"\nlisten = \"127.0.0.1:18099\"\ntokens_file = \"{}\"\n",
        std::fs::read_to_string(SHIPPED).unwrap(),
        dir.join("shaper.db").display(),
        tokens.display()
    );
    std::fs::write(&config, text).unwrap();
    let check = || shaper(&["check", "--config", config.to_str().unwrap()]);
    std::fs::write(
        &tokens,
        "[[token]]\nsha256 = \"not-a-digest\"\nrole = \"admin\"\nsubject = \"root\"\n",
    )
    .unwrap();
    let (code, _, err) = check();
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("controller.tokens_file") && err.contains("token[0].sha256"),
        "{err}"
    );
    std::fs::remove_file(&tokens).unwrap();
    let (code, _, err) = check();
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("reading"), "{err}");
    let digest = "0".repeat(64);
    std::fs::write(
        &tokens,
        format!("[[token]]\nsha256 = \"{digest}\"\nrole = \"admin\"\nsubject = \"root\"\n"),
    )
    .unwrap();
    let (code, out, err) = check();
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("controller on 127.0.0.1:18099"), "{out}");
}
