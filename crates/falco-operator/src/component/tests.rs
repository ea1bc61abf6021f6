use super::*;
use falco_api::ComponentSpec;
use serde_json::{Value, json};

fn component(spec: Value) -> Component {
    let mut c = Component::new(
        "comp",
        serde_json::from_value::<ComponentSpec>(spec).expect("spec"),
    );
    c.metadata.namespace = Some("ns-b".to_owned());
    c.metadata.uid = Some("1111-uid".to_owned());
    c
}

fn built(spec: Value) -> ComponentChildren {
    build(&component(spec), &OperatorConfig::default()).expect("build")
}

fn json_of<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).expect("json")
}

fn pod(c: &ComponentChildren) -> &PodSpec {
    c.deployment.spec.template.spec.as_ref().unwrap()
}

#[test]
fn metacollector_defaults() {
    let c = built(json!({"component": {"type": "metacollector"}}));
    let p = pod(&c);
    let main = &p.containers[0];
    assert_eq!(main.name, "metacollector");
    assert_eq!(
        main.image.as_deref(),
        Some("docker.io/falcosecurity/k8s-metacollector:0.1.2")
    );
    assert_eq!(main.command, Some(vec!["/meta-collector".to_owned()]));
    assert_eq!(main.args, Some(vec!["run".to_owned()]));
    assert_eq!(
        json_of(&main.ports),
        json!([
            {"name": "metrics", "containerPort": 8080, "protocol": "TCP"},
            {"name": "health-probe", "containerPort": 8081, "protocol": "TCP"},
            {"name": "broker-grpc", "containerPort": 45000, "protocol": "TCP"}
        ])
    );
    assert_eq!(
        json_of(&main.resources),
        json!({"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "250m", "memory": "256Mi"}})
    );
    assert_eq!(
        json_of(&main.liveness_probe),
        json!({"httpGet": {"path": "/healthz", "port": 8081}, "initialDelaySeconds": 45, "timeoutSeconds": 5,
               "periodSeconds": 15, "failureThreshold": 3, "successThreshold": 1})
    );
    assert_eq!(json_of(&main.readiness_probe)["initialDelaySeconds"], 30);
    assert_eq!(json_of(&main.readiness_probe)["httpGet"]["path"], "/readyz");
    assert_eq!(
        json_of(&main.security_context),
        json!({"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}})
    );
    assert_eq!(
        json_of(&p.security_context),
        json!({"runAsNonRoot": true, "runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000})
    );
    assert!(c.role.is_none());
    let (cr, crb) = c
        .cluster_role
        .as_ref()
        .expect("metacollector has a ClusterRole");
    assert_eq!(
        cr.metadata.name.as_deref(),
        Some("falco-operator:component:ns-b:comp")
    );
    assert_eq!(
        json_of(&cr.rules),
        json!([
            {"apiGroups": ["apps"], "resources": ["daemonsets", "deployments", "replicasets"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": [""], "resources": ["endpoints", "namespaces", "pods", "replicationcontrollers", "services"],
             "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]}
        ])
    );
    assert_eq!(
        json_of(&crb.subjects),
        json!([{"kind": "ServiceAccount", "name": "comp", "namespace": "ns-b"}])
    );
    assert_eq!(
        labels::owner_from_labels(cr.metadata.labels.as_ref().unwrap()),
        Some(("Component", "ns-b", "comp"))
    );
    assert_eq!(
        json_of(&c.service.spec.as_ref().unwrap().ports),
        json!([
            {"name": "metrics", "port": 8080, "targetPort": 8080, "protocol": "TCP"},
            {"name": "health-probe", "port": 8081, "targetPort": 8081, "protocol": "TCP"},
            {"name": "broker-grpc", "port": 45000, "targetPort": 45000, "protocol": "TCP"}
        ])
    );
}

#[test]
fn falcosidekick_defaults() {
    let c = built(json!({"component": {"type": "falcosidekick"}}));
    let main = &pod(&c).containers[0];
    assert_eq!(
        main.image.as_deref(),
        Some("docker.io/falcosecurity/falcosidekick:2.32.0")
    );
    let probe = json!({"httpGet": {"path": "/ping", "port": "http"}, "initialDelaySeconds": 10, "timeoutSeconds": 5,
                       "periodSeconds": 5, "failureThreshold": 3, "successThreshold": 1});
    assert_eq!(json_of(&main.liveness_probe), probe);
    assert_eq!(json_of(&main.readiness_probe), probe);
    assert_eq!(
        json_of(&pod(&c).security_context),
        json!({"runAsUser": 1234, "runAsGroup": 1234, "fsGroup": 1234})
    );
    let (role, binding) = c.role.as_ref().expect("falcosidekick has a Role");
    assert_eq!(
        json_of(&role.rules),
        json!([{"apiGroups": [""], "resources": ["endpoints"], "verbs": ["get"]}])
    );
    assert_eq!(binding.role_ref.name, "comp");
    assert!(c.cluster_role.is_none());
    assert_eq!(
        json_of(&c.service.spec.as_ref().unwrap().ports),
        json!([{"name": "http", "port": 2801, "targetPort": "http", "protocol": "TCP"}])
    );
}

#[test]
fn falcosidekick_ui_defaults() {
    let c = built(json!({"component": {"type": "falcosidekick-ui", "version": "2.3.0"}}));
    let p = pod(&c);
    let main = &p.containers[0];
    assert_eq!(main.name, "falcosidekick-ui");
    assert_eq!(
        main.image.as_deref(),
        Some("docker.io/falcosecurity/falcosidekick-ui:2.3.0")
    );
    assert_eq!(
        main.args,
        Some(vec![
            "-r".to_owned(),
            "falcosidekick-ui-redis:6379".to_owned()
        ])
    );
    assert_eq!(
        json_of(&main.liveness_probe)["httpGet"],
        json!({"path": "/api/v1/healthz", "port": "http"})
    );
    let init = &p.init_containers.as_ref().unwrap()[0];
    assert_eq!(init.name, "wait-redis");
    assert_eq!(
        init.image.as_deref(),
        Some("docker.io/redis/redis-stack:7.2.0-v11")
    );
    assert_eq!(
        json_of(&init.env),
        json!([{"name": "REDIS_ADDR", "value": "falcosidekick-ui-redis:6379"}])
    );
    assert!(
        c.role.is_none() && c.cluster_role.is_none(),
        "ServiceAccount only"
    );
    assert_eq!(
        resolve_version(&component(
            json!({"component": {"type": "falcosidekick-ui"}})
        )),
        "2.2.0"
    );
}

#[test]
fn deployment_replicas_strategy_labels_and_owner() {
    let mut cr = component(
        json!({"component": {"type": "falcosidekick"}, "replicas": 2,
        "podTemplateSpec": {"metadata": {"labels": {"team": "sec"}},
                            "spec": {"containers": [{"name": "falcosidekick", "image": "my/sidekick:9.9"}]}}}),
    );
    cr.metadata.labels = Some(BTreeMap::from([("env".to_owned(), "prod".to_owned())]));
    let c = build(&cr, &OperatorConfig::default()).unwrap();
    let spec = &c.deployment.spec;
    assert_eq!(spec.replicas, Some(2));
    assert_eq!(json_of(&spec.strategy), json!({"type": "RollingUpdate"}));
    assert_eq!(
        json_of(&spec.template.metadata.as_ref().unwrap().labels),
        json!({"app.kubernetes.io/instance": "comp", "app.kubernetes.io/name": "comp", "env": "prod", "team": "sec"})
    );
    assert_eq!(
        spec.template.spec.as_ref().unwrap().containers[0]
            .image
            .as_deref(),
        Some("my/sidekick:9.9")
    );
    assert_eq!(resolve_version(&cr), "9.9");
    let labels = c.deployment.metadata.labels.as_ref().unwrap();
    assert_eq!(labels["app.kubernetes.io/component"], "falcosidekick");
    assert_eq!(labels["instance.falcosecurity.dev/owner-kind"], "Component");
    assert_eq!(labels["env"], "prod");
    assert_eq!(
        json_of(&c.deployment.metadata.owner_references),
        json!([{"apiVersion": "instance.falcosecurity.dev/v1alpha1", "kind": "Component", "name": "comp",
                "uid": "1111-uid", "controller": true, "blockOwnerDeletion": true}])
    );
    // The CRD default (replicas: 1) is what applies when the field is absent.
    let c = built(json!({"component": {"type": "falcosidekick"}}));
    assert_eq!(c.deployment.spec.replicas, Some(1));
}
