//! The compile fallback for real: the loader builds the Falco kernel driver with dkms from real
//! driver sources and real kernel headers, the repository publishes what it built, and another
//! node downloads it, verified against the signed index.
//!
//! Sources and headers are Debian's: `falcosecurity-scap-dkms` (a 2022 snapshot of the Falco
//! driver, packaged as module `scap` in `/usr/src/scap-<version>`: it proves the build path,
//! not a current driver version) and `linux-headers-<release>` for whatever release the
//! archive had when `hack/install-deps.sh` ran. Everything runs for real (gcc, make, dkms in a
//! private tree, modinfo) except loading: these machines' kernel has no module support, and a
//! test must never load a module into the kernel of the machine that runs it, so `insmod`,
//! `rmmod` and `modprobe` go to a recording runner that refuses them.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use falco_core::driver::{Arch, DriverType};
use falco_driver_loader::cli::DriverSettings;
use falco_driver_loader::host::{CommandOutput, CommandRunner, RealRunner};
use falco_driver_loader::install::{InstallOptions, Outcome, Source, install};
use falco_driver_loader::kmod::KmodOptions;
use falco_driver_loader::resolve::{KernelFacts, resolve};
use support::*;

/// Runs everything for real except the commands that load or unload kernel modules.
#[derive(Default)]
struct NoLoadRunner {
    refused: Mutex<Vec<String>>,
}

const REFUSED: &str = "not run by the test: loading a module into the test machine's kernel";

impl CommandRunner for NoLoadRunner {
    fn run(&self, program: &str, args: &[&str]) -> falco_driver_loader::Result<CommandOutput> {
        if matches!(program, "insmod" | "rmmod" | "modprobe") {
            self.refused
                .lock()
                .unwrap()
                .push(falco_driver_loader::host::shell_line(program, args));
            return Ok(CommandOutput::failed(REFUSED));
        }
        RealRunner.run(program, args)
    }

    fn which(&self, program: &str) -> Option<PathBuf> {
        RealRunner.which(program)
    }
}

/// The driver sources Debian's package installed: `(dir, module name = dkms name, version)`.
fn scap_sources() -> (PathBuf, String) {
    let found = std::fs::read_dir("/usr/src")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("scap-"))
                && p.join("dkms.conf").is_file()
        })
        .unwrap_or_else(|| {
            panic!(
                "no /usr/src/scap-<version>/dkms.conf: run hack/install-deps.sh \
                 (falcosecurity-scap-dkms, dkms, linux-headers-amd64)"
            )
        });
    let version = found.file_name().unwrap().to_string_lossy()["scap-".len()..].to_owned();
    (found, version)
}

/// A kernel release whose headers are installed (`/lib/modules/<release>/build`), with the
/// Debian package version of those headers (what `uname -v` names on such a kernel).
fn installed_headers() -> (String, String) {
    let mut releases: Vec<String> = std::fs::read_dir("/lib/modules")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join("build/Makefile").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|r| r.ends_with("-amd64"))
        .collect();
    releases.sort();
    let release = releases.pop().unwrap_or_else(|| {
        panic!("no kernel headers under /lib/modules/*/build: run hack/install-deps.sh")
    });
    let out = Command::new("dpkg-query")
        .args([
            "-W",
            "-f",
            "${Version}",
            &format!("linux-headers-{release}"),
        ])
        .output()
        .expect("dpkg-query");
    assert!(
        out.status.success(),
        "headers of {release} not from a package"
    );
    (release, String::from_utf8(out.stdout).unwrap())
}

