//! The controller: watches, sync passes, retries and the startup gate.
//!
//! Two watch streams, none cluster-wide: the artifact index of the Falco namespace (one
//! ConfigMap, field selector `metadata.name=falco-artifact-index`, kept by the instance operator,
//! [`falco_api::index`]) and this node's own `Node` (field selector `metadata.name=<node>`,
//! metadata only). The artifacts and ConfigMaps the index names are read by name when their
//! version in the index changes ([`crate::index`]). Every event wakes one *sync pass* over the
//! artifacts selecting this node; events arriving during a pass coalesce into one more pass. A
//! pass is cheap when nothing changed: each artifact is skipped unless its input (spec,
//! referenced ConfigMap version) changed, a retry or a tag re-check is due, or one of its files
//! vanished from disk. The pass ends by removing the files of artifacts that no longer select
//! this node, rewriting the aggregated plugins configuration and writing this node's
//! `NodeArtifacts` record if it changed.
//!
//! The first pass runs once both watches have listed; when it ends, `/readyz` turns ready. A
//! failed artifact still counts (as upstream), so an unreachable registry cannot keep Falco from
//! starting; it is retried with exponential backoff and jitter, never sooner than a registry's
//! `Retry-After`. Without an index (no artifact was ever created in the namespace, or the
//! instance operator has not written it yet) a pass changes nothing on disk: files are removed
//! only when an index says their artifact is gone.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use falco_api::index::INDEX_CONFIG_MAP;
use falco_api::{NodeArtifact, NodeArtifactsStatus};
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Node, Secret};
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tokio::sync::Notify;

use crate::cosign::{self, PublicKey, TrustedRoot};
use crate::index::Objects;
use crate::metrics::{FailureLabels, KindLabel, Metrics, PullLabels};
use crate::oci::{Auth, Limits, PullOutcome, Puller, RegistryConfig, RetryPolicy};
use crate::reconcile::{self, Artifact, ArtifactKind, CosignPolicy, OciSource};
use crate::status::{self, Outcome, Reporter};
use crate::store::{self, ArtifactKey, Dirs, Kind};
use crate::{Error, Result};

/// Longest wait between two attempts of a failing artifact.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Wait before retrying a failed status write.
const STATUS_RETRY: Duration = Duration::from_secs(5);

/// Everything the controller needs besides the client.
#[derive(Debug, Clone)]
pub struct Settings {
    /// This node.
    pub node_name: String,
    /// The Falco namespace.
    pub namespace: String,
    /// Shared and private directories.
    pub dirs: Dirs,
    /// Extra CA certificates for registries.
    pub ca_pem: Option<Vec<u8>>,
    /// Registries reached over plain HTTP.
    pub insecure_registries: Vec<String>,
    /// Re-check interval of tags.
    pub resync: Option<Duration>,
    /// The cosign policy of flags (a PEM key or a keyless signer), for artifacts whose CR
    /// names none when signatures are required.
    pub cosign: Option<CosignPolicy>,
    /// Sigstore trust material keyless signatures are checked against.
    pub trusted_root: Option<Arc<TrustedRoot>>,
    /// Require a signature on every OCI artifact.
    pub require_signatures: bool,
    /// Registry retries.
    pub retry: RetryPolicy,
    /// Size limits.
    pub limits: Limits,
    /// The driver loader's status file (Falco with `spec.driver` kmod or auto), carried into
    /// this node's record.
    pub driver_status_file: Option<std::path::PathBuf>,
    /// How long a pass waits after the first change event, so that a burst of artifact
    /// changes (several CRs applied at once) becomes one batch of files and one Falco reload.
    pub batch_window: Duration,
}

/// How often the driver status file is checked for a change (a `stat`; read only when its
/// size or modification time moved).
const DRIVER_STATUS_POLL: Duration = Duration::from_secs(2);

/// The loader's status file, read and parsed; `None` when absent or not a status (a file
/// being replaced is renamed into place, so a half-written one is never seen).
fn read_driver_status(path: &std::path::Path) -> Option<falco_core::driver::status::DriverStatus> {
    let bytes = std::fs::read(path).ok()?;
    let status = falco_core::driver::status::DriverStatus::parse(&bytes);
    if status.is_none() {
        tracing::warn!(path = %path.display(), "the driver status file is not a driver status; ignored");
    }
    status
}

