//! `instance.falcosecurity.dev/v1alpha1`: Falco and Component.

// Each `printcolumn(...)` of kube-derive repeats the same keys, which this lint mistakes for
// duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::api::apps::v1::{DaemonSetUpdateStrategy, DeploymentStrategy};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::preserve_unknown;

/// A Falco deployment: a DaemonSet (one Falco per node, the default) or a Deployment (plugins
/// only, with the `nodriver` engine), with its RBAC, Service and base configuration.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[kube(
    group = "instance.falcosecurity.dev",
    version = "v1alpha1",
    kind = "Falco",
    plural = "falcos",
    shortname = "falco",
    category = "instances",
    namespaced,
    status = "InstanceStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "Falco is a Falco deployment managed by the instance operator.",
    printcolumn(name = "Type", type_ = "string", json_path = ".status.resourceType"),
    printcolumn(name = "Version", type_ = "string", json_path = ".status.version"),
    printcolumn(
        name = "Desired",
        type_ = "integer",
        json_path = ".status.desiredReplicas"
    ),
    printcolumn(
        name = "Ready",
        type_ = "integer",
        json_path = ".status.availableReplicas"
    ),
    printcolumn(
        name = "Reconciled",
        type_ = "string",
        json_path = ".status.conditions[?(@.type == 'Reconciled')].status"
    ),
    printcolumn(
        name = "Available",
        type_ = "string",
        json_path = ".status.conditions[?(@.type == 'Available')].status"
    ),
    printcolumn(
        name = "Driver",
        type_ = "string",
        json_path = ".status.conditions[?(@.type == 'DriverReady')].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct FalcoSpec {
    /// Workload kind: `DaemonSet` (default when absent) or `Deployment`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r#type: Option<WorkloadType>,
    /// Replicas of a `Deployment`; 1 when absent. Ignored for a DaemonSet, as upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub replicas: Option<i32>,
    /// Falco version, used as the image tag when the pod template sets no `falco` image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub version: Option<String>,
    /// Pod template merged over the generated one, field by field (containers, volumes, env and
    /// ports by name; tolerations, args and command replace the defaults).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_template_spec: Option<Box<PodTemplateSpec>>,
    /// Update strategy of a DaemonSet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_strategy: Option<DaemonSetUpdateStrategy>,
    /// Strategy of a Deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<DeploymentStrategy>,
    /// A `falco.yaml` fragment merged over the operator's defaults in the generated ConfigMap.
    /// An addition to upstream's fields: per-instance settings no longer need a Config CR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_unknown")]
    pub config: Option<serde_json::Value>,
    /// The kernel driver Falco uses and how each node gets it. Absent: the modern eBPF probe
    /// bundled in Falco (DaemonSet) or no driver (Deployment), as without this field. An
    /// addition to upstream's fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<DriverSpec>,
}

/// The default driver repository.
pub const DEFAULT_DRIVER_REPO: &str = "https://download.falco.org/driver";

