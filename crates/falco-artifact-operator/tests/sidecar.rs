//! The `run` binary against the harness's real kube-apiserver and a real OCI registry: each
//! sidecar is a process with its own `NODE_NAME` and directories (a simulated node).

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use falco_api::{Config, NodeArtifact, NodeArtifacts, Plugin, Rulesfile};
use falco_artifact_operator::oci::{
    PLUGIN_CONFIG_MEDIA_TYPE, PLUGIN_LAYER_MEDIA_TYPE, RULESFILE_CONFIG_MEDIA_TYPE,
    RULESFILE_LAYER_MEDIA_TYPE,
};
use k8s_openapi::api::core::v1::{ConfigMap, Node, Secret};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use p256::ecdsa::signature::Signer;
use serde_json::json;
use support::{Proxy, Registry, RegistryOptions, keyless, tar_gz, traversal_tar_gz};

const DEADLINE: Duration = Duration::from_secs(60);

/// Polls `check` until it returns `Some`, failing after [`DEADLINE`] with `what`.
async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A sidecar process for one simulated node.
struct Sidecar {
    child: Child,
    root: tempfile::TempDir,
    port: u16,
    log: PathBuf,
}

impl Sidecar {
    fn start(namespace: &str, node: &str, extra: &[&str]) -> Self {
        let root = tempfile::tempdir().unwrap();
        Self::start_in(root, namespace, node, extra)
    }

