//! The repository's real clients against the real server, on upstream's own file names:
//! publish → serve → install by this project's loader and by falcoctl v0.13.0 (built from the
//! Go module proxy by `hack/build-falcoctl.sh`), then mirror and statistics, on local storage
//! and on Garage.
//!
//! The names are the ones a mirror of `download.falco.org` must keep: `~` in Ubuntu HWE and
//! cloud kernel versions (`57~20.04.1`), `+` in the driver version, and minikube's kernel
//! version `1_1.32.0`, whose `_` must not be read as the end of the kernel release.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use support::*;

const V: &str = "8.0.0+driver";
const V_URL: &str = "8.0.0%2Bdriver";

/// An Ubuntu HWE/cloud kernel as `uname -r`/`uname -v` give it, and the file it needs.
const UBUNTU_KR: &str = "5.15.0-1049-gcp";
const UBUNTU_KV: &str = "#57~20.04.1-Ubuntu SMP Wed Nov 15 10:30:55 UTC 2023";
const UBUNTU: &str = "falco_ubuntu-gcp_5.15.0-1049-gcp_57~20.04.1.ko";
/// minikube: kernel version `1_<minikube version>`.
const MINIKUBE_KR: &str = "5.10.57";
const MINIKUBE: &str = "falco_minikube_5.10.57_1_1.32.0.ko";

/// A fake host root with the given files.
fn host_root(dir: &Path, files: &[(&str, &str)]) -> PathBuf {
    for (path, text) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    dir.to_owned()
}

/// Runs this project's loader (dry run: no kernel command is run) as a client of `repo`.
fn loader(host: &Path, home: &Path, repo: &str, kr: &str, kv: &str, extra: &[&str]) -> Output {
    Command::new(loader_bin())
        .env_clear()
        .env("HOME", home)
        .arg("--dry-run")
        .args(["--log-format=text", "--config"])
        .arg(home.join("falcoctl.yaml"))
        .arg("--host-root")
        .arg(host)
        .args(["--version", V, "--arch", "x86_64", "--type", "kmod"])
        .args(["--kernelrelease", kr, "--kernelversion", kv, "--repo", repo])
        .args(["install", "--compile=false"])
        .args(extra)
        .output()
        .expect("run falco-driver-loader")
}

/// Runs the real falcoctl's `driver install` as a client of `repo`. It downloads into
/// `$HOME/.falco/<version>/<arch>/` and then tries to load the module, which fails on these
/// machines (the kernel has no module support, and the bytes are not a module): only the
/// download is asserted.
fn falcoctl(host: &Path, home: &Path, repo: &str, kr: &str, kv: &str) -> Output {
    Command::new(falcoctl_bin())
        .env_clear()
        .env("HOME", home)
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .args([
            "driver",
            "install",
            "--type",
            "kmod",
            "--download",
            "--compile=false",
        ])
        .args(["--name", "falco", "--version", V, "--repo", repo])
        .arg("--host-root")
        .arg(host)
        .args(["--kernelrelease", kr, "--kernelversion", kv])
        .output()
        .expect("run falcoctl")
}

fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn cached(home: &Path, file: &str) -> PathBuf {
    home.join(".falco").join(V).join("x86_64").join(file)
}

