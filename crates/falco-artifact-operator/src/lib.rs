//! The per-node artifact sidecar of every Falco pod.
//!
//! It delivers `Rulesfile`, `Plugin` and `Config` resources to the files Falco reads. This crate
//! holds the building blocks; the Kubernetes controller that drives them lives on top.
//!
//! # Files
//!
//! [`store::Store`] owns three directories shared with Falco and one private state directory:
//!
//! | What | Path |
//! |---|---|
//! | Rulesfile | `<rules>/<PP>-<SS>-<name>-<medium>.yaml` (`01 oci`, `02 configmap`, `03 inline`) |
//! | Config | `<config.d>/<PP>-<SS>-<name>-<medium>.yaml` |
//! | Plugin binary | `<plugins>/<name>.so` |
//! | Plugin configuration, all plugins | `<config.d>/99-03-plugins-config-inline.yaml` (`load_plugins` + `plugins`) |
//! | What this sidecar wrote | `<state>/manifest.json` |
//!
//! `PP` is the priority (two digits, 0–99). Falco reads the directories in lexical order, so a
//! higher priority loads later and wins; within one priority OCI loads first, inline last. A
//! priority change renames the file (one `rename`, the content is not rewritten).
//!
//! # Atomicity
//!
//! Every file, the manifest included, is written to a temporary file in the same directory
//! (`.falco-artifact-tmp.*`, created exclusively), fsynced, renamed over the target, and then the
//! directory is fsynced. A kill at any moment leaves either the previous version or the new one,
//! never half a file; a left-over temporary file is removed when the store is opened again.
//! Archives are extracted into memory and fully validated ([`archive`]) before anything touches
//! the disk, so a refused artifact writes nothing.
//!
//! # What is never touched
//!
//! The manifest lists every path this sidecar owns. A path is added to it (and the manifest
//! synced) *before* the file is written, and removed only after the file is gone, so after a
//! crash or restart the sidecar still knows all its files: it removes the ones this node no
//! longer needs (including files left under an old priority while it was down, upstream's
//! problem 17) and refuses to overwrite or delete any file it did not write. Temporary files are
//! recognised by their reserved prefix.
//!
//! # OCI
//!
//! [`oci::Puller`] pulls Falco rulesfile and plugin artifacts with `oci-client`: the config and
//! the first layer must carry Falco's media types, the manifest and the layer have size limits,
//! and the digest the registry reports is compared with the one installed so that an unchanged
//! artifact costs one manifest `HEAD` and no blob download (a digest-pinned reference that is
//! already installed costs no request at all). `oci-client` also sends a `GET /v2/` ping before
//! calls to a registry that answers without an auth challenge (it has no token to cache); the
//! ping carries no data. Transient answers (429, 5xx, connection errors) are retried with
//! exponential backoff and jitter. `Retry-After` is not honoured yet: `oci-client` 0.18 does not
//! expose response headers on errors (left for the controller issue).
//!
//! # Per-node status without per-node finalizers (design)
//!
//! Upstream put one finalizer per node on every shared Rulesfile/Plugin/Config, which left
//! thousands of finalizers on a single object when nodes churned. Here the shared CR carries
//! no per-node data at all. Each sidecar reports about its own node on an object it owns:
//! one `ArtifactNode`-style record per node (named after the node, owner reference to the
//! `Node`, so the garbage collector removes it when the node is deleted) whose status lists, per
//! artifact, the installed digest, priority, file and the `Programmed` / `ResolvedRefs`
//! conditions with actionable reasons (auth failure, not found, wrong media type, signature).
//! The shared CR's status is aggregated by the instance operator into constant-size counters
//! (`nodesDesired`, `nodesProgrammed`, `nodesFailed`, plus the most recent failure reason and an
//! example node), computed from the per-node records with a label selector, so its size and the
//! write rate on it stay constant as nodes come and go. Deleting a CR needs no per-node
//! finalizer: every sidecar sees the deletion through its watch and removes its files, and the
//! manifest makes the clean-up complete even for a sidecar that was down at the time (on start
//! it removes owned files no CR asks for). Records of deleted nodes vanish with their `Node`
//! through the owner reference.

pub mod archive;
pub mod oci;
pub mod store;

use std::path::PathBuf;

/// Everything that can fail in the artifact sidecar, one variant per failing step.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A name, priority or reference is not acceptable.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// What was invalid (artifact name, priority, reference…).
        what: &'static str,
        /// Why it was refused.
        reason: String,
    },
    /// A filesystem step failed.
    #[error("{step} {}: {source}", path.display())]
    Io {
        /// The step that failed (create temp file, fsync, rename…).
        step: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A file exists where the store wants to write, but the store did not write it.
    #[error("refusing to touch {}: not written by this sidecar", .0.display())]
    NotOwned(PathBuf),
    /// The manifest of written files cannot be read or written.
    #[error("store manifest {}: {reason}", path.display())]
    Manifest {
        /// The manifest path.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The plugins configuration cannot be serialised.
    #[error("plugins configuration: {0}")]
    PluginsConfig(#[from] serde_yaml::Error),
    /// An archive was refused before anything was written.
    #[error("archive refused: {0}")]
    Archive(String),
    /// The registry refused our credentials.
    #[error("registry authentication failed for {reference}: {detail}")]
    Auth {
        /// The reference being pulled.
        reference: String,
        /// The registry's answer.
        detail: String,
    },
    /// The artifact or tag does not exist.
    #[error("artifact {reference} not found: {detail}")]
    NotFound {
        /// The reference being pulled.
        reference: String,
        /// The registry's answer.
        detail: String,
    },
    /// The artifact does not carry the media type expected for this kind.
    #[error("wrong media type for {reference}: {what} is {found:?}, expected {expected:?}")]
    WrongMediaType {
        /// The reference being pulled.
        reference: String,
        /// `config` or `layer`.
        what: &'static str,
        /// The media type found.
        found: String,
        /// The media type required.
        expected: String,
    },
    /// A manifest or layer is larger than allowed.
    #[error("{what} of {reference} is too large: {size} bytes, limit {limit}")]
    TooLarge {
        /// The reference being pulled.
        reference: String,
        /// `manifest` or `layer`.
        what: &'static str,
        /// The size seen.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The TLS or client configuration for a registry is unusable.
    #[error("registry client configuration: {0}")]
    ClientConfig(String),
    /// Any other registry failure, after retries.
    #[error("registry request for {reference} failed: {source}")]
    Registry {
        /// The reference being pulled.
        reference: String,
        /// The client error.
        source: oci_client::errors::OciDistributionError,
    },
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io_err(
    step: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io { step, path, source }
}
