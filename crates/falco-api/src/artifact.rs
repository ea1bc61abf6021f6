//! `artifact.falcosecurity.dev/v1alpha1`: Rulesfile, Plugin and Config.
//!
//! These are shared by every node: the artifact operator on each node reads them and writes files
//! where Falco reads them. Per-node state never goes into these objects (no per-node finalizers
//! and no per-node status writers), so their size and write rate stay constant as nodes come and go.

// Each `printcolumn(...)` of kube-derive repeats the same keys, which this lint mistakes for
// duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
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
    /// Require a valid signature on the OCI artifact; an artifact that fails is never written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<SignatureVerification>,
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
    /// Require a valid signature on the OCI artifact; an artifact that fails is never written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<SignatureVerification>,
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

/// Signature verification of an OCI artifact before anything is written.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SignatureVerification {
    /// Verify a cosign signature, made with a key pair or keyless.
    pub cosign: CosignVerification,
}

/// A cosign signature: the signature manifest is read from the tag `sha256-<digest>.sig` of the
/// artifact's repository, and its simple-signing payload must name the artifact's digest. Set
/// exactly one of `publicKey` (key pair) and `keyless` (Fulcio certificate and Rekor entry,
/// checked offline against the trusted root the artifact operator is given with
/// `--cosign-trusted-root`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.publicKey) != has(self.keyless)")
    .message("set exactly one of publicKey and keyless"))]
pub struct CosignVerification {
    /// The public key, PEM (`-----BEGIN PUBLIC KEY-----`), ECDSA P-256 as `cosign generate-key-pair` makes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.contains('-----BEGIN PUBLIC KEY-----')")
        .message("publicKey must be a PEM public key (-----BEGIN PUBLIC KEY-----)"))]
    pub public_key: Option<String>,
    /// A keyless signature: who must have signed, as Fulcio certified it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keyless: Option<KeylessVerification>,
}

/// The signer of a keyless cosign signature (`cosign verify --certificate-identity
/// --certificate-oidc-issuer`). Both are matched exactly; the certificate must chain to the
/// trusted root and its signature must be in the transparency log's bundle.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeylessVerification {
    /// The certificate's subject alternative name: an email, or a URI such as a CI workflow's
    /// `https://github.com/<org>/<repo>/.github/workflows/<file>@refs/heads/main`.
    #[schemars(length(min = 1))]
    pub identity: String,
    /// The OIDC issuer that authenticated the signer, e.g. `https://accounts.google.com` or
    /// `https://token.actions.githubusercontent.com`.
    #[schemars(length(min = 1))]
    pub issuer: String,
}

/// What one node's artifact operator delivered: one object per node, named after the node, in the
/// Falco namespace, written only by that node's sidecar and owned by the `Node` (so the garbage
/// collector deletes it with the node).
///
/// The shared `Rulesfile`/`Plugin`/`Config` objects never carry per-node data; their conditions are
/// an aggregate of these records ([`aggregate_conditions`]), so their size and write rate do not
/// grow with the number of nodes.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "artifact.falcosecurity.dev",
    version = "v1alpha1",
    kind = "NodeArtifacts",
    plural = "nodeartifacts",
    category = "artifacts",
    namespaced,
    status = "NodeArtifactsStatus",
    derive = "PartialEq",
    doc = "NodeArtifacts reports what the artifact operator of one node delivered.",
    printcolumn(name = "Node", type_ = "string", json_path = ".spec.nodeName"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct NodeArtifactsSpec {
    /// The node this record describes.
    #[x_kube(validation = Rule::new("self == oldSelf").message("nodeName is immutable"))]
    #[schemars(length(min = 1, max = 253))]
    pub node_name: String,
}

/// The artifacts one node holds.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeArtifactsStatus {
    /// One entry per Rulesfile, Plugin and Config selecting this node.
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["kind".into(), "name".into()]))]
    pub artifacts: Vec<NodeArtifact>,
    /// What the driver loader did on this node (Falco instances with `spec.driver` kmod or
    /// auto), as the loader's status file says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<falco_core::driver::status::DriverStatus>,
}

/// The state of one artifact on one node.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeArtifact {
    /// `Rulesfile`, `Plugin` or `Config`.
    pub kind: String,
    /// The artifact's name (same namespace).
    pub name: String,
    /// The artifact's `metadata.generation` this entry describes.
    #[serde(default)]
    pub observed_generation: i64,
    /// The OCI manifest digest installed, if the artifact has an OCI source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Files written for this artifact.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<String>,
    /// `Programmed` and `ResolvedRefs`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

/// How many node names a failed aggregate condition lists.
pub const AGGREGATE_MAX_NODES: usize = 3;

