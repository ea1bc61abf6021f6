//! The next status of a Falco or Component (pure): `Reconciled` and `Available` conditions with
//! upstream's reasons (§2.2.8), counts, version, `observedGeneration`.
//!
//! The status is written only when [`next`] returns something different from what the CR already
//! has. Conditions keep their `lastTransitionTime` while their status is unchanged, and an unchanged
//! pass keeps an existing `Reconciled=True` as it is, so a resync of an unchanged CR produces an
//! identical status and no write.

use falco_api::InstanceStatus;
use falco_api::common::condition::RECONCILED;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::availability::Availability;
use crate::driver_status::DriverState;

/// What the apply step did, for the `Reconciled` condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reconciled {
    /// Children were written; `created` when the workload did not exist before.
    Applied {
        /// The workload was created in this pass.
        created: bool,
        /// `<Kind> <name>: <field> (by <manager>)` of every field another manager had changed
        /// and this pass took back (drift), sorted; empty when there was none.
        reverted: Vec<String>,
    },
    /// Nothing needed writing.
    Unchanged,
    /// The spec could not be turned into children, or the API server refused one.
    Failed {
        /// Upstream's reason (`ApplyConfigurationError`, `ApplyPatchErrorOnCreate`, …).
        reason: &'static str,
        /// What to fix.
        message: String,
    },
}

/// Everything the next status depends on.
pub struct Input<'a> {
    /// `metadata.generation`.
    pub generation: Option<i64>,
    /// The current status.
    pub previous: Option<&'a InstanceStatus>,
    /// What the apply step did.
    pub reconciled: Reconciled,
    /// Availability of the workload.
    pub availability: &'a Availability,
    /// `status.resourceType`.
    pub resource_type: &'static str,
    /// `status.version` (`None` keeps the previous one, when the spec could not be built).
    pub version: Option<String>,
    /// The time stamped on conditions that change.
    pub now: Time,
    /// `DriverReady` and `status.driver` (Falco with a driver loader only).
    pub driver: DriverState,
}

fn condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    previous: &[Condition],
    now: &Time,
) -> Condition {
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
    Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message: message.to_owned(),
        observed_generation: generation,
        last_transition_time,
    }
}

/// Most drifted fields named in a message; the rest are counted.
const MAX_NAMED_FIELDS: usize = 10;

/// `Reconciled`'s message after an update: upstream's wording, plus the fields taken back from
/// another manager when the update undid drift (bounded).
fn updated_message(reverted: &[String]) -> String {
    if reverted.is_empty() {
        return "Resource updated successfully".to_owned();
    }
    let mut named = reverted
        .iter()
        .take(MAX_NAMED_FIELDS)
        .cloned()
        .collect::<Vec<_>>()
        .join("; ");
    if reverted.len() > MAX_NAMED_FIELDS {
        named.push_str(&format!("; and {} more", reverted.len() - MAX_NAMED_FIELDS));
    }
    format!("Resource updated successfully; took back fields another manager changed: {named}")
}

/// The next status.
pub fn next(input: Input<'_>) -> InstanceStatus {
    let previous_conditions = input
        .previous
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let previous_reconciled = previous_conditions.iter().find(|c| c.type_ == RECONCILED);
    let g = input.generation;
    let now = &input.now;
    let reconciled = match &input.reconciled {
        Reconciled::Applied { created: true, .. } => condition(
            RECONCILED,
            "True",
            "ResourceCreated",
            "Resource created successfully",
            g,
            previous_conditions,
            now,
        ),
        Reconciled::Applied {
            created: false,
            reverted,
        } => condition(
            RECONCILED,
            "True",
            "ResourceUpdated",
            &updated_message(reverted),
            g,
            previous_conditions,
            now,
        ),
        Reconciled::Unchanged => match previous_reconciled {
            Some(c) if c.status == "True" && c.observed_generation == g => c.clone(),
            _ => condition(
                RECONCILED,
                "True",
                "ResourceUpToDate",
                "Resource is up to date",
                g,
                previous_conditions,
                now,
            ),
        },
        Reconciled::Failed { reason, message } => condition(
            RECONCILED,
            "False",
            reason,
            message,
            g,
            previous_conditions,
            now,
        ),
    };
    let available = input
        .availability
        .condition(g, previous_conditions, now.clone());
    let mut conditions = vec![reconciled, available];
    if let Some(driver) = input.driver.condition() {
        conditions.push(condition(
            falco_api::common::condition::DRIVER_READY,
            driver.status,
            &driver.reason,
            &driver.message,
            g,
            previous_conditions,
            now,
        ));
    }
    InstanceStatus {
        resource_type: Some(input.resource_type.to_owned()),
        version: input
            .version
            .or_else(|| input.previous.and_then(|p| p.version.clone())),
        desired_replicas: input.availability.desired,
        available_replicas: input.availability.available,
        unavailable_replicas: input.availability.unavailable,
        conditions,
        observed_generation: g,
        driver: input.driver.summary(),
    }
}

