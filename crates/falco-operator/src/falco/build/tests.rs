use super::*;
use falco_api::FalcoSpec;
use k8s_openapi::api::core::v1::Probe;
use serde_json::{Value, json};

/// A Falco CR as the API server would hand it over.
fn falco(spec: Value) -> Falco {
    let mut f = Falco::new(
        "falco",
        serde_json::from_value::<FalcoSpec>(spec).expect("spec"),
    );
    f.metadata.namespace = Some("ns-a".to_owned());
    f.metadata.uid = Some("0000-uid".to_owned());
    f
}

fn built(spec: Value) -> FalcoChildren {
    build(&falco(spec), &OperatorConfig::default()).expect("build")
}

fn pod_spec(children: &FalcoChildren) -> &PodSpec {
    children
        .workload
        .template()
        .spec
        .as_ref()
        .expect("pod spec")
}

fn container<'a>(children: &'a FalcoChildren, name: &str) -> &'a Container {
    let spec = pod_spec(children);
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

fn json_of<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).expect("json")
}

#[test]
fn default_is_a_daemonset_with_the_default_image() {
    let c = built(json!({}));
    let Workload::DaemonSet(ds) = &c.workload else {
        panic!("not a DaemonSet")
    };
    assert_eq!(ds.metadata.name.as_deref(), Some("falco"));
    assert_eq!(ds.metadata.namespace.as_deref(), Some("ns-a"));
    let spec = &ds.spec;
    assert_eq!(
        json_of(&spec.update_strategy),
        json!({"type": "RollingUpdate"})
    );
    assert_eq!(
        json_of(&spec.selector),
        json!({"matchLabels": {"app.kubernetes.io/instance": "falco", "app.kubernetes.io/name": "falco"}})
    );
    let falco = container(&c, "falco");
    assert_eq!(
        falco.image.as_deref(),
        Some("docker.io/falcosecurity/falco:0.44.1")
    );
    assert_eq!(falco.image_pull_policy.as_deref(), Some("IfNotPresent"));
    assert_eq!(falco.args, Some(vec!["/usr/bin/falco".to_owned()]));
    assert_eq!(falco.command, None);
    assert_eq!(pod_spec(&c).service_account_name.as_deref(), Some("falco"));
}

