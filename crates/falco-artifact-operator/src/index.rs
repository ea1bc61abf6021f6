//! The sidecar's copy of the artifacts its namespace's index names ([`falco_api::index`]).
//!
//! The sidecar watches one object, the index ConfigMap the instance operator keeps, instead of
//! the three artifact kinds and the ConfigMaps. [`Objects::refresh`] brings the local copy in
//! line with the index: an entry whose version (uid and generation of an artifact,
//! `resourceVersion` of a ConfigMap) differs from the copy's is read again **by name** (one GET),
//! an entry that left the index is dropped, everything else costs nothing. So a change of one
//! Rulesfile costs each node one watch event on the index and one GET of that Rulesfile.

use std::collections::BTreeMap;
use std::sync::Arc;

use falco_api::index::{Index, IndexKind, Version};
use falco_api::{Config, Plugin, Rulesfile};
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use kube::{Client, Resource};

use crate::reconcile::Artifact;
use crate::{Error, Result};

/// Objects read at once.
const READS_AT_ONCE: usize = 8;

/// What the index named, as last read.
enum Object {
    /// An artifact, converted at read time (the CR itself is not kept).
    Artifact(Box<Artifact>),
    /// A referenced ConfigMap.
    ConfigMap(Arc<ConfigMap>),
}

/// The local copy of the objects an index names.
#[derive(Default)]
pub struct Objects {
    objects: BTreeMap<(IndexKind, String), (Version, Object)>,
}

/// The version of an object as read.
fn version_of(kind: IndexKind, meta: &kube::api::ObjectMeta) -> Version {
    match kind {
        IndexKind::ConfigMap => {
            Version::ResourceVersion(meta.resource_version.clone().unwrap_or_default())
        }
        _ => Version::Artifact {
            uid: meta.uid.clone().unwrap_or_default(),
            generation: meta.generation.unwrap_or_default(),
        },
    }
}

async fn read<K>(client: &Client, ns: &str, name: &str) -> Result<Option<K>>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    Api::<K>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .map_err(|source| Error::Kube {
            step: "get an object the artifact index names",
            source,
        })
}

/// Reads one object; `None` when it is gone or being deleted.
async fn fetch(
    client: &Client,
    ns: &str,
    kind: IndexKind,
    name: &str,
) -> Result<Option<(Version, Object)>> {
    fn live<K: Resource>(o: Option<K>) -> Option<K> {
        o.filter(|o| o.meta().deletion_timestamp.is_none())
    }
    Ok(match kind {
        IndexKind::Rulesfile => live(read::<Rulesfile>(client, ns, name).await?).map(|r| {
            (
                version_of(kind, &r.metadata),
                Object::Artifact(Box::new(Artifact::from(&r))),
            )
        }),
        IndexKind::Plugin => live(read::<Plugin>(client, ns, name).await?).map(|p| {
            (
                version_of(kind, &p.metadata),
                Object::Artifact(Box::new(Artifact::from(&p))),
            )
        }),
        IndexKind::Config => live(read::<Config>(client, ns, name).await?).map(|c| {
            (
                version_of(kind, &c.metadata),
                Object::Artifact(Box::new(Artifact::from(&c))),
            )
        }),
        IndexKind::ConfigMap => read::<ConfigMap>(client, ns, name).await?.map(|c| {
            (
                version_of(kind, &c.metadata),
                Object::ConfigMap(Arc::new(c)),
            )
        }),
    })
}

/// What [`Objects::refresh`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Refresh {
    /// Objects read.
    pub reads: usize,
    /// Reads that failed (the previous copy is kept; try again later).
    pub failures: usize,
}

impl Objects {
    /// Reads what changed in `index` since the last call, drops what left it.
    pub async fn refresh(&mut self, client: &Client, ns: &str, index: &Index) -> Refresh {
        self.objects.retain(|key, _| index.contains_key(key));
        let mut outcome = Refresh::default();
        let stale: Vec<(IndexKind, String)> = index
            .iter()
            .filter(|(key, version)| self.objects.get(*key).is_none_or(|(v, _)| v != *version))
            .map(|(key, _)| key.clone())
            .collect();
        outcome.reads = stale.len();
        // A few reads at once: a sidecar starting with many artifacts is not held by round trips.
        let mut reads = futures::stream::iter(stale)
            .map(|(kind, name)| async move {
                let read = fetch(client, ns, kind, &name).await;
                ((kind, name), read)
            })
            .buffer_unordered(READS_AT_ONCE);
        while let Some((key, read)) = reads.next().await {
            match read {
                Ok(Some(read)) => {
                    self.objects.insert(key, read);
                }
                // Gone since the index was written: the index will follow.
                Ok(None) => {
                    self.objects.remove(&key);
                }
                Err(error) => {
                    outcome.failures += 1;
                    tracing::warn!(kind = key.0.prefix(), name = %key.1, %error, "reading an indexed object failed; keeping the previous copy");
                }
            }
        }
        outcome
    }

    /// The artifacts, in index order.
    pub fn artifacts(&self) -> impl Iterator<Item = &Artifact> {
        self.objects.values().filter_map(|(_, o)| match o {
            Object::Artifact(a) => Some(&**a),
            Object::ConfigMap(_) => None,
        })
    }

    /// A referenced ConfigMap, if the index names it and it was read.
    pub fn config_map(&self, name: &str) -> Option<&ConfigMap> {
        match self.objects.get(&(IndexKind::ConfigMap, name.to_owned())) {
            Some((_, Object::ConfigMap(c))) => Some(c),
            _ => None,
        }
    }
}
