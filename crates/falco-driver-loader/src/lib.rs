//! `falco-driver-loader`: puts the right Falco kernel driver on a node.
//!
//! A drop-in replacement for `falcoctl driver` (and for the entrypoint of the
//! `falco-driver-loader` image) that takes the same flags, environment variables and
//! precedence (flag > environment > falcoctl config file > default), computes the same
//! target, file name and URL, and differs where falcoctl is unsafe or fragile:
//!
//! - **Partial files are never reused.** falcoctl streams the body straight into the cache
//!   path and trusts any file found there, so an interrupted download is loaded on the next
//!   run. Here the body goes to a temporary file in the same directory, is fsynced and
//!   checked, and only then renamed over the final path; a `<file>.sha256` record beside it
//!   lets a later run re-verify the cached file before reusing it. A `kill -9` at any moment
//!   leaves at the final path either nothing or a complete, verified file.
//! - **Verification.** Where the repository publishes `<file>.sha256` or a signed per-version
//!   `index.json` (see [`falco_core::index`]), the download is checked before it is installed,
//!   and the index signature is checked against `--trusted-key`, with the index's version,
//!   arch, expiry and serial (no rollback to an older index; newest serials kept in
//!   `<cache>/index-serials.json`); with a key nothing unsigned is accepted.
//!   `--require-verified` refuses anything that cannot be verified. A truncated body (fewer
//!   bytes than `Content-Length` or than the index says) is refused too.
//! - **Safe names.** A target, kernel release or version holding `/`, `..` or NUL is refused
//!   before any file name, cache path or URL is built; every URL path segment is
//!   percent-encoded; `os-release` and marker files are read inside the host root
//!   (`openat2(RESOLVE_IN_ROOT)`) with a size bound; repository credentials never reach logs.
//! - **Retries.** Connection errors, timeouts, truncated bodies and 5xx answers are retried
//!   with exponential backoff; a 429 waits for its `Retry-After`. falcoctl tries once.
//! - **Testable side effects.** Every command that touches the host kernel (`lsmod`, `rmmod`,
//!   `insmod`, `modprobe`, `dkms`) goes through a [`host::CommandRunner`]; the real runner is
//!   the default, tests assert the exact command sequence, and `--dry-run` prints it.
//!
//! Layout: [`cli`] (clap types and settings resolution), [`resolve`] (host detection and
//! driver choice), [`printenv`], [`config`] (falcoctl config and Falco's `engine.kind`),
//! [`download`] (HTTP with retries, progress, atomic install), [`verify`] (checksums and the
//! signed index), [`kmod`] (unload, load, dkms compile), [`install`] (the whole flow) and
//! [`host`] (commands and kernel information). `main.rs` only parses and dispatches.

pub mod app;
pub mod cli;
pub mod config;
pub mod download;
pub mod host;
pub mod install;
pub mod kmod;
pub mod printenv;
pub mod resolve;
pub mod status;
pub mod verify;

use std::path::PathBuf;