#[test]
fn falco_container_matches_the_seed_defaults() {
    let c = built(json!({}));
    let falco = container(&c, "falco");
    assert_eq!(
        json_of(&falco.resources),
        json!({"requests": {"cpu": "100m", "memory": "512Mi"}, "limits": {"cpu": "1000m", "memory": "1024Mi"}})
    );
    assert_eq!(
        json_of(&falco.security_context),
        json!({"privileged": true})
    );
    assert_eq!(
        json_of(&falco.ports),
        json!([{"name": "web", "containerPort": 8765, "protocol": "TCP"}])
    );
    let probe = |delay: i32| {
        json!({"httpGet": {"path": "/healthz", "port": 8765}, "initialDelaySeconds": delay,
               "timeoutSeconds": 5, "periodSeconds": 15, "failureThreshold": 3, "successThreshold": 1})
    };
    assert_eq!(json_of(&falco.liveness_probe), probe(60));
    assert_eq!(json_of(&falco.readiness_probe), probe(30));
    assert_eq!(
        falco.startup_probe, None::<Probe>,
        "the seed has no startup probe"
    );
    assert_eq!(
        json_of(&falco.env),
        json!([
            {"name": "HOST_ROOT", "value": "/host"},
            {"name": "FALCO_HOSTNAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "FALCO_K8S_NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}
        ])
    );
    assert_eq!(
        json_of(&pod_spec(&c).tolerations),
        json!([
            {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"},
            {"key": "node-role.kubernetes.io/master", "operator": "Exists", "effect": "NoSchedule"}
        ])
    );
}

#[test]
fn daemonset_mounts_host_paths_and_runtime_sockets() {
    let c = built(json!({}));
    let mounts: Vec<(String, String, Option<bool>)> = container(&c, "falco")
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| (m.name.clone(), m.mount_path.clone(), m.read_only))
        .collect();
    let expected = [
        ("root-falco-fs", "/root/.falco", None),
        ("boot-fs", "/host/boot", Some(true)),
        ("lib-modules", "/host/lib/modules", None),
        ("usr-fs", "/host/usr", Some(true)),
        ("proc-fs", "/host/proc", None),
        ("etc-fs", "/host/etc", Some(true)),
        ("dev-fs", "/host/dev", Some(true)),
        ("sys-fs", "/sys/module", None),
        ("docker-socket", "/host/var/run", None),
        ("containerd-socket", "/host/run/containerd", None),
        ("crio-socket", "/host/run/crio", None),
        ("host-containerd-socket", "/host/run/host-containerd", None),
        ("k3s-containerd-socket", "/host/run/k3s/containerd", None),
        ("falco-configs", "/etc/falco/config.d", None),
        ("falco-rulesfiles", "/etc/falco/rules.d", None),
        ("falco-plugins", "/usr/share/falco/plugins", None),
        ("falco-config-default", "/etc/falco/falco.yaml", Some(true)),
    ]
    .map(|(n, p, r)| (n.to_owned(), p.to_owned(), r));
    assert_eq!(mounts, expected);
    let config_mount = container(&c, "falco")
        .volume_mounts
        .iter()
        .flatten()
        .last()
        .unwrap();
    assert_eq!(config_mount.sub_path.as_deref(), Some("falco.yaml"));

    let volumes = pod_spec(&c).volumes.as_ref().unwrap();
    let by_name = |n: &str| json_of(volumes.iter().find(|v| v.name == n).unwrap());
    assert_eq!(
        by_name("proc-fs"),
        json!({"name": "proc-fs", "hostPath": {"path": "/proc"}})
    );
    assert_eq!(
        by_name("docker-socket"),
        json!({"name": "docker-socket", "hostPath": {"path": "/var/run"}})
    );
    assert_eq!(
        by_name("falco-plugins"),
        json!({"name": "falco-plugins", "emptyDir": {}})
    );
    assert_eq!(
        by_name("falco-config-default"),
        json!({"name": "falco-config-default", "configMap": {"name": "falco"}})
    );
    assert_eq!(volumes.len(), expected.len(), "one volume per mount");
}

#[test]
fn artifact_operator_is_a_native_sidecar() {
    let operator = OperatorConfig {
        artifact_operator_image: "example.com/ao:1".to_owned(),
        ..OperatorConfig::default()
    };
    let c = build(&falco(json!({})), &operator).unwrap();
    let spec = pod_spec(&c);
    assert_eq!(spec.init_containers.as_ref().map(Vec::len), Some(1));
    let ao = container(&c, "artifact-operator");
    assert_eq!(ao.image.as_deref(), Some("example.com/ao:1"));
    assert_eq!(ao.restart_policy.as_deref(), Some("Always"));
    assert_eq!(ao.args, Some(vec!["run".to_owned()]));
    let probe = |path: &str, delay: i32, period: i32, failures: i32| {
        json!({"httpGet": {"path": path, "port": 8081}, "initialDelaySeconds": delay, "timeoutSeconds": 5,
               "periodSeconds": period, "failureThreshold": failures, "successThreshold": 1})
    };
    assert_eq!(json_of(&ao.readiness_probe), probe("/readyz", 5, 10, 3));
    assert_eq!(json_of(&ao.liveness_probe), probe("/healthz", 15, 10, 3));
    // The startup gate: checked every second, a budget of 100 s for a slow registry.
    let mut gate = probe("/readyz", 1, 1, 100);
    gate["timeoutSeconds"] = json!(1);
    assert_eq!(json_of(&ao.startup_probe), gate, "the startup gate");
    assert_eq!(
        json_of(&ao.env),
        json!([
            {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}
        ])
    );
    assert_eq!(
        json_of(&ao.volume_mounts),
        json!([
            {"name": "falco-configs", "mountPath": "/etc/falco/config.d"},
            {"name": "falco-rulesfiles", "mountPath": "/etc/falco/rules.d"},
            {"name": "falco-plugins", "mountPath": "/usr/share/falco/plugins"}
        ])
    );
    assert_eq!(
        OperatorConfig::default().artifact_operator_image,
        format!(
            "ghcr.io/falcosecurity-rs/falco-artifact-operator:{}",
            env!("CARGO_PKG_VERSION")
        )
    );
}

