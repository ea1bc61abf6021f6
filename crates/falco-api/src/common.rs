//! Types shared by several kinds: OCI references, registry access, ConfigMap references and
//! status conditions.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::KubeSchema;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// ConfigMap key holding a rules file.
pub const CONFIGMAP_RULES_KEY: &str = "rules.yaml";
/// ConfigMap key holding a falco.yaml fragment.
pub const CONFIGMAP_CONFIG_KEY: &str = "config.yaml";
/// Secret key holding the registry user name.
pub const SECRET_USERNAME_KEY: &str = "username";
/// Secret key holding the registry password or token.
pub const SECRET_PASSWORD_KEY: &str = "password";
/// Registry used when an [`OciArtifact`] names none.
pub const DEFAULT_REGISTRY: &str = "ghcr.io";
/// Tag used when an [`ImageSpec`] names none.
pub const DEFAULT_TAG: &str = "latest";

/// Condition types reported by the controllers.
pub mod condition {
    /// Instance kinds: the last reconcile applied every child.
    pub const RECONCILED: &str = "Reconciled";
    /// Instance kinds: the workload has its desired number of available replicas.
    pub const AVAILABLE: &str = "Available";
    /// Artifact kinds: every referenced ConfigMap and Secret exists.
    pub const RESOLVED_REFS: &str = "ResolvedRefs";
    /// Artifact kinds: the artifact is written where Falco reads it.
    pub const PROGRAMMED: &str = "Programmed";
    /// Falco with `spec.driver`: every node reporting has its driver loaded.
    pub const DRIVER_READY: &str = "DriverReady";
}

/// An artifact stored in an OCI registry.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OciArtifact {
    /// Repository and tag (or digest) of the artifact.
    pub image: ImageSpec,
    /// Registry host, credentials and transport. The registry defaults to `ghcr.io`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<RegistryConfig>,
}

/// Repository and tag of an OCI artifact.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageSpec {
    /// Repository path inside the registry, e.g. `falcosecurity/rules/falco-rules`.
    ///
    /// Stricter than upstream: it must follow the OCI distribution grammar for repository names
    /// (lowercase components separated by `/`; inside a component `.`, `_`, `__` or runs of `-`),
    /// and must not start with a registry host (a first component with a `.`, or `localhost`,
    /// followed by `/`), so a typo is refused at apply time instead of failing every pull.
    #[x_kube(validation = Rule::new(
        "self.matches('^[a-z0-9]+(([.]|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+(([.]|_|__|-+)[a-z0-9]+)*)*$')"
    ).message(
        "repository must be an OCI repository path such as falcosecurity/rules/falco-rules: lowercase, without registry host, tag or digest (put the tag in image.tag and the host in registry.name)"
    ))]
    #[x_kube(validation = Rule::new(
        "!self.matches('^([^/]*[.][^/]*|localhost)/')"
    ).message(
        "repository must not start with a registry host: put the host in registry.name (e.g. registry.name: ghcr.io, repository: falcosecurity/rules/falco-rules)"
    ))]
    #[schemars(length(min = 1, max = 255))]
    pub repository: String,
    /// A tag, or a digest `sha256:<64 hex>` to pin the artifact. Defaults to `latest`.
    #[serde(default = "default_tag")]
    #[x_kube(validation = Rule::new(
        "self.matches('^(sha256:[a-f0-9]{64}|[A-Za-z0-9_][A-Za-z0-9._-]{0,127})$')"
    ).message(
        "tag must be an OCI tag (letters, digits, '_', '.', '-', at most 128 characters) or a digest sha256:<64 lowercase hex>"
    ))]
    pub tag: String,
}

fn default_tag() -> String {
    DEFAULT_TAG.to_owned()
}

impl ImageSpec {
    /// Whether the tag pins a digest (`sha256:…`).
    pub fn is_digest(&self) -> bool {
        self.tag.starts_with("sha256:")
    }
}

/// Where and how to reach a registry.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.plainHTTP) && self.plainHTTP && has(self.tls))")
    .message("plainHTTP and tls are mutually exclusive"))]
pub struct RegistryConfig {
    /// Registry host and optional port, e.g. `ghcr.io` or `registry.local:5000`, optionally
    /// followed by a repository path prefix, e.g. `myreg.azurecr.io/falco`. As upstream, the
    /// artifact's reference is `<name>/<repository>`: `myreg.azurecr.io/falco` with repository
    /// `rules` pulls `myreg.azurecr.io/falco/rules`. Credentials, `plainHTTP` and TLS apply to the
    /// host (the part before the first `/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(
        "self.matches('^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]+)?(/[a-z0-9]+(([.]|_|__|-+)[a-z0-9]+)*)*$')"
    ).message(
        "registry.name is a host[:port], optionally followed by a repository path prefix (myreg.azurecr.io/falco), without scheme"
    ))]
    pub name: Option<String>,
    /// Credentials for the registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<RegistryAuth>,
    /// Talk plain HTTP to this registry. Never set it for a registry outside a trusted network.
    #[serde(default, rename = "plainHTTP", skip_serializing_if = "Option::is_none")]
    pub plain_http: Option<bool>,
    /// TLS settings of the registry connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
}

/// Registry credentials.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegistryAuth {
    /// Secret in the artifact's namespace: keys `username` and `password` (a token alone in
    /// `password` is sent as a bearer token), or an image-pull Secret of type
    /// `kubernetes.io/dockerconfigjson` or `kubernetes.io/dockercfg` whose entry for the registry
    /// host is used (matched as the kubelet does). The Secret is read by name; it is never listed
    /// or cached cluster-wide.
    pub secret_ref: SecretRef,
}

/// A reference to a Secret in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct SecretRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// TLS settings of a registry connection.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsConfig {
    /// Accept any server certificate. Only for tests; the default verifies it.
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

/// A reference to a ConfigMap in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct ConfigMapRef {
    /// Name of the ConfigMap.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Status of Rulesfile, Plugin and Config: conditions, and for Config the generation they describe.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactStatus {
    /// `Programmed` and `ResolvedRefs`, keyed by type.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` these conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Schema of a field holding arbitrary YAML/JSON (upstream's `apiextensionsv1.JSON`).
pub(crate) fn preserve_unknown(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "x-kubernetes-preserve-unknown-fields": true })
}

/// Default of an artifact kind's `status`: one `Programmed=Unknown/Pending` condition, as upstream
/// declares, so `kubectl get` shows a value before any controller ran.
pub(crate) fn pending_artifact_status() -> serde_json::Value {
    serde_json::json!({
        "conditions": [{
            "type": condition::PROGRAMMED,
            "status": "Unknown",
            "reason": "Pending",
            "message": "Waiting for controller",
            "lastTransitionTime": "1970-01-01T00:00:00Z",
        }]
    })
}