/// Wakes the sync loop when the status file changes (it is written by the loader, which runs
/// after this sidecar has started, and again on every retry of a failing loader).
fn watch_driver_status(path: std::path::PathBuf, notify: Arc<Notify>) {
    tokio::spawn(async move {
        let stamp = |p: &std::path::Path| {
            std::fs::metadata(p)
                .ok()
                .map(|m| (m.len(), m.modified().ok()))
        };
        let mut last = stamp(&path);
        loop {
            tokio::time::sleep(DRIVER_STATUS_POLL).await;
            let now = stamp(&path);
            if now != last {
                last = now;
                notify.notify_one();
            }
        }
    });
}

/// What a pass reads: the two watch caches and the objects the index names.
struct Caches {
    index: Store<ConfigMap>,
    nodes: Store<PartialObjectMeta<Node>>,
    objects: Objects,
}

/// What the controller remembers about one artifact between passes.
struct Memo {
    hash: u64,
    generation: i64,
    failures: u32,
    next_check: Option<Instant>,
    entry: NodeArtifact,
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct PullerKey {
    host: String,
    plain_http: bool,
    insecure_skip_verify: bool,
    auth: Auth,
}

/// One file an artifact needs written, held until the pass's batch is committed.
struct Write {
    key: ArtifactKey,
    priority: u8,
    data: Vec<u8>,
    mode: u32,
    source_digest: Option<String>,
}

/// A due artifact after its pull and verification, before its files are written.
struct Prepared {
    artifact: Artifact,
    outcome: Outcome,
    writes: Vec<Write>,
    keys: Vec<ArtifactKey>,
}

/// The controller state owned by the sync loop.
struct Controller {
    client: Client,
    settings: Settings,
    metrics: Arc<Metrics>,
    store: store::Store,
    memos: HashMap<(ArtifactKind, String), Memo>,
    pullers: HashMap<PullerKey, Arc<Puller>>,
    verified: HashSet<(String, u64)>,
    reporter: Reporter,
}

fn spawn_watch<K, S>(stream: S, notify: Arc<Notify>, what: &'static str)
where
    S: Stream<Item = std::result::Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    K: Send + 'static,
{
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(_) => notify.notify_one(),
                Err(e) => tracing::warn!(watch = what, error = %e, "watch error, retrying"),
            }
        }
    });
}

/// Runs the controller until `shutdown` completes. `ready` is set after the first full sync.
pub async fn run(
    client: Client,
    settings: Settings,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let notify = Arc::new(Notify::new());
    let ns = settings.namespace.clone();
    let mut caches = Caches {
        index: {
            let (reader, writer) = reflector::store();
            let api: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
            let config =
                watcher::Config::default().fields(&format!("metadata.name={INDEX_CONFIG_MAP}"));
            let stream = reflector::reflector(writer, watcher(api, config).default_backoff());
            spawn_watch(stream, notify.clone(), "index");
            reader
        },
        nodes: {
            let (reader, writer) = reflector::store();
            // Metadata only: labels and uid are all a pass needs from the Node.
            let api: Api<PartialObjectMeta<Node>> = Api::all(client.clone());
            let config =
                watcher::Config::default().fields(&format!("metadata.name={}", settings.node_name));
            let stream = reflector::reflector(writer, watcher(api, config).default_backoff());
            spawn_watch(stream, notify.clone(), "node");
            reader
        },
        objects: Objects::default(),
    };
    if let Some(path) = &settings.driver_status_file {
        watch_driver_status(path.clone(), notify.clone());
    }
    let store = store::Store::open(settings.dirs.clone())?;
    let reporter = Reporter::new(Api::namespaced(client.clone(), &ns), &settings.node_name);
    let mut controller = Controller {
        client,
        settings,
        metrics,
        store,
        memos: HashMap::new(),
        pullers: HashMap::new(),
        verified: HashSet::new(),
        reporter,
    };
    let mut shutdown = std::pin::pin!(shutdown);
    let synced = async {
        for (what, ready) in [
            ("index", caches.index.wait_until_ready().await),
            ("node", caches.nodes.wait_until_ready().await),
        ] {
            if ready.is_err() {
                tracing::error!(watch = what, "watch ended before its first list");
            }
        }
    };
    tokio::select! {
        () = synced => {}
        () = &mut shutdown => return Ok(()),
    }
    tracing::info!(node = %controller.settings.node_name, "watches synced, first sync pass");
    loop {
        let wake = controller.pass(&mut caches).await;
        if !ready.swap(true, Ordering::AcqRel) {
            controller.metrics.ready.set(1);
            tracing::info!("first sync done, ready");
        }
        let sleep = async {
            match wake {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = notify.notified() => {
                // Let the rest of a burst arrive; the pass reads the caches as they are then.
                tokio::select! {
                    () = tokio::time::sleep(controller.settings.batch_window) => {}
                    () = &mut shutdown => return Ok(()),
                }
            }
            () = sleep => {}
            () = &mut shutdown => return Ok(()),
        }
    }
}

fn jitter(seed: &str) -> f64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    seed.hash(&mut h);
    Instant::now().hash(&mut h);
    0.75 + (h.finish() % 500) as f64 / 1000.0
}