#[test]
fn deployment_type_builds_a_deployment_with_nodriver_and_no_sockets() {
    let c = built(json!({"type": "Deployment", "replicas": 3}));
    let Workload::Deployment(d) = &c.workload else {
        panic!("not a Deployment")
    };
    let spec = &d.spec;
    assert_eq!(spec.replicas, Some(3));
    assert_eq!(json_of(&spec.strategy), json!({"type": "RollingUpdate"}));
    assert_eq!(c.workload.kind(), WorkloadType::Deployment);
    let yaml: Value =
        serde_yaml::from_str(&c.config_map.data.as_ref().unwrap()["falco.yaml"]).unwrap();
    assert_eq!(yaml["engine"]["kind"], "nodriver");
    let volumes = pod_spec(&c).volumes.as_ref().unwrap();
    assert!(
        !volumes.iter().any(|v| v.name.ends_with("-socket")),
        "container engines disabled"
    );
    assert!(volumes.iter().any(|v| v.name == "proc-fs"));
    // Default replicas.
    let Workload::Deployment(d) = built(json!({"type": "Deployment"})).workload else {
        panic!()
    };
    assert_eq!(d.spec.replicas, Some(1));
}

#[test]
fn type_switch_changes_workload_config_and_rolls_pods() {
    let ds = built(json!({}));
    let dep = built(json!({"type": "Deployment"}));
    assert_eq!(ds.workload.kind(), WorkloadType::DaemonSet);
    assert_eq!(dep.workload.kind(), WorkloadType::Deployment);
    let checksum = |c: &FalcoChildren| {
        c.workload
            .template()
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .as_ref()
            .unwrap()[labels::CONFIG_CHECKSUM_ANNOTATION]
            .clone()
    };
    assert_ne!(
        checksum(&ds),
        checksum(&dep),
        "engine.kind changed, so pods roll"
    );
    assert_eq!(checksum(&ds).len(), 64);
    assert_eq!(checksum(&ds), checksum(&built(json!({}))), "deterministic");
}

#[test]
fn config_overlay_lands_in_the_configmap_and_the_checksum() {
    let plain = built(json!({}));
    let tuned = built(json!({"config": {"log_level": "debug", "webserver": {"threadiness": 2}}}));
    let yaml: Value =
        serde_yaml::from_str(&tuned.config_map.data.as_ref().unwrap()["falco.yaml"]).unwrap();
    assert_eq!(yaml["log_level"], "debug");
    assert_eq!(yaml["webserver"]["threadiness"], 2);
    assert_eq!(yaml["webserver"]["listen_port"], 8765);
    assert_eq!(yaml["engine"]["kind"], "modern_ebpf");
    assert_ne!(
        plain
            .workload
            .template()
            .metadata
            .as_ref()
            .unwrap()
            .annotations,
        tuned
            .workload
            .template()
            .metadata
            .as_ref()
            .unwrap()
            .annotations
    );
    let err = build(
        &falco(json!({"config": "log_level: debug"})),
        &OperatorConfig::default(),
    )
    .unwrap_err();
    assert_eq!(err.category(), "invalid_spec");
}

