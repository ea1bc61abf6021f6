//! The watch caches of the children, and the routing of child events to the owning CR.
//!
//! One watch per child kind, selected by `app.kubernetes.io/managed-by=falco-operator`, so the
//! operator never caches objects it did not make. The caches are trimmed to what the reconcilers
//! read:
//!
//! - ServiceAccount, Role, RoleBinding, ClusterRole, ClusterRoleBinding, ConfigMap, Service:
//!   **metadata only** (a metadata watch: the API server never sends their content);
//! - DaemonSet and Deployment: metadata, `spec.replicas` and `status` (the pod template is dropped
//!   as it arrives);
//! - in every kind, `managedFields` keeps only this operator's own entries.
//!
//! Each event is routed by the owner labels ([`crate::labels::owner_from_labels`]) to the Falco or
//! the Component controller, which is how cluster-scoped children (no ownerReference possible)
//! trigger their owner, and how any change to a child is corrected.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::channel::mpsc::UnboundedSender;
use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{ConfigMap, PodTemplateSpec, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt, watcher as full_watcher};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;

use crate::children::{ChildKind, content_hash};
use crate::labels;
use falco_api::{Component, Falco};

/// What the apply step needs to know about a cached child.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cached {
    /// The value of the applied-hash annotation.
    pub hash: Option<String>,
    /// Hash of the fields this operator's field manager owns (its `managedFields` entry).
    pub owned_fields: Option<String>,
    /// The owning CR from the owner labels: (kind, namespace, name).
    pub owner: Option<(String, String, String)>,
}

impl Cached {
    fn of(meta: &ObjectMeta, field_manager: &str) -> Self {
        Self {
            hash: meta
                .annotations
                .as_ref()
                .and_then(|a| a.get(crate::children::APPLIED_HASH_ANNOTATION))
                .cloned(),
            owned_fields: owned_fields_hash(meta, field_manager),
            owner: meta
                .labels
                .as_ref()
                .and_then(labels::owner_from_labels)
                .map(|(k, n, m)| (k.to_owned(), n.to_owned(), m.to_owned())),
        }
    }
}

/// Hash of the fields `field_manager` owns through Apply on the main resource.
pub fn owned_fields_hash(meta: &ObjectMeta, field_manager: &str) -> Option<String> {
    meta.managed_fields
        .iter()
        .flatten()
        .find(|e| {
            e.manager.as_deref() == Some(field_manager)
                && e.operation.as_deref() == Some("Apply")
                && e.subresource.as_deref().unwrap_or("").is_empty()
        })
        .and_then(|e| e.fields_v1.as_ref())
        .map(|f| match &f.0 {
            // Already reduced to its hash by the cache (see `trim_managed_fields`).
            serde_json::Value::String(hash) => hash.clone(),
            fields => content_hash(fields),
        })
}

/// Key of a child: kind, namespace, name.
pub type ChildKey = (ChildKind, Option<String>, String);

/// What this process last applied to a child: the content hash and the hash of the fields it owned
/// right after that apply. Cleared when the child is deleted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    /// The applied content hash.
    pub hash: String,
    /// [`owned_fields_hash`] of the apply's response.
    pub owned_fields: Option<String>,
}

/// The child caches.
#[derive(Clone)]
pub struct Caches {
    service_accounts: Store<PartialObjectMeta<ServiceAccount>>,
    roles: Store<PartialObjectMeta<Role>>,
    role_bindings: Store<PartialObjectMeta<RoleBinding>>,
    cluster_roles: Store<PartialObjectMeta<ClusterRole>>,
    cluster_role_bindings: Store<PartialObjectMeta<ClusterRoleBinding>>,
    config_maps: Store<PartialObjectMeta<ConfigMap>>,
    services: Store<PartialObjectMeta<Service>>,
    daemon_sets: Store<DaemonSet>,
    deployments: Store<Deployment>,
    /// What this process applied, by child.
    pub applied: Arc<Mutex<HashMap<ChildKey, Applied>>>,
}

fn lookup<K>(store: &Store<K>, ns: Option<&str>, name: &str) -> Option<Arc<K>>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    let key = ObjectRef::new(name);
    store.get(&match ns {
        Some(ns) => key.within(ns),
        None => key,
    })
}

