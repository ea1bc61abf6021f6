//! The shared artifacts' status, aggregated by the operator from the per-node `NodeArtifacts`
//! records the sidecars write (written here through the API as the sidecars would): constant
//! size, False wins and names the node, a deleted node's record drops out, and an unchanged
//! cluster costs no request.

mod support;

use falco_api::{NodeArtifacts, Rulesfile};
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
            "conditions": [{
                "type": "Programmed",
                "status": status,
                "reason": reason,
                "message": format!("{reason} on {node}"),
                "observedGeneration": generation,
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            }],
        }]},
    });
    api.patch_status(node, &params, &Patch::Apply(&status))
        .await
        .expect("apply record status");
}

/// Waits until the Rulesfile's `Programmed` condition has `status` and a reason other than the
/// CRD default's `Pending`, and returns its message.
async fn wait_programmed(api: &Api<Rulesfile>, name: &str, status: &str) -> String {
    wait_for(&format!("Rulesfile {name} Programmed={status}"), || async {
        let r = api.get(name).await.ok()?;
        let c = r
            .status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Programmed" && c.status == status && c.reason != "Pending")?;
        Some(c.message)
    })
    .await
}

#[tokio::test]
async fn shared_status_is_aggregated_from_the_node_records() {
    let (client, ns) = setup("aggr").await;
    let records: Api<NodeArtifacts> = Api::namespaced(client.clone(), &ns);
    let rulesfiles: Api<Rulesfile> = Api::namespaced(client.clone(), &ns);
    let rulesfile: Rulesfile = serde_json::from_value(json!({
        "apiVersion": "artifact.falcosecurity.dev/v1alpha1", "kind": "Rulesfile",
        "metadata": {"name": "rules"}, "spec": {"inlineRules": [{"list": "l", "items": []}]}
    }))
    .expect("rulesfile");
    let generation = rulesfiles
        .create(&PostParams::default(), &rulesfile)
        .await
        .expect("create")
        .metadata
        .generation
        .expect("generation");
    let running = operator(&ns).await;

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

    // A record change that changes no aggregate sends no request.
    let before = running.metrics.api_requests();
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
    assert_eq!(
        running.metrics.api_requests(),
        before,
        "an unchanged aggregate must not be written"
    );
    running.shutdown().await;
}
