//! The user's `podTemplateSpec` merged over the generated pod template, with upstream's merge
//! semantics (the list types of the Kubernetes OpenAPI schema, as structured-merge-diff applies them):
//!
//! | field | behaviour |
//! |---|---|
//! | `containers`, `initContainers`, `ephemeralContainers`, `volumes`, `imagePullSecrets`, `env`, `resourceClaims`, `schedulingGates` | merged by `name` |
//! | `volumeMounts` | merged by `mountPath` |
//! | `ports` | merged by `containerPort` + `protocol` (TCP when absent) |
//! | `hostAliases` | merged by `ip` |
//! | `topologySpreadConstraints` | merged by `topologyKey` + `whenUnsatisfiable` |
//! | `nodeSelector` | atomic map: a user value replaces the default |
//! | every other list (`tolerations`, `args`, `command`, …) | atomic: a user value replaces the default |
//! | objects (maps) | merged key by key, recursively |
//! | scalars | the user value wins |
//!
//! A `null` or absent user value leaves the default alone. Items merged by key keep the default's
//! order; new items are appended in the user's order.

use k8s_openapi::api::core::v1::PodTemplateSpec;
use serde_json::{Map, Value};

use crate::{Error, Result};

/// Merges `overlay` over `base`, returning the merged template.
pub fn merge_pod_template(
    base: &PodTemplateSpec,
    overlay: &PodTemplateSpec,
) -> Result<PodTemplateSpec> {
    let mut merged = serde_json::to_value(base).map_err(Error::MergePodTemplate)?;
    let overlay = serde_json::to_value(overlay).map_err(Error::MergePodTemplate)?;
    merge_value(&mut merged, &overlay, "");
    serde_json::from_value(merged).map_err(Error::MergePodTemplate)
}

/// Maps merged atomically rather than key by key.
const ATOMIC_MAPS: &[&str] = &["nodeSelector"];

/// Merges `overlay` into `base`; `field` is the name of the field both values sit under.
pub(crate) fn merge_value(base: &mut Value, overlay: &Value, field: &str) {
    match (base, overlay) {
        (_, Value::Null) => {}
        (Value::Object(base), Value::Object(overlay)) if !ATOMIC_MAPS.contains(&field) => {
            merge_object(base, overlay);
        }
        (Value::Array(base), Value::Array(overlay)) if list_key(field, &Value::Null).is_some() => {
            for item in overlay {
                let key = list_key(field, item).flatten();
                let existing = key.as_ref().and_then(|k| {
                    base.iter_mut()
                        .find(|b| list_key(field, b).flatten().as_ref() == Some(k))
                });
                match existing {
                    Some(existing) => merge_value(existing, item, ""),
                    None => base.push(item.clone()),
                }
            }
        }
        (base, overlay) => *base = overlay.clone(),
    }
}

fn merge_object(base: &mut Map<String, Value>, overlay: &Map<String, Value>) {
    for (key, value) in overlay {
        match base.get_mut(key) {
            Some(existing) => merge_value(existing, value, key),
            None if !value.is_null() => {
                base.insert(key.clone(), value.clone());
            }
            None => {}
        }
    }
}