/// `spec.driver`: which kernel driver, from which repositories, verified how.
///
/// For `kmod` and `auto` the Falco pod runs the driver loader as an init container, which
/// downloads (or compiles) the driver for the node's kernel, verifies it, loads it and reports
/// what it did in the node's `NodeArtifacts` record. `modern_ebpf` needs nothing on the node.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "self.kind != 'modern_ebpf' || !(has(self.repos) || has(self.version) || has(self.download) || has(self.compile) || has(self.loaderImage) || has(self.httpTimeout) || has(self.insecureSkipVerify) || has(self.requireVerified) || has(self.trustedKey))"
).message(
    "kind modern_ebpf is bundled in Falco and needs no loader: repos, version, download, compile, loaderImage, httpTimeout, insecureSkipVerify, requireVerified and trustedKey apply only to kmod and auto"
))]
#[x_kube(validation = Rule::new(
    "!(has(self.download) && !self.download && has(self.compile) && !self.compile)"
).message(
    "download and compile cannot both be false: the loader would have no way to get a driver"
))]
#[x_kube(validation = Rule::new(
    "!(has(self.requireVerified) && self.requireVerified && has(self.insecureSkipVerify) && self.insecureSkipVerify)"
).message(
    "requireVerified cannot be combined with insecureSkipVerify: verification starts with knowing which server answered"
))]
pub struct DriverSpec {
    /// `modern_ebpf` (bundled in Falco, nothing to install), `kmod` (kernel module), `auto`
    /// (per node: modern_ebpf where the kernel supports it, else kmod) or `ebpf` (the legacy
    /// probe, removed in Falco 0.44: accepted by the schema, reported as not supported).
    pub kind: DriverKind,
    /// Driver repositories, tried in order. Defaults to `https://download.falco.org/driver`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(
        "self.all(r, r.matches('^https?://[^/?#\\\\s]+(/[^?#\\\\s]*)?$'))"
    ).message("each repository must be an http(s) URL without query or fragment, e.g. https://download.falco.org/driver"))]
    #[schemars(length(min = 1, max = 8), inner(length(max = 2048)))]
    pub repos: Option<Vec<String>>,
    /// Driver version, e.g. `10.2.0+driver`. Defaults to the version the Falco release in use
    /// was built with; give it for a Falco version the operator does not know.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[0-9A-Za-z][0-9A-Za-z._+-]*$')")
        .message("version must be a driver version such as 10.2.0+driver (letters, digits, '.', '_', '+', '-')"))]
    #[schemars(length(min = 1, max = 64))]
    pub version: Option<String>,
    /// Try to download a prebuilt driver. Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub download: Option<bool>,
    /// Compile the driver on the node with dkms when no download succeeds (needs kernel
    /// headers on the node). Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compile: Option<bool>,
    /// Image of the driver loader. Defaults to the operator's setting (`DRIVER_LOADER_IMAGE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub loader_image: Option<String>,
    /// Timeout of each HTTP request of the loader, a Go duration (`60s`, `1m30s`). Default 60s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(
        "self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|ms|s|m|h))+$')"
    ).message("httpTimeout must be a Go duration such as 60s, 1m30s or 500ms"))]
    #[schemars(length(min = 1, max = 32))]
    pub http_timeout: Option<String>,
    /// Accept any TLS certificate from the repositories. Only for tests; never with
    /// `requireVerified`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_skip_verify: Option<bool>,
    /// Refuse any driver that cannot be verified against a published checksum (against the
    /// repository's signed index when `trustedKey` is set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_verified: Option<bool>,
    /// The repository's public key (base64 ed25519), from a ConfigMap or Secret key in the
    /// Falco namespace; the repository's `index.json` must be signed by it. The object is
    /// protected from deletion while referenced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trusted_key: Option<KeyRef>,
}

/// A key of a ConfigMap or of a Secret in the same namespace: set exactly one.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.configMapKeyRef) != has(self.secretKeyRef)")
    .message("set exactly one of configMapKeyRef and secretKeyRef"))]
pub struct KeyRef {
    /// A ConfigMap key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_key_ref: Option<KeySelector>,
    /// A Secret key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<KeySelector>,
}

/// One key of a named object.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
pub struct KeySelector {
    /// Name of the object.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The key.
    #[x_kube(validation = Rule::new("self.matches('^[-._a-zA-Z0-9]+$')")
        .message("key must be a ConfigMap/Secret key: letters, digits, '-', '_', '.'"))]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// The kernel driver kinds.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum DriverKind {
    /// The modern eBPF probe, bundled in the Falco binary.
    #[serde(rename = "modern_ebpf")]
    ModernEbpf,
    /// The kernel module, downloaded or compiled and loaded by the driver loader.
    #[serde(rename = "kmod")]
    Kmod,
    /// The legacy eBPF probe: removed in Falco 0.44.0 and falcoctl 0.13.0; not supported.
    #[serde(rename = "ebpf")]
    Ebpf,
    /// Per node: modern_ebpf where the kernel supports it, else kmod.
    #[serde(rename = "auto")]
    Auto,
}

impl DriverKind {
    /// The name in the CR.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ModernEbpf => "modern_ebpf",
            Self::Kmod => "kmod",
            Self::Ebpf => "ebpf",
            Self::Auto => "auto",
        }
    }

    /// Whether the Falco pod runs the driver loader for this kind.
    pub fn needs_loader(self) -> bool {
        matches!(self, Self::Kmod | Self::Auto)
    }
}

/// Workload kind of a Falco instance.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum WorkloadType {
    /// One pod per eligible node.
    #[default]
    DaemonSet,
    /// `replicas` pods, plugins only (`nodriver` engine).
    Deployment,
}

impl WorkloadType {
    /// The kind name, as written in `status.resourceType`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DaemonSet => "DaemonSet",
            Self::Deployment => "Deployment",
        }
    }
}

impl FalcoSpec {
    /// The workload kind, `DaemonSet` when `spec.type` is absent.
    pub fn workload_type(&self) -> WorkloadType {
        self.r#type.unwrap_or_default()
    }
}