/// The conditions of a shared artifact (`kind`/`name` at `generation`), aggregated from the
/// per-node records: per condition type, `False` beats `Unknown` beats `True`; a node that has
/// not yet reported on `generation` counts as `Unknown`. Messages name at most
/// [`AGGREGATE_MAX_NODES`] nodes, so the result has a constant size whatever the node count.
/// With no record mentioning the artifact: `Programmed=Unknown`, reason `NoNodesSelected`.
///
/// The writer of the shared status (one per cluster: the instance operator) calls this; the
/// sidecars never write shared objects.
pub fn aggregate_conditions(
    kind: &str,
    name: &str,
    generation: i64,
    records: &[NodeArtifacts],
    now: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
) -> Vec<Condition> {
    use std::collections::BTreeMap;
    let entries: Vec<(&str, &NodeArtifact)> = records
        .iter()
        .filter_map(|r| {
            let status = r.status.as_ref()?;
            let entry = status
                .artifacts
                .iter()
                .find(|a| a.kind == kind && a.name == name)?;
            Some((r.spec.node_name.as_str(), entry))
        })
        .collect();
    let condition = |type_: &str, status: &str, reason: &str, message: String| Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message,
        observed_generation: Some(generation),
        last_transition_time: now.clone(),
    };
    if entries.is_empty() {
        return vec![condition(
            crate::common::condition::PROGRAMMED,
            "Unknown",
            "NoNodesSelected",
            "No node reports this artifact yet.".to_owned(),
        )];
    }
    let mut types: Vec<&str> = entries
        .iter()
        .flat_map(|(_, e)| e.conditions.iter().map(|c| c.type_.as_str()))
        .collect();
    types.push(crate::common::condition::PROGRAMMED);
    types.sort_unstable();
    types.dedup();
    let total = entries.len();
    types
        .into_iter()
        .map(|type_| {
            // (status rank, reason) → nodes; rank 0 = False, 1 = Unknown, 2 = True.
            let mut by: BTreeMap<(u8, String), Vec<&str>> = BTreeMap::new();
            let mut message_of: BTreeMap<(u8, String), String> = BTreeMap::new();
            for (node, entry) in &entries {
                let found = entry.conditions.iter().find(|c| c.type_ == type_);
                let (rank, reason, message) = match found {
                    _ if entry.observed_generation < generation => {
                        (1, "Pending".to_owned(), "not yet reconciled".to_owned())
                    }
                    None => continue,
                    Some(c) => {
                        let rank = match c.status.as_str() {
                            "False" => 0,
                            "True" => 2,
                            _ => 1,
                        };
                        (rank, c.reason.clone(), c.message.clone())
                    }
                };
                by.entry((rank, reason.clone())).or_default().push(node);
                message_of.entry((rank, reason)).or_insert(message);
            }
            let Some(((rank, reason), nodes)) = by.iter().next() else {
                return condition(type_, "Unknown", "Pending", "No node reported it.".into());
            };
            let status = ["False", "Unknown", "True"][usize::from(*rank)];
            if *rank == 2 {
                let ok = by.values().map(Vec::len).sum::<usize>();
                return condition(
                    type_,
                    status,
                    reason,
                    format!(
                        "{ok} of {total} nodes: {}",
                        message_of[&(*rank, reason.clone())]
                    ),
                );
            }
            let mut named: Vec<&str> = nodes.clone();
            named.sort_unstable();
            let more = named.len().saturating_sub(AGGREGATE_MAX_NODES);
            named.truncate(AGGREGATE_MAX_NODES);
            let more = if more > 0 {
                format!(" (+{more} more)")
            } else {
                String::new()
            };
            condition(
                type_,
                status,
                reason,
                format!(
                    "{} of {total} nodes: {} (nodes: {}{more})",
                    nodes.len(),
                    message_of[&(*rank, reason.clone())],
                    named.join(", ")
                ),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn record(node: &str, generation: i64, status: &str, reason: &str) -> NodeArtifacts {
        let mut r = NodeArtifacts::new(
            node,
            NodeArtifactsSpec {
                node_name: node.to_owned(),
            },
        );
        r.status = Some(NodeArtifactsStatus {
            artifacts: vec![NodeArtifact {
                kind: "Rulesfile".into(),
                name: "r".into(),
                observed_generation: generation,
                conditions: vec![Condition {
                    type_: "Programmed".into(),
                    status: status.into(),
                    reason: reason.into(),
                    message: format!("{reason} here"),
                    observed_generation: Some(generation),
                    last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
                }],
                ..NodeArtifact::default()
            }],
            driver: None,
        });
        r
    }

    fn now() -> Time {
        Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)
    }

    #[test]
    fn aggregate_is_constant_size_and_false_wins() {
        let mut records: Vec<NodeArtifacts> = (0..1000)
            .map(|i| record(&format!("n{i:04}"), 2, "True", "Programmed"))
            .collect();
        let ok = aggregate_conditions("Rulesfile", "r", 2, &records, now());
        assert_eq!(ok.len(), 1);
        assert_eq!(
            (ok[0].status.as_str(), ok[0].reason.as_str()),
            ("True", "Programmed")
        );
        assert!(
            ok[0].message.starts_with("1000 of 1000 nodes"),
            "{}",
            ok[0].message
        );

        for i in [7, 3, 500, 999] {
            records[i] = record(&format!("n{i:04}"), 2, "False", "AuthenticationFailed");
        }
        records[1] = record("n0001", 1, "True", "Programmed");
        let bad = aggregate_conditions("Rulesfile", "r", 2, &records, now());
        assert_eq!(
            (bad[0].status.as_str(), bad[0].reason.as_str()),
            ("False", "AuthenticationFailed")
        );
        assert_eq!(
            bad[0].message,
            "4 of 1000 nodes: AuthenticationFailed here (nodes: n0003, n0007, n0500 (+1 more))"
        );
        // Only the pending node left: Unknown until it reports the new generation.
        let pending: Vec<_> = records
            .iter()
            .filter(|r| r.spec.node_name == "n0001")
            .cloned()
            .collect();
        assert_eq!(
            aggregate_conditions("Rulesfile", "r", 2, &pending, now())[0].status,
            "Unknown"
        );
        let none = aggregate_conditions("Rulesfile", "other", 2, &records, now());
        assert_eq!(none[0].reason, "NoNodesSelected");
    }
}
