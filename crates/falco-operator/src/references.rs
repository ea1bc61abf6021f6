//! Reference protection: ConfigMaps and Secrets referenced by a Falco, Component, Rulesfile, Plugin
//! or Config carry the finalizer `artifact.falcosecurity.dev/configmap-in-use` or
//! `artifact.falcosecurity.dev/secret-in-use` while referenced, so deleting one waits until nothing
//! refers to it any more.
//!
//! What counts as a reference ([`of_falco`], [`of_component`], [`of_rulesfile`], [`of_plugin`],
//! [`of_config`]), always within the referencing object's namespace:
//!
//! | referencing kind | ConfigMaps | Secrets |
//! |---|---|---|
//! | Rulesfile | `spec.configMapRef` | `spec.ociArtifact.registry.auth.secretRef` |
//! | Plugin | — | `spec.ociArtifact.registry.auth.secretRef` |
//! | Config | `spec.configMapRef` | — |
//! | Falco, Component | `podTemplateSpec`: `configMap` and projected volumes, `envFrom`, `env[].valueFrom` | the same for Secrets, plus `imagePullSecrets` |
//! | Falco | `spec.driver.trustedKey.configMapKeyRef` | `spec.driver.trustedKey.secretKeyRef` |
//!
//! # How, and where this is better than upstream
//!
//! Upstream ran two controllers over **every ConfigMap and every Secret in the cluster**, caching
//! all of them (Secret contents included) in the operator's memory (§7 item 25). Here nothing is
//! watched: an in-memory [`Index`] maps each referencing object to the references it holds, fed by
//! the watches the operator has anyway (Falco, Component) plus watches of the three artifact kinds.
//! Only when the set of referencing objects of a ConfigMap or Secret changes is that one object read
//! **by name** (GET) and its finalizer added or removed by a JSON Patch that tests the
//! `resourceVersion` it read (so a concurrent change to the finalizer list is never overwritten). A
//! resync of unchanged objects touches nothing.
//!
//! A referenced object that does not exist yet (a Rulesfile created before its ConfigMap) is
//! checked again with a backoff from 1 s to 5 min until it appears or stops being referenced.
//!
//! # Nothing stays locked after an outage
//!
//! A reference can disappear while the operator is not running (a Rulesfile deleted during an
//! upgrade): no event will ever say so, and the memory of what was protected went with the old
//! process. So the operator writes what it protects into a **ledger**, the ConfigMap
//! [`LEDGER_NAME`] in its own namespace, *before* it adds a finalizer, and drops an entry after it
//! removed one. At start, once the index holds every current reference (the Falco and Component
//! caches and the three artifact watches have their first lists), every ledger entry is checked
//! once: the ones nothing references any more are released. The ledger is a superset of the
//! finalizers this operator set, whatever the moment of a crash. Upstream left such finalizers for a
//! person to remove by hand.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use falco_api::{Config, Plugin, Rulesfile};
use futures::StreamExt;
use futures::channel::mpsc::{UnboundedReceiver, UnboundedSender, unbounded};
use k8s_openapi::api::core::v1::{ConfigMap, PodSpec, PodTemplateSpec, Secret};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt, watcher as full_watcher};
use kube::{Client, Resource, ResourceExt};

/// Finalizer on referenced ConfigMaps.
pub const CONFIGMAP_IN_USE: &str = "artifact.falcosecurity.dev/configmap-in-use";
/// Finalizer on referenced Secrets.
pub const SECRET_IN_USE: &str = "artifact.falcosecurity.dev/secret-in-use";

/// The ConfigMap (in the operator's namespace) recording the references it protects.
pub const LEDGER_NAME: &str = "falco-operator-references";
/// The ledger's data key: one `ConfigMap <namespace>/<name>` or `Secret <namespace>/<name>` per line.
pub const LEDGER_KEY: &str = "references";
/// Field manager of the ledger's applies.
const LEDGER_FIELD_MANAGER: &str = "falco-operator-references";
/// A ConfigMap holds at most 1 MiB; past this the ledger is not written (and an error logged).
const LEDGER_MAX_BYTES: usize = 900 * 1024;

