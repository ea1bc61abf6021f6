//! The single writer of the shared artifacts' status: `Programmed` / `ResolvedRefs` of every
//! `Rulesfile`, `Plugin` and `Config`, aggregated from the per-node `NodeArtifacts` records the
//! sidecars write ([`falco_api::artifact::aggregate_conditions`]).
//!
//! Upstream had every node's sidecar force-patch the shared CR's status: N writers on one
//! object, each write fanned out to N watchers, the reconcile storms of upstream issues #356 and
//! #371. Here the sidecars write only their own node's record and this operator, one process per
//! cluster (the leader), writes the shared status, with a constant size (counts and at most three
//! node names), and only when it differs from what is stored, so an unchanged cluster costs no
//! request. A status transition keeps its `lastTransitionTime` unless the status itself changes.
//!
//! Records of deleted nodes are garbage-collected with their `Node` (owner reference), and the
//! next aggregation drops them.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use falco_api::artifact::aggregate_conditions;
use falco_api::{ArtifactStatus, Config, Falco, NodeArtifacts, Plugin, Rulesfile};
use falco_core::driver::status::DriverStatus;
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, PartialObjectMeta, Patch, PatchParams};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

use crate::artifact_index::{self, ConfigMapVersions};
use crate::cache::Caches;
use crate::driver_status::DriverReports;
use crate::metrics::Metrics;
use crate::run::api;

/// Where the nodes' driver reports go: the shared reports the Falco reconciler reads, and a
/// trigger for the Falco instances of a namespace whose reports changed.
pub struct DriverFeed {
    /// The reports, per namespace.
    pub reports: DriverReports,
    /// The Falco cache (which instances of a namespace run a driver loader).
    pub falcos: Store<Falco>,
    /// The Falco controller's trigger.
    pub trigger: futures::channel::mpsc::UnboundedSender<ObjectRef<Falco>>,
}

impl DriverFeed {
    /// Takes the driver reports out of `records` and reconciles the Falco instances of every
    /// namespace whose reports changed (only those with a driver loader).
    fn update(&self, records: &BTreeMap<String, Vec<NodeArtifacts>>) {
        let next: HashMap<String, BTreeMap<String, DriverStatus>> = records
            .iter()
            .map(|(ns, records)| {
                let reports: BTreeMap<String, DriverStatus> = records
                    .iter()
                    .filter_map(|r| {
                        let driver = r.status.as_ref()?.driver.clone()?;
                        Some((r.spec.node_name.clone(), driver))
                    })
                    .collect();
                (ns.clone(), reports)
            })
            .filter(|(_, reports)| !reports.is_empty())
            .collect();
        let changed = self.reports.replace(next);
        if changed.is_empty() {
            return;
        }
        for falco in self.falcos.state() {
            let ns = falco.namespace().unwrap_or_default();
            let loads = falco
                .spec
                .driver
                .as_ref()
                .is_some_and(|d| d.kind.needs_loader());
            if loads && changed.contains(&ns) {
                let _ = self
                    .trigger
                    .unbounded_send(ObjectRef::new(&falco.name_any()).within(&ns));
            }
        }
    }
}

/// Field manager of the aggregated status writes.
pub const FIELD_MANAGER: &str = "falco-operator-artifact-status";

/// An artifact kind whose status this module writes.
pub trait Artifact:
    Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
    + Clone
    + DeserializeOwned
    + serde::Serialize
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
    /// `Rulesfile`, `Plugin` or `Config`, as in the per-node records.
    const KIND: &'static str;
    /// The stored status.
    fn status(&self) -> Option<&ArtifactStatus>;
}

impl Artifact for Rulesfile {
    const KIND: &'static str = "Rulesfile";
    fn status(&self) -> Option<&ArtifactStatus> {
        self.status.as_ref()
    }
}
impl Artifact for Plugin {
    const KIND: &'static str = "Plugin";
    fn status(&self) -> Option<&ArtifactStatus> {
        self.status.as_ref()
    }
}
impl Artifact for Config {
    const KIND: &'static str = "Config";
    fn status(&self) -> Option<&ArtifactStatus> {
        self.status.as_ref()
    }
}

/// The conditions to store: `fresh` with the previous `lastTransitionTime` kept where a
/// condition's status did not change.
pub fn carry_transition_times(fresh: Vec<Condition>, previous: &[Condition]) -> Vec<Condition> {
    fresh
        .into_iter()
        .map(|mut c| {
            if let Some(old) = previous
                .iter()
                .find(|p| p.type_ == c.type_ && p.status == c.status)
            {
                c.last_transition_time = old.last_transition_time.clone();
            }
            c
        })
        .collect()
}

/// Whether two condition lists say the same (order and transition times aside).
pub fn same_conditions(a: &[Condition], b: &[Condition]) -> bool {
    let key = |c: &Condition| {
        (
            c.type_.clone(),
            c.status.clone(),
            c.reason.clone(),
            c.message.clone(),
            c.observed_generation,
        )
    };
    let mut a: Vec<_> = a.iter().map(key).collect();
    let mut b: Vec<_> = b.iter().map(key).collect();
    a.sort();
    b.sort();
    a == b
}

/// Watches `K` into a store and pokes `changed` on every event.
fn watch<K>(api: Api<K>, changed: Arc<Notify>) -> (Store<K>, impl std::future::Future<Output = ()>)
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .for_each(move |_| {
            changed.notify_one();
            futures::future::ready(())
        });
    (reader, stream)
}

