//! The Falco controller against the real API server: exact children, updates and overlays, the
//! type switch, cleanup of cluster-scoped RBAC through the finalizer, availability from workload
//! status, field-manager coexistence and drift, invalid specs, and the zero-request no-op resync.

mod support;

use falco_api::Falco;
use falco_operator::children::APPLIED_HASH_ANNOTATION;
use falco_operator::labels;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use support::*;

fn to_json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).expect("json")
}

async fn daemon_set(client: &Client, ns: &str) -> Api<DaemonSet> {
    Api::namespaced(client.clone(), ns)
}

fn cluster_name(ns: &str, name: &str) -> String {
    format!("falco-operator:falco:{ns}:{name}")
}

#[tokio::test]
async fn a_falco_becomes_exactly_its_children_and_goes_away_with_them() {
    let (client, ns) = setup("falco-lifecycle").await;
    let _op = operator(&ns).await;
    create_falco(&client, &ns, "falco", json!({})).await;
    let falco = wait_falco_condition(&client, &ns, "falco", "Reconciled", "True").await;
    let status = falco.status.clone().expect("status");
    assert_eq!(status.resource_type.as_deref(), Some("DaemonSet"));
    assert_eq!(status.version.as_deref(), Some("0.44.1"));
    assert!(
        falco
            .finalizers()
            .iter()
            .any(|f| f == "falco.instance.falcosecurity.dev/finalizer")
    );

    // ServiceAccount, Role, RoleBinding: named after the CR, owned by it, labelled.
    let sa = Api::<ServiceAccount>::namespaced(client.clone(), &ns)
        .get("falco")
        .await
        .expect("sa");
    assert_eq!(sa.owner_references()[0].kind, "Falco");
    assert_eq!(sa.labels().get("team").map(String::as_str), Some("sec"));
    assert_eq!(
        sa.labels().get(labels::OWNER_NAME).map(String::as_str),
        Some("falco")
    );
    let role = Api::<Role>::namespaced(client.clone(), &ns)
        .get("falco")
        .await
        .expect("role");
    let rules = to_json(&role.rules);
    assert_eq!(
        rules[0],
        json!({"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]})
    );
    assert_eq!(rules.as_array().map(Vec::len), Some(6));
    let rb = Api::<RoleBinding>::namespaced(client.clone(), &ns)
        .get("falco")
        .await
        .expect("rb");
    assert_eq!(rb.role_ref.name, "falco");
    assert_eq!(rb.subjects.as_ref().unwrap()[0].name, "falco");

    // The sidecar's rights, as the API server enforces them for the pod's ServiceAccount: it may
    // list and watch the artifact index by name and read artifacts by name, nothing more.
    let sidecar = falco_testenv::shared()
        .client_as(&format!("system:serviceaccount:{ns}:falco"), None)
        .await
        .expect("client as the ServiceAccount");
    let forbidden =
        |r: Result<_, kube::Error>| matches!(r, Err(kube::Error::Api(e)) if e.code == 403);
    let config_maps: Api<ConfigMap> = Api::namespaced(sidecar.clone(), &ns);
    config_maps
        .list(&ListParams::default().fields("metadata.name=falco-artifact-index"))
        .await
        .expect("the index may be listed by name");
    assert!(forbidden(
        config_maps.list(&ListParams::default()).await.map(|_| ())
    ));
    let rulesfiles: Api<falco_api::Rulesfile> = Api::namespaced(sidecar, &ns);
    assert!(
        rulesfiles
            .get_opt("any")
            .await
            .expect("get by name")
            .is_none()
    );
    assert!(forbidden(
        rulesfiles.list(&ListParams::default()).await.map(|_| ())
    ));

    // Cluster-scoped RBAC, found by the owner labels.
    let selector = labels::owner_selector("Falco", &ns, "falco");
    let crs = Api::<ClusterRole>::all(client.clone())
        .list(&ListParams::default().labels(&selector))
        .await
        .expect("list");
    assert_eq!(crs.items.len(), 1);
    assert_eq!(crs.items[0].name_any(), cluster_name(&ns, "falco"));
    assert_eq!(
        to_json(&crs.items[0].rules),
        json!([{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]}])
    );
    let crb = Api::<ClusterRoleBinding>::all(client.clone())
        .get(&cluster_name(&ns, "falco"))
        .await
        .expect("crb");
    assert_eq!(
        crb.subjects.as_ref().unwrap()[0].namespace.as_deref(),
        Some(ns.as_str())
    );

    // Service and ConfigMap.
    let svc = Api::<Service>::namespaced(client.clone(), &ns)
        .get("falco")
        .await
        .expect("svc");
    let port = &svc.spec.as_ref().unwrap().ports.as_ref().unwrap()[0];
    assert_eq!((port.name.as_deref(), port.port), (Some("web"), 8765));
    let cm = Api::<ConfigMap>::namespaced(client.clone(), &ns)
        .get("falco")
        .await
        .expect("cm");
    let falco_yaml: Value = serde_yaml::from_str(&cm.data.as_ref().unwrap()["falco.yaml"]).unwrap();
    assert_eq!(falco_yaml["engine"]["kind"], "modern_ebpf");

    // The DaemonSet: image, args, probes, resources, volumes, the native sidecar.
    let ds = daemon_set(&client, &ns)
        .await
        .get("falco")
        .await
        .expect("ds");
    assert!(ds.annotations().contains_key(APPLIED_HASH_ANNOTATION));
    let pod = ds.spec.template.spec.clone().unwrap();
    let falco_c = &pod.containers[0];
    assert_eq!(
        falco_c.image.as_deref(),
        Some("docker.io/falcosecurity/falco:0.44.1")
    );
    assert_eq!(falco_c.args, Some(vec!["/usr/bin/falco".to_owned()]));
    assert_eq!(
        falco_c
            .liveness_probe
            .as_ref()
            .unwrap()
            .initial_delay_seconds,
        Some(60)
    );
    assert_eq!(
        falco_c
            .readiness_probe
            .as_ref()
            .unwrap()
            .initial_delay_seconds,
        Some(30)
    );
    assert_eq!(
        to_json(&falco_c.resources),
        json!({"requests": {"cpu": "100m", "memory": "512Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}})
    );
    let volumes: Vec<_> = pod
        .volumes
        .iter()
        .flatten()
        .map(|v| v.name.as_str())
        .collect();
    for v in [
        "proc-fs",
        "boot-fs",
        "lib-modules",
        "usr-fs",
        "etc-fs",
        "dev-fs",
        "containerd-socket",
        "falco-configs",
        "falco-rulesfiles",
        "falco-plugins",
        "falco-config-default",
    ] {
        assert!(volumes.contains(&v), "volume {v} in {volumes:?}");
    }
    let sidecar = &pod.init_containers.as_ref().unwrap()[0];
    assert_eq!(sidecar.name, "artifact-operator");
    assert_eq!(sidecar.restart_policy.as_deref(), Some("Always"));
    assert_eq!(sidecar.args, Some(vec!["run".to_owned()]));
    assert_eq!(
        sidecar
            .readiness_probe
            .as_ref()
            .unwrap()
            .initial_delay_seconds,
        Some(5)
    );
    assert_eq!(
        sidecar
            .liveness_probe
            .as_ref()
            .unwrap()
            .initial_delay_seconds,
        Some(15)
    );

    // Delete: the finalizer removes everything, cluster-scoped RBAC included.
    let falcos = Api::<Falco>::namespaced(client.clone(), &ns);
    falcos
        .delete("falco", &DeleteParams::default())
        .await
        .expect("delete");
    wait_gone(&falcos, "falco").await;
    wait_gone(
        &Api::<ClusterRole>::all(client.clone()),
        &cluster_name(&ns, "falco"),
    )
    .await;
    wait_gone(
        &Api::<ClusterRoleBinding>::all(client.clone()),
        &cluster_name(&ns, "falco"),
    )
    .await;
    wait_gone(&daemon_set(&client, &ns).await, "falco").await;
    wait_gone(&Api::<ConfigMap>::namespaced(client.clone(), &ns), "falco").await;
    wait_gone(
        &Api::<ServiceAccount>::namespaced(client.clone(), &ns),
        "falco",
    )
    .await;
}

#[tokio::test]
async fn updates_overlays_and_the_type_switch_reach_the_children() {
    let (client, ns) = setup("falco-update").await;
    let _op = operator(&ns).await;
    create_falco(
        &client,
        &ns,
        "falco",
        json!({
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
    wait_falco_condition(&client, &ns, "falco", "Reconciled", "True").await;
    let cms = Api::<ConfigMap>::namespaced(client.clone(), &ns);
    let cm = cms.get("falco").await.expect("cm");
    let falco_yaml: Value = serde_yaml::from_str(&cm.data.as_ref().unwrap()["falco.yaml"]).unwrap();
    assert_eq!(falco_yaml["log_level"], "debug", "spec.config overlay");
    let ds = daemon_set(&client, &ns)
        .await
        .get("falco")
        .await
        .expect("ds");
    let template = ds.spec.template.clone();
    assert_eq!(
        template.metadata.as_ref().unwrap().labels.as_ref().unwrap()["extra"],
        "yes"
    );
    let pod = template.spec.unwrap();
    assert_eq!(
        to_json(&pod.tolerations),
        json!([{"operator": "Exists"}]),
        "atomic list replaced"
    );
    let env = to_json(&pod.containers[0].env);
    assert!(
        env.as_array()
            .unwrap()
            .contains(&json!({"name": "X", "value": "1"})),
        "{env}"
    );
    assert!(
        env.as_array()
            .unwrap()
            .contains(&json!({"name": "HOST_ROOT", "value": "/host"})),
        "merged by name"
    );
    let checksum = template
        .metadata
        .as_ref()
        .unwrap()
        .annotations
        .as_ref()
        .unwrap()[labels::CONFIG_CHECKSUM_ANNOTATION]
        .clone();

    // Version and config change: image and checksum follow.
    let falcos = Api::<Falco>::namespaced(client.clone(), &ns);
    falcos
        .patch(
            "falco",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"version": "0.43.0", "config": {"log_level": "info"}}})),
        )
        .await
        .expect("patch");
    let dss = daemon_set(&client, &ns).await;
    let ds = wait_for("new image", || async {
        let ds = dss.get("falco").await.ok()?;
        let image = ds.spec.template.spec.as_ref()?.containers[0]
            .image
            .clone()?;
        (image == "docker.io/falcosecurity/falco:0.43.0").then_some(ds)
    })
    .await;
    let new_checksum = &ds
        .spec
        .template
        .metadata
        .as_ref()
        .unwrap()
        .annotations
        .as_ref()
        .unwrap()[labels::CONFIG_CHECKSUM_ANNOTATION];
    assert_ne!(new_checksum, &checksum, "pods roll on config change");
    let f = wait_falco_condition(&client, &ns, "falco", "Reconciled", "True").await;
    assert_eq!(f.status.unwrap().version.as_deref(), Some("0.43.0"));

    // Type switch: the DaemonSet goes, a Deployment with 2 replicas and the nodriver engine comes.
    falcos
        .patch(
            "falco",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"type": "Deployment", "replicas": 2}})),
        )
        .await
        .expect("patch");
    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns);
    let d = wait_for("Deployment", || async {
        deployments.get_opt("falco").await.ok().flatten()
    })
    .await;
    assert_eq!(d.spec.replicas, Some(2));
    wait_gone(&dss, "falco").await;
    let cm = wait_for("nodriver config", || async {
        let cm = cms.get("falco").await.ok()?;
        let config: Value = serde_yaml::from_str(&cm.data.as_ref()?["falco.yaml"]).ok()?;
        (config["engine"]["kind"] == "nodriver").then_some(config)
    })
    .await;
    assert_eq!(cm["log_level"], "info", "the overlay stays");
    let f = wait_falco_condition(&client, &ns, "falco", "Reconciled", "True").await;
    assert_eq!(
        f.status.unwrap().resource_type.as_deref(),
        Some("Deployment")
    );
    let events = Api::<Event>::namespaced(client.clone(), &ns)
        .list(&ListParams::default())
        .await
        .expect("events");
    assert!(
        events
            .items
            .iter()
            .any(|e| e.reason.as_deref() == Some("DualDeploymentCleanup")),
        "an Event tells about the deleted DaemonSet"
    );
}

