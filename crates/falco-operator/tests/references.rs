//! Reference protection against the real API server: in-use finalizers follow the references of
//! artifact CRs and Falco pod templates, and deleting a referenced object waits for the reference
//! to go.

mod support;

use falco_api::{Config, Falco, Rulesfile};
use falco_operator::references::{CONFIGMAP_IN_USE, SECRET_IN_USE};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use support::*;

async fn has_finalizer<K>(api: &Api<K>, name: &str, finalizer: &str) -> Option<bool>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let obj = api.get_opt(name).await.ok()??;
    Some(obj.finalizers().iter().any(|f| f == finalizer))
}

async fn wait_finalizer<K>(api: &Api<K>, name: &str, finalizer: &str, present: bool)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    wait_for(
        &format!("{name}: {finalizer} present={present}"),
        || async { (has_finalizer(api, name, finalizer).await? == present).then_some(()) },
    )
    .await;
}

async fn create_cm_and_secret(client: &Client, ns: &str, name: &str) {
    let meta = ObjectMeta {
        name: Some(name.to_owned()),
        // A finalizer of someone else, which the operator must keep.
        finalizers: Some(vec!["example.com/keep".to_owned()]),
        ..ObjectMeta::default()
    };
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .create(
            &PostParams::default(),
            &ConfigMap {
                metadata: meta.clone(),
                ..ConfigMap::default()
            },
        )
        .await
        .expect("cm");
    Api::<Secret>::namespaced(client.clone(), ns)
        .create(
            &PostParams::default(),
            &Secret {
                metadata: meta,
                ..Secret::default()
            },
        )
        .await
        .expect("secret");
}

async fn drop_foreign_finalizer<K>(api: &Api<K>, name: &str)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let obj = api.get(name).await.expect("get");
    let kept: Vec<String> = obj
        .finalizers()
        .iter()
        .filter(|f| *f != "example.com/keep")
        .cloned()
        .collect();
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(
            json!({"metadata": {"finalizers": kept, "resourceVersion": obj.resource_version()}}),
        ),
    )
    .await
    .expect("drop foreign finalizer");
}

#[tokio::test]
async fn artifact_references_hold_configmaps_and_secrets_until_released() {
    let (client, ns) = setup("refs-artifact").await;
    let _op = operator(&ns).await;
    create_cm_and_secret(&client, &ns, "rules").await;
    let cms = Api::<ConfigMap>::namespaced(client.clone(), &ns);
    let secrets = Api::<Secret>::namespaced(client.clone(), &ns);
    let rulesfiles = Api::<Rulesfile>::namespaced(client.clone(), &ns);
    let spec = serde_json::from_value(json!({
        "configMapRef": {"name": "rules"},
        "ociArtifact": {"image": {"repository": "falcosecurity/rules/falco-rules"}, "registry": {"auth": {"secretRef": {"name": "rules"}}}}
    }))
    .expect("spec");
    rulesfiles
        .create(&PostParams::default(), &Rulesfile::new("rules", spec))
        .await
        .expect("rulesfile");
    wait_finalizer(&cms, "rules", CONFIGMAP_IN_USE, true).await;
    wait_finalizer(&secrets, "rules", SECRET_IN_USE, true).await;
    assert_eq!(
        has_finalizer(&cms, "rules", "example.com/keep").await,
        Some(true)
    );

    // Deleting the ConfigMap while referenced waits.
    drop_foreign_finalizer(&cms, "rules").await;
    cms.delete("rules", &DeleteParams::default())
        .await
        .expect("delete cm");
    let cm = cms.get("rules").await.expect("still there");
    assert!(cm.metadata.deletion_timestamp.is_some());

    // The reference goes: the ConfigMap goes, the Secret loses only our finalizer.
    rulesfiles
        .delete("rules", &DeleteParams::default())
        .await
        .expect("delete rulesfile");
    wait_gone(&cms, "rules").await;
    wait_finalizer(&secrets, "rules", SECRET_IN_USE, false).await;
    assert_eq!(
        has_finalizer(&secrets, "rules", "example.com/keep").await,
        Some(true)
    );
    drop_foreign_finalizer(&secrets, "rules").await;
}