/// The `(status, reason)` of condition `type_`.
pub fn state<'a>(status: Option<&'a InstanceStatus>, type_: &str) -> Option<(&'a str, &'a str)> {
    status?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.as_str(), c.reason.as_str()))
}

#[cfg(test)]
mod tests {

    #[test]
    fn an_update_that_undid_drift_names_the_fields_bounded() {
        assert_eq!(updated_message(&[]), "Resource updated successfully");
        let one = updated_message(&["DaemonSet falco: spec.x (by kubectl-edit)".to_owned()]);
        assert_eq!(
            one,
            "Resource updated successfully; took back fields another manager changed: \
             DaemonSet falco: spec.x (by kubectl-edit)"
        );
        let many: Vec<String> = (0..13)
            .map(|i| format!("ConfigMap falco: data.f{i:02}"))
            .collect();
        let message = updated_message(&many);
        assert!(
            message.contains("data.f09") && !message.contains("data.f10"),
            "{message}"
        );
        assert!(message.ends_with("; and 3 more"), "{message}");
    }
    use super::*;
    use crate::availability::Observed;
    use k8s_openapi::jiff::Timestamp;

    fn t(s: i64) -> Time {
        Time(Timestamp::from_second(s).unwrap())
    }

    fn input<'a>(
        previous: Option<&'a InstanceStatus>,
        reconciled: Reconciled,
        availability: &'a Availability,
        generation: i64,
        now: i64,
    ) -> Input<'a> {
        Input {
            generation: Some(generation),
            previous,
            reconciled,
            availability,
            resource_type: "DaemonSet",
            version: Some("0.44.1".to_owned()),
            now: t(now),
            driver: DriverState::NotApplicable,
        }
    }

    #[test]
    fn an_unchanged_pass_reproduces_the_status_exactly() {
        let available = Availability::of(Observed::DaemonSet(None));
        let first = next(input(
            None,
            Reconciled::Applied {
                created: true,
                reverted: Vec::new(),
            },
            &available,
            1,
            10,
        ));
        assert_eq!(
            state(Some(&first), RECONCILED),
            Some(("True", "ResourceCreated"))
        );
        assert_eq!(
            state(Some(&first), "Available"),
            Some(("False", "DaemonSetNotFound"))
        );
        let again = next(input(
            Some(&first),
            Reconciled::Unchanged,
            &available,
            1,
            20,
        ));
        assert_eq!(again, first, "no write on a no-op pass");
        let bumped = next(input(
            Some(&first),
            Reconciled::Unchanged,
            &available,
            2,
            30,
        ));
        assert_eq!(
            state(Some(&bumped), RECONCILED),
            Some(("True", "ResourceUpToDate"))
        );
        assert_eq!(
            bumped.conditions[0].last_transition_time,
            t(10),
            "still True: the transition time stays"
        );
        assert_eq!(bumped.observed_generation, Some(2));
    }

    #[test]
    fn failures_are_false_with_the_reason_and_keep_the_version() {
        let available = Availability::of(Observed::DaemonSet(None));
        let ok = next(input(None, Reconciled::Unchanged, &available, 1, 10));
        let failed = next(Input {
            version: None,
            ..input(
                Some(&ok),
                Reconciled::Failed {
                    reason: "ApplyConfigurationError",
                    message: "spec.config must be a mapping".to_owned(),
                },
                &available,
                2,
                20,
            )
        });
        assert_eq!(
            state(Some(&failed), RECONCILED),
            Some(("False", "ApplyConfigurationError"))
        );
        assert_eq!(failed.conditions[0].last_transition_time, t(20));
        assert_eq!(failed.version.as_deref(), Some("0.44.1"));
        let again = next(Input {
            version: None,
            ..input(
                Some(&failed),
                Reconciled::Failed {
                    reason: "ApplyConfigurationError",
                    message: "spec.config must be a mapping".to_owned(),
                },
                &available,
                2,
                30,
            )
        });
        assert_eq!(again, failed, "the same failure writes nothing");
    }
}
