//! The command line: help snapshot, errors, printenv, the entrypoint form, and the exact
//! host command sequence of an install (in process, with a scripted runner).

mod common;

use std::path::{Path, PathBuf};

use common::*;
use falco_core::driver::{Arch, DriverType};
use falco_driver_loader::cli::DriverSettings;
use falco_driver_loader::download::HttpOptions;
use falco_driver_loader::host::{CommandOutput, ScriptedRunner};
use falco_driver_loader::install::{InstallOptions, Outcome, Source, install};
use falco_driver_loader::kmod::KmodOptions;
use falco_driver_loader::resolve::{KernelFacts, resolve};

fn bin() -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_falco-driver-loader"));
    cmd.env_clear();
    cmd
}

/// Compares with a committed snapshot; `UPDATE_SNAPSHOTS=1` rewrites it.
fn check_snapshot(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots")
        .join(name);
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with UPDATE_SNAPSHOTS=1 to create it)",
            path.display()
        )
    });
    assert_eq!(
        actual, expected,
        "{name} changed; rerun with UPDATE_SNAPSHOTS=1 if intended"
    );
}

#[tokio::test]
async fn help_is_pinned() {
    for (args, snapshot) in [
        (vec!["--help"], "help.txt"),
        (vec!["install", "--help"], "install-help.txt"),
        (vec!["kmod", "--help"], "entrypoint-help.txt"),
    ] {
        let mut cmd = bin();
        cmd.args(&args);
        let (ok, out, err) = run(cmd).await;
        assert!(ok, "{err}");
        check_snapshot(snapshot, &out);
    }
}

#[tokio::test]
async fn bad_flags_give_one_error_line() {
    for args in [
        vec!["--bogus", "printenv"],
        vec!["--type", "foo", "printenv"],
        vec!["install", "--http-timeout", "10"],
        vec!["nosuchcommand"],
    ] {
        let mut cmd = bin();
        cmd.args(&args);
        let (ok, out, err) = run(cmd).await;
        assert!(!ok, "{args:?} succeeded");
        assert!(out.is_empty());
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("error: "), "{err}");
    }
}

#[tokio::test]
async fn bad_host_roots_give_one_error_line() {
    let sb = Sandbox::new();
    let file = sb.dir.path().join("file");
    std::fs::write(&file, "").unwrap();
    for (root, message) in [
        (
            "/nonexistent/host".to_owned(),
            "error: host-root /nonexistent/host: No such file or directory",
        ),
        (
            "relative/host".to_owned(),
            "error: host-root relative/host: must be an absolute path",
        ),
        (file.display().to_string(), "is not a directory"),
    ] {
        let mut cmd = bin();
        cmd.args(["--version", VERSION, "--host-root", &root, "printenv"]);
        let (ok, out, err) = run(cmd).await;
        assert!(!ok);
        assert!(out.is_empty());
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(message), "{err}");
    }
    // HOST_ROOT is honoured too.
    let mut cmd = bin();
    cmd.env("HOST_ROOT", "/nonexistent/host")
        .args(["--version", VERSION, "printenv"]);
    let (ok, _, err) = run(cmd).await;
    assert!(!ok);
    assert!(err.contains("/nonexistent/host"), "{err}");
}

