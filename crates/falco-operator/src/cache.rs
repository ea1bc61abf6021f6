//! The watch caches of the children, and the routing of child events to the owning CR.
//!
//! One watch per child kind, selected by `app.kubernetes.io/managed-by=falco-operator`, so the
//! operator never caches objects it did not make. The caches keep only what the reconcilers read,
//! not the objects: per child its applied-hash annotation, the hash of the fields each of this
//! operator's field managers owns, and its owner labels; for DaemonSets and Deployments also
//! `spec.replicas` and `status` (for `Available`). That is a few hundred bytes per child where a
//! cached object's metadata alone took about 3 KiB (24 MiB with 1,000 Falco CRs).
//!
//! - ServiceAccount, Role, RoleBinding, ClusterRole, ClusterRoleBinding, ConfigMap, Service are
//!   watched as **metadata only** (the API server never sends their content);
//! - DaemonSet and Deployment are watched whole (their status is needed) and reduced on arrival.
//!
//! Each event is routed by the owner labels ([`crate::labels::owner_from_labels`]) to the Falco or
//! the Component controller, which is how cluster-scoped children (no ownerReference possible)
//! trigger their owner, and how any change to a child is corrected. A child that disappears while
//! a watch was down (seen as missing from the re-list) is treated as deleted.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use futures::channel::mpsc::UnboundedSender;
use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::{
    DaemonSet, DaemonSetStatus, Deployment, DeploymentSpec, DeploymentStatus,
};
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt, watcher as full_watcher};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use crate::children::ChildKind;
use crate::labels;
use falco_api::{Component, Falco};
use sha2::{Digest as _, Sha256};

/// The first 128 bits of a SHA-256, which is all the caches keep of the applied-hash annotation
/// and of the owned-fields hash (16 bytes instead of a 64-character string, per child, twice).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Digest([u8; 16]);

impl Digest {
    /// From the hex form (the annotation); `None` when it is not at least 32 hex digits.
    pub fn of_hex(hex: &str) -> Option<Self> {
        let mut bytes = [0u8; 16];
        hex::decode_to_slice(hex.get(..32)?, &mut bytes).ok()?;
        Some(Self(bytes))
    }

    /// Of a JSON value (as [`crate::children::content_hash`]).
    pub fn of_value(value: &serde_json::Value) -> Self {
        let full = Sha256::digest(serde_json::to_vec(value).unwrap_or_default());
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&full[..16]);
        Self(bytes)
    }
}

/// What the apply step needs to know about a cached child.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cached {
    /// The applied-hash annotation.
    pub hash: Option<Digest>,
    /// Hash of the fields this operator's field manager owns (its `managedFields` entry).
    pub owned_fields: Option<Digest>,
    /// The owning CR from the owner labels: (kind, namespace, name).
    pub owner: Option<(String, String, String)>,
    /// The cached version's `resourceVersion`, when it is a number (it is with etcd).
    pub resource_version: Option<u64>,
}

/// Field managers of this operator whose owned fields a cache entry tracks (Falco, Component).
const MAX_FIELD_MANAGERS: usize = 2;

/// What a cache keeps of one child.
#[derive(Clone, Debug, PartialEq)]
struct Entry {
    /// The applied-hash annotation.
    hash: Option<Digest>,
    /// Per field manager of this operator, in the order of the list the caches were started
    /// with: the hash of the fields it owns through Apply.
    owned_fields: [Option<Digest>; MAX_FIELD_MANAGERS],
    /// The owning CR from the owner labels, as `kind/namespace/name` (one allocation instead of
    /// three; none of the parts can hold a `/`).
    owner: Option<Box<str>>,
    /// DaemonSet or Deployment reduced to the counts availability reads (boxed: the other seven
    /// kinds do not pay for it in every table slot).
    workload: Option<Box<Counts>>,
    /// `resourceVersion`, when it is a number.
    resource_version: Option<std::num::NonZeroU64>,
}

/// A DaemonSet or Deployment reduced to what [`crate::availability`] reads (a whole object is
/// 2.4 KB even when only its status is set).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Counts {
    /// Deployment `spec.replicas`.
    replicas: Option<i32>,
    /// DaemonSet `status.desiredNumberScheduled`.
    desired: i32,
    /// `status.numberAvailable` / `status.availableReplicas`.
    available: Option<i32>,
    /// `status.numberUnavailable` / `status.unavailableReplicas`.
    unavailable: Option<i32>,
}