impl Reference {
    /// The ledger line of a reference.
    pub fn ledger_line(&self) -> String {
        match self {
            Self::ConfigMap(ns, name) => format!("ConfigMap {ns}/{name}"),
            Self::Secret(ns, name) => format!("Secret {ns}/{name}"),
        }
    }

    /// Parses a ledger line.
    pub fn from_ledger_line(line: &str) -> Option<Self> {
        let (kind, rest) = line.trim().split_once(' ')?;
        let (ns, name) = rest.split_once('/')?;
        if ns.is_empty() || name.is_empty() {
            return None;
        }
        match kind {
            "ConfigMap" => Some(Self::ConfigMap(ns.to_owned(), name.to_owned())),
            "Secret" => Some(Self::Secret(ns.to_owned(), name.to_owned())),
            _ => None,
        }
    }
}

/// The ledger's text for `refs` (sorted, one per line).
pub fn ledger_text(refs: &BTreeSet<Reference>) -> String {
    refs.iter().map(|r| r.ledger_line() + "\n").collect()
}

/// The references of a ledger text; lines that do not parse are skipped.
pub fn parse_ledger(text: &str) -> BTreeSet<Reference> {
    text.lines()
        .filter_map(Reference::from_ledger_line)
        .collect()
}

/// The ledger of protected references, mirrored in memory once read: every change is made to
/// the stored set (read first if need be), never to a blank one, so a write cannot drop entries
/// an earlier process recorded.
struct Ledger {
    api: Api<ConfigMap>,
    recorded: tokio::sync::Mutex<Option<BTreeSet<Reference>>>,
}

impl Ledger {
    /// Reads the stored ledger (absent: empty).
    async fn read(&self) -> Result<BTreeSet<Reference>, kube::Error> {
        let stored = self.api.get_opt(LEDGER_NAME).await?;
        Ok(stored
            .and_then(|cm| cm.data)
            .and_then(|mut d| d.remove(LEDGER_KEY))
            .map(|text| parse_ledger(&text))
            .unwrap_or_default())
    }

    /// The in-memory set, read from the API server on first use.
    async fn loaded<'a>(
        &self,
        guard: &'a mut Option<BTreeSet<Reference>>,
    ) -> Result<&'a mut BTreeSet<Reference>, kube::Error> {
        if guard.is_none() {
            *guard = Some(self.read().await?);
        }
        Ok(guard.get_or_insert_with(BTreeSet::new))
    }

    /// The recorded references.
    async fn load(&self) -> Result<BTreeSet<Reference>, kube::Error> {
        let mut guard = self.recorded.lock().await;
        Ok(self.loaded(&mut guard).await?.clone())
    }

    /// Records `r` as protected (`true`) or not (`false`); writes the ledger when that changes it.
    async fn record(&self, r: &Reference, protected: bool) -> Result<(), kube::Error> {
        let mut guard = self.recorded.lock().await;
        let recorded = self.loaded(&mut guard).await?;
        let changed = if protected {
            recorded.insert(r.clone())
        } else {
            recorded.remove(r)
        };
        if !changed {
            return Ok(());
        }
        let text = ledger_text(recorded);
        if text.len() > LEDGER_MAX_BYTES {
            tracing::error!(
                references = recorded.len(),
                "The reference ledger is too large to store; finalizers released during an outage may stay"
            );
            return Ok(());
        }
        let cm = serde_json::json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": LEDGER_NAME},
            "data": {LEDGER_KEY: text},
        });
        let result = self
            .api
            .patch(
                LEDGER_NAME,
                &PatchParams::apply(LEDGER_FIELD_MANAGER).force(),
                &Patch::Apply(&cm),
            )
            .await;
        if let Err(e) = result {
            // Not written: undo, so the next attempt writes it again.
            if protected {
                recorded.remove(r);
            } else {
                recorded.insert(r.clone());
            }
            return Err(e);
        }
        Ok(())
    }
}

