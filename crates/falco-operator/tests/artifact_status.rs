//! The shared artifacts' status, aggregated by the operator from the per-node `NodeArtifacts`
//! records the sidecars write (written here through the API as the sidecars would): constant
//! size, False wins and names the node, a deleted node's record drops out, and an unchanged
//! cluster costs no request. Also the artifact index the sidecars watch instead of the
//! artifacts themselves.

mod support;

use std::collections::BTreeMap;

use falco_api::index::INDEX_CONFIG_MAP;
use falco_api::{Config, NodeArtifacts, Rulesfile};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use support::*;

/// Creates (or replaces the status of) `node`'s record with one Rulesfile entry.
async fn report(
    api: &Api<NodeArtifacts>,
    node: &str,
    rulesfile: &str,
    generation: i64,
    status: &str,
    reason: &str,
) {
    report_conditions(
        api,
        node,
        rulesfile,
        generation,
        &[("Programmed", status, reason)],
    )
    .await;
}

/// [`report`] with several conditions, each `(type, status, reason)`.
async fn report_conditions(
    api: &Api<NodeArtifacts>,
    node: &str,
    rulesfile: &str,
    generation: i64,
    conditions: &[(&str, &str, &str)],
) {
    let record = json!({
        "apiVersion": "artifact.falcosecurity.dev/v1alpha1",
        "kind": "NodeArtifacts",
        "metadata": {"name": node},
        "spec": {"nodeName": node},
    });
    let params = PatchParams::apply("test-sidecar").force();
    api.patch(node, &params, &Patch::Apply(&record))
        .await
        .expect("apply record");
    let status = json!({
        "apiVersion": "artifact.falcosecurity.dev/v1alpha1",
        "kind": "NodeArtifacts",
        "status": {"artifacts": [{
            "kind": "Rulesfile",
            "name": rulesfile,
            "observedGeneration": generation,
            "conditions": conditions
                .iter()
                .map(|(type_, status, reason)| json!({
                    "type": type_,
                    "status": status,
                    "reason": reason,
                    "message": format!("{reason} on {node}"),
                    "observedGeneration": generation,
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                }))
                .collect::<Vec<_>>(),
        }]},
    });
    api.patch_status(node, &params, &Patch::Apply(&status))
        .await
        .expect("apply record status");
}

/// Waits until the Rulesfile's `Programmed` condition has `status` and a reason other than the
/// CRD default's `Pending`, and returns its message.
async fn wait_programmed(api: &Api<Rulesfile>, name: &str, status: &str) -> String {
    wait_condition(api, name, "Programmed", status)
        .await
        .message
}

/// Waits until the Rulesfile's condition `type_` has `status` and a reason other than the CRD
/// default's `Pending`, and returns it.
async fn wait_condition(
    api: &Api<Rulesfile>,
    name: &str,
    type_: &str,
    status: &str,
) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    wait_for(&format!("Rulesfile {name} {type_}={status}"), || async {
        let r = api.get(name).await.ok()?;
        r.status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == type_ && c.status == status && c.reason != "Pending")
    })
    .await
}

/// A fresh namespace with Rulesfile `rules` of `spec` and the operator running: the records'
/// API, the Rulesfiles' API, the Rulesfile's generation and the operator.
async fn start_with_rulesfile(
    prefix: &str,
    spec: serde_json::Value,
) -> (
    Api<NodeArtifacts>,
    Api<Rulesfile>,
    i64,
    falco_operator::run::Running,
) {
    let (client, ns) = setup(prefix).await;
    let records: Api<NodeArtifacts> = Api::namespaced(client.clone(), &ns);
    let rulesfiles: Api<Rulesfile> = Api::namespaced(client.clone(), &ns);
    let rulesfile: Rulesfile = serde_json::from_value(json!({
        "apiVersion": "artifact.falcosecurity.dev/v1alpha1", "kind": "Rulesfile",
        "metadata": {"name": "rules"}, "spec": spec
    }))
    .expect("rulesfile");
    let generation = rulesfiles
        .create(&PostParams::default(), &rulesfile)
        .await
        .expect("create")
        .metadata
        .generation
        .expect("generation");
    (records, rulesfiles, generation, operator(&ns).await)
}

