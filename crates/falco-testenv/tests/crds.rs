//! The CRDs against a real kube-apiserver + etcd: installation, defaults, validation messages,
//! the status subresource and the project's example manifests.

use std::path::Path;

use falco_api::{Component, Config, Falco, Plugin, Rulesfile};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::Status;
use kube::{Client, Resource};
use serde_json::{Value, json};

async fn setup(prefix: &str) -> (Client, String) {
    let cp = falco_testenv::shared();
    let client = cp.client().await.expect("client");
    let ns = cp.namespace(&client, prefix).await.expect("namespace");
    (client, ns)
}

fn dynamic<K: Resource<DynamicType = ()>>(client: &Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, &ApiResource::erase::<K>(&()))
}

/// Creates `object` (a JSON manifest) and returns what the API server stored.
async fn create<K: Resource<DynamicType = ()>>(
    client: &Client,
    ns: &str,
    object: Value,
) -> Result<Value, Status> {
    let object: DynamicObject = serde_json::from_value(object).expect("manifest");
    match dynamic::<K>(client, ns)
        .create(&PostParams::default(), &object)
        .await
    {
        Ok(created) => Ok(serde_json::to_value(created).expect("json")),
        Err(kube::Error::Api(status)) => Err(*status),
        Err(other) => panic!("unexpected error: {other}"),
    }
}

/// Asserts that the API server refuses `object` with a 422 whose message contains `message`.
async fn assert_rejected<K: Resource<DynamicType = ()>>(
    client: &Client,
    ns: &str,
    object: Value,
    message: &str,
) {
    let name = object["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    match create::<K>(client, ns, object).await {
        Ok(_) => panic!("{name}: the API server accepted an invalid object (wanted: {message})"),
        Err(e) => {
            assert_eq!(e.code, 422, "{name}: {}", e.message);
            assert!(
                e.message.contains(message),
                "{name}: rejected, but the message does not say {message:?}: {}",
                e.message
            );
        }
    }
}

fn manifest(kind: &str, group: &str, name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": format!("{group}/v1alpha1"),
        "kind": kind,
        "metadata": {"name": name},
        "spec": spec,
    })
}

fn rulesfile(name: &str, spec: Value) -> Value {
    manifest("Rulesfile", "artifact.falcosecurity.dev", name, spec)
}

#[tokio::test]
async fn every_crd_is_established_with_status_subresource_and_columns() {
    let (client, _) = setup("crds").await;
    let api: Api<CustomResourceDefinition> = Api::all(client);
    let expected = [
        (
            "falcos.instance.falcosecurity.dev",
            vec![
                "Type",
                "Version",
                "Desired",
                "Ready",
                "Reconciled",
                "Available",
                "Driver",
                "Age",
            ],
        ),
        (
            "components.instance.falcosecurity.dev",
            vec![
                "Type",
                "ResourceType",
                "Version",
                "Desired",
                "Ready",
                "Reconciled",
                "Available",
                "Age",
            ],
        ),
        (
            "rulesfiles.artifact.falcosecurity.dev",
            vec!["Priority", "Programmed", "Age"],
        ),
        (
            "plugins.artifact.falcosecurity.dev",
            vec!["Programmed", "Age"],
        ),
        (
            "configs.artifact.falcosecurity.dev",
            vec!["Priority", "Programmed", "Age"],
        ),
    ];
    for (name, columns) in expected {
        let crd = api.get(name).await.expect(name);
        let conditions = crd.status.and_then(|s| s.conditions).unwrap_or_default();
        assert!(
            conditions
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True"),
            "{name} is not Established"
        );
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1alpha1");
        assert!(
            version
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some(),
            "{name} has no status subresource"
        );
        let have: Vec<_> = version
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(have, columns, "{name} printer columns");
    }
    let falcos = api
        .get("falcos.instance.falcosecurity.dev")
        .await
        .expect("falcos");
    assert_eq!(
        falcos.spec.names.short_names,
        Some(vec!["falco".to_owned()])
    );
    assert_eq!(
        falcos.spec.names.categories,
        Some(vec!["instances".to_owned()])
    );
}