#[tokio::test]
async fn falco_pod_template_references_are_protected_and_released_on_change() {
    let (client, ns) = setup("refs-falco").await;
    let _op = operator(&ns).await;
    create_cm_and_secret(&client, &ns, "extra").await;
    create_falco(
        &client,
        &ns,
        "falco",
        json!({"podTemplateSpec": {"spec": {
            "volumes": [{"name": "extra-cm", "configMap": {"name": "extra"}}],
            "containers": [{"name": "falco", "envFrom": [{"secretRef": {"name": "extra"}}]}]
        }}}),
    )
    .await;
    let cms = Api::<ConfigMap>::namespaced(client.clone(), &ns);
    let secrets = Api::<Secret>::namespaced(client.clone(), &ns);
    wait_finalizer(&cms, "extra", CONFIGMAP_IN_USE, true).await;
    wait_finalizer(&secrets, "extra", SECRET_IN_USE, true).await;

    // Dropping the Secret reference releases it; the ConfigMap stays protected.
    Api::<Falco>::namespaced(client.clone(), &ns)
        .patch(
            "falco",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"podTemplateSpec": {"spec": {"containers": [{"name": "falco"}]}}}}),
            ),
        )
        .await
        .expect("patch");
    // A merge patch replaces the containers list: the template now has no envFrom.
    wait_finalizer(&secrets, "extra", SECRET_IN_USE, false).await;
    assert_eq!(
        has_finalizer(&cms, "extra", CONFIGMAP_IN_USE).await,
        Some(true)
    );

    // Deleting the Falco releases the rest.
    let falcos = Api::<Falco>::namespaced(client.clone(), &ns);
    falcos
        .delete("falco", &DeleteParams::default())
        .await
        .expect("delete");
    wait_gone(&falcos, "falco").await;
    wait_finalizer(&cms, "extra", CONFIGMAP_IN_USE, false).await;
    drop_foreign_finalizer(&cms, "extra").await;
    drop_foreign_finalizer(&secrets, "extra").await;
}

#[tokio::test]
async fn a_configmap_created_after_its_reference_is_protected_when_it_appears() {
    let (client, ns) = setup("refs-late").await;
    let _op = operator(&ns).await;
    let spec = serde_json::from_value(json!({"configMapRef": {"name": "late"}})).expect("spec");
    Api::<Config>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &Config::new("late", spec))
        .await
        .expect("config");
    let cms = Api::<ConfigMap>::namespaced(client.clone(), &ns);
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some("late".to_owned()),
            ..ObjectMeta::default()
        },
        ..ConfigMap::default()
    };
    cms.create(&PostParams::default(), &cm).await.expect("cm");
    wait_finalizer(&cms, "late", CONFIGMAP_IN_USE, true).await;
    Api::<Config>::namespaced(client.clone(), &ns)
        .delete("late", &DeleteParams::default())
        .await
        .expect("delete config");
    wait_finalizer(&cms, "late", CONFIGMAP_IN_USE, false).await;
}

/// A reference that goes while the operator is down is released when it comes back: the
/// ledger ConfigMap remembers what was protected.
#[tokio::test]
async fn a_reference_dropped_during_an_outage_is_released_on_restart() {
    use falco_operator::references::{LEDGER_KEY, LEDGER_NAME};
    let (client, ns) = setup("refs-outage").await;
    let cms = Api::<ConfigMap>::namespaced(client.clone(), &ns);
    let ledger = |cms: Api<ConfigMap>| async move {
        cms.get_opt(LEDGER_NAME)
            .await
            .ok()
            .flatten()
            .and_then(|cm| cm.data)
            .and_then(|mut d| d.remove(LEDGER_KEY))
            .unwrap_or_default()
    };
    let line = format!("ConfigMap {ns}/outage\n");
    for name in ["outage", "kept"] {
        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        };
        cms.create(&PostParams::default(), &cm).await.expect("cm");
    }
    let configs = Api::<Config>::namespaced(client.clone(), &ns);
    for name in ["outage", "kept"] {
        let spec = serde_json::from_value(json!({"configMapRef": {"name": name}})).expect("spec");
        configs
            .create(&PostParams::default(), &Config::new(name, spec))
            .await
            .expect("config");
    }

    let op = operator(&ns).await;
    wait_finalizer(&cms, "outage", CONFIGMAP_IN_USE, true).await;
    wait_finalizer(&cms, "kept", CONFIGMAP_IN_USE, true).await;
    // Written before the finalizer was added.
    let recorded = ledger(cms.clone()).await;
    assert!(recorded.contains(&line), "ledger: {recorded:?}");
    op.shutdown().await;

    // The outage: one Config goes, nobody is watching.
    configs
        .delete("outage", &DeleteParams::default())
        .await
        .expect("delete config");
    wait_gone(&configs, "outage").await;
    assert_eq!(
        has_finalizer(&cms, "outage", CONFIGMAP_IN_USE).await,
        Some(true)
    );

    let _op = operator(&ns).await;
    wait_finalizer(&cms, "outage", CONFIGMAP_IN_USE, false).await;
    wait_for("the ledger drops the released ConfigMap", || {
        let cms = cms.clone();
        let line = line.clone();
        async move { (!ledger(cms).await.contains(&line)).then_some(()) }
    })
    .await;
    // The one still referenced keeps its finalizer and its ledger line.
    assert_eq!(
        has_finalizer(&cms, "kept", CONFIGMAP_IN_USE).await,
        Some(true)
    );
    assert!(
        ledger(cms.clone())
            .await
            .contains(&format!("ConfigMap {ns}/kept\n"))
    );
}
