//! Small builders shared by the Falco and Component children.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    EnvVar, EnvVarSource, HTTPGetAction, ObjectFieldSelector, Probe, ServiceAccount,
};
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::ObjectKey;

/// The controller ownerReference of a namespaced child: garbage-collected with the CR, and
/// `blockOwnerDeletion` so a foreground delete waits for it.
pub fn owner_reference(api_version: &str, kind: &str, name: &str, uid: &str) -> OwnerReference {
    OwnerReference {
        api_version: api_version.to_owned(),
        kind: kind.to_owned(),
        name: name.to_owned(),
        uid: uid.to_owned(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Metadata of a namespaced child named after its CR, owned by it.
pub(crate) fn namespaced_meta(
    key: &ObjectKey,
    labels: &BTreeMap<String, String>,
    owner: &OwnerReference,
) -> ObjectMeta {
    ObjectMeta {
        name: Some(key.name.clone()),
        namespace: Some(key.namespace.clone()),
        labels: Some(labels.clone()),
        owner_references: Some(vec![owner.clone()]),
        ..ObjectMeta::default()
    }
}

/// Name of a cluster-scoped child: `falco-operator:<kind>:<namespace>:<name>`. Injective because
/// neither a namespace nor an object name may contain `:`; RBAC names may (like `system:` roles).
pub(crate) fn cluster_scoped_name(kind_lower: &str, key: &ObjectKey) -> String {
    format!("falco-operator:{kind_lower}:{}:{}", key.namespace, key.name)
}

/// A `PolicyRule` from string slices.
pub(crate) fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> PolicyRule {
    let strings = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    PolicyRule {
        api_groups: Some(strings(groups)),
        resources: Some(strings(resources)),
        verbs: strings(verbs),
        ..PolicyRule::default()
    }
}

/// The CR's ServiceAccount.
pub(crate) fn service_account(meta: &ObjectMeta) -> ServiceAccount {
    ServiceAccount {
        metadata: meta.clone(),
        ..ServiceAccount::default()
    }
}

fn subject(key: &ObjectKey) -> Subject {
    Subject {
        kind: "ServiceAccount".to_owned(),
        name: key.name.clone(),
        namespace: Some(key.namespace.clone()),
        ..Subject::default()
    }
}

/// The CR's Role and the RoleBinding of its ServiceAccount to it.
pub(crate) fn role(
    meta: &ObjectMeta,
    key: &ObjectKey,
    rules: Vec<PolicyRule>,
) -> (Role, RoleBinding) {
    let role = Role {
        metadata: meta.clone(),
        rules: Some(rules),
    };
    let binding = RoleBinding {
        metadata: meta.clone(),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".to_owned()),
            kind: "Role".to_owned(),
            name: key.name.clone(),
        },
        subjects: Some(vec![subject(key)]),
    };
    (role, binding)
}

/// The CR's ClusterRole and the ClusterRoleBinding of its ServiceAccount to it; no ownerReference
/// (a namespaced owner cannot own a cluster-scoped object), found by the owner labels instead.
pub(crate) fn cluster_role(
    name: &str,
    labels: &BTreeMap<String, String>,
    key: &ObjectKey,
    rules: Vec<PolicyRule>,
) -> (ClusterRole, ClusterRoleBinding) {
    let meta = ObjectMeta {
        name: Some(name.to_owned()),
        labels: Some(labels.clone()),
        ..ObjectMeta::default()
    };
    let role = ClusterRole {
        metadata: meta.clone(),
        rules: Some(rules),
        ..ClusterRole::default()
    };
    let binding = ClusterRoleBinding {
        metadata: meta,
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".to_owned()),
            kind: "ClusterRole".to_owned(),
            name: name.to_owned(),
        },
        subjects: Some(vec![subject(key)]),
    };
    (role, binding)
}

/// An HTTP GET probe.
pub(crate) fn http_probe(path: &str, port: IntOrString, timing: ProbeTiming) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port,
            ..HTTPGetAction::default()
        }),
        initial_delay_seconds: Some(timing.initial_delay),
        timeout_seconds: Some(timing.timeout),
        period_seconds: Some(timing.period),
        failure_threshold: Some(timing.failure_threshold),
        success_threshold: Some(1),
        ..Probe::default()
    }
}

/// Timings of a probe, in seconds (and a count for the threshold).
#[derive(Clone, Copy)]
pub(crate) struct ProbeTiming {
    pub initial_delay: i32,
    pub timeout: i32,
    pub period: i32,
    pub failure_threshold: i32,
}

/// An env variable with a literal value.
pub(crate) fn env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        ..EnvVar::default()
    }
}

/// An env variable from a pod field (downward API).
pub(crate) fn env_field(name: &str, field_path: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: field_path.to_owned(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

/// The tag of an image reference, parsed properly: `None` for a digest-only reference or no tag
/// (a `:` inside the registry host, as in `registry:5000/falco`, is not a tag).
pub(crate) fn image_tag(image: &str) -> Option<&str> {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last_segment = without_digest.rsplit('/').next().unwrap_or(without_digest);
    last_segment
        .split_once(':')
        .map(|(_, tag)| tag)
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_tag_ignores_registry_ports_and_digests() {
        assert_eq!(
            image_tag("docker.io/falcosecurity/falco:0.44.1"),
            Some("0.44.1")
        );
        assert_eq!(
            image_tag("registry.local:5000/falco:0.43.0"),
            Some("0.43.0")
        );
        assert_eq!(image_tag("registry.local:5000/falco"), None);
        assert_eq!(image_tag("falco@sha256:abcd"), None);
        assert_eq!(image_tag("falco:1.0@sha256:abcd"), Some("1.0"));
        assert_eq!(image_tag("falco"), None);
    }
}
