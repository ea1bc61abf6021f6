//! A scripted HTTP repository on 127.0.0.1 and helpers to run the loader against it.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use falco_core::index;

pub const VERSION: &str = "8.0.0+driver";
pub const ESCAPED: &str = "8.0.0%2Bdriver";
pub const KR: &str = "5.0.0-1028-aws-5.0";
pub const KV: &str = "#26~22.04.1-Ubuntu SMP Mon Apr 24 01:58:15 UTC 2023";
pub const FILE: &str = "falco_ubuntu-aws_5.0.0-1028-aws-5.0_26~22.04.1.ko";

/// One scripted answer.
#[derive(Clone)]
pub enum Reply {
    /// Status with an empty body.
    Status(u16),
    /// 200 with a body.
    Body(Vec<u8>),
    /// 429 with `Retry-After: <secs>`.
    TooMany(u64),
    /// 200 announcing the full length, sending only the first bytes, then breaking the
    /// connection.
    Truncated(Vec<u8>, usize),
    /// 200 announcing the full length, sending the first bytes, then never finishing.
    Stall(Vec<u8>, usize),
    /// 302 to another location.
    Redirect(String),
}

#[derive(Default)]
struct Inner {
    routes: HashMap<String, Vec<Reply>>,
    log: Vec<(String, Instant)>,
    stalled: bool,
}

/// The server handle.
#[derive(Clone)]
pub struct Repo {
    inner: Arc<Mutex<Inner>>,
    pub base: String,
}

async fn handle(State(inner): State<Arc<Mutex<Inner>>>, uri: Uri) -> Response {
    let path = uri.path().to_owned();
    let reply = {
        let mut inner = inner.lock().unwrap();
        inner.log.push((path.clone(), Instant::now()));
        match inner.routes.get_mut(&path) {
            Some(replies) if replies.len() > 1 => Some(replies.remove(0)),
            Some(replies) => replies.first().cloned(),
            None => None,
        }
    };
    match reply {
        None => StatusCode::NOT_FOUND.into_response(),
        Some(Reply::Status(code)) => StatusCode::from_u16(code).unwrap().into_response(),
        Some(Reply::Redirect(to)) => (StatusCode::FOUND, [(header::LOCATION, to)]).into_response(),
        Some(Reply::Body(bytes)) => bytes.into_response(),
        Some(Reply::TooMany(secs)) => (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, secs.to_string())],
        )
            .into_response(),
        Some(Reply::Truncated(bytes, sent)) => {
            let len = bytes.len();
            let prefix = Bytes::from(bytes[..sent].to_vec());
            let stream = futures::stream::iter(vec![
                Ok(prefix),
                Err(std::io::Error::other("connection broken on purpose")),
            ]);
            (
                [(header::CONTENT_LENGTH, len.to_string())],
                Body::from_stream(stream),
            )
                .into_response()
        }
        Some(Reply::Stall(bytes, sent)) => {
            let len = bytes.len();
            let prefix = Bytes::from(bytes[..sent].to_vec());
            let flag = inner.clone();
            let stream = futures::stream::unfold(0u8, move |state| {
                let prefix = prefix.clone();
                let flag = flag.clone();
                async move {
                    if state == 0 {
                        Some((Ok::<_, std::io::Error>(prefix), 1))
                    } else {
                        flag.lock().unwrap().stalled = true;
                        futures::future::pending::<()>().await;
                        None
                    }
                }
            });
            (
                [(header::CONTENT_LENGTH, len.to_string())],
                Body::from_stream(stream),
            )
                .into_response()
        }
    }
}

