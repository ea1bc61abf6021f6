//! The Component controller's pure steps: a `Component` CR to its children (a Deployment, its
//! ServiceAccount, per-type RBAC and Service).
//!
//! Per-type defaults (upstream §2.3; where upstream's docs and Go types disagree, the Go types win):
//!
//! | setting | metacollector | falcosidekick | falcosidekick-ui |
//! |---|---|---|---|
//! | image | `docker.io/falcosecurity/k8s-metacollector:0.1.2` | `docker.io/falcosecurity/falcosidekick:2.32.0` | `docker.io/falcosecurity/falcosidekick-ui:2.2.0` |
//! | command / args | `/meta-collector` / `run` | — | `-r falcosidekick-ui-redis:6379` |
//! | ports (Service) | metrics 8080, health-probe 8081, broker-grpc 45000 | http 2801 | http 2802 |
//! | resources | req 100m/128Mi, lim 250m/256Mi | — | — |
//! | probes | `/healthz` 45 s, `/readyz` 30 s on 8081 | `/ping` 10 s on `http` | `/api/v1/healthz` 10 s on `http` |
//! | security | non-root 1000, no privilege escalation, drop ALL | uid/gid/fsGroup 1234 | uid/gid/fsGroup 1234 |
//! | RBAC | ClusterRole (workloads, pods, services, endpoints(lices), namespaces: get/list/watch) | Role (endpoints: get) | ServiceAccount only |
//! | replicas | `spec.replicas` (the CRD defaults it to 1; upstream's built-in 2 never applied) | | |
//!
//! falcosidekick-ui also gets upstream's `wait-redis` init container; the operator does not deploy Redis.

use std::collections::BTreeMap;

use falco_api::{Component, ComponentType};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, SecurityContext, Service, ServiceAccount, ServicePort, ServiceSpec,
};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource;

use crate::meta::{self, ProbeTiming, env, http_probe, rule};
use crate::{ObjectKey, OperatorConfig, Result, labels, merge};

/// Everything one `Component` CR owns, ready for Server-Side Apply.
#[derive(Clone, Debug, PartialEq)]
pub struct ComponentChildren {
    /// The pods' identity.
    pub service_account: ServiceAccount,
    /// Namespaced permissions, for the types that need them (falcosidekick).
    pub role: Option<(Role, RoleBinding)>,
    /// Cluster permissions, for the types that need them (metacollector).
    pub cluster_role: Option<(ClusterRole, ClusterRoleBinding)>,
    /// The Service in front of the pods.
    pub service: Service,
    /// The workload (always a Deployment).
    pub deployment: Deployment,
}

/// Built-in defaults of one component type.
struct Defaults {
    image_repository: &'static str,
    tag: &'static str,
    container: &'static str,
}

fn defaults(kind: ComponentType) -> Defaults {
    match kind {
        ComponentType::Metacollector => Defaults {
            image_repository: "docker.io/falcosecurity/k8s-metacollector",
            tag: "0.1.2",
            container: "metacollector",
        },
        ComponentType::Falcosidekick => Defaults {
            image_repository: "docker.io/falcosecurity/falcosidekick",
            tag: "2.32.0",
            container: "falcosidekick",
        },
        ComponentType::FalcosidekickUi => Defaults {
            image_repository: "docker.io/falcosecurity/falcosidekick-ui",
            tag: "2.2.0",
            container: "falcosidekick-ui",
        },
    }
}

