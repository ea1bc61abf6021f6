//! The instance operator: turns `Falco` and `Component` resources into workloads, RBAC, Services
//! and ConfigMaps.
//!
//! # Running it
//!
//! `falco-operator run` ([`cli`]) starts, in one process ([`run::start`]):
//!
//! - the **Falco** and **Component** controllers (kube-runtime `Controller`s over the CRs);
//! - one watch per child kind, selected by `app.kubernetes.io/managed-by=falco-operator` and trimmed
//!   to what the reconcilers read ([`cache`]); child events are routed to the owning CR by its owner
//!   labels, cluster-scoped RBAC included;
//! - **reference protection** ([`references`]) for ConfigMaps and Secrets;
//! - `/healthz`, `/readyz` (ready once every cache has listed; a leader-election standby is ready
//!   too) and `/metrics` ([`metrics`]);
//! - optionally **leader election** on a `coordination.k8s.io` Lease (`--leader-elect`, through the
//!   `kube-lease-manager` crate). The controllers start only once the Lease is held; losing it ends
//!   the process (Kubernetes restarts it as a standby); SIGTERM lets reconciles in flight finish and
//!   releases the Lease, so the standby takes over at once instead of after the Lease expires.
//!
//! # The reconcile pipeline
//!
//! Each controller runs the same steps ([`reconcile`]); only apply and status talk to the API server:
//!
//! ```text
//! dereference ─► validate ─► build (pure) ─► apply (SSA) ─► orphan sweep ─► update status
//!   (cache)                  this crate       (async)         (cache)        (only if changed)
//! ```
//!
//! - **dereference** reads the CR and its children from the watch caches: never a GET.
//! - **validate** refuses what the schema cannot: names too long to be label values, a
//!   `spec.config` that is not a mapping ([`falco::validate`]). An invalid CR gets
//!   `Reconciled=False` with reason `ApplyConfigurationError` and the message, and is not retried
//!   until it changes.
//! - **build** is a pure function from the CR and the operator's [`OperatorConfig`] to typed
//!   k8s-openapi objects, ready for Server-Side Apply: [`falco::build()`] returns [`falco::FalcoChildren`],
//!   [`component::build`] returns [`component::ComponentChildren`]. No client, no clock, no randomness,
//!   so every default, every merge rule and every label is unit-tested exactly.
//! - **apply** sends each child with `Patch::Apply` under one field manager per controller
//!   ([`FALCO_FIELD_MANAGER`], [`COMPONENT_FIELD_MANAGER`]), in the order ServiceAccount and RBAC,
//!   then ConfigMap and Service, then the workload (so pods never start without their permissions or
//!   configuration), **skipping every child whose cached copy already carries the same content
//!   hash** ([`apply`]).
//! - **orphan sweep** deletes children of kinds the CR no longer wants (the other workload after a
//!   type switch), checked by owner labels.
//! - **update status** computes `Available` and the replica counts with [`availability`] (pure) and
//!   the `Reconciled` condition with [`status`] (pure), and patches status only when it differs.
//!   Events are published on transitions only.
//!
//! # A no-op reconcile sends zero requests
//!
//! Reads come from the caches; children whose cached copy carries the applied-hash annotation of
//! the desired content (and whose fields owned by our field manager are unchanged since our last
//! apply) are not sent ([`apply`] explains the rule); the status is patched only when it differs, and
//! an unchanged pass reproduces it exactly; Events are sent on transitions only; the CR's finalizer
//! is added once. A periodic resync (`--resync-interval-seconds`) of an unchanged cluster therefore
//! sends nothing at all, which `tests/falco.rs` proves by counting the operator's requests across a
//! forced resync ([`metrics::CountingLayer`]).
//!
//! # RBAC
//!
//! The operator's own ClusterRole is [`rbac::operator_rules`] (`falco-operator rbac` prints it as
//! YAML; `tests/component.rs` runs the operator as a user holding exactly it):
//!
//! | API group | resources | verbs | why |
//! |---|---|---|---|
//! | `instance.falcosecurity.dev` | `falcos`, `components` | get, list, watch, patch, update | watch the CRs; add/remove their finalizer (JSON Patch) |
//! | `instance.falcosecurity.dev` | `falcos/status`, `components/status` | get, patch, update | status (Server-Side Apply) |
//! | `artifact.falcosecurity.dev` | `rulesfiles`, `plugins`, `configs` | get, list, watch | watch their references and aggregate their status; **granted** (read) to the sidecar's Role |
//! | `artifact.falcosecurity.dev` | `rulesfiles/status`, `plugins/status`, `configs/status` | get, patch | the aggregated status ([`aggregate`]), written by this operator alone |
//! | `artifact.falcosecurity.dev` | `nodeartifacts` | get, list, watch, create, patch | watched for the aggregation; get/create/patch **granted** to the sidecar (its own node's record) |
//! | `artifact.falcosecurity.dev` | `nodeartifacts/status` | get, patch | **granted** to the sidecar |
//! | core | `serviceaccounts`, `services`, `configmaps` | get, list, watch, create, update, patch, delete | children; in-use finalizer on ConfigMaps |
//! | core | `secrets` | get, patch | in-use finalizer (GET by name, JSON Patch); get **granted** to the sidecar (registry credentials by name). Never listed or watched |
//! | core | `endpoints`, `nodes`, `namespaces`, `pods`, `replicationcontrollers` | get, list, watch | **granted** (Falco, falcosidekick and metacollector RBAC) |
//! | `apps` | `daemonsets`, `deployments` | get, list, watch, create, update, patch, delete | workloads |
//! | `apps` | `replicasets` | get, list, watch | **granted** (metacollector) |
//! | `discovery.k8s.io` | `endpointslices` | get, list, watch | **granted** (metacollector) |
//! | `rbac.authorization.k8s.io` | `roles`, `rolebindings`, `clusterroles`, `clusterrolebindings` | get, list, watch, create, update, patch, delete | children |
//! | `events.k8s.io` | `events` | create, patch | Events |
//! | `coordination.k8s.io` | `leases` | get, list, watch, create, update, patch | leader election |
//!
//! **Escalation.** Kubernetes lets a subject create a Role granting a permission only if it holds
//! that permission itself (or `escalate` on roles), and bind one only if it holds its permissions (or
//! `bind`). The operator holds every permission it grants (rows marked **granted**) rather than
//! `escalate`/`bind`, which would let it grant *anything*: a compromised operator can hand out no
//! more than it already has.
//!
//! # Where this design is better than upstream
//!
//! Upstream (the Go falco-operator v0.4.1) is the behaviour reference; these points deliberately
//! differ, each fixing a problem listed in the upstream inventory (§7):
//!
//! - **Pods roll when the configuration changes.** The pod template carries a checksum of the
//!   generated ConfigMap ([`labels::CONFIG_CHECKSUM_ANNOTATION`]); upstream mounts the ConfigMap with
//!   `subPath` and never restarts pods, so a type switch or a `spec.config` change was silently
//!   ignored by running pods (§7 item 8).
//! - **User pod-template labels are kept.** Labels come from three layers, CR labels, then the
//!   user's `podTemplateSpec.metadata.labels`, then the selector labels, which always win; upstream
//!   replaced the user's template labels with the CR's whenever the CR had labels (§7 item 7).
//! - **`spec.version` is honoured** unless the user's `falco` container sets an `image`; upstream
//!   dropped `spec.version` as soon as the template named the container at all, even to add an env
//!   variable (§7 item 5). Image tags are parsed properly (a registry port is not a tag).
//! - **Cluster-scoped children are found by labels, never by parsing names.** ClusterRole and
//!   ClusterRoleBinding are named `falco-operator:<kind>:<namespace>:<name>`, which is collision-free
//!   because neither a namespace nor a name can contain `:`, and carry the owner labels of
//!   [`labels`], which the watch mapper, the finalizer and the orphan sweep select on. Upstream
//!   parsed `<name>--<namespace>` back with an escaping scheme (§7 item 9).
//! - **One rule for Deployment availability.** `Available` compares the same field it publishes
//!   (`availableReplicas`); upstream checked `readyReplicas` but published `availableReplicas`
//!   (§7 item 12).
//! - **A closed set of labels.** Every child carries the labels documented in [`labels`], so an
//!   orphan sweep by label selector finds exactly what this operator made.
//! - **The sidecar always gates Falco.** The artifact operator is always a native sidecar with a
//!   startup probe on `/readyz`; upstream fell back to an ordinary container when it could not read
//!   the API server's metrics, and the boot race came back (§7 item 4). Kubernetes 1.29+ is required.
//! - **Zero requests when nothing changed.** Upstream GETs every child and diffs managed fields
//!   on each reconcile, re-stamps status and emits an `Available` Event on every pass (§7 item 13);
//!   here reads come from trimmed watch caches and nothing is written or published unless something
//!   changed.
//! - **No ConfigMap or Secret content cache.** Reference protection reads the one object it
//!   changes, by name; upstream cached every ConfigMap and Secret of the cluster (§7 item 25).
//!   Secrets are never listed or watched; of ConfigMaps the operator keeps only the
//!   `resourceVersion` (a metadata watch, its own children excluded), for the artifact index the
//!   sidecars watch ([`artifact_index`]).
//! - **Leaner caches.** Children are watched by the managed-by label, as metadata only (workloads
//!   whole, for their status), and the caches keep per child two 128-bit hashes, its owner, its
//!   `resourceVersion` and, for workloads, four status counts ([`cache`]), not the object; the
//!   CR caches drop `managedFields` and kubectl's last-applied copy; Events are created without
//!   kube's six-minute Event cache ([`events`]). One runtime thread, code optimised for size.
//!   With 1,000 Falco CRs the operator holds about a sixth of upstream's memory
//!   (`docs/benchmarks.md`).
//! - **A `falco.yaml` overlay per instance** (`spec.config`) is deep-merged into the generated
//!   ConfigMap; upstream needed a Config CR for any per-instance setting.

