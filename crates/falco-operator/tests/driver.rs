//! `spec.driver` against the real API server: the loader init container as stored, the kind
//! switch removing it (Server-Side Apply drops what the operator no longer sends), the CEL rules
//! refusing what cannot go together, the refusals the schema cannot express reported with a
//! reason, and the trusted key's reference protection.

mod support;

use falco_api::Falco;
use falco_operator::references::{CONFIGMAP_IN_USE, SECRET_IN_USE};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use support::*;

fn names(ds: &DaemonSet) -> (Vec<String>, Vec<String>) {
    let pod = ds.spec.template.spec.as_ref().unwrap();
    (
        pod.init_containers
            .iter()
            .flatten()
            .map(|c| c.name.clone())
            .collect(),
        pod.volumes
            .iter()
            .flatten()
            .map(|v| v.name.clone())
            .collect(),
    )
}

async fn patch_driver(client: &Client, ns: &str, driver: Value) {
    Api::<Falco>::namespaced(client.clone(), ns)
        .patch(
            "falco",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"driver": driver}})),
        )
        .await
        .expect("patch spec.driver");
}

async fn wait_init(api: &Api<DaemonSet>, want: &[&str]) -> DaemonSet {
    wait_for(&format!("init containers {want:?}"), || async {
        let ds = api.get_opt("falco").await.ok()??;
        (names(&ds).0 == want).then_some(ds)
    })
    .await
}

#[tokio::test]
async fn kmod_adds_the_loader_and_modern_ebpf_removes_it() {
    let (client, ns) = setup("driver-switch").await;
    let _op = operator(&ns).await;
    let falco = create_falco(&client, &ns, "falco", json!({"driver": {"kind": "kmod"}})).await;
    wait_falco_condition(&client, &ns, "falco", "Reconciled", "True").await;
    let dss: Api<DaemonSet> = Api::namespaced(client.clone(), &ns);
    let ds = wait_init(&dss, &["artifact-operator", "driver-loader"]).await;

    // The stored loader is the generated one (the API server only adds its defaults).
    let generated =
        falco_operator::falco::build(&falco, &falco_operator::OperatorConfig::default())
            .expect("build");
    let want = serde_json::to_value(
        generated
            .workload
            .template()
            .spec
            .as_ref()
            .unwrap()
            .init_containers
            .as_ref()
            .unwrap()[1]
            .clone(),
    )
    .unwrap();
    let stored = serde_json::to_value(
        ds.spec
            .template
            .spec
            .as_ref()
            .unwrap()
            .init_containers
            .as_ref()
            .unwrap()[1]
            .clone(),
    )
    .unwrap();
    for field in [
        "name",
        "image",
        "args",
        "env",
        "securityContext",
        "volumeMounts",
    ] {
        assert_eq!(stored[field], want[field], "{field}");
    }
    assert!(names(&ds).1.contains(&"driver-cache".to_owned()));
    let cm = Api::<ConfigMap>::namespaced(client.clone(), &ns)
        .get("falco")
        .await
        .unwrap();
    assert!(cm.data.unwrap()["falco.yaml"].contains("kind: kmod"));

    // A DaemonSet of a Falco with a loader reports DriverReady (no node yet).
    let f = wait_falco_condition(&client, &ns, "falco", "DriverReady", "Unknown").await;
    assert_eq!(
        condition(f.status.as_ref(), "DriverReady"),
        Some(("Unknown".to_owned(), "NoNodesReported".to_owned()))
    );

    // Back to modern_ebpf: the loader, its volumes, the sidecar's status mount and the
    // condition all go.
    patch_driver(&client, &ns, json!({"kind": "modern_ebpf"})).await;
    let ds = wait_init(&dss, &["artifact-operator"]).await;
    let (_, volumes) = names(&ds);
    for gone in ["driver-cache", "driver-status", "usr-src-fs"] {
        assert!(
            !volumes.contains(&gone.to_owned()),
            "{gone} left behind: {volumes:?}"
        );
    }
    let sidecar = ds.spec.template.spec.unwrap().init_containers.unwrap()[0].clone();
    assert!(
        sidecar
            .env
            .iter()
            .flatten()
            .all(|e| e.name != "DRIVER_STATUS_FILE"),
        "sidecar env left behind"
    );
    let f = wait_falco_condition(&client, &ns, "falco", "Reconciled", "True").await;
    assert_eq!(condition(f.status.as_ref(), "DriverReady"), None);
    assert_eq!(f.status.unwrap().driver, None);

    // Removing spec.driver altogether is today's pod too; auto brings the loader back.
    patch_driver(&client, &ns, json!({"kind": "auto"})).await;
    let ds = wait_init(&dss, &["artifact-operator", "driver-loader"]).await;
    let loader = &ds.spec.template.spec.unwrap().init_containers.unwrap()[1];
    assert_eq!(loader.args.as_ref().unwrap()[0], "auto");
    patch_driver(&client, &ns, Value::Null).await;
    wait_init(&dss, &["artifact-operator"]).await;
}