impl Entry {
    fn of(meta: &ObjectMeta, field_managers: &[&'static str], workload: Option<Counts>) -> Self {
        let workload = workload.map(Box::new);
        Self {
            hash: meta
                .annotations
                .as_ref()
                .and_then(|a| a.get(crate::children::APPLIED_HASH_ANNOTATION))
                .and_then(|h| Digest::of_hex(h)),
            owned_fields: {
                let mut owned = [None; MAX_FIELD_MANAGERS];
                for (slot, m) in owned.iter_mut().zip(field_managers) {
                    *slot = owned_fields_hash(meta, m);
                }
                owned
            },
            owner: meta
                .labels
                .as_ref()
                .and_then(labels::owner_from_labels)
                .map(|(k, n, m)| format!("{k}/{n}/{m}").into_boxed_str()),
            workload,
            resource_version: resource_version(meta).and_then(std::num::NonZeroU64::new),
        }
    }

    /// The entry seen by `field_manager`, one of `field_managers` (the caches' list).
    fn cached(&self, field_managers: &[&str], field_manager: &str) -> Cached {
        Cached {
            hash: self.hash,
            owned_fields: field_managers
                .iter()
                .position(|m| *m == field_manager)
                .and_then(|i| *self.owned_fields.get(i)?),
            owner: self
                .owner()
                .map(|(k, n, m)| (k.to_owned(), n.to_owned(), m.to_owned())),
            resource_version: self.resource_version.map(std::num::NonZeroU64::get),
        }
    }

    /// The owner's kind, namespace and name.
    fn owner(&self) -> Option<(&str, &str, &str)> {
        let mut parts = self.owner.as_deref()?.splitn(3, '/');
        Some((parts.next()?, parts.next()?, parts.next()?))
    }

    /// The owner CR to trigger.
    fn route(&self, router: &Router) {
        if let Some((kind, ns, name)) = self.owner() {
            router.route(kind, ns, name);
        }
    }
}

/// Hash of the fields `field_manager` owns through Apply on the main resource.
pub fn owned_fields_hash(meta: &ObjectMeta, field_manager: &str) -> Option<Digest> {
    meta.managed_fields
        .iter()
        .flatten()
        .find(|e| {
            e.manager.as_deref() == Some(field_manager)
                && e.operation.as_deref() == Some("Apply")
                && e.subresource.as_deref().unwrap_or("").is_empty()
        })
        .and_then(|e| e.fields_v1.as_ref())
        .map(|f| Digest::of_value(&f.0))
}

/// `resourceVersion` as a number. The API calls it opaque; etcd's revisions are numbers that grow
/// with every write, and the only use here is "is the cache older than my own write", where
/// anything unparsable answers "no" (and the apply is sent).
pub fn resource_version(meta: &ObjectMeta) -> Option<u64> {
    meta.resource_version.as_deref()?.parse().ok()
}

/// Key of a child: kind, namespace, name.
pub type ChildKey = (ChildKind, Option<String>, String);

/// What this process last applied to a child: the content hash and the hash of the fields it owned
/// right after that apply. Cleared when the child is deleted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    /// The applied content hash.
    pub hash: Digest,
    /// [`owned_fields_hash`] of the apply's response.
    pub owned_fields: Option<Digest>,
    /// The response's `resourceVersion`: until the cache holds this version or a later one, it
    /// is older than this apply.
    pub resource_version: Option<u64>,
}

impl Applied {
    /// Whether `cached` is a version older than this apply (the watch has not delivered it yet).
    pub fn is_newer_than(&self, cached: &Cached) -> bool {
        matches!((self.resource_version, cached.resource_version), (Some(ours), Some(seen)) if seen < ours)
    }
}

/// What this process applied, by child. Keyed by a 64-bit hash of the child's key (with a
/// per-process random key, as `HashMap` does) rather than a copy of its names: 9,000 children
/// cost 1 MB less.
#[derive(Default)]
pub struct AppliedRecords {
    hasher: std::collections::hash_map::RandomState,
    records: HashMap<u64, Applied>,
}

impl AppliedRecords {
    fn slot(&self, (kind, ns, name): &ChildKey) -> u64 {
        use std::hash::BuildHasher;
        self.hasher.hash_one((kind, ns.as_deref(), name.as_str()))
    }

    /// The record of a child.
    pub fn get(&self, key: &ChildKey) -> Option<&Applied> {
        self.records.get(&self.slot(key))
    }

    /// Records an apply.
    pub fn insert(&mut self, key: &ChildKey, applied: Applied) {
        let slot = self.slot(key);
        self.records.insert(slot, applied);
    }

    /// Forgets a child.
    pub fn remove(&mut self, key: &ChildKey) {
        let slot = self.slot(key);
        self.records.remove(&slot);
    }
}