/// A referenced object.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reference {
    /// A ConfigMap: (namespace, name).
    ConfigMap(String, String),
    /// A Secret: (namespace, name).
    Secret(String, String),
}

/// A referencing object: (kind, namespace, name).
pub type Source = (&'static str, String, String);

/// References held by a pod template (see the module docs).
pub fn of_pod_template(ns: &str, template: Option<&PodTemplateSpec>) -> BTreeSet<Reference> {
    let mut out = BTreeSet::new();
    let Some(spec) = template.and_then(|t| t.spec.as_ref()) else {
        return out;
    };
    pod_spec_refs(ns, spec, &mut out);
    out
}

fn pod_spec_refs(ns: &str, spec: &PodSpec, out: &mut BTreeSet<Reference>) {
    let cm = |n: &str| Reference::ConfigMap(ns.to_owned(), n.to_owned());
    let secret = |n: &str| Reference::Secret(ns.to_owned(), n.to_owned());
    for volume in spec.volumes.iter().flatten() {
        if let Some(c) = &volume.config_map {
            out.insert(cm(&c.name));
        }
        if let Some(s) = volume
            .secret
            .as_ref()
            .and_then(|s| s.secret_name.as_deref())
        {
            out.insert(secret(s));
        }
        for source in volume
            .projected
            .iter()
            .flat_map(|p| p.sources.iter().flatten())
        {
            if let Some(c) = &source.config_map {
                out.insert(cm(&c.name));
            }
            if let Some(s) = &source.secret {
                out.insert(secret(&s.name));
            }
        }
    }
    let containers = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    for c in containers {
        for from in c.env_from.iter().flatten() {
            if let Some(r) = &from.config_map_ref {
                out.insert(cm(&r.name));
            }
            if let Some(r) = &from.secret_ref {
                out.insert(secret(&r.name));
            }
        }
        for value_from in c.env.iter().flatten().filter_map(|e| e.value_from.as_ref()) {
            if let Some(r) = &value_from.config_map_key_ref {
                out.insert(cm(&r.name));
            }
            if let Some(r) = &value_from.secret_key_ref {
                out.insert(secret(&r.name));
            }
        }
    }
    for s in spec.image_pull_secrets.iter().flatten() {
        out.insert(secret(&s.name));
    }
}

/// References of a Falco.
pub fn of_falco(f: &falco_api::Falco) -> BTreeSet<Reference> {
    let ns = f.namespace().unwrap_or_default();
    let mut out = of_pod_template(&ns, f.spec.pod_template_spec.as_deref());
    // The driver repository's trusted key (`spec.driver.trustedKey`), whatever the kind: a
    // key that is referenced stays until the reference goes.
    if let Some(key) = f.spec.driver.as_ref().and_then(|d| d.trusted_key.as_ref()) {
        if let Some(cm) = &key.config_map_key_ref {
            out.insert(Reference::ConfigMap(ns.clone(), cm.name.clone()));
        }
        if let Some(secret) = &key.secret_key_ref {
            out.insert(Reference::Secret(ns, secret.name.clone()));
        }
    }
    out
}

/// References of a Component.
pub fn of_component(c: &falco_api::Component) -> BTreeSet<Reference> {
    of_pod_template(
        &c.namespace().unwrap_or_default(),
        c.spec.pod_template_spec.as_deref(),
    )
}

fn oci_secret(ns: &str, oci: Option<&falco_api::OciArtifact>) -> Option<Reference> {
    let name = &oci?.registry.as_ref()?.auth.as_ref()?.secret_ref.name;
    Some(Reference::Secret(ns.to_owned(), name.clone()))
}

/// References of a Rulesfile.
pub fn of_rulesfile(r: &Rulesfile) -> BTreeSet<Reference> {
    let ns = r.namespace().unwrap_or_default();
    let mut out: BTreeSet<_> = oci_secret(&ns, r.spec.oci_artifact.as_ref())
        .into_iter()
        .collect();
    if let Some(c) = &r.spec.config_map_ref {
        out.insert(Reference::ConfigMap(ns, c.name.clone()));
    }
    out
}

/// References of a Plugin.
pub fn of_plugin(p: &Plugin) -> BTreeSet<Reference> {
    let ns = p.namespace().unwrap_or_default();
    oci_secret(&ns, p.spec.oci_artifact.as_ref())
        .into_iter()
        .collect()
}

/// References of a Config.
pub fn of_config(c: &Config) -> BTreeSet<Reference> {
    let ns = c.namespace().unwrap_or_default();
    c.spec
        .config_map_ref
        .iter()
        .map(|r| Reference::ConfigMap(ns.clone(), r.name.clone()))
        .collect()
}

/// Who references what, both ways.
#[derive(Default, Debug)]
pub struct Index {
    by_source: HashMap<Source, BTreeSet<Reference>>,
    by_reference: HashMap<Reference, BTreeSet<Source>>,
}

impl Index {
    /// Records that `source` now holds exactly `refs`; returns the references whose set of
    /// referencing objects changed from or to empty (the ones whose finalizer may need a change).
    pub fn set(&mut self, source: Source, refs: BTreeSet<Reference>) -> Vec<Reference> {
        let old = if refs.is_empty() {
            self.by_source.remove(&source).unwrap_or_default()
        } else {
            self.by_source
                .insert(source.clone(), refs.clone())
                .unwrap_or_default()
        };
        let mut touched = Vec::new();
        for r in old.difference(&refs) {
            if let Some(sources) = self.by_reference.get_mut(r) {
                sources.remove(&source);
                if sources.is_empty() {
                    self.by_reference.remove(r);
                    touched.push(r.clone());
                }
            }
        }
        for r in refs.difference(&old) {
            let sources = self.by_reference.entry(r.clone()).or_default();
            if sources.is_empty() {
                touched.push(r.clone());
            }
            sources.insert(source.clone());
        }
        touched
    }

    /// Whether anything references `r`.
    pub fn is_referenced(&self, r: &Reference) -> bool {
        self.by_reference.contains_key(r)
    }

    /// The sources of one kind currently indexed.
    fn sources_of(&self, kind: &str) -> Vec<Source> {
        self.by_source
            .keys()
            .filter(|s| s.0 == kind)
            .cloned()
            .collect()
    }
}

/// The reference-protection worker: an [`Index`] and a queue of references to check.
#[derive(Clone)]
pub struct References {
    index: Arc<Mutex<Index>>,
    queue: UnboundedSender<Reference>,
    attempts: Arc<Mutex<HashMap<Reference, u32>>>,
    /// The namespace of the ledger; `None`: no ledger.
    ledger_namespace: Option<String>,
    /// Artifact kinds whose watch has had its first list (see [`References::primed`]).
    listed: Arc<Mutex<BTreeSet<&'static str>>>,
    listed_tx: Arc<tokio::sync::watch::Sender<usize>>,
}

/// What checking one reference found.
enum Checked {
    /// The finalizer is as it should be (or the object is gone and unreferenced).
    Done,
    /// The object is referenced but does not exist (yet): check again later.
    Missing,
}

impl References {
    /// A worker and the receiving end of its queue (give it to [`References::run`]), keeping its
    /// ledger in `ledger_namespace` (none: no ledger).
    pub fn new(ledger_namespace: Option<String>) -> (Self, UnboundedReceiver<Reference>) {
        let (queue, rx) = unbounded();
        (
            Self {
                index: Arc::default(),
                queue,
                attempts: Arc::default(),
                ledger_namespace,
                listed: Arc::default(),
                listed_tx: Arc::new(tokio::sync::watch::channel(0).0),
            },
            rx,
        )
    }

    /// Notes that the watch of an artifact kind has had its first list.
    fn listed(&self, kind: &'static str) {
        let mut listed = self
            .listed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        listed.insert(kind);
        self.listed_tx.send_replace(listed.len());
    }

    /// Waits until the watches of the three artifact kinds have had their first lists.
    async fn artifacts_listed(&self) {
        let mut rx = self.listed_tx.subscribe();
        let _ = rx.wait_for(|n| *n >= 3).await;
    }

    /// Records the references of `source` and queues the ones that changed.
    pub fn set(&self, source: Source, refs: BTreeSet<Reference>) {
        let touched = self
            .index
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .set(source, refs);
        for r in touched {
            let _ = self.queue.unbounded_send(r);
        }
    }

    fn is_referenced(&self, r: &Reference) -> bool {
        self.index
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_referenced(r)
    }

    /// Processes the queue: one GET and at most one PATCH per queued reference. Failures, and
    /// references to objects that do not exist yet, are checked again after a delay doubling from
    /// 1 s to 5 min (a referenced ConfigMap created after its Rulesfile gets its finalizer then).
    ///
    /// `primed` resolves once the Falco and Component references are in the index; then the
    /// ledger's entries are checked once (see the module documentation).
    pub async fn run(
        self,
        client: Client,
        mut rx: UnboundedReceiver<Reference>,
        primed: impl std::future::Future<Output = ()> + Send,
    ) {
        let ledger = self.ledger_namespace.as_deref().map(|ns| Ledger {
            api: Api::namespaced(client.clone(), ns),
            recorded: Default::default(),
        });
        let sweep = async {
            let Some(ledger) = &ledger else { return };
            primed.await;
            tracing::debug!("ledger sweep: CR references primed");
            self.artifacts_listed().await;
            tracing::debug!("ledger sweep: artifacts listed");
            let mut delay = Duration::from_secs(1);
            let recorded = loop {
                match ledger.load().await {
                    Ok(recorded) => break recorded,
                    Err(error) => {
                        tracing::warn!(%error, "Reading the reference ledger failed; retrying");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(300));
                    }
                }
            };
            tracing::info!(
                references = recorded.len(),
                "Checking the references of the ledger"
            );
            for r in recorded {
                let _ = self.queue.unbounded_send(r);
            }
        };
        let work = async {
            while let Some(r) = rx.next().await {
                self.process(&client, ledger.as_ref(), r).await;
            }
        };
        futures::future::join(sweep, work).await;
    }

    async fn process(&self, client: &Client, ledger: Option<&Ledger>, r: Reference) {
        let retry = match self.ensure(client, ledger, &r).await {
            Ok(Checked::Done) => false,
            Ok(Checked::Missing) => true,
            Err(error) => {
                tracing::warn!(reference = ?r, %error, "Reference finalizer not updated; retrying");
                true
            }
        };
        let mut attempts = self
            .attempts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !retry {
            attempts.remove(&r);
            return;
        }
        let n = attempts.entry(r.clone()).or_insert(0);
        *n = n.saturating_add(1);
        let delay = Duration::from_secs(1u64 << (*n - 1).min(9)).min(Duration::from_secs(300));
        let queue = self.queue.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = queue.unbounded_send(r);
        });
    }

    async fn ensure(
        &self,
        client: &Client,
        ledger: Option<&Ledger>,
        r: &Reference,
    ) -> Result<Checked, kube::Error> {
        match r {
            Reference::ConfigMap(ns, name) => {
                let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
                self.ensure_finalizer(&api, ledger, name, CONFIGMAP_IN_USE, r)
                    .await
            }
            Reference::Secret(ns, name) => {
                let api: Api<Secret> = Api::namespaced(client.clone(), ns);
                self.ensure_finalizer(&api, ledger, name, SECRET_IN_USE, r)
                    .await
            }
        }
    }

    /// Adds or removes `finalizer` on `r` as the index says. The ledger is written before a
    /// finalizer is added and after one is removed, so it always lists at least every finalizer
    /// this operator set.
    async fn ensure_finalizer<K>(
        &self,
        api: &Api<K>,
        ledger: Option<&Ledger>,
        name: &str,
        finalizer: &str,
        r: &Reference,
    ) -> Result<Checked, kube::Error>
    where
        K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        let referenced = self.is_referenced(r);
        // A ledger the operator may not write (RBAC) must not stop the protection itself:
        // that is warned about and skipped; other failures are retried like the finalizer.
        let record = |protected: bool| async move {
            let Some(ledger) = ledger else { return Ok(()) };
            match ledger.record(r, protected).await {
                Err(kube::Error::Api(e)) if e.code == 403 => {
                    tracing::warn!(
                        error = %e,
                        "The reference ledger may not be written; a reference dropped while the operator is down will keep its finalizer"
                    );
                    Ok(())
                }
                other => other,
            }
        };
        let Some(obj) = api.get_opt(name).await? else {
            if referenced {
                return Ok(Checked::Missing);
            }
            record(false).await?;
            return Ok(Checked::Done);
        };
        let finalizers = obj.finalizers();
        let has = finalizers.iter().any(|f| f == finalizer);
        let new: Vec<String> = match (referenced, has) {
            (true, false) => {
                record(true).await?;
                finalizers
                    .iter()
                    .cloned()
                    .chain([finalizer.to_owned()])
                    .collect()
            }
            (false, true) => finalizers
                .iter()
                .filter(|f| *f != finalizer)
                .cloned()
                .collect(),
            (true, true) => {
                // Set before the ledger existed (or its write was lost): record it now.
                record(true).await?;
                return Ok(Checked::Done);
            }
            (false, false) => {
                record(false).await?;
                return Ok(Checked::Done);
            }
        };
        let patch: json_patch_ops::Ops =
            json_patch_ops::replace_finalizers(obj.resource_version().unwrap_or_default(), &new);
        api.patch(name, &PatchParams::default(), &Patch::Json::<()>(patch))
            .await?;
        tracing::info!(reference = ?r, referenced, "Updated the in-use finalizer");
        if !referenced {
            record(false).await?;
        }
        Ok(Checked::Done)
    }
}

