//! A `Falco` CR to its children: ServiceAccount, Role, RoleBinding, ClusterRole,
//! ClusterRoleBinding, Service, ConfigMap and the DaemonSet or Deployment.
//!
//! The workload is built in three layers: the generated pod template (defaults below), then the
//! user's `spec.podTemplateSpec` merged over it ([`crate::merge`]), then what the operator must
//! own whatever the user says (selector labels, the config checksum).
//!
//! Defaults (seed first, completed from upstream v0.4.1):
//!
//! | setting | value |
//! |---|---|
//! | image | `docker.io/falcosecurity/falco:<version>` ([`resolve_version`]), `IfNotPresent`, args `/usr/bin/falco` |
//! | engine | `modern_ebpf` (DaemonSet), `nodriver` (Deployment) |
//! | ports | `web` 8765/TCP (webserver, `/healthz`, Prometheus `/metrics`) |
//! | probes | liveness `/healthz` delay 60 s, readiness `/healthz` delay 30 s (timeout 5, period 15, failures 3) |
//! | security | `privileged: true` |
//! | resources | requests 100m / 512Mi, limits 1000m / 1024Mi |
//! | tolerations | control-plane and master `NoSchedule` |
//! | host mounts | `/proc`, `/sys/module`, `/dev`, `/etc`, `/boot`, `/lib/modules`, `/usr`; runtime sockets (DaemonSet only) |
//! | sidecar | `artifact-operator`, native (init container, `restartPolicy: Always`), startup and readiness on `/readyz`, liveness on `/healthz`, port 8081 |
//! | driver loader | `spec.driver.kind` kmod or auto only: init container `driver-loader` after the sidecar ([`driver_loader`]) |

use std::collections::BTreeMap;

use falco_api::{DriverKind, DriverSpec, Falco, WorkloadType};
use k8s_openapi::api::apps::v1::{
    DaemonSet, DaemonSetSpec, DaemonSetUpdateStrategy, Deployment, DeploymentSpec,
    DeploymentStrategy,
};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
    HostPathVolumeSource, KeyToPath, PodSpec, PodTemplateSpec, ResourceRequirements,
    SecretVolumeSource, SecurityContext, Service, ServiceAccount, ServicePort, ServiceSpec,
    Toleration, Volume, VolumeMount,
};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource;
use sha2::{Digest, Sha256};

use super::config::{self, WEBSERVER_PORT};
use super::{
    ARTIFACT_OPERATOR_CONTAINER, ARTIFACT_OPERATOR_PROBE_PORT, CONFIG_KEY, DEFAULT_FALCO_VERSION,
    FALCO_CONTAINER, FALCO_IMAGE_REPOSITORY,
};
use crate::meta::{self, ProbeTiming, env, env_field, http_probe, rule};
use crate::{Error, ObjectKey, OperatorConfig, Result, labels, merge};

/// Everything one `Falco` CR owns, ready for Server-Side Apply.
///
/// Destructure it without `..` in the apply step, so a new child kind is a compile error there.
#[derive(Clone, Debug, PartialEq)]
pub struct FalcoChildren {
    /// The pods' identity.
    pub service_account: ServiceAccount,
    /// Namespaced permissions (artifact CRs, ConfigMaps, Secrets, Events).
    pub role: Role,
    /// ServiceAccount → Role.
    pub role_binding: RoleBinding,
    /// Cluster permissions (nodes); found by the owner labels, deleted by the finalizer.
    pub cluster_role: ClusterRole,
    /// ServiceAccount → ClusterRole.
    pub cluster_role_binding: ClusterRoleBinding,
    /// `web` 8765 in front of the pods.
    pub service: Service,
    /// `falco.yaml`.
    pub config_map: ConfigMap,
    /// The DaemonSet or the Deployment.
    pub workload: Workload,
}

