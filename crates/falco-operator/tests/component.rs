//! The Component controller against the real API server, and the operator running with exactly
//! the permissions it documents.

mod support;

use std::sync::Arc;

use falco_api::Component;
use falco_operator::metrics::Metrics;
use falco_operator::{OperatorConfig, labels, rbac};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleRef, Subject};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::json;
use support::*;

#[tokio::test]
async fn each_component_type_gets_its_deployment_rbac_and_service() {
    let (client, ns) = setup("component").await;
    let _op = operator(&ns).await;
    for kind in ["metacollector", "falcosidekick", "falcosidekick-ui"] {
        create_component(&client, &ns, kind, kind).await;
    }
    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns);
    let services = Api::<Service>::namespaced(client.clone(), &ns);
    let roles = Api::<Role>::namespaced(client.clone(), &ns);
    let cluster_roles = Api::<ClusterRole>::all(client.clone());
    for (kind, image, port) in [
        (
            "metacollector",
            "docker.io/falcosecurity/k8s-metacollector:0.1.2",
            8080,
        ),
        (
            "falcosidekick",
            "docker.io/falcosecurity/falcosidekick:2.32.0",
            2801,
        ),
        (
            "falcosidekick-ui",
            "docker.io/falcosecurity/falcosidekick-ui:2.2.0",
            2802,
        ),
    ] {
        let c = wait_component_reconciled(&client, &ns, kind).await;
        assert_eq!(
            c.status.as_ref().unwrap().resource_type.as_deref(),
            Some("Deployment")
        );
        let d = deployments.get(kind).await.expect("deployment");
        let spec = d.spec;
        assert_eq!(spec.replicas, Some(1));
        let container = &spec.template.spec.as_ref().unwrap().containers[0];
        assert_eq!(container.image.as_deref(), Some(image));
        let svc = services.get(kind).await.expect("service");
        assert_eq!(svc.spec.unwrap().ports.unwrap()[0].port, port);
        Api::<ServiceAccount>::namespaced(client.clone(), &ns)
            .get(kind)
            .await
            .expect("sa");
    }
    // Per-type RBAC: a Role for falcosidekick only, a ClusterRole for metacollector only.
    assert!(roles.get_opt("falcosidekick").await.unwrap().is_some());
    assert!(roles.get_opt("metacollector").await.unwrap().is_none());
    assert!(roles.get_opt("falcosidekick-ui").await.unwrap().is_none());
    let meta_cr = format!("falco-operator:component:{ns}:metacollector");
    let cr = cluster_roles
        .get(&meta_cr)
        .await
        .expect("metacollector ClusterRole");
    assert_eq!(cr.rules.unwrap().len(), 3);
    let selector = labels::owner_selector("Component", &ns, "falcosidekick");
    assert!(
        cluster_roles
            .list(&ListParams::default().labels(&selector))
            .await
            .unwrap()
            .items
            .is_empty()
    );

    // Deleting the metacollector removes its cluster-scoped RBAC through the finalizer.
    let components = Api::<Component>::namespaced(client.clone(), &ns);
    components
        .delete("metacollector", &DeleteParams::default())
        .await
        .expect("delete");
    wait_gone(&components, "metacollector").await;
    wait_gone(&cluster_roles, &meta_cr).await;
    wait_gone(&Api::<ClusterRoleBinding>::all(client.clone()), &meta_cr).await;
    wait_gone(&deployments, "metacollector").await;

    // A type change sweeps the children the new type does not want.
    components
        .patch(
            "falcosidekick",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"component": {"type": "falcosidekick-ui"}}})),
        )
        .await
        .expect("type change");
    wait_gone(&roles, "falcosidekick").await;
}

#[tokio::test]
async fn the_documented_cluster_role_is_enough_to_run_the_operator() {
    let (admin, ns) = setup("rbac").await;
    let user = format!("falco-operator-{ns}");
    let role_name = format!("falco-operator-test-{ns}");
    Api::<ClusterRole>::all(admin.clone())
        .create(
            &PostParams::default(),
            &rbac::operator_cluster_role(&role_name),
        )
        .await
        .expect("role");
    Api::<ClusterRoleBinding>::all(admin.clone())
        .create(
            &PostParams::default(),
            &ClusterRoleBinding {
                metadata: ObjectMeta {
                    name: Some(role_name.clone()),
                    ..ObjectMeta::default()
                },
                role_ref: RoleRef {
                    api_group: Some("rbac.authorization.k8s.io".to_owned()),
                    kind: "ClusterRole".to_owned(),
                    name: role_name.clone(),
                },
                subjects: Some(vec![Subject {
                    kind: "User".to_owned(),
                    name: user.clone(),
                    api_group: Some("rbac.authorization.k8s.io".to_owned()),
                    ..Subject::default()
                }]),
            },
        )
        .await
        .expect("binding");
    let client = falco_testenv::shared()
        .client_as(&user, None)
        .await
        .expect("client");
    let _op = start(
        client,
        Arc::new(Metrics::new()),
        &ns,
        OperatorConfig::default(),
    )
    .await;

    // Every child kind, the cluster-scoped ones and the RBAC the operator grants included.
    create_falco(&admin, &ns, "falco", json!({})).await;
    create_component(&admin, &ns, "meta", "metacollector").await;
    create_component(&admin, &ns, "sidekick", "falcosidekick").await;
    wait_falco_condition(&admin, &ns, "falco", "Reconciled", "True").await;
    wait_component_reconciled(&admin, &ns, "meta").await;
    wait_component_reconciled(&admin, &ns, "sidekick").await;
    let components = Api::<Component>::namespaced(admin.clone(), &ns);
    components
        .delete("meta", &DeleteParams::default())
        .await
        .expect("delete");
    wait_gone(&components, "meta").await;
    assert!(
        Api::<ClusterRole>::all(admin.clone())
            .get_opt(&format!("falco-operator:component:{ns}:meta"))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        Api::<Component>::namespaced(admin.clone(), &ns)
            .get("sidekick")
            .await
            .unwrap()
            .finalizers()
            .iter()
            .any(|f| f.starts_with("component.instance"))
    );
}
