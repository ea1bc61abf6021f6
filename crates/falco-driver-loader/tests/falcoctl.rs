//! The loader against the real falcoctl v0.13.0 on the same fake host roots: target, kernel
//! release and kernel version must be the ones falcoctl computes (`driver printenv`), and
//! where falcoctl is unsafe (a kernel version that climbs out of the cache, an os-release
//! link out of the host root) the loader refuses or stays inside the host root.
//!
//! falcoctl is found at `$FALCO_FALCOCTL_BIN` (the binary) or in the per-machine cache that
//! `hack/build-falcoctl.sh` fills; when it is missing the test fails and says so.

mod common;

use std::path::{Path, PathBuf};

use common::*;

/// The falcoctl binary, or a failure that says how to get it.
fn falcoctl() -> PathBuf {
    if let Some(path) = std::env::var_os("FALCO_FALCOCTL_BIN") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "FALCO_FALCOCTL_BIN={} is not a file; run hack/build-falcoctl.sh",
            path.display()
        );
        return path;
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/root/.cache"))
        .join("falco-operator/falcoctl");
    let found = std::fs::read_dir(&cache).ok().and_then(|dirs| {
        let mut bins: Vec<PathBuf> = dirs
            .flatten()
            .map(|d| d.path().join("bin/falcoctl"))
            .filter(|p| p.is_file())
            .collect();
        bins.sort();
        bins.pop()
    });
    found.unwrap_or_else(|| {
        panic!(
            "falcoctl not found (FALCO_FALCOCTL_BIN unset, nothing under {}); run hack/build-falcoctl.sh",
            cache.display()
        )
    })
}

/// A host root holding `files` (path, content) and `links` (path, target).
fn host(files: &[(&str, &str)], links: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("host");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    for (path, content) in files {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    for (path, target) in links {
        std::os::unix::fs::symlink(target, root.join(path)).unwrap();
    }
    std::fs::create_dir_all(dir.path().join("home")).unwrap();
    dir
}

/// `KEY="value"` lines into pairs (values unquoted as Go's %q writes them for plain text).
fn pairs(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.trim_matches('"').replace("\\\"", "\"")))
        .collect()
}

fn value(pairs: &[(String, String)], key: &str) -> Option<String> {
    pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
}

const COMPARED: [&str; 6] = [
    "TARGET_ID",
    "KERNEL_RELEASE",
    "KERNEL_VERSION",
    "FIXED_KERNEL_RELEASE",
    "FIXED_KERNEL_VERSION",
    "DRIVER_VERSION",
];

/// Runs `printenv` of falcoctl and of the loader on one host root; returns both outputs
/// (success, stdout, stderr).
async fn both(dir: &Path, kr: &str, kv: &str) -> ((bool, String, String), (bool, String, String)) {
    let root = dir.join("host");
    let config = dir.join("falcoctl.yaml");
    let common_args = |cmd: &mut tokio::process::Command| {
        cmd.env_clear()
            .env("HOME", dir.join("home"))
            .arg("--host-root")
            .arg(&root)
            .args(["--version", VERSION, "--type", "kmod"])
            .args(["--repo", "http://127.0.0.1:9/driver"])
            .args(["--kernelrelease", kr, "--kernelversion", kv]);
    };
    let mut reference = tokio::process::Command::new(falcoctl());
    reference
        .args(["driver", "printenv", "--config"])
        .arg(&config);
    common_args(&mut reference);
    let mut loader = tokio::process::Command::new(env!("CARGO_BIN_EXE_falco-driver-loader"));
    loader
        .args([
            "printenv",
            "--arch",
            "x86_64",
            "--log-format=text",
            "--config",
        ])
        .arg(&config);
    common_args(&mut loader);
    (run(reference).await, run(loader).await)
}