#[test]
fn version_resolution() {
    assert_eq!(resolve_version(&falco(json!({}))), "0.44.1");
    assert_eq!(
        resolve_version(&falco(json!({"version": "0.43.0"}))),
        "0.43.0"
    );
    let with_image = json!({"version": "0.43.0", "podTemplateSpec": {"spec": {"containers": [
        {"name": "falco", "image": "registry.local:5000/falco:0.42.0"}]}}});
    assert_eq!(resolve_version(&falco(with_image.clone())), "0.42.0");
    assert_eq!(
        container(&built(with_image), "falco").image.as_deref(),
        Some("registry.local:5000/falco:0.42.0")
    );
    // Fixes §7 item 5: naming the container without an image keeps spec.version.
    let env_only = json!({"version": "0.43.0", "podTemplateSpec": {"spec": {"containers": [
        {"name": "falco", "env": [{"name": "X", "value": "1"}]}]}}});
    assert_eq!(resolve_version(&falco(env_only.clone())), "0.43.0");
    let c = built(env_only);
    let falco_c = container(&c, "falco");
    assert_eq!(
        falco_c.image.as_deref(),
        Some("docker.io/falcosecurity/falco:0.43.0")
    );
    assert_eq!(
        json_of(&falco_c.env.as_ref().unwrap().last()),
        json!({"name": "X", "value": "1"})
    );
    // A registry port is not a tag.
    let port_only = json!({"podTemplateSpec": {"spec": {"containers": [{"name": "falco", "image": "registry.local:5000/falco"}]}}});
    assert_eq!(resolve_version(&falco(port_only)), "0.44.1");
}

#[test]
fn pod_template_merge_follows_upstream_semantics() {
    let c = built(json!({"podTemplateSpec": {"spec": {
        "containers": [
            {"name": "falco", "args": ["/usr/bin/falco", "-v"],
             "env": [{"name": "HOST_ROOT", "value": "/h"}],
             "resources": {"limits": {"memory": "2Gi"}},
             "volumeMounts": [{"name": "extra", "mountPath": "/extra"}]},
            {"name": "helper", "image": "busybox"}
        ],
        "initContainers": [{"name": "artifact-operator", "args": ["run", "--verbose"]}],
        "tolerations": [{"operator": "Exists"}],
        "volumes": [{"name": "extra", "emptyDir": {}}],
        "nodeSelector": {"kubernetes.io/os": "linux"}
    }}}));
    let spec = pod_spec(&c);
    let falco_c = container(&c, "falco");
    assert_eq!(
        falco_c.args,
        Some(vec!["/usr/bin/falco".to_owned(), "-v".to_owned()]),
        "args atomic"
    );
    assert_eq!(
        falco_c.env.as_ref().unwrap()[0].value.as_deref(),
        Some("/h"),
        "env by name"
    );
    assert_eq!(falco_c.env.as_ref().unwrap().len(), 3);
    assert_eq!(
        json_of(&falco_c.resources),
        json!({"requests": {"cpu": "100m", "memory": "512Mi"}, "limits": {"cpu": "1000m", "memory": "2Gi"}})
    );
    assert_eq!(
        falco_c
            .volume_mounts
            .as_ref()
            .unwrap()
            .last()
            .unwrap()
            .mount_path,
        "/extra"
    );
    assert_eq!(
        falco_c.image.as_deref(),
        Some("docker.io/falcosecurity/falco:0.44.1")
    );
    assert_eq!(
        spec.containers
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>(),
        ["falco", "helper"]
    );
    let ao = container(&c, "artifact-operator");
    assert_eq!(
        ao.args,
        Some(vec!["run".to_owned(), "--verbose".to_owned()])
    );
    assert_eq!(
        ao.restart_policy.as_deref(),
        Some("Always"),
        "sidecar stays native"
    );
    assert_eq!(
        json_of(&spec.tolerations),
        json!([{"operator": "Exists"}]),
        "tolerations atomic"
    );
    assert!(
        spec.volumes
            .as_ref()
            .unwrap()
            .iter()
            .any(|v| v.name == "extra")
    );
    assert!(
        spec.volumes
            .as_ref()
            .unwrap()
            .iter()
            .any(|v| v.name == "proc-fs")
    );
    assert_eq!(
        json_of(&spec.node_selector),
        json!({"kubernetes.io/os": "linux"})
    );
}