/// `ResolvedRefs` is aggregated on the shared object like `Programmed`: False wins with the
/// failing node's reason and name, independently of `Programmed`, and turns True again when
/// that node resolves its references.
#[tokio::test]
async fn resolved_refs_is_aggregated_like_programmed() {
    let (records, rulesfiles, generation, running) =
        start_with_rulesfile("aggr-refs", json!({"configMapRef": {"name": "team-rules"}})).await;

    let good = [
        ("Programmed", "True", "Programmed"),
        ("ResolvedRefs", "True", "ResolvedRefs"),
    ];
    for node in ["node-a", "node-b"] {
        report_conditions(&records, node, "rules", generation, &good).await;
    }
    let resolved = wait_condition(&rulesfiles, "rules", "ResolvedRefs", "True").await;
    assert!(resolved.message.starts_with("2 of 2 nodes"), "{resolved:?}");
    assert_eq!(resolved.observed_generation, Some(generation));

    // node-b cannot read the ConfigMap but still serves its last good file: ResolvedRefs is
    // False naming node-b alone, Programmed stays True on both.
    report_conditions(
        &records,
        "node-b",
        "rules",
        generation,
        &[
            ("Programmed", "True", "Programmed"),
            ("ResolvedRefs", "False", "ConfigMapNotFound"),
        ],
    )
    .await;
    let refs = wait_condition(&rulesfiles, "rules", "ResolvedRefs", "False").await;
    assert_eq!(refs.reason, "ConfigMapNotFound");
    assert!(
        refs.message.contains("node-b") && !refs.message.contains("node-a"),
        "{refs:?}"
    );
    let stored = rulesfiles.get("rules").await.expect("get");
    let programmed = stored
        .status
        .expect("status")
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Programmed")
        .expect("Programmed");
    assert_eq!(programmed.status, "True", "{programmed:?}");
    assert!(
        programmed.message.starts_with("2 of 2 nodes"),
        "{programmed:?}"
    );

    // node-b resolves it again.
    report_conditions(&records, "node-b", "rules", generation, &good).await;
    let resolved = wait_condition(&rulesfiles, "rules", "ResolvedRefs", "True").await;
    assert!(resolved.message.starts_with("2 of 2 nodes"), "{resolved:?}");
    running.shutdown().await;
}

#[tokio::test]
async fn shared_status_is_aggregated_from_the_node_records() {
    let (records, rulesfiles, generation, running) =
        start_with_rulesfile("aggr", json!({"inlineRules": [{"list": "l", "items": []}]})).await;

    // No node reports it yet.
    let message = wait_programmed(&rulesfiles, "rules", "Unknown").await;
    assert!(message.contains("No node"), "{message}");

    // Two nodes programmed it.
    for node in ["node-a", "node-b"] {
        report(&records, node, "rules", generation, "True", "Programmed").await;
    }
    let message = wait_programmed(&rulesfiles, "rules", "True").await;
    assert!(message.starts_with("2 of 2 nodes"), "{message}");

    // One fails: False wins, with the node's reason and name.
    report(
        &records,
        "node-b",
        "rules",
        generation,
        "False",
        "AuthenticationFailed",
    )
    .await;
    let message = wait_programmed(&rulesfiles, "rules", "False").await;
    assert!(
        message.contains("node-b") && !message.contains("node-a"),
        "{message}"
    );
    let stored = rulesfiles.get("rules").await.expect("get");
    let status = stored.status.expect("status");
    let programmed = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Programmed")
        .expect("Programmed");
    assert_eq!(programmed.reason, "AuthenticationFailed");
    assert_eq!(status.observed_generation, Some(generation));

    // The failing node goes away (the garbage collector deletes its record with the Node).
    records
        .delete("node-b", &DeleteParams::default())
        .await
        .expect("delete record");
    let message = wait_programmed(&rulesfiles, "rules", "True").await;
    assert!(message.starts_with("1 of 1 nodes"), "{message}");

    // A record change that changes no aggregate writes nothing: the artifact is not written
    // again (its resourceVersion stays), and no request is sent for it. (The request total is
    // not compared: on a loaded machine a write of an earlier step can still be in flight.)
    let stored_before = rulesfiles.get("rules").await.expect("get");
    records
        .patch(
            "node-a",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"unrelated": "change"}}})),
        )
        .await
        .expect("touch record");
    // The touch wakes the aggregation; wait until it ran (the reconcile counter moves).
    let reconciles = running.metrics.reconciles();
    wait_for("the aggregation pass after the touch", || async {
        (running.metrics.reconciles() > reconciles).then_some(())
    })
    .await;
    let stored_after = rulesfiles.get("rules").await.expect("get");
    assert_eq!(
        stored_after.metadata.resource_version, stored_before.metadata.resource_version,
        "an unchanged aggregate must not be written"
    );
    running.shutdown().await;
}

/// The namespace's artifact index, as the sidecars read it.
async fn index(api: &Api<ConfigMap>) -> Option<(String, BTreeMap<String, String>)> {
    let cm = api.get_opt(INDEX_CONFIG_MAP).await.expect("get index")?;
    Some((
        cm.metadata.resource_version.unwrap_or_default(),
        cm.data.unwrap_or_default(),
    ))
}