/// Status of Falco and Component.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceStatus {
    /// The workload kind in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_type: Option<String>,
    /// The resolved version (image tag).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Pods wanted: a DaemonSet's scheduled count, or a Deployment's replicas.
    #[serde(default)]
    pub desired_replicas: i32,
    /// Pods available.
    #[serde(default)]
    pub available_replicas: i32,
    /// Pods not available.
    #[serde(default)]
    pub unavailable_replicas: i32,
    /// `Reconciled` and `Available`, keyed by type.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Falco with `spec.driver` kmod or auto: the drivers the nodes report, aggregated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<DriverSummary>,
}

/// How many failing kernels [`DriverSummary::failing_kernels`] lists at most.
pub const MAX_FAILING_KERNELS: usize = 10;

/// The per-node driver reports of a Falco instance, aggregated: counts, and the kernels that
/// fail grouped with their node counts (at most [`MAX_FAILING_KERNELS`], the most affected
/// first), never a per-node list.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DriverSummary {
    /// Nodes that reported.
    #[serde(default)]
    pub nodes: i32,
    /// Nodes with a loaded driver (or modern eBPF chosen by `auto`).
    #[serde(default)]
    pub loaded: i32,
    /// Nodes whose driver was downloaded (now or on an earlier run, from the cache).
    #[serde(default)]
    pub downloaded: i32,
    /// Nodes whose driver was compiled on the node.
    #[serde(default)]
    pub compiled: i32,
    /// Nodes without a driver.
    #[serde(default)]
    pub failed: i32,
    /// Failing kernels, most affected first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failing_kernels: Vec<FailingKernel>,
}

/// Nodes that failed with one kernel and one reason.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailingKernel {
    /// Target id (distribution), when detected.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub target: String,
    /// Kernel release.
    #[serde(default)]
    pub kernel_release: String,
    /// Failure reason reported by the loader.
    #[serde(default)]
    pub reason: String,
    /// The first node's error message.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// How many nodes.
    #[serde(default)]
    pub nodes: i32,
}

/// A companion service of Falco, run as a Deployment: the k8s metacollector, falcosidekick or
/// falcosidekick-ui.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "instance.falcosecurity.dev",
    version = "v1alpha1",
    kind = "Component",
    plural = "components",
    category = "instances",
    namespaced,
    status = "InstanceStatus",
    derive = "PartialEq",
    doc = "Component is a Falco companion service managed by the instance operator.",
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.component.type"),
    printcolumn(
        name = "ResourceType",
        type_ = "string",
        json_path = ".status.resourceType"
    ),
    printcolumn(name = "Version", type_ = "string", json_path = ".status.version"),
    printcolumn(
        name = "Desired",
        type_ = "integer",
        json_path = ".status.desiredReplicas"
    ),
    printcolumn(
        name = "Ready",
        type_ = "integer",
        json_path = ".status.availableReplicas"
    ),
    printcolumn(
        name = "Reconciled",
        type_ = "string",
        json_path = ".status.conditions[?(@.type == 'Reconciled')].status"
    ),
    printcolumn(
        name = "Available",
        type_ = "string",
        json_path = ".status.conditions[?(@.type == 'Available')].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ComponentSpec {
    /// Which component, and optionally its version.
    pub component: ComponentTypeSpec,
    /// Replicas of the Deployment. Defaults to 1 (the API server sets it, as upstream's CRD does).
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1))]
    pub replicas: Option<i32>,
    /// Pod template merged over the generated one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_template_spec: Option<Box<PodTemplateSpec>>,
    /// Strategy of the Deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<DeploymentStrategy>,
}

#[allow(clippy::unnecessary_wraps)] // serde default of an Option field
fn default_replicas() -> Option<i32> {
    Some(1)
}

/// Which component to run.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComponentTypeSpec {
    /// The component.
    pub r#type: ComponentType,
    /// Image tag; the built-in tag of the type when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub version: Option<String>,
}

/// The companion services the operator knows.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum ComponentType {
    /// k8s-metacollector: Kubernetes metadata for Falco's k8smeta plugin.
    #[serde(rename = "metacollector")]
    Metacollector,
    /// falcosidekick: forwards Falco events to outputs.
    #[serde(rename = "falcosidekick")]
    Falcosidekick,
    /// falcosidekick-ui: web UI for falcosidekick.
    #[serde(rename = "falcosidekick-ui")]
    FalcosidekickUi,
}

impl ComponentType {
    /// The name used in the CR and in child object names.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Metacollector => "metacollector",
            Self::Falcosidekick => "falcosidekick",
            Self::FalcosidekickUi => "falcosidekick-ui",
        }
    }
}