/// Everything that can go wrong, one variant per failing step.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A flag, environment variable or config value is invalid.
    #[error("{0}")]
    InvalidArgument(String),
    /// The host root is not usable.
    #[error("host-root {path}: {reason}")]
    HostRoot {
        /// The host root given.
        path: PathBuf,
        /// Why it is rejected.
        reason: String,
    },
    /// The running kernel's release or version could not be read.
    #[error("cannot read the running kernel's {what}: {source}")]
    KernelInfo {
        /// `release` or `version`.
        what: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// No requested driver type is supported by the host.
    #[error("no supported driver found for distro: {0}")]
    NoSupportedDriver(String),
    /// The target could not be determined and compilation is disabled.
    #[error("{0}; enable --compile to build the driver locally")]
    UndeterminedTarget(#[source] falco_core::driver::DriverError),
    /// The falcoctl config file or Falco's config could not be parsed.
    #[error("cannot parse {path}: {source}")]
    ConfigParse {
        /// The file.
        path: PathBuf,
        /// The YAML error.
        #[source]
        source: serde_yaml::Error,
    },
    /// A file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done (`read`, `write`, `rename`, …).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    HttpClient(#[source] reqwest::Error),
    /// A request failed at the transport level (after retries).
    #[error("GET {url}: {}", error_chain(.source))]
    Http {
        /// The URL.
        url: String,
        /// The reqwest error.
        #[source]
        source: reqwest::Error,
    },
    /// The server answered with a non-success status (after retries).
    #[error("GET {url}: HTTP {status}")]
    HttpStatus {
        /// The URL.
        url: String,
        /// The status code.
        status: u16,
    },
    /// The body ended before the announced length.
    #[error("GET {url}: truncated body ({received} of {expected} bytes)")]
    Truncated {
        /// The URL.
        url: String,
        /// Bytes received.
        received: u64,
        /// Bytes announced by `Content-Length` or the index.
        expected: u64,
    },
    /// A body is larger than a small metadata file may be.
    #[error("GET {url}: body larger than {limit} bytes")]
    TooLarge {
        /// The URL.
        url: String,
        /// The limit.
        limit: u64,
    },
    /// The downloaded bytes do not match the published checksum.
    #[error("{file}: sha256 mismatch (expected {expected}, got {actual}); refused")]
    ChecksumMismatch {
        /// The driver file name.
        file: String,
        /// The published digest.
        expected: String,
        /// The digest of the received bytes.
        actual: String,
    },
    /// The trusted key file could not be read or parsed.
    #[error("trusted key {path}: {reason}")]
    TrustedKey {
        /// The key file.
        path: PathBuf,
        /// Why it is rejected.
        reason: String,
    },
    /// A repository's index or checksum file is malformed or its signature is wrong.
    #[error("{url}: {source}")]
    Index {
        /// The index or checksum URL.
        url: String,
        /// The verification error.
        #[source]
        source: falco_core::index::IndexError,
    },
    /// `--trusted-key` is given but the repository publishes no signed index.
    #[error("{url}: {what}, but --trusted-key requires a signed index; refused")]
    Unsigned {
        /// The index URL (credentials redacted).
        url: String,
        /// What is missing.
        what: &'static str,
    },
    /// `--trusted-key` is given and the signed index does not list the driver.
    #[error("{file} is not listed in the signed index {url}; refused")]
    NotInIndex {
        /// The index URL (credentials redacted).
        url: String,
        /// The driver file name.
        file: String,
    },
    /// The loader's own state file (newest index serials seen) is unreadable.
    #[error("state file {path}: {reason}")]
    State {
        /// The file.
        path: PathBuf,
        /// Why it is rejected.
        reason: String,
    },
    /// A derived name (target, kernel release or version, driver name or version) would
    /// leave its directory in a file name, cache path or URL.
    #[error("{0}")]
    UnsafeName(#[source] falco_core::driver::DriverError),
    /// `--require-verified` is set and the driver cannot be verified.
    #[error("{file}: {reason}; refused because --require-verified is set")]
    Unverified {
        /// The driver file name.
        file: String,
        /// What is missing.
        reason: String,
    },
    /// No repository served the driver.
    #[error("unable to find a prebuilt driver {file} in any repository")]
    NotFound {
        /// The driver file name.
        file: String,
    },
    /// A command could not be started.
    #[error("cannot run {program}: {source}")]
    Command {
        /// The program.
        program: String,
        /// The spawn error.
        #[source]
        source: std::io::Error,
    },
    /// The local dkms build failed.
    #[error("cannot compile the driver: {0}")]
    Compile(String),
    /// Loading the kernel module failed.
    #[error("cannot load the kernel module: {0}")]
    Load(String),
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error and its causes on one line, `a: b: c` (reqwest keeps the useful part in causes).
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
