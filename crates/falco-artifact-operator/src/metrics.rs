//! Prometheus metrics. Every label comes from a closed set (artifact kind, error reason, pull
//! outcome); object names never become labels, they go to logs.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// `kind` label: `Rulesfile`, `Plugin` or `Config`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// The artifact kind.
    pub kind: &'static str,
}

/// `kind` + `reason` labels; `reason` is one of [`crate::Error::REASONS`].
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    /// The artifact kind.
    pub kind: &'static str,
    /// The condition reason.
    pub reason: &'static str,
}

/// `outcome` label of registry checks: `pulled` or `unchanged`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PullLabels {
    /// What the check found.
    pub outcome: &'static str,
}

/// The sidecar's metrics.
#[derive(Debug)]
pub struct Metrics {
    /// Sync passes run.
    pub passes: Counter,
    /// Artifacts selected for this node, by kind.
    pub selected: Family<KindLabel, Gauge>,
    /// Artifacts reconciled (work done, not skipped as unchanged), by kind.
    pub reconciled: Family<KindLabel, Counter>,
    /// Failed sources, by kind and reason.
    pub failures: Family<FailureLabels, Counter>,
    /// Registry checks, by outcome.
    pub pulls: Family<PullLabels, Counter>,
    /// Duration of registry checks including download, verification and extraction.
    pub pull_seconds: Histogram,
    /// 1 once the first full sync is done.
    pub ready: Gauge,
    /// Batches of file changes written by a pass (one burst of renames each).
    pub batches: Counter,
}

impl Metrics {
    /// Registers the metrics under the prefix `falco_artifact` in `registry`.
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self {
            passes: Counter::default(),
            selected: Family::default(),
            reconciled: Family::default(),
            failures: Family::default(),
            pulls: Family::default(),
            pull_seconds: Histogram::new(exponential_buckets(0.005, 2.0, 14)),
            ready: Gauge::default(),
            batches: Counter::default(),
        };
        let r = registry.sub_registry_with_prefix("falco_artifact");
        r.register("sync_passes", "Sync passes run", m.passes.clone());
        r.register(
            "selected",
            "Artifacts selecting this node",
            m.selected.clone(),
        );
        r.register(
            "reconciled",
            "Artifacts reconciled (changed input, retry or resync)",
            m.reconciled.clone(),
        );
        r.register(
            "source_failures",
            "Artifact sources that failed, by reason",
            m.failures.clone(),
        );
        r.register(
            "registry_checks",
            "Registry checks by outcome",
            m.pulls.clone(),
        );
        r.register(
            "registry_check_seconds",
            "Time of one registry check, download and verification included",
            m.pull_seconds.clone(),
        );
        r.register(
            "ready",
            "1 once the first full sync of this node's artifacts is done",
            m.ready.clone(),
        );
        r.register(
            "file_batches",
            "Passes that changed rules, config or plugin files, each as one burst of renames",
            m.batches.clone(),
        );
        m
    }
}