/// The version in use: the tag of the image the pod template sets on the main container, then
/// `spec.component.version`, then the type's built-in tag.
pub fn resolve_version(component: &Component) -> String {
    let d = defaults(component.spec.component.r#type);
    component
        .spec
        .pod_template_spec
        .as_ref()
        .and_then(|t| t.spec.as_ref())
        .and_then(|s| s.containers.iter().find(|c| c.name == d.container))
        .and_then(|c| c.image.as_deref())
        .and_then(meta::image_tag)
        .or(component.spec.component.version.as_deref())
        .unwrap_or(d.tag)
        .to_owned()
}

/// The validate step of a Component.
pub fn validate(component: &Component) -> Result<()> {
    ObjectKey::of(component).map(drop)
}

/// The build step: every child of `component`. Pure.
pub fn build(component: &Component, operator: &OperatorConfig) -> Result<ComponentChildren> {
    let key = ObjectKey::of(component)?;
    let kind = component.spec.component.r#type;
    let d = defaults(kind);
    let owner = meta::owner_reference(
        &Component::api_version(&()),
        &Component::kind(&()),
        &key.name,
        &key.uid,
    );
    let cr_labels = labels::filter(
        component
            .metadata
            .labels
            .as_ref()
            .unwrap_or(&BTreeMap::new()),
        &operator.excluded_labels,
    );
    let managed = labels::managed("Component", &key.namespace, &key.name, kind.as_str());
    let child_labels = labels::layered([&cr_labels, &managed]);
    let meta = meta::namespaced_meta(&key, &child_labels, &owner);

    let role = match kind {
        ComponentType::Falcosidekick => Some(meta::role(
            &meta,
            &key,
            vec![rule(&[""], &["endpoints"], &["get"])],
        )),
        ComponentType::Metacollector | ComponentType::FalcosidekickUi => None,
    };
    let cluster_role = match kind {
        ComponentType::Metacollector => Some(meta::cluster_role(
            &meta::cluster_scoped_name("component", &key),
            &child_labels,
            &key,
            metacollector_rules(),
        )),
        ComponentType::Falcosidekick | ComponentType::FalcosidekickUi => None,
    };

    let selector = labels::selector(&key.name);
    let version = component.spec.component.version.as_deref().unwrap_or(d.tag);
    let base = PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels::layered([&cr_labels, &selector])),
            ..ObjectMeta::default()
        }),
        spec: Some(pod_spec(
            kind,
            &key,
            &format!("{}:{version}", d.image_repository),
        )),
    };
    let mut template = match &component.spec.pod_template_spec {
        Some(user) => merge::merge_pod_template(&base, user)?,
        None => base,
    };
    template
        .metadata
        .get_or_insert_with(ObjectMeta::default)
        .labels
        .get_or_insert_with(BTreeMap::new)
        .extend(selector.clone());

    let mut strategy = component
        .spec
        .strategy
        .clone()
        .unwrap_or_else(|| DeploymentStrategy {
            type_: Some("RollingUpdate".to_owned()),
            ..DeploymentStrategy::default()
        });
    if strategy.type_.as_deref() == Some("Recreate") {
        strategy.rolling_update = None;
    }
    let deployment = Deployment {
        metadata: meta.clone(),
        spec: DeploymentSpec {
            replicas: Some(component.spec.replicas.unwrap_or(1)),
            selector: LabelSelector {
                match_labels: Some(selector.clone()),
                ..LabelSelector::default()
            },
            template,
            strategy: Some(strategy),
            ..DeploymentSpec::default()
        },
        ..Deployment::default()
    };

    Ok(ComponentChildren {
        service_account: meta::service_account(&meta),
        role,
        cluster_role,
        service: Service {
            metadata: meta,
            spec: Some(ServiceSpec {
                type_: Some("ClusterIP".to_owned()),
                selector: Some(selector),
                ports: Some(service_ports(kind)),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        },
        deployment,
    })
}

fn metacollector_rules() -> Vec<PolicyRule> {
    let read = ["get", "list", "watch"];
    vec![
        rule(
            &["apps"],
            &["daemonsets", "deployments", "replicasets"],
            &read,
        ),
        rule(
            &[""],
            &[
                "endpoints",
                "namespaces",
                "pods",
                "replicationcontrollers",
                "services",
            ],
            &read,
        ),
        rule(&["discovery.k8s.io"], &["endpointslices"], &read),
    ]
}

/// (name, port) of each container port; the Service exposes the same ports.
fn ports(kind: ComponentType) -> &'static [(&'static str, i32)] {
    match kind {
        ComponentType::Metacollector => &[
            ("metrics", 8080),
            ("health-probe", 8081),
            ("broker-grpc", 45000),
        ],
        ComponentType::Falcosidekick => &[("http", 2801)],
        ComponentType::FalcosidekickUi => &[("http", 2802)],
    }
}

fn service_ports(kind: ComponentType) -> Vec<ServicePort> {
    ports(kind)
        .iter()
        .map(|&(name, port)| ServicePort {
            name: Some(name.to_owned()),
            port,
            // Metacollector targets the number, the sidekicks the port name (as upstream).
            target_port: Some(match kind {
                ComponentType::Metacollector => IntOrString::Int(port),
                ComponentType::Falcosidekick | ComponentType::FalcosidekickUi => {
                    IntOrString::String(name.to_owned())
                }
            }),
            protocol: Some("TCP".to_owned()),
            ..ServicePort::default()
        })
        .collect()
}