async fn upstream_names_round_trip(backend: Backend) {
    let (private, public, _keys) = keys();
    let src = tempfile::tempdir().unwrap();
    let ubuntu = write_driver(src.path(), V, "x86_64", UBUNTU, 11, 200_000);
    let minikube = write_driver(src.path(), V, "x86_64", MINIKUBE, 12, 50_000);
    let out = cli_ok(
        &backend,
        &[
            "publish",
            src.path().to_str().unwrap(),
            "--signing-key",
            private.to_str().unwrap(),
        ],
    );
    assert!(out.contains("uploaded 2,"), "{out}");

    // The signed index records the kernel parts as the loader derived them.
    let storage = backend.storage();
    let index = storage
        .read(&format!("driver/{V}/x86_64/index.json"))
        .await
        .unwrap()
        .expect("index.json");
    let index = falco_core::index::DriverIndex::parse(&index).unwrap();
    let entry = index.entry(MINIKUBE).expect("minikube listed");
    assert_eq!(
        (entry.kernelrelease.as_str(), entry.kernelversion.as_str()),
        (MINIKUBE_KR, "1_1.32.0")
    );
    let entry = index.entry(UBUNTU).expect("ubuntu listed");
    assert_eq!(entry.kernelversion, "57~20.04.1");

    let server = Server::start(&backend, &["--stats-flush-interval", "3600"]);
    let repo = server.url("/driver");

    // `~` literal (as falcoctl and this loader send it) and escaped both serve the file.
    let escaped = UBUNTU.replace('~', "%7E");
    for file in [UBUNTU, escaped.as_str()] {
        let r = reqwest::get(server.url(&format!("/driver/{V_URL}/x86_64/{file}")))
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{file}");
        assert_eq!(&r.bytes().await.unwrap()[..], &ubuntu[..], "{file}");
    }

    let hosts = tempfile::tempdir().unwrap();
    let ubuntu_host = host_root(
        &hosts.path().join("ubuntu"),
        &[("etc/os-release", "NAME=\"Ubuntu\"\nID=ubuntu\n")],
    );
    let minikube_host = host_root(
        &hosts.path().join("minikube"),
        &[
            ("etc/os-release", "NAME=Buildroot\nID=buildroot\n"),
            ("etc/VERSION", "v1.32.0\n"),
        ],
    );

    // This project's loader, verifying against the signed index.
    let key = public.to_str().unwrap();
    let verified = ["--trusted-key", key, "--require-verified"];
    for (host, kr, kv, file, bytes) in [
        (&ubuntu_host, UBUNTU_KR, UBUNTU_KV, UBUNTU, &ubuntu),
        (&minikube_host, MINIKUBE_KR, "#1 SMP", MINIKUBE, &minikube),
    ] {
        let home = tempfile::tempdir().unwrap();
        let out = loader(host, home.path(), &repo, kr, kv, &verified);
        assert!(out.status.success(), "loader for {file}: {}", text(&out));
        assert_eq!(
            std::fs::read(cached(home.path(), file)).unwrap(),
            **bytes,
            "{file}"
        );
    }

    // The real falcoctl, on the same hosts and the same server.
    for (host, kr, kv, file, bytes) in [
        (&ubuntu_host, UBUNTU_KR, UBUNTU_KV, UBUNTU, &ubuntu),
        (&minikube_host, MINIKUBE_KR, "#1 SMP", MINIKUBE, &minikube),
    ] {
        let home = tempfile::tempdir().unwrap();
        let out = falcoctl(host, home.path(), &repo, kr, kv);
        let downloaded = std::fs::read(cached(home.path(), file))
            .unwrap_or_else(|e| panic!("falcoctl did not download {file} ({e}): {}", text(&out)));
        assert_eq!(downloaded, **bytes, "falcoctl's {file}");
    }

    // A mirror of this repository keeps the names.
    let copy = Backend::local();
    let out = cli_ok(
        &copy,
        &[
            "mirror",
            "--from",
            &repo,
            "--driver-version",
            V,
            "--arch",
            "x86_64",
        ],
    );
    assert!(out.contains("copied 2"), "{out}");
    let mirrored = copy.storage();
    for (file, bytes) in [(UBUNTU, &ubuntu), (MINIKUBE, &minikube)] {
        let stored = mirrored
            .read(&format!("driver/{V}/x86_64/{file}"))
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{file} not mirrored"));
        assert_eq!(&stored[..], &bytes[..], "{file}");
    }

    // Statistics split the names like the index does.
    server.terminate();
    let stats = cli_ok(&backend, &["stats", "--format", "json"]);
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    let kernels: Vec<(&str, u64)> = stats["by_kernel"]
        .as_array()
        .expect("by_kernel")
        .iter()
        .map(|line| {
            (
                line["key"].as_str().unwrap(),
                line["downloads"].as_u64().unwrap(),
            )
        })
        .collect();
    // One download by each client (the loader, falcoctl, the mirror; for Ubuntu also the two
    // GETs above), recorded under the kernel the loader derived.
    for (kernel, downloads) in [
        ("minikube 5.10.57 1_1.32.0", 3),
        ("ubuntu-gcp 5.15.0-1049-gcp 57~20.04.1", 5),
    ] {
        assert!(
            kernels.contains(&(kernel, downloads)),
            "{kernel} in {kernels:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_names_round_trip_local() {
    upstream_names_round_trip(Backend::local()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_names_round_trip_garage() {
    upstream_names_round_trip(Backend::garage()).await;
}

#[test]
fn unsafe_names_are_refused_before_anything_is_written() {
    let (private, _public, _keys) = keys();
    let key = private.to_str().unwrap();
    let backend = Backend::local();
    let src = tempfile::tempdir().unwrap();
    write_driver(
        src.path(),
        V,
        "x86_64",
        "falco_ubuntu generic_5.0.0_1.ko",
        1,
        10,
    );
    let out = cli(
        &backend,
        &[
            "publish",
            src.path().to_str().unwrap(),
            "--signing-key",
            key,
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a driver file name"), "{err}");
    assert!(err.contains("A-Z a-z 0-9 . _ + ~ -"), "{err}");

    let src = tempfile::tempdir().unwrap();
    write_driver(src.path(), "8.0.0 driver", "x86_64", UBUNTU, 1, 10);
    let out = cli(
        &backend,
        &[
            "publish",
            src.path().to_str().unwrap(),
            "--signing-key",
            key,
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("driver version \"8.0.0 driver\" is not a repository path segment"),
        "{err}"
    );
    let Backend::Local(dir) = &backend else {
        unreachable!()
    };
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing written"
    );
}
