//! The `DriverReady` condition and `status.driver` of a Falco instance (pure): the per-node
//! driver reports of the `NodeArtifacts` records in its namespace, aggregated to a constant size.
//!
//! The reports reach the operator through the watch it already has on `NodeArtifacts` (the
//! artifact status aggregation, [`crate::aggregate`]): no watch per node and none per instance.
//! When the reports of a namespace change, its Falco instances with a driver loader are
//! reconciled, and the status is written only if it differs.
//!
//! | `DriverReady` | reason | when |
//! |---|---|---|
//! | `True` | `DriverLoaded` | every node that reported has its driver loaded |
//! | `False` | the loader's reason (`DriverNotFound`, `CompileFailed`, …) | a node failed; the message names the failing kernels with their node counts |
//! | `Unknown` | `NoNodesReported` | no node reported yet |
//! | `False` | `LegacyEbpfRemoved`, `DriverNeedsDaemonSet`, `DriverVersionUnknown` | the spec cannot be delivered (nothing is applied) |
//!
//! A namespace holds one driver-loading Falco per node: its records are per node, and a node
//! runs one kernel driver.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use falco_api::instance::MAX_FAILING_KERNELS;
use falco_api::{DriverSummary, FailingKernel};
use falco_core::driver::status::{DriverOrigin, DriverStatus};

/// How many failing kernels the condition message names (the full top list is in
/// `status.driver.failingKernels`).
pub const MESSAGE_KERNELS: usize = 3;

/// The latest driver reports of every namespace (node name → report), shared by the
/// aggregation loop (writer) and the Falco reconciler (reader).
#[derive(Clone, Debug, Default)]
pub struct DriverReports(Arc<RwLock<HashMap<String, BTreeMap<String, DriverStatus>>>>);

impl DriverReports {
    /// The summary of namespace `ns`.
    pub fn summary(&self, ns: &str) -> DriverSummary {
        let all = self
            .0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match all.get(ns) {
            Some(reports) => summarize(reports.values()),
            None => summarize(std::iter::empty()),
        }
    }

    /// Replaces the reports of every namespace; returns the namespaces whose reports changed.
    pub fn replace(&self, next: HashMap<String, BTreeMap<String, DriverStatus>>) -> Vec<String> {
        let mut all = self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut changed: Vec<String> = next
            .iter()
            .filter(|(ns, reports)| all.get(*ns) != Some(reports))
            .map(|(ns, _)| ns.clone())
            .collect();
        changed.extend(all.keys().filter(|ns| !next.contains_key(*ns)).cloned());
        *all = next;
        changed
    }
}

/// The `DriverReady` condition's status, reason and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DriverCondition {
    /// `True`, `False` or `Unknown`.
    pub status: &'static str,
    /// Machine-readable reason.
    pub reason: String,
    /// What to do.
    pub message: String,
}

/// What the Falco status says about drivers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DriverState {
    /// No loader: no `DriverReady` condition and no `status.driver` (as without `spec.driver`).
    NotApplicable,
    /// The spec cannot be delivered.
    Refused {
        /// `DriverReady=False` reason.
        reason: &'static str,
        /// The validation message.
        message: String,
    },
    /// A loader runs: the aggregated reports.
    Reported(DriverSummary),
}

impl DriverState {
    /// The condition (none when not applicable).
    pub fn condition(&self) -> Option<DriverCondition> {
        match self {
            Self::NotApplicable => None,
            Self::Refused { reason, message } => Some(DriverCondition {
                status: "False",
                reason: (*reason).to_owned(),
                message: message.clone(),
            }),
            Self::Reported(summary) => Some(condition(summary)),
        }
    }

    /// `status.driver`.
    pub fn summary(&self) -> Option<DriverSummary> {
        match self {
            Self::Reported(summary) => Some(summary.clone()),
            _ => None,
        }
    }
}

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// Aggregates the reports of the nodes (any order; one per node).
pub fn summarize<'a>(reports: impl IntoIterator<Item = &'a DriverStatus>) -> DriverSummary {
    let mut summary = DriverSummary::default();
    // (target, kernel release, reason) → (nodes, first message)
    let mut failing: BTreeMap<(String, String, String), (usize, String)> = BTreeMap::new();
    let mut nodes = 0usize;
    let (mut loaded, mut downloaded, mut compiled, mut failed) = (0usize, 0usize, 0usize, 0usize);
    for report in reports {
        nodes += 1;
        if report.loaded {
            loaded += 1;
            match report.origin {
                Some(DriverOrigin::Downloaded | DriverOrigin::Cached) => downloaded += 1,
                Some(DriverOrigin::Compiled) => compiled += 1,
                _ => {}
            }
            continue;
        }
        failed += 1;
        let key = (
            report.target.clone().unwrap_or_default(),
            report.kernel_release.clone().unwrap_or_default(),
            report
                .reason
                .clone()
                .unwrap_or_else(|| "LoaderError".to_owned()),
        );
        let entry = failing
            .entry(key)
            .or_insert_with(|| (0, report.error.clone().unwrap_or_default()));
        entry.0 += 1;
    }
    let mut kernels: Vec<FailingKernel> = failing
        .into_iter()
        .map(
            |((target, kernel_release, reason), (n, message))| FailingKernel {
                target,
                kernel_release,
                reason,
                message,
                nodes: count(n),
            },
        )
        .collect();
    // Most affected first; ties in a stable (sorted key) order.
    kernels.sort_by_key(|k| std::cmp::Reverse(k.nodes));
    kernels.truncate(MAX_FAILING_KERNELS);
    summary.nodes = count(nodes);
    summary.loaded = count(loaded);
    summary.downloaded = count(downloaded);
    summary.compiled = count(compiled);
    summary.failed = count(failed);
    summary.failing_kernels = kernels;
    summary
}

