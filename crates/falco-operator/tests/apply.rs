//! The built children against a real kube-apiserver (falco-testenv): each one is server-side
//! applied with the operator's field manager and read back, which proves the objects are valid for
//! the API server's schema (what unit tests cannot), that the server keeps what was sent, and that
//! applying the same object again is a no-op (no new resourceVersion), which the zero-request
//! no-op reconcile relies on.

use std::fmt::Debug;

use falco_api::{Component, ComponentSpec, Falco, FalcoSpec};
use falco_operator::component::{self, ComponentChildren};
use falco_operator::falco::{self, FalcoChildren, Workload};
use falco_operator::{FALCO_FIELD_MANAGER, OperatorConfig, labels};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

async fn setup(prefix: &str) -> (Client, String) {
    let cp = falco_testenv::shared();
    let client = cp.client().await.expect("client");
    let ns = cp.namespace(&client, prefix).await.expect("namespace");
    (client, ns)
}

/// Server-side applies `obj` (namespaced or cluster-scoped) with the operator's field manager and
/// force, asserts the server kept every field that was sent, applies it again and asserts that
/// was a no-op. Returns the stored object.
async fn apply<K>(client: &Client, obj: &K) -> K
where
    K: Resource<DynamicType = ()> + Serialize + DeserializeOwned + Debug,
{
    let resource = ApiResource::erase::<K>(&());
    let api: Api<DynamicObject> = match obj.meta().namespace.as_deref() {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    let name = obj.name_any();
    let sent = serde_json::to_value(obj).expect("json");
    let params = PatchParams::apply(FALCO_FIELD_MANAGER).force();
    let first = api
        .patch(&name, &params, &Patch::Apply(&sent))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{} {name}: the API server refused the apply: {e}",
                K::kind(&())
            )
        });
    let stored = serde_json::to_value(&first).expect("json");
    assert_subset(&sent, &stored, &format!("{}/{name}", K::kind(&())));
    let second = api
        .patch(&name, &params, &Patch::Apply(&sent))
        .await
        .expect("second apply");
    assert_eq!(
        first.resource_version(),
        second.resource_version(),
        "{} {name}: applying the same object twice changed it",
        K::kind(&())
    );
    serde_json::from_value(stored).expect("typed")
}

/// Every field of `sent` is in `stored` with the same value. Quantities are compared after the
/// server's canonicalisation (`1000m` is stored as `1`), so values under `resources` are skipped.
fn assert_subset(sent: &Value, stored: &Value, path: &str) {
    match (sent, stored) {
        (Value::Object(s), Value::Object(t)) => {
            for (key, value) in s {
                let child = format!("{path}.{key}");
                let Some(other) = t.get(key) else {
                    panic!("{child}: sent but not stored")
                };
                if key == "limits" || key == "requests" {
                    continue;
                }
                assert_subset(value, other, &child);
            }
        }
        (Value::Array(s), Value::Array(t)) => {
            assert_eq!(s.len(), t.len(), "{path}: list length");
            for (i, (a, b)) in s.iter().zip(t).enumerate() {
                assert_subset(a, b, &format!("{path}[{i}]"));
            }
        }
        (a, b) => assert_eq!(a, b, "{path}"),
    }
}

async fn create_falco(client: &Client, ns: &str, name: &str, spec: Value) -> Falco {
    let spec: FalcoSpec = serde_json::from_value(spec).expect("spec");
    let mut cr = Falco::new(name, spec);
    cr.metadata.labels = Some([("team".to_owned(), "sec".to_owned())].into());
    Api::<Falco>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &cr)
        .await
        .expect("create Falco")
}

