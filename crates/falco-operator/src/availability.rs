//! The `Available` condition and the replica counts of a Falco or Component, from its workload's
//! status (pure; upstream §2.2.7 and §2.2.8).
//!
//! | workload | `Available=True` when | desired / available / unavailable |
//! |---|---|---|
//! | DaemonSet | `numberAvailable >= desiredNumberScheduled` | `desiredNumberScheduled` / `numberAvailable` / `numberUnavailable` |
//! | Deployment | `availableReplicas >= spec.replicas` (1 when absent) | `spec.replicas` / `availableReplicas` / `unavailableReplicas` |
//! | not found | `False`, `DaemonSetNotFound` / `DeploymentNotFound` | 0 / 0 / 0 |
//! | fetch error | `Unknown`, `DaemonSetFetchError` / `DeploymentFetchError` | 0 / 0 / 0 |
//!
//! Upstream checked a Deployment's `readyReplicas` but published `availableReplicas`, so the
//! condition and the printed `Ready` column could disagree (§7 item 12). Here the condition compares
//! exactly the number it publishes, for both kinds. `minReadySeconds` therefore counts, as it does
//! for `kubectl rollout status`.
//!
//! [`Availability::condition`] keeps `lastTransitionTime` while the status is unchanged, so an
//! unchanged workload yields an identical status and the status patch (and its Event) can be skipped.

use falco_api::WorkloadType;
use falco_api::common::condition::AVAILABLE;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Status of a condition, as the API writes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionStatus {
    /// `True`.
    True,
    /// `False`.
    False,
    /// `Unknown`.
    Unknown,
}

impl ConditionStatus {
    /// `True`, `False` or `Unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::True => "True",
            Self::False => "False",
            Self::Unknown => "Unknown",
        }
    }
}

/// What the workload says about availability: the `Available` condition's content and the counts
/// for the CR's status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Availability {
    /// Condition status.
    pub status: ConditionStatus,
    /// Condition reason (upstream's names).
    pub reason: &'static str,
    /// Condition message.
    pub message: String,
    /// `status.desiredReplicas`.
    pub desired: i32,
    /// `status.availableReplicas`.
    pub available: i32,
    /// `status.unavailableReplicas`.
    pub unavailable: i32,
}