impl Repo {
    /// Starts a server on 127.0.0.1 (on the current tokio runtime).
    pub async fn start() -> Self {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = Router::new().fallback(handle).with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            inner,
            base: format!("http://{addr}"),
        }
    }

    /// Scripts the answers to `path`.
    pub fn route(&self, path: &str, replies: Vec<Reply>) {
        self.inner
            .lock()
            .unwrap()
            .routes
            .insert(path.to_owned(), replies);
    }

    /// Path of the driver under a repository prefix (`/a`, `/b`, …).
    pub fn driver_path(prefix: &str) -> String {
        format!("{prefix}/{ESCAPED}/x86_64/{FILE}")
    }

    /// Serves `body` and its `.sha256` under a prefix.
    pub fn serve_driver(&self, prefix: &str, body: &[u8]) {
        let path = Self::driver_path(prefix);
        self.route(&path, vec![Reply::Body(body.to_vec())]);
        self.route(
            &format!("{path}.sha256"),
            vec![Reply::Body(
                index::format_sha256_file(&index::sha256_hex(body), FILE).into_bytes(),
            )],
        );
    }

    /// Requests received for a path.
    pub fn hits(&self, path: &str) -> Vec<Instant> {
        self.inner
            .lock()
            .unwrap()
            .log
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, t)| *t)
            .collect()
    }

    /// Whether a stalled body has sent its prefix and is now hanging.
    pub fn stalled(&self) -> bool {
        self.inner.lock().unwrap().stalled
    }

    /// The repository URL for a prefix.
    pub fn url(&self, prefix: &str) -> String {
        format!("{}{prefix}", self.base)
    }
}

/// A deterministic driver body of `len` bytes.
pub fn driver_bytes(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

/// A fake host root (Ubuntu), a HOME and a config path in one temp dir.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().join("host/etc");
        std::fs::create_dir_all(&host).unwrap();
        std::fs::write(host.join("os-release"), "NAME=\"Ubuntu\"\nID=ubuntu\n").unwrap();
        std::fs::create_dir_all(dir.path().join("home")).unwrap();
        Self { dir }
    }
    pub fn host_root(&self) -> PathBuf {
        self.dir.path().join("host")
    }
    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }
    pub fn cache_dir(&self) -> PathBuf {
        self.home().join(".falco").join(VERSION).join("x86_64")
    }
    pub fn cached(&self) -> PathBuf {
        self.cache_dir().join(FILE)
    }
    /// Names in the cache directory (to check for leftovers).
    pub fn cache_entries(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.cache_dir())
            .map(|rd| {
                rd.map(|e| e.unwrap().file_name().into_string().unwrap())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// The loader command with the sandbox's host, home and config, a clean environment,
    /// `--dry-run` (no host command is run) and fast retries.
    pub fn loader(&self, repos: &[String], extra: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_falco-driver-loader"));
        cmd.env_clear()
            .env("HOME", self.home())
            .kill_on_drop(true)
            .arg("--dry-run")
            .arg("--log-format=text")
            .arg("--config")
            .arg(self.dir.path().join("falcoctl.yaml"))
            .arg("--host-root")
            .arg(self.host_root())
            .arg("--version")
            .arg(VERSION)
            .arg("--arch")
            .arg("x86_64")
            .arg("--type")
            .arg("kmod")
            .arg("--kernelrelease")
            .arg(KR)
            .arg("--kernelversion")
            .arg(KV)
            .arg("--repo")
            .arg(repos.join(","))
            .args(extra);
        cmd
    }
}

/// Runs a command to completion; returns (success, stdout, stderr).
pub async fn run(mut cmd: tokio::process::Command) -> (bool, String, String) {
    let out = cmd.output().await.unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Waits for a condition, polling, until a deadline; panics with `what` on timeout.
pub async fn wait_for(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + deadline;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Asserts a file holds exactly `bytes` and has a matching `.sha256` record.
pub fn assert_installed(path: &Path, bytes: &[u8]) {
    let got = std::fs::read(path).unwrap();
    assert!(
        got == bytes,
        "installed file differs from the served driver"
    );
    let record = std::fs::read_to_string(format!("{}.sha256", path.display())).unwrap();
    assert_eq!(
        record,
        index::format_sha256_file(&index::sha256_hex(bytes), FILE)
    );
}
