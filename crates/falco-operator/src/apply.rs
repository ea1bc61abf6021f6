//! The one Server-Side Apply helper, and the rule that makes a no-op reconcile send nothing.
//!
//! # Skipping applies that would change nothing
//!
//! Every child is applied with [`crate::children::APPLIED_HASH_ANNOTATION`] = SHA-256 of its own
//! content. Before applying, [`Applier::apply`] looks at the **cached** child (the watch cache; no
//! request) and skips the apply when both hold:
//!
//! 1. the cached child carries the same hash, i.e. it was last applied with exactly this content;
//! 2. the fields this operator's field manager owns (its `managedFields` entry) are the ones it
//!    owned right after that apply. If someone else took one of our fields (a `kubectl edit`, an
//!    `Update` by another controller), the server moved that field out of our entry, the check fails,
//!    and the apply (with `force`) puts our value back. Fields other managers own without touching
//!    ours (a label added by another tool, a second field manager's field) change nothing here and
//!    survive, as Server-Side Apply intends. In that drift case (same content, fields lost) the
//!    applier reads the live child once before the apply, and [`Outcome::Reverted`] names the
//!    fields it took back and whose they were ([`taken_back`]), for `Reconciled`'s message and a
//!    `DriftReverted` Event; upstream re-applies silently.
//!
//! A third case sends nothing either (`decide`): this process applied exactly this content and
//! the cached child is older than that write (its `resourceVersion` is lower than the apply's
//! response). The watch has not delivered our own write yet; when it does, the owner is reconciled
//! again against the fresh cache. Without this, the reconcile triggered by the CR's status update,
//! which often runs first, re-sent the workload: 15 % more DaemonSet applies (and Events) under
//! 100 changes/s in `bench/operator.sh`.
//!
//! After a restart the process has no memory of its applies; the first reconcile then trusts the
//! hash and records the owned fields it sees. Upstream instead re-reads every child and diffs the
//! managed fields through a vendored OpenAPI schema on every reconcile (one GET per child), and SSA
//! no-ops still cost a request each; here a resync of an unchanged cluster sends **zero** requests.
//!
//! `force` is used on every child because every child is created and owned by this operator alone
//! (named after its CR, labelled as managed by it): a conflict can only mean someone edited our
//! object, and we take our fields back. Objects the operator does not own (referenced ConfigMaps
//! and Secrets) are never applied; their finalizers are changed by JSON Patch.

use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::{Client, Resource, ResourceExt};

use crate::cache::{Applied, Cached, Caches, Digest};
use crate::children::Child;
use crate::metrics::Metrics;
use crate::{Error, Result};

/// What applying one child did.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Nothing sent: the cached child is already what we want.
    Unchanged,
    /// The child did not exist and was created.
    Created(DynamicObject),
    /// The child was changed.
    Updated(DynamicObject),
    /// Our content was unchanged but another field manager had taken some of our fields; the
    /// apply took them back. `fields` names them ([`taken_back`]).
    Reverted {
        /// The child as stored after the apply.
        object: DynamicObject,
        /// `<field path> (by <manager>)` of every field taken back, sorted.
        fields: Vec<String>,
    },
}

impl Outcome {
    /// Whether a request changed the child.
    pub fn changed(&self) -> bool {
        !matches!(self, Self::Unchanged)
    }
}

/// Whether a child whose wanted content hashes to `hash` needs an apply (module docs).
#[derive(Debug, PartialEq)]
pub(crate) enum Decision {
    /// Send the apply.
    Send,
    /// Nothing to send.
    Skip,
    /// Nothing to send, and the cached child becomes the record of what was applied (first look
    /// after a restart: the hash says it is our content, its owned fields are taken as ours).
    Adopt(Applied),
}

pub(crate) fn decide(hash: Digest, cached: &Cached, applied: Option<&Applied>) -> Decision {
    match applied {
        // This content was applied and the cache has not caught up with that write yet (the
        // reconcile triggered by the CR's own status update often runs before the child's watch
        // event arrives). That event will trigger the owner again, against the fresh cache.
        Some(a) if a.hash == hash && a.is_newer_than(cached) => Decision::Skip,
        _ if cached.hash != Some(hash) => Decision::Send,
        Some(a) if a.hash == hash => {
            if a.owned_fields == cached.owned_fields {
                Decision::Skip
            } else {
                Decision::Send
            }
        }
        _ => Decision::Adopt(Applied {
            hash,
            owned_fields: cached.owned_fields,
            resource_version: cached.resource_version,
        }),
    }
}

