//! The CLI's `--help` is part of its interface (the instance operator and the demo start this
//! binary with flags and env): pinned against committed snapshots.
//! After an intended change, regenerate them with
//! `UPDATE_SNAPSHOTS=1 cargo test -p falco-artifact-operator --test cli`.

use std::path::Path;
use std::process::Command;

fn assert_help(args: &[&str], snapshot: &str) {
    falco_testenv::snapshot::assert_help_snapshot(
        Path::new(env!("CARGO_BIN_EXE_falco-artifact-operator")),
        args,
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/snapshots")
            .join(snapshot),
    );
}

#[test]
fn help_is_pinned() {
    assert_help(&["--help"], "help.txt");
    assert_help(&["run", "--help"], "run-help.txt");
}

#[test]
fn run_without_a_node_name_is_one_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_falco-artifact-operator"))
        .args(["run", "--namespace", "falco"])
        .env_clear()
        .output()
        .expect("run falco-artifact-operator");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--node-name <NODE_NAME>"), "{stderr}");
}