#[tokio::test]
async fn availability_follows_the_workload_status_with_events_on_transitions() {
    let (client, ns) = setup("falco-available").await;
    let op = operator(&ns).await;
    create_falco(&client, &ns, "falco", json!({})).await;
    wait_falco_condition(&client, &ns, "falco", "Reconciled", "True").await;
    let dss = daemon_set(&client, &ns).await;
    let write_status = |desired: i32, available: i32| {
        let dss = dss.clone();
        async move {
            let status = json!({"status": {"desiredNumberScheduled": desired, "numberAvailable": available,
                "numberUnavailable": desired - available, "currentNumberScheduled": desired, "numberMisscheduled": 0, "numberReady": available}});
            dss.patch_status("falco", &PatchParams::default(), &Patch::Merge(status))
                .await
                .expect("status");
        }
    };
    write_status(3, 1).await;
    let f = wait_falco_condition(&client, &ns, "falco", "Available", "False").await;
    let f = if f.status.as_ref().unwrap().desired_replicas == 3 {
        f
    } else {
        let api = Api::<Falco>::namespaced(client.clone(), &ns);
        wait_for("counts", || async {
            let f = api.get("falco").await.ok()?;
            (f.status.as_ref()?.desired_replicas == 3).then_some(f)
        })
        .await
    };
    let s = f.status.unwrap();
    assert_eq!(
        (
            s.desired_replicas,
            s.available_replicas,
            s.unavailable_replicas
        ),
        (3, 1, 2)
    );
    assert_eq!(
        condition(Some(&s), "Available").unwrap().1,
        "DaemonSetUnavailable"
    );

    write_status(3, 3).await;
    let f = wait_falco_condition(&client, &ns, "falco", "Available", "True").await;
    assert_eq!(
        condition(f.status.as_ref(), "Available").unwrap().1,
        "DaemonSetAvailable"
    );
    let events = Api::<Event>::namespaced(client.clone(), &ns);
    let available = |list: &[Event]| {
        list.iter()
            .filter(|e| e.reason.as_deref() == Some("DaemonSetAvailable"))
            .cloned()
            .collect::<Vec<_>>()
    };
    // Occurrences of DaemonSetAvailable: one Event object, repeats counted in its series.
    let occurrences = |list: &[Event]| -> i32 {
        available(list)
            .iter()
            .map(|e| e.series.as_ref().map_or(1, |s| s.count))
            .sum()
    };
    // Two transitions to Available: at creation (0 of 0 pods scheduled) and after 3 of 3.
    let seen = wait_for("two DaemonSetAvailable occurrences", || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        let n = occurrences(&list.items);
        (n >= 2).then_some(n)
    })
    .await;
    assert_eq!(seen, 2);
    // Reconciles that change nothing publish nothing.
    resync_and_wait(&op, 1).await;
    resync_and_wait(&op, 1).await;
    let list = events.list(&ListParams::default()).await.expect("events");
    assert_eq!(occurrences(&list.items), 2, "no Event without a transition");
    let unavailable = list
        .items
        .iter()
        .filter(|e| e.reason.as_deref() == Some("DaemonSetUnavailable"))
        .count();
    assert_eq!(unavailable, 1);
}

