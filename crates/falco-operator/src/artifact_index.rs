//! The artifact index of each namespace ([`falco_api::index`]): what the per-node sidecars watch
//! instead of the three artifact kinds and the ConfigMaps.
//!
//! The operator already watches every `Rulesfile`, `Plugin` and `Config` (for their aggregated
//! status, [`crate::aggregate`]); here it also watches the `resourceVersion` of the ConfigMaps in
//! its namespaces (metadata only, its own children excluded by label), and after every burst of
//! changes writes, per namespace with artifacts, the ConfigMap [`INDEX_CONFIG_MAP`] when its
//! content changed. One write per change and namespace, whatever the number of nodes; each
//! sidecar then reads only the object that changed.
//!
//! The index carries the operator's labels and the applied-hash annotation, so the ConfigMap
//! child cache ([`crate::cache`]) tells whether the stored index is already the wanted one: an
//! unchanged cluster costs no request, a restart included. A namespace whose last artifact is
//! gone gets an empty index (its sidecars then remove their files); the index is never deleted,
//! and a sidecar that finds none keeps what it has.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use falco_api::index::{INDEX_CONFIG_MAP, Index, IndexKind, Version, encode};
use falco_api::{Config, Plugin, Rulesfile};
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PartialObjectMeta, Patch, PatchParams};
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt, watcher as watch};
use kube::{Client, Resource};
use tokio::sync::Notify;

use crate::apply::{Decision, decide};
use crate::cache::{Applied, Caches, Digest};
use crate::children::{APPLIED_HASH_ANNOTATION, ChildKind, content_hash};
use crate::labels;

/// Field manager of the index writes.
pub const FIELD_MANAGER: &str = "falco-operator-artifact-index";

/// `resourceVersion` of the ConfigMaps the operator did not create, by namespace and name.
pub type ConfigMapVersions = HashMap<(String, String), String>;

/// An artifact as the index sees it.
pub trait Indexed: Resource {
    /// Its key prefix.
    const KIND: IndexKind;
    /// The ConfigMap it reads, if any.
    fn config_map(&self) -> Option<&str>;
}

impl Indexed for Rulesfile {
    const KIND: IndexKind = IndexKind::Rulesfile;
    fn config_map(&self) -> Option<&str> {
        self.spec.config_map_ref.as_ref().map(|r| r.name.as_str())
    }
}

impl Indexed for Plugin {
    const KIND: IndexKind = IndexKind::Plugin;
    fn config_map(&self) -> Option<&str> {
        None
    }
}

impl Indexed for Config {
    const KIND: IndexKind = IndexKind::Config;
    fn config_map(&self) -> Option<&str> {
        self.spec.config_map_ref.as_ref().map(|r| r.name.as_str())
    }
}

/// Adds the live objects of one kind, and the ConfigMaps they read, to the indexes by namespace.
pub fn add<K: Indexed>(
    indexes: &mut BTreeMap<String, Index>,
    objects: &[Arc<K>],
    versions: &ConfigMapVersions,
) {
    for object in objects {
        let meta = object.meta();
        let (Some(ns), Some(name), Some(uid)) = (&meta.namespace, &meta.name, &meta.uid) else {
            continue;
        };
        if meta.deletion_timestamp.is_some() {
            continue;
        }
        let index = indexes.entry(ns.clone()).or_default();
        index.insert(
            (K::KIND, name.clone()),
            Version::Artifact {
                uid: uid.clone(),
                generation: meta.generation.unwrap_or_default(),
            },
        );
        if let Some(cm) = object.config_map()
            && let Some(rv) = versions.get(&(ns.clone(), cm.to_owned()))
        {
            index.insert(
                (IndexKind::ConfigMap, cm.to_owned()),
                Version::ResourceVersion(rv.clone()),
            );
        }
    }
}

/// The index ConfigMap to apply, and its content hash.
pub fn desired(ns: &str, index: &Index) -> (serde_json::Value, String) {
    let data = encode(index);
    let hash = content_hash(&serde_json::to_value(&data).unwrap_or_default());
    let object = serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": INDEX_CONFIG_MAP,
            "namespace": ns,
            "labels": {
                (labels::MANAGED_BY): labels::MANAGED_BY_VALUE,
                "app.kubernetes.io/component": "artifact-index",
            },
            "annotations": {(APPLIED_HASH_ANNOTATION): hash},
        },
        "data": data,
    });
    (object, hash)
}