fn modinfo(path: &Path, field: &str) -> String {
    let out = Command::new("modinfo")
        .args(["-F", field])
        .arg(path)
        .output()
        .expect("modinfo (package kmod)");
    assert!(out.status.success(), "modinfo {}", path.display());
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn compiled_driver_is_built_verified_published_and_downloaded() {
    let (_src, version) = scap_sources();
    let (release, package_version) = installed_headers();
    let kernel_version = format!("#1 SMP PREEMPT_DYNAMIC Debian {package_version} (2026-01-01)");

    let work = tempfile::tempdir().unwrap();
    let host = work.path().join("host");
    std::fs::create_dir_all(host.join("etc")).unwrap();
    std::fs::write(
        host.join("etc/os-release"),
        "ID=debian\nVERSION_ID=\"12\"\n",
    )
    .unwrap();
    let home = work.path().join("home");
    let settings = DriverSettings {
        types: vec![DriverType::Kmod],
        version: version.clone(),
        repos: vec!["http://127.0.0.1:9/driver".into()],
        name: "scap".into(),
        host_root: host.clone(),
        kernel_release: Some(release.clone()),
        kernel_version: Some(kernel_version.clone()),
        arch: Arch::X86_64,
    };
    let facts = KernelFacts {
        release: release.clone(),
        version: kernel_version.clone(),
        modern_ebpf: false,
    };
    let resolved = resolve(settings, &facts).unwrap();
    // Debian: the real release comes from `uname -v`, the kernel version is 1.
    let file = resolved.filename().unwrap().unwrap();
    assert_eq!(file, format!("scap_debian_{package_version}-amd64_1.ko"));

    let opts = InstallOptions {
        download: false,
        compile: true,
        require_verified: false,
        trusted_key: None,
        http: Default::default(),
        home: home.clone(),
        kmod: KmodOptions {
            dkms_root: work.path().join("dkms"),
            tmp_dir: work.path().to_owned(),
            ..KmodOptions::default()
        },
    };
    let runner = NoLoadRunner::default();
    let outcome = install(&resolved, &opts, &runner).await.expect("built");
    assert!(
        matches!(
            &outcome,
            Outcome::NotLoaded {
                source: Source::Compiled,
                ..
            }
        ),
        "compiled, then refused by the load step: {outcome:?}"
    );
    let err = outcome.into_result().unwrap_err();

    // Built and installed in the cache before the load was tried, with its checksum record.
    let cached = resolved.cache_path(&home, &file).unwrap();
    assert!(
        err.to_string().contains(REFUSED),
        "the load step is the one that failed: {err}"
    );
    assert_eq!(
        runner.refused.lock().unwrap().as_slice(),
        [format!("insmod {}", cached.display())]
    );
    let vermagic = modinfo(&cached, "vermagic");
    assert!(
        vermagic.starts_with(&format!("{release} SMP")),
        "vermagic {vermagic:?} for {release}"
    );
    assert_eq!(modinfo(&cached, "name"), "scap");
    let bytes = std::fs::read(&cached).unwrap();
    let record = std::fs::read_to_string(cached.with_file_name(format!("{file}.sha256"))).unwrap();
    assert_eq!(
        falco_core::index::parse_sha256_file(&record).unwrap().0,
        falco_core::index::sha256_hex(&bytes)
    );

    // Published in the driverkit layout, served, and downloaded by another node, verified.
    let (private, public, _keys) = keys();
    let out_dir = work.path().join("out");
    let arch_dir = out_dir.join(&version).join("x86_64");
    std::fs::create_dir_all(&arch_dir).unwrap();
    std::fs::copy(&cached, arch_dir.join(&file)).unwrap();
    let backend = Backend::local();
    let out = cli_ok(
        &backend,
        &[
            "publish",
            out_dir.to_str().unwrap(),
            "--signing-key",
            private.to_str().unwrap(),
        ],
    );
    assert!(out.contains("uploaded 1,"), "{out}");
    let server = Server::start(&backend, &["--no-stats"]);
    let other = tempfile::tempdir().unwrap();
    let out = Command::new(loader_bin())
        .env_clear()
        .env("HOME", other.path())
        .arg("--dry-run")
        .arg("--config")
        .arg(other.path().join("falcoctl.yaml"))
        .arg("--host-root")
        .arg(&host)
        .args(["--name", "scap", "--version", &version, "--type", "kmod"])
        .args([
            "--kernelrelease",
            &release,
            "--kernelversion",
            &kernel_version,
        ])
        .args(["--repo", &server.url("/driver")])
        .args([
            "install",
            "--compile=false",
            "--require-verified",
            "--trusted-key",
        ])
        .arg(&public)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let downloaded = other
        .path()
        .join(".falco")
        .join(&version)
        .join("x86_64")
        .join(&file);
    assert_eq!(std::fs::read(downloaded).unwrap(), bytes);
}