#[tokio::test]
async fn another_field_manager_keeps_its_fields_and_drift_on_ours_is_undone() {
    let (client, ns) = setup("falco-managers").await;
    let _op = operator(&ns).await;
    create_falco(&client, &ns, "falco", json!({})).await;
    wait_falco_condition(&client, &ns, "falco", "Reconciled", "True").await;
    let dss = daemon_set(&client, &ns).await;

    // A second manager owns an annotation of its own.
    let other = json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "falco",
        "annotations": {"example.com/owner": "platform"}}});
    dss.patch(
        "falco",
        &PatchParams::apply("platform-team"),
        &Patch::Apply(other),
    )
    .await
    .expect("second manager");
    // A change of ours is applied without removing it.
    Api::<Falco>::namespaced(client.clone(), &ns)
        .patch(
            "falco",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"version": "0.42.0"}})),
        )
        .await
        .expect("patch");
    let ds = wait_for("new image", || async {
        let ds = dss.get("falco").await.ok()?;
        let image = ds.spec.template.spec.as_ref()?.containers[0]
            .image
            .clone()?;
        image.ends_with(":0.42.0").then_some(ds)
    })
    .await;
    assert_eq!(
        ds.annotations()
            .get("example.com/owner")
            .map(String::as_str),
        Some("platform")
    );

    // Someone edits one of our fields: the operator takes it back, and says which field and
    // whose change it undid, in Reconciled's message and a Warning Event.
    let edit = PatchParams {
        field_manager: Some("kubectl-edit".to_owned()),
        ..PatchParams::default()
    };
    dss.patch(
        "falco",
        &edit,
        &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [{"name": "falco", "image": "evil:1"}]}}}})),
    )
    .await
    .expect("edit");
    wait_for("drift undone", || async {
        let ds = dss.get("falco").await.ok()?;
        let image = ds.spec.template.spec.as_ref()?.containers[0]
            .image
            .clone()?;
        image.ends_with(":0.42.0").then_some(())
    })
    .await;
    let named =
        "DaemonSet falco: spec.template.spec.containers[name=falco].image (by kubectl-edit)";
    let falcos: Api<Falco> = Api::namespaced(client.clone(), &ns);
    let message = wait_for("Reconciled naming the field taken back", || async {
        let f = falcos.get("falco").await.ok()?;
        let c = f
            .status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Reconciled")?;
        c.message.contains(named).then_some(c.message)
    })
    .await;
    assert!(!message.contains("platform-team"), "{message}");
    let events = Api::<Event>::namespaced(client.clone(), &ns);
    wait_for("a DriftReverted Event naming the field", || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some("DriftReverted")
                    && e.type_.as_deref() == Some("Warning")
                    && e.note.as_deref().is_some_and(|n| n.contains(named))
            })
            .then_some(())
    })
    .await;
    let ds = dss.get("falco").await.expect("ds");
    assert_eq!(
        ds.annotations()
            .get("example.com/owner")
            .map(String::as_str),
        Some("platform")
    );
}