mod json_patch_ops {
    //! The JSON Patch of a finalizer change: test the resourceVersion read, then replace the list.

    pub(super) type Ops = json_patch::Patch;

    pub(super) fn replace_finalizers(resource_version: String, finalizers: &[String]) -> Ops {
        serde_json::from_value(serde_json::json!([
            {"op": "test", "path": "/metadata/resourceVersion", "value": resource_version},
            {"op": "add", "path": "/metadata/finalizers", "value": finalizers},
        ]))
        .unwrap_or_else(|_| json_patch::Patch(Vec::new()))
    }
}

/// Feeds the index from a watch of one artifact kind; after each (re)list, sources that are gone
/// are released.
pub async fn watch_sources<K>(
    api: Api<K>,
    kind: &'static str,
    refs_of: fn(&K) -> BTreeSet<Reference>,
    references: References,
) where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + 'static,
{
    let key = |o: &K| (kind, o.namespace().unwrap_or_default(), o.name_any());
    let mut seen: Option<BTreeSet<Source>> = None;
    let stream = full_watcher(api, watcher::Config::default()).default_backoff();
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::Init) => seen = Some(BTreeSet::new()),
            Ok(Event::InitApply(o)) => {
                if let Some(seen) = seen.as_mut() {
                    seen.insert(key(&o));
                }
                references.set(key(&o), refs_of(&o));
            }
            Ok(Event::InitDone) => {
                references.listed(kind);
                let seen = seen.take().unwrap_or_default();
                let indexed = references
                    .index
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .sources_of(kind);
                for gone in indexed.into_iter().filter(|s| !seen.contains(s)) {
                    references.set(gone, BTreeSet::new());
                }
            }
            Ok(Event::Apply(o)) => references.set(key(&o), refs_of(&o)),
            Ok(Event::Delete(o)) => references.set(key(&o), BTreeSet::new()),
            Err(error) => tracing::warn!(kind, %error, "Artifact watch failed; retrying"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ledger_lines_round_trip_and_bad_lines_are_skipped() {
        let refs: BTreeSet<Reference> = [
            Reference::ConfigMap("falco".into(), "rules".into()),
            Reference::Secret("falco".into(), "registry".into()),
        ]
        .into();
        let text = ledger_text(&refs);
        assert_eq!(text, "ConfigMap falco/rules\nSecret falco/registry\n");
        assert_eq!(parse_ledger(&text), refs);
        let noisy = format!("{text}garbage\nPod falco/x\nSecret /x\n\n");
        assert_eq!(parse_ledger(&noisy), refs);
    }
    use serde_json::json;

    fn s(kind: &'static str, name: &str) -> Source {
        (kind, "ns".to_owned(), name.to_owned())
    }
    fn cm(name: &str) -> Reference {
        Reference::ConfigMap("ns".to_owned(), name.to_owned())
    }

    #[test]
    fn pod_templates_reference_volumes_env_and_pull_secrets() {
        let t: PodTemplateSpec = serde_json::from_value(json!({"spec": {
            "imagePullSecrets": [{"name": "pull"}],
            "volumes": [
                {"name": "a", "configMap": {"name": "cm-vol"}},
                {"name": "b", "secret": {"secretName": "sec-vol"}},
                {"name": "c", "projected": {"sources": [{"configMap": {"name": "cm-proj"}}, {"secret": {"name": "sec-proj"}}]}}
            ],
            "containers": [{"name": "falco",
                "envFrom": [{"configMapRef": {"name": "cm-envfrom"}}],
                "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "sec-env", "key": "k"}}}]}]
        }}))
        .unwrap();
        let refs = of_pod_template("ns", Some(&t));
        let names: Vec<String> = refs
            .iter()
            .map(|r| match r {
                Reference::ConfigMap(_, n) => format!("cm/{n}"),
                Reference::Secret(_, n) => format!("secret/{n}"),
            })
            .collect();
        assert_eq!(
            names,
            [
                "cm/cm-envfrom",
                "cm/cm-proj",
                "cm/cm-vol",
                "secret/pull",
                "secret/sec-env",
                "secret/sec-proj",
                "secret/sec-vol"
            ]
        );
    }

    #[test]
    fn artifacts_reference_their_configmap_and_registry_secret() {
        let mut r = Rulesfile::new(
            "rules",
            serde_json::from_value(json!({
                "configMapRef": {"name": "my-rules"},
                "ociArtifact": {"image": {"repository": "r"}, "registry": {"auth": {"secretRef": {"name": "creds"}}}}
            }))
            .unwrap(),
        );
        r.metadata.namespace = Some("ns".to_owned());
        assert_eq!(
            of_rulesfile(&r).into_iter().collect::<Vec<_>>(),
            [
                cm("my-rules"),
                Reference::Secret("ns".to_owned(), "creds".to_owned())
            ]
        );
    }

    #[test]
    fn the_index_reports_only_transitions_to_and_from_unreferenced() {
        let mut index = Index::default();
        assert_eq!(index.set(s("Config", "a"), [cm("x")].into()), [cm("x")]);
        assert!(
            index.set(s("Rulesfile", "b"), [cm("x")].into()).is_empty(),
            "already referenced"
        );
        assert!(
            index.set(s("Config", "a"), [cm("x")].into()).is_empty(),
            "no change"
        );
        assert!(
            index.set(s("Config", "a"), BTreeSet::new()).is_empty(),
            "b still refers"
        );
        assert!(index.is_referenced(&cm("x")));
        assert_eq!(
            index.set(s("Rulesfile", "b"), [cm("y")].into()),
            [cm("x"), cm("y")]
        );
        assert!(!index.is_referenced(&cm("x")));
        assert_eq!(index.sources_of("Rulesfile"), [s("Rulesfile", "b")]);
    }
}