    fn start_in(root: tempfile::TempDir, namespace: &str, node: &str, extra: &[&str]) -> Self {
        let cp = falco_testenv::shared();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = root.path().join("sidecar.log");
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_falco-artifact-operator"))
            .arg("run")
            .args(extra)
            .env("KUBECONFIG", cp.kubeconfig_path())
            .env("NODE_NAME", node)
            .env("POD_NAMESPACE", namespace)
            .env("FALCO_RULES_DIR", root.path().join("rules.d"))
            .env("FALCO_CONFIG_DIR", root.path().join("config.d"))
            .env("FALCO_PLUGINS_DIR", root.path().join("plugins"))
            .env("PROBE_ADDR", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        Self {
            child,
            root,
            port,
            log,
        }
    }

    fn dir(&self, sub: &str) -> PathBuf {
        self.root.path().join(sub)
    }

    fn files(&self, sub: &str) -> Vec<String> {
        files(&self.dir(sub))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn get(&self, path: &str) -> Option<(u16, String)> {
        let response = reqwest::get(format!("http://127.0.0.1:{}{path}", self.port))
            .await
            .ok()?;
        let status = response.status().as_u16();
        Some((status, response.text().await.ok()?))
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some((200, _)) = self.get("/readyz").await {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("sidecar exited with {status}:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "not ready in time:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the process and hands back its directories.
    fn stop(mut self) -> tempfile::TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::mem::replace(&mut self.root, tempfile::tempdir().unwrap())
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// A test namespace with the instance operator watching it: it keeps the namespace's artifact
/// index, which is what the sidecars watch, and aggregates their records.
struct Cluster {
    client: Client,
    ns: String,
    _operator: falco_operator::run::Running,
}

impl Cluster {
    async fn new(prefix: &str) -> Self {
        let cp = falco_testenv::shared();
        let client = cp.client().await.unwrap();
        let ns = cp.namespace(&client, prefix).await.unwrap();
        let mut operator = falco_operator::run::start(
            client.clone(),
            std::sync::Arc::new(falco_operator::metrics::Metrics::new()),
            falco_operator::run::RunConfig {
                namespace: Some(ns.clone()),
                concurrency: 2,
                instance: "sidecar-tests".to_owned(),
                ..Default::default()
            },
        );
        tokio::time::timeout(DEADLINE, operator.wait_ready())
            .await
            .expect("instance operator ready");
        Self {
            client,
            ns,
            _operator: operator,
        }
    }

    /// Waits until the namespace's artifact index (kept by the instance operator) satisfies
    /// `check`.
    async fn wait_index(&self, what: &str, check: impl Fn(&BTreeMap<String, String>) -> bool) {
        let api: Api<ConfigMap> = self.api();
        wait_for(what, || async {
            let data = api
                .get_opt(falco_api::index::INDEX_CONFIG_MAP)
                .await
                .unwrap()?
                .data
                .unwrap_or_default();
            check(&data).then_some(())
        })
        .await;
    }

    /// Waits until the index lists `keys` (`rulesfile.<name>`, …): a sidecar started then sees
    /// them in its first pass, which the startup gate waits for.
    async fn wait_indexed(&self, keys: &[&str]) {
        self.wait_index(&format!("{keys:?} indexed"), |data| {
            keys.iter().all(|k| data.contains_key(*k))
        })
        .await;
    }

    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// Creates a Node named after the namespace (unique per test) with `labels`.
    async fn node(&self, suffix: &str, labels: &[(&str, &str)]) -> String {
        let name = format!("{}-{suffix}", self.ns);
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels.iter().cloned().collect::<BTreeMap<_, _>>()},
        }))
        .unwrap();
        Api::<Node>::all(self.client.clone())
            .create(&PostParams::default(), &node)
            .await
            .unwrap();
        name
    }

    async fn label_node(&self, name: &str, labels: serde_json::Value) {
        Api::<Node>::all(self.client.clone())
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": labels}})),
            )
            .await
            .unwrap();
    }

    async fn apply<K>(&self, object: serde_json::Value) -> K
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + std::fmt::Debug
            + serde::de::DeserializeOwned
            + serde::Serialize,
    {
        let name = object["metadata"]["name"].as_str().unwrap().to_owned();
        let applied: K = self
            .api::<K>()
            .patch(
                &name,
                &PatchParams::apply("test").force(),
                &Patch::Apply(&object),
            )
            .await
            .unwrap_or_else(|e| panic!("apply {name}: {e}"));
        // An artifact reaches the sidecars through the index: wait until it lists this version,
        // so that what a test does next (start a sidecar, stop one) sees it.
        let kind = K::kind(&()).to_ascii_lowercase();
        if ["rulesfile", "plugin", "config"].contains(&kind.as_str()) {
            let meta = applied.meta();
            let want = format!(
                "{}/{}",
                meta.uid.clone().unwrap_or_default(),
                meta.generation.unwrap_or_default()
            );
            let key = format!("{kind}.{name}");
            self.wait_index(&format!("{key} = {want} in the index"), |data| {
                data.get(&key) == Some(&want)
            })
            .await;
        }
        applied
    }

    async fn record(&self, node: &str) -> Option<NodeArtifacts> {
        self.api::<NodeArtifacts>().get_opt(node).await.unwrap()
    }

    /// Waits until the node's record shows `name` at its current generation with
    /// `Programmed` = `status`; returns the entry.
    async fn wait_programmed(
        &self,
        node: &str,
        kind: &str,
        name: &str,
        status: &str,
    ) -> NodeArtifact {
        wait_for(
            &format!("{kind}/{name} Programmed={status} on {node}"),
            || async {
                let record = self.record(node).await?;
                let entry = record
                    .status?
                    .artifacts
                    .into_iter()
                    .find(|a| a.kind == kind && a.name == name)?;
                let generation = match kind {
                    "Rulesfile" => {
                        self.api::<Rulesfile>()
                            .get(name)
                            .await
                            .ok()?
                            .metadata
                            .generation
                    }
                    "Plugin" => {
                        self.api::<Plugin>()
                            .get(name)
                            .await
                            .ok()?
                            .metadata
                            .generation
                    }
                    _ => {
                        self.api::<Config>()
                            .get(name)
                            .await
                            .ok()?
                            .metadata
                            .generation
                    }
                }?;
                let programmed = entry.conditions.iter().find(|c| c.type_ == "Programmed")?;
                (entry.observed_generation == generation && programmed.status == status)
                    .then_some(entry)
            },
        )
        .await
    }
}

impl Cluster {
    /// Waits until the node reports `Programmed=False` with `reason` for Rulesfile `name`.
    async fn wait_reason(&self, node: &str, name: &str, reason: &str) -> NodeArtifact {
        wait_for(
            &format!("Rulesfile/{name} reason {reason} on {node}"),
            || async {
                let entry = self
                    .record(node)
                    .await?
                    .status?
                    .artifacts
                    .into_iter()
                    .find(|a| a.kind == "Rulesfile" && a.name == name)?;
                let programmed = entry.conditions.iter().find(|c| c.type_ == "Programmed")?;
                (programmed.status == "False" && programmed.reason == reason).then_some(entry)
            },
        )
        .await
    }
}

fn rulesfile(name: &str, spec: serde_json::Value) -> serde_json::Value {
    json!({
        "apiVersion": "artifact.falcosecurity.dev/v1alpha1",
        "kind": "Rulesfile",
        "metadata": {"name": name},
        "spec": spec,
    })
}

fn oci(registry: &Registry, repo: &str, tag: &str) -> serde_json::Value {
    json!({"image": {"repository": repo, "tag": tag}, "registry": {"name": registry.host, "plainHTTP": true}})
}

fn read(path: PathBuf) -> String {
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[tokio::test]
async fn every_source_priority_order_updates_and_removal() {
    let cluster = Cluster::new("sources").await;
    let registry = Registry::start(RegistryOptions::default());
    registry
        .push_rules(
            "falco/rules:1",
            b"- macro: from-oci\n  condition: evt.num > 0\n",
        )
        .await;
    registry
        .push(
            "falco/json:1",
            PLUGIN_CONFIG_MEDIA_TYPE,
            PLUGIN_LAYER_MEDIA_TYPE,
            tar_gz("libjson.so", b"\x7fELF-json"),
        )
        .await;
    let node = cluster.node("n", &[]).await;
    let cms: Api<ConfigMap> = cluster.api();
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(
            json!({"metadata": {"name": "rules-cm"}, "data": {"rules.yaml": "- macro: from-cm\n  condition: evt.num > 0\n"}}),
        )
        .unwrap(),
    )
    .await
    .unwrap();
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "config-cm"}, "data": {"config.yaml": "log_level: debug\n"}})).unwrap(),
    )
    .await
    .unwrap();
    cluster
        .apply::<Rulesfile>(rulesfile(
            "r",
            json!({
                "priority": 10,
                "ociArtifact": oci(&registry, "falco/rules", "1"),
                "configMapRef": {"name": "rules-cm"},
                "inlineRules": [{"macro": "m", "condition": "evt.num > 0"}],
            }),
        ))
        .await;
    cluster
        .apply::<Config>(json!({
            "apiVersion": "artifact.falcosecurity.dev/v1alpha1", "kind": "Config",
            "metadata": {"name": "c"},
            "spec": {"priority": 20, "config": {"json_output": true}, "configMapRef": {"name": "config-cm"}},
        }))
        .await;
    cluster
        .apply::<Plugin>(json!({
            "apiVersion": "artifact.falcosecurity.dev/v1alpha1", "kind": "Plugin",
            "metadata": {"name": "json"},
            "spec": {"ociArtifact": oci(&registry, "falco/json", "1"), "config": {"initConfig": {"sssURL": "x"}}},
        }))
        .await;

    // The startup gate: ready only once everything indexed at start is on disk.
    cluster
        .wait_indexed(&["configmap.rules-cm", "configmap.config-cm"])
        .await;
    let mut sidecar = Sidecar::start(&cluster.ns, &node, &[]);
    sidecar.wait_ready().await;
    assert_eq!(
        sidecar.files("rules.d"),
        [
            "10-01-r-oci.yaml",
            "10-02-r-configmap.yaml",
            "10-03-r-inline.yaml"
        ]
    );
    assert_eq!(
        sidecar.files("config.d"),
        [
            "20-02-c-configmap.yaml",
            "20-03-c-inline.yaml",
            "99-03-plugins-config-inline.yaml"
        ]
    );
    assert_eq!(sidecar.files("plugins"), ["json.so"]);
    assert_eq!(
        read(sidecar.dir("rules.d/10-01-r-oci.yaml")),
        "- macro: from-oci\n  condition: evt.num > 0\n"
    );
    assert_eq!(
        read(sidecar.dir("rules.d/10-02-r-configmap.yaml")),
        "- macro: from-cm\n  condition: evt.num > 0\n"
    );
    assert!(read(sidecar.dir("rules.d/10-03-r-inline.yaml")).contains("macro: m"));
    assert!(read(sidecar.dir("config.d/20-03-c-inline.yaml")).contains("json_output: true"));
    assert_eq!(
        std::fs::read(sidecar.dir("plugins/json.so")).unwrap(),
        b"\x7fELF-json"
    );
    let plugins: serde_yaml::Value = serde_yaml::from_str(&read(
        sidecar.dir("config.d/99-03-plugins-config-inline.yaml"),
    ))
    .unwrap();
    assert_eq!(plugins["load_plugins"][0], "json");
    assert_eq!(
        plugins["plugins"][0]["library_path"],
        "/usr/share/falco/plugins/json.so"
    );
    assert_eq!(plugins["plugins"][0]["init_config"]["sssURL"], "x");
    for (kind, name) in [("Rulesfile", "r"), ("Config", "c"), ("Plugin", "json")] {
        cluster.wait_programmed(&node, kind, name, "True").await;
    }
    let entry = cluster
        .wait_programmed(&node, "Rulesfile", "r", "True")
        .await;
    assert!(
        entry
            .digest
            .as_deref()
            .is_some_and(|d| d.starts_with("sha256:"))
    );
    let refs = entry
        .conditions
        .iter()
        .find(|c| c.type_ == "ResolvedRefs")
        .unwrap();
    assert_eq!(refs.status, "True");
    // The record is owned by the Node, so the garbage collector removes it with the node.
    let record = cluster.record(&node).await.unwrap();
    let owner = &record.metadata.owner_references.as_ref().unwrap()[0];
    let node_obj = Api::<Node>::all(cluster.client.clone())
        .get(&node)
        .await
        .unwrap();
    assert_eq!(
        (owner.kind.as_str(), &owner.uid),
        ("Node", node_obj.metadata.uid.as_ref().unwrap())
    );
    // No per-node data on the shared object: no finalizer was added.
    let shared = cluster.api::<Rulesfile>().get("r").await.unwrap();
    assert!(shared.finalizers().is_empty());

    // A priority change renames; a ConfigMap change rewrites.
    cluster
        .apply::<Rulesfile>(rulesfile(
            "r",
            json!({
                "priority": 30,
                "ociArtifact": oci(&registry, "falco/rules", "1"),
                "configMapRef": {"name": "rules-cm"},
                "inlineRules": [{"macro": "m", "condition": "evt.num > 0"}],
            }),
        ))
        .await;
    cms.patch(
        "rules-cm",
        &PatchParams::default(),
        &Patch::Merge(
            json!({"data": {"rules.yaml": "- macro: from-cm-v2\n  condition: evt.num > 0\n"}}),
        ),
    )
    .await
    .unwrap();
    wait_for("renamed and rewritten", || async {
        (sidecar.files("rules.d")
            == [
                "30-01-r-oci.yaml",
                "30-02-r-configmap.yaml",
                "30-03-r-inline.yaml",
            ]
            && std::fs::read_to_string(sidecar.dir("rules.d/30-02-r-configmap.yaml")).ok()?
                == "- macro: from-cm-v2\n  condition: evt.num > 0\n")
            .then_some(())
    })
    .await;
    assert_eq!(
        read(sidecar.dir("rules.d/30-01-r-oci.yaml")),
        "- macro: from-oci\n  condition: evt.num > 0\n"
    );

    // Deletion removes the files; the plugins configuration goes with the last plugin.
    cluster
        .api::<Config>()
        .delete("c", &DeleteParams::default())
        .await
        .unwrap();
    cluster
        .api::<Plugin>()
        .delete("json", &DeleteParams::default())
        .await
        .unwrap();
    wait_for("config and plugin removed", || async {
        (sidecar.files("config.d").is_empty() && sidecar.files("plugins").is_empty()).then_some(())
    })
    .await;
    // Files the sidecar did not write are never touched.
    std::fs::write(
        sidecar.dir("rules.d/00-packaged.yaml"),
        "- macro: packaged\n  condition: evt.num > 0\n",
    )
    .unwrap();
    cluster
        .api::<Rulesfile>()
        .delete("r", &DeleteParams::default())
        .await
        .unwrap();
    wait_for("rules removed", || async {
        (sidecar.files("rules.d") == ["00-packaged.yaml"]).then_some(())
    })
    .await;
    let (status, metrics) = sidecar.get("/metrics").await.unwrap();
    assert_eq!(status, 200);
    assert!(metrics.contains("falco_artifact_ready 1"), "{metrics}");
    assert!(
        metrics.contains("falco_artifact_registry_checks_total{outcome=\"pulled\"}"),
        "{metrics}"
    );
}