async fn apply_falco(client: &Client, children: &FalcoChildren) {
    let FalcoChildren {
        service_account,
        role,
        role_binding,
        cluster_role,
        cluster_role_binding,
        service,
        config_map,
        workload,
    } = children;
    apply(client, service_account).await;
    apply(client, role).await;
    apply(client, role_binding).await;
    apply(client, cluster_role).await;
    apply(client, cluster_role_binding).await;
    apply(client, config_map).await;
    apply(client, service).await;
    match workload {
        Workload::DaemonSet(ds) => {
            let stored = apply(client, ds).await;
            let template = stored.spec.template;
            let init = &template
                .spec
                .as_ref()
                .expect("pod")
                .init_containers
                .as_ref()
                .expect("init")[0];
            assert_eq!(
                init.restart_policy.as_deref(),
                Some("Always"),
                "native sidecar accepted"
            );
        }
        Workload::Deployment(d) => {
            apply(client, d).await;
        }
    }
}

async fn delete_cluster_scoped(client: &Client, kind: &str, ns: &str, name: &str) {
    let selector = labels::owner_selector(kind, ns, name);
    let roles: Api<ClusterRole> = Api::all(client.clone());
    let bindings: Api<ClusterRoleBinding> = Api::all(client.clone());
    let lp = ListParams::default().labels(&selector);
    roles
        .delete_collection(&DeleteParams::default(), &lp)
        .await
        .expect("delete ClusterRoles");
    bindings
        .delete_collection(&DeleteParams::default(), &lp)
        .await
        .expect("delete ClusterRoleBindings");
}

#[tokio::test]
async fn falco_children_apply_to_a_real_api_server() {
    let (client, ns) = setup("build-falco").await;
    let cr = create_falco(
        &client,
        &ns,
        "falco",
        json!({
            "version": "0.43.0",
            "config": {"log_level": "debug"},
            "podTemplateSpec": {
                "metadata": {"labels": {"extra": "yes"}},
                "spec": {
                    "containers": [{"name": "falco", "env": [{"name": "X", "value": "1"}]}],
                    "tolerations": [{"operator": "Exists"}]
                }
            }
        }),
    )
    .await;
    let operator = OperatorConfig::default();
    let children = falco::build(&cr, &operator).expect("build");
    apply_falco(&client, &children).await;

    // The cluster-scoped children are found by the owner labels alone.
    let selector = labels::owner_selector("Falco", &ns, "falco");
    let found = Api::<ClusterRole>::all(client.clone())
        .list(&ListParams::default().labels(&selector))
        .await
        .expect("list");
    assert_eq!(
        found.items.iter().map(|r| r.name_any()).collect::<Vec<_>>(),
        [format!("falco-operator:falco:{ns}:falco")]
    );

    // The type switch builds the other kind; it applies too (the orphan sweep deletes the DaemonSet).
    let mut switched = cr.clone();
    switched.spec.r#type = Some(falco_api::WorkloadType::Deployment);
    switched.spec.replicas = Some(2);
    let children = falco::build(&switched, &operator).expect("build");
    assert!(matches!(children.workload, Workload::Deployment(_)));
    apply_falco(&client, &children).await;

    delete_cluster_scoped(&client, "Falco", &ns, "falco").await;
}

#[tokio::test]
async fn component_children_apply_to_a_real_api_server() {
    let (client, ns) = setup("build-component").await;
    let api: Api<Component> = Api::namespaced(client.clone(), &ns);
    for kind in ["metacollector", "falcosidekick", "falcosidekick-ui"] {
        let spec: ComponentSpec =
            serde_json::from_value(json!({"component": {"type": kind}})).expect("spec");
        let cr = api
            .create(&PostParams::default(), &Component::new(kind, spec))
            .await
            .expect("create Component");
        let ComponentChildren {
            service_account,
            role,
            cluster_role,
            service,
            deployment,
        } = component::build(&cr, &OperatorConfig::default()).expect("build");
        apply(&client, &service_account).await;
        if let Some((role, binding)) = &role {
            apply(&client, role).await;
            apply(&client, binding).await;
        }
        if let Some((role, binding)) = &cluster_role {
            apply(&client, role).await;
            apply(&client, binding).await;
        }
        apply(&client, &service).await;
        apply(&client, &deployment).await;
        delete_cluster_scoped(&client, "Component", &ns, kind).await;
    }
}
