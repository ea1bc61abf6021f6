//! The Falco driver repository: stores prebuilt kernel drivers in S3 or a local directory,
//! serves them over HTTP at the same paths as `download.falco.org`, publishes them with
//! checksums and a signed index, and counts downloads without losing or double counting them.
//!
//! # Storage layout
//!
//! All state lives in one object store (`file://DIR` or `s3://bucket/prefix`, through the
//! `object_store` crate); the server processes are stateless and any number of replicas can
//! share the storage.
//!
//! ```text
//! driver/<version>/<arch>/<name>_<target>_<kr>_<kv>.{ko,o}   driver (upstream layout)
//! driver/<version>/<arch>/<file>.sha256                      sha256sum line
//! driver/<version>/<arch>/index.json, index.json.sig         signed index (falco_core::index)
//! driver/<version>/<file>                                    legacy flat layout, served read-only
//! stats/segments/<day>/<writer>-<seq>.json                   download and miss counters of one server interval
//! stats/segments/logs/<hash>.json                            counters ingested from one access log file
//! stats/source-keys/<day>                                    that day's key of the keyed hash of client addresses
//! ```
//!
//! The URL `/driver/<version>/<arch>/<file>` maps to the key of the same name, with the
//! version percent-decoded (`%2B` becomes `+`). Every path segment is validated before any
//! storage call, so `..`, empty segments, backslashes and control characters never reach it.
//!
//! # Statistics segments, and why they cannot double count
//!
//! Each server counts downloads in memory, per day, driver version, arch, target, kernel
//! release and version, and client family/version, together with the set of distinct client
//! addresses; the address itself is never stored: it stays in memory for one flush interval at
//! most and the segment holds its keyed hash. Counting a download is one map lookup under a lock,
//! with no allocation once its key has been seen (parsing, date formatting and hashing happen at
//! flush), so statistics cost no measurable throughput. Every flush interval (and on
//! shutdown) the counters are moved out of memory into an immutable *segment* written under a
//! key no other writer uses: `<writer>` is random per process start, `<seq>` increases per
//! flush. A segment whose upload failed is retried with the same key and the same bytes, so a
//! write that succeeded but looked failed is idempotent; new counts go to the next segment.
//! A crash loses only the counts not yet flushed (at most one interval), and a restarted
//! process is a new writer, so nothing is counted twice. Replicas add up because `stats`
//! sums all segments and unions the source hashes. Access logs are ingested into segments
//! whose key is derived from the log object's key and ETag, so ingesting a log twice
//! rewrites the same segment instead of adding a second one.
//!
//! Requests for drivers that do not exist (404 on a well-formed driver name, from the negative
//! cache too) are counted in the same segments, by the same parsed dimensions, as *misses*;
//! at most a fixed number of distinct ones per interval, the rest in one overflow bucket.
//!
//! # Client addresses
//!
//! The keyed hash of an address uses a key of its UTC day (`stats/source-keys/<day>`,
//! created by the first replica that needs it; see [`stats::SourceKeys`] for how replicas
//! converge on one key on S3 servers that ignore create-only writes). Distinct sources are
//! therefore counted per day. Three days after a day its counts are final and its key is
//! deleted (by the servers and by `stats`), after which its stored hashes cannot be
//! reversed by hashing all 2³² IPv4 addresses.
//!
//! # Publishing without conditional PUTs
//!
//! AWS S3 honours `If-None-Match: *` on PUT but Garage ignores it, so `publish` uses it
//! where it works and does not depend on it: before writing a driver it compares the stored
//! object (through its `.sha256`, or by hashing it) with the local file, skips identical
//! files, refuses different ones without `--force`, and reads the object back after writing
//! to detect a concurrent writer with different content. The index is never edited
//! incrementally: it is rebuilt from a listing of the objects, written, and then the
//! publisher re-lists and re-reads index and signature until the stored, verified index
//! matches the objects. The last publisher to write therefore always leaves an index that
//! covers every driver uploaded before its final check, and the checks of any publisher that
//! wrote earlier repair an index that lost its files.

pub mod cli;
pub mod gc;
pub mod layout;
pub mod logs;
pub mod mirror;
pub mod publish;
pub mod serve;
pub mod stats;
pub mod storage;

/// Everything that can fail in the driver repository, one variant per failing step.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The storage URL or its options are invalid.
    #[error("invalid storage {url:?}: {reason}")]
    StorageUrl { url: String, reason: String },
    /// Building the object store client failed.
    #[error("cannot open storage {url:?}")]
    OpenStorage {
        url: String,
        #[source]
        source: object_store::Error,
    },
    /// A storage call failed.
    #[error("storage {op} of {key:?} failed")]
    Storage {
        op: &'static str,
        key: String,
        #[source]
        source: object_store::Error,
    },
    /// Binding the listen address failed.
    #[error("cannot listen on {addr}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    /// The HTTP server failed.
    #[error("the HTTP server failed")]
    Serve(#[source] std::io::Error),
    /// Reading or writing a local file failed.
    #[error("cannot {op} {path}")]
    LocalFile {
        op: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A key file is invalid.
    #[error("invalid key in {path}")]
    Key {
        path: std::path::PathBuf,
        #[source]
        source: falco_core::index::IndexError,
    },
    /// A key file already exists and would be overwritten.
    #[error("{0} already exists; refusing to overwrite a key")]
    KeyExists(std::path::PathBuf),
    /// The directory to publish holds no drivers in the driverkit output layout.
    #[error(
        "no drivers found under {0} (expected <version>/<arch>/<name>_<target>_<kr>_<kv>.ko|.o)"
    )]
    NothingToPublish(std::path::PathBuf),
    /// A file in the publish directory has a name that is not a driver name.
    #[error(
        "{0}: not a driver file name (<name>_<target>_<kr>_<kv>.ko|.o, of A-Z a-z 0-9 . _ + ~ -)"
    )]
    BadDriverName(String),
    /// A driver version or arch that cannot be a repository path segment.
    #[error(
        "{what} {value:?} is not a repository path segment (1 to 255 of A-Z a-z 0-9 . _ + ~ -)"
    )]
    BadSegment {
        /// `driver version` or `arch`.
        what: &'static str,
        /// The value given.
        value: String,
    },
    /// The stored driver differs from the one being published.
    #[error(
        "{key} already exists with different content (sha256 {stored}, local {local}); use --force to replace it"
    )]
    Conflict {
        key: String,
        stored: String,
        local: String,
    },
    /// Another publisher wrote different content to the same key at the same time.
    #[error(
        "{key} was overwritten concurrently by another publisher (expected sha256 {expected}, found {found})"
    )]
    ConcurrentWrite {
        key: String,
        expected: String,
        found: String,
    },
    /// The index did not converge with the stored objects.
    #[error(
        "the index of {prefix} did not converge after {attempts} attempts (concurrent publishers?)"
    )]
    IndexNotConverged { prefix: String, attempts: u32 },
    /// A statistics segment or an access log could not be parsed.
    #[error("cannot parse {key}: {reason}")]
    Parse { key: String, reason: String },
    /// A mirrored file failed its size or checksum verification.
    #[error("{what} of {key}: expected {expected}, got {actual}")]
    Verify {
        what: &'static str,
        key: String,
        expected: String,
        actual: String,
    },
    /// Downloading from another repository failed.
    #[error("download of {url} failed: {reason}")]
    Download { url: String, reason: String },
    /// Writing the report to standard output failed.
    #[error("cannot write the report")]
    Output(#[source] std::io::Error),
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