/// Namespace and name of a child within its kind.
/// Boxed strings: 16 bytes less than `String` in each of the 9 × N table slots.
type ObjectKey = (Option<Box<str>>, Box<str>);

/// The cache of one child kind.
struct KindCache {
    entries: RwLock<HashMap<ObjectKey, Entry>>,
    /// True once the first list is in.
    ready: watch::Sender<bool>,
}

impl KindCache {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            entries: RwLock::default(),
            ready: watch::channel(false).0,
        })
    }

    fn get(&self, ns: Option<&str>, name: &str) -> Option<Entry> {
        self.entries
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&(ns.map(Box::from), Box::from(name)))
            .cloned()
    }
}

/// The child caches.
#[derive(Clone)]
pub struct Caches {
    kinds: Arc<HashMap<ChildKind, Arc<KindCache>>>,
    /// The field managers whose owned fields the entries track.
    field_managers: &'static [&'static str],
    /// What this process applied, by child.
    pub applied: Arc<Mutex<AppliedRecords>>,
}

impl Caches {
    fn entry(&self, kind: ChildKind, ns: Option<&str>, name: &str) -> Option<Entry> {
        self.kinds.get(&kind)?.get(ns, name)
    }

    /// What the cache holds about a child, seen through `field_manager`'s eyes.
    pub fn get(
        &self,
        kind: ChildKind,
        ns: Option<&str>,
        name: &str,
        field_manager: &str,
    ) -> Option<Cached> {
        Some(
            self.entry(kind, ns, name)?
                .cached(self.field_managers, field_manager),
        )
    }

    /// The namespaces holding a `kind` named `name`.
    pub fn namespaces_of(&self, kind: ChildKind, name: &str) -> Vec<String> {
        let Some(cache) = self.kinds.get(&kind) else {
            return Vec::new();
        };
        cache
            .entries
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .keys()
            .filter(|(_, n)| &**n == name)
            .filter_map(|(ns, _)| ns.as_deref().map(str::to_owned))
            .collect()
    }