impl Caches {
    /// What the cache holds about a child, seen through `field_manager`'s eyes.
    pub fn get(
        &self,
        kind: ChildKind,
        ns: Option<&str>,
        name: &str,
        field_manager: &str,
    ) -> Option<Cached> {
        let meta = self.meta(kind, ns, name)?;
        Some(Cached::of(&meta, field_manager))
    }

    fn meta(&self, kind: ChildKind, ns: Option<&str>, name: &str) -> Option<ObjectMeta> {
        match kind {
            ChildKind::ServiceAccount => {
                lookup(&self.service_accounts, ns, name).map(|o| o.metadata.clone())
            }
            ChildKind::Role => lookup(&self.roles, ns, name).map(|o| o.metadata.clone()),
            ChildKind::RoleBinding => {
                lookup(&self.role_bindings, ns, name).map(|o| o.metadata.clone())
            }
            ChildKind::ClusterRole => {
                lookup(&self.cluster_roles, ns, name).map(|o| o.metadata.clone())
            }
            ChildKind::ClusterRoleBinding => {
                lookup(&self.cluster_role_bindings, ns, name).map(|o| o.metadata.clone())
            }
            ChildKind::ConfigMap => lookup(&self.config_maps, ns, name).map(|o| o.metadata.clone()),
            ChildKind::Service => lookup(&self.services, ns, name).map(|o| o.metadata.clone()),
            ChildKind::DaemonSet => lookup(&self.daemon_sets, ns, name).map(|o| o.metadata.clone()),
            ChildKind::Deployment => {
                lookup(&self.deployments, ns, name).map(|o| o.metadata.clone())
            }
        }
    }

    /// The cached DaemonSet (metadata, status; no pod template).
    pub fn daemon_set(&self, ns: &str, name: &str) -> Option<Arc<DaemonSet>> {
        lookup(&self.daemon_sets, Some(ns), name)
    }

    /// The cached Deployment (metadata, replicas, status; no pod template).
    pub fn deployment(&self, ns: &str, name: &str) -> Option<Arc<Deployment>> {
        lookup(&self.deployments, Some(ns), name)
    }