impl Controller {
    /// Writes the driver report while there is no artifact index (the artifact entries last
    /// written, none at first, stay as they are).
    async fn report_driver_only(
        &mut self,
        caches: &Caches,
        driver: Option<falco_core::driver::status::DriverStatus>,
    ) -> Option<Duration> {
        let uid = caches
            .nodes
            .state()
            .into_iter()
            .find(|n| n.name_any() == self.settings.node_name)
            .and_then(|n| n.metadata.uid.clone())?;
        let status = NodeArtifactsStatus {
            artifacts: self.reporter.last_artifacts(),
            driver,
        };
        match self.reporter.report(&uid, &status).await {
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(error = %e, "writing this node's NodeArtifacts record");
                Some(STATUS_RETRY)
            }
        }
    }

    /// One sync pass; returns when the next one is due without any event.
    async fn pass(&mut self, caches: &mut Caches) -> Option<Duration> {
        self.metrics.passes.inc();
        let ns = self.settings.namespace.clone();
        let driver = self
            .settings
            .driver_status_file
            .as_deref()
            .and_then(read_driver_status);
        let Some(index) = caches
            .index
            .get(&ObjectRef::new(INDEX_CONFIG_MAP).within(&ns))
            .map(|cm| {
                cm.data
                    .as_ref()
                    .map(falco_api::index::decode)
                    .unwrap_or_default()
            })
        else {
            tracing::warn!(namespace = %ns, "no artifact index ({INDEX_CONFIG_MAP}) in the namespace yet: nothing to deliver, files kept");
            // The driver report does not wait for artifacts: a namespace may have none.
            if driver.is_some() {
                return self.report_driver_only(caches, driver).await;
            }
            return None;
        };
        let refresh = caches.objects.refresh(&self.client, &ns, &index).await;
        let node = caches
            .nodes
            .state()
            .into_iter()
            .find(|n| n.name_any() == self.settings.node_name);
        let labels: BTreeMap<String, String> = node
            .as_ref()
            .map(|n| n.labels().clone())
            .unwrap_or_default();
        let node_uid = node.as_ref().and_then(|n| n.metadata.uid.clone());

        let mut artifacts: Vec<Artifact> = caches.objects.artifacts().cloned().collect();
        artifacts.retain(|a| match crate::selector::matches(a.selector.as_ref(), &labels) {
            Ok(selected) => selected,
            Err(e) => {
                tracing::warn!(kind = a.kind.as_str(), name = %a.name, error = %e, "selector refused; not delivered");
                false
            }
        });
        artifacts.sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
        for kind in ArtifactKind::ALL {
            let n = artifacts.iter().filter(|a| a.kind == kind).count();
            self.metrics
                .selected
                .get_or_create(&KindLabel {
                    kind: kind.as_str(),
                })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }

        let now = Instant::now();
        let mut keep: HashSet<ArtifactKey> = HashSet::new();
        let mut plugin_entries = Vec::new();
        let mut entries = Vec::new();
        let mut wake: Option<Instant> = None;
        if refresh.failures > 0 {
            wake = Some(now + STATUS_RETRY);
        }
        let mut selected_ids = HashSet::new();
        // Phase 1: every due artifact is dereferenced, pulled and verified; nothing is written.
        let mut prepared: Vec<((ArtifactKind, String), u64, Prepared)> = Vec::new();
        let mut plugin_plans = Vec::with_capacity(artifacts.len());
        for artifact in &artifacts {
            let id = (artifact.kind, artifact.name.clone());
            selected_ids.insert(id.clone());
            let config_map = artifact
                .config_map
                .as_ref()
                .and_then(|name| caches.objects.config_map(name));
            let hash = reconcile::input_hash(artifact, config_map);
            let plan = reconcile::build(artifact, config_map);
            keep.extend(plan.keys.iter().cloned());
            let files_vanished = plan
                .keys
                .iter()
                .any(|k| self.store.get(k).is_some_and(|e| !e.path.is_file()));
            let due = match self.memos.get(&id) {
                None => true,
                Some(m) => {
                    m.hash != hash
                        || m.generation != artifact.generation
                        || m.next_check.is_some_and(|t| now >= t)
                        || files_vanished
                }
            };
            plugin_plans.push((
                plan.plugin_entry.clone(),
                plan.oci.as_ref().map(|(k, _, _)| k.clone()),
            ));
            if due {
                prepared.push((id, hash, self.prepare(artifact, plan).await));
            }
        }
        // Phase 2: every new content lands in one burst of renames, so Falco, whose watcher
        // debounces events, reloads once for all of them.
        self.commit(&mut prepared);
        for (id, hash, p) in prepared {
            let memo = self.finish(hash, p);
            self.memos.insert(id, memo);
        }
        for (artifact, (plugin_entry, oci_key)) in artifacts.iter().zip(plugin_plans) {
            let id = (artifact.kind, artifact.name.clone());
            let memo = &self.memos[&id];
            if let Some(t) = memo.next_check {
                wake = Some(wake.map_or(t, |w| w.min(t)));
            }
            entries.push(memo.entry.clone());
            // A plugin is loaded only once its library is on disk, so that a failed first
            // pull cannot make Falco refuse to start.
            if let Some(entry) = plugin_entry
                && oci_key.is_none_or(|k| self.store.get(&k).is_some())
            {
                plugin_entries.push(entry);
            }
        }
        self.memos.retain(|id, _| selected_ids.contains(id));

        match self
            .store
            .retain(|k| k.kind == Kind::PluginsConfig || keep.contains(k))
        {
            Ok(removed) => {
                for key in removed {
                    tracing::info!(kind = ?key.kind, name = %key.name, medium = key.medium.as_str(), "removed: no longer selected");
                }
            }
            Err(e) => tracing::error!(error = %e, "removing files no longer needed"),
        }
        if let Err(e) = self.store.put_plugins_config(&plugin_entries) {
            tracing::error!(error = %e, "writing the plugins configuration");
        }

        let status = NodeArtifactsStatus {
            artifacts: entries,
            driver,
        };
        match node_uid {
            None => {
                tracing::warn!(node = %self.settings.node_name, "Node not found: artifacts without selector are delivered, no status record is written")
            }
            Some(uid) => {
                if let Err(e) = self.reporter.report(&uid, &status).await {
                    tracing::warn!(error = %e, "writing this node's NodeArtifacts record");
                    let retry = Instant::now() + STATUS_RETRY;
                    wake = Some(wake.map_or(retry, |w| w.min(retry)));
                }
            }
        }
        wake.map(|w| w.saturating_duration_since(Instant::now()))
    }

    /// Apply step of one artifact whose plan was built, up to the writes: pulls and verifies
    /// what the plan needs; the files are written by [`Controller::commit`].
    async fn prepare(&mut self, artifact: &Artifact, plan: reconcile::Plan) -> Prepared {
        let kind = artifact.kind.as_str();
        self.metrics
            .reconciled
            .get_or_create(&KindLabel { kind })
            .inc();
        let mut outcome = Outcome {
            generation: artifact.generation,
            has_refs: artifact.config_map.is_some()
                || artifact.oci.as_ref().is_some_and(|o| o.secret.is_some()),
            errors: plan.errors,
            ..Outcome::default()
        };
        let mut writes: Vec<Write> = plan
            .files
            .into_iter()
            .map(|file| Write {
                key: file.key,
                priority: plan.priority,
                data: file.data,
                mode: 0o600,
                source_digest: None,
            })
            .collect();
        if let Some((key, source, artifact_type)) = &plan.oci {
            match self.oci(key, source, *artifact_type, plan.priority).await {
                Ok((digest, write)) => {
                    outcome.digest = Some(digest);
                    writes.extend(write);
                }
                Err(e) => {
                    outcome.digest = self.store.get(key).and_then(|e| e.source_digest.clone());
                    outcome.errors.push(e);
                }
            }
        }
        Prepared {
            artifact: artifact.clone(),
            outcome,
            writes,
            keys: plan.keys,
        }
    }

    /// Writes the files of every prepared artifact as one batch ([`store::Store::put_many`]);
    /// a failed write becomes an error of its artifact.
    fn commit(&mut self, prepared: &mut [((ArtifactKind, String), u64, Prepared)]) {
        let requests: Vec<store::Put<'_>> = prepared
            .iter()
            .flat_map(|(_, _, p)| p.writes.iter())
            .map(|w| store::Put {
                key: &w.key,
                priority: w.priority,
                data: &w.data,
                mode: w.mode,
                source_digest: w.source_digest.as_deref(),
            })
            .collect();
        if requests.is_empty() {
            return;
        }
        let mut results = self.store.put_many(&requests).into_iter();
        let mut changed = false;
        for (_, _, p) in prepared.iter_mut() {
            for write in std::mem::take(&mut p.writes) {
                match results.next() {
                    Some(Ok(action)) => changed |= action != store::Action::Unchanged,
                    Some(Err(e)) => {
                        if write.source_digest.is_some() {
                            p.outcome.digest = self
                                .store
                                .get(&write.key)
                                .and_then(|e| e.source_digest.clone());
                        }
                        p.outcome.errors.push(e);
                    }
                    None => {}
                }
            }
        }
        if changed {
            self.metrics.batches.inc();
        }
    }

    /// Status step of one artifact after the batch was written.
    fn finish(&mut self, hash: u64, prepared: Prepared) -> Memo {
        let Prepared {
            artifact,
            mut outcome,
            keys,
            ..
        } = prepared;
        let kind = artifact.kind.as_str();
        for key in &keys {
            if let Some(entry) = self.store.get(key) {
                outcome.files.push(entry.path.display().to_string());
            }
        }
        for e in &outcome.errors {
            self.metrics
                .failures
                .get_or_create(&FailureLabels {
                    kind,
                    reason: e.reason(),
                })
                .inc();
            tracing::warn!(kind, name = %artifact.name, reason = e.reason(), error = %e, "artifact source failed");
        }
        let id = (artifact.kind, artifact.name.clone());
        let previous = self.memos.get(&id);
        let entry = status::entry(
            artifact.kind,
            &artifact.name,
            &outcome,
            previous.map(|m| &m.entry),
        );
        let failures = if outcome.errors.is_empty() {
            0
        } else {
            previous.map_or(0, |m| m.failures).saturating_add(1)
        };
        let next_check = if outcome.errors.is_empty() {
            artifact
                .oci
                .as_ref()
                .filter(|o| !o.pinned)
                .and(self.settings.resync)
                .map(|d| Instant::now() + d.mul_f64(jitter(&artifact.name)))
        } else {
            let backoff = Duration::from_secs(1u64 << failures.min(9).saturating_sub(1))
                .min(MAX_BACKOFF)
                .mul_f64(jitter(&artifact.name));
            let asked = outcome
                .errors
                .iter()
                .filter_map(Error::retry_after)
                .max()
                .unwrap_or_default();
            Some(Instant::now() + backoff.max(asked))
        };
        Memo {
            hash,
            generation: artifact.generation,
            failures,
            next_check,
            entry,
        }
    }

    /// Brings the OCI file of an artifact up to date: returns the digest and, when the file
    /// must change (new content or new priority), the write to make.
    async fn oci(
        &mut self,
        key: &ArtifactKey,
        source: &OciSource,
        artifact_type: crate::oci::ArtifactType,
        priority: u8,
    ) -> Result<(String, Option<Write>)> {
        let verify_with = self.signature_policy(source)?;
        let auth = self.auth(source).await?;
        let puller = self.puller(source, auth)?;
        let installed = self.store.installed_digest(key).map(str::to_owned);
        let started = Instant::now();
        let outcome = puller
            .pull(&source.reference, artifact_type, installed.as_deref())
            .await;
        let (digest, pulled) = match outcome? {
            PullOutcome::Unchanged { digest } => (digest, None),
            PullOutcome::Pulled(p) => (p.digest.clone(), Some(p)),
        };
        if let Some((policy, policy_id)) = &verify_with
            && !self.verified.contains(&(digest.clone(), *policy_id))
        {
            match policy {
                CosignPolicy::Key(pem) => {
                    let public = PublicKey::from_pem(pem)?;
                    let signatures = puller.signatures(&source.reference, &digest).await?;
                    cosign::verify(&public, &source.reference, &digest, &signatures)?;
                }
                CosignPolicy::Keyless(signer) => {
                    let root = self
                        .settings
                        .trusted_root
                        .as_deref()
                        .ok_or_else(|| cosign::no_trusted_root(&source.reference))?;
                    let signatures = puller.signatures(&source.reference, &digest).await?;
                    cosign::verify_keyless(
                        signer,
                        Some(root),
                        &source.reference,
                        &digest,
                        &signatures,
                    )?;
                }
                CosignPolicy::Ambiguous => return Err(ambiguous_policy()),
            }
            self.verified.insert((digest.clone(), *policy_id));
        }
        self.metrics
            .pull_seconds
            .observe(started.elapsed().as_secs_f64());
        self.metrics
            .pulls
            .get_or_create(&PullLabels {
                outcome: if pulled.is_some() {
                    "pulled"
                } else {
                    "unchanged"
                },
            })
            .inc();
        let write = match pulled {
            Some(mut p) => {
                // Checked before anything is written: the previous file stays.
                p.file.data = reconcile::checked(key.kind, store::Medium::Oci, p.file.data)?;
                let mode = if key.kind == Kind::PluginBinary {
                    0o755
                } else {
                    (p.file.mode & 0o777) | 0o400
                };
                Some(Write {
                    key: key.clone(),
                    priority,
                    data: p.file.data,
                    mode,
                    source_digest: Some(p.digest),
                })
            }
            None => match self.store.get(key).cloned() {
                // Same content; a new priority only renames the file.
                Some(entry) if entry.priority != priority && key.kind != Kind::PluginBinary => {
                    let data = std::fs::read(&entry.path)
                        .map_err(crate::io_err("read for new priority", &entry.path))?;
                    Some(Write {
                        key: key.clone(),
                        priority,
                        data,
                        mode: 0o644,
                        source_digest: Some(digest.clone()),
                    })
                }
                _ => None,
            },
        };
        Ok((digest, write))
    }

    /// The signature policy of an artifact, and its fingerprint; `None` when not required.
    fn signature_policy(&self, source: &OciSource) -> Result<Option<(CosignPolicy, u64)>> {
        let policy = match (&source.cosign, &self.settings.cosign) {
            (Some(policy), _) => policy.clone(),
            (None, Some(policy)) if self.settings.require_signatures => policy.clone(),
            (None, None) if self.settings.require_signatures => {
                return Err(Error::Invalid {
                    what: "signature policy",
                    reason: "signatures are required (--require-signatures) but neither the CR's verify.cosign nor --cosign-public-key / --cosign-identity gives a policy".into(),
                });
            }
            _ => return Ok(None),
        };
        if policy == CosignPolicy::Ambiguous {
            return Err(ambiguous_policy());
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        policy.hash(&mut h);
        Ok(Some((policy, h.finish())))
    }

    /// Registry credentials from the Secret the artifact names, read by name (no Secret cache).
    async fn auth(&self, source: &OciSource) -> Result<Auth> {
        let Some(name) = &source.secret else {
            return Ok(Auth::Anonymous);
        };
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.settings.namespace);
        let secret = api
            .get_opt(name)
            .await
            .map_err(|source| Error::Kube {
                step: "get Secret",
                source,
            })?
            .ok_or_else(|| Error::Reference {
                kind: "Secret",
                name: name.clone(),
                detail: "not found in the artifact's namespace".into(),
                missing_key: false,
            })?;
        let pull_secret = match secret.type_.as_deref() {
            Some(crate::dockercfg::DOCKER_CONFIG_JSON_TYPE) => {
                Some((crate::dockercfg::DOCKER_CONFIG_JSON_KEY, false))
            }
            Some(crate::dockercfg::DOCKERCFG_TYPE) => Some((crate::dockercfg::DOCKERCFG_KEY, true)),
            _ => None,
        };
        if let Some((key, legacy)) = pull_secret {
            let reference = |detail: String| Error::Reference {
                kind: "Secret",
                name: name.clone(),
                detail,
                missing_key: true,
            };
            let content = secret
                .data
                .as_ref()
                .and_then(|d| d.get(key))
                .map(|v| v.0.clone())
                .or_else(|| {
                    secret
                        .string_data
                        .as_ref()
                        .and_then(|d| d.get(key))
                        .map(|v| v.clone().into_bytes())
                })
                .ok_or_else(|| reference(format!("needs key {key:?}")))?;
            return match crate::dockercfg::credentials(&content, legacy, &source.host, &source.path)
            {
                Ok(Some(auth)) => Ok(auth),
                Ok(None) => Err(reference(format!(
                    "has no credentials for registry {} (repository {}); its registries: {:?}",
                    source.host,
                    source.path,
                    crate::dockercfg::keys(&content, legacy)
                ))),
                Err(e) => Err(reference(format!("{key}: {e}"))),
            };
        }
        let field = |key: &str| {
            secret
                .data
                .as_ref()
                .and_then(|d| d.get(key))
                .map(|v| String::from_utf8_lossy(&v.0).into_owned())
                .or_else(|| {
                    secret
                        .string_data
                        .as_ref()
                        .and_then(|d| d.get(key).cloned())
                })
                .filter(|v| !v.is_empty())
        };
        match (
            field(falco_api::common::SECRET_USERNAME_KEY),
            field(falco_api::common::SECRET_PASSWORD_KEY),
        ) {
            (Some(username), Some(password)) => Ok(Auth::Basic { username, password }),
            (None, Some(token)) => Ok(Auth::Bearer(token)),
            _ => Err(Error::Reference {
                kind: "Secret",
                name: name.clone(),
                detail: "needs key \"password\" (a token) and, for basic auth, \"username\"".into(),
                missing_key: true,
            }),
        }
    }

    fn puller(&mut self, source: &OciSource, auth: Auth) -> Result<Arc<Puller>> {
        let key = PullerKey {
            host: source.host.clone(),
            plain_http: source.plain_http,
            insecure_skip_verify: source.insecure_skip_verify,
            auth,
        };
        if let Some(p) = self.pullers.get(&key) {
            return Ok(p.clone());
        }
        let mut insecure_registries = self.settings.insecure_registries.clone();
        if source.plain_http {
            insecure_registries.push(source.host.clone());
        }
        let puller = Arc::new(Puller::new(RegistryConfig {
            auth: key.auth.clone(),
            ca_pem: self.settings.ca_pem.clone(),
            insecure_registries,
            accept_invalid_certificates: source.insecure_skip_verify,
            limits: self.settings.limits,
            retry: self.settings.retry,
        })?);
        // Credentials may rotate: keep the cache small rather than growing with every version.
        if self.pullers.len() >= 64 {
            self.pullers.clear();
        }
        self.pullers.insert(key, puller.clone());
        Ok(puller)
    }
}

/// A CR whose `verify.cosign` sets both or neither of `publicKey` and `keyless`.
fn ambiguous_policy() -> Error {
    Error::Invalid {
        what: "verify.cosign",
        reason: "set exactly one of publicKey and keyless".into(),
    }
}