/// The Falco workload: exactly one of the two kinds. The apply step deletes the other kind.
#[derive(Clone, Debug, PartialEq)]
pub enum Workload {
    /// One pod per node (the default).
    DaemonSet(DaemonSet),
    /// `spec.replicas` pods, plugins only.
    Deployment(Deployment),
}

impl Workload {
    /// The kind of this workload.
    pub fn kind(&self) -> WorkloadType {
        match self {
            Self::DaemonSet(_) => WorkloadType::DaemonSet,
            Self::Deployment(_) => WorkloadType::Deployment,
        }
    }

    /// The pod template.
    pub fn template(&self) -> &PodTemplateSpec {
        match self {
            Self::DaemonSet(ds) => &ds.spec.template,
            Self::Deployment(d) => &d.spec.template,
        }
    }
}

/// The validate step: refuses what the schema cannot (a missing name/namespace/uid, a name too
/// long for a label value, a `spec.config` that is not a mapping, a driver the operator cannot
/// deliver: [`driver_plan`]).
pub fn validate(falco: &Falco) -> Result<()> {
    ObjectKey::of(falco)?;
    config::validate_overlay(falco.spec.config.as_ref())?;
    driver_plan(falco).map(|_| ())
}

/// What `spec.driver` asks the pods to do, decided once per build.
#[derive(Clone, Debug, PartialEq)]
pub struct DriverPlan<'a> {
    /// `kmod` or `auto`.
    pub kind: DriverKind,
    /// The driver version the loader fetches.
    pub version: String,
    /// The spec it comes from.
    pub spec: &'a DriverSpec,
}

/// The driver loader the pods run, if any: `None` without `spec.driver` or with `modern_ebpf`
/// (today's pods exactly). Refuses `ebpf` (removed in Falco 0.44), a loader in a Deployment, and
/// a Falco version whose driver version is unknown when `spec.driver.version` is absent.
pub fn driver_plan(falco: &Falco) -> Result<Option<DriverPlan<'_>>> {
    let Some(spec) = falco.spec.driver.as_ref() else {
        return Ok(None);
    };
    match spec.kind {
        DriverKind::ModernEbpf => return Ok(None),
        DriverKind::Ebpf => return Err(Error::LegacyEbpf),
        DriverKind::Kmod | DriverKind::Auto => {}
    }
    if falco.spec.workload_type() == WorkloadType::Deployment {
        return Err(Error::DriverNeedsDaemonSet {
            kind: spec.kind.as_str(),
        });
    }
    let version = match &spec.version {
        Some(v) => v.clone(),
        None => {
            let falco_version = resolve_version(falco);
            falco_core::driver::versions::driver_version_for(&falco_version)
                .map(str::to_owned)
                .ok_or_else(|| Error::DriverVersionUnknown {
                    falco: falco_version,
                    known: falco_core::driver::versions::known_falco_versions()
                        .take(5)
                        .collect::<Vec<_>>()
                        .join(", "),
                })?
        }
    };
    Ok(Some(DriverPlan {
        kind: spec.kind,
        version,
        spec,
    }))
}

/// The Falco version in use, in upstream's order (§2.2.6): the tag of the image the pod template
/// sets on the `falco` container, then `spec.version`, then [`DEFAULT_FALCO_VERSION`]. Unlike
/// upstream, a registry port is not mistaken for a tag.
pub fn resolve_version(falco: &Falco) -> String {
    template_image(falco)
        .and_then(meta::image_tag)
        .or(falco.spec.version.as_deref())
        .unwrap_or(DEFAULT_FALCO_VERSION)
        .to_owned()
}

fn template_image(falco: &Falco) -> Option<&str> {
    falco
        .spec
        .pod_template_spec
        .as_ref()?
        .spec
        .as_ref()?
        .containers
        .iter()
        .find(|c| c.name == FALCO_CONTAINER)?
        .image
        .as_deref()
}