/// The fields other managers owned in `before` that `field_manager` owns in `after` (the
/// response of its forced apply): what drift the apply undid, as `<path> (by <manager>)`.
pub fn taken_back(
    before: &kube::api::ObjectMeta,
    after: &kube::api::ObjectMeta,
    field_manager: &str,
) -> Vec<String> {
    let ours: std::collections::BTreeSet<String> = after
        .managed_fields
        .iter()
        .flatten()
        .filter(|e| {
            e.manager.as_deref() == Some(field_manager)
                && e.subresource.as_deref().unwrap_or("").is_empty()
        })
        .filter_map(|e| e.fields_v1.as_ref())
        .flat_map(|f| field_paths(&f.0))
        .collect();
    let mut taken: Vec<String> = before
        .managed_fields
        .iter()
        .flatten()
        .filter(|e| {
            e.manager.as_deref() != Some(field_manager)
                && e.subresource.as_deref().unwrap_or("").is_empty()
        })
        .flat_map(|e| {
            let manager = e.manager.clone().unwrap_or_else(|| "unknown".to_owned());
            e.fields_v1
                .as_ref()
                .map(|f| field_paths(&f.0))
                .unwrap_or_default()
                .into_iter()
                .filter(|p| ours.contains(p))
                .map(move |p| format!("{p} (by {manager})"))
        })
        .collect();
    taken.sort();
    taken.dedup();
    taken
}

/// The leaf paths of a `managedFields[].fieldsV1` set, readable: `f:spec` → `spec`,
/// `k:{"name":"falco"}` → `[name=falco]`, `v:"x"` → `[x]`, `i:0` → `[0]`.
pub fn field_paths(fields: &serde_json::Value) -> Vec<String> {
    fn walk(node: &serde_json::Value, path: &str, out: &mut Vec<String>) {
        let Some(map) = node.as_object() else { return };
        let children: Vec<_> = map.iter().filter(|(k, _)| k.as_str() != ".").collect();
        if children.is_empty() {
            if !path.is_empty() {
                out.push(path.to_owned());
            }
            return;
        }
        for (key, child) in children {
            let segment = if let Some(name) = key.strip_prefix("f:") {
                if path.is_empty() {
                    name.to_owned()
                } else {
                    format!("{path}.{name}")
                }
            } else if let Some(keys) = key.strip_prefix("k:") {
                let rendered =
                    serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(keys)
                        .map(|m| {
                            m.iter()
                                .map(|(k, v)| match v.as_str() {
                                    Some(s) => format!("{k}={s}"),
                                    None => format!("{k}={v}"),
                                })
                                .collect::<Vec<_>>()
                                .join(",")
                        })
                        .unwrap_or_else(|_| keys.to_owned());
                format!("{path}[{rendered}]")
            } else if let Some(value) = key.strip_prefix("v:") {
                let value = serde_json::from_str::<serde_json::Value>(value)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_else(|| value.to_owned());
                format!("{path}[{value}]")
            } else if let Some(index) = key.strip_prefix("i:") {
                format!("{path}[{index}]")
            } else {
                format!("{path}.{key}")
            };
            walk(child, &segment, out);
        }
    }
    let mut out = Vec::new();
    walk(fields, "", &mut out);
    out
}

/// Applies children under one field manager.
#[derive(Clone)]
pub struct Applier {
    client: Client,
    caches: Caches,
    field_manager: &'static str,
    controller: &'static str,
    metrics: std::sync::Arc<Metrics>,
}

impl Applier {
    /// An applier for one controller.
    pub fn new(
        client: Client,
        caches: Caches,
        field_manager: &'static str,
        controller: &'static str,
        metrics: std::sync::Arc<Metrics>,
    ) -> Self {
        Self {
            client,
            caches,
            field_manager,
            controller,
            metrics,
        }
    }

