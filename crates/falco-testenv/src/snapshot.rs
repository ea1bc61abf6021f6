//! `--help` snapshots: a binary's help is part of its interface (scripts, the operator and the
//! chart start the binaries with flags), so each binary's tests pin it against committed files.
//! After an intended change: `UPDATE_SNAPSHOTS=1 cargo test -p <crate> --test cli`.

use std::path::Path;
use std::process::Command;

/// Runs `binary args…` with an empty environment (env fallbacks would change the help) and
/// asserts its stdout equals `snapshot`; with `UPDATE_SNAPSHOTS` set, rewrites `snapshot` first.
pub fn assert_help_snapshot(binary: &Path, args: &[&str], snapshot: &Path) {
    let out = Command::new(binary)
        .args(args)
        .env_clear()
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", binary.display()));
    assert!(
        out.status.success(),
        "{} {} failed: {}",
        binary.display(),
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    let help = String::from_utf8(out.stdout).expect("help is UTF-8");
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        if let Some(dir) = snapshot.parent() {
            std::fs::create_dir_all(dir).expect("create the snapshot directory");
        }
        std::fs::write(snapshot, &help).expect("write the snapshot");
    }
    let pinned = std::fs::read_to_string(snapshot).unwrap_or_default();
    assert!(
        help == pinned,
        "`{} {}` changed; see {} (UPDATE_SNAPSHOTS=1 to accept):\n{help}",
        binary.file_name().unwrap_or_default().to_string_lossy(),
        args.join(" "),
        snapshot.display()
    );
}
