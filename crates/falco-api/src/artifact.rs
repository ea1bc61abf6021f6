//! `artifact.falcosecurity.dev/v1alpha1`: Rulesfile, Plugin and Config.
//!
//! These are shared by every node: the artifact operator on each node reads them and writes files
//! where Falco reads them. Per-node state never goes into these objects (no per-node finalizers
//! and no per-node status writers), so their size and write rate stay constant as nodes come and go.

// Each `printcolumn(...)` of kube-derive repeats the same keys, which this lint mistakes for
// duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::common::{ArtifactStatus, ConfigMapRef, OciArtifact, preserve_unknown};

/// Load-order priority when a CR names none.
pub const DEFAULT_PRIORITY: i32 = 50;

fn default_priority() -> i32 {
    DEFAULT_PRIORITY
}

/// A Falco rules file from an OCI artifact, inline YAML and/or a ConfigMap (key `rules.yaml`).
/// Each source present is written as its own file, ordered by `priority`.
///
/// A spec without any source is accepted, as upstream accepts it (CEL cannot see the untyped
/// `inlineRules`); the artifact operator reports it with a `Programmed=False` condition.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "artifact.falcosecurity.dev",
    version = "v1alpha1",
    kind = "Rulesfile",
    plural = "rulesfiles",
    category = "artifacts",
    namespaced,
    status = "ArtifactStatus",
    derive = "PartialEq",
    doc = "Rulesfile delivers Falco rules to the nodes it selects.",
    printcolumn(name = "Priority", type_ = "integer", json_path = ".spec.priority"),
    printcolumn(
        name = "Programmed",
        type_ = "string",
        json_path = ".status.conditions[?(@.type == 'Programmed')].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct RulesfileSpec {
    /// Rules packaged as an OCI artifact (Falco's rulesfile media types).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oci_artifact: Option<OciArtifact>,
    /// Rules written inline, as YAML.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_unknown")]
    pub inline_rules: Option<serde_json::Value>,
    /// A ConfigMap holding the rules under key `rules.yaml`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_ref: Option<ConfigMapRef>,
    /// Load order, 0–99: lower loads first, later files override earlier ones. Defaults to 50.
    #[serde(default = "default_priority")]
    #[schemars(range(min = 0, max = 99))]
    pub priority: i32,
    /// Nodes that get this artifact, by node labels. All nodes when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

/// A Falco plugin from an OCI artifact, with its entry in the aggregated plugin configuration.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "artifact.falcosecurity.dev",
    version = "v1alpha1",
    kind = "Plugin",
    plural = "plugins",
    category = "artifacts",
    namespaced,
    status = "ArtifactStatus",
    derive = "PartialEq",
    doc = "Plugin delivers a Falco plugin and its configuration to the nodes it selects.",
    printcolumn(
        name = "Programmed",
        type_ = "string",
        json_path = ".status.conditions[?(@.type == 'Programmed')].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct PluginSpec {
    /// The plugin's shared library packaged as an OCI artifact (Falco's plugin media types).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oci_artifact: Option<OciArtifact>,
    /// The plugin's entry in Falco's `plugins:` list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<PluginConfig>,
    /// Nodes that get this plugin, by node labels. All nodes when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

/// A plugin's entry in Falco's `plugins:` list.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PluginConfig {
    /// Plugin name; the Plugin's `metadata.name` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub name: Option<String>,
    /// Path of the shared library; `/usr/share/falco/plugins/<metadata.name>.so` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.startsWith('/')").message("libraryPath must be an absolute path"))]
    pub library_path: Option<String>,
    /// The plugin's `init_config`, any YAML value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_unknown")]
    pub init_config: Option<serde_json::Value>,
    /// The plugin's `open_params`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_params: Option<String>,
}

/// A `falco.yaml` fragment, inline and/or from a ConfigMap (key `config.yaml`), written into
/// Falco's `config.d` ordered by `priority`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "artifact.falcosecurity.dev",
    version = "v1alpha1",
    kind = "Config",
    plural = "configs",
    category = "artifacts",
    namespaced,
    status = "ArtifactStatus",
    derive = "PartialEq",
    doc = "Config delivers a falco.yaml fragment to the nodes it selects.",
    printcolumn(name = "Priority", type_ = "integer", json_path = ".spec.priority"),
    printcolumn(
        name = "Programmed",
        type_ = "string",
        json_path = ".status.conditions[?(@.type == 'Programmed')].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ConfigSpec {
    /// The fragment, inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_unknown")]
    pub config: Option<serde_json::Value>,
    /// A ConfigMap holding the fragment under key `config.yaml`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_ref: Option<ConfigMapRef>,
    /// Load order, 0–99: later fragments override earlier ones. Defaults to 50.
    #[serde(default = "default_priority")]
    #[schemars(range(min = 0, max = 99))]
    pub priority: i32,
    /// Nodes that get this fragment, by node labels. All nodes when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}