#[test]
fn user_template_labels_are_kept_and_selector_labels_win() {
    let mut cr = falco(json!({"podTemplateSpec": {"metadata": {
        "labels": {"team": "sec", "app.kubernetes.io/name": "hijack"},
        "annotations": {"note": "x"}
    }}}));
    cr.metadata.labels = Some(BTreeMap::from([
        ("env".to_owned(), "prod".to_owned()),
        ("team".to_owned(), "cr-team".to_owned()),
        ("argocd.argoproj.io/instance".to_owned(), "x".to_owned()),
    ]));
    let operator = OperatorConfig {
        excluded_labels: vec!["argocd.argoproj.io/*".to_owned()],
        ..OperatorConfig::default()
    };
    let c = build(&cr, &operator).unwrap();
    let meta = c.workload.template().metadata.as_ref().unwrap();
    assert_eq!(
        json_of(&meta.labels),
        json!({"app.kubernetes.io/instance": "falco", "app.kubernetes.io/name": "falco", "env": "prod", "team": "sec"})
    );
    assert_eq!(meta.annotations.as_ref().unwrap()["note"], "x");
    assert!(
        meta.annotations
            .as_ref()
            .unwrap()
            .contains_key(labels::CONFIG_CHECKSUM_ANNOTATION)
    );
    // CR labels (filtered) on every child; the operator's labels win over them.
    let sa_labels = c.service_account.metadata.labels.as_ref().unwrap();
    assert_eq!(sa_labels["env"], "prod");
    assert!(!sa_labels.contains_key("argocd.argoproj.io/instance"));
}

#[test]
fn children_carry_the_closed_label_set_and_owner_references() {
    let c = built(json!({}));
    let expected_labels = json!({
        "app.kubernetes.io/component": "falco",
        "app.kubernetes.io/instance": "falco",
        "app.kubernetes.io/managed-by": "falco-operator",
        "app.kubernetes.io/name": "falco",
        "instance.falcosecurity.dev/owner-kind": "Falco",
        "instance.falcosecurity.dev/owner-name": "falco",
        "instance.falcosecurity.dev/owner-namespace": "ns-a"
    });
    let owner = json!([{"apiVersion": "instance.falcosecurity.dev/v1alpha1", "kind": "Falco", "name": "falco",
                        "uid": "0000-uid", "controller": true, "blockOwnerDeletion": true}]);
    let Workload::DaemonSet(ds) = &c.workload else {
        panic!()
    };
    for meta in [
        &c.service_account.metadata,
        &c.role.metadata,
        &c.role_binding.metadata,
        &c.service.metadata,
        &c.config_map.metadata,
        &ds.metadata,
    ] {
        assert_eq!(json_of(&meta.labels), expected_labels, "{:?}", meta.name);
        assert_eq!(json_of(&meta.owner_references), owner);
        assert_eq!(meta.namespace.as_deref(), Some("ns-a"));
    }
    for meta in [&c.cluster_role.metadata, &c.cluster_role_binding.metadata] {
        assert_eq!(json_of(&meta.labels), expected_labels);
        assert_eq!(
            meta.owner_references, None,
            "cluster-scoped: no ownerReference"
        );
        assert_eq!(meta.namespace, None);
        assert_eq!(
            meta.name.as_deref(),
            Some("falco-operator:falco:ns-a:falco")
        );
        assert_eq!(
            labels::owner_from_labels(meta.labels.as_ref().unwrap()),
            Some(("Falco", "ns-a", "falco"))
        );
    }
}