/// The build step: every child of `falco`. Pure: the same CR and config always give the same objects.
pub fn build(falco: &Falco, operator: &OperatorConfig) -> Result<FalcoChildren> {
    validate(falco)?;
    let key = ObjectKey::of(falco)?;
    let workload_type = falco.spec.workload_type();
    let owner = meta::owner_reference(
        &Falco::api_version(&()),
        &Falco::kind(&()),
        &key.name,
        &key.uid,
    );
    let cr_labels = labels::filter(
        falco.metadata.labels.as_ref().unwrap_or(&BTreeMap::new()),
        &operator.excluded_labels,
    );
    let managed = labels::managed("Falco", &key.namespace, &key.name, FALCO_CONTAINER);
    let child_labels = labels::layered([&cr_labels, &managed]);
    let meta = meta::namespaced_meta(&key, &child_labels, &owner);

    let (role, role_binding) = meta::role(&meta, &key, role_rules());
    let cluster_name = meta::cluster_scoped_name("falco", &key);
    let (cluster_role, cluster_role_binding) = meta::cluster_role(
        &cluster_name,
        &child_labels,
        &key,
        vec![rule(&[""], &["nodes"], &["get", "list", "watch"])],
    );

    let driver = driver_plan(falco)?;
    let falco_yaml = config::render_with_driver(
        workload_type,
        driver.as_ref().map(|d| d.kind),
        falco.spec.config.as_ref(),
    )?;
    let config_map = ConfigMap {
        metadata: meta.clone(),
        data: Some(BTreeMap::from([(
            CONFIG_KEY.to_owned(),
            falco_yaml.clone(),
        )])),
        ..ConfigMap::default()
    };

    let template = pod_template(
        falco,
        &key,
        operator,
        workload_type,
        &cr_labels,
        &falco_yaml,
        driver.as_ref(),
    )?;
    let selector = LabelSelector {
        match_labels: Some(labels::selector(&key.name)),
        ..LabelSelector::default()
    };
    let workload = match workload_type {
        WorkloadType::DaemonSet => Workload::DaemonSet(DaemonSet {
            metadata: meta.clone(),
            spec: DaemonSetSpec {
                selector,
                template,
                update_strategy: Some(daemonset_strategy(falco.spec.update_strategy.clone())),
                ..DaemonSetSpec::default()
            },
            ..DaemonSet::default()
        }),
        WorkloadType::Deployment => Workload::Deployment(Deployment {
            metadata: meta.clone(),
            spec: DeploymentSpec {
                replicas: Some(falco.spec.replicas.unwrap_or(1)),
                selector,
                template,
                strategy: Some(deployment_strategy(falco.spec.strategy.clone())),
                ..DeploymentSpec::default()
            },
            ..Deployment::default()
        }),
    };

    Ok(FalcoChildren {
        service_account: meta::service_account(&meta),
        role,
        role_binding,
        cluster_role,
        cluster_role_binding,
        service: service(&meta, &key),
        config_map,
        workload,
    })
}

/// Rules of the namespaced Role: what the artifact-operator sidecar reads and writes. It watches
/// only the artifact index (list/watch limited to that one name) and reads by name what the index
/// names: the shared artifacts (their status is written by this operator alone, aggregated from
/// the per-node records) and ConfigMaps; it reads Secrets by name, and writes its own node's
/// `NodeArtifacts`.
fn role_rules() -> Vec<PolicyRule> {
    let artifact = falco_api::ARTIFACT_GROUP;
    let mut index = rule(&[""], &["configmaps"], &["list", "watch"]);
    index.resource_names = Some(vec![falco_api::index::INDEX_CONFIG_MAP.to_owned()]);
    vec![
        rule(&[""], &["configmaps"], &["get"]),
        index,
        rule(&[""], &["secrets"], &["get"]),
        rule(&[artifact], &["configs", "rulesfiles", "plugins"], &["get"]),
        rule(&[artifact], &["nodeartifacts"], &["get", "create", "patch"]),
        rule(&[artifact], &["nodeartifacts/status"], &["get", "patch"]),
    ]
}