/// The workload as read from the cache: `None` when it does not exist.
#[derive(Clone, Copy, Debug)]
pub enum Observed<'a> {
    /// A DaemonSet, or its absence.
    DaemonSet(Option<&'a DaemonSet>),
    /// A Deployment, or its absence.
    Deployment(Option<&'a Deployment>),
}

impl Availability {
    /// Availability of an observed workload.
    pub fn of(observed: Observed<'_>) -> Self {
        match observed {
            Observed::DaemonSet(None) => not_found(WorkloadType::DaemonSet),
            Observed::Deployment(None) => not_found(WorkloadType::Deployment),
            Observed::DaemonSet(Some(ds)) => {
                let status = ds.status.clone().unwrap_or_default();
                Self::from_counts(
                    WorkloadType::DaemonSet,
                    status.desired_number_scheduled,
                    status.number_available.unwrap_or(0),
                    status.number_unavailable.unwrap_or(0),
                )
            }
            Observed::Deployment(Some(d)) => {
                let status = d.status.clone().unwrap_or_default();
                Self::from_counts(
                    WorkloadType::Deployment,
                    d.spec.replicas.unwrap_or(1),
                    status.available_replicas.unwrap_or(0),
                    status.unavailable_replicas.unwrap_or(0),
                )
            }
        }
    }

    /// Available when at least `desired` pods are available; the same rule for both kinds.
    fn from_counts(kind: WorkloadType, desired: i32, available: i32, unavailable: i32) -> Self {
        let (ok, not_ok, unit) = match kind {
            WorkloadType::DaemonSet => ("DaemonSetAvailable", "DaemonSetUnavailable", "pods"),
            WorkloadType::Deployment => {
                ("DeploymentAvailable", "DeploymentUnavailable", "replicas")
            }
        };
        let name = kind.as_str();
        if available >= desired {
            Self::counted(
                ConditionStatus::True,
                ok,
                &format!("{name} is available"),
                desired,
                available,
                unavailable,
            )
        } else {
            Self::counted(
                ConditionStatus::False,
                not_ok,
                &format!("{name} is not available: {available} of {desired} {unit} available"),
                desired,
                available,
                unavailable,
            )
        }
    }

    /// Availability when the workload could not be read (`Unknown`).
    pub fn fetch_error(kind: WorkloadType, error: &str) -> Self {
        let reason = match kind {
            WorkloadType::DaemonSet => "DaemonSetFetchError",
            WorkloadType::Deployment => "DeploymentFetchError",
        };
        Self::counted(
            ConditionStatus::Unknown,
            reason,
            &format!("Unable to fetch {}: {error}", kind.as_str()),
            0,
            0,
            0,
        )
    }

    fn counted(
        status: ConditionStatus,
        reason: &'static str,
        message: &str,
        desired: i32,
        available: i32,
        unavailable: i32,
    ) -> Self {
        Self {
            status,
            reason,
            message: message.to_owned(),
            desired,
            available,
            unavailable,
        }
    }

    /// Whether an Event should be published for this result given the previous condition: only on
    /// a transition (status or reason changed), never for `Unknown` (upstream emitted one on every
    /// reconcile, §7 item 13).
    pub fn is_transition(&self, previous: &[Condition]) -> bool {
        self.status != ConditionStatus::Unknown
            && !previous.iter().any(|c| {
                c.type_ == AVAILABLE && c.status == self.status.as_str() && c.reason == self.reason
            })
    }

    /// The `Available` condition for `generation`. `lastTransitionTime` is `now` only when the
    /// status differs from the previous `Available` condition in `previous`.
    pub fn condition(
        &self,
        generation: Option<i64>,
        previous: &[Condition],
        now: Time,
    ) -> Condition {
        let last_transition_time = previous
            .iter()
            .find(|c| c.type_ == AVAILABLE && c.status == self.status.as_str())
            .map_or(now, |c| c.last_transition_time.clone());
        Condition {
            type_: AVAILABLE.to_owned(),
            status: self.status.as_str().to_owned(),
            reason: self.reason.to_owned(),
            message: self.message.clone(),
            observed_generation: generation,
            last_transition_time,
        }
    }
}

fn not_found(kind: WorkloadType) -> Availability {
    let (reason, message) = match kind {
        WorkloadType::DaemonSet => (
            "DaemonSetNotFound",
            "DaemonSet has not been created or has been deleted",
        ),
        WorkloadType::Deployment => (
            "DeploymentNotFound",
            "Deployment has not been created or has been deleted",
        ),
    };
    Availability::counted(ConditionStatus::False, reason, message, 0, 0, 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DaemonSetStatus, DeploymentSpec, DeploymentStatus};
    use k8s_openapi::jiff::Timestamp;

    fn ds(desired: i32, available: i32, unavailable: i32) -> DaemonSet {
        DaemonSet {
            status: Some(DaemonSetStatus {
                desired_number_scheduled: desired,
                number_available: Some(available),
                number_unavailable: Some(unavailable),
                ..DaemonSetStatus::default()
            }),
            ..DaemonSet::default()
        }
    }

    fn deploy(replicas: Option<i32>, ready: i32, available: i32, unavailable: i32) -> Deployment {
        Deployment {
            spec: DeploymentSpec {
                replicas,
                ..DeploymentSpec::default()
            },
            status: Some(DeploymentStatus {
                ready_replicas: Some(ready),
                available_replicas: Some(available),
                unavailable_replicas: Some(unavailable),
                ..DeploymentStatus::default()
            }),
            ..Deployment::default()
        }
    }

    #[test]
    fn daemonset_available_when_all_scheduled_pods_are_available() {
        let a = Availability::of(Observed::DaemonSet(Some(&ds(3, 3, 0))));
        assert_eq!(
            (a.status, a.reason, a.desired, a.available, a.unavailable),
            (ConditionStatus::True, "DaemonSetAvailable", 3, 3, 0)
        );
        let a = Availability::of(Observed::DaemonSet(Some(&ds(3, 2, 1))));
        assert_eq!(
            (a.status, a.reason, a.desired, a.available, a.unavailable),
            (ConditionStatus::False, "DaemonSetUnavailable", 3, 2, 1)
        );
        assert_eq!(
            a.message,
            "DaemonSet is not available: 2 of 3 pods available"
        );
    }

    #[test]
    fn deployment_checks_the_number_it_publishes() {
        // Upstream: ready 2 == replicas 2 → True while publishing available 1 (§7 item 12).
        let a = Availability::of(Observed::Deployment(Some(&deploy(Some(2), 2, 1, 1))));
        assert_eq!(
            (a.status, a.reason, a.desired, a.available, a.unavailable),
            (ConditionStatus::False, "DeploymentUnavailable", 2, 1, 1)
        );
        let a = Availability::of(Observed::Deployment(Some(&deploy(Some(2), 2, 2, 0))));
        assert_eq!(
            (a.status, a.reason),
            (ConditionStatus::True, "DeploymentAvailable")
        );
        let a = Availability::of(Observed::Deployment(Some(&deploy(None, 1, 1, 0))));
        assert_eq!(
            (a.status, a.desired),
            (ConditionStatus::True, 1),
            "replicas default to 1"
        );
    }

    #[test]
    fn missing_workload_and_fetch_errors() {
        let a = Availability::of(Observed::DaemonSet(None));
        assert_eq!(
            (a.status, a.reason),
            (ConditionStatus::False, "DaemonSetNotFound")
        );
        let a = Availability::of(Observed::Deployment(None));
        assert_eq!(
            (a.status, a.reason),
            (ConditionStatus::False, "DeploymentNotFound")
        );
        let a = Availability::fetch_error(WorkloadType::Deployment, "boom");
        assert_eq!(
            (a.status, a.reason),
            (ConditionStatus::Unknown, "DeploymentFetchError")
        );
        assert!(!a.is_transition(&[]), "no Event for Unknown");
    }

    #[test]
    fn transition_time_kept_while_status_is_unchanged() {
        let t0 = Time(Timestamp::from_second(1_000).unwrap());
        let t1 = Time(Timestamp::from_second(2_000).unwrap());
        let up = Availability::of(Observed::DaemonSet(Some(&ds(1, 1, 0))));
        let first = up.condition(Some(1), &[], t0.clone());
        assert_eq!(first.last_transition_time, t0);
        assert!(up.is_transition(&[]));
        let again = up.condition(Some(2), std::slice::from_ref(&first), t1.clone());
        assert_eq!(
            again.last_transition_time, t0,
            "unchanged status keeps the time"
        );
        assert_eq!(again.observed_generation, Some(2));
        assert!(!up.is_transition(std::slice::from_ref(&first)));
        let down = Availability::of(Observed::DaemonSet(Some(&ds(2, 1, 1))));
        let changed = down.condition(Some(2), std::slice::from_ref(&first), t1.clone());
        assert_eq!(changed.last_transition_time, t1);
        assert!(down.is_transition(&[first]));
    }
}