#[test]
fn cluster_scoped_names_cannot_collide_across_namespaces() {
    let mut a = falco(json!({}));
    a.metadata.name = Some("a-b".to_owned());
    a.metadata.namespace = Some("c".to_owned());
    let mut b = falco(json!({}));
    b.metadata.name = Some("b-c".to_owned());
    b.metadata.namespace = Some("a".to_owned());
    let name = |f: &Falco| {
        build(f, &OperatorConfig::default())
            .unwrap()
            .cluster_role
            .metadata
            .name
            .unwrap()
    };
    assert_ne!(name(&a), name(&b));
    assert_eq!(name(&a), "falco-operator:falco:c:a-b");
}

#[test]
fn rbac_rules_and_bindings() {
    let c = built(json!({}));
    assert_eq!(
        json_of(&c.cluster_role.rules),
        json!([{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]}])
    );
    assert_eq!(
        json_of(&c.role.rules),
        json!([
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]},
            {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["falco-artifact-index"],
             "verbs": ["list", "watch"]},
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]},
            {"apiGroups": ["artifact.falcosecurity.dev"], "resources": ["configs", "rulesfiles", "plugins"],
             "verbs": ["get"]},
            {"apiGroups": ["artifact.falcosecurity.dev"], "resources": ["nodeartifacts"],
             "verbs": ["get", "create", "patch"]},
            {"apiGroups": ["artifact.falcosecurity.dev"], "resources": ["nodeartifacts/status"],
             "verbs": ["get", "patch"]}
        ])
    );
    let subjects = json!([{"kind": "ServiceAccount", "name": "falco", "namespace": "ns-a"}]);
    assert_eq!(json_of(&c.role_binding.subjects), subjects);
    assert_eq!(
        json_of(&c.role_binding.role_ref),
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "falco"})
    );
    assert_eq!(json_of(&c.cluster_role_binding.subjects), subjects);
    assert_eq!(
        json_of(&c.cluster_role_binding.role_ref),
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "falco-operator:falco:ns-a:falco"})
    );
}

#[test]
fn service_exposes_web() {
    let c = built(json!({}));
    assert_eq!(
        json_of(&c.service.spec),
        json!({"type": "ClusterIP",
               "selector": {"app.kubernetes.io/instance": "falco", "app.kubernetes.io/name": "falco"},
               "ports": [{"name": "web", "port": 8765, "targetPort": 8765, "protocol": "TCP"}]})
    );
}

#[test]
fn strategies_follow_the_spec_and_drop_rolling_update_when_irrelevant() {
    let Workload::DaemonSet(ds) = built(
        json!({"updateStrategy": {"type": "OnDelete", "rollingUpdate": {"maxUnavailable": 2}}}),
    )
    .workload
    else {
        panic!()
    };
    assert_eq!(
        json_of(&ds.spec.update_strategy),
        json!({"type": "OnDelete"})
    );
    let Workload::Deployment(d) =
        built(json!({"type": "Deployment", "strategy": {"type": "Recreate", "rollingUpdate": {"maxSurge": 1}}})).workload
    else {
        panic!()
    };
    assert_eq!(json_of(&d.spec.strategy), json!({"type": "Recreate"}));
}

#[test]
fn invalid_metadata_is_refused() {
    let mut f = falco(json!({}));
    f.metadata.name = Some("x".repeat(64));
    assert!(matches!(
        build(&f, &OperatorConfig::default()),
        Err(crate::Error::NameTooLong { len: 64, .. })
    ));
    let mut f = falco(json!({}));
    f.metadata.uid = None;
    let err = validate(&f).unwrap_err();
    assert_eq!(err.to_string(), "Falco has no metadata.uid");
}

/// The loader container of a kind, as JSON: the golden comparison of item 2.
fn loader_of(spec: Value) -> Value {
    json_of(container(&built(spec), "driver-loader"))
}

fn init_names(c: &FalcoChildren) -> Vec<String> {
    pod_spec(c)
        .init_containers
        .iter()
        .flatten()
        .map(|c| c.name.clone())
        .collect()
}

