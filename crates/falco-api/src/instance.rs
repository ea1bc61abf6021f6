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