/// Writes the aggregated status of every `K` whose stored status differs; returns the number of
/// writes and the category of the last failure, if any.
async fn sync_kind<K: Artifact>(
    client: &Client,
    store: &Store<K>,
    records: &BTreeMap<String, Vec<NodeArtifacts>>,
) -> (usize, Option<&'static str>) {
    let mut writes = 0;
    let mut failed = None;
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    for artifact in store.state() {
        let (Some(ns), name) = (artifact.namespace(), artifact.name_any()) else {
            continue;
        };
        let generation = artifact.meta().generation.unwrap_or_default();
        let empty = Vec::new();
        let in_ns = records.get(&ns).unwrap_or(&empty);
        let previous = artifact
            .status()
            .map(|s| s.conditions.as_slice())
            .unwrap_or_default();
        let fresh = carry_transition_times(
            aggregate_conditions(K::KIND, &name, generation, in_ns, now.clone()),
            previous,
        );
        let stored_generation = artifact.status().and_then(|s| s.observed_generation);
        if same_conditions(&fresh, previous) && stored_generation == Some(generation) {
            continue;
        }
        let patch = serde_json::json!({
            "status": { "conditions": fresh, "observedGeneration": generation }
        });
        let api: Api<K> = Api::namespaced(client.clone(), &ns);
        match api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => writes += 1,
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(error) => {
                failed = Some("status");
                tracing::warn!(kind = K::KIND, %ns, %name, %error, "Patching the aggregated artifact status failed");
            }
        }
    }
    (writes, failed)
}

/// Runs the aggregation until the future is dropped: watches `NodeArtifacts` and the three
/// artifact kinds in `ns` (or all namespaces), and after every burst of changes (debounced by
/// `debounce`) writes the statuses that differ.
///
/// The same loop keeps the artifact index of every namespace ([`crate::artifact_index`]) and
/// hands the nodes' driver reports to the Falco reconciler ([`DriverFeed`],
/// [`crate::driver_status`]).
pub async fn run(
    client: Client,
    ns: Option<String>,
    caches: Caches,
    metrics: Arc<Metrics>,
    debounce: Duration,
    drivers: DriverFeed,
) {
    let ns = ns.as_deref();
    let changed = Arc::new(Notify::new());
    let versions = Arc::new(std::sync::Mutex::new(ConfigMapVersions::new()));
    let (listed_tx, mut versions_listed) = tokio::sync::watch::channel(false);
    let config_maps = artifact_index::watch_config_maps(
        api::<PartialObjectMeta<ConfigMap>>(&client, ns),
        versions.clone(),
        changed.clone(),
        listed_tx,
    );
    let (nodes, nodes_watch) = watch(api::<NodeArtifacts>(&client, ns), changed.clone());
    let (rulesfiles, rulesfiles_watch) = watch(api::<Rulesfile>(&client, ns), changed.clone());
    let (plugins, plugins_watch) = watch(api::<Plugin>(&client, ns), changed.clone());
    let (configs, configs_watch) = watch(api::<Config>(&client, ns), changed.clone());
    let watches = futures::future::join5(
        nodes_watch,
        rulesfiles_watch,
        plugins_watch,
        configs_watch,
        config_maps,
    );
    let mut written = std::collections::HashMap::new();
    let writer = async {
        let _ = nodes.wait_until_ready().await;
        let _ = rulesfiles.wait_until_ready().await;
        let _ = plugins.wait_until_ready().await;
        let _ = configs.wait_until_ready().await;
        // An index written before the ConfigMaps are listed would lack their versions.
        let _ = versions_listed.wait_for(|listed| *listed).await;
        loop {
            let mut records: BTreeMap<String, Vec<NodeArtifacts>> = BTreeMap::new();
            for record in nodes.state() {
                if let Some(ns) = record.namespace() {
                    records.entry(ns).or_default().push((*record).clone());
                }
            }
            drivers.update(&records);
            let started = std::time::Instant::now();
            let results = [
                sync_kind(&client, &rulesfiles, &records).await,
                sync_kind(&client, &plugins, &records).await,
                sync_kind(&client, &configs, &records).await,
            ];
            let failed = results.iter().find_map(|(_, f)| *f);
            metrics.reconciled("artifact-status", started.elapsed(), failed);
            let writes: usize = results.iter().map(|(w, _)| w).sum();
            if writes > 0 {
                tracing::debug!(writes, "Aggregated artifact statuses written");
            }

            let started = std::time::Instant::now();
            let mut indexes = BTreeMap::new();
            {
                let versions = versions
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                artifact_index::add(&mut indexes, &rulesfiles.state(), &versions);
                artifact_index::add(&mut indexes, &plugins.state(), &versions);
                artifact_index::add(&mut indexes, &configs.state(), &versions);
            }
            let (writes, failed) =
                artifact_index::sync(&client, &caches, &mut written, indexes).await;
            metrics.reconciled(
                "artifact-index",
                started.elapsed(),
                failed.then_some("apply"),
            );
            if writes > 0 {
                tracing::debug!(writes, "Artifact indexes written");
            }
            // Also once a minute without events: an index someone deleted comes back (an
            // unchanged cluster still costs no request).
            let _ = tokio::time::timeout(Duration::from_secs(60), changed.notified()).await;
            tokio::time::sleep(debounce).await;
        }
    };
    tokio::select! {
        _ = watches => {}
        () = writer => {}
    }
}