#[tokio::test]
async fn examples_apply_with_the_expected_defaults() {
    let (client, ns) = setup("examples").await;
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let objects = falco_testenv::read_manifests(&examples).expect("examples");
    assert!(objects.len() >= 6, "examples/ holds every kind");
    falco_testenv::apply_manifests(&client, &ns, &objects)
        .await
        .expect("examples apply");

    let rules = Api::<Rulesfile>::namespaced(client.clone(), &ns);
    let official = rules.get("falco-rules").await.expect("falco-rules");
    assert_eq!(official.spec.priority, 50, "priority defaults to 50");
    let oci = official.spec.oci_artifact.expect("oci");
    assert_eq!(oci.image.tag, "latest", "tag defaults to latest");
    let status = official.status.expect("status defaulted by the API server");
    assert_eq!(status.conditions.len(), 1);
    let pending = &status.conditions[0];
    assert_eq!(
        (
            pending.type_.as_str(),
            pending.status.as_str(),
            pending.reason.as_str()
        ),
        ("Programmed", "Unknown", "Pending")
    );
    let local = rules.get("local-rules").await.expect("local-rules");
    assert!(
        local
            .spec
            .inline_rules
            .as_ref()
            .is_some_and(Value::is_array),
        "inline YAML kept as is"
    );

    let component = Api::<Component>::namespaced(client.clone(), &ns)
        .get("falcosidekick")
        .await
        .expect("component");
    assert_eq!(
        component.spec.replicas,
        Some(1),
        "Component replicas defaults to 1"
    );

    let falco = Api::<Falco>::namespaced(client.clone(), &ns)
        .get("falco")
        .await
        .expect("falco");
    let template = falco.spec.pod_template_spec.expect("template");
    assert_eq!(
        template
            .metadata
            .and_then(|m| m.labels)
            .and_then(|l| l.get("team").cloned()),
        Some("security".to_owned()),
        "labels inside podTemplateSpec are kept (embedded metadata)"
    );
    let plugin = Api::<Plugin>::namespaced(client.clone(), &ns)
        .get("container")
        .await
        .expect("plugin");
    assert_eq!(
        plugin.spec.config.and_then(|c| c.init_config),
        Some(json!({"label_max_len": 100, "with_size": false})),
        "initConfig keeps arbitrary nested values"
    );
    let config = Api::<Config>::namespaced(client, &ns)
        .get("json-output")
        .await
        .expect("config");
    assert_eq!(config.spec.priority, 60);
}

#[tokio::test]
async fn upstream_manifests_without_spec_or_with_empty_spec_apply() {
    let (client, ns) = setup("upstream").await;
    // Upstream's own sample: `spec: {}`; and a manifest without any spec at all.
    let created = create::<Falco>(
        &client,
        &ns,
        manifest(
            "Falco",
            "instance.falcosecurity.dev",
            "falco-sample",
            json!({}),
        ),
    )
    .await
    .expect("spec: {}");
    assert_eq!(created["spec"], json!({}));
    let no_spec = json!({
        "apiVersion": "instance.falcosecurity.dev/v1alpha1",
        "kind": "Falco",
        "metadata": {"name": "no-spec"},
    });
    let created = create::<Falco>(&client, &ns, no_spec)
        .await
        .expect("no spec");
    assert_eq!(created["spec"], json!({}), "spec defaults to {{}}");
    // Ignored combinations stay accepted, as upstream accepts them.
    create::<Falco>(
        &client,
        &ns,
        manifest(
            "Falco",
            "instance.falcosecurity.dev",
            "ds-with-replicas",
            json!({"type": "DaemonSet", "replicas": 3}),
        ),
    )
    .await
    .expect("replicas with a DaemonSet is ignored, not refused");
    // A digest-pinned artifact with every registry option.
    create::<Rulesfile>(
        &client,
        &ns,
        rulesfile(
            "pinned",
            json!({
                "ociArtifact": {
                    "image": {"repository": "falcosecurity/rules/falco-rules", "tag": format!("sha256:{}", "a".repeat(64))},
                    "registry": {"name": "registry.local:5000", "auth": {"secretRef": {"name": "creds"}}, "tls": {"insecureSkipVerify": false}}
                },
                "configMapRef": {"name": "more-rules"},
                "priority": 0,
                "selector": {"matchLabels": {"kubernetes.io/os": "linux"}}
            }),
        ),
    )
    .await
    .expect("digest-pinned rulesfile");
    // Accepted by upstream v0.4.1, so accepted here: `__` is a separator of the OCI
    // distribution grammar, and registry.name may carry a repository path prefix.
    for (name, repository, registry) in [
        ("double-underscore", "team__x/rules", "ghcr.io"),
        ("registry-with-path", "rules", "myreg.azurecr.io/falco"),
        (
            "registry-port-path",
            "c-d--e/a.b",
            "registry.local:5000/team/sub",
        ),
    ] {
        let created = create::<Rulesfile>(
            &client,
            &ns,
            rulesfile(
                name,
                json!({"ociArtifact": {"image": {"repository": repository}, "registry": {"name": registry}}}),
            ),
        )
        .await
        .unwrap_or_else(|e| panic!("{name}: {}", e.message));
        assert_eq!(
            created["spec"]["ociArtifact"]["registry"]["name"], registry,
            "{name}"
        );
    }
}

