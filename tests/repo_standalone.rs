//! The repository stands on its own: a person who clones it has every document the code and
//! the docs point to. No tracked file may refer to a directory outside the repository
//! (the notes outside the repository the project started from), and every `docs/<NAME>.md` a tracked
//! file names must exist (docs/ARCHITECTURE.md, docs/PROTOCOLS.md, docs/DATAPLANE.md, …).
//!
//! Reads the files `git ls-files` lists from the repository root; needs `git` and a checkout.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository root (this crate lives in `shaper-user/`).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("shaper-user has a parent directory")
        .to_path_buf()
}

/// Every tracked file, relative to the root, with its contents (a file deleted in the work
/// tree but still tracked is skipped: it is not what a clone of the next commit holds).
fn tracked() -> Vec<(String, Vec<u8>)> {
    let out = Command::new("git")
        .args(["ls-files", "-z"])
        .current_dir(root())
        .output()
        .expect("running `git ls-files` (install git; the test reads the tracked files)");
    assert!(
        out.status.success(),
        "`git ls-files` failed in {}: {}",
        root().display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let files: Vec<(String, Vec<u8>)> = out
        .stdout
        .split(|b| *b == 0)
        .filter(|p| !p.is_empty())
        .filter_map(|p| {
            let name = String::from_utf8_lossy(p).into_owned();
            let bytes = std::fs::read(root().join(&name)).ok()?;
            Some((name, bytes))
        })
        .collect();
    assert!(
        files.len() > 100,
        "`git ls-files` listed only {} files: not the repository",
        files.len()
    );
    files
}

/// 1-based line numbers of `line`s containing `needle`.
fn lines_with(bytes: &[u8], needle: &str) -> Vec<usize> {
    String::from_utf8_lossy(bytes)
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains(needle))
        .map(|(i, _)| i + 1)
        .collect()
}

/// This file names the forbidden path in its own checks.
const SELF: &str = "tests/repo_standalone.rs";

#[test]
fn no_tracked_file_refers_outside_the_repository() {
    // Spelled in two pieces so that this line is not itself a hit.
    let needle = ["../", "shared"].concat();
    let hits: Vec<String> = tracked()
        .iter()
        .filter(|(name, _)| name != SELF)
        .flat_map(|(name, bytes)| {
            lines_with(bytes, &needle)
                .into_iter()
                .map(move |n| format!("{name}:{n}"))
        })
        .collect();
    assert!(
        hits.is_empty(),
        "{} reference(s) to {needle} (not part of the repository; point to docs/ instead): {}",
        hits.len(),
        hits.join(", ")
    );
}

#[test]
fn every_docs_page_named_exists() {
    let files = tracked();
    let mut missing = Vec::new();
    for (name, bytes) in &files {
        let text = String::from_utf8_lossy(bytes);
        for (i, line) in text.lines().enumerate() {
            let mut rest = line;
            while let Some(at) = rest.find("docs/") {
                let tail = &rest[at + "docs/".len()..];
                let page: String = tail
                    .chars()
                    .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '-')
                    .collect();
                if !page.is_empty() && tail[page.len()..].starts_with(".md") {
                    let path = format!("docs/{page}.md");
                    if !root().join(&path).is_file() {
                        missing.push(format!("{name}:{} names {path}", i + 1));
                    }
                }
                rest = tail;
            }
        }
    }
    assert!(
        missing.is_empty(),
        "{} reference(s) to docs pages that do not exist: {}",
        missing.len(),
        missing.join(", ")
    );
}