/// `DriverReady` for a summary.
pub fn condition(summary: &DriverSummary) -> DriverCondition {
    if summary.nodes == 0 {
        return DriverCondition {
            status: "Unknown",
            reason: "NoNodesReported".to_owned(),
            message: "No node has reported its driver yet.".to_owned(),
        };
    }
    if summary.failed == 0 {
        return DriverCondition {
            status: "True",
            reason: "DriverLoaded".to_owned(),
            message: format!(
                "{} of {} nodes have their driver ({} downloaded, {} compiled).",
                summary.loaded, summary.nodes, summary.downloaded, summary.compiled
            ),
        };
    }
    let named: Vec<String> = summary
        .failing_kernels
        .iter()
        .take(MESSAGE_KERNELS)
        .map(|k| {
            let target = if k.target.is_empty() {
                String::new()
            } else {
                format!("{} ", k.target)
            };
            let message = if k.message.is_empty() {
                String::new()
            } else {
                format!(": {}", k.message)
            };
            format!(
                "{target}{} ({}, {} node{}){message}",
                k.kernel_release,
                k.reason,
                k.nodes,
                if k.nodes == 1 { "" } else { "s" }
            )
        })
        .collect();
    let listed: i32 = summary
        .failing_kernels
        .iter()
        .take(MESSAGE_KERNELS)
        .map(|k| k.nodes)
        .sum();
    let more = summary.failed - listed;
    let more = if more > 0 {
        format!("; +{more} more nodes")
    } else {
        String::new()
    };
    DriverCondition {
        status: "False",
        reason: summary
            .failing_kernels
            .first()
            .map_or_else(|| "LoaderError".to_owned(), |k| k.reason.clone()),
        message: format!(
            "{} of {} nodes have no driver: {}{more}",
            summary.failed,
            summary.nodes,
            named.join("; ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use falco_core::driver::status::reason;

    fn ok(origin: DriverOrigin) -> DriverStatus {
        DriverStatus {
            kind: "kmod".into(),
            loaded: true,
            origin: Some(origin),
            ..DriverStatus::default()
        }
    }

    fn failed(kernel: &str, why: &str) -> DriverStatus {
        DriverStatus {
            kind: "kmod".into(),
            target: Some("amazonlinux2".into()),
            kernel_release: Some(kernel.into()),
            ..DriverStatus::default()
        }
        .with_error(why, "unable to find a prebuilt driver")
    }

    #[test]
    fn counts_and_groups_failing_kernels_with_a_bounded_size() {
        let mut reports = vec![
            ok(DriverOrigin::Downloaded),
            ok(DriverOrigin::Cached),
            ok(DriverOrigin::Compiled),
        ];
        for i in 0..5000 {
            reports.push(failed(&format!("4.14.{}-amzn2", i % 40), reason::NOT_FOUND));
        }
        reports.push(failed("4.14.0-amzn2", reason::NOT_FOUND));
        let s = summarize(&reports);
        assert_eq!(
            (s.nodes, s.loaded, s.downloaded, s.compiled, s.failed),
            (5004, 3, 2, 1, 5001)
        );
        assert_eq!(s.failing_kernels.len(), MAX_FAILING_KERNELS);
        assert_eq!(s.failing_kernels[0].kernel_release, "4.14.0-amzn2");
        assert_eq!(s.failing_kernels[0].nodes, 126);
        let c = condition(&s);
        assert_eq!((c.status, c.reason.as_str()), ("False", "DriverNotFound"));
        assert!(
            c.message.starts_with("5001 of 5004 nodes have no driver: amazonlinux2 4.14.0-amzn2 (DriverNotFound, 126 nodes)"),
            "{}",
            c.message
        );
        assert!(c.message.len() < 1024, "constant size: {}", c.message.len());
    }

    #[test]
    fn all_loaded_is_true_and_nothing_reported_is_unknown() {
        let s = summarize(&[ok(DriverOrigin::Downloaded), ok(DriverOrigin::Compiled)]);
        let c = condition(&s);
        assert_eq!((c.status, c.reason.as_str()), ("True", "DriverLoaded"));
        assert_eq!(
            c.message,
            "2 of 2 nodes have their driver (1 downloaded, 1 compiled)."
        );
        let c = condition(&summarize(&[]));
        assert_eq!(
            (c.status, c.reason.as_str()),
            ("Unknown", "NoNodesReported")
        );
        assert_eq!(DriverState::NotApplicable.condition(), None);
    }
}