fn service(meta: &ObjectMeta, key: &ObjectKey) -> Service {
    Service {
        metadata: meta.clone(),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_owned()),
            selector: Some(labels::selector(&key.name)),
            ports: Some(vec![ServicePort {
                name: Some("web".to_owned()),
                port: WEBSERVER_PORT,
                target_port: Some(IntOrString::Int(WEBSERVER_PORT)),
                protocol: Some("TCP".to_owned()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

fn daemonset_strategy(user: Option<DaemonSetUpdateStrategy>) -> DaemonSetUpdateStrategy {
    let mut strategy = user.unwrap_or_else(|| DaemonSetUpdateStrategy {
        type_: Some("RollingUpdate".to_owned()),
        ..DaemonSetUpdateStrategy::default()
    });
    if strategy.type_.as_deref() == Some("OnDelete") {
        strategy.rolling_update = None;
    }
    strategy
}

fn deployment_strategy(user: Option<DeploymentStrategy>) -> DeploymentStrategy {
    let mut strategy = user.unwrap_or_else(|| DeploymentStrategy {
        type_: Some("RollingUpdate".to_owned()),
        ..DeploymentStrategy::default()
    });
    if strategy.type_.as_deref() == Some("Recreate") {
        strategy.rolling_update = None;
    }
    strategy
}

/// The pod template: generated defaults, then the user's template, then the operator's must-haves.
fn pod_template(
    falco: &Falco,
    key: &ObjectKey,
    operator: &OperatorConfig,
    workload: WorkloadType,
    cr_labels: &BTreeMap<String, String>,
    falco_yaml: &str,
    driver: Option<&DriverPlan<'_>>,
) -> Result<PodTemplateSpec> {
    let selector = labels::selector(&key.name);
    let mut init_containers = vec![artifact_operator(&operator.artifact_operator_image)];
    let mut volumes = volumes(&key.name, workload);
    if let Some(plan) = driver {
        add_driver_status(&mut init_containers[0]);
        init_containers.push(driver_loader(plan, &operator.driver_loader_image));
        volumes.extend(driver_volumes(plan.spec));
    }
    let base = PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels::layered([cr_labels, &selector])),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            service_account_name: Some(key.name.clone()),
            tolerations: Some(tolerations()),
            init_containers: Some(init_containers),
            containers: vec![falco_container(falco, workload)],
            volumes: Some(volumes),
            ..PodSpec::default()
        }),
    };
    let mut template = match &falco.spec.pod_template_spec {
        Some(user) => merge::merge_pod_template(&base, user)?,
        None => base,
    };
    let metadata = template.metadata.get_or_insert_with(ObjectMeta::default);
    // Selector labels always win: the workload would not own its pods otherwise.
    metadata
        .labels
        .get_or_insert_with(BTreeMap::new)
        .extend(selector);
    metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(
            labels::CONFIG_CHECKSUM_ANNOTATION.to_owned(),
            checksum(falco_yaml),
        );
    Ok(template)
}

/// SHA-256 of the ConfigMap's data, hex.
fn checksum(falco_yaml: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(CONFIG_KEY.as_bytes());
    hasher.update([0]);
    hasher.update(falco_yaml.as_bytes());
    hex::encode(hasher.finalize())
}

fn tolerations() -> Vec<Toleration> {
    [
        "node-role.kubernetes.io/control-plane",
        "node-role.kubernetes.io/master",
    ]
    .into_iter()
    .map(|key| Toleration {
        key: Some(key.to_owned()),
        operator: Some("Exists".to_owned()),
        effect: Some("NoSchedule".to_owned()),
        ..Toleration::default()
    })
    .collect()
}

fn quantities(cpu: &str, memory: &str) -> BTreeMap<String, Quantity> {
    BTreeMap::from([
        ("cpu".to_owned(), Quantity(cpu.to_owned())),
        ("memory".to_owned(), Quantity(memory.to_owned())),
    ])
}

fn falco_container(falco: &Falco, workload: WorkloadType) -> Container {
    // The image the pod template sets wins in the merge; otherwise `spec.version` or the default.
    let version = falco
        .spec
        .version
        .as_deref()
        .unwrap_or(DEFAULT_FALCO_VERSION);
    let probe = |initial_delay| {
        http_probe(
            "/healthz",
            IntOrString::Int(WEBSERVER_PORT),
            ProbeTiming {
                initial_delay,
                timeout: 5,
                period: 15,
                failure_threshold: 3,
            },
        )
    };
    Container {
        name: FALCO_CONTAINER.to_owned(),
        image: Some(format!("{FALCO_IMAGE_REPOSITORY}:{version}")),
        image_pull_policy: Some("IfNotPresent".to_owned()),
        args: Some(vec!["/usr/bin/falco".to_owned()]),
        ports: Some(vec![ContainerPort {
            name: Some("web".to_owned()),
            container_port: WEBSERVER_PORT,
            protocol: Some("TCP".to_owned()),
            ..ContainerPort::default()
        }]),
        env: Some(vec![
            env("HOST_ROOT", "/host"),
            env_field("FALCO_HOSTNAME", "spec.nodeName"),
            env_field("FALCO_K8S_NODE_NAME", "spec.nodeName"),
        ]),
        resources: Some(ResourceRequirements {
            requests: Some(quantities("100m", "512Mi")),
            limits: Some(quantities("1000m", "1024Mi")),
            ..ResourceRequirements::default()
        }),
        liveness_probe: Some(probe(60)),
        readiness_probe: Some(probe(30)),
        security_context: Some(SecurityContext {
            privileged: Some(true),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(falco_mounts(workload)),
        ..Container::default()
    }
}

/// The three emptyDirs the sidecar fills and Falco reads: (volume, mount path).
const SHARED: [(&str, &str); 3] = [
    ("falco-configs", "/etc/falco/config.d"),
    ("falco-rulesfiles", "/etc/falco/rules.d"),
    ("falco-plugins", "/usr/share/falco/plugins"),
];

/// Host paths: (volume, host path, mount path, read-only).
const HOST: [(&str, &str, &str, bool); 7] = [
    ("boot-fs", "/boot", "/host/boot", true),
    ("lib-modules", "/lib/modules", "/host/lib/modules", false),
    ("usr-fs", "/usr", "/host/usr", true),
    ("proc-fs", "/proc", "/host/proc", false),
    ("etc-fs", "/etc", "/host/etc", true),
    ("dev-fs", "/dev", "/host/dev", true),
    ("sys-fs", "/sys/module", "/sys/module", false),
];

/// Container-runtime sockets (CRI: containerd, CRI-O, k3s; Docker), DaemonSet only.
const RUNTIME_SOCKETS: [(&str, &str, &str); 5] = [
    ("docker-socket", "/var/run", "/host/var/run"),
    (
        "containerd-socket",
        "/run/containerd",
        "/host/run/containerd",
    ),
    ("crio-socket", "/run/crio", "/host/run/crio"),
    (
        "host-containerd-socket",
        "/run/host-containerd",
        "/host/run/host-containerd",
    ),
    (
        "k3s-containerd-socket",
        "/run/k3s/containerd",
        "/host/run/k3s/containerd",
    ),
];

const ROOT_FALCO_FS: (&str, &str) = ("root-falco-fs", "/root/.falco");
const CONFIG_VOLUME: &str = "falco-config-default";

fn host_paths(
    workload: WorkloadType,
) -> impl Iterator<Item = (&'static str, &'static str, &'static str, bool)> {
    let sockets = match workload {
        WorkloadType::DaemonSet => &RUNTIME_SOCKETS[..],
        WorkloadType::Deployment => &[],
    };
    HOST.into_iter().chain(
        sockets
            .iter()
            .map(|&(name, host, mount)| (name, host, mount, false)),
    )
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    }
}

fn falco_mounts(workload: WorkloadType) -> Vec<VolumeMount> {
    let mut mounts = vec![mount(ROOT_FALCO_FS.0, ROOT_FALCO_FS.1, false)];
    mounts.extend(host_paths(workload).map(|(name, _, path, ro)| mount(name, path, ro)));
    mounts.extend(SHARED.iter().map(|(name, path)| mount(name, path, false)));
    mounts.push(VolumeMount {
        sub_path: Some(CONFIG_KEY.to_owned()),
        ..mount(CONFIG_VOLUME, "/etc/falco/falco.yaml", true)
    });
    mounts
}

fn volumes(config_map: &str, workload: WorkloadType) -> Vec<Volume> {
    let empty = |name: &str| Volume {
        name: name.to_owned(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    };
    let mut volumes = vec![empty(ROOT_FALCO_FS.0)];
    volumes.extend(host_paths(workload).map(|(name, host, _, _)| Volume {
        name: name.to_owned(),
        host_path: Some(HostPathVolumeSource {
            path: host.to_owned(),
            ..HostPathVolumeSource::default()
        }),
        ..Volume::default()
    }));
    volumes.extend(SHARED.iter().map(|(name, _)| empty(name)));
    volumes.push(Volume {
        name: CONFIG_VOLUME.to_owned(),
        config_map: Some(ConfigMapVolumeSource {
            name: config_map.to_owned(),
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    });
    volumes
}

/// The artifact operator as a native sidecar: an init container with `restartPolicy: Always`.
/// Its startup probe on `/readyz` is the startup gate: kubelet starts Falco only once the sidecar
/// has delivered the artifacts that existed when it started. Probed every second (the first
/// full sync usually takes less than one; a probe that fails costs one local HTTP request) with
/// the same budget as before, 100 s, for a slow registry.
fn artifact_operator(image: &str) -> Container {
    let port = IntOrString::Int(ARTIFACT_OPERATOR_PROBE_PORT);
    Container {
        name: ARTIFACT_OPERATOR_CONTAINER.to_owned(),
        image: Some(image.to_owned()),
        image_pull_policy: Some("IfNotPresent".to_owned()),
        args: Some(vec!["run".to_owned()]),
        restart_policy: Some("Always".to_owned()),
        env: Some(vec![
            env_field("NODE_NAME", "spec.nodeName"),
            env_field("POD_NAMESPACE", "metadata.namespace"),
        ]),
        startup_probe: Some(http_probe(
            "/readyz",
            port.clone(),
            ProbeTiming {
                initial_delay: 1,
                timeout: 1,
                period: 1,
                failure_threshold: 100,
            },
        )),
        readiness_probe: Some(http_probe(
            "/readyz",
            port.clone(),
            ProbeTiming {
                initial_delay: 5,
                timeout: 5,
                period: 10,
                failure_threshold: 3,
            },
        )),
        liveness_probe: Some(http_probe(
            "/healthz",
            port,
            ProbeTiming {
                initial_delay: 15,
                timeout: 5,
                period: 10,
                failure_threshold: 3,
            },
        )),
        volume_mounts: Some(
            SHARED
                .iter()
                .map(|(name, path)| mount(name, path, false))
                .collect(),
        ),
        ..Container::default()
    }
}

/// Name of the driver loader init container (a reserved name users can target in
/// `podTemplateSpec`, e.g. to add `DRIVERS_REPO` to its environment).
pub const DRIVER_LOADER_CONTAINER: &str = "driver-loader";
/// Host directory of the driver cache (`$HOME/.falco` of the loader): a pod restarting on the
/// same node reuses the driver it verified before instead of downloading it again.
pub const DRIVER_CACHE_HOST_PATH: &str = "/var/lib/falco-driver";
/// Where the loader writes its status file, on an emptyDir the sidecar reads.
pub const DRIVER_STATUS_DIR: &str = "/run/falco-driver";
/// The status file in [`DRIVER_STATUS_DIR`].
pub const DRIVER_STATUS_FILE: &str = "/run/falco-driver/status.json";
/// Where the trusted key is mounted in the loader.
const TRUSTED_KEY_DIR: &str = "/etc/falco-driver/trusted-key";
const TRUSTED_KEY_FILE: &str = "key";
const DRIVER_CACHE: &str = "driver-cache";
const DRIVER_STATUS: &str = "driver-status";
const TRUSTED_KEY: &str = "driver-trusted-key";
const USR_SRC: (&str, &str, &str) = ("usr-src-fs", "/usr/src", "/host/usr/src");

/// The driver loader (`falco-driver-loader kmod|auto`, the image entrypoint form), run as a
/// regular init container after the artifact-operator sidecar and before Falco:
///
/// - **Order.** Init containers start in order; the native sidecar comes first so it is already
///   running when the loader runs: it reads the loader's status file and reports it in the node's
///   `NodeArtifacts` record also when the loader fails (kubelet then retries the loader with its
///   backoff and Falco does not start). Falco starts only once the loader succeeded, and the
///   sidecar's startup probe still gates it on the artifacts.
/// - **Privileged**, because loading (and unloading) a kernel module needs `CAP_SYS_MODULE` in the
///   host's user namespace and the runtime's default seccomp/AppArmor profiles refuse
///   `finit_module` to unprivileged containers; no other container of the pod but Falco itself
///   is privileged. `auto` may pick kmod on any node, so it is privileged too.
/// - **Host mounts**, read-only except the cache: `/boot` (kernel config for dkms),
///   `/lib/modules` and `/usr/src` (kernel headers, `build` symlinks), `/etc` (os-release, the
///   target), `/proc` (as falcoctl reads it), all under `HOST_ROOT=/host`; `/sys` is the
///   container's own sysfs, which shows the host's loaded modules (they are not namespaced). The
///   cache `/root/.falco` is the host directory [`DRIVER_CACHE_HOST_PATH`] (a re-verified cached
///   driver is reused on the next pod start). Falco does not read the cache: the loader loads
///   the module into the kernel, Falco opens its devices.
/// - **Shared with the pod**: Falco's `config.d` (the loader writes
///   `engine-kind-falcoctl.yaml`, see [`config::engine_kind`]) and the status emptyDir.
/// - **Settings** from `spec.driver`: the version ([`driver_plan`]), `download`/`compile`,
///   `httpTimeout`, `insecureSkipVerify`, `requireVerified`, the trusted key (a mounted
///   ConfigMap/Secret key); `repos` as `FALCOCTL_DRIVER_REPOS`, set only when given, so a
///   `DRIVERS_REPO` the user adds to this container through `podTemplateSpec` applies otherwise.
pub fn driver_loader(plan: &DriverPlan<'_>, default_image: &str) -> Container {
    let spec = plan.spec;
    let mut args = vec![
        plan.kind.as_str().to_owned(),
        format!("--version={}", plan.version),
        "--falco-config-dir=/etc/falco".to_owned(),
        format!("--status-file={DRIVER_STATUS_FILE}"),
    ];
    let (download, compile) = (spec.download.unwrap_or(true), spec.compile.unwrap_or(true));
    // The entrypoint form: neither flag means both; one flag means only that one.
    match (download, compile) {
        (true, false) => args.push("--download".to_owned()),
        (false, true) => args.push("--compile".to_owned()),
        _ => {}
    }
    if let Some(timeout) = &spec.http_timeout {
        args.push(format!("--http-timeout={timeout}"));
    }
    if spec.insecure_skip_verify == Some(true) {
        args.push("--http-insecure=true".to_owned());
    }
    if spec.require_verified == Some(true) {
        args.push("--require-verified=true".to_owned());
    }
    if spec.trusted_key.is_some() {
        args.push(format!(
            "--trusted-key={TRUSTED_KEY_DIR}/{TRUSTED_KEY_FILE}"
        ));
    }
    let mut env_vars = vec![env("HOST_ROOT", "/host"), env("HOME", "/root")];
    if let Some(repos) = spec.repos.as_ref().filter(|r| !r.is_empty()) {
        env_vars.push(env("FALCOCTL_DRIVER_REPOS", &repos.join(";")));
    }
    let mut mounts = vec![
        mount("boot-fs", "/host/boot", true),
        mount("lib-modules", "/host/lib/modules", true),
        mount(USR_SRC.0, USR_SRC.2, true),
        mount("etc-fs", "/host/etc", true),
        mount("proc-fs", "/host/proc", true),
        mount(DRIVER_CACHE, "/root/.falco", false),
        mount(SHARED[0].0, SHARED[0].1, false),
        mount(DRIVER_STATUS, DRIVER_STATUS_DIR, false),
    ];
    if spec.trusted_key.is_some() {
        mounts.push(mount(TRUSTED_KEY, TRUSTED_KEY_DIR, true));
    }
    Container {
        name: DRIVER_LOADER_CONTAINER.to_owned(),
        image: Some(
            spec.loader_image
                .as_deref()
                .unwrap_or(default_image)
                .to_owned(),
        ),
        image_pull_policy: Some("IfNotPresent".to_owned()),
        args: Some(args),
        env: Some(env_vars),
        security_context: Some(SecurityContext {
            privileged: Some(true),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(mounts),
        ..Container::default()
    }
}

/// The sidecar reads the loader's status file (read-only) and reports it.
fn add_driver_status(sidecar: &mut Container) {
    sidecar
        .env
        .get_or_insert_with(Vec::new)
        .push(env("DRIVER_STATUS_FILE", DRIVER_STATUS_FILE));
    sidecar
        .volume_mounts
        .get_or_insert_with(Vec::new)
        .push(mount(DRIVER_STATUS, DRIVER_STATUS_DIR, true));
}

/// Volumes only the loader uses: `/usr/src`, the cache, the status emptyDir, the trusted key.
fn driver_volumes(spec: &DriverSpec) -> Vec<Volume> {
    let host = |name: &str, path: &str, type_: Option<&str>| Volume {
        name: name.to_owned(),
        host_path: Some(HostPathVolumeSource {
            path: path.to_owned(),
            type_: type_.map(str::to_owned),
        }),
        ..Volume::default()
    };
    let mut out = vec![
        host(USR_SRC.0, USR_SRC.1, None),
        host(
            DRIVER_CACHE,
            DRIVER_CACHE_HOST_PATH,
            Some("DirectoryOrCreate"),
        ),
        Volume {
            name: DRIVER_STATUS.to_owned(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        },
    ];
    if let Some(key) = &spec.trusted_key {
        let item = |key: &str| {
            Some(vec![KeyToPath {
                key: key.to_owned(),
                path: TRUSTED_KEY_FILE.to_owned(),
                ..KeyToPath::default()
            }])
        };
        let mut volume = Volume {
            name: TRUSTED_KEY.to_owned(),
            ..Volume::default()
        };
        if let Some(cm) = &key.config_map_key_ref {
            volume.config_map = Some(ConfigMapVolumeSource {
                name: cm.name.clone(),
                items: item(&cm.key),
                ..ConfigMapVolumeSource::default()
            });
        } else if let Some(secret) = &key.secret_key_ref {
            volume.secret = Some(SecretVolumeSource {
                secret_name: Some(secret.name.clone()),
                items: item(&secret.key),
                ..SecretVolumeSource::default()
            });
        }
        out.push(volume);
    }
    out
}

#[cfg(test)]
mod tests;