#[tokio::test]
async fn two_nodes_selector_match_and_unmatch() {
    let cluster = Cluster::new("selector").await;
    let a = cluster.node("a", &[("pool", "a")]).await;
    let b = cluster.node("b", &[("pool", "b")]).await;
    cluster
        .apply::<Rulesfile>(rulesfile(
            "only-a",
            json!({"inlineRules": [{"macro": "a", "condition": "evt.num > 0"}], "selector": {"matchLabels": {"pool": "a"}}}),
        ))
        .await;
    cluster
        .apply::<Rulesfile>(rulesfile(
            "everywhere",
            json!({"priority": 5, "inlineRules": [{"macro": "e", "condition": "evt.num > 0"}]}),
        ))
        .await;
    let mut sa = Sidecar::start(&cluster.ns, &a, &[]);
    let mut sb = Sidecar::start(&cluster.ns, &b, &[]);
    sa.wait_ready().await;
    sb.wait_ready().await;
    assert_eq!(
        sa.files("rules.d"),
        ["05-03-everywhere-inline.yaml", "50-03-only-a-inline.yaml"]
    );
    assert_eq!(sb.files("rules.d"), ["05-03-everywhere-inline.yaml"]);

    // Relabel: the selector stops matching on a and starts matching on b.
    cluster.label_node(&a, json!({"pool": "b"})).await;
    cluster.label_node(&b, json!({"pool": "a"})).await;
    wait_for("files follow the labels", || async {
        (sa.files("rules.d") == ["05-03-everywhere-inline.yaml"]
            && sb.files("rules.d") == ["05-03-everywhere-inline.yaml", "50-03-only-a-inline.yaml"])
        .then_some(())
    })
    .await;
    // Each node reports only what it holds.
    wait_for("records follow", || async {
        let ra = cluster.record(&a).await?.status?;
        let rb = cluster.record(&b).await?.status?;
        (ra.artifacts.len() == 1 && rb.artifacts.len() == 2).then_some(())
    })
    .await;
}