    /// The cached DaemonSet (the status counts only).
    pub fn daemon_set(&self, ns: &str, name: &str) -> Option<DaemonSet> {
        let c = *self.entry(ChildKind::DaemonSet, Some(ns), name)?.workload?;
        Some(DaemonSet {
            status: Some(DaemonSetStatus {
                desired_number_scheduled: c.desired,
                number_available: c.available,
                number_unavailable: c.unavailable,
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    /// The cached Deployment (`spec.replicas` and the status counts only).
    pub fn deployment(&self, ns: &str, name: &str) -> Option<Deployment> {
        let c = *self
            .entry(ChildKind::Deployment, Some(ns), name)?
            .workload?;
        Some(Deployment {
            spec: DeploymentSpec {
                replicas: c.replicas,
                ..Default::default()
            },
            status: Some(DeploymentStatus {
                available_replicas: c.available,
                unavailable_replicas: c.unavailable,
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    /// Waits until every child cache has its first list.
    pub async fn wait_until_ready(&self) {
        for cache in self.kinds.values() {
            let mut ready = cache.ready.subscribe();
            let _ = ready.wait_for(|r| *r).await;
        }
    }
}

/// Where child events go: the trigger channels of the two controllers.
#[derive(Clone)]
pub struct Router {
    /// Falco controller trigger.
    pub falco: UnboundedSender<ObjectRef<Falco>>,
    /// Component controller trigger.
    pub component: UnboundedSender<ObjectRef<Component>>,
}

impl Router {
    fn route(&self, kind: &str, ns: &str, name: &str) {
        match kind {
            "Falco" => {
                let _ = self.falco.unbounded_send(ObjectRef::new(name).within(ns));
            }
            "Component" => {
                let _ = self
                    .component
                    .unbounded_send(ObjectRef::new(name).within(ns));
            }
            _ => {}
        }
    }
}

/// A future driving one watch.
pub type Driver = std::pin::Pin<Box<dyn futures::Future<Output = ()> + Send>>;

/// Builds the child caches and the futures that drive their watches (to be spawned).
pub fn start(
    client: &Client,
    namespace: Option<&str>,
    field_managers: &'static [&'static str],
    router: Router,
) -> (Caches, Vec<Driver>) {
    assert!(
        field_managers.len() <= MAX_FIELD_MANAGERS,
        "a cache entry tracks at most {MAX_FIELD_MANAGERS} field managers"
    );
    let applied: Arc<Mutex<AppliedRecords>> = Arc::default();
    let selector = format!("{}={}", labels::MANAGED_BY, labels::MANAGED_BY_VALUE);
    let namespaced_config = watcher::Config::default().labels(&selector);
    let cluster_selector = match namespace {
        Some(ns) => format!("{selector},{}={ns}", labels::OWNER_NAMESPACE),
        None => selector.clone(),
    };
    let cluster_config = watcher::Config::default().labels(&cluster_selector);
    let mut kinds = HashMap::new();
    let mut drivers = Vec::new();
    let mut add = |kind: ChildKind, driver: fn(Watch) -> Driver, config: &watcher::Config| {
        let cache = KindCache::new();
        kinds.insert(kind, cache.clone());
        drivers.push(driver(Watch {
            client: client.clone(),
            namespace: if kind.is_cluster_scoped() {
                None
            } else {
                namespace.map(str::to_owned)
            },
            config: config.clone(),
            kind,
            field_managers,
            cache,
            router: router.clone(),
            applied: applied.clone(),
        }));
    };
    let (nc, cc) = (&namespaced_config, &cluster_config);
    add(ChildKind::ServiceAccount, metadata_ns::<ServiceAccount>, nc);
    add(ChildKind::Role, metadata_ns::<Role>, nc);
    add(ChildKind::RoleBinding, metadata_ns::<RoleBinding>, nc);
    add(ChildKind::ClusterRole, metadata_cluster::<ClusterRole>, cc);
    add(
        ChildKind::ClusterRoleBinding,
        metadata_cluster::<ClusterRoleBinding>,
        cc,
    );
    add(ChildKind::ConfigMap, metadata_ns::<ConfigMap>, nc);
    add(ChildKind::Service, metadata_ns::<Service>, nc);
    add(ChildKind::DaemonSet, daemon_sets, nc);
    add(ChildKind::Deployment, deployments, nc);
    (
        Caches {
            kinds: Arc::new(kinds),
            field_managers,
            applied,
        },
        drivers,
    )
}

/// Everything one child watch needs.
struct Watch {
    client: Client,
    /// `None`: all namespaces (or a cluster-scoped kind).
    namespace: Option<String>,
    config: watcher::Config,
    kind: ChildKind,
    field_managers: &'static [&'static str],
    cache: Arc<KindCache>,
    router: Router,
    applied: Arc<Mutex<AppliedRecords>>,
}

impl Watch {
    fn api<K>(&self) -> Api<K>
    where
        K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>,
    {
        match &self.namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        }
    }
}

/// A metadata-only watch of a namespaced kind.
fn metadata_ns<K>(w: Watch) -> Driver
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>,
    K: Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    metadata(w.api::<PartialObjectMeta<K>>(), w)
}

/// A metadata-only watch of a cluster-scoped kind.
fn metadata_cluster<K>(w: Watch) -> Driver
where
    K: Resource<DynamicType = (), Scope = kube::core::ClusterResourceScope>,
    K: Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    metadata(Api::<PartialObjectMeta<K>>::all(w.client.clone()), w)
}

/// `Api<PartialObjectMeta<K>>` makes metadata-only requests: the content is never sent.
fn metadata<K>(api: Api<PartialObjectMeta<K>>, w: Watch) -> Driver
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let stream = full_watcher(api, w.config.clone()).default_backoff();
    drive(stream, w, |o: PartialObjectMeta<K>, managers| {
        Entry::of(&o.metadata, managers, None)
    })
}

fn daemon_sets(w: Watch) -> Driver {
    let stream = full_watcher(w.api::<DaemonSet>(), w.config.clone()).default_backoff();
    drive(stream, w, |ds: DaemonSet, managers| {
        let status = ds.status.unwrap_or_default();
        let counts = Counts {
            replicas: None,
            desired: status.desired_number_scheduled,
            available: status.number_available,
            unavailable: status.number_unavailable,
        };
        Entry::of(&ds.metadata, managers, Some(counts))
    })
}

fn deployments(w: Watch) -> Driver {
    let stream = full_watcher(w.api::<Deployment>(), w.config.clone()).default_backoff();
    drive(stream, w, |d: Deployment, managers| {
        let status = d.status.unwrap_or_default();
        let counts = Counts {
            replicas: d.spec.replicas,
            desired: 0,
            available: status.available_replicas,
            unavailable: status.unavailable_replicas,
        };
        Entry::of(&d.metadata, managers, Some(counts))
    })
}

/// Drives one child watch into its cache: routes every change to its owner, and forgets what was
/// applied to a deleted child (so the next reconcile recreates it).
fn drive<K, S>(stream: S, w: Watch, reduce: fn(K, &[&'static str]) -> Entry) -> Driver
where
    K: Resource + Send + 'static,
    S: Stream<Item = Result<Event<K>, watcher::Error>> + Send + 'static,
{
    let key_of = |o: &K| {
        (
            o.meta().namespace.as_deref().map(Box::from),
            Box::from(o.meta().name.as_deref().unwrap_or_default()),
        )
    };
    Box::pin(async move {
        let mut stream = std::pin::pin!(stream);
        // The entries of a re-list, swapped in whole when it is complete.
        let mut relist: Option<HashMap<ObjectKey, Entry>> = None;
        while let Some(event) = stream.next().await {
            match event {
                Ok(Event::Init) => relist = Some(HashMap::new()),
                Ok(Event::InitApply(obj)) => {
                    let key = key_of(&obj);
                    let entry = reduce(obj, w.field_managers);
                    entry.route(&w.router);
                    relist.get_or_insert_with(HashMap::new).insert(key, entry);
                }
                Ok(Event::InitDone) => {
                    let fresh = relist.take().unwrap_or_default();
                    let gone: Vec<(ObjectKey, Entry)> = {
                        let mut entries = w
                            .cache
                            .entries
                            .write()
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                        let old = std::mem::replace(&mut *entries, fresh);
                        old.into_iter()
                            .filter(|(key, _)| !entries.contains_key(key))
                            .collect()
                    };
                    for (key, entry) in gone {
                        w.forget(key);
                        entry.route(&w.router);
                    }
                    w.cache.ready.send_replace(true);
                }
                Ok(Event::Apply(obj)) => {
                    let key = key_of(&obj);
                    let entry = reduce(obj, w.field_managers);
                    entry.route(&w.router);
                    w.cache
                        .entries
                        .write()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .insert(key, entry);
                }
                Ok(Event::Delete(obj)) => {
                    let key = key_of(&obj);
                    let entry = reduce(obj, w.field_managers);
                    w.cache
                        .entries
                        .write()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .remove(&key);
                    w.forget(key);
                    entry.route(&w.router);
                }
                Err(error) => {
                    tracing::warn!(kind = w.kind.as_str(), %error, "Child watch failed; retrying");
                }
            }
        }
    })
}

impl Watch {
    /// Forgets what this process applied to a child that is gone.
    fn forget(&self, (ns, name): ObjectKey) {
        self.applied
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&(self.kind, ns.map(String::from), String::from(name)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::children::content_hash;

    #[test]
    fn digests_keep_the_first_128_bits_of_the_hex_hash() {
        let value = serde_json::json!({"f:metadata": {"f:labels": {}}});
        let hex = content_hash(&value);
        assert_eq!(Digest::of_hex(&hex), Some(Digest::of_value(&value)));
        assert_ne!(
            Digest::of_value(&value),
            Digest::of_value(&serde_json::json!({}))
        );
        assert_eq!(Digest::of_hex("abc"), None);
        assert_eq!(Digest::of_hex(&"g".repeat(64)), None);
    }

    #[test]
    fn entries_keep_hashes_and_owner_not_the_object() {
        let meta: ObjectMeta = serde_json::from_value(serde_json::json!({
            "name": "edge",
            "namespace": "falco",
            "labels": {
                "app.kubernetes.io/managed-by": "falco-operator",
                (labels::OWNER_KIND): "Falco",
                (labels::OWNER_NAMESPACE): "falco",
                (labels::OWNER_NAME): "edge",
            },
            "annotations": {(crate::children::APPLIED_HASH_ANNOTATION): "ab".repeat(32)},
            "managedFields": [
                {"manager": "falco-operator", "operation": "Apply", "fieldsType": "FieldsV1",
                 "fieldsV1": {"f:spec": {}}},
                {"manager": "kubectl", "operation": "Update", "fieldsType": "FieldsV1",
                 "fieldsV1": {"f:x": {}}},
            ],
        }))
        .unwrap();
        let entry = Entry::of(&meta, &["falco-operator", "falco-operator-component"], None);
        let managers = ["falco-operator", "falco-operator-component"];
        let cached = entry.cached(&managers, "falco-operator");
        assert_eq!(cached.hash, Digest::of_hex(&"ab".repeat(32)));
        assert_eq!(
            cached.owned_fields,
            Some(Digest::of_value(&serde_json::json!({"f:spec": {}})))
        );
        assert_eq!(
            cached.owner,
            Some(("Falco".into(), "falco".into(), "edge".into()))
        );
        assert_eq!(
            entry
                .cached(&managers, "falco-operator-component")
                .owned_fields,
            None
        );
    }
}