#[tokio::test]
async fn an_invalid_spec_is_reported_without_a_retry_loop_while_others_reconcile() {
    let (client, ns) = setup("falco-invalid").await;
    let op = operator(&ns).await;
    create_falco(
        &client,
        &ns,
        "bad",
        json!({"config": ["not", "a", "mapping"]}),
    )
    .await;
    create_falco(&client, &ns, "good", json!({})).await;
    let bad = wait_falco_condition(&client, &ns, "bad", "Reconciled", "False").await;
    let (_, reason) = condition(bad.status.as_ref(), "Reconciled").unwrap();
    assert_eq!(reason, "ApplyConfigurationError");
    let message = &bad
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == "Reconciled")
        .unwrap()
        .message;
    assert!(
        message.contains("spec.config must be a mapping"),
        "{message}"
    );
    wait_falco_condition(&client, &ns, "good", "Reconciled", "True").await;
    assert!(
        daemon_set(&client, &ns)
            .await
            .get_opt("bad")
            .await
            .unwrap()
            .is_none()
    );

    // Not an error to retry: no failure counted, and a resync writes nothing for it.
    assert_eq!(op.metrics.errors("invalid_spec"), 0);
    resync_and_wait(&op, 2).await;
    let before = op.metrics.api_requests();
    resync_and_wait(&op, 2).await;
    assert_eq!(
        op.metrics.api_requests(),
        before,
        "no status rewrite, no retry"
    );

    // Fixing the spec recovers.
    Api::<Falco>::namespaced(client.clone(), &ns)
        .patch(
            "bad",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"config": {"log_level": "debug"}}})),
        )
        .await
        .expect("fix");
    wait_falco_condition(&client, &ns, "bad", "Reconciled", "True").await;
}