    /// Waits until every child cache has its first list.
    pub async fn wait_until_ready(&self) {
        let _ = futures::join!(
            self.service_accounts.wait_until_ready(),
            self.roles.wait_until_ready(),
            self.role_bindings.wait_until_ready(),
            self.cluster_roles.wait_until_ready(),
            self.cluster_role_bindings.wait_until_ready(),
            self.config_maps.wait_until_ready(),
            self.services.wait_until_ready(),
            self.daemon_sets.wait_until_ready(),
            self.deployments.wait_until_ready(),
        );
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
    fn route(&self, meta: &ObjectMeta) {
        let Some((kind, ns, name)) = meta.labels.as_ref().and_then(labels::owner_from_labels)
        else {
            return;
        };
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

/// Keeps only `field_manager`'s entries in `managedFields` (the rest is never read).
fn trim_managed_fields(meta: &mut ObjectMeta, field_managers: &[&str]) {
    if let Some(entries) = meta.managed_fields.as_mut() {
        entries.retain(|e| {
            e.manager
                .as_deref()
                .is_some_and(|m| field_managers.contains(&m))
        });
        // Only the hash of our owned fields is ever compared: keep that instead of the field
        // set, which as a JSON tree is the largest part of a cached DaemonSet (about 100 KiB).
        for entry in entries.iter_mut() {
            if let Some(fields) = entry.fields_v1.as_mut()
                && !fields.0.is_string()
            {
                fields.0 = serde_json::Value::String(content_hash(&fields.0));
            }
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
    let applied: Arc<Mutex<HashMap<ChildKey, Applied>>> = Arc::default();
    let selector = format!("{}={}", labels::MANAGED_BY, labels::MANAGED_BY_VALUE);
    let namespaced_config = watcher::Config::default().labels(&selector);
    let cluster_selector = match namespace {
        Some(ns) => format!("{selector},{}={ns}", labels::OWNER_NAMESPACE),
        None => selector.clone(),
    };
    let cluster_config = watcher::Config::default().labels(&cluster_selector);
    let mut drivers = Vec::new();

    macro_rules! meta_cache {
        ($ty:ty, $kind:expr, $api:expr, $config:expr) => {{
            let api: Api<PartialObjectMeta<$ty>> = $api;
            let (store, writer) = reflector::store();
            let stream = full_watcher(api, $config).default_backoff().modify(
                |o: &mut PartialObjectMeta<$ty>| {
                    trim_managed_fields(&mut o.metadata, field_managers)
                },
            );
            drivers.push(drive(
                reflector::reflector(writer, stream),
                $kind,
                router.clone(),
                applied.clone(),
                |o: &PartialObjectMeta<$ty>| o.metadata.clone(),
            ));
            store
        }};
    }
    macro_rules! ns_api {
        () => {
            match namespace {
                Some(ns) => Api::namespaced(client.clone(), ns),
                None => Api::all(client.clone()),
            }
        };
    }

    let nc = namespaced_config.clone();
    let cc = cluster_config.clone();
    let service_accounts = meta_cache!(
        ServiceAccount,
        ChildKind::ServiceAccount,
        ns_api!(),
        nc.clone()
    );
    let roles = meta_cache!(Role, ChildKind::Role, ns_api!(), nc.clone());
    let role_bindings = meta_cache!(RoleBinding, ChildKind::RoleBinding, ns_api!(), nc.clone());
    let cluster_roles = meta_cache!(
        ClusterRole,
        ChildKind::ClusterRole,
        Api::all(client.clone()),
        cc.clone()
    );
    let cluster_role_bindings = meta_cache!(
        ClusterRoleBinding,
        ChildKind::ClusterRoleBinding,
        Api::all(client.clone()),
        cc
    );
    let config_maps = meta_cache!(ConfigMap, ChildKind::ConfigMap, ns_api!(), nc.clone());
    let services = meta_cache!(Service, ChildKind::Service, ns_api!(), nc);

    let workload_api = |client: &Client| match namespace {
        Some(ns) => (
            Api::<DaemonSet>::namespaced(client.clone(), ns),
            Api::<Deployment>::namespaced(client.clone(), ns),
        ),
        None => (Api::all(client.clone()), Api::all(client.clone())),
    };
    let (ds_api, deploy_api) = workload_api(client);
    let (daemon_sets, writer) = reflector::store();
    let stream = full_watcher(ds_api, namespaced_config.clone())
        .default_backoff()
        .modify(|ds: &mut DaemonSet| {
            trim_managed_fields(&mut ds.metadata, field_managers);
            ds.spec.template = PodTemplateSpec::default();
        });
    drivers.push(drive(
        reflector::reflector(writer, stream),
        ChildKind::DaemonSet,
        router.clone(),
        applied.clone(),
        |o: &DaemonSet| o.metadata.clone(),
    ));
    let (deployments, writer) = reflector::store();
    let stream = full_watcher(deploy_api, namespaced_config)
        .default_backoff()
        .modify(|d: &mut Deployment| {
            trim_managed_fields(&mut d.metadata, field_managers);
            d.spec.template = PodTemplateSpec::default();
        });
    drivers.push(drive(
        reflector::reflector(writer, stream),
        ChildKind::Deployment,
        router,
        applied.clone(),
        |o: &Deployment| o.metadata.clone(),
    ));

    (
        Caches {
            service_accounts,
            roles,
            role_bindings,
            cluster_roles,
            cluster_role_bindings,
            config_maps,
            services,
            daemon_sets,
            deployments,
            applied,
        },
        drivers,
    )
}

/// Drives one child watch: routes every change to its owner, and forgets what was applied to a
/// deleted child (so the next reconcile recreates it).
fn drive<K, S>(
    stream: S,
    kind: ChildKind,
    router: Router,
    applied: Arc<Mutex<HashMap<ChildKey, Applied>>>,
    meta: fn(&K) -> ObjectMeta,
) -> Driver
where
    K: DeserializeOwned + Send + 'static,
    S: Stream<Item = Result<Event<K>, watcher::Error>> + Send + 'static,
{
    Box::pin(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(Event::Apply(obj) | Event::InitApply(obj)) => router.route(&meta(&obj)),
                Ok(Event::Delete(obj)) => {
                    let m = meta(&obj);
                    let key = (
                        kind,
                        m.namespace.clone(),
                        m.name.clone().unwrap_or_default(),
                    );
                    applied
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .remove(&key);
                    router.route(&m);
                }
                Ok(Event::Init | Event::InitDone) => {}
                Err(error) => {
                    tracing::warn!(kind = kind.as_str(), %error, "Child watch failed; retrying");
                }
            }
        }
    })
}
