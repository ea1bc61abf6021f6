//! The Falco and Component reconcilers: one generic pipeline over [`Instance`].
//!
//! ```text
//! finalizer ─► dereference (cache) ─► validate + build (pure) ─► apply (SSA, skipped when unchanged)
//!           ─► orphan sweep ─► status (patched only when different) ─► Events (transitions only)
//! ```
//!
//! - A spec that cannot be built (validation) sets `Reconciled=False` with reason
//!   `ApplyConfigurationError` and waits for the next change of the CR: no retry loop. An apply the
//!   API server refuses as `Invalid` (422) does the same with `ApplyPatchErrorOnCreate` or
//!   `ApplyPatchErrorOnUpdate`. Other errors (network, conflicts, permissions) are retried with a
//!   per-object exponential backoff from 1 s to 5 min.
//! - The orphan sweep deletes children of kinds the CR no longer wants (the other workload after a
//!   `spec.type` switch, a Role after a Component type change). It looks them up in the cache under
//!   the name this CR would give them and deletes only objects whose owner labels name this CR.
//! - On deletion the finalizer deletes every child found by the owner labels (cluster-scoped RBAC
//!   cannot be garbage-collected through an ownerReference) and releases the CR's references.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::events::{EventType, Publisher};
use falco_api::common::condition::RECONCILED;
use falco_api::{Component, Falco, InstanceStatus, WorkloadType};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::apply::{Applier, Outcome};
use crate::availability::{Availability, Observed};
use crate::cache::Caches;
use crate::children::{ChildKind, Desired};
use crate::driver_status::{DriverReports, DriverState};
use crate::metrics::Metrics;
use crate::references::{self, Reference, References};
use crate::status::{self, Reconciled};
use crate::{Error, OperatorConfig, Result};

/// A CR the instance operator reconciles into children.
pub trait Instance:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + DeserializeOwned
    + Serialize
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
    /// Controller name, metric label.
    const CONTROLLER: &'static str;
    /// Kind, as written in the owner labels.
    const KIND: &'static str;
    /// The finalizer that cleans up children.
    const FINALIZER: &'static str;
    /// The field manager of every write.
    const FIELD_MANAGER: &'static str;
    /// Child kinds this CR may own (the orphan sweep looks at these).
    const CHILD_KINDS: &'static [ChildKind];
    /// The workload kind (also when the spec cannot be built).
    fn workload(&self) -> WorkloadType;
    /// Validate and build (pure).
    fn desired(&self, config: &OperatorConfig) -> Result<Desired>;
    /// The current status.
    fn status(&self) -> Option<&InstanceStatus>;
    /// ConfigMaps and Secrets this CR references.
    fn references(&self) -> std::collections::BTreeSet<Reference>;
    /// `DriverReady` and `status.driver`, from the nodes' reports in its namespace.
    fn driver(&self, _reports: &DriverReports) -> DriverState {
        DriverState::NotApplicable
    }
}

impl Instance for Falco {
    const CONTROLLER: &'static str = "falco";
    const KIND: &'static str = "Falco";
    const FINALIZER: &'static str = "falco.instance.falcosecurity.dev/finalizer";
    const FIELD_MANAGER: &'static str = crate::FALCO_FIELD_MANAGER;
    const CHILD_KINDS: &'static [ChildKind] = &ChildKind::ALL;
    fn workload(&self) -> WorkloadType {
        self.spec.workload_type()
    }
    fn desired(&self, config: &OperatorConfig) -> Result<Desired> {
        let children = crate::falco::build(self, config)?.into_children()?;
        Ok(Desired {
            children,
            workload: self.workload(),
            version: crate::falco::resolve_version(self),
        })
    }
    fn status(&self) -> Option<&InstanceStatus> {
        self.status.as_ref()
    }
    fn references(&self) -> std::collections::BTreeSet<Reference> {
        references::of_falco(self)
    }
    fn driver(&self, reports: &DriverReports) -> DriverState {
        match crate::falco::driver_plan(self) {
            Ok(None) => DriverState::NotApplicable,
            Ok(Some(_)) => {
                DriverState::Reported(reports.summary(&self.namespace().unwrap_or_default()))
            }
            Err(error) => match error.driver_reason() {
                Some(reason) => DriverState::Refused {
                    reason,
                    message: error.to_string(),
                },
                None => DriverState::NotApplicable,
            },
        }
    }
}