#[tokio::test]
async fn update_by_tag_and_by_digest() {
    let cluster = Cluster::new("update").await;
    let registry = Registry::start(RegistryOptions::default());
    let d1 = registry
        .push_rules(
            "falco/rules:stable",
            b"- macro: v1\n  condition: evt.num > 0\n",
        )
        .await;
    let node = cluster.node("n", &[]).await;
    cluster
        .apply::<Rulesfile>(rulesfile(
            "r",
            json!({"ociArtifact": oci(&registry, "falco/rules", "stable")}),
        ))
        .await;
    let mut sidecar = Sidecar::start(&cluster.ns, &node, &["--oci-resync-seconds", "1"]);
    sidecar.wait_ready().await;
    let path = sidecar.dir("rules.d/50-01-r-oci.yaml");
    assert_eq!(
        read(path.clone()),
        "- macro: v1\n  condition: evt.num > 0\n"
    );

    // The tag moves: the periodic check notices it.
    let d2 = registry
        .push_rules(
            "falco/rules:stable",
            b"- macro: v2\n  condition: evt.num > 0\n",
        )
        .await;
    wait_for("tag update", || async {
        (std::fs::read_to_string(&path).ok()? == "- macro: v2\n  condition: evt.num > 0\n")
            .then_some(())
    })
    .await;
    // The generation does not move with a tag: wait for the record to name the new digest
    // (the file is written before the record is patched).
    cluster
        .wait_programmed(&node, "Rulesfile", "r", "True")
        .await;
    wait_for("the record names the new digest", || async {
        let record = cluster.record(&node).await?;
        let entry = record
            .status?
            .artifacts
            .into_iter()
            .find(|a| a.kind == "Rulesfile" && a.name == "r")?;
        let programmed = entry
            .conditions
            .iter()
            .any(|c| c.type_ == "Programmed" && c.status == "True");
        (entry.digest.as_deref() == Some(d2.as_str()) && programmed).then_some(())
    })
    .await;

    // Pinning the old digest brings v1 back.
    cluster
        .apply::<Rulesfile>(rulesfile(
            "r",
            json!({"ociArtifact": oci(&registry, "falco/rules", &d1)}),
        ))
        .await;
    wait_for("digest pin", || async {
        (std::fs::read_to_string(&path).ok()? == "- macro: v1\n  condition: evt.num > 0\n")
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn failures_are_reported_and_write_nothing() {
    let cluster = Cluster::new("failures").await;
    let registry = Registry::start(RegistryOptions {
        credentials: Some(("falco".into(), "s3cret".into())),
        tls: false,
    });
    registry
        .push_rules(
            "falco/rules:1",
            b"- macro: private\n  condition: evt.num > 0\n",
        )
        .await;
    registry
        .push(
            "falco/plugin:1",
            PLUGIN_CONFIG_MEDIA_TYPE,
            PLUGIN_LAYER_MEDIA_TYPE,
            tar_gz("x.so", b"x"),
        )
        .await;
    registry
        .push(
            "falco/evil:1",
            RULESFILE_CONFIG_MEDIA_TYPE,
            RULESFILE_LAYER_MEDIA_TYPE,
            traversal_tar_gz(),
        )
        .await;
    let node = cluster.node("n", &[]).await;
    let secrets: Api<Secret> = cluster.api();
    let secret = |password: &str| -> Secret {
        serde_json::from_value(json!({"metadata": {"name": "creds"}, "stringData": {"username": "falco", "password": password}})).unwrap()
    };
    secrets
        .create(&PostParams::default(), &secret("wrong"))
        .await
        .unwrap();
    let with_auth = |repo: &str, secret: &str| {
        json!({"ociArtifact": {"image": {"repository": repo, "tag": "1"},
            "registry": {"name": registry.host, "plainHTTP": true, "auth": {"secretRef": {"name": secret}}}}})
    };
    cluster
        .apply::<Rulesfile>(rulesfile("auth", with_auth("falco/rules", "creds")))
        .await;
    cluster
        .apply::<Rulesfile>(rulesfile("nosecret", with_auth("falco/rules", "missing")))
        .await;
    cluster
        .apply::<Rulesfile>(rulesfile("media", with_auth("falco/plugin", "creds")))
        .await;
    cluster
        .apply::<Rulesfile>(rulesfile("evil", with_auth("falco/evil", "creds")))
        .await;
    cluster
        .apply::<Rulesfile>(rulesfile("absent", with_auth("falco/absent", "creds")))
        .await;

    let mut sidecar = Sidecar::start(&cluster.ns, &node, &[]);
    sidecar.wait_ready().await;
    cluster
        .wait_reason(&node, "auth", "AuthenticationFailed")
        .await;
    let e = cluster
        .wait_reason(&node, "nosecret", "SecretNotFound")
        .await;
    let refs = e
        .conditions
        .iter()
        .find(|c| c.type_ == "ResolvedRefs")
        .unwrap();
    assert_eq!(
        (refs.status.as_str(), refs.reason.as_str()),
        ("False", "SecretNotFound")
    );
    assert!(refs.message.contains("missing"), "{}", refs.message);
    // Fix the credentials: the next retry succeeds (Secrets are read by name, not watched).
    secrets
        .replace("creds", &PostParams::default(), &secret("s3cret"))
        .await
        .unwrap();
    cluster
        .wait_programmed(&node, "Rulesfile", "auth", "True")
        .await;
    cluster.wait_reason(&node, "media", "WrongMediaType").await;
    cluster.wait_reason(&node, "evil", "InvalidArchive").await;
    cluster
        .wait_reason(&node, "absent", "ArtifactNotFound")
        .await;
    assert_eq!(sidecar.files("rules.d"), ["50-01-auth-oci.yaml"]);
    assert!(!sidecar.root.path().join("escaped.yaml").exists());
    assert!(!sidecar.dir("escaped.yaml").exists());
}

fn key_pair() -> (p256::ecdsa::SigningKey, String) {
    use p256::pkcs8::DecodePrivateKey;
    let generated = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let signing = p256::ecdsa::SigningKey::from_pkcs8_pem(&generated.serialize_pem()).unwrap();
    (signing, generated.public_key_pem())
}

async fn sign(registry: &Registry, repo: &str, digest: &str, key: &p256::ecdsa::SigningKey) {
    let payload = falco_artifact_operator::cosign::simple_signing_payload(
        &format!("{}/{repo}", registry.host),
        digest,
    );
    let signature: p256::ecdsa::Signature = key.sign(&payload);
    let b64 = base64::engine::general_purpose::STANDARD.encode(signature.to_der().as_bytes());
    registry.push_signature(repo, payload, &b64, digest).await;
}

#[tokio::test]
async fn signatures_valid_invalid_and_missing() {
    let cluster = Cluster::new("cosign").await;
    let registry = Registry::start(RegistryOptions::default());
    let (key, public_pem) = key_pair();
    let (stranger, _) = key_pair();
    let good = registry
        .push_rules(
            "falco/good:1",
            b"- macro: signed\n  condition: evt.num > 0\n",
        )
        .await;
    sign(&registry, "falco/good", &good, &key).await;
    let bad = registry
        .push_rules(
            "falco/bad:1",
            b"- macro: forged\n  condition: evt.num > 0\n",
        )
        .await;
    sign(&registry, "falco/bad", &bad, &stranger).await;
    registry
        .push_rules(
            "falco/unsigned:1",
            b"- macro: unsigned\n  condition: evt.num > 0\n",
        )
        .await;
    let node = cluster.node("n", &[]).await;
    for repo in ["good", "bad", "unsigned"] {
        cluster
            .apply::<Rulesfile>(rulesfile(
                repo,
                json!({"ociArtifact": oci(&registry, &format!("falco/{repo}"), "1"),
                       "verify": {"cosign": {"publicKey": public_pem}}}),
            ))
            .await;
    }
    // A flag policy: every artifact must be signed, even one whose CR does not ask.
    let key_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(key_file.path(), &public_pem).unwrap();
    cluster
        .apply::<Rulesfile>(rulesfile(
            "policy",
            json!({"ociArtifact": oci(&registry, "falco/unsigned", "1")}),
        ))
        .await;
    let mut sidecar = Sidecar::start(
        &cluster.ns,
        &node,
        &[
            "--require-signatures",
            "--cosign-public-key",
            key_file.path().to_str().unwrap(),
        ],
    );
    sidecar.wait_ready().await;
    cluster
        .wait_programmed(&node, "Rulesfile", "good", "True")
        .await;
    for (name, reason) in [
        ("bad", "SignatureInvalid"),
        ("unsigned", "SignatureMissing"),
        ("policy", "SignatureMissing"),
    ] {
        cluster.wait_reason(&node, name, reason).await;
    }
    assert_eq!(sidecar.files("rules.d"), ["50-01-good-oci.yaml"]);
}

/// Signs `digest` of `repo` keyless with `leaf` and pushes the layer with its certificate, chain
/// and bundle annotations, as `cosign sign` does.
async fn sign_keyless(
    registry: &Registry,
    fulcio: &keyless::Fulcio,
    leaf: &keyless::Leaf,
    repo: &str,
    digest: &str,
) {
    let payload = falco_artifact_operator::cosign::simple_signing_payload(
        &format!("{}/{repo}", registry.host),
        digest,
    );
    let signed = fulcio.sign(leaf, &payload, keyless::SIGNED_AT);
    registry
        .push_signature_with(
            repo,
            payload,
            &signed.signature,
            digest,
            &[
                ("dev.sigstore.cosign/certificate", &signed.certificate),
                ("dev.sigstore.cosign/chain", &signed.chain),
                ("dev.sigstore.cosign/bundle", &signed.bundle),
            ],
        )
        .await;
}

#[tokio::test]
async fn keyless_signatures_checked_against_an_offline_trusted_root() {
    use keyless::{Fulcio, IDENTITY, ISSUER, NOT_AFTER, NOT_BEFORE};
    let cluster = Cluster::new("keyless").await;
    let registry = Registry::start(RegistryOptions::default());
    let fulcio = Fulcio::new("sigstore");
    let signer = fulcio.leaf(IDENTITY, ISSUER, NOT_BEFORE, NOT_AFTER);
    let impostor = fulcio.leaf("mallory@example.com", ISSUER, NOT_BEFORE, NOT_AFTER);
    let good = registry
        .push_rules(
            "falco/keyless:1",
            b"- macro: keyless\n  condition: evt.num > 0\n",
        )
        .await;
    sign_keyless(&registry, &fulcio, &signer, "falco/keyless", &good).await;
    let forged = registry
        .push_rules(
            "falco/impostor:1",
            b"- macro: impostor\n  condition: evt.num > 0\n",
        )
        .await;
    sign_keyless(&registry, &fulcio, &impostor, "falco/impostor", &forged).await;
    let node = cluster.node("n", &[]).await;
    let verify = json!({"cosign": {"keyless": {"identity": IDENTITY, "issuer": ISSUER}}});
    for repo in ["keyless", "impostor"] {
        cluster
            .apply::<Rulesfile>(rulesfile(
                repo,
                json!({"ociArtifact": oci(&registry, &format!("falco/{repo}"), "1"),
                       "verify": verify}),
            ))
            .await;
    }
    // The API server refuses a policy with both a key and a keyless signer (CEL).
    let both = rulesfile(
        "both",
        json!({"ociArtifact": oci(&registry, "falco/keyless", "1"),
               "verify": {"cosign": {"publicKey": "-----BEGIN PUBLIC KEY-----\n", "keyless": verify["cosign"]["keyless"]}}}),
    );
    let refused = cluster
        .api::<Rulesfile>()
        .patch("both", &PatchParams::apply("test"), &Patch::Apply(&both))
        .await
        .unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("set exactly one of publicKey and keyless"),
        "{refused}"
    );
    let root = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(root.path(), fulcio.trusted_root()).unwrap();
    let mut sidecar = Sidecar::start(
        &cluster.ns,
        &node,
        &["--cosign-trusted-root", root.path().to_str().unwrap()],
    );
    sidecar.wait_ready().await;
    cluster
        .wait_programmed(&node, "Rulesfile", "keyless", "True")
        .await;
    let entry = cluster
        .wait_reason(&node, "impostor", "SignatureInvalid")
        .await;
    let message = &entry
        .conditions
        .iter()
        .find(|c| c.type_ == "Programmed")
        .unwrap()
        .message;
    assert!(
        message.contains("certificate identity mallory@example.com is not signer@example.com"),
        "{message}"
    );
    assert_eq!(sidecar.files("rules.d"), ["50-01-keyless-oci.yaml"]);
}

#[tokio::test]
async fn restart_keeps_files_and_cleans_what_changed_meanwhile() {
    let cluster = Cluster::new("restart").await;
    let node = cluster.node("n", &[]).await;
    for name in ["keep", "drop"] {
        cluster
            .apply::<Rulesfile>(rulesfile(
                name,
                json!({"inlineRules": [{"macro": name, "condition": "evt.num > 0"}]}),
            ))
            .await;
    }
    let mut sidecar = Sidecar::start(&cluster.ns, &node, &[]);
    sidecar.wait_ready().await;
    assert_eq!(
        sidecar.files("rules.d"),
        ["50-03-drop-inline.yaml", "50-03-keep-inline.yaml"]
    );
    // Killed (SIGKILL); while it is down one artifact is deleted and one changes priority.
    let root = sidecar.stop();
    cluster
        .api::<Rulesfile>()
        .delete("drop", &DeleteParams::default())
        .await
        .unwrap();
    cluster
        .apply::<Rulesfile>(rulesfile(
            "keep",
            json!({"priority": 70, "inlineRules": [{"macro": "keep", "condition": "evt.num > 0"}]}),
        ))
        .await;
    cluster
        .wait_index("the deletion indexed", |data| {
            !data.contains_key("rulesfile.drop")
        })
        .await;
    let mut sidecar = Sidecar::start_in(root, &cluster.ns, &node, &[]);
    sidecar.wait_ready().await;
    assert_eq!(sidecar.files("rules.d"), ["70-03-keep-inline.yaml"]);
}

#[tokio::test]
async fn kill_during_a_plugin_write_keeps_a_whole_file() {
    const SIZE: usize = 32 * 1024 * 1024;
    let cluster = Cluster::new("kill").await;
    let registry = Registry::start(RegistryOptions::default());
    let push = |version: u8| {
        let registry = &registry;
        async move {
            registry
                .push(
                    "falco/big:1",
                    PLUGIN_CONFIG_MEDIA_TYPE,
                    PLUGIN_LAYER_MEDIA_TYPE,
                    tar_gz("libbig.so", &vec![version; SIZE]),
                )
                .await
        }
    };
    push(1).await;
    let node = cluster.node("n", &[]).await;
    cluster
        .apply::<Plugin>(json!({
            "apiVersion": "artifact.falcosecurity.dev/v1alpha1", "kind": "Plugin",
            "metadata": {"name": "big"},
            "spec": {"ociArtifact": oci(&registry, "falco/big", "1")},
        }))
        .await;
    let args = ["--oci-resync-seconds", "1"];
    let mut sidecar = Sidecar::start(&cluster.ns, &node, &args);
    sidecar.wait_ready().await;
    let path = sidecar.dir("plugins/big.so");
    assert_eq!(std::fs::metadata(&path).unwrap().len(), SIZE as u64);

    // A new version: SIGKILL the sidecar while it writes the temporary file.
    push(2).await;
    let staging = falco_artifact_operator::store::staging_dir(&sidecar.dir("plugins"));
    let deadline = Instant::now() + DEADLINE;
    loop {
        let writing = std::fs::read_dir(&staging)
            .unwrap()
            .filter_map(Result::ok)
            .any(|e| e.metadata().is_ok_and(|m| m.len() > 0));
        if writing {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never saw the write:\n{}",
            sidecar.log()
        );
        tokio::task::yield_now().await;
    }
    let root = sidecar.stop();
    let data = std::fs::read(root.path().join("plugins/big.so")).unwrap();
    assert_eq!(data.len(), SIZE, "half a file");
    assert!(data.iter().all(|b| *b == data[0]), "mixed versions");

    // The restarted sidecar removes the debris and finishes the update.
    let sidecar = Sidecar::start_in(root, &cluster.ns, &node, &args);
    wait_for("the new version", || async {
        let data = std::fs::read(sidecar.dir("plugins/big.so")).ok()?;
        (data.len() == SIZE && data.iter().all(|b| *b == 2)).then_some(())
    })
    .await;
    assert_eq!(sidecar.files("plugins"), ["big.so"]);
    let debris = std::fs::read_dir(falco_artifact_operator::store::staging_dir(
        &sidecar.dir("plugins"),
    ))
    .unwrap()
    .count();
    assert_eq!(debris, 0);
}

/// Item 3 end to end: two simulated nodes (sidecar processes) read their loader's status file
/// and carry it into their records; the instance operator aggregates them into the Falco
/// status. One node loaded its driver, the other failed: `DriverReady=False` names the kernel.
/// Then the failing node's loader succeeds on a retry (the file changes while the sidecar runs)
/// and the condition turns True. No artifact exists in the namespace: the report does not wait
/// for one.
#[tokio::test]
async fn driver_reports_reach_the_falco_status() {
    use falco_core::driver::status::{DriverOrigin, DriverStatus, Verification, reason};
    let cluster = Cluster::new("driver").await;
    let a = cluster.node("a", &[]).await;
    let b = cluster.node("b", &[]).await;
    let falco: falco_api::Falco = cluster
        .apply(json!({
            "apiVersion": "instance.falcosecurity.dev/v1alpha1", "kind": "Falco",
            "metadata": {"name": "falco"},
            "spec": {"driver": {"kind": "kmod"}},
        }))
        .await;
    assert!(falco.spec.driver.is_some());
    let loaded = DriverStatus {
        kind: "kmod".into(),
        version: Some("10.2.0+driver".into()),
        target: Some("debian".into()),
        kernel_release: Some("6.1.0-47-amd64".into()),
        kernel_version: Some("1".into()),
        file: Some("falco_debian_6.1.0-47-amd64_1.ko".into()),
        origin: Some(DriverOrigin::Downloaded),
        repository: Some("https://drivers.example/driver".into()),
        sha256: Some("ab".repeat(32)),
        verification: Verification::Signature,
        loaded: true,
        ..DriverStatus::default()
    };
    let failed = DriverStatus {
        kernel_release: Some("4.14.355-275.570.amzn2.x86_64".into()),
        target: Some("amazonlinux2".into()),
        file: Some("falco_amazonlinux2_4.14.355-275.570.amzn2.x86_64_1.ko".into()),
        ..loaded.clone()
    }
    .with_error(
        reason::NOT_FOUND,
        "unable to find a prebuilt driver falco_amazonlinux2_4.14.355-275.570.amzn2.x86_64_1.ko in any repository",
    );
    let write = |dir: &Path, status: &DriverStatus| {
        std::fs::create_dir_all(dir).unwrap();
        // As the loader does: a complete file renamed into place.
        let tmp = dir.join(".status.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(status).unwrap()).unwrap();
        std::fs::rename(&tmp, dir.join("status.json")).unwrap();
    };
    let (root_a, root_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write(&root_a.path().join("driver"), &loaded);
    write(&root_b.path().join("driver"), &failed);
    let file_a = root_a.path().join("driver/status.json");
    let file_b = root_b.path().join("driver/status.json");
    let status_b = file_b.to_str().unwrap().to_owned();
    let mut sa = Sidecar::start_in(
        root_a,
        &cluster.ns,
        &a,
        &["--driver-status-file", file_a.to_str().unwrap()],
    );
    let mut sb = Sidecar::start_in(
        root_b,
        &cluster.ns,
        &b,
        &["--driver-status-file", &status_b],
    );
    sa.wait_ready().await;
    sb.wait_ready().await;

    // Each record carries its node's report as the loader wrote it.
    let (ra, rb) = wait_for("both records carry a driver report", || async {
        let ra = cluster.record(&a).await?.status?.driver?;
        let rb = cluster.record(&b).await?.status?.driver?;
        Some((ra, rb))
    })
    .await;
    assert_eq!(ra, loaded);
    assert_eq!(rb, failed);

    let falcos: Api<falco_api::Falco> = cluster.api();
    let driver_ready = |f: &falco_api::Falco| {
        f.status
            .as_ref()?
            .conditions
            .iter()
            .find(|c| c.type_ == "DriverReady")
            .cloned()
    };
    // Both nodes' reports counted: the first one alone gives "1 of 1 nodes".
    let condition = wait_for("DriverReady=False over both nodes", || async {
        let f = falcos.get("falco").await.ok()?;
        driver_ready(&f).filter(|c| c.status == "False" && c.message.starts_with("1 of 2 nodes"))
    })
    .await;
    assert_eq!(condition.reason, "DriverNotFound");
    assert!(
        condition
            .message
            .starts_with("1 of 2 nodes have no driver: amazonlinux2 4.14.355-275.570.amzn2.x86_64 (DriverNotFound, 1 node)"),
        "{}",
        condition.message
    );
    let summary = falcos
        .get("falco")
        .await
        .unwrap()
        .status
        .unwrap()
        .driver
        .expect("status.driver");
    assert_eq!(
        (
            summary.nodes,
            summary.loaded,
            summary.downloaded,
            summary.compiled,
            summary.failed
        ),
        (2, 1, 1, 0, 1)
    );
    assert_eq!(summary.failing_kernels.len(), 1);
    assert_eq!(
        summary.failing_kernels[0].kernel_release,
        "4.14.355-275.570.amzn2.x86_64"
    );
    assert_eq!(summary.failing_kernels[0].nodes, 1);

    // The failing node's loader is retried by kubelet and compiles the driver this time.
    let compiled = DriverStatus {
        origin: Some(DriverOrigin::Compiled),
        repository: Some("compiled".into()),
        verification: Verification::None,
        loaded: true,
        reason: None,
        error: None,
        ..failed.clone()
    };
    write(file_b.parent().unwrap(), &compiled);
    let condition = wait_for("DriverReady=True", || async {
        let f = falcos.get("falco").await.ok()?;
        driver_ready(&f).filter(|c| c.status == "True")
    })
    .await;
    assert_eq!(condition.reason, "DriverLoaded");
    assert_eq!(
        condition.message,
        "2 of 2 nodes have their driver (1 downloaded, 1 compiled)."
    );
    drop((sa, sb));
}

/// A rules document that says how long it is: `# bytes: <n>` on its first line, padded with
/// comment lines to about `size` bytes. A file Falco would load is whole if its length is the
/// one its first line states.
fn sized_rules(name: &str, size: usize) -> Vec<u8> {
    let body = format!("- list: {name}\n  items: [a, b]\n");
    let pad_line = format!("# {}\n", "p".repeat(77));
    let lines = size.saturating_sub(body.len() + 20) / pad_line.len();
    let mut rest = body.into_bytes();
    for _ in 0..lines {
        rest.extend_from_slice(pad_line.as_bytes());
    }
    rest.extend_from_slice(b"# end\n");
    let header_len = "# bytes: 0000000000\n".len();
    let mut out = format!("# bytes: {:010}\n", rest.len() + header_len).into_bytes();
    out.extend(rest);
    out
}

/// What a directory listing shows Falco: for `rules.d`, the regular `*.yaml`/`*.yml` files of
/// the directory itself; for `config.d`, every regular file (Falco's `config_files` loader
/// takes them all). Returns the files that are not whole, and whether an in-progress
/// temporary file was seen in the staging directory.
fn falco_view_violations(dir: &Path, rules_only_yaml: bool) -> (Vec<String>, bool) {
    let mut bad = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (bad, false);
    };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if !path.is_file() {
            continue;
        }
        if rules_only_yaml && !(name.ends_with(".yaml") || name.ends_with(".yml")) {
            continue;
        }
        let Ok(data) = std::fs::read(&path) else {
            continue; // renamed away between listing and reading
        };
        let stated = std::str::from_utf8(data.get(..20).unwrap_or_default())
            .ok()
            .and_then(|h| h.strip_prefix("# bytes: "))
            .and_then(|h| h.trim_end().parse::<usize>().ok());
        match stated {
            Some(n) if n == data.len() && data.ends_with(b"# end\n") => {}
            // Files written in this test without a header (config fragments, the plugins
            // file) must still parse as YAML: a half file of them would not, in general, but
            // a cut at a line boundary could; the header files are the real check.
            None if serde_yaml::from_slice::<serde_yaml::Value>(&data).is_ok() => {}
            _ => bad.push(format!("{name}: {} bytes, header {stated:?}", data.len())),
        }
    }
    let staging = falco_artifact_operator::store::staging_dir(dir);
    let in_progress = std::fs::read_dir(&staging).is_ok_and(|d| {
        d.filter_map(Result::ok)
            .any(|e| e.metadata().is_ok_and(|m| m.len() > 0))
    });
    (bad, in_progress)
}

async fn file_batches(sidecar: &Sidecar) -> u64 {
    let (_, metrics) = sidecar.get("/metrics").await.expect("metrics");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("falco_artifact_file_batches_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no file_batches metric:\n{metrics}"))
}

/// Issue 14 item 2: while a large rules artifact is written (and rewritten), a listing of the
/// folders Falco loads shows only whole files: the temporary file lives in the staging
/// sub-directory, which Falco neither lists nor watches. Then a burst of four artifacts
/// (OCI, ConfigMap, inline Rulesfiles and a Config) applied together lands as one batch.
#[tokio::test]
async fn falco_sees_only_whole_files_and_a_burst_lands_as_one_batch() {
    const BIG: usize = 24 * 1024 * 1024;
    let cluster = Cluster::new("whole").await;
    let registry = Registry::start(RegistryOptions::default());
    let v1 = sized_rules("big_v1", BIG);
    let v2 = sized_rules("big_v2", BIG + 4096);
    registry.push_rules("falco/big:1", &v1).await;
    registry.push_rules("falco/big:2", &v2).await;
    registry
        .push_rules("falco/small:1", &sized_rules("small", 4096))
        .await;
    let node = cluster.node("n", &[]).await;
    let cms: Api<ConfigMap> = cluster.api();
    let cm_rules = String::from_utf8(sized_rules("from_cm", 2048)).unwrap();
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(
            json!({"metadata": {"name": "rules-cm"}, "data": {"rules.yaml": cm_rules}}),
        )
        .unwrap(),
    )
    .await
    .unwrap();
    // A long batch window: the four applies of the burst below reach the index well within it.
    let mut sidecar = Sidecar::start(&cluster.ns, &node, &["--batch-window-ms", "5000"]);
    sidecar.wait_ready().await;

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let lister = {
        let stop = stop.clone();
        let rules = sidecar.dir("rules.d");
        let config = sidecar.dir("config.d");
        std::thread::spawn(move || {
            let (mut bad, mut saw_write, mut listings) = (Vec::new(), false, 0u64);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for (dir, yaml_only) in [(&rules, true), (&config, false)] {
                    let (b, w) = falco_view_violations(dir, yaml_only);
                    bad.extend(b);
                    saw_write |= w;
                }
                listings += 1;
            }
            (bad, saw_write, listings)
        })
    };

    let big = sidecar.dir("rules.d/50-01-big-oci.yaml");
    cluster
        .apply::<Rulesfile>(rulesfile(
            "big",
            json!({"ociArtifact": oci(&registry, "falco/big", "1")}),
        ))
        .await;
    wait_for("v1 in place", || async {
        (std::fs::read(&big).ok()? == v1).then_some(())
    })
    .await;
    cluster
        .apply::<Rulesfile>(rulesfile(
            "big",
            json!({"ociArtifact": oci(&registry, "falco/big", "2")}),
        ))
        .await;
    wait_for("v2 in place", || async {
        (std::fs::read(&big).ok()? == v2).then_some(())
    })
    .await;

    // The record is written after the batch is counted: the count is settled then.
    cluster
        .wait_programmed(&node, "Rulesfile", "big", "True")
        .await;
    // The burst: four artifacts applied at once.
    let before = file_batches(&sidecar).await;
    let inline = rulesfile(
        "inline",
        json!({"inlineRules": [{"list": "inline_list", "items": ["x"]}]}),
    );
    let from_cm = rulesfile("from-cm", json!({"configMapRef": {"name": "rules-cm"}}));
    let small = rulesfile(
        "small",
        json!({"ociArtifact": oci(&registry, "falco/small", "1")}),
    );
    let config = json!({
        "apiVersion": "artifact.falcosecurity.dev/v1alpha1", "kind": "Config",
        "metadata": {"name": "c"},
        "spec": {"config": {"json_output": true}},
    });
    futures::join!(
        cluster.apply::<Rulesfile>(inline),
        cluster.apply::<Rulesfile>(from_cm),
        cluster.apply::<Rulesfile>(small),
        cluster.apply::<Config>(config),
    );
    let want_rules = [
        "50-01-big-oci.yaml",
        "50-01-small-oci.yaml",
        "50-02-from-cm-configmap.yaml",
        "50-03-inline-inline.yaml",
    ];
    wait_for("the burst on disk", || async {
        (sidecar.files("rules.d") == want_rules
            && sidecar.files("config.d") == ["50-03-c-inline.yaml"])
        .then_some(())
    })
    .await;
    for name in ["inline", "from-cm", "small"] {
        cluster
            .wait_programmed(&node, "Rulesfile", name, "True")
            .await;
    }
    let batches = file_batches(&sidecar).await - before;
    assert_eq!(
        batches,
        1,
        "the burst was written in {batches} batches:\n{}",
        sidecar.log()
    );

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (bad, saw_write, listings) = lister.join().unwrap();
    assert!(
        bad.is_empty(),
        "Falco could have loaded partial files: {bad:?}"
    );
    assert!(
        saw_write,
        "no listing ({listings}) caught a write in progress"
    );
    // Nothing left in the staging directories.
    for sub in ["rules.d", "config.d"] {
        let staging = falco_artifact_operator::store::staging_dir(&sidecar.dir(sub));
        let left = std::fs::read_dir(&staging)
            .unwrap_or_else(|e| panic!("{}: {e}", staging.display()))
            .count();
        assert_eq!(left, 0, "{sub}");
    }
}