#[tokio::test]
async fn invalid_specs_are_refused_with_a_message_a_person_can_act_on() {
    let (client, ns) = setup("invalid").await;
    let oci = |image: Value, registry: Value| json!({"ociArtifact": {"image": image, "registry": registry}});

    assert_rejected::<Rulesfile>(
        &client,
        &ns,
        rulesfile(
            "plain-and-tls",
            oci(
                json!({"repository": "a/b"}),
                json!({"plainHTTP": true, "tls": {}}),
            ),
        ),
        "plainHTTP and tls are mutually exclusive",
    )
    .await;
    assert_rejected::<Rulesfile>(
        &client,
        &ns,
        rulesfile(
            "priority-high",
            json!({"priority": 100, "configMapRef": {"name": "x"}}),
        ),
        "spec.priority",
    )
    .await;
    assert_rejected::<Rulesfile>(
        &client,
        &ns,
        rulesfile(
            "priority-low",
            json!({"priority": -1, "configMapRef": {"name": "x"}}),
        ),
        "should be greater than or equal to 0",
    )
    .await;
    assert_rejected::<Rulesfile>(
        &client,
        &ns,
        rulesfile("no-repo", oci(json!({"tag": "1.0"}), json!({}))),
        "spec.ociArtifact.image.repository: Required value",
    )
    .await;
    assert_rejected::<Rulesfile>(
        &client,
        &ns,
        rulesfile(
            "repo-with-tag",
            oci(json!({"repository": "falcosecurity/rules:3"}), json!({})),
        ),
        "repository must be an OCI repository path",
    )
    .await;
    for (name, repository) in [
        ("repo-triple-underscore", "team___x/rules"),
        ("repo-trailing-separator", "team_/rules"),
        ("repo-uppercase", "Team/rules"),
    ] {
        assert_rejected::<Rulesfile>(
            &client,
            &ns,
            rulesfile(name, oci(json!({"repository": repository}), json!({}))),
            "repository must be an OCI repository path",
        )
        .await;
    }
    // A repository that carries its own host is refused, as the message says.
    for (name, repository) in [
        ("repo-with-host", "ghcr.io/falcosecurity/rules"),
        ("repo-with-localhost", "localhost/rules"),
    ] {
        assert_rejected::<Rulesfile>(
            &client,
            &ns,
            rulesfile(name, oci(json!({"repository": repository}), json!({}))),
            "repository must not start with a registry host",
        )
        .await;
    }
    assert_rejected::<Rulesfile>(
        &client,
        &ns,
        rulesfile(
            "registry-path-uppercase",
            oci(
                json!({"repository": "a/b"}),
                json!({"name": "myreg.azurecr.io/Falco"}),
            ),
        ),
        "registry.name is a host[:port]",
    )
    .await;
    assert_rejected::<Rulesfile>(
        &client,
        &ns,
        rulesfile(
            "bad-tag",
            oci(
                json!({"repository": "a/b", "tag": "sha256:short"}),
                json!({}),
            ),
        ),
        "tag must be an OCI tag",
    )
    .await;
    assert_rejected::<Rulesfile>(
        &client,
        &ns,
        rulesfile(
            "registry-url",
            oci(
                json!({"repository": "a/b"}),
                json!({"name": "https://ghcr.io"}),
            ),
        ),
        "registry.name is a host[:port]",
    )
    .await;
    assert_rejected::<Rulesfile>(
        &client,
        &ns,
        rulesfile(
            "secret-without-name",
            oci(
                json!({"repository": "a/b"}),
                json!({"auth": {"secretRef": {}}}),
            ),
        ),
        "secretRef.name: Required value",
    )
    .await;
    assert_rejected::<Config>(
        &client,
        &ns,
        manifest(
            "Config",
            "artifact.falcosecurity.dev",
            "empty-cm",
            json!({"configMapRef": {"name": ""}}),
        ),
        "spec.configMapRef.name",
    )
    .await;
    assert_rejected::<Plugin>(
        &client,
        &ns,
        manifest(
            "Plugin",
            "artifact.falcosecurity.dev",
            "relative",
            json!({"config": {"libraryPath": "plugins/x.so"}}),
        ),
        "libraryPath must be an absolute path",
    )
    .await;
    assert_rejected::<Falco>(
        &client,
        &ns,
        manifest(
            "Falco",
            "instance.falcosecurity.dev",
            "statefulset",
            json!({"type": "StatefulSet"}),
        ),
        "supported values: \"DaemonSet\", \"Deployment\"",
    )
    .await;
    assert_rejected::<Falco>(
        &client,
        &ns,
        manifest(
            "Falco",
            "instance.falcosecurity.dev",
            "zero",
            json!({"type": "Deployment", "replicas": 0}),
        ),
        "spec.replicas",
    )
    .await;
    assert_rejected::<Component>(
        &client,
        &ns,
        manifest(
            "Component",
            "instance.falcosecurity.dev",
            "no-type",
            json!({"replicas": 1}),
        ),
        "spec.component: Required value",
    )
    .await;
    assert_rejected::<Component>(
        &client,
        &ns,
        manifest(
            "Component",
            "instance.falcosecurity.dev",
            "talon",
            json!({"component": {"type": "talon"}}),
        ),
        "supported values: \"metacollector\", \"falcosidekick\", \"falcosidekick-ui\"",
    )
    .await;
}

