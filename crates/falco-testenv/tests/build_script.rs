//! `hack/build-testenv.sh` fails with a message naming what is missing, never silently.

use std::path::Path;
use std::process::Command;

fn script() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../hack/build-testenv.sh")
}

#[test]
fn without_go_the_build_names_go() {
    let cache = tempfile::tempdir().expect("tempdir");
    let out = Command::new("bash")
        .arg(script())
        .env("PATH", "/usr/bin:/bin")
        .env("XDG_CACHE_HOME", cache.path())
        .env_remove("FALCO_TESTENV_BIN")
        .output()
        .expect("run the script");
    let stderr = String::from_utf8_lossy(&out.stderr);
    if Path::new("/usr/bin/go").exists() || Path::new("/bin/go").exists() {
        // Go installed in the system PATH cannot be hidden; the other test still runs.
        return;
    }
    assert!(!out.status.success());
    assert!(stderr.contains("Go is not installed"), "{stderr}");
}

#[test]
fn without_the_module_proxy_the_build_names_the_proxy() {
    let cache = tempfile::tempdir().expect("tempdir");
    let out = Command::new("bash")
        .arg(script())
        .env("XDG_CACHE_HOME", cache.path())
        .env("GOMODCACHE", cache.path().join("gomod"))
        .env("GOPROXY", "off")
        .env_remove("FALCO_TESTENV_BIN")
        .output()
        .expect("run the script");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "built without a module proxy?\n{stderr}"
    );
    assert!(
        stderr.contains("from the Go module proxy (off)"),
        "the error must name the module proxy: {stderr}"
    );
}
