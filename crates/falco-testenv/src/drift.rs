//! The drift check of generated CRD files, shared by the binaries that generate them.

use std::path::Path;
use std::process::Command;

fn run_crd(binary: &Path, args: &[&str]) -> String {
    let out = Command::new(binary)
        .arg("crd")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display()));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// Asserts that `deploy/crds/` holds exactly what `<binary> crd --output-dir` writes, and that
/// `<binary> crd` prints the same CRDs on stdout.
///
/// # Panics
/// With a message naming the stale file and the command that regenerates it.
pub fn assert_committed_crds_match(binary: &Path) {
    let generated = tempfile::tempdir().expect("tempdir");
    let dir = generated.path().to_str().expect("utf-8 path");
    let written = run_crd(binary, &["--output-dir", dir]);
    let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/crds");
    // "wrote <path>" lines, in the order the CRDs are printed on stdout.
    let names: Vec<_> = written
        .lines()
        .filter_map(|l| {
            Path::new(l.trim_start_matches("wrote "))
                .file_name()
                .map(ToOwned::to_owned)
        })
        .collect();
    assert!(
        !names.is_empty(),
        "`{} crd` wrote no file",
        binary.display()
    );
    let mut stream = String::new();
    for name in &names {
        let want = std::fs::read_to_string(generated.path().join(name)).expect("generated file");
        let have = std::fs::read_to_string(committed.join(name)).unwrap_or_default();
        assert!(
            want == have,
            "deploy/crds/{} is out of date with the Rust types: run `make crds` and commit the result",
            name.to_string_lossy()
        );
        stream.push_str(&want);
    }
    assert_eq!(
        run_crd(binary, &[]),
        stream,
        "stdout and --output-dir must render the same CRDs"
    );
}