async fn wait_index(
    api: &Api<ConfigMap>,
    what: &str,
    check: impl Fn(&BTreeMap<String, String>) -> bool,
) -> String {
    wait_for(what, || async {
        let (rv, data) = index(api).await?;
        check(&data).then_some(rv)
    })
    .await
}

#[tokio::test]
async fn the_artifact_index_follows_artifacts_and_their_config_maps() {
    let (client, ns) = setup("index").await;
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let rulesfiles: Api<Rulesfile> = Api::namespaced(client.clone(), &ns);
    let configs: Api<Config> = Api::namespaced(client.clone(), &ns);
    config_maps
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "extra"}, "data": {"falco.yaml": "json_output: true\n"}
            }))
            .expect("configmap"),
        )
        .await
        .expect("create configmap");
    let rules = rulesfiles
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "artifact.falcosecurity.dev/v1alpha1", "kind": "Rulesfile",
                "metadata": {"name": "rules"}, "spec": {"inlineRules": [{"list": "l", "items": []}]}
            }))
            .expect("rulesfile"),
        )
        .await
        .expect("create rulesfile");
    let config = configs
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "artifact.falcosecurity.dev/v1alpha1", "kind": "Config",
                "metadata": {"name": "cfg"}, "spec": {"configMapRef": {"name": "extra"}}
            }))
            .expect("config"),
        )
        .await
        .expect("create config");
    let running = operator(&ns).await;

    // Every artifact with uid and generation, and the ConfigMap one of them reads at its current
    // version. The operator's in-use finalizer moves that version once after its creation: wait
    // for it, or the finalizer's write could land after the patch below and overtake its version.
    let uid = |o: &kube::api::ObjectMeta| o.uid.clone().expect("uid");
    wait_for("the first index, finalizer in place", || async {
        let extra = config_maps.get("extra").await.ok()?.metadata;
        let protected = extra
            .finalizers
            .unwrap_or_default()
            .iter()
            .any(|f| f == falco_operator::references::CONFIGMAP_IN_USE);
        let current = extra.resource_version.filter(|_| protected)?;
        let want: BTreeMap<String, String> = [
            (
                "config.cfg".to_owned(),
                format!("{}/1", uid(&config.metadata)),
            ),
            ("configmap.extra".to_owned(), current),
            (
                "rulesfile.rules".to_owned(),
                format!("{}/1", uid(&rules.metadata)),
            ),
        ]
        .into();
        (index(&config_maps).await?.1 == want).then_some(())
    })
    .await;

    // The ConfigMap's content changes: its new version is indexed.
    let changed = config_maps
        .patch(
            "extra",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"falco.yaml": "json_output: false\n"}})),
        )
        .await
        .expect("patch configmap");
    let new_rv = changed.metadata.resource_version.expect("rv");
    wait_index(&config_maps, "the ConfigMap's new version", |data| {
        data.get("configmap.extra") == Some(&new_rv)
    })
    .await;

    // A spec change moves the generation; a deleted artifact leaves the index.
    rulesfiles
        .patch(
            "rules",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"priority": 60}})),
        )
        .await
        .expect("patch rulesfile");
    configs
        .delete("cfg", &DeleteParams::default())
        .await
        .expect("delete config");
    let rv = wait_index(
        &config_maps,
        "generation 2, cfg and its ConfigMap gone",
        |data| {
            data.len() == 1
                && data.get("rulesfile.rules") == Some(&format!("{}/2", uid(&rules.metadata)))
        },
    )
    .await;

    // A change of a ConfigMap no artifact reads writes nothing.
    let before = running.metrics.api_requests();
    let reconciles = running.metrics.reconciles();
    config_maps
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "unrelated"}})).expect("cm"),
        )
        .await
        .expect("create unrelated");
    wait_for("the pass after the unrelated change", || async {
        (running.metrics.reconciles() > reconciles).then_some(())
    })
    .await;
    assert_eq!(running.metrics.api_requests(), before);
    running.shutdown().await;

    // A restarted operator finds its index current and does not write it again.
    let running = operator(&ns).await;
    let reconciles = running.metrics.reconciles();
    wait_for("the restarted operator's first pass", || async {
        (running.metrics.reconciles() > reconciles).then_some(())
    })
    .await;
    assert_eq!(index(&config_maps).await.expect("index").0, rv);

    // The last artifact goes: the index stays, empty, so the sidecars remove their files.
    rulesfiles
        .delete("rules", &DeleteParams::default())
        .await
        .expect("delete rulesfile");
    wait_index(&config_maps, "an empty index", BTreeMap::is_empty).await;
    running.shutdown().await;
}