/// Issue 14 item 4: the image-pull Secrets clusters already hold. A `dockerconfigjson` Secret
/// whose `auths` names the registry host, and a legacy `dockercfg` Secret whose key carries a
/// scheme and a repository path prefix, both authenticate; a `dockerconfigjson` for another
/// registry is refused with `SecretKeyMissing` naming the registries it has. Then the
/// `tls.insecureSkipVerify` path: a TLS registry whose CA the sidecar does not trust is refused
/// with `TLSVerificationFailed`, and accepted with `insecureSkipVerify`.
#[tokio::test]
async fn image_pull_secrets_match_by_host_and_insecure_skip_verify() {
    let cluster = Cluster::new("pullsecret").await;
    let registry = Registry::start(RegistryOptions {
        credentials: Some(("falco".into(), "s3cret".into())),
        tls: false,
    });
    registry
        .push_rules("falco/rules:1", b"- list: private\n  items: []\n")
        .await;
    let tls = Registry::start(RegistryOptions {
        credentials: None,
        tls: true,
    });
    tls.push_rules("falco/rules:1", b"- list: tls\n  items: []\n")
        .await;
    let node = cluster.node("n", &[]).await;
    let auth = base64::engine::general_purpose::STANDARD.encode("falco:s3cret");
    let secrets: Api<Secret> = cluster.api();
    for (name, type_, key, content) in [
        (
            "json",
            "kubernetes.io/dockerconfigjson",
            ".dockerconfigjson",
            json!({"auths": {
                "ghcr.io": {"auth": "Z2hjcjp4"},
                registry.host.clone(): {"auth": auth},
            }}),
        ),
        (
            "legacy",
            "kubernetes.io/dockercfg",
            ".dockercfg",
            json!({format!("http://{}/falco", registry.host): {"username": "falco", "password": "s3cret"}}),
        ),
        (
            "other",
            "kubernetes.io/dockerconfigjson",
            ".dockerconfigjson",
            json!({"auths": {"quay.io": {"auth": auth}}}),
        ),
    ] {
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": name}, "type": type_,
            "stringData": {key: content.to_string()},
        }))
        .unwrap();
        secrets
            .create(&PostParams::default(), &secret)
            .await
            .unwrap();
    }
    let with_secret = |secret: &str| {
        json!({"ociArtifact": {"image": {"repository": "falco/rules", "tag": "1"},
            "registry": {"name": registry.host, "plainHTTP": true, "auth": {"secretRef": {"name": secret}}}}})
    };
    for name in ["json", "legacy", "other"] {
        cluster
            .apply::<Rulesfile>(rulesfile(name, with_secret(name)))
            .await;
    }
    let tls_rules = |skip: bool| {
        json!({"ociArtifact": {"image": {"repository": "falco/rules", "tag": "1"},
            "registry": {"name": tls.host, "tls": {"insecureSkipVerify": skip}}}})
    };
    cluster
        .apply::<Rulesfile>(rulesfile("tls-verified", tls_rules(false)))
        .await;
    cluster
        .apply::<Rulesfile>(rulesfile("tls-skip", tls_rules(true)))
        .await;

    let mut sidecar = Sidecar::start(&cluster.ns, &node, &[]);
    sidecar.wait_ready().await;
    for name in ["json", "legacy", "tls-skip"] {
        cluster
            .wait_programmed(&node, "Rulesfile", name, "True")
            .await;
    }
    assert_eq!(
        read(sidecar.dir("rules.d/50-01-json-oci.yaml")),
        "- list: private\n  items: []\n"
    );
    assert_eq!(
        read(sidecar.dir("rules.d/50-01-tls-skip-oci.yaml")),
        "- list: tls\n  items: []\n"
    );
    let other = cluster
        .wait_reason(&node, "other", "SecretKeyMissing")
        .await;
    let message = &other
        .conditions
        .iter()
        .find(|c| c.type_ == "Programmed")
        .unwrap()
        .message;
    assert!(
        message.contains(&registry.host) && message.contains("quay.io"),
        "{message}"
    );
    cluster
        .wait_reason(&node, "tls-verified", "TLSVerificationFailed")
        .await;
    assert_eq!(
        sidecar.files("rules.d"),
        [
            "50-01-json-oci.yaml",
            "50-01-legacy-oci.yaml",
            "50-01-tls-skip-oci.yaml"
        ]
    );
}