#[tokio::test]
async fn printenv_prints_the_url_falcoctl_would_fetch() {
    let sb = Sandbox::new();
    let mut cmd = bin();
    cmd.env(
        "FALCOCTL_DRIVER_REPOS",
        "https://download.falco.org/driver;https://mirror.example.com/falco",
    )
    .env("HOST_ROOT", sb.host_root())
    .args(["--version", VERSION, "--arch", "x86_64", "--type", "kmod"])
    .args(["--kernelrelease", KR, "--kernelversion", KV, "printenv"]);
    let (ok, out, err) = run(cmd).await;
    assert!(ok, "{err}");
    let host = sb.host_root().display().to_string();
    let expected = format!(
        r##"DRIVER="kmod"
DRIVERS_REPO="https://download.falco.org/driver, https://mirror.example.com/falco"
DRIVER_VERSION="8.0.0+driver"
DRIVER_NAME="falco"
HOST_ROOT="{host}"
TARGET_ID="ubuntu-aws"
ARCH="x86_64"
KERNEL_RELEASE="5.0.0-1028-aws-5.0"
KERNEL_VERSION="#26~22.04.1-Ubuntu SMP Mon Apr 24 01:58:15 UTC 2023"
FIXED_KERNEL_RELEASE="5.0.0-1028-aws-5.0"
FIXED_KERNEL_VERSION="26~22.04.1"
DRIVER_FILENAME="falco_ubuntu-aws_5.0.0-1028-aws-5.0_26~22.04.1.ko"
DRIVER_URLS="https://download.falco.org/driver/8.0.0%2Bdriver/x86_64/falco_ubuntu-aws_5.0.0-1028-aws-5.0_26~22.04.1.ko;https://mirror.example.com/falco/8.0.0%2Bdriver/x86_64/falco_ubuntu-aws_5.0.0-1028-aws-5.0_26~22.04.1.ko"
"##
    );
    assert_eq!(out, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entrypoint_form_configures_falco_then_installs() {
    let repo = Repo::start().await;
    let body = driver_bytes(10_000);
    repo.serve_driver("/r", &body);
    let sb = Sandbox::new();
    let falco_dir = sb.dir.path().join("etc-falco");
    let mut cmd = bin();
    cmd.env("HOME", sb.home())
        .env("HOST_ROOT", sb.host_root())
        .env("FALCOCTL_DRIVER_REPOS", repo.url("/r"))
        .env("FALCOCTL_DRIVER_VERSION", VERSION)
        .args(["--dry-run", "--arch", "x86_64", "--config"])
        .arg(sb.dir.path().join("falcoctl.yaml"))
        .args([
            "kmod",
            "--download",
            "--kernel-release",
            KR,
            "--kernel-version",
            KV,
        ])
        .arg("--falco-config-dir")
        .arg(&falco_dir);
    let (ok, _, err) = run(cmd).await;
    assert!(ok, "{err}");
    assert_eq!(
        std::fs::read_to_string(falco_dir.join("config.d/engine-kind-falcoctl.yaml")).unwrap(),
        "engine:\n  kind: kmod\n"
    );
    let stored = std::fs::read_to_string(sb.dir.path().join("falcoctl.yaml")).unwrap();
    assert!(stored.contains("- kmod"), "{stored}");
    assert_installed(&sb.cached(), &body);
    // --download alone: no compile attempt.
    assert!(!err.contains("compiling"), "{err}");
}

fn settings(sb: &Sandbox, repos: Vec<String>, types: Vec<DriverType>) -> DriverSettings {
    DriverSettings {
        types,
        version: VERSION.into(),
        repos,
        name: "falco".into(),
        host_root: sb.host_root(),
        kernel_release: Some(KR.into()),
        kernel_version: Some(KV.into()),
        arch: Arch::X86_64,
    }
}

fn options(sb: &Sandbox, compile: bool) -> InstallOptions {
    InstallOptions {
        download: true,
        compile,
        require_verified: false,
        trusted_key: None,
        http: HttpOptions::default(),
        home: sb.home(),
        kmod: KmodOptions {
            rmmod_attempts: 3,
            rmmod_wait: std::time::Duration::ZERO,
            ..KmodOptions::default()
        },
    }
}

fn facts(modern_ebpf: bool) -> KernelFacts {
    KernelFacts {
        release: "6.8.0".into(),
        version: "#1".into(),
        modern_ebpf,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_runs_the_exact_kmod_command_sequence() {
    let repo = Repo::start().await;
    let body = driver_bytes(20_000);
    repo.serve_driver("/r", &body);
    let sb = Sandbox::new();
    let resolved = resolve(
        settings(&sb, vec![repo.url("/r")], vec![DriverType::Kmod]),
        &facts(false),
    )
    .unwrap();
    let runner = ScriptedRunner::new()
        .on(
            "lsmod",
            vec![CommandOutput::ok("Module Size Used by\nfalco 7000 0\n")],
        )
        .on(
            "rmmod",
            vec![CommandOutput::failed("in use"), CommandOutput::ok("")],
        )
        .on(
            "dkms status",
            vec![CommandOutput::ok(
                "falco/7.0.0+driver, 5.0.0, x86_64: installed\n",
            )],
        )
        .with_tool("dkms", "/usr/sbin/dkms");
    let outcome = install(&resolved, &options(&sb, true), &runner)
        .await
        .unwrap();
    let cached: PathBuf = sb.cached();
    assert_eq!(
        outcome,
        Outcome::Loaded {
            path: cached.clone(),
            source: Source::Download {
                url: format!("{}/{ESCAPED}/x86_64/{FILE}", repo.url("/r")),
                verification: "sha256 file",
            }
        }
    );
    let p = cached.display();
    assert_eq!(
        runner.calls(),
        [
            "lsmod".to_owned(),
            "rmmod falco".to_owned(),
            "rmmod falco".to_owned(),
            "dkms status -m falco".to_owned(),
            "dkms remove -m falco -v 7.0.0+driver --all".to_owned(),
            format!("chcon -t modules_object_t {p}"),
            format!("insmod {p}"),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_found_falls_back_to_modprobe() {
    let repo = Repo::start().await; // serves nothing: every path is 404
    let sb = Sandbox::new();
    let resolved = resolve(
        settings(
            &sb,
            vec![repo.url("/a"), repo.url("/b")],
            vec![DriverType::Kmod],
        ),
        &facts(false),
    )
    .unwrap();
    let runner = ScriptedRunner::new();
    let outcome = install(&resolved, &options(&sb, false), &runner)
        .await
        .unwrap();
    assert_eq!(outcome, Outcome::Fallback);
    assert_eq!(runner.calls(), ["lsmod", "modprobe falco"]);

    let runner = ScriptedRunner::new().on("modprobe", vec![CommandOutput::failed("not found")]);
    let err = install(&resolved, &options(&sb, false), &runner)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("unable to find a prebuilt driver {FILE} in any repository")
    );
}

#[tokio::test]
async fn modern_ebpf_needs_no_artifact_and_says_so() {
    let sb = Sandbox::new();
    let both = vec![DriverType::ModernEbpf, DriverType::Kmod];
    let resolved = resolve(
        settings(&sb, vec!["http://127.0.0.1:9".into()], both.clone()),
        &facts(true),
    )
    .unwrap();
    assert_eq!(resolved.driver, DriverType::ModernEbpf);
    assert!(resolved.urls().unwrap().is_empty());
    let runner = ScriptedRunner::new();
    let outcome = install(&resolved, &options(&sb, true), &runner)
        .await
        .unwrap();
    assert_eq!(outcome, Outcome::NoArtifact(DriverType::ModernEbpf));
    assert!(runner.calls().is_empty(), "no host command for modern_ebpf");
    // Without kernel support the next type is chosen.
    let resolved = resolve(
        settings(&sb, vec!["http://127.0.0.1:9".into()], both),
        &facts(false),
    )
    .unwrap();
    assert_eq!(resolved.driver, DriverType::Kmod);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_failure_falls_back_to_a_dkms_build() {
    let repo = Repo::start().await; // every path is 404
    let sb = Sandbox::new();
    let root = sb.dir.path();
    std::fs::create_dir_all(root.join("src/falco-8.0.0+driver")).unwrap();
    let module_dir = root.join(format!("dkms/falco/{VERSION}/{KR}/x86_64/module"));
    std::fs::create_dir_all(&module_dir).unwrap();
    std::fs::write(module_dir.join("falco.ko"), b"built by dkms").unwrap();
    let resolved = resolve(
        settings(&sb, vec![repo.url("/r")], vec![DriverType::Kmod]),
        &facts(false),
    )
    .unwrap();
    let mut opts = options(&sb, true);
    opts.kmod.src_root = root.join("src");
    opts.kmod.dkms_root = root.join("dkms");
    let runner = ScriptedRunner::new().with_tool("dkms", "/usr/sbin/dkms");
    let outcome = install(&resolved, &opts, &runner).await.unwrap();
    let cached = sb.cached();
    assert_eq!(
        outcome,
        Outcome::Loaded {
            path: cached.clone(),
            source: Source::Compiled
        }
    );
    assert_installed(&cached, b"built by dkms");
    let p = cached.display();
    // A private dkms tree and source root are passed to every dkms command; `build`, not
    // `install`: the loader loads the module from its cache itself.
    let tree = format!(
        "--dkmstree {} --sourcetree {}",
        root.join("dkms").display(),
        root.join("src").display()
    );
    assert_eq!(
        runner.calls(),
        [
            "lsmod".to_owned(),
            format!("dkms status {tree} -m falco"),
            format!("dkms build {tree} -m falco -v {VERSION} -k {KR}"),
            format!("chcon -t modules_object_t {p}"),
            format!("insmod {p}"),
        ]
    );
    // The repository was asked first.
    assert_eq!(repo.hits(&Repo::driver_path("/r")).len(), 1);
}

/// A kernel version that would climb out of the cache (`#1/../../../../pwn SMP` on Ubuntu) is
/// refused with one line naming it, by printenv and install alike, and nothing is written.
#[tokio::test]
async fn a_derived_name_with_traversal_is_refused() {
    let sb = Sandbox::new();
    for sub in ["printenv", "install"] {
        let mut cmd = bin();
        cmd.env("HOME", sb.home())
            .env("HOST_ROOT", sb.host_root())
            .args(["--version", VERSION, "--arch", "x86_64", "--type", "kmod"])
            .args(["--repo", "http://127.0.0.1:9/driver", "--dry-run"])
            .args(["--kernelrelease", "5.15.0", "--kernelversion"])
            .arg("#1/../../../../pwn SMP")
            .arg(sub);
        let (ok, out, err) = run(cmd).await;
        assert!(!ok, "{sub}: {out}");
        let last = err.trim_end().lines().last().unwrap_or_default();
        assert_eq!(
            last,
            "error: refusing kernel version \"1/../../../../pwn\": it contains /, which must not be in a driver file name or path",
            "{sub}: {err}"
        );
        assert!(out.is_empty(), "{sub}: {out}");
    }
    assert!(!sb.home().join(".falco").exists(), "nothing written");
    assert!(!sb.home().join("pwn.ko").exists());
}

/// Credentials in a repository URL are not printed by printenv.
#[tokio::test]
async fn printenv_redacts_repository_credentials() {
    let sb = Sandbox::new();
    let mut cmd = bin();
    cmd.env("HOST_ROOT", sb.host_root())
        .env(
            "FALCOCTL_DRIVER_REPOS",
            "https://user:s3cret@mirror.example.com/falco",
        )
        .args(["--version", VERSION, "--arch", "x86_64", "--type", "kmod"])
        .args(["--kernelrelease", KR, "--kernelversion", KV, "printenv"]);
    let (ok, out, err) = run(cmd).await;
    assert!(ok, "{err}");
    assert!(
        !out.contains("s3cret") && !err.contains("s3cret"),
        "{out}{err}"
    );
    assert!(
        out.contains("DRIVERS_REPO=\"https://***@mirror.example.com/falco\""),
        "{out}"
    );
}

/// `docker run -e DRIVERS_REPO=… falco-driver-loader kmod --status-file …`: the seed's knob
/// selects the repository in the entrypoint form, and the status file says what happened, on
/// success (downloaded from that repository, sha256, loaded) and on failure (a reason and the
/// error), with a non-zero exit only for the failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drivers_repo_and_the_status_file_in_the_entrypoint_form() {
    use falco_core::driver::status::{DriverOrigin, DriverStatus};
    let repo = Repo::start().await;
    let body = driver_bytes(10_000);
    repo.serve_driver("/seed", &body);
    let sb = Sandbox::new();
    let status_path = sb.dir.path().join("run/status.json");
    let loader = |drivers_repo: String, extra: &[&str]| {
        let mut cmd = bin();
        cmd.env("HOME", sb.home())
            .env("HOST_ROOT", sb.host_root())
            .env("DRIVERS_REPO", drivers_repo)
            .env("FALCOCTL_DRIVER_VERSION", VERSION)
            .args(["--dry-run", "--arch", "x86_64", "--config"])
            .arg(sb.dir.path().join("falcoctl.yaml"))
            .args([
                "kmod",
                "--download",
                "--kernel-release",
                KR,
                "--kernel-version",
                KV,
            ])
            .arg("--falco-config-dir")
            .arg(sb.dir.path().join("etc-falco"))
            .arg("--status-file")
            .arg(&status_path)
            .args(extra);
        cmd
    };
    let (ok, _, err) = run(loader(repo.url("/seed"), &[])).await;
    assert!(ok, "{err}");
    let status = DriverStatus::parse(&std::fs::read(&status_path).unwrap()).expect("status");
    assert!(status.loaded, "{status:?}");
    assert_eq!(status.kind, "kmod");
    assert_eq!(status.origin, Some(DriverOrigin::Downloaded));
    assert_eq!(
        status.repository.as_deref(),
        Some(repo.url("/seed").as_str())
    );
    assert_eq!(status.kernel_release.as_deref(), Some(KR));
    assert_eq!(status.target.as_deref(), Some("ubuntu-aws"));
    assert_eq!(
        status.sha256.as_deref(),
        Some(falco_core::index::sha256_hex(&body).as_str())
    );
    assert_installed(&sb.cached(), &body);

    // A fresh cache, --require-verified and a repository without checksums (nor the driver):
    // the failure is reported with its reason.
    std::fs::remove_dir_all(sb.home().join(".falco")).unwrap();
    let (ok, _, err) = run(loader(repo.url("/empty"), &["--require-verified"])).await;
    assert!(!ok, "{err}");
    let status = DriverStatus::parse(&std::fs::read(&status_path).unwrap()).expect("status");
    assert!(!status.loaded);
    assert_eq!(
        status.reason.as_deref(),
        Some("DriverUnverified"),
        "{status:?}"
    );
    assert!(
        status
            .error
            .as_deref()
            .unwrap()
            .contains("refused because --require-verified is set"),
        "{status:?}"
    );
    assert_eq!(status.kernel_release.as_deref(), Some(KR));
}
