//! The artifact index: what the per-node sidecars of one namespace watch instead of every artifact.
//!
//! A sidecar needs the `Rulesfile`, `Plugin` and `Config` objects of its namespace, the ConfigMaps
//! they reference and its own `Node`. Watching each kind would cost every node five watch streams
//! (upstream: one per kind, with a cache of every Secret of the namespace). Instead the instance
//! operator, one process per cluster, keeps one small ConfigMap per namespace,
//! [`INDEX_CONFIG_MAP`], naming every live artifact with its uid and generation and every ConfigMap
//! they reference with its `resourceVersion`. A sidecar watches that one object (field selector on
//! its name) and its own Node: two streams per node. When an entry changes, it reads the object it
//! names by name (GET); nothing else is fetched.
//!
//! The data is one key per entry, readable with `kubectl get configmap falco-artifact-index -o yaml`:
//!
//! | Key | Value |
//! |---|---|
//! | `rulesfile.<name>`, `plugin.<name>`, `config.<name>` | `<uid>/<generation>` |
//! | `configmap.<name>` | `<resourceVersion>` |
//!
//! An artifact being deleted (deletion timestamp set) is not listed. Keys with another prefix
//! are ignored (a newer writer may add kinds).

use std::collections::BTreeMap;

/// Name of the index ConfigMap in each namespace with artifacts.
pub const INDEX_CONFIG_MAP: &str = "falco-artifact-index";

/// The kinds an index lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IndexKind {
    /// `Rulesfile`.
    Rulesfile,
    /// `Plugin`.
    Plugin,
    /// `Config`.
    Config,
    /// A ConfigMap an artifact references.
    ConfigMap,
}

impl IndexKind {
    /// Every kind, in key order.
    pub const ALL: [Self; 4] = [Self::Config, Self::ConfigMap, Self::Plugin, Self::Rulesfile];

    /// The key prefix (without the dot).
    pub fn prefix(self) -> &'static str {
        match self {
            Self::Rulesfile => "rulesfile",
            Self::Plugin => "plugin",
            Self::Config => "config",
            Self::ConfigMap => "configmap",
        }
    }

    fn of_prefix(prefix: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.prefix() == prefix)
    }
}

/// The version of an indexed object: what changes when a sidecar must read it again.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Version {
    /// An artifact: its uid (a re-created object starts again at generation 1) and generation
    /// (moves with the spec only, not with the status the operator writes).
    Artifact {
        /// `metadata.uid`.
        uid: String,
        /// `metadata.generation`.
        generation: i64,
    },
    /// A ConfigMap: its `resourceVersion` (ConfigMaps have no generation).
    ResourceVersion(String),
}

/// One namespace's index: `(kind, name)` → version.
pub type Index = BTreeMap<(IndexKind, String), Version>;

/// The ConfigMap data of an index.
pub fn encode(index: &Index) -> BTreeMap<String, String> {
    index
        .iter()
        .map(|((kind, name), version)| {
            let value = match version {
                Version::Artifact { uid, generation } => format!("{uid}/{generation}"),
                Version::ResourceVersion(rv) => rv.clone(),
            };
            (format!("{}.{name}", kind.prefix()), value)
        })
        .collect()
}

/// Reads the ConfigMap data of an index; entries that do not parse are skipped.
pub fn decode(data: &BTreeMap<String, String>) -> Index {
    data.iter()
        .filter_map(|(key, value)| {
            let (prefix, name) = key.split_once('.')?;
            let kind = IndexKind::of_prefix(prefix)?;
            if name.is_empty() {
                return None;
            }
            let version = match kind {
                IndexKind::ConfigMap => Version::ResourceVersion(value.clone()),
                _ => {
                    let (uid, generation) = value.rsplit_once('/')?;
                    Version::Artifact {
                        uid: uid.to_owned(),
                        generation: generation.parse().ok()?,
                    }
                }
            };
            Some(((kind, name.to_owned()), version))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_skips_what_it_does_not_know() {
        let mut index = Index::new();
        index.insert(
            (IndexKind::Rulesfile, "base.rules".into()),
            Version::Artifact {
                uid: "u-1".into(),
                generation: 3,
            },
        );
        index.insert(
            (IndexKind::ConfigMap, "custom".into()),
            Version::ResourceVersion("812".into()),
        );
        let data = encode(&index);
        assert_eq!(data["rulesfile.base.rules"], "u-1/3");
        assert_eq!(data["configmap.custom"], "812");
        assert_eq!(decode(&data), index);

        let mut noisy = data.clone();
        noisy.insert("secret.x".into(), "1".into());
        noisy.insert("plugin.bad".into(), "no-generation".into());
        noisy.insert("config.".into(), "u/1".into());
        noisy.insert("nodot".into(), "u/1".into());
        assert_eq!(decode(&noisy), index);
    }
}
