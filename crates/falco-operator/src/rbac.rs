//! What the operator itself may do: the rules of its ClusterRole ([`operator_rules`]), printed by
//! `falco-operator rbac` for the Helm chart and proven sufficient by a test that runs the operator
//! as a user holding exactly these rules.
//!
//! The table of rules, and why the operator holds what it grants, is in the crate docs (RBAC).

use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

fn rule(group: &str, resources: &[&str], verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(vec![group.to_owned()]),
        resources: Some(resources.iter().map(|s| (*s).to_owned()).collect()),
        verbs: verbs.iter().map(|s| (*s).to_owned()).collect(),
        ..PolicyRule::default()
    }
}

/// The operator's permissions (module docs).
pub fn operator_rules() -> Vec<PolicyRule> {
    let read = ["get", "list", "watch"];
    let manage = [
        "get", "list", "watch", "create", "update", "patch", "delete",
    ];
    let instance = falco_api::INSTANCE_GROUP;
    let artifact = falco_api::ARTIFACT_GROUP;
    vec![
        rule(
            instance,
            &["falcos", "components"],
            &["get", "list", "watch", "patch", "update"],
        ),
        rule(
            instance,
            &["falcos/status", "components/status"],
            &["get", "patch", "update"],
        ),
        rule(artifact, &["rulesfiles", "plugins", "configs"], &read),
        rule(
            artifact,
            &["rulesfiles/status", "plugins/status", "configs/status"],
            &["get", "patch"],
        ),
        rule(
            artifact,
            &["nodeartifacts"],
            &["get", "list", "watch", "create", "patch"],
        ),
        rule(artifact, &["nodeartifacts/status"], &["get", "patch"]),
        rule("", &["serviceaccounts", "services", "configmaps"], &manage),
        rule("", &["secrets"], &["get", "patch"]),
        rule(
            "",
            &[
                "endpoints",
                "nodes",
                "namespaces",
                "pods",
                "replicationcontrollers",
            ],
            &read,
        ),
        rule("apps", &["daemonsets", "deployments"], &manage),
        rule("apps", &["replicasets"], &read),
        rule("discovery.k8s.io", &["endpointslices"], &read),
        rule(
            "rbac.authorization.k8s.io",
            &[
                "roles",
                "rolebindings",
                "clusterroles",
                "clusterrolebindings",
            ],
            &manage,
        ),
        rule("events.k8s.io", &["events"], &["create", "patch"]),
        rule(
            "coordination.k8s.io",
            &["leases"],
            &["get", "list", "watch", "create", "update", "patch"],
        ),
    ]
}

/// The operator's ClusterRole, named `name`.
pub fn operator_cluster_role(name: &str) -> ClusterRole {
    ClusterRole {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        rules: Some(operator_rules()),
        ..ClusterRole::default()
    }
}
