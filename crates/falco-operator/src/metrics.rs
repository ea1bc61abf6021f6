//! Prometheus metrics (`prometheus-client`), every label from a closed set:
//!
//! | metric | labels | meaning |
//! |---|---|---|
//! | `falco_operator_reconciles_total` | `controller` (`falco`, `component`), `result` (`ok`, `error`) | reconciles run |
//! | `falco_operator_reconcile_errors_total` | `controller`, `category` ([`crate::Error::category`]) | failed reconciles by cause |
//! | `falco_operator_reconcile_duration_seconds` | `controller` | reconcile duration histogram |
//! | `falco_operator_children_total` | `controller`, `outcome` (`applied`, `unchanged`) | children applied or skipped as unchanged |
//! | `falco_operator_api_requests_total` | `verb` (`get` incl. list, `watch`, `create`, `update`, `patch`, `delete`) | requests this process sent to the API server |
//!
//! The request counter is a tower layer on the operator's own client ([`CountingLayer`]), so it
//! sees every request: reconcilers, watches, events, finalizers and leader election.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// `controller` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControllerLabels {
    controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    controller: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    controller: &'static str,
    category: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    controller: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerbLabels {
    verb: &'static str,
}

/// The operator's metrics.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<ResultLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    duration: Family<ControllerLabels, Histogram, fn() -> Histogram>,
    children: Family<OutcomeLabels, Counter>,
    requests: Family<VerbLabels, Counter>,
    requests_sum: AtomicU64,
    reconciles_sum: AtomicU64,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("falco_operator");
        let reconciles = Family::<ResultLabels, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let duration = Family::<ControllerLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.001, 2.0, 14))) as fn() -> Histogram,
        );
        let children = Family::<OutcomeLabels, Counter>::default();
        let requests = Family::<VerbLabels, Counter>::default();
        registry.register("reconciles", "Reconciles run", reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Failed reconciles by cause",
            errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Reconcile duration",
            duration.clone(),
        );
        registry.register(
            "children",
            "Children applied, or skipped as unchanged",
            children.clone(),
        );
        registry.register(
            "api_requests",
            "Requests sent to the Kubernetes API server",
            requests.clone(),
        );
        Self {
            registry,
            reconciles,
            errors,
            duration,
            children,
            requests,
            requests_sum: AtomicU64::new(0),
            reconciles_sum: AtomicU64::new(0),
        }
    }

    /// Records one reconcile.
    pub fn reconciled(
        &self,
        controller: &'static str,
        elapsed: Duration,
        error: Option<&'static str>,
    ) {
        let result = if error.is_some() { "error" } else { "ok" };
        self.reconciles
            .get_or_create(&ResultLabels { controller, result })
            .inc();
        if let Some(category) = error {
            self.errors
                .get_or_create(&ErrorLabels {
                    controller,
                    category,
                })
                .inc();
        }
        self.duration
            .get_or_create(&ControllerLabels { controller })
            .observe(elapsed.as_secs_f64());
        self.reconciles_sum.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn child_applied(&self, controller: &'static str) {
        self.children
            .get_or_create(&OutcomeLabels {
                controller,
                outcome: "applied",
            })
            .inc();
    }

    pub(crate) fn child_unchanged(&self, controller: &'static str) {
        self.children
            .get_or_create(&OutcomeLabels {
                controller,
                outcome: "unchanged",
            })
            .inc();
    }

    fn request(&self, verb: &'static str) {
        self.requests.get_or_create(&VerbLabels { verb }).inc();
        self.requests_sum.fetch_add(1, Ordering::Relaxed);
    }

    /// Requests sent to the API server so far, all verbs.
    pub fn api_requests(&self) -> u64 {
        self.requests_sum.load(Ordering::Relaxed)
    }

    /// Reconciles run so far, both controllers, any result.
    pub fn reconciles(&self) -> u64 {
        self.reconciles_sum.load(Ordering::Relaxed)
    }

    /// Reconcile errors of one category so far, both controllers.
    pub fn errors(&self, category: &'static str) -> u64 {
        ["falco", "component"]
            .iter()
            .map(|controller| {
                self.errors
                    .get_or_create(&ErrorLabels {
                        controller,
                        category,
                    })
                    .get()
            })
            .sum()
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The verb of a request, from its method and query (a `GET` with `watch=` is a watch).
pub fn verb(method: &http::Method, query: Option<&str>) -> &'static str {
    match *method {
        http::Method::GET
            if query.is_some_and(|q| q.split('&').any(|p| p.starts_with("watch="))) =>
        {
            "watch"
        }
        http::Method::GET => "get",
        http::Method::POST => "create",
        http::Method::PUT => "update",
        http::Method::PATCH => "patch",
        http::Method::DELETE => "delete",
        _ => "other",
    }
}

/// A tower layer counting every request by verb in [`Metrics`].
#[derive(Clone)]
pub struct CountingLayer(pub Arc<Metrics>);

impl<S> tower::Layer<S> for CountingLayer {
    type Service = Counting<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Counting {
            inner,
            metrics: self.0.clone(),
        }
    }
}

/// The service of [`CountingLayer`].
#[derive(Clone)]
pub struct Counting<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B> tower::Service<http::Request<B>> for Counting<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        self.metrics.request(verb(req.method(), req.uri().query()));
        self.inner.call(req)
    }
}

/// A client for `config` whose requests are counted in `metrics`.
pub fn instrumented_client(
    config: kube::Config,
    metrics: &Arc<Metrics>,
) -> Result<kube::Client, kube::Error> {
    Ok(kube::client::ClientBuilder::try_from(config)?
        .with_layer(&CountingLayer(metrics.clone()))
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs_come_from_method_and_watch_parameter() {
        use http::Method;
        assert_eq!(
            verb(&Method::GET, Some("watch=true&resourceVersion=1")),
            "watch"
        );
        assert_eq!(verb(&Method::GET, Some("labelSelector=a%3Db")), "get");
        assert_eq!(verb(&Method::GET, None), "get");
        assert_eq!(verb(&Method::PATCH, Some("fieldManager=x")), "patch");
        assert_eq!(verb(&Method::POST, None), "create");
        assert_eq!(verb(&Method::DELETE, None), "delete");
    }

    #[test]
    fn metrics_are_exposed_with_closed_labels() {
        let m = Metrics::new();
        m.reconciled("falco", Duration::from_millis(3), None);
        m.reconciled("falco", Duration::from_millis(3), Some("invalid_spec"));
        m.request("patch");
        let text = m.encode();
        assert!(
            text.contains(r#"falco_operator_reconciles_total{controller="falco",result="ok"} 1"#),
            "{text}"
        );
        assert!(text.contains(
            r#"falco_operator_reconcile_errors_total{controller="falco",category="invalid_spec"} 1"#
        ));
        assert!(text.contains(r#"falco_operator_api_requests_total{verb="patch"} 1"#));
        assert!(text.contains("falco_operator_reconcile_duration_seconds_bucket"));
        assert_eq!((m.api_requests(), m.reconciles()), (1, 2));
    }
}
