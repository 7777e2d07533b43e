//! Helpers shared by the end-to-end tests of the `copra-lab` binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The binary, with progress bars hidden.
pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_copra-lab"));
    c.arg("--quiet");
    c
}

/// A fresh, empty scratch directory for one test.
pub fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("copra-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs a command to completion.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("binary runs")
}

/// The command's stderr as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// The command's stdout as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// Asserts a failure with exactly one line on stderr, no panic, containing `needle`.
pub fn assert_one_line_error(o: &Output, needle: &str) {
    let err = stderr(o);
    assert!(!o.status.success(), "expected failure, got success: {}", stdout(o));
    assert!(!err.contains("panicked"), "panic: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "expected one line, got: {err}");
    assert!(err.contains(needle), "expected '{needle}' in: {err}");
}

/// Asserts the command did not panic (exit code 101 or a panic message).
pub fn assert_no_panic(o: &Output, what: &str) {
    let err = stderr(o);
    assert!(!err.contains("panicked") && o.status.code() != Some(101), "{what}: panic: {err}");
    assert!(o.status.code().is_some(), "{what}: killed by a signal: {err}");
}

/// Quick training settings: few steps, a small test split and few shots.
pub const QUICK: &[&str] = &["--steps", "12", "--test-size", "200", "--shots", "4"];

/// The only run directory below a runs root (`<task>/<method>/<seed-key>`).
pub fn run_dir_of(root: &Path) -> PathBuf {
    let mut p = root.to_path_buf();
    for _ in 0..3 {
        p = std::fs::read_dir(&p).unwrap().next().unwrap().unwrap().path();
    }
    p
}

/// Every file below `root` whose name contains `needle`, recursively.
pub fn files_named(root: &Path, needle: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(root) else { return out };
    for e in rd.flatten() {
        let p = e.path();
        if p.file_name().is_some_and(|n| n.to_string_lossy().contains(needle)) {
            out.push(p.clone());
        }
        if p.is_dir() {
            out.extend(files_named(&p, needle));
        }
    }
    out
}