    fn api(&self, kind: crate::children::ChildKind, ns: Option<&str>) -> Api<DynamicObject> {
        let resource = kind.api_resource();
        match ns {
            Some(ns) if !kind.is_cluster_scoped() => {
                Api::namespaced_with(self.client.clone(), ns, &resource)
            }
            _ => Api::all_with(self.client.clone(), &resource),
        }
    }

    /// Applies `child` unless the cache shows it is already applied (module docs).
    pub async fn apply(&self, child: &Child) -> Result<Outcome> {
        let key = (child.kind, child.namespace.clone(), child.name.clone());
        let hash = Digest::of_hex(&child.hash);
        let cached = self.caches.get(
            child.kind,
            child.namespace.as_deref(),
            &child.name,
            self.field_manager,
        );
        if let (Some(cached), Some(hash)) = (&cached, hash) {
            let mut applied = self
                .caches
                .applied
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let skip = match decide(hash, cached, applied.get(&key)) {
                Decision::Send => false,
                Decision::Skip => true,
                Decision::Adopt(record) => {
                    applied.insert(&key, record);
                    true
                }
            };
            if skip {
                self.metrics.child_unchanged(self.controller);
                return Ok(Outcome::Unchanged);
            }
        }
        // Same content as the cached child, yet an apply is due: another manager took some of
        // our fields (drift). One GET, only in that case, tells whose fields they are.
        let drifted = match (&cached, hash) {
            (Some(cached), Some(hash)) if cached.hash == Some(hash) => self
                .api(child.kind, child.namespace.as_deref())
                .get_opt(&child.name)
                .await
                .ok()
                .flatten(),
            _ => None,
        };
        let params = PatchParams::apply(self.field_manager).force();
        let stored = self
            .api(child.kind, child.namespace.as_deref())
            .patch(&child.name, &params, &Patch::Apply(&child.object))
            .await
            .map_err(|source| Error::Apply {
                kind: child.kind.as_str(),
                name: child.name.clone(),
                source,
            })?;
        self.metrics.child_applied(self.controller);
        let owned_fields = crate::cache::owned_fields_hash(stored.meta(), self.field_manager);
        if let Some(hash) = hash {
            self.caches
                .applied
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(
                    &key,
                    Applied {
                        hash,
                        owned_fields,
                        resource_version: crate::cache::resource_version(stored.meta()),
                    },
                );
        }
        tracing::debug!(kind = child.kind.as_str(), name = %stored.name_any(), "Applied child");
        if let Some(before) = drifted {
            let fields = taken_back(before.meta(), stored.meta(), self.field_manager);
            if !fields.is_empty() {
                tracing::info!(
                    kind = child.kind.as_str(),
                    name = %stored.name_any(),
                    fields = ?fields,
                    "Took back fields another manager changed"
                );
                return Ok(Outcome::Reverted {
                    object: stored,
                    fields,
                });
            }
        }
        Ok(if cached.is_some() {
            Outcome::Updated(stored)
        } else {
            Outcome::Created(stored)
        })
    }

