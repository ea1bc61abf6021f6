//! The CLI's `--help` is part of its interface: pinned against committed snapshots.
//! After an intended change, regenerate them with `UPDATE_SNAPSHOTS=1 cargo test -p falco-testenv --test cli`.

use std::path::Path;
use std::process::Command;

fn assert_help(args: &[&str], snapshot: &str) {
    falco_testenv::snapshot::assert_help_snapshot(
        Path::new(env!("CARGO_BIN_EXE_falco-testenv")),
        args,
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/snapshots")
            .join(snapshot),
    );
}

#[test]
fn help_is_pinned() {
    assert_help(&["--help"], "help.txt");
    assert_help(&["up", "--help"], "up-help.txt");
}

#[test]
fn a_bad_flag_is_one_clear_error_and_a_non_zero_exit() {
    let out = Command::new(env!("CARGO_BIN_EXE_falco-testenv"))
        .args(["up", "--no-such-flag"])
        .output()
        .expect("run falco-testenv");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("unexpected argument '--no-such-flag'"),
        "{stderr}"
    );
}