async fn same_as_falcoctl(dir: &Path, kr: &str, kv: &str, want: (&str, &str, &str)) {
    let ((ok_ref, out_ref, err_ref), (ok, out, err)) = both(dir, kr, kv).await;
    assert!(ok_ref, "falcoctl failed: {err_ref}");
    assert!(ok, "loader failed: {err}");
    let (reference, ours) = (pairs(&out_ref), pairs(&out));
    for key in COMPARED {
        assert_eq!(
            value(&ours, key),
            value(&reference, key),
            "{key} differs from falcoctl's for {kr} / {kv}\nfalcoctl:\n{out_ref}\nloader:\n{out}"
        );
    }
    assert_eq!(
        (
            value(&ours, "TARGET_ID").unwrap().as_str(),
            value(&ours, "FIXED_KERNEL_RELEASE").unwrap().as_str(),
            value(&ours, "FIXED_KERNEL_VERSION").unwrap().as_str()
        ),
        want
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn os_release_comments_match_falcoctl() {
    let dir = host(
        &[("etc/os-release", "NAME=\"Ubuntu\"\nID=ubuntu # comment\n")],
        &[],
    );
    same_as_falcoctl(
        dir.path(),
        "5.15.0-100-generic",
        "#110-Ubuntu SMP",
        ("ubuntu-generic", "5.15.0-100-generic", "110"),
    )
    .await;
    // And the URL is the one falcoctl fetches (`ubuntu-generic`, no `#` in it).
    let ((_, _, _), (_, out, _)) = both(dir.path(), "5.15.0-100-generic", "#110-Ubuntu SMP").await;
    assert_eq!(
        value(&pairs(&out), "DRIVER_URLS").unwrap(),
        "http://127.0.0.1:9/driver/8.0.0%2Bdriver/x86_64/falco_ubuntu-generic_5.15.0-100-generic_110.ko"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debian_flavours_match_falcoctl() {
    let dir = host(&[("etc/os-release", "ID=debian\nVERSION_ID=\"12\"\n")], &[]);
    for (kr, kv, want) in [
        (
            "6.1.0-18-686-pae",
            "#1 SMP PREEMPT_DYNAMIC Debian 6.1.76-1 (2024-02-01)",
            ("debian", "6.1.76-1", "1"),
        ),
        (
            "6.1.0-18-cloud-amd64",
            "#1 SMP PREEMPT_DYNAMIC Debian 6.1.76-1 (2024-02-01)",
            ("debian", "6.1.76-1-cloud-amd64", "1"),
        ),
        (
            "5.10.0-0.deb10.22-rt-amd64",
            "#1 SMP PREEMPT_DYNAMIC Debian 5.10.178-3",
            ("debian", "5.10.178-3-rt-amd64", "1"),
        ),
    ] {
        same_as_falcoctl(dir.path(), kr, kv, want).await;
    }
}

/// `#1/../../../../pwn SMP` on Ubuntu: falcoctl derives a kernel version with `/` and `..`
/// (its cache path leaves `$HOME/.falco`); the loader refuses with one line naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kernel_version_that_climbs_out_is_refused() {
    let dir = host(&[("etc/os-release", "ID=ubuntu\n")], &[]);
    let kv = "#1/../../../../pwn SMP";
    let ((ok_ref, out_ref, err_ref), (ok, out, err)) = both(dir.path(), "5.15.0", kv).await;
    assert!(ok_ref, "{err_ref}");
    assert_eq!(
        value(&pairs(&out_ref), "FIXED_KERNEL_VERSION").as_deref(),
        Some("1/../../../../pwn"),
        "falcoctl derives the unsafe name: {out_ref}"
    );
    assert!(!ok, "the loader must refuse: {out}");
    assert!(out.is_empty(), "nothing printed: {out}");
    let line = err.trim_end();
    assert_eq!(line.lines().count(), 1, "one line: {err}");
    assert!(
        line.contains("kernel version") && line.contains("1/../../../../pwn"),
        "{err}"
    );
    assert!(!dir.path().join("home/pwn.ko").exists());
}

/// An absolute os-release link is resolved inside the host root; falcoctl follows it into
/// the machine it runs on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absolute_os_release_link_stays_in_the_host_root() {
    let dir = host(
        &[("usr/lib/os-release", "ID=flatcar\nVERSION_ID=3794.0.0\n")],
        &[("etc/os-release", "/usr/lib/os-release")],
    );
    let ((ok_ref, out_ref, _), (ok, out, err)) = both(dir.path(), "6.1.62-flatcar", "#1 SMP").await;
    assert!(ok, "{err}");
    let ours = pairs(&out);
    assert_eq!(value(&ours, "TARGET_ID").as_deref(), Some("flatcar"));
    assert_eq!(
        value(&ours, "FIXED_KERNEL_RELEASE").as_deref(),
        Some("3794.0.0")
    );
    // falcoctl reads this machine's /usr/lib/os-release instead (whatever that is), unless
    // the machine happens to be that very Flatcar.
    let machine = std::fs::read_to_string("/usr/lib/os-release").unwrap_or_default();
    if ok_ref && !machine.contains("ID=flatcar") {
        assert_ne!(
            value(&pairs(&out_ref), "TARGET_ID").as_deref(),
            Some("flatcar"),
            "{out_ref}"
        );
    }
}