pub mod aggregate;
pub mod apply;
pub mod artifact_index;
pub mod availability;
pub mod cache;
pub mod children;
pub mod cli;
pub mod component;
pub mod coverage;
pub mod driver_status;
pub mod events;
pub mod falco;
pub mod labels;
pub mod merge;
mod meta;
pub mod metrics;
pub mod rbac;
pub mod reconcile;
pub mod references;
pub mod run;
pub mod status;

use kube::ResourceExt;

pub use meta::owner_reference;

/// Field manager of the Falco controller's Server-Side Apply writes.
pub const FALCO_FIELD_MANAGER: &str = "falco-operator";
/// Field manager of the Component controller's Server-Side Apply writes.
pub const COMPONENT_FIELD_MANAGER: &str = "falco-operator-component";
/// The default image of the artifact-operator sidecar: this project's published image, tagged with
/// this operator's version.
pub const DEFAULT_ARTIFACT_OPERATOR_IMAGE: &str = concat!(
    "ghcr.io/falcosecurity-rs/falco-artifact-operator:",
    env!("CARGO_PKG_VERSION")
);
/// Environment variable of the operator that overrides the sidecar image.
pub const ARTIFACT_OPERATOR_IMAGE_ENV: &str = "ARTIFACT_OPERATOR_IMAGE";
/// The default image of the driver loader (Falco with `spec.driver` kmod or auto): this
/// project's published image, tagged with this operator's version.
pub const DEFAULT_DRIVER_LOADER_IMAGE: &str = concat!(
    "ghcr.io/falcosecurity-rs/falco-driver-loader:",
    env!("CARGO_PKG_VERSION")
);

