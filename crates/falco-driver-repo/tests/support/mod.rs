//! Shared helpers of the integration tests: storage backends (a local directory or a real
//! Garage), the server as a child process, the CLI, fixtures and waiting with deadlines.

#![allow(dead_code)]

#[path = "../../../falco-testenv/src/garage.rs"]
pub mod garage;

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use falco_driver_repo::storage::{Storage, StorageOptions};

pub const BIN: &str = env!("CARGO_BIN_EXE_falco-driver-repo");

/// The driver loader's binary. Cargo builds the binaries of every workspace member before it
/// runs any test of `cargo test --workspace` (as `make test` does); alone, this crate's tests
/// need `cargo build -p falco-driver-loader` first.
pub fn loader_bin() -> PathBuf {
    let path = Path::new(BIN).with_file_name("falco-driver-loader");
    assert!(
        path.is_file(),
        "{} is missing: run the tests with `make test` (cargo test --workspace), or \
         `cargo build -p falco-driver-loader` first",
        path.display()
    );
    path
}

/// Where a test's repository lives.
pub enum Backend {
    Local(tempfile::TempDir),
    S3(garage::Garage, String),
}

impl Backend {
    pub fn local() -> Self {
        Self::Local(tempfile::tempdir().expect("tempdir"))
    }

    /// A fresh Garage; fails (never skips) when the binary is missing.
    pub fn garage() -> Self {
        let g = garage::Garage::start().unwrap_or_else(|e| panic!("{e}"));
        Self::S3(g, "repo".into())
    }

    pub fn url(&self) -> String {
        match self {
            Self::Local(dir) => format!("file://{}", dir.path().display()),
            Self::S3(_, prefix) => format!("s3://{}/{prefix}", garage::BUCKET),
        }
    }

    /// Environment for the CLI.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![("FALCO_DRIVER_REPO_STORAGE", self.url())];
        if let Self::S3(g, _) = self {
            env.extend(g.env());
        }
        env
    }

    /// The same storage opened in the test process.
    pub fn storage(&self) -> Storage {
        let mut opts = StorageOptions {
            url: self.url(),
            timeout: Duration::from_secs(10),
            max_retries: 1,
            ..StorageOptions::default()
        };
        if let Self::S3(g, _) = self {
            opts.endpoint = Some(g.endpoint());
            opts.region = Some(garage::REGION.into());
            opts.access_key_id = Some(g.access_key_id().into());
            opts.secret_access_key = Some(g.secret_access_key().into());
        }
        Storage::open(&opts).expect("open storage")
    }

    pub fn garage_mut(&mut self) -> &mut garage::Garage {
        match self {
            Self::S3(g, _) => g,
            Self::Local(_) => panic!("not a Garage backend"),
        }
    }
}

/// Runs the CLI with the backend's environment.
pub fn cli(backend: &Backend, args: &[&str]) -> Output {
    cli_env(backend, args, &[])
}

/// Runs the CLI with the backend's environment and `env` on top.
pub fn cli_env(backend: &Backend, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env("RUST_LOG", "warn").stdin(Stdio::null());
    for (k, v) in backend.env() {
        cmd.env(k, v);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run falco-driver-repo")
}

/// Runs the CLI and asserts success; returns stdout.
pub fn cli_ok(backend: &Backend, args: &[&str]) -> String {
    let out = cli(backend, args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A server child process; killed on drop.
pub struct Server {
    child: Child,
    pub addr: String,
}

impl Server {
    pub fn start(backend: &Backend, extra: &[&str]) -> Self {
        Self::start_env(backend, extra, &[])
    }

    /// [`Server::start`] with `env` on top of the backend's environment.
    pub fn start_env(backend: &Backend, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--listen", "127.0.0.1:0"])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in backend.env() {
            cmd.env(k, v);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn server");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            for _ in lines {}
        });
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("server printed its address");
        let addr = line
            .strip_prefix("listening on ")
            .expect("address line")
            .to_owned();
        Self { child, addr }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, no chance to flush.
    pub fn kill9(mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("wait");
    }

    /// SIGTERM and wait for a clean exit (final flush) within a deadline.
    pub fn terminate(mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                assert!(status.success(), "server exited with {status}");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "server did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `check` until it returns `Some` or the deadline passes.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Deterministic pseudo-random bytes, different per seed.
pub fn content(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Writes a driver into a driverkit output directory; returns its bytes.
pub fn write_driver(
    dir: &Path,
    version: &str,
    arch: &str,
    file: &str,
    seed: u64,
    len: usize,
) -> Vec<u8> {
    let d = dir.join(version).join(arch);
    std::fs::create_dir_all(&d).expect("mkdir");
    let bytes = content(seed, len);
    std::fs::write(d.join(file), &bytes).expect("write driver");
    bytes
}

/// A fresh key pair: (private key path, public key path, temp dir holding them).
pub fn keys() -> (PathBuf, PathBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let private = dir.path().join("key");
    let public = dir.path().join("key.pub");
    let out = Command::new(BIN)
        .args(["keygen", "--private-key"])
        .arg(&private)
        .arg("--public-key")
        .arg(&public)
        .output()
        .expect("keygen");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (private, public, dir)
}

/// A raw HTTP/1.1 request over TCP (no client-side normalisation); returns the status code.
pub fn raw_status(addr: &str, request: &[u8]) -> u16 {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    // The server may answer and close before the whole request is written.
    let _ = stream.write_all(request);
    let mut buf = Vec::new();
    let _ = stream.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "no HTTP status in {:?}",
                text.chars().take(200).collect::<String>()
            )
        })
}

/// Value of one sample in a Prometheus text exposition, 0 when absent.
pub fn metric(text: &str, sample: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(sample)
                .and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

/// `stats --format json`.
pub fn stats_json(backend: &Backend) -> serde_json::Value {
    let out = cli_ok(backend, &["stats", "--format", "json"]);
    serde_json::from_str(&out).expect("stats json")
}

/// The falcoctl binary (the reference client): `FALCO_FALCOCTL_BIN`, else the cache of
/// `hack/build-falcoctl.sh`. Fails (never skips) when it is missing.
pub fn falcoctl_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("FALCO_FALCOCTL_BIN") {
        let bin = PathBuf::from(bin);
        assert!(
            bin.is_file(),
            "FALCO_FALCOCTL_BIN={} does not exist: run hack/build-falcoctl.sh",
            bin.display()
        );
        return bin;
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .expect("HOME or XDG_CACHE_HOME is set")
        .join("falco-operator/falcoctl");
    std::fs::read_dir(&cache)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin/falcoctl"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "falcoctl not found (FALCO_FALCOCTL_BIN unset, nothing under {}): run hack/build-falcoctl.sh",
                cache.display()
            )
        })
}

/// The soft limit of open files of this process (the server child inherits it).
pub fn open_files_limit() -> u64 {
    let limits = std::fs::read_to_string("/proc/self/limits").expect("/proc/self/limits");
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| {
            if v == "unlimited" {
                Some(u64::MAX)
            } else {
                v.parse().ok()
            }
        })
        .expect("Max open files in /proc/self/limits")
}

/// `stats --missing --format json`.
pub fn missing_json(backend: &Backend) -> serde_json::Value {
    let out = cli_ok(backend, &["stats", "--missing", "--format", "json"]);
    serde_json::from_str(&out).expect("stats --missing json")
}