/// Keeps [`ConfigMapVersions`] up to date from a metadata watch of the ConfigMaps the operator
/// did not create (metadata only); pokes `changed` on every change and sets `listed` once the
/// first list is in.
pub async fn watch_config_maps(
    api: Api<PartialObjectMeta<ConfigMap>>,
    versions: Arc<std::sync::Mutex<ConfigMapVersions>>,
    changed: Arc<Notify>,
    listed: tokio::sync::watch::Sender<bool>,
) {
    let config = watcher::Config::default().labels(&format!(
        "{}!={}",
        labels::MANAGED_BY,
        labels::MANAGED_BY_VALUE
    ));
    let key = |o: &PartialObjectMeta<ConfigMap>| {
        (
            o.metadata.namespace.clone().unwrap_or_default(),
            o.metadata.name.clone().unwrap_or_default(),
        )
    };
    let rv = |o: &PartialObjectMeta<ConfigMap>| o.metadata.resource_version.clone();
    let mut relist: Option<ConfigMapVersions> = None;
    let stream = watch(api, config).default_backoff();
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.next().await {
        let mut versions = versions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match event {
            Ok(Event::Init) => relist = Some(HashMap::new()),
            Ok(Event::InitApply(o)) => {
                if let Some(v) = rv(&o) {
                    relist.get_or_insert_with(HashMap::new).insert(key(&o), v);
                }
            }
            Ok(Event::InitDone) => {
                *versions = relist.take().unwrap_or_default();
                listed.send_replace(true);
            }
            Ok(Event::Apply(o)) => {
                if let Some(v) = rv(&o) {
                    versions.insert(key(&o), v);
                }
            }
            Ok(Event::Delete(o)) => {
                versions.remove(&key(&o));
            }
            Err(error) => {
                tracing::warn!(%error, "ConfigMap watch failed; retrying");
                continue;
            }
        }
        drop(versions);
        changed.notify_one();
    }
}

/// Writes the indexes that differ from the stored ones; returns the number of writes and whether
/// one failed.
pub async fn sync(
    client: &Client,
    caches: &Caches,
    written: &mut HashMap<String, Applied>,
    indexes: BTreeMap<String, Index>,
) -> (usize, bool) {
    // Namespaces with an index but no artifact left get an empty one.
    let mut all = indexes;
    for ns in caches.namespaces_of(ChildKind::ConfigMap, INDEX_CONFIG_MAP) {
        all.entry(ns).or_default();
    }
    let (mut writes, mut failed) = (0, false);
    for (ns, index) in all {
        let (object, hash) = desired(&ns, &index);
        let Some(hash) = Digest::of_hex(&hash) else {
            continue;
        };
        let cached = caches.get(
            ChildKind::ConfigMap,
            Some(&ns),
            INDEX_CONFIG_MAP,
            FIELD_MANAGER,
        );
        // The children's rule (`crate::apply`): stored with this hash, or our own write of it
        // that the cache has not seen yet.
        if let Some(cached) = &cached
            && decide(hash, cached, written.get(&ns)) != Decision::Send
        {
            continue;
        }
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
        match api
            .patch(
                INDEX_CONFIG_MAP,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&object),
            )
            .await
        {
            Ok(stored) => {
                writes += 1;
                written.insert(
                    ns,
                    Applied {
                        hash,
                        owned_fields: None,
                        resource_version: crate::cache::resource_version(stored.meta()),
                    },
                );
            }
            Err(error) => {
                failed = true;
                tracing::warn!(%ns, %error, "Writing the artifact index failed");
            }
        }
    }
    (writes, failed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use falco_api::index::decode;

    fn rulesfile(ns: &str, name: &str, generation: i64, cm: Option<&str>) -> Arc<Rulesfile> {
        let mut spec = serde_json::json!({"inlineRules": "- list: x\n  items: []\n"});
        if let Some(cm) = cm {
            spec = serde_json::json!({"configMapRef": {"name": cm}});
        }
        let mut r: Rulesfile = serde_json::from_value(serde_json::json!({
            "apiVersion": "artifact.falcosecurity.dev/v1alpha1",
            "kind": "Rulesfile",
            "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{name}"), "generation": generation},
            "spec": spec,
        }))
        .unwrap();
        r.metadata.generation = Some(generation);
        Arc::new(r)
    }

    #[test]
    fn lists_live_artifacts_and_the_config_maps_they_read_per_namespace() {
        let mut versions = ConfigMapVersions::new();
        versions.insert(("a".into(), "custom".into()), "77".into());
        versions.insert(("a".into(), "unreferenced".into()), "78".into());
        let mut gone = (*rulesfile("a", "gone", 1, None)).clone();
        gone.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            ));
        let objects = vec![
            rulesfile("a", "base", 2, None),
            rulesfile("a", "from-cm", 1, Some("custom")),
            rulesfile("a", "missing-cm", 1, Some("absent")),
            rulesfile("b", "other", 5, None),
            Arc::new(gone),
        ];
        let mut indexes = BTreeMap::new();
        add(&mut indexes, &objects, &versions);
        let a = encode(&indexes["a"]);
        assert_eq!(
            a.into_iter().collect::<Vec<_>>(),
            vec![
                ("configmap.custom".to_owned(), "77".to_owned()),
                ("rulesfile.base".to_owned(), "uid-base/2".to_owned()),
                ("rulesfile.from-cm".to_owned(), "uid-from-cm/1".to_owned()),
                (
                    "rulesfile.missing-cm".to_owned(),
                    "uid-missing-cm/1".to_owned()
                ),
            ]
        );
        assert_eq!(encode(&indexes["b"])["rulesfile.other"], "uid-other/5");

        // The applied object carries the data and the hash of exactly that data.
        let (object, hash) = desired("a", &indexes["a"]);
        let data: BTreeMap<String, String> =
            serde_json::from_value(object["data"].clone()).unwrap();
        assert_eq!(decode(&data), indexes["a"]);
        assert_eq!(
            object["metadata"]["annotations"][APPLIED_HASH_ANNOTATION],
            hash
        );
        assert_ne!(hash, desired("a", &Index::new()).1);
    }
}