#[tokio::test]
async fn status_is_written_only_through_the_status_subresource() {
    let (client, ns) = setup("status").await;
    let with_status = json!({
        "apiVersion": "instance.falcosecurity.dev/v1alpha1",
        "kind": "Falco",
        "metadata": {"name": "f"},
        "spec": {},
        "status": {"resourceType": "DaemonSet", "desiredReplicas": 7},
    });
    let created = create::<Falco>(&client, &ns, with_status)
        .await
        .expect("create");
    assert!(
        created.get("status").is_none_or(Value::is_null),
        "status in a create is dropped: {created}"
    );

    let api = Api::<Falco>::namespaced(client, &ns);
    let pp = PatchParams::apply("falco-testenv-test").force();
    let patch = json!({
        "apiVersion": "instance.falcosecurity.dev/v1alpha1",
        "kind": "Falco",
        "metadata": {"name": "f"},
        "status": {"desiredReplicas": 5},
    });
    api.patch("f", &pp, &Patch::Apply(&patch))
        .await
        .expect("main resource patch");
    let status = api.get("f").await.expect("get").status;
    assert!(
        status.is_none(),
        "a patch of the main resource does not write status: {status:?}"
    );

    api.patch_status("f", &pp, &Patch::Apply(&patch))
        .await
        .expect("status patch");
    let status = api.get("f").await.expect("get").status.expect("status");
    assert_eq!(status.desired_replicas, 5);
}
