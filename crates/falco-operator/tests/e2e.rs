//! End to end on a real node: the chart installs the operator into the cluster, where it runs
//! from its image; a Falco CR becomes a DaemonSet whose pod the real controllers create, the
//! scheduler places and the kubelet runs, with the artifact sidecar delivering rules from the
//! local registry before Falco's container starts; a kmod Falco's loader init container gets its
//! driver from the project's repository running in the cluster and reports the kernel's refusal.
//!
//! Falco cannot run here (no driver, no image registry), so Falco's container runs
//! `falco-standin`, which prints the files Falco would load and answers its health port. It is
//! a stand-in and says so. Everything else is the project's own images, built without a
//! container engine from the static binaries (`make images`) and pulled by containerd from the
//! registry on loopback. The node runs pods in the host network (see `falco_testenv::Node`),
//! so the tests here run one after another: two Falco pods would want the same ports.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use falco_api::Falco;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Pod, ServiceAccount};
use kube::Client;
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, ObjectMeta, Patch, PatchParams, PostParams,
};
use serde_json::json;
use tokio::sync::Mutex;

/// Deadline of each wait: image pulls and pod starts on a loaded 2-core machine.
const DEADLINE: Duration = Duration::from_secs(120);
/// One test at a time on the node (host ports).
static NODE: Mutex<()> = Mutex::const_new(());

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

async fn wait_for<T, Fut: std::future::Future<Output = Option<T>>>(
    what: &str,
    mut check: impl FnMut() -> Fut,
) -> T {
    let start = std::time::Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "timed out after {DEADLINE:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn setup(prefix: &str) -> (&'static falco_testenv::Cluster, Client, String) {
    let cluster = falco_testenv::shared_cluster();
    let client = cluster.control_plane.client().await.expect("client");
    let ns = cluster
        .control_plane
        .namespace(&client, prefix)
        .await
        .expect("namespace");
    (cluster, client, ns)
}

/// `helm template` of the chart into `ns` with the local images, then applied (all of it: the
/// controller manager runs the Deployment here).
async fn install_operator(cluster: &falco_testenv::Cluster, client: &Client, ns: &str) {
    let helm = falco_testenv::locate_helm().expect("helm");
    let (repository, tag) = cluster
        .image("falco-operator")
        .rsplit_once(':')
        .expect("tagged");
    let rendered = run_ok(
        Command::new(helm)
            .arg("template")
            .arg("op")
            .arg(repo_root().join("deploy/helm/falco-operator"))
            .args(["--namespace", ns])
            .args(["--set", &format!("image.repository={repository}")])
            .args(["--set", &format!("image.tag={tag}")])
            .args([
                "--set",
                &format!(
                    "artifactOperatorImage={}",
                    cluster.image("falco-artifact-operator")
                ),
            ])
            .args([
                "--set",
                &format!("driverLoaderImage={}", cluster.image("falco-driver-loader")),
            ])
            // Host network: keep clear of the sidecar's probe port (8081) on the same node.
            .args(["--set", "metrics.port=18080", "--set", "healthPort=18081"]),
    );
    let objects: Vec<DynamicObject> = serde_yaml::Deserializer::from_str(&rendered)
        .filter_map(|doc| {
            let value = serde_yaml::Value::deserialize(doc).ok()?;
            (!value.is_null()).then(|| serde_yaml::from_value(value).expect("object"))
        })
        .collect();
    falco_testenv::apply_manifests(client, ns, &objects)
        .await
        .expect("apply the rendered chart");
}

use serde::Deserialize as _;

fn rulesfile(name: &str, registry: &str, tag: &str) -> serde_json::Value {
    json!({
        "apiVersion": "artifact.falcosecurity.dev/v1alpha1",
        "kind": "Rulesfile",
        "metadata": {"name": name},
        "spec": {
            "ociArtifact": {
                "image": {"repository": "e2e/rules", "tag": tag},
                "registry": {"name": registry, "plainHTTP": true},
            },
        },
    })
}

async fn apply_json(client: &Client, ns: &str, value: serde_json::Value) {
    let object: DynamicObject = serde_json::from_value(value).expect("object");
    falco_testenv::apply_manifests(client, ns, &[object])
        .await
        .expect("apply");
}

async fn push_rules(cluster: &falco_testenv::Cluster, tag: &str, rules: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("e2e_rules.yaml");
    std::fs::write(&file, rules).expect("write rules");
    falco_testenv::registry::push_artifact(
        cluster.registry.host(),
        "e2e/rules",
        tag,
        falco_testenv::registry::ArtifactKind::Rulesfile,
        &file,
    )
    .await
    .expect("push rules");
}