    /// Deletes a child (absent is fine).
    pub async fn delete(
        &self,
        kind: crate::children::ChildKind,
        ns: Option<&str>,
        name: &str,
    ) -> Result<()> {
        match self
            .api(kind, ns)
            .delete(name, &DeleteParams::background())
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(source) => Err(Error::Delete {
                kind: kind.as_str(),
                name: name.to_owned(),
                source,
            }),
        }
    }

    /// Deletes every child of one CR, found by the owner labels through the API (not the cache, so
    /// a child created just before the CR was deleted is found too). Cleanup only.
    pub async fn delete_all_owned(&self, owner_kind: &str, ns: &str, name: &str) -> Result<usize> {
        let selector = crate::labels::owner_selector(owner_kind, ns, name);
        let mut deleted = 0;
        for kind in crate::children::ChildKind::ALL {
            let api = self.api(kind, Some(ns));
            let list = api
                .list_metadata(&kube::api::ListParams::default().labels(&selector))
                .await
                .map_err(|source| Error::Delete {
                    kind: kind.as_str(),
                    name: format!("<{selector}>"),
                    source,
                })?;
            for obj in list.items {
                self.delete(kind, obj.namespace().as_deref(), &obj.name_any())
                    .await?;
                deleted += 1;
            }
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn field_paths_are_readable_leaves() {
        let fields = serde_json::json!({
            "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
            "f:spec": {"f:template": {"f:spec": {
                "f:containers": {"k:{\"name\":\"falco\"}": {".": {}, "f:image": {}}},
                "f:finalizers": {"v:\"x\"": {}}
            }}}
        });
        assert_eq!(
            field_paths(&fields),
            [
                "metadata.labels.app",
                "spec.template.spec.containers[name=falco].image",
                "spec.template.spec.finalizers[x]",
            ]
        );
    }

    #[test]
    fn taken_back_names_only_other_managers_fields_we_own_again() {
        let entry = |manager: &str, operation: &str, fields: serde_json::Value| {
            k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry {
                manager: Some(manager.to_owned()),
                operation: Some(operation.to_owned()),
                fields_type: Some("FieldsV1".to_owned()),
                fields_v1: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::FieldsV1(
                    fields,
                )),
                ..Default::default()
            }
        };
        let image = serde_json::json!({"f:spec": {"f:containers": {
            "k:{\"name\":\"falco\"}": {"f:image": {}}}}});
        let label = serde_json::json!({"f:metadata": {"f:labels": {"f:team": {}}}});
        let before = kube::api::ObjectMeta {
            managed_fields: Some(vec![
                entry("falco-operator", "Apply", serde_json::json!({"f:spec": {}})),
                entry("kubectl-edit", "Update", image.clone()),
                entry("labeller", "Update", label),
            ]),
            ..Default::default()
        };
        let after = kube::api::ObjectMeta {
            managed_fields: Some(vec![entry("falco-operator", "Apply", image)]),
            ..Default::default()
        };
        assert_eq!(
            taken_back(&before, &after, "falco-operator"),
            ["spec.containers[name=falco].image (by kubectl-edit)"]
        );
        assert!(taken_back(&after, &after, "falco-operator").is_empty());
    }
    use super::*;

    fn digest(n: u8) -> Digest {
        Digest::of_value(&serde_json::json!(n))
    }

    fn cached(hash: u8, fields: u8, rv: u64) -> Cached {
        Cached {
            hash: Some(digest(hash)),
            owned_fields: Some(digest(fields)),
            owner: None,
            resource_version: Some(rv),
        }
    }

    fn applied(hash: u8, fields: u8, rv: Option<u64>) -> Applied {
        Applied {
            hash: digest(hash),
            owned_fields: Some(digest(fields)),
            resource_version: rv,
        }
    }

    #[test]
    fn a_cache_older_than_our_own_write_sends_nothing() {
        // We applied content 2 at resourceVersion 20; the cache still shows content 1 at 10.
        let record = applied(2, 7, Some(20));
        assert_eq!(
            decide(digest(2), &cached(1, 7, 10), Some(&record)),
            Decision::Skip
        );
        // Once the cache is at (or past) our write, a different content there means someone
        // changed it: send.
        assert_eq!(
            decide(digest(2), &cached(1, 7, 20), Some(&record)),
            Decision::Send
        );
        assert_eq!(
            decide(digest(2), &cached(1, 7, 30), Some(&record)),
            Decision::Send
        );
        // Wanting other content than the last apply: send even if the cache is behind.
        assert_eq!(
            decide(digest(3), &cached(1, 7, 10), Some(&record)),
            Decision::Send
        );
        // No comparable version (not a number): send.
        let opaque = applied(2, 7, None);
        assert_eq!(
            decide(digest(2), &cached(1, 7, 10), Some(&opaque)),
            Decision::Send
        );
    }

    #[test]
    fn same_hash_skips_unless_our_fields_were_taken() {
        let record = applied(2, 7, Some(20));
        assert_eq!(
            decide(digest(2), &cached(2, 7, 20), Some(&record)),
            Decision::Skip
        );
        // Another manager took one of our fields: the owned-fields hash moved.
        assert_eq!(
            decide(digest(2), &cached(2, 8, 25), Some(&record)),
            Decision::Send
        );
        // No record (after a restart): the cached child is adopted as applied.
        assert_eq!(
            decide(digest(2), &cached(2, 8, 25), None),
            Decision::Adopt(applied(2, 8, Some(25)))
        );
        // No record and another content: send.
        assert_eq!(decide(digest(3), &cached(2, 8, 25), None), Decision::Send);
    }
}