/// For a list merged by key: `Some(key of item)` (`Some(None)` when the item lacks the key);
/// `None` for an atomic list.
fn list_key(field: &str, item: &Value) -> Option<Option<String>> {
    let get = |name: &str| item.get(name).map(|v| v.to_string());
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "imagePullSecrets"
        | "env"
        | "resourceClaims"
        | "schedulingGates" => Some(get("name")),
        "volumeMounts" => Some(get("mountPath")),
        "hostAliases" => Some(get("ip")),
        "ports" => Some(get("containerPort").map(|port| {
            let protocol = item
                .get("protocol")
                .and_then(Value::as_str)
                .unwrap_or("TCP");
            format!("{port}/{protocol}")
        })),
        "topologySpreadConstraints" => Some(
            get("topologyKey")
                .map(|k| format!("{k}/{}", get("whenUnsatisfiable").unwrap_or_default())),
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn merged(base: Value, overlay: Value) -> Value {
        let base: PodTemplateSpec = serde_json::from_value(base).unwrap();
        let overlay: PodTemplateSpec = serde_json::from_value(overlay).unwrap();
        serde_json::to_value(merge_pod_template(&base, &overlay).unwrap()).unwrap()
    }

    #[test]
    fn containers_env_and_mounts_merge_by_key() {
        let out = merged(
            json!({"spec": {"containers": [{
                "name": "falco", "image": "falco:1",
                "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                "volumeMounts": [{"name": "x", "mountPath": "/x"}],
                "ports": [{"name": "web", "containerPort": 8765}]
            }]}}),
            json!({"spec": {"containers": [
                {"name": "falco",
                 "env": [{"name": "B", "value": "two"}, {"name": "C", "value": "3"}],
                 "volumeMounts": [{"name": "y", "mountPath": "/x", "readOnly": true}],
                 "ports": [{"name": "web2", "containerPort": 8765, "protocol": "TCP"}, {"containerPort": 9000}]},
                {"name": "extra", "image": "busybox"}
            ]}}),
        );
        let falco = &out["spec"]["containers"][0];
        assert_eq!(falco["image"], "falco:1", "untouched fields stay");
        assert_eq!(
            falco["env"],
            json!([{"name": "A", "value": "1"}, {"name": "B", "value": "two"}, {"name": "C", "value": "3"}])
        );
        assert_eq!(
            falco["volumeMounts"],
            json!([{"name": "y", "mountPath": "/x", "readOnly": true}])
        );
        assert_eq!(
            falco["ports"],
            json!([{"name": "web2", "containerPort": 8765, "protocol": "TCP"}, {"containerPort": 9000}])
        );
        assert_eq!(out["spec"]["containers"][1]["name"], "extra");
    }

    #[test]
    fn tolerations_args_command_and_node_selector_are_atomic() {
        let out = merged(
            json!({"spec": {
                "containers": [{"name": "falco", "args": ["/usr/bin/falco"], "command": ["a"]}],
                "tolerations": [{"key": "a", "operator": "Exists"}, {"key": "b", "operator": "Exists"}],
                "nodeSelector": {"a": "1", "b": "2"}
            }}),
            json!({"spec": {
                "containers": [{"name": "falco", "args": ["-v"]}],
                "tolerations": [{"key": "c", "operator": "Exists"}],
                "nodeSelector": {"c": "3"}
            }}),
        );
        assert_eq!(out["spec"]["containers"][0]["args"], json!(["-v"]));
        assert_eq!(out["spec"]["containers"][0]["command"], json!(["a"]));
        assert_eq!(
            out["spec"]["tolerations"],
            json!([{"key": "c", "operator": "Exists"}])
        );
        assert_eq!(out["spec"]["nodeSelector"], json!({"c": "3"}));
    }

    #[test]
    fn volumes_merge_by_name_and_maps_merge_by_key() {
        let out = merged(
            json!({"metadata": {"labels": {"a": "1"}, "annotations": {"x": "1"}},
                   "spec": {"containers": [], "volumes": [{"name": "v", "emptyDir": {}}]}}),
            json!({"metadata": {"labels": {"b": "2"}},
                   "spec": {"volumes": [{"name": "w", "hostPath": {"path": "/w"}}]}}),
        );
        assert_eq!(out["metadata"]["labels"], json!({"a": "1", "b": "2"}));
        assert_eq!(out["metadata"]["annotations"], json!({"x": "1"}));
        assert_eq!(
            out["spec"]["volumes"],
            json!([{"name": "v", "emptyDir": {}}, {"name": "w", "hostPath": {"path": "/w"}}])
        );
    }
}