/// Settings of the operator process that shape every child object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OperatorConfig {
    /// Image of the artifact-operator sidecar (`ARTIFACT_OPERATOR_IMAGE`).
    pub artifact_operator_image: String,
    /// Image of the driver loader when `spec.driver.loaderImage` is absent
    /// (`DRIVER_LOADER_IMAGE`).
    pub driver_loader_image: String,
    /// Label-key glob patterns (`*` matches any run of characters, `/` included); CR labels whose
    /// key matches one are not copied onto children (`--excluded-labels`).
    pub excluded_labels: Vec<String>,
}

impl Default for OperatorConfig {
    fn default() -> Self {
        Self {
            artifact_operator_image: DEFAULT_ARTIFACT_OPERATOR_IMAGE.to_owned(),
            driver_loader_image: DEFAULT_DRIVER_LOADER_IMAGE.to_owned(),
            excluded_labels: Vec::new(),
        }
    }
}

/// Everything that can fail in this crate, one variant per failing step.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// validate: the CR has no `metadata.name`, `metadata.namespace` or `metadata.uid` (only possible
    /// for an object that did not come from the API server).
    #[error("{kind} has no metadata.{field}")]
    MissingMetadata {
        /// `Falco` or `Component`.
        kind: &'static str,
        /// The missing field.
        field: &'static str,
    },
    /// validate: the CR name is longer than 63 characters, so it cannot be a label value (the
    /// selector and owner labels hold it).
    #[error("{kind} name {name:?} is {len} characters long; at most 63 fit in a label value")]
    NameTooLong {
        /// `Falco` or `Component`.
        kind: &'static str,
        /// The name.
        name: String,
        /// Its length.
        len: usize,
    },
    /// validate: `spec.config` is not a YAML mapping.
    #[error("spec.config must be a mapping of falco.yaml keys, found {found}")]
    ConfigNotAMapping {
        /// The JSON type found instead.
        found: &'static str,
    },
    /// validate: `spec.driver.kind` is `ebpf`, the legacy probe Falco 0.44 removed.
    #[error(
        "spec.driver.kind ebpf: the legacy eBPF probe was removed in Falco 0.44 and falcoctl 0.13; use modern_ebpf or kmod"
    )]
    LegacyEbpf,
    /// validate: a driver loader for a Deployment (which runs Falco without a driver).
    #[error(
        "spec.driver.kind {kind} needs a DaemonSet: a Deployment runs Falco with the nodriver engine (remove spec.driver or set spec.type: DaemonSet)"
    )]
    DriverNeedsDaemonSet {
        /// The kind asked for.
        kind: &'static str,
    },
    /// validate: no `spec.driver.version` and the Falco version is not in the table.
    #[error(
        "no driver version is known for Falco {falco}; set spec.driver.version to the driver version that Falco release was built with (known Falco versions: {known})"
    )]
    DriverVersionUnknown {
        /// The Falco version in use.
        falco: String,
        /// The newest versions the table knows.
        known: String,
    },
    /// build: rendering `falco.yaml` failed.
    #[error("rendering falco.yaml")]
    RenderConfig(#[source] serde_yaml::Error),
    /// build: merging the user's `podTemplateSpec` over the generated one produced an invalid
    /// pod template.
    #[error("merging spec.podTemplateSpec over the generated pod template")]
    MergePodTemplate(#[source] serde_json::Error),
    /// build: a child could not be serialised for Server-Side Apply.
    #[error("serialising a child")]
    Serialize(#[source] serde_json::Error),
    /// apply: the API server refused or failed the Server-Side Apply of a child.
    #[error("applying {kind} {name}")]
    Apply {
        /// Kind of the child.
        kind: &'static str,
        /// Name of the child.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// apply: deleting a child no longer wanted (orphan sweep or cleanup) failed.
    #[error("deleting {kind} {name}")]
    Delete {
        /// Kind of the child.
        kind: &'static str,
        /// Name of the child.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// update status: the status patch failed.
    #[error("patching the status")]
    PatchStatus(#[source] kube::Error),
    /// The finalizer step (adding or removing the CR's finalizer, or the wrapped reconcile) failed.
    /// Boxed: `finalizer::Error` embeds this type.
    #[error("finalizer")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    /// A step of `driver-coverage` (reading the Nodes, fetching or verifying an index) failed.
    #[error("{step}: {reason}")]
    Coverage {
        /// What was being done.
        step: &'static str,
        /// Why it failed.
        reason: String,
    },
}

impl Error {
    /// The `DriverReady=False` reason of a driver setting the operator refuses, if this is one.
    pub fn driver_reason(&self) -> Option<&'static str> {
        match self {
            Self::LegacyEbpf => Some("LegacyEbpfRemoved"),
            Self::DriverNeedsDaemonSet { .. } => Some("DriverNeedsDaemonSet"),
            Self::DriverVersionUnknown { .. } => Some("DriverVersionUnknown"),
            _ => None,
        }
    }

    /// A closed set of names for metric labels and Event reasons (never built from `Debug`).
    pub fn category(&self) -> &'static str {
        match self {
            Self::MissingMetadata { .. }
            | Self::NameTooLong { .. }
            | Self::ConfigNotAMapping { .. }
            | Self::LegacyEbpf
            | Self::DriverNeedsDaemonSet { .. }
            | Self::DriverVersionUnknown { .. } => "invalid_spec",
            Self::RenderConfig(_) | Self::MergePodTemplate(_) | Self::Serialize(_) => "build",
            Self::Apply { .. } => "apply",
            Self::Delete { .. } => "delete",
            Self::PatchStatus(_) => "status",
            Self::Coverage { .. } => "coverage",
            Self::Finalizer(e) => match e.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(e)
                | kube::runtime::finalizer::Error::CleanupFailed(e) => e.category(),
                _ => "finalizer",
            },
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The name, namespace and UID of a CR, checked for what the children need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ObjectKey {
    pub name: String,
    pub namespace: String,
    pub uid: String,
}

impl ObjectKey {
    pub(crate) fn of<K: kube::Resource<DynamicType = ()>>(obj: &K) -> Result<Self> {
        let kind = match K::kind(&()) {
            std::borrow::Cow::Borrowed(k) => k,
            std::borrow::Cow::Owned(_) => "object",
        };
        let missing = |field| Error::MissingMetadata { kind, field };
        let name = obj.meta().name.clone().ok_or(missing("name"))?;
        let namespace = obj.namespace().ok_or(missing("namespace"))?;
        let uid = obj.uid().ok_or(missing("uid"))?;
        if name.len() > 63 {
            return Err(Error::NameTooLong {
                kind,
                len: name.len(),
                name,
            });
        }
        Ok(Self {
            name,
            namespace,
            uid,
        })
    }
}