impl Instance for Component {
    const CONTROLLER: &'static str = "component";
    const KIND: &'static str = "Component";
    const FINALIZER: &'static str = "component.instance.falcosecurity.dev/finalizer";
    const FIELD_MANAGER: &'static str = crate::COMPONENT_FIELD_MANAGER;
    const CHILD_KINDS: &'static [ChildKind] = &[
        ChildKind::ServiceAccount,
        ChildKind::Role,
        ChildKind::RoleBinding,
        ChildKind::ClusterRole,
        ChildKind::ClusterRoleBinding,
        ChildKind::Service,
        ChildKind::Deployment,
    ];
    fn workload(&self) -> WorkloadType {
        WorkloadType::Deployment
    }
    fn desired(&self, config: &OperatorConfig) -> Result<Desired> {
        let children = crate::component::build(self, config)?.into_children()?;
        Ok(Desired {
            children,
            workload: WorkloadType::Deployment,
            version: crate::component::resolve_version(self),
        })
    }
    fn status(&self) -> Option<&InstanceStatus> {
        self.status.as_ref()
    }
    fn references(&self) -> std::collections::BTreeSet<Reference> {
        references::of_component(self)
    }
}

/// Everything a reconciler needs.
pub struct Context {
    /// The operator's client.
    pub client: Client,
    /// Settings shaping the children.
    pub config: OperatorConfig,
    /// Child caches.
    pub caches: Caches,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Reference protection.
    pub references: References,
    /// Events of the Falco controller.
    pub falco_events: Publisher,
    /// Events of the Component controller.
    pub component_events: Publisher,
    /// Consecutive failures per object, for the backoff.
    pub failures: Mutex<HashMap<(String, String, String), u32>>,
    /// The nodes' driver reports, per namespace (kept by [`crate::aggregate`]).
    pub driver_reports: DriverReports,
}

impl Context {
    fn events<I: Instance>(&self) -> &Publisher {
        if I::KIND == "Falco" {
            &self.falco_events
        } else {
            &self.component_events
        }
    }

    fn applier<I: Instance>(&self) -> Applier {
        Applier::new(
            self.client.clone(),
            self.caches.clone(),
            I::FIELD_MANAGER,
            I::CONTROLLER,
            self.metrics.clone(),
        )
    }

    fn failure_key<I: Instance>(obj: &I) -> (String, String, String) {
        (
            I::KIND.to_owned(),
            obj.namespace().unwrap_or_default(),
            obj.name_any(),
        )
    }
}