#[tokio::test]
async fn what_cannot_go_together_is_refused_by_the_api_server() {
    let (client, ns) = setup("driver-cel").await;
    let api = Api::<Falco>::namespaced(client.clone(), &ns);
    let cases = [
        (
            json!({"kind": "modern_ebpf", "repos": ["https://x.example/driver"]}),
            "kind modern_ebpf is bundled in Falco and needs no loader",
        ),
        (
            json!({"kind": "modern_ebpf", "trustedKey": {"configMapKeyRef": {"name": "k", "key": "pub"}}}),
            "kind modern_ebpf is bundled in Falco and needs no loader",
        ),
        (
            json!({"kind": "kmod", "download": false, "compile": false}),
            "download and compile cannot both be false",
        ),
        (
            json!({"kind": "auto", "download": false, "compile": false}),
            "download and compile cannot both be false",
        ),
        (
            json!({"kind": "kmod", "requireVerified": true, "insecureSkipVerify": true}),
            "requireVerified cannot be combined with insecureSkipVerify",
        ),
        (
            json!({"kind": "kmod", "trustedKey": {}}),
            "set exactly one of configMapKeyRef and secretKeyRef",
        ),
        (
            json!({"kind": "kmod", "trustedKey": {"configMapKeyRef": {"name": "a", "key": "k"}, "secretKeyRef": {"name": "b", "key": "k"}}}),
            "set exactly one of configMapKeyRef and secretKeyRef",
        ),
        (
            json!({"kind": "kmod", "repos": ["ftp://mirror.example/driver"]}),
            "each repository must be an http(s) URL",
        ),
        (
            json!({"kind": "kmod", "httpTimeout": "ten seconds"}),
            "httpTimeout must be a Go duration",
        ),
        (
            json!({"kind": "kmod", "version": "../../etc"}),
            "version must be a driver version",
        ),
        (json!({"kind": "bpf"}), "Unsupported value"),
    ];
    for (i, (driver, message)) in cases.iter().enumerate() {
        let cr: Falco = serde_json::from_value(json!({
            "apiVersion": "instance.falcosecurity.dev/v1alpha1", "kind": "Falco",
            "metadata": {"name": format!("bad-{i}")},
            "spec": {"driver": driver},
        }))
        .unwrap_or_else(|_| {
            // An enum value the Rust type refuses: send it as the raw object.
            serde_json::from_value(json!({
                "apiVersion": "instance.falcosecurity.dev/v1alpha1", "kind": "Falco",
                "metadata": {"name": format!("bad-{i}")}, "spec": {}
            }))
            .unwrap()
        });
        let result = if cr.spec.driver.is_some() {
            api.create(&PostParams::default(), &cr).await.map(|_| ())
        } else {
            let raw = json!({
                "apiVersion": "instance.falcosecurity.dev/v1alpha1", "kind": "Falco",
                "metadata": {"name": format!("bad-{i}")}, "spec": {"driver": driver},
            });
            api.patch(
                &format!("bad-{i}"),
                &PatchParams::apply("test"),
                &Patch::Apply(&raw),
            )
            .await
            .map(|_| ())
        };
        let err = result.expect_err(&format!("{driver} accepted"));
        let kube::Error::Api(status) = err else {
            panic!("{driver}: {err}")
        };
        assert_eq!(status.code, 422, "{driver}: {}", status.message);
        assert!(
            status.message.contains(message),
            "{driver}: {}",
            status.message
        );
    }
    // What is valid applies, including every field at once.
    let ok = json!({
        "kind": "kmod", "repos": ["https://drivers.example/driver", "http://10.0.0.1:8080/d"],
        "version": "10.2.0+driver", "download": true, "compile": false,
        "loaderImage": "registry.example/loader:1", "httpTimeout": "1m30s",
        "requireVerified": true, "trustedKey": {"secretKeyRef": {"name": "k", "key": "ed25519.pub"}}
    });
    create_falco(&client, &ns, "good", json!({"driver": ok})).await;
    create_falco(
        &client,
        &ns,
        "plain",
        json!({"driver": {"kind": "modern_ebpf"}}),
    )
    .await;
}

