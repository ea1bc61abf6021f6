//! The per-node artifact sidecar of every Falco pod.
//!
//! It delivers `Rulesfile`, `Plugin` and `Config` resources to the files Falco reads, on the
//! node it runs on. `falco-artifact-operator run` ([`sync::run`]) is started by the instance
//! operator as a native sidecar with `NODE_NAME` and `POD_NAMESPACE`; its startup probe on
//! `/readyz` (port 8081) keeps Falco from starting before the first full sync.
//!
//! # Controller
//!
//! Two watch streams, none of them cluster-wide ([`sync`]): the artifact index of the Falco
//! namespace, one ConfigMap the instance operator keeps ([`falco_api::index`]), and this node's own
//! `Node`, metadata only; both by field selector `metadata.name`. The index names every artifact
//! with its uid and generation and every ConfigMap they read with its `resourceVersion`; what
//! changed is read by name ([`index`]). So the API server holds two streams per node instead of
//! five (upstream v0.4.1: one per kind it reads, a cache of every Secret of the namespace among
//! them), and the sidecar's Role grants `list`/`watch` on that one ConfigMap name only. Secrets are
//! never watched or cached: the one an artifact names is read by name (GET) when its registry is
//! contacted. Each artifact goes through one pipeline ([`reconcile`]): *dereference* (ConfigMap as
//! read through the index, Secret by name) → *validate* → *build* (pure: which files, with which
//! content or from which reference) → *apply* (pull, verify, write through the [`store::Store`]) →
//! *status* ([`status`]). An artifact whose input did not change is skipped without touching disk
//! or network, so a watch event costs nothing for the others; a tag is re-checked every
//! `--oci-resync-seconds` (one manifest `HEAD`; upstream never notices a moved tag) and a
//! digest-pinned one never.
//!
//! A failed source never removes what an earlier version wrote: the previous file stays until
//! the artifact is deleted or stops selecting the node, and the failure shows in the status.
//! Unlike upstream, a missing ConfigMap or Secret only fails its own source, not the others.
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
//! | What this sidecar wrote | `<state>/manifest.json` (default `<plugins>/.falco-artifact-operator/`, so it lives as long as the shared volumes) |
//!
//! `PP` is the priority (two digits, 0–99). Falco reads the directories in lexical order, so a
//! higher priority loads later and wins; within one priority OCI loads first, inline last. A
//! priority change renames the file (one `rename`, the content is not rewritten). A plugin
//! enters `load_plugins` only once its library is on disk, so a failed first pull cannot make
//! Falco refuse to start.
//!
//! # Atomicity
//!
//! Every file, the manifest included, is written to a temporary file in the staging directory
//! `.falco-artifact-tmp/` of its own directory (`<pid>.<n>.<name>.part`, created exclusively),
//! fsynced, renamed over the target, and then the directory is fsynced. The staging directory is
//! a sub-directory (same file system: the rename is atomic) that Falco neither loads from nor
//! watches: Falco loads every regular file of `config.d` and every `*.yaml`/`*.yml` of
//! `rules.d`, but no sub-directory (see `docs/artifacts.md` for the lines of Falco's source). A
//! kill at any moment leaves either the previous version or the new one, never half a file; a
//! left-over temporary file is removed when the store is opened again. Archives are extracted
//! into memory and fully validated ([`archive`]) before anything touches the disk, so a refused
//! artifact writes nothing.
//!
//! # Reloads
//!
//! Falco's `watch_config_files` watches `rules.d` and `config.d` for created, moved and deleted
//! files and reloads after 100 ms without a new event. A pass starts `--batch-window-ms` after
//! the first change event, pulls and verifies everything first, and then renames all new files
//! into place back to back ([`store::Store::put_many`]): a burst of artifact changes is one batch
//! and one Falco reload (upstream falco-operator#410).
//!
//! # What is never touched
//!
//! The manifest lists every path this sidecar owns. A path is added to it (and the manifest
//! synced) *before* the file is written, and removed only after the file is gone, so after a
//! crash or restart the sidecar still knows all its files: it removes the ones this node no
//! longer needs (including files left under an old priority while it was down, upstream's
//! problem 17) and refuses to overwrite or delete any file it did not write. Temporary files are
//! recognised by their place, the staging directory.
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
//! exponential backoff and jitter. Credentials: a Secret with `username` and `password` is basic
//! auth (and the registry's token exchange); a Secret with only `password` is a bearer token; a
//! `kubernetes.io/dockerconfigjson` or `kubernetes.io/dockercfg` Secret gives the entry matching
//! the registry host as the kubelet matches them ([`dockercfg`]).
//! TLS is verified against the system roots plus `--registry-ca-file`; plain HTTP only for a
//! registry named by the CR's `plainHTTP` or `--insecure-registry`.
//!
//! **`Retry-After`.** `oci-client` 0.18 hides response headers, so on a 429 or 503 the puller
//! asks the same URL once more with a `HEAD` (same credentials) through its own `reqwest`
//! client and reads `Retry-After` from that answer (delta-seconds or HTTP date). The retry then
//! waits at least that long. A `Retry-After` longer than the policy's bound ends the pull with
//! [`Error::Unavailable`] carrying it, and the controller schedules the artifact's next attempt
//! no sooner than that, instead of blocking the other artifacts. Registries that answer the
//! probe with a 401 challenge (token auth) give no header; plain backoff applies then.
//!
//! # Integrity
//!
//! With `verify.cosign` in the CR, or `--require-signatures` with a policy from flags, an OCI
//! artifact is written only if a cosign signature stored at the tag `sha256-<hex>.sig` names
//! the artifact's digest and verifies ([`cosign`]); otherwise `Programmed=False` with reason
//! `SignatureMissing` or `SignatureInvalid`, and nothing is written. Two policies:
//!
//! - **Key pair**: `verify.cosign.publicKey`, or `--cosign-public-key` (ECDSA P-256).
//! - **Keyless**: `verify.cosign.keyless` (`identity`, `issuer`), or `--cosign-identity` with
//!   `--cosign-issuer`. The Fulcio certificate must carry that identity and issuer and chain to
//!   the Sigstore trusted root given with `--cosign-trusted-root` (`trusted_root.json`), and the
//!   signature's Rekor bundle must be signed by a log of that root and show the signature logged
//!   while the certificate was valid. Everything is checked offline: no TUF update, no Rekor
//!   or Fulcio request. Without `--cosign-trusted-root` every keyless policy fails with
//!   `SignatureInvalid`, saying so.
//!
//! # Per-node status without per-node finalizers (design)
//!
//! Upstream had every node write the shared CR's status (reconcile storms, #356/#371) and put
//! one finalizer per node on it (5,526 finalizers on one Rulesfile after node churn, #377).
//! Here a sidecar never writes a shared `Rulesfile`/`Plugin`/`Config` at all: it only reads
//! them, so their size and write rate are independent of the node count. Each sidecar reports
//! on one object of its own, a `NodeArtifacts` record ([`falco_api::NodeArtifacts`]):
//!
//! - one per node, named after the node, in the Falco namespace, labelled
//!   `app.kubernetes.io/managed-by=falco-artifact-operator`;
//! - its status lists, per artifact selecting the node, the generation seen, the OCI digest
//!   installed, the files and the `Programmed` / `ResolvedRefs` conditions with a reason a
//!   person can act on (`AuthenticationFailed`, `ArtifactNotFound`, `WrongMediaType`,
//!   `SignatureMissing`, `SignatureInvalid`, `InvalidArchive`, `InvalidRulesfile`, `SecretNotFound`,
//!   `ConfigMapKeyMissing`, `RegistryUnavailable`, … see [`Error::reason`]);
//! - written with server-side apply by that node's sidecar only, and only when its content
//!   changes (transition times move only when a status does);
//! - owned by the `Node` through an owner reference, so the garbage collector deletes it when
//!   the node is deleted: nothing is left behind by autoscaler churn.
//!
//! Deleting a shared CR needs no finalizer: every sidecar sees the deletion through its watch
//! and removes its files; a sidecar that was down at the time removes them at its next start,
//! because its manifest lists files no CR asks for any more.
//!
//! The shared CR's own `Programmed`/`ResolvedRefs` are an aggregate with a constant size
//! ([`falco_api::artifact::aggregate_conditions`]: False beats Unknown beats True, at most three
//! node names in a message) written by a single writer, the instance operator, from the
//! records of its namespace. Cost: O(nodes) small objects watched by one controller, one write
//! per record change, and none of the N×N watch fan-out of N writers on one shared object.
//!
//! # Permissions (least privilege)
//!
//! | Scope | API group | Resources | Verbs |
//! |---|---|---|---|
//! | Role (Falco namespace) | `artifact.falcosecurity.dev` | `rulesfiles`, `plugins`, `configs` | `get`, `list`, `watch` |
//! | Role | `artifact.falcosecurity.dev` | `nodeartifacts` | `get`, `create`, `patch` |
//! | Role | `artifact.falcosecurity.dev` | `nodeartifacts/status` | `get`, `patch` |
//! | Role | `""` | `configmaps` | `get`, `list`, `watch` |
//! | Role | `""` | `secrets` | `get` |
//! | ClusterRole | `""` | `nodes` | `get`, `list`, `watch` (used with the field selector of its own node only) |
//!
//! No write access to the shared CRs or their status, no Secret list/watch, no Events.
//!
//! # Where this differs from upstream, and why
//!
//! - Node label changes are watched (own Node only): a relabelled node gains or loses
//!   artifacts at once; upstream re-checks only on a CR change or after 10 h.
//! - Moved tags are noticed; `Retry-After` is honoured; signatures can be required.
//! - The list of written files survives restarts (upstream's map is in memory): no stale file
//!   after a priority change during a restart, no re-download of unchanged artifacts.
//! - Least privilege: read-only on the shared CRs, Secrets by name only (`get`), no Events.