#[test]
fn kmod_gets_exactly_this_loader_after_the_sidecar() {
    let expected = json!({
        "name": "driver-loader",
        "image": crate::DEFAULT_DRIVER_LOADER_IMAGE,
        "imagePullPolicy": "IfNotPresent",
        "args": [
            "kmod",
            "--version=10.2.0+driver",
            "--falco-config-dir=/etc/falco",
            "--status-file=/run/falco-driver/status.json"
        ],
        "env": [
            {"name": "HOST_ROOT", "value": "/host"},
            {"name": "HOME", "value": "/root"}
        ],
        "securityContext": {"privileged": true},
        "volumeMounts": [
            {"name": "boot-fs", "mountPath": "/host/boot", "readOnly": true},
            {"name": "lib-modules", "mountPath": "/host/lib/modules", "readOnly": true},
            {"name": "usr-src-fs", "mountPath": "/host/usr/src", "readOnly": true},
            {"name": "etc-fs", "mountPath": "/host/etc", "readOnly": true},
            {"name": "proc-fs", "mountPath": "/host/proc", "readOnly": true},
            {"name": "driver-cache", "mountPath": "/root/.falco"},
            {"name": "falco-configs", "mountPath": "/etc/falco/config.d"},
            {"name": "driver-status", "mountPath": "/run/falco-driver"}
        ]
    });
    assert_eq!(loader_of(json!({"driver": {"kind": "kmod"}})), expected);
    let c = built(json!({"driver": {"kind": "kmod"}}));
    assert_eq!(init_names(&c), ["artifact-operator", "driver-loader"]);
    let config = c.config_map.data.as_ref().unwrap()[CONFIG_KEY].clone();
    assert!(config.contains("kind: kmod"), "{config}");
    // The sidecar reads the status the loader writes.
    let sidecar = json_of(container(&c, "artifact-operator"));
    assert!(sidecar["env"].as_array().unwrap().contains(
        &json!({"name": "DRIVER_STATUS_FILE", "value": "/run/falco-driver/status.json"})
    ));
    assert!(sidecar["volumeMounts"].as_array().unwrap().contains(
        &json!({"name": "driver-status", "mountPath": "/run/falco-driver", "readOnly": true})
    ));
    let volumes = json_of(&pod_spec(&c).volumes);
    let volumes = volumes.as_array().unwrap();
    for v in [
        json!({"name": "usr-src-fs", "hostPath": {"path": "/usr/src"}}),
        json!({"name": "driver-cache", "hostPath": {"path": "/var/lib/falco-driver", "type": "DirectoryOrCreate"}}),
        json!({"name": "driver-status", "emptyDir": {}}),
    ] {
        assert!(volumes.contains(&v), "{v} missing");
    }
}