#[tokio::test]
async fn what_the_schema_cannot_refuse_is_reported_with_a_reason() {
    let (client, ns) = setup("driver-refused").await;
    let _op = operator(&ns).await;
    let cases = [
        (
            "legacy",
            json!({"driver": {"kind": "ebpf"}}),
            "LegacyEbpfRemoved",
            "use modern_ebpf or kmod",
        ),
        (
            "unknown",
            json!({"version": "0.99.0", "driver": {"kind": "kmod"}}),
            "DriverVersionUnknown",
            "set spec.driver.version",
        ),
        (
            "deployment",
            json!({"type": "Deployment", "driver": {"kind": "auto"}}),
            "DriverNeedsDaemonSet",
            "needs a DaemonSet",
        ),
    ];
    for (name, spec, _, _) in &cases {
        create_falco(&client, &ns, name, spec.clone()).await;
    }
    for (name, _, reason, message) in cases {
        let f = wait_falco_condition(&client, &ns, name, "DriverReady", "False").await;
        let status = f.status.unwrap();
        let c = status
            .conditions
            .iter()
            .find(|c| c.type_ == "DriverReady")
            .unwrap();
        assert_eq!(c.reason, reason);
        assert!(c.message.contains(message), "{}", c.message);
        assert_eq!(
            condition(Some(&status), "Reconciled"),
            Some(("False".to_owned(), "ApplyConfigurationError".to_owned()))
        );
    }
    // Nothing was applied for them.
    let dss: Api<DaemonSet> = Api::namespaced(client.clone(), &ns);
    assert!(dss.get_opt("legacy").await.unwrap().is_none());
}

#[tokio::test]
async fn the_trusted_key_is_protected_while_referenced() {
    let (client, ns) = setup("driver-key").await;
    let _op = operator(&ns).await;
    let meta = |name: &str| ObjectMeta {
        name: Some(name.to_owned()),
        ..ObjectMeta::default()
    };
    let cms = Api::<ConfigMap>::namespaced(client.clone(), &ns);
    let secrets = Api::<Secret>::namespaced(client.clone(), &ns);
    cms.create(
        &PostParams::default(),
        &ConfigMap {
            metadata: meta("repo-key"),
            ..ConfigMap::default()
        },
    )
    .await
    .unwrap();
    secrets
        .create(
            &PostParams::default(),
            &Secret {
                metadata: meta("repo-secret"),
                ..Secret::default()
            },
        )
        .await
        .unwrap();
    create_falco(
        &client,
        &ns,
        "falco",
        json!({"driver": {"kind": "kmod", "trustedKey": {"configMapKeyRef": {"name": "repo-key", "key": "pub"}}}}),
    )
    .await;
    let has = |finalizers: Vec<String>, f: &str| finalizers.iter().any(|x| x == f);
    wait_for("ConfigMap protected", || async {
        let cm = cms.get("repo-key").await.ok()?;
        has(cm.finalizers().to_vec(), CONFIGMAP_IN_USE).then_some(())
    })
    .await;
    // The key moves to a Secret: the Secret is protected, the ConfigMap released.
    patch_driver(
        &client,
        &ns,
        json!({"kind": "kmod", "trustedKey": {"configMapKeyRef": null, "secretKeyRef": {"name": "repo-secret", "key": "pub"}}}),
    )
    .await;
    wait_for("Secret protected, ConfigMap released", || async {
        let s = secrets.get("repo-secret").await.ok()?;
        let cm = cms.get("repo-key").await.ok()?;
        (has(s.finalizers().to_vec(), SECRET_IN_USE)
            && !has(cm.finalizers().to_vec(), CONFIGMAP_IN_USE))
        .then_some(())
    })
    .await;
}