pub mod archive;
pub mod cli;
pub mod cosign;
pub mod dockercfg;
pub mod http;
pub mod index;
pub mod metrics;
pub mod oci;
pub mod reconcile;
pub mod rules;
pub mod selector;
pub mod status;
pub mod store;
pub mod sync;

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
    /// The registry's TLS certificate is not trusted (add its CA with `--registry-ca-file`).
    #[error("TLS verification failed for {reference}: {detail}")]
    Tls {
        /// The reference being pulled.
        reference: String,
        /// The TLS error chain.
        detail: String,
    },
    /// The registry stayed unavailable or rate-limited through every retry.
    #[error("registry unavailable for {reference}: {detail}")]
    Unavailable {
        /// The reference being pulled.
        reference: String,
        /// The last answer.
        detail: String,
        /// How long the registry asked us to wait (`Retry-After`), if it said.
        retry_after: Option<std::time::Duration>,
    },
    /// A signature is required and the registry holds none for this digest.
    #[error("no signature for {reference}: {detail}")]
    SignatureMissing {
        /// The reference being pulled.
        reference: String,
        /// What was looked for.
        detail: String,
    },
    /// A signature exists but does not verify with the key, or names another digest.
    #[error("signature of {reference} does not verify: {detail}")]
    SignatureInvalid {
        /// The reference being pulled.
        reference: String,
        /// Why each signature was refused.
        detail: String,
    },
    /// A ConfigMap or Secret the artifact names is missing or lacks a key.
    #[error("{kind} {name}: {detail}")]
    Reference {
        /// `ConfigMap` or `Secret`.
        kind: &'static str,
        /// Its name.
        name: String,
        /// What is wrong with it.
        detail: String,
        /// The key that is missing, if the object exists.
        missing_key: bool,
    },
    /// A rules file is not YAML or not a Falco rules document; it was not written.
    #[error("{medium} rules are not a Falco rules file, {refusal}; the previous file stays")]
    InvalidRules {
        /// Where the content came from (`inline`, `configmap`, `oci`).
        medium: &'static str,
        /// What is wrong, and where.
        refusal: rules::Refusal,
    },
    /// A Kubernetes API call failed.
    #[error("kubernetes API, {step}: {source}")]
    Kube {
        /// The call that failed.
        step: &'static str,
        /// The client error.
        #[source]
        source: kube::Error,
    },
    /// Any other registry failure, after retries.
    #[error("registry request for {reference} failed: {source}")]
    Registry {
        /// The reference being pulled.
        reference: String,
        /// The client error.
        source: oci_client::errors::OciDistributionError,
    },
}

