//! A real S3 server for tests: Garage (crates.io `garage` 2.5.0), single node, on loopback.
//!
//! The binary is built once per machine by `hack/build-garage.sh` and found through
//! `FALCO_GARAGE_BIN` or `${XDG_CACHE_HOME:-$HOME/.cache}/falco-operator/garage-2.5.0/bin/garage`;
//! a missing binary is an error that says how to build it, never a silent skip.
//!
//! [`Garage::start`] writes a config into a temporary directory, picks free loopback ports,
//! generates a `GK…` access key, its secret and an RPC secret, and runs
//! `garage server --single-node --default-bucket`, which creates the layout, the key and the
//! bucket before the servers start; readiness is the admin API's `/health` answering 200,
//! waited for with a deadline. [`Garage::stop`] and [`Garage::restart`] keep the data
//! directory and the ports, so a test can take S3 away and bring it back. Dropping the value
//! kills the process and removes the directory.
//!
//! This file depends only on `std` and `tempfile`, so other crates' tests may also include it
//! with `#[path]` without pulling in this crate's dependencies.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Garage version the harness is written for.
pub const GARAGE_VERSION: &str = "2.5.0";
/// S3 region Garage is configured with.
pub const REGION: &str = "garage";
/// Bucket created at start.
pub const BUCKET: &str = "falco-drivers";
/// How long to wait for Garage to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Why Garage could not be started.
#[derive(Debug, thiserror::Error)]
pub enum GarageError {
    /// The binary is not built.
    #[error(
        "garage {GARAGE_VERSION} not found at {0}: run hack/build-garage.sh (about 10 minutes once per machine) or set FALCO_GARAGE_BIN"
    )]
    Missing(PathBuf),
    /// Creating the temporary directory, the config or a port failed.
    #[error("cannot prepare garage: {0}")]
    Prepare(#[source] std::io::Error),
    /// Spawning the process failed.
    #[error("cannot run {path}: {source}")]
    Spawn {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The server exited or did not become healthy in time.
    #[error("garage did not become ready: {reason}; log tail:\n{log}")]
    NotReady { reason: String, log: String },
}

/// Path of the Garage binary: `FALCO_GARAGE_BIN`, else the cache of `hack/build-garage.sh`.
pub fn binary() -> Result<PathBuf, GarageError> {
    let path = match std::env::var_os("FALCO_GARAGE_BIN") {
        Some(p) => PathBuf::from(p),
        None => {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
                .unwrap_or_else(|| PathBuf::from("/nonexistent"));
            cache
                .join("falco-operator")
                .join(format!("garage-{GARAGE_VERSION}"))
                .join("bin")
                .join("garage")
        }
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(GarageError::Missing(path))
    }
}

fn random_hex(bytes: usize) -> Result<String, GarageError> {
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(GarageError::Prepare)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

fn free_port() -> Result<u16, GarageError> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(GarageError::Prepare)
}

/// A running (or stopped) single-node Garage.
#[derive(Debug)]
pub struct Garage {
    bin: PathBuf,
    dir: tempfile::TempDir,
    child: Option<Child>,
    s3_port: u16,
    admin_port: u16,
    access_key_id: String,
    secret_access_key: String,
}

impl Garage {
    /// Starts Garage and waits until it is healthy.
    pub fn start() -> Result<Self, GarageError> {
        let bin = binary()?;
        let dir = tempfile::Builder::new()
            .prefix("falco-garage-")
            .tempdir()
            .map_err(GarageError::Prepare)?;
        let (rpc_port, s3_port, admin_port) = (free_port()?, free_port()?, free_port()?);
        let root = dir.path();
        let config = format!(
            "metadata_dir = \"{meta}\"\n\
             data_dir = \"{data}\"\n\
             db_engine = \"sqlite\"\n\
             replication_factor = 1\n\
             rpc_bind_addr = \"127.0.0.1:{rpc_port}\"\n\
             rpc_public_addr = \"127.0.0.1:{rpc_port}\"\n\
             rpc_secret = \"{rpc_secret}\"\n\
             [s3_api]\n\
             s3_region = \"{REGION}\"\n\
             api_bind_addr = \"127.0.0.1:{s3_port}\"\n\
             root_domain = \".s3.garage.localhost\"\n\
             [admin]\n\
             api_bind_addr = \"127.0.0.1:{admin_port}\"\n\
             admin_token = \"{admin_token}\"\n",
            meta = root.join("meta").display(),
            data = root.join("data").display(),
            rpc_secret = random_hex(32)?,
            admin_token = random_hex(16)?,
        );
        std::fs::write(root.join("garage.toml"), config).map_err(GarageError::Prepare)?;
        let mut garage = Self {
            bin,
            dir,
            child: None,
            s3_port,
            admin_port,
            access_key_id: format!("GK{}", random_hex(12)?),
            secret_access_key: random_hex(32)?,
        };
        garage.restart()?;
        Ok(garage)
    }

    /// The S3 endpoint URL (`http://127.0.0.1:<port>`).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }

    /// The access key id.
    pub fn access_key_id(&self) -> &str {
        &self.access_key_id
    }

    /// The secret access key.
    pub fn secret_access_key(&self) -> &str {
        &self.secret_access_key
    }

    /// Environment for an S3 client: `AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_REGION", REGION.to_owned()),
            ("AWS_ACCESS_KEY_ID", self.access_key_id.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret_access_key.clone()),
        ]
    }

    /// The temporary directory holding config, data and `garage.log`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Kills the server (SIGKILL) and waits for it; data and ports are kept.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// (Re)starts the server on the same data and ports and waits until it is healthy.
    pub fn restart(&mut self) -> Result<(), GarageError> {
        self.stop();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("garage.log"))
            .map_err(GarageError::Prepare)?;
        let log_err = log.try_clone().map_err(GarageError::Prepare)?;
        let child = Command::new(&self.bin)
            .arg("-c")
            .arg(self.dir.path().join("garage.toml"))
            .args(["server", "--single-node", "--default-bucket"])
            .env("GARAGE_DEFAULT_ACCESS_KEY", &self.access_key_id)
            .env("GARAGE_DEFAULT_SECRET_KEY", &self.secret_access_key)
            .env("GARAGE_DEFAULT_BUCKET", BUCKET)
            .env("RUST_LOG", "garage=warn")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|source| GarageError::Spawn {
                path: self.bin.clone(),
                source,
            })?;
        self.child = Some(child);
        self.wait_ready()
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("garage.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    fn wait_ready(&mut self) -> Result<(), GarageError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(GarageError::NotReady {
                    reason: format!("exited with {status}"),
                    log: self.log_tail(),
                });
            }
            if health(self.admin_port) && TcpStream::connect(("127.0.0.1", self.s3_port)).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(GarageError::NotReady {
                    reason: format!("no healthy answer within {READY_TIMEOUT:?}"),
                    log: self.log_tail(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Whether the admin API answers `GET /health` with 200.
fn health(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200")
}

impl Drop for Garage {
    fn drop(&mut self) {
        self.stop();
    }
}