fn pod_security(id: i64, non_root: bool) -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: non_root.then_some(true),
        run_as_user: Some(id),
        run_as_group: Some(id),
        fs_group: Some(id),
        ..PodSecurityContext::default()
    }
}

fn pod_spec(kind: ComponentType, key: &ObjectKey, image: &str) -> PodSpec {
    let d = defaults(kind);
    let container = Container {
        name: d.container.to_owned(),
        image: Some(image.to_owned()),
        image_pull_policy: Some("IfNotPresent".to_owned()),
        ports: Some(
            ports(kind)
                .iter()
                .map(|&(name, port)| ContainerPort {
                    name: Some(name.to_owned()),
                    container_port: port,
                    protocol: Some("TCP".to_owned()),
                    ..ContainerPort::default()
                })
                .collect(),
        ),
        ..Container::default()
    };
    let sidekick_probe = |path: &str| -> Probe {
        http_probe(
            path,
            IntOrString::String("http".to_owned()),
            ProbeTiming {
                initial_delay: 10,
                timeout: 5,
                period: 5,
                failure_threshold: 3,
            },
        )
    };
    let quantities = |cpu: &str, memory: &str| {
        BTreeMap::from([
            ("cpu".to_owned(), Quantity(cpu.to_owned())),
            ("memory".to_owned(), Quantity(memory.to_owned())),
        ])
    };
    let (container, security, init) = match kind {
        ComponentType::Metacollector => {
            let timing = |initial_delay| ProbeTiming {
                initial_delay,
                timeout: 5,
                period: 15,
                failure_threshold: 3,
            };
            let container = Container {
                command: Some(vec!["/meta-collector".to_owned()]),
                args: Some(vec!["run".to_owned()]),
                resources: Some(ResourceRequirements {
                    requests: Some(quantities("100m", "128Mi")),
                    limits: Some(quantities("250m", "256Mi")),
                    ..ResourceRequirements::default()
                }),
                liveness_probe: Some(http_probe("/healthz", IntOrString::Int(8081), timing(45))),
                readiness_probe: Some(http_probe("/readyz", IntOrString::Int(8081), timing(30))),
                security_context: Some(SecurityContext {
                    allow_privilege_escalation: Some(false),
                    capabilities: Some(Capabilities {
                        drop: Some(vec!["ALL".to_owned()]),
                        ..Capabilities::default()
                    }),
                    ..SecurityContext::default()
                }),
                ..container
            };
            (container, pod_security(1000, true), None)
        }
        ComponentType::Falcosidekick => {
            let container = Container {
                liveness_probe: Some(sidekick_probe("/ping")),
                readiness_probe: Some(sidekick_probe("/ping")),
                ..container
            };
            (container, pod_security(1234, false), None)
        }
        ComponentType::FalcosidekickUi => {
            let container = Container {
                args: Some(vec![
                    "-r".to_owned(),
                    "falcosidekick-ui-redis:6379".to_owned(),
                ]),
                liveness_probe: Some(sidekick_probe("/api/v1/healthz")),
                readiness_probe: Some(sidekick_probe("/api/v1/healthz")),
                ..container
            };
            (
                container,
                pod_security(1234, false),
                Some(vec![wait_redis()]),
            )
        }
    };
    PodSpec {
        service_account_name: Some(key.name.clone()),
        security_context: Some(security),
        init_containers: init,
        containers: vec![container],
        ..PodSpec::default()
    }
}

/// falcosidekick-ui's init container: waits until Redis answers `PING`.
fn wait_redis() -> Container {
    Container {
        name: "wait-redis".to_owned(),
        image: Some("docker.io/redis/redis-stack:7.2.0-v11".to_owned()),
        image_pull_policy: Some("IfNotPresent".to_owned()),
        command: Some(vec![
            "sh".to_owned(),
            "-c".to_owned(),
            "until [ \"$(redis-cli -h \"${REDIS_ADDR%%:*}\" -p \"${REDIS_ADDR##*:}\" ping)\" = \"PONG\" ]; do \
             echo waiting for redis at $REDIS_ADDR; sleep 3; done"
                .to_owned(),
        ]),
        env: Some(vec![env("REDIS_ADDR", "falcosidekick-ui-redis:6379")]),
        ..Container::default()
    }
}

#[cfg(test)]
mod tests;