impl Error {
    /// The condition reason and metric label for this error: a closed set a person can act on.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Invalid { .. } => "InvalidSpec",
            Self::Io { .. } | Self::Manifest { .. } => "WriteFailed",
            Self::NotOwned(_) => "FileConflict",
            Self::PluginsConfig(_) => "InvalidPluginConfig",
            Self::Archive(_) => "InvalidArchive",
            Self::Auth { .. } => "AuthenticationFailed",
            Self::NotFound { .. } => "ArtifactNotFound",
            Self::WrongMediaType { .. } => "WrongMediaType",
            Self::TooLarge { .. } => "ArtifactTooLarge",
            Self::ClientConfig(_) => "InvalidRegistryConfig",
            Self::Tls { .. } => "TLSVerificationFailed",
            Self::Unavailable { .. } | Self::Registry { .. } => "RegistryUnavailable",
            Self::SignatureMissing { .. } => "SignatureMissing",
            Self::SignatureInvalid { .. } => "SignatureInvalid",
            Self::Reference {
                kind: "Secret",
                missing_key: false,
                ..
            } => "SecretNotFound",
            Self::Reference { kind: "Secret", .. } => "SecretKeyMissing",
            Self::Reference {
                missing_key: false, ..
            } => "ConfigMapNotFound",
            Self::Reference { .. } => "ConfigMapKeyMissing",
            Self::Kube { .. } => "KubernetesAPIError",
            Self::InvalidRules { .. } => "InvalidRulesfile",
        }
    }

    /// Every value [`Error::reason`] can return (metric label set).
    pub const REASONS: &'static [&'static str] = &[
        "InvalidSpec",
        "WriteFailed",
        "FileConflict",
        "InvalidPluginConfig",
        "InvalidArchive",
        "AuthenticationFailed",
        "ArtifactNotFound",
        "WrongMediaType",
        "ArtifactTooLarge",
        "InvalidRegistryConfig",
        "TLSVerificationFailed",
        "RegistryUnavailable",
        "SignatureMissing",
        "SignatureInvalid",
        "SecretNotFound",
        "SecretKeyMissing",
        "ConfigMapNotFound",
        "ConfigMapKeyMissing",
        "KubernetesAPIError",
        "InvalidRulesfile",
    ];

    /// Whether the error concerns a referenced object (the `ResolvedRefs` condition).
    pub fn is_reference(&self) -> bool {
        matches!(self, Self::Reference { .. })
    }

    /// How long the source asked us to wait before trying again, if it said.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Self::Unavailable { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
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
