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
//!    survive, as Server-Side Apply intends.
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

use crate::cache::{Applied, Caches, Digest};
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
}

impl Outcome {
    /// Whether a request changed the child.
    pub fn changed(&self) -> bool {
        !matches!(self, Self::Unchanged)
    }
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
        if let (Some(cached), Some(hash)) = (&cached, hash)
            && cached.hash == Some(hash)
        {
            let mut applied = self
                .caches
                .applied
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let unchanged = match applied.get(&key) {
                Some(a) if a.hash == hash => a.owned_fields == cached.owned_fields,
                _ => {
                    applied.insert(
                        key.clone(),
                        Applied {
                            hash,
                            owned_fields: cached.owned_fields,
                        },
                    );
                    true
                }
            };
            if unchanged {
                self.metrics.child_unchanged(self.controller);
                return Ok(Outcome::Unchanged);
            }
        }
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
                .insert(key, Applied { hash, owned_fields });
        }
        tracing::debug!(kind = child.kind.as_str(), name = %stored.name_any(), "Applied child");
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