#[tokio::test]
async fn a_no_op_resync_sends_zero_requests() {
    let (client, ns) = setup("falco-noop").await;
    let op = operator(&ns).await;
    for name in ["a", "b", "c"] {
        create_falco(&client, &ns, name, json!({})).await;
    }
    create_falco(&client, &ns, "d", json!({"type": "Deployment"})).await;
    create_component(&client, &ns, "meta", "metacollector").await;
    create_component(&client, &ns, "sidekick", "falcosidekick").await;
    for name in ["a", "b", "c", "d"] {
        wait_falco_condition(&client, &ns, name, "Reconciled", "True").await;
    }
    wait_component_reconciled(&client, &ns, "meta").await;
    wait_component_reconciled(&client, &ns, "sidekick").await;
    // Settle: the watch events of our own writes trigger reconciles that must all be no-ops.
    let mut settled = false;
    for _ in 0..20 {
        let before = op.metrics.api_requests();
        resync_and_wait(&op, 6).await;
        if op.metrics.api_requests() == before {
            settled = true;
            break;
        }
    }
    assert!(
        settled,
        "the operator kept sending requests on unchanged objects"
    );

    let before = op.metrics.api_requests();
    let reconciles = op.metrics.reconciles();
    resync_and_wait(&op, 6).await;
    assert!(op.metrics.reconciles() >= reconciles + 6);
    assert_eq!(
        op.metrics.api_requests() - before,
        0,
        "requests sent by a no-op resync"
    );
    assert!(
        op.metrics
            .encode()
            .contains(r#"falco_operator_children_total{controller="falco",outcome="unchanged"}"#)
    );
}