/// The reconcile entry point of both controllers.
pub async fn reconcile<I: Instance>(obj: Arc<I>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    let key = Context::failure_key(obj.as_ref());
    let api: Api<I> = Api::namespaced(ctx.client.clone(), &key.1);
    let result = finalizer(&api, I::FINALIZER, obj, |event| async {
        match event {
            Finalizer::Apply(obj) => apply::<I>(&obj, &ctx).await,
            Finalizer::Cleanup(obj) => cleanup::<I>(&obj, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    ctx.metrics.reconciled(
        I::CONTROLLER,
        started.elapsed(),
        result.as_ref().err().map(Error::category),
    );
    if result.is_ok() {
        ctx.failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&key);
    }
    result
}

/// Retries with a per-object exponential backoff (1 s doubling to 5 min).
pub fn error_policy<I: Instance>(obj: Arc<I>, error: &Error, ctx: Arc<Context>) -> Action {
    let mut failures = ctx
        .failures
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let n = failures
        .entry(Context::failure_key(obj.as_ref()))
        .or_insert(0);
    *n = n.saturating_add(1);
    let delay = Duration::from_secs(1u64 << (*n - 1).min(9)).min(Duration::from_secs(300));
    tracing::warn!(
        kind = I::KIND,
        name = %obj.name_any(),
        namespace = obj.namespace().unwrap_or_default(),
        category = error.category(),
        error = %error_chain(error),
        retry_in = ?delay,
        "Reconcile failed"
    );
    Action::requeue(delay)
}

/// An error and its sources, on one line.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        out.push_str(": ");
        out.push_str(&e.to_string());
        source = e.source();
    }
    out
}

async fn apply<I: Instance>(obj: &I, ctx: &Context) -> Result<Action> {
    let ns = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    ctx.references
        .set((I::KIND, ns.clone(), name.clone()), obj.references());
    let applier = ctx.applier::<I>();

    let (reconciled, version, applied_workload, desired) = match obj.desired(&ctx.config) {
        Err(error) => (
            Reconciled::Failed {
                reason: "ApplyConfigurationError",
                message: error_chain(&error),
            },
            None,
            None,
            None,
        ),
        Ok(desired) => {
            let (reconciled, workload) = apply_children(&applier, &desired).await?;
            (
                reconciled,
                Some(desired.version.clone()),
                workload,
                Some(desired),
            )
        }
    };

    if let Some(desired) = &desired {
        sweep_orphans::<I>(obj, ctx, &applier, desired).await?;
    }

    let workload = obj.workload();
    let availability = match (workload, applied_workload) {
        (WorkloadType::DaemonSet, Some(o)) => {
            let ds: Option<DaemonSet> = o.try_parse().ok();
            Availability::of(Observed::DaemonSet(ds.as_ref()))
        }
        (WorkloadType::Deployment, Some(o)) => {
            let d: Option<Deployment> = o.try_parse().ok();
            Availability::of(Observed::Deployment(d.as_ref()))
        }
        (WorkloadType::DaemonSet, None) => Availability::of(Observed::DaemonSet(
            ctx.caches.daemon_set(&ns, &name).as_ref(),
        )),
        (WorkloadType::Deployment, None) => Availability::of(Observed::Deployment(
            ctx.caches.deployment(&ns, &name).as_ref(),
        )),
    };
    let previous = obj.status();
    let next = status::next(status::Input {
        generation: obj.meta().generation,
        previous,
        reconciled: reconciled.clone(),
        availability: &availability,
        resource_type: workload.as_str(),
        version,
        now: Time(k8s_openapi::jiff::Timestamp::now()),
        driver: obj.driver(&ctx.driver_reports),
    });
    if previous != Some(&next) {
        let api: Api<I> = Api::namespaced(ctx.client.clone(), &ns);
        let patch = serde_json::json!({
            "apiVersion": I::api_version(&()),
            "kind": I::kind(&()),
            "status": next,
        });
        api.patch_status(
            &name,
            &PatchParams::apply(I::FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(Error::PatchStatus)?;
    }
    publish_events::<I>(obj, ctx, previous, &next, &reconciled, &availability).await;

    Ok(Action::await_change())
}

/// Applies every child in order; the outcome for `Reconciled` and the workload as stored when it
/// was written (for its status).
async fn apply_children(
    applier: &Applier,
    desired: &Desired,
) -> Result<(Reconciled, Option<DynamicObject>)> {
    let mut changed = false;
    let mut created = false;
    let mut workload = None;
    let mut reverted = Vec::new();
    for child in &desired.children {
        match applier.apply(child).await {
            Ok(outcome) => {
                changed |= outcome.changed();
                let is_workload =
                    matches!(child.kind, ChildKind::DaemonSet | ChildKind::Deployment);
                match outcome {
                    Outcome::Created(o) if is_workload => {
                        created = true;
                        workload = Some(o);
                    }
                    Outcome::Updated(o) if is_workload => workload = Some(o),
                    Outcome::Reverted { object, fields } => {
                        reverted.extend(
                            fields
                                .into_iter()
                                .map(|f| format!("{} {}: {f}", child.kind.as_str(), child.name)),
                        );
                        if is_workload {
                            workload = Some(object);
                        }
                    }
                    _ => {}
                }
            }
            Err(Error::Apply {
                kind,
                name,
                source: kube::Error::Api(e),
            }) if e.code == 422 => {
                let creating = !changed && workload.is_none();
                return Ok((
                    Reconciled::Failed {
                        reason: if creating {
                            "ApplyPatchErrorOnCreate"
                        } else {
                            "ApplyPatchErrorOnUpdate"
                        },
                        message: format!("The API server refused {kind} {name}: {}", e.message),
                    },
                    None,
                ));
            }
            Err(e) => return Err(e),
        }
    }
    Ok((
        if changed {
            Reconciled::Applied { created, reverted }
        } else {
            Reconciled::Unchanged
        },
        workload,
    ))
}

async fn sweep_orphans<I: Instance>(
    obj: &I,
    ctx: &Context,
    applier: &Applier,
    desired: &Desired,
) -> Result<()> {
    let ns = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let cluster_name = desired
        .children
        .iter()
        .find(|c| c.kind.is_cluster_scoped())
        .map(|c| c.name.clone())
        .unwrap_or_else(|| {
            format!(
                "falco-operator:{}:{ns}:{name}",
                I::KIND.to_ascii_lowercase()
            )
        });
    for &kind in I::CHILD_KINDS {
        if desired.wants(kind) {
            continue;
        }
        let (child_ns, child_name) = if kind.is_cluster_scoped() {
            (None, cluster_name.as_str())
        } else {
            (Some(ns.as_str()), name.as_str())
        };
        let Some(cached) = ctx.caches.get(kind, child_ns, child_name, I::FIELD_MANAGER) else {
            continue;
        };
        let ours = cached
            .owner
            .as_ref()
            .is_some_and(|(k, n, m)| k == I::KIND && *n == ns && *m == name);
        if !ours {
            continue;
        }
        applier.delete(kind, child_ns, child_name).await?;
        tracing::info!(
            kind = kind.as_str(),
            name = child_name,
            "Deleted a child no longer wanted"
        );
        if matches!(kind, ChildKind::DaemonSet | ChildKind::Deployment) {
            publish(
                ctx.events::<I>(),
                obj,
                EventType::Normal,
                "DualDeploymentCleanup",
                format!(
                    "Deleted {} {child_name} due to resource type switch",
                    kind.as_str()
                ),
            )
            .await;
        }
    }
    Ok(())
}

async fn cleanup<I: Instance>(obj: &I, ctx: &Context) -> Result<Action> {
    let ns = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let deleted = ctx
        .applier::<I>()
        .delete_all_owned(I::KIND, &ns, &name)
        .await?;
    ctx.references
        .set((I::KIND, ns, name), std::collections::BTreeSet::new());
    publish(
        ctx.events::<I>(),
        obj,
        EventType::Normal,
        "InstanceDeleted",
        format!(
            "{} instance deleted successfully ({deleted} children removed)",
            I::KIND
        ),
    )
    .await;
    Ok(Action::await_change())
}

async fn publish_events<I: Instance>(
    obj: &I,
    ctx: &Context,
    previous: Option<&InstanceStatus>,
    next: &InstanceStatus,
    reconciled: &Reconciled,
    availability: &Availability,
) {
    let events = ctx.events::<I>();
    let before = status::state(previous, RECONCILED);
    let after = status::state(Some(next), RECONCILED);
    let message = next
        .conditions
        .iter()
        .find(|c| c.type_ == RECONCILED)
        .map(|c| c.message.clone())
        .unwrap_or_default();
    match reconciled {
        Reconciled::Applied { reverted, .. } if !reverted.is_empty() => {
            publish(events, obj, EventType::Warning, "DriftReverted", message).await;
        }
        Reconciled::Applied { .. } => {
            let (_, reason) = after.unwrap_or(("True", "ResourceUpdated"));
            publish(events, obj, EventType::Normal, reason, message).await;
        }
        Reconciled::Failed { reason, .. } if before != after => {
            publish(events, obj, EventType::Warning, reason, message).await;
        }
        _ => {}
    }
    let previous_conditions = previous
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    if availability.is_transition(previous_conditions) {
        let type_ = match availability.status {
            crate::availability::ConditionStatus::True => EventType::Normal,
            _ => EventType::Warning,
        };
        publish(
            events,
            obj,
            type_,
            availability.reason,
            availability.message.clone(),
        )
        .await;
    }
}

async fn publish<I: Instance>(
    events: &Publisher,
    obj: &I,
    type_: EventType,
    reason: &str,
    note: String,
) {
    if let Err(error) = events
        .publish(obj.object_ref(&()), type_, reason, note)
        .await
    {
        tracing::warn!(%error, reason, "Event not published");
    }
}