#[test]
fn auto_and_every_spec_setting_reach_the_loader() {
    let spec = json!({"version": "0.43.1", "driver": {
        "kind": "auto",
        "repos": ["https://drivers.example/a", "https://mirror.example/b"],
        "download": true,
        "compile": false,
        "loaderImage": "registry.example/loader:1",
        "httpTimeout": "90s",
        "requireVerified": true,
        "trustedKey": {"secretKeyRef": {"name": "repo-key", "key": "ed25519.pub"}}
    }});
    let loader = loader_of(spec.clone());
    assert_eq!(loader["image"], "registry.example/loader:1");
    assert_eq!(
        loader["args"],
        json!([
            "auto",
            "--version=9.1.0+driver",
            "--falco-config-dir=/etc/falco",
            "--status-file=/run/falco-driver/status.json",
            "--download",
            "--http-timeout=90s",
            "--require-verified=true",
            "--trusted-key=/etc/falco-driver/trusted-key/key"
        ])
    );
    assert_eq!(
        loader["env"],
        json!([
            {"name": "HOST_ROOT", "value": "/host"},
            {"name": "HOME", "value": "/root"},
            {"name": "FALCOCTL_DRIVER_REPOS", "value": "https://drivers.example/a;https://mirror.example/b"}
        ])
    );
    assert!(loader["volumeMounts"].as_array().unwrap().contains(&json!(
        {"name": "driver-trusted-key", "mountPath": "/etc/falco-driver/trusted-key", "readOnly": true}
    )));
    let c = built(spec);
    let volumes = json_of(&pod_spec(&c).volumes);
    assert!(
        volumes
            .as_array()
            .unwrap()
            .contains(&json!({"name": "driver-trusted-key",
        "secret": {"secretName": "repo-key", "items": [{"key": "ed25519.pub", "path": "key"}]}}))
    );
    // auto: the ConfigMap says modern_ebpf, the loader's config.d file says what each node got.
    let config = c.config_map.data.as_ref().unwrap()[CONFIG_KEY].clone();
    assert!(config.contains("kind: modern_ebpf"), "{config}");
    // compile only, insecure transport, a ConfigMap key.
    let loader = loader_of(json!({"driver": {"kind": "kmod", "download": false,
        "insecureSkipVerify": true, "version": "8.0.0+driver",
        "trustedKey": {"configMapKeyRef": {"name": "k", "key": "pub"}}}}));
    let args: Vec<&str> = loader["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(
        args.contains(&"--compile") && !args.contains(&"--download"),
        "{args:?}"
    );
    assert!(args.contains(&"--http-insecure=true"), "{args:?}");
    assert!(args.contains(&"--version=8.0.0+driver"), "{args:?}");
}

#[test]
fn modern_ebpf_or_no_driver_builds_todays_pod_exactly() {
    let today = built(json!({}));
    let modern = built(json!({"driver": {"kind": "modern_ebpf"}}));
    assert_eq!(today, modern);
    assert_eq!(init_names(&today), ["artifact-operator"]);
}

#[test]
fn a_user_can_add_drivers_repo_to_the_loader_through_the_pod_template() {
    let c = built(
        json!({"driver": {"kind": "kmod"}, "podTemplateSpec": {"spec": {
            "containers": [],
            "initContainers": [{"name": "driver-loader",
                "env": [{"name": "DRIVERS_REPO", "value": "https://s3.example/drivers"}]}]
        }}}),
    );
    let loader = container(&c, "driver-loader");
    let env = json_of(&loader.env);
    assert!(
        env.as_array()
            .unwrap()
            .contains(&json!({"name": "DRIVERS_REPO", "value": "https://s3.example/drivers"})),
        "{env}"
    );
    assert!(
        loader.args.as_ref().unwrap()[0] == "kmod",
        "the generated args stay"
    );
    assert_eq!(init_names(&c), ["artifact-operator", "driver-loader"]);
}

#[test]
fn undeliverable_drivers_are_refused_with_a_reason() {
    let cases = [
        (
            json!({"driver": {"kind": "ebpf"}}),
            "LegacyEbpfRemoved",
            "legacy eBPF probe was removed in Falco 0.44",
        ),
        (
            json!({"type": "Deployment", "driver": {"kind": "kmod"}}),
            "DriverNeedsDaemonSet",
            "needs a DaemonSet",
        ),
        (
            json!({"version": "0.99.0", "driver": {"kind": "kmod"}}),
            "DriverVersionUnknown",
            "set spec.driver.version",
        ),
    ];
    for (spec, reason, message) in cases {
        let err = build(&falco(spec.clone()), &OperatorConfig::default()).unwrap_err();
        assert_eq!(err.driver_reason(), Some(reason), "{spec}");
        assert!(err.to_string().contains(message), "{err}");
        assert_eq!(err.category(), "invalid_spec");
    }
    // An explicit version makes an unknown Falco version work.
    let loader = loader_of(
        json!({"version": "0.99.0", "driver": {"kind": "kmod", "version": "11.0.0+driver"}}),
    );
    assert_eq!(loader["args"][1], "--version=11.0.0+driver");
}