fn started_at(pod: &Pod, container: &str, init: bool) -> Option<k8s_openapi::jiff::Timestamp> {
    let status = pod.status.as_ref()?;
    let list = if init {
        status.init_container_statuses.as_ref()?
    } else {
        status.container_statuses.as_ref()?
    };
    let state = list.iter().find(|c| c.name == container)?.state.as_ref()?;
    Some(state.running.as_ref()?.started_at.as_ref()?.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_runs_the_operator_and_falco_and_component_crs_run_on_the_node() {
    let _node = NODE.lock().await;
    let (cluster, client, ns) = setup("e2e").await;
    install_operator(cluster, &client, &ns).await;

    // The operator runs in-cluster: its Deployment is Available from the real status.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    wait_for("the operator Deployment available", || async {
        let d = deployments.get_opt("op-falco-operator").await.ok()??;
        (d.status?.available_replicas? >= 1).then_some(())
    })
    .await;

    // Rules in the local registry, a Rulesfile naming them, a Falco running the stand-in.
    let rules_v1 = "- rule: e2e rule\n  desc: first version\n  condition: evt.type = open\n  output: opened\n  priority: INFO\n";
    push_rules(cluster, "1", rules_v1).await;
    apply_json(
        &client,
        &ns,
        rulesfile("e2e-rules", cluster.registry.host(), "1"),
    )
    .await;
    let falco: Falco = serde_json::from_value(json!({
        "apiVersion": "instance.falcosecurity.dev/v1alpha1",
        "kind": "Falco",
        "metadata": {"name": "e2e"},
        "spec": {
            "podTemplateSpec": {"spec": {"containers": [{
                "name": "falco",
                "image": cluster.image("falco-standin"),
                "readinessProbe": {"initialDelaySeconds": 1, "periodSeconds": 2},
            }]}},
        },
    }))
    .expect("Falco");
    let falcos: Api<Falco> = Api::namespaced(client.clone(), &ns);
    falcos
        .create(&PostParams::default(), &falco)
        .await
        .expect("create Falco");

    // The real DaemonSet controller creates the pod, the scheduler binds it, the kubelet runs it.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let selector =
        ListParams::default().labels("app.kubernetes.io/name=e2e,app.kubernetes.io/instance=e2e");
    let pod = {
        let start = std::time::Instant::now();
        loop {
            let list = pods.list(&selector).await.expect("list pods");
            if let Some(pod) = list.items.first()
                && started_at(pod, "falco", false).is_some()
            {
                break pod.clone();
            }
            if start.elapsed() > DEADLINE {
                let kubelet = std::fs::read_to_string(cluster.node.dir().join("kubelet.log"))
                    .unwrap_or_default();
                let tail: Vec<&str> = kubelet.lines().rev().take(15).collect();
                panic!(
                    "timed out waiting for the Falco pod running: pods {}\nDaemonSet {:?}\nkubelet: {}",
                    serde_json::to_string(
                        &list.items.iter().map(|p| &p.status).collect::<Vec<_>>()
                    )
                    .unwrap_or_default(),
                    Api::<DaemonSet>::namespaced(client.clone(), &ns)
                        .get_opt("e2e")
                        .await
                        .ok()
                        .flatten()
                        .and_then(|d| d.status),
                    tail.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let pod_name = pod.metadata.name.clone().expect("name");
    assert_eq!(
        pod.spec.as_ref().and_then(|s| s.node_name.as_deref()),
        Some(cluster.node.name())
    );
    // The native sidecar started first; Falco only once the sidecar's startup gate opened.
    let sidecar = started_at(&pod, "artifact-operator", true).expect("sidecar running");
    let falco_started = started_at(&pod, "falco", false).expect("falco running");
    assert!(
        sidecar <= falco_started,
        "sidecar {sidecar} after falco {falco_started}"
    );
    // What Falco would have read at its start: the rules were already there.
    let log = wait_for("the stand-in's first scan", || async {
        let log = cluster.node.container_log(&ns, &pod_name, "falco");
        log.contains("would load /etc/falco/falco.yaml")
            .then_some(log)
    })
    .await;
    assert!(log.contains("it is NOT Falco"), "{log}");
    assert!(log.contains("would load /etc/falco/falco.yaml"), "{log}");
    let first_scan: Vec<&str> = log
        .lines()
        .take_while(|l| !l.contains("start-up files listed"))
        .filter(|l| l.contains("would load"))
        .collect();
    assert!(
        first_scan.iter().any(|l| l.contains("/etc/falco/rules.d/")
            && l.contains(&format!("size={}", rules_v1.len()))),
        "the rules were not in rules.d when Falco started: {log}"
    );

    // The sidecar wrote its node's record with its real ServiceAccount token.
    let records: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        &ns,
        &kube::discovery::ApiResource::erase::<falco_api::NodeArtifacts>(&()),
    );
    wait_for("the node's NodeArtifacts record", || async {
        records.get_opt(cluster.node.name()).await.ok()?.map(|_| ())
    })
    .await;
    // Available comes from the DaemonSet's real status.
    wait_for("Falco Available=True", || async {
        let f = falcos.get_opt("e2e").await.ok()??;
        f.status?
            .conditions
            .iter()
            .any(|c| c.type_ == "Available" && c.status == "True")
            .then_some(())
    })
    .await;
    let ds: Api<DaemonSet> = Api::namespaced(client.clone(), &ns);
    let status = ds
        .get("e2e")
        .await
        .expect("DaemonSet")
        .status
        .expect("status");
    assert_eq!(status.number_ready, 1);

    // A changed Rulesfile reaches the running pod's files without a restart.
    let rules_v2 = format!("{rules_v1}- macro: e2e macro\n  condition: evt.type = close\n");
    push_rules(cluster, "2", &rules_v2).await;
    apply_json(
        &client,
        &ns,
        rulesfile("e2e-rules", cluster.registry.host(), "2"),
    )
    .await;
    wait_for("the changed rules in the running pod", || async {
        let log = cluster.node.container_log(&ns, &pod_name, "falco");
        log.contains(&format!("size={}", rules_v2.len()))
            .then_some(())
    })
    .await;
    let pod = pods.get(&pod_name).await.expect("same pod");
    let restarts: i32 = pod
        .status
        .and_then(|s| s.container_statuses)
        .into_iter()
        .flatten()
        .map(|c| c.restart_count)
        .sum();
    assert_eq!(restarts, 0, "Falco restarted for a rules change");

    // Deleting the Falco removes the pod and every child.
    falcos
        .delete("e2e", &DeleteParams::foreground())
        .await
        .expect("delete");
    wait_for("the Falco, its DaemonSet and its pod gone", || async {
        let gone = falcos.get_opt("e2e").await.ok()?.is_none()
            && ds.get_opt("e2e").await.ok()?.is_none()
            && pods.get_opt(&pod_name).await.ok()?.is_none();
        gone.then_some(())
    })
    .await;
    for (kind, present) in [
        (
            "ConfigMap",
            Api::<ConfigMap>::namespaced(client.clone(), &ns)
                .get_opt("e2e")
                .await
                .expect("get")
                .is_some(),
        ),
        (
            "ServiceAccount",
            Api::<ServiceAccount>::namespaced(client.clone(), &ns)
                .get_opt("e2e")
                .await
                .expect("get")
                .is_some(),
        ),
    ] {
        assert!(!present, "{kind} e2e left behind");
    }

    // A Component type starts its Deployment (falcosidekick's, running the stand-in on its
    // port): the real ReplicaSet controller, scheduler and kubelet make it Available.
    let component: falco_api::Component = serde_json::from_value(json!({
        "apiVersion": "instance.falcosecurity.dev/v1alpha1",
        "kind": "Component",
        "metadata": {"name": "sidekick"},
        "spec": {
            "component": {"type": "falcosidekick"},
            "podTemplateSpec": {"spec": {"containers": [{
                "name": "falcosidekick",
                "image": cluster.image("falco-standin"),
                "env": [{"name": "FALCO_STANDIN_PORT", "value": "2801"}],
                "readinessProbe": {"initialDelaySeconds": 1, "periodSeconds": 2},
            }]}},
        },
    }))
    .expect("Component");
    let components: Api<falco_api::Component> = Api::namespaced(client.clone(), &ns);
    components
        .create(&PostParams::default(), &component)
        .await
        .expect("create Component");
    wait_for("the falcosidekick Deployment available", || async {
        let d = deployments.get_opt("sidekick").await.ok()??;
        (d.status?.available_replicas? >= 1).then_some(())
    })
    .await;
    wait_for("Component Available=True", || async {
        let c = components.get_opt("sidekick").await.ok()??;
        c.status?
            .conditions
            .iter()
            .any(|c| c.type_ == "Available" && c.status == "True")
            .then_some(())
    })
    .await;
    components
        .delete("sidekick", &DeleteParams::foreground())
        .await
        .expect("delete Component");
    wait_for("the falcosidekick Deployment gone", || async {
        deployments
            .get_opt("sidekick")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;

    kmod_instance_gets_its_driver_from_the_repository_in_the_cluster(cluster, &client, &ns).await;

    // The operator goes with its namespace.
    Api::<Namespace>::all(client.clone())
        .delete(&ns, &DeleteParams::default())
        .await
        .expect("delete namespace");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_node_takes_its_records_with_it() {
    let (_, client, ns) = setup("e2e-gc").await;
    // A second Node object (no kubelet behind it), and the record a sidecar on it would write,
    // owned by the Node as the sidecar writes it.
    let nodes: Api<Node> = Api::all(client.clone());
    let node = nodes
        .create(
            &PostParams::default(),
            &Node {
                metadata: ObjectMeta {
                    generate_name: Some("e2e-gone-".to_owned()),
                    ..ObjectMeta::default()
                },
                ..Node::default()
            },
        )
        .await
        .expect("create Node");
    let name = node.metadata.name.clone().expect("name");
    let uid = node.metadata.uid.clone().expect("uid");
    let record = json!({
        "apiVersion": "artifact.falcosecurity.dev/v1alpha1",
        "kind": "NodeArtifacts",
        "metadata": {
            "name": name,
            "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": name, "uid": uid}],
        },
        "spec": {"nodeName": name},
    });
    let records: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        &ns,
        &kube::discovery::ApiResource::erase::<falco_api::NodeArtifacts>(&()),
    );
    records
        .patch(
            &name,
            &PatchParams::apply("e2e").force(),
            &Patch::Apply(&record),
        )
        .await
        .expect("create the record");
    nodes
        .delete(&name, &DeleteParams::default())
        .await
        .expect("delete Node");
    // The real garbage collector of kube-controller-manager removes the record.
    wait_for("the record collected with its Node", || async {
        records.get_opt(&name).await.ok()?.is_none().then_some(())
    })
    .await;
}

/// A static binary of the images (`make images`), run on the host.
fn image_bin(name: &str) -> Command {
    Command::new(falco_testenv::image::image_bins_dir().join(name))
}

fn run_ok(command: &mut Command) -> String {
    let out = command.output().expect("run");
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A kmod Falco on the node: the project's driver repository runs in the cluster (its image, a
/// Deployment) serving a driver published with a signed index for this node's own target and
/// kernel; the Falco pod's loader init container downloads it, verifies it against the trusted
/// key and tries to load it. This machine's kernel has no loadable-module support, so the load
/// fails, and that is what the node reports: `DriverReady=False`, reason `LoadFailed`, the
/// node's kernel, through the sidecar's `NodeArtifacts` record. Falco's container never starts.
async fn kmod_instance_gets_its_driver_from_the_repository_in_the_cluster(
    cluster: &falco_testenv::Cluster,
    client: &Client,
    ns: &str,
) {
    // A version no real driver has: the loader's cache is the node's host directory
    // (`/var/lib/falco-driver`), and this test removes what it put there.
    const VERSION: &str = "99.0.0+e2e";
    const REPO_PORT: u16 = 18090;
    let cache =
        std::path::Path::new(falco_operator::falco::build::DRIVER_CACHE_HOST_PATH).join(VERSION);
    let _ = std::fs::remove_dir_all(&cache);
    // The file this node's loader will ask for: the loader's own detection on the host's /etc
    // and kernel, which the pod sees through its host mounts.
    let work = tempfile::tempdir().expect("tempdir");
    let printenv = run_ok(
        image_bin("falco-driver-loader")
            .env("HOME", work.path())
            .args(["--host-root", "/", "--version", VERSION, "--type", "kmod"])
            .arg("--config")
            .arg(work.path().join("falcoctl.yaml"))
            .arg("printenv"),
    );
    let var = |name: &str| {
        printenv
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .map(|v| v.trim_matches('"').to_owned())
            .unwrap_or_else(|| panic!("{name} in {printenv}"))
    };
    let (file, kernel) = (var("DRIVER_FILENAME"), var("KERNEL_RELEASE"));
    let out = work.path().join("out").join(VERSION).join("x86_64");
    std::fs::create_dir_all(&out).expect("mkdir");
    let driver = vec![7u8; 64 * 1024];
    std::fs::write(out.join(&file), &driver).expect("driver");
    let published_sha256 = {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(&driver))
    };
    let (key, public, repo) = (
        work.path().join("repo.key"),
        work.path().join("repo.pub"),
        work.path().join("repo"),
    );
    run_ok(
        image_bin("falco-driver-repo")
            .arg("keygen")
            .arg("--private-key")
            .arg(&key)
            .arg("--public-key")
            .arg(&public),
    );
    run_ok(
        image_bin("falco-driver-repo")
            .arg("publish")
            .arg(work.path().join("out"))
            .arg("--storage")
            .arg(format!("file://{}", repo.display()))
            .arg("--signing-key")
            .arg(&key),
    );

    // The repository in the cluster, from its image, reading the published tree (host path).
    apply_json(
        client,
        ns,
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "driver-repo"},
            "spec": {
                "selector": {"matchLabels": {"app": "driver-repo"}},
                "template": {
                    "metadata": {"labels": {"app": "driver-repo"}},
                    "spec": {
                        "containers": [{
                            "name": "repo",
                            "image": cluster.image("falco-driver-repo"),
                            "args": ["serve", "--listen", format!("127.0.0.1:{REPO_PORT}"),
                                     "--storage", "file:///repo"],
                            "securityContext": {"runAsUser": 0},
                            "volumeMounts": [{"name": "repo", "mountPath": "/repo"}],
                        }],
                        "volumes": [{"name": "repo",
                                     "hostPath": {"path": repo.display().to_string(), "type": "Directory"}}],
                    },
                },
            },
        }),
    )
    .await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    wait_for("the driver repository Deployment available", || async {
        let d = deployments.get_opt("driver-repo").await.ok()??;
        (d.status?.available_replicas? >= 1).then_some(())
    })
    .await;

    // The kmod instance, trusting the repository's key.
    let public_key = std::fs::read_to_string(&public).expect("public key");
    apply_json(
        client,
        ns,
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "driver-repo-key"},
               "data": {"ed25519.pub": public_key}}),
    )
    .await;
    apply_json(
        client,
        ns,
        json!({
            "apiVersion": "instance.falcosecurity.dev/v1alpha1", "kind": "Falco",
            "metadata": {"name": "kmod"},
            "spec": {
                "driver": {
                    "kind": "kmod", "version": VERSION, "compile": false, "requireVerified": true,
                    "repos": [format!("http://127.0.0.1:{REPO_PORT}/driver")],
                    "trustedKey": {"configMapKeyRef": {"name": "driver-repo-key", "key": "ed25519.pub"}},
                },
                "podTemplateSpec": {"spec": {"containers": [{
                    "name": "falco", "image": cluster.image("falco-standin"),
                }]}},
            },
        }),
    )
    .await;

    // The node's record and the Falco status say the driver was downloaded and verified, and
    // that this kernel refused it.
    let falcos: Api<Falco> = Api::namespaced(client.clone(), ns);
    let driver = wait_for("DriverReady=False from the node's loader", || async {
        let status = falcos.get_opt("kmod").await.ok()??.status?;
        let ready = status
            .conditions
            .iter()
            .find(|c| c.type_ == "DriverReady")?;
        (ready.status == "False").then_some(())?;
        let driver = serde_json::to_value(status.driver?).ok()?;
        (driver["failed"] == 1).then_some(driver)
    })
    .await;
    let failing = &driver["failingKernels"][0];
    assert_eq!(failing["reason"], "LoadFailed", "{driver}");
    assert_eq!(failing["kernelRelease"], kernel.as_str(), "{driver}");
    let records: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        ns,
        &kube::api::ApiResource::erase::<falco_api::NodeArtifacts>(&()),
    );
    let record = serde_json::to_value(
        records
            .list(&ListParams::default())
            .await
            .expect("records")
            .items,
    )
    .expect("json");
    let reported = record
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|r| Some(r["status"]["driver"].clone()).filter(serde_json::Value::is_object))
        .unwrap_or_else(|| panic!("no driver status in {record}"));
    // The first run downloaded it; kubelet's restarts of the failed init container find it in
    // the node's cache and, as verification is required, check it against the signed index again.
    assert!(
        ["downloaded", "cached"].contains(&reported["origin"].as_str().unwrap_or_default()),
        "{record}"
    );
    assert_eq!(reported["verification"], "signature", "{record}");
    assert_eq!(reported["sha256"], published_sha256.as_str(), "{record}");
    assert_eq!(reported["loaded"], false, "{record}");
    assert!(
        reported["error"]
            .as_str()
            .is_some_and(|e| e.contains("Function not implemented")),
        "the kernel's own refusal: {record}"
    );

    falcos
        .delete("kmod", &DeleteParams::foreground())
        .await
        .expect("delete kmod Falco");
    let ds: Api<DaemonSet> = Api::namespaced(client.clone(), ns);
    wait_for("the kmod DaemonSet gone", || async {
        ds.get_opt("kmod").await.ok()?.is_none().then_some(())
    })
    .await;
    deployments
        .delete("driver-repo", &DeleteParams::foreground())
        .await
        .expect("delete repository");
    std::fs::remove_dir_all(&cache).expect("the loader's cache of the test's driver");
}
