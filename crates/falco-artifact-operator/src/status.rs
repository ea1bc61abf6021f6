//! Per-node status: the `NodeArtifacts` record of this node (see the crate docs for the design).
//!
//! The record is named after the node, lives in the Falco namespace and carries an owner
//! reference to the `Node`, so the garbage collector deletes it with the node. Only this
//! node's sidecar writes it (server-side apply, one field manager), and only when its content
//! changes. The shared `Rulesfile`/`Plugin`/`Config` objects are never written by a sidecar.

use falco_api::common::condition::{PROGRAMMED, RESOLVED_REFS};
use falco_api::{NodeArtifact, NodeArtifacts, NodeArtifactsStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::Api;
use kube::api::{Patch, PatchParams};

use crate::reconcile::ArtifactKind;
use crate::{Error, Result};

/// Field manager of everything the sidecar writes.
pub const FIELD_MANAGER: &str = "falco-artifact-operator";
/// Label put on the records, to list them.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "falco-artifact-operator");

/// What reconciling one artifact on this node gave.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The generation reconciled.
    pub generation: i64,
    /// OCI digest installed, if any.
    pub digest: Option<String>,
    /// Files present for the artifact.
    pub files: Vec<String>,
    /// Whether the artifact names a ConfigMap or Secret.
    pub has_refs: bool,
    /// What failed, in source order.
    pub errors: Vec<Error>,
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

fn condition(
    previous: Option<&NodeArtifact>,
    type_: &str,
    ok: bool,
    reason: &str,
    message: String,
    generation: i64,
) -> Condition {
    let status = if ok { "True" } else { "False" };
    // The transition time only moves when the status does, so an unchanged result rewrites
    // nothing (upstream's re-stamping drove its reconcile storms).
    let last_transition_time = previous
        .and_then(|p| p.conditions.iter().find(|c| c.type_ == type_))
        .filter(|c| c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(now);
    Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message,
        observed_generation: Some(generation),
        last_transition_time,
    }
}

fn summary(errors: &[&Error]) -> String {
    let mut message = errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    // Condition messages are limited to 32 KiB by the API; stay far below.
    if message.len() > 1024 {
        let mut cut = 1024;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push('…');
    }
    message
}

/// The record entry of one artifact.
pub fn entry(
    kind: ArtifactKind,
    name: &str,
    outcome: &Outcome,
    previous: Option<&NodeArtifact>,
) -> NodeArtifact {
    let generation = outcome.generation;
    let mut conditions = Vec::new();
    let refs: Vec<&Error> = outcome.errors.iter().filter(|e| e.is_reference()).collect();
    if outcome.has_refs {
        conditions.push(match refs.first() {
            None => condition(
                previous,
                RESOLVED_REFS,
                true,
                "ResolvedRefs",
                "All referenced ConfigMaps and Secrets were found.".into(),
                generation,
            ),
            Some(first) => condition(
                previous,
                RESOLVED_REFS,
                false,
                first.reason(),
                summary(&refs),
                generation,
            ),
        });
    }
    let all: Vec<&Error> = outcome.errors.iter().collect();
    conditions.push(match all.first() {
        None => condition(
            previous,
            PROGRAMMED,
            true,
            "Programmed",
            "All sources were written.".into(),
            generation,
        ),
        Some(first) => condition(
            previous,
            PROGRAMMED,
            false,
            first.reason(),
            summary(&all),
            generation,
        ),
    });
    NodeArtifact {
        kind: kind.as_str().to_owned(),
        name: name.to_owned(),
        observed_generation: generation,
        digest: outcome.digest.clone(),
        files: outcome.files.clone(),
        conditions,
    }
}

/// Writes this node's record when its content changes.
pub struct Reporter {
    api: Api<NodeArtifacts>,
    node: String,
    created_for: Option<String>,
    last: Option<NodeArtifactsStatus>,
}

impl Reporter {
    /// A reporter for `node` in the namespace of `api`.
    pub fn new(api: Api<NodeArtifacts>, node: &str) -> Self {
        Self {
            api,
            node: node.to_owned(),
            created_for: None,
            last: None,
        }
    }

    /// The artifact entries last written (none before the first write).
    pub fn last_artifacts(&self) -> Vec<NodeArtifact> {
        self.last
            .as_ref()
            .map(|s| s.artifacts.clone())
            .unwrap_or_default()
    }

    /// Ensures the record exists for the Node with `node_uid`, then writes `status` if it
    /// differs from what was last written. Returns whether anything was written.
    pub async fn report(&mut self, node_uid: &str, status: &NodeArtifactsStatus) -> Result<bool> {
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let mut wrote = false;
        if self.created_for.as_deref() != Some(node_uid) {
            let record = serde_json::json!({
                "apiVersion": "artifact.falcosecurity.dev/v1alpha1",
                "kind": "NodeArtifacts",
                "metadata": {
                    "name": self.node,
                    "labels": {MANAGED_BY.0: MANAGED_BY.1},
                    "ownerReferences": [{
                        "apiVersion": "v1",
                        "kind": "Node",
                        "name": self.node,
                        "uid": node_uid,
                    }],
                },
                "spec": {"nodeName": self.node},
            });
            self.api
                .patch(&self.node, &params, &Patch::Apply(&record))
                .await
                .map_err(|source| Error::Kube {
                    step: "apply NodeArtifacts",
                    source,
                })?;
            self.created_for = Some(node_uid.to_owned());
            self.last = None;
            wrote = true;
        }
        if self.last.as_ref() != Some(status) {
            let body = serde_json::json!({
                "apiVersion": "artifact.falcosecurity.dev/v1alpha1",
                "kind": "NodeArtifacts",
                "status": status,
            });
            self.api
                .patch_status(&self.node, &params, &Patch::Apply(&body))
                .await
                .map_err(|source| Error::Kube {
                    step: "apply NodeArtifacts status",
                    source,
                })?;
            self.last = Some(status.clone());
            wrote = true;
        }
        Ok(wrote)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_name_the_first_failure_and_keep_transition_times() {
        let ok = Outcome {
            generation: 2,
            has_refs: true,
            files: vec!["/r/50-02-x-configmap.yaml".into()],
            ..Outcome::default()
        };
        let first = entry(ArtifactKind::Rulesfile, "x", &ok, None);
        assert_eq!(first.conditions.len(), 2);
        assert!(first.conditions.iter().all(|c| c.status == "True"));
        let again = entry(ArtifactKind::Rulesfile, "x", &ok, Some(&first));
        assert_eq!(again, first, "an unchanged result is an unchanged entry");

        let failed = Outcome {
            generation: 3,
            has_refs: true,
            errors: vec![
                Error::Reference {
                    kind: "Secret",
                    name: "creds".into(),
                    detail: "not found".into(),
                    missing_key: false,
                },
                Error::Invalid {
                    what: "priority",
                    reason: "x".into(),
                },
            ],
            ..Outcome::default()
        };
        let e = entry(ArtifactKind::Rulesfile, "x", &failed, Some(&first));
        let refs = &e.conditions[0];
        assert_eq!(
            (refs.type_.as_str(), refs.status.as_str()),
            ("ResolvedRefs", "False")
        );
        assert_eq!(refs.reason, "SecretNotFound");
        let programmed = &e.conditions[1];
        assert_eq!(programmed.reason, "SecretNotFound");
        assert!(
            programmed.message.contains("priority"),
            "{}",
            programmed.message
        );
        // Without references there is no ResolvedRefs condition, as upstream.
        let plain = entry(ArtifactKind::Config, "c", &Outcome::default(), None);
        assert_eq!(plain.conditions.len(), 1);
    }
}
