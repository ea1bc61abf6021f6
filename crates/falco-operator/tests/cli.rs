//! The CLI's `--help` is part of its interface: pinned against committed snapshots.
//! After an intended change, regenerate them with
//! `UPDATE_SNAPSHOTS=1 cargo test -p falco-operator --test cli`.

use std::path::Path;
use std::process::Command;

fn run(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_falco-operator"))
        .args(args)
        .env_clear()
        .output()
        .expect("run falco-operator")
}

fn assert_help(args: &[&str], snapshot: &str) {
    falco_testenv::snapshot::assert_help_snapshot(
        Path::new(env!("CARGO_BIN_EXE_falco-operator")),
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
    assert_help(&["driver-coverage", "--help"], "driver-coverage-help.txt");
}

#[test]
fn rbac_prints_the_cluster_role() {
    let out = run(&["rbac", "--name", "x"]);
    assert!(out.status.success());
    let yaml = String::from_utf8(out.stdout).unwrap();
    assert!(yaml.contains("kind: ClusterRole"), "{yaml}");
    assert!(yaml.contains("name: x"));
    assert!(yaml.contains("coordination.k8s.io"));
}

#[test]
fn a_bad_bind_address_is_one_clear_error() {
    let out = run(&["run", "--metrics-bind-address", "nonsense"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("nonsense"), "{stderr}");
}