fn programmed_message(entry: &NodeArtifact) -> String {
    entry
        .conditions
        .iter()
        .find(|c| c.type_ == "Programmed")
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

/// Issue 14 item 7: a Rulesfile whose content is not YAML, or not a Falco rules document, is
/// refused before it is written, from every source: the node keeps the previous good file and
/// the record says `InvalidRulesfile` with the line and column.
#[tokio::test]
async fn a_broken_rules_file_never_replaces_a_good_one() {
    let cluster = Cluster::new("badrules").await;
    let registry = Registry::start(RegistryOptions::default());
    let good = "- list: good\n  items: [a]\n";
    registry.push_rules("falco/rules:1", good.as_bytes()).await;
    registry
        .push_rules("falco/rules:2", b"- list: broken\n  items: [a\n")
        .await;
    let node = cluster.node("n", &[]).await;
    let cms: Api<ConfigMap> = cluster.api();
    let cm = |rules: &str| -> ConfigMap {
        serde_json::from_value(
            json!({"metadata": {"name": "rules-cm"}, "data": {"rules.yaml": rules}}),
        )
        .unwrap()
    };
    cms.create(&PostParams::default(), &cm(good)).await.unwrap();
    cluster
        .apply::<Rulesfile>(rulesfile(
            "oci",
            json!({"ociArtifact": oci(&registry, "falco/rules", "1")}),
        ))
        .await;
    cluster
        .apply::<Rulesfile>(rulesfile(
            "cm",
            json!({"configMapRef": {"name": "rules-cm"}}),
        ))
        .await;
    cluster
        .apply::<Rulesfile>(rulesfile(
            "inline",
            json!({"inlineRules": [{"list": "l", "items": ["a"]}]}),
        ))
        .await;
    let mut sidecar = Sidecar::start(&cluster.ns, &node, &[]);
    sidecar.wait_ready().await;
    for name in ["oci", "cm", "inline"] {
        cluster
            .wait_programmed(&node, "Rulesfile", name, "True")
            .await;
    }
    let inline_before = read(sidecar.dir("rules.d/50-03-inline-inline.yaml"));

    // Broken versions from every source.
    cluster
        .apply::<Rulesfile>(rulesfile(
            "oci",
            json!({"ociArtifact": oci(&registry, "falco/rules", "2")}),
        ))
        .await;
    cms.replace(
        "rules-cm",
        &PostParams::default(),
        &cm("- list: l\n  items: [a]\n\n- rule: r\n  desc: d\n  condition: c\n"),
    )
    .await
    .unwrap();
    cluster
        .apply::<Rulesfile>(rulesfile(
            "inline",
            json!({"inlineRules": {"rule": "not a list"}}),
        ))
        .await;
    let oci_entry = cluster.wait_reason(&node, "oci", "InvalidRulesfile").await;
    let message = programmed_message(&oci_entry);
    assert!(
        message.contains("not YAML") && message.contains("line "),
        "{message}"
    );
    let cm_entry = cluster.wait_reason(&node, "cm", "InvalidRulesfile").await;
    let message = programmed_message(&cm_entry);
    assert!(
        message.contains("line 4 column 1") && message.contains("lacks output, priority"),
        "{message}"
    );
    let inline_entry = cluster
        .wait_reason(&node, "inline", "InvalidRulesfile")
        .await;
    let message = programmed_message(&inline_entry);
    assert!(message.contains("line 1 column 1"), "{message}");
    // The previous good files stay, byte for byte.
    assert_eq!(read(sidecar.dir("rules.d/50-01-oci-oci.yaml")), good);
    assert_eq!(read(sidecar.dir("rules.d/50-02-cm-configmap.yaml")), good);
    assert_eq!(
        read(sidecar.dir("rules.d/50-03-inline-inline.yaml")),
        inline_before
    );
}

/// Issue 14 item 4, the bearer path: a Secret with only `password` is sent as
/// `Authorization: Bearer <token>` on the registry requests (seen by a loopback proxy in front
/// of the registry), and the artifact installs.
#[tokio::test]
async fn a_password_only_secret_is_sent_as_a_bearer_token() {
    let cluster = Cluster::new("bearer").await;
    let registry = Registry::start(RegistryOptions::default());
    registry
        .push_rules("falco/rules:1", b"- list: bearer\n  items: []\n")
        .await;
    let proxy = Proxy::start(&registry.host, 0, 0).await;
    let node = cluster.node("n", &[]).await;
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "token"}, "stringData": {"password": "t0ken"},
    }))
    .unwrap();
    cluster
        .api::<Secret>()
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    cluster
        .apply::<Rulesfile>(rulesfile(
            "r",
            json!({"ociArtifact": {"image": {"repository": "falco/rules", "tag": "1"},
                "registry": {"name": proxy.host, "plainHTTP": true, "auth": {"secretRef": {"name": "token"}}}}}),
        ))
        .await;
    let mut sidecar = Sidecar::start(&cluster.ns, &node, &[]);
    sidecar.wait_ready().await;
    cluster
        .wait_programmed(&node, "Rulesfile", "r", "True")
        .await;
    let manifest_requests: Vec<_> = proxy
        .seen()
        .into_iter()
        .filter(|s| s.path.contains("/manifests/"))
        .collect();
    assert!(!manifest_requests.is_empty());
    for seen in &manifest_requests {
        assert_eq!(
            seen.authorization.as_deref(),
            Some("Bearer t0ken"),
            "{seen:?}"
        );
    }
}
