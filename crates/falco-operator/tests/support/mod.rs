//! Shared helpers of the operator's integration tests: an in-process operator on the harness's
//! real API server, scoped to a fresh namespace, and deadline waits (never sleeps).

#![allow(dead_code)]

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use falco_api::{Component, Falco};
use falco_operator::OperatorConfig;
use falco_operator::metrics::{Metrics, instrumented_client};
use falco_operator::run::{self, RunConfig, Running};
use kube::Client;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::Value;

/// How long any condition may take to come true.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// An admin client on the shared control plane and a fresh namespace.
pub async fn setup(prefix: &str) -> (Client, String) {
    let cp = falco_testenv::shared();
    let client = cp.client().await.expect("client");
    let ns = cp.namespace(&client, prefix).await.expect("namespace");
    (client, ns)
}

/// An admin kube config of the shared control plane.
pub async fn admin_config() -> kube::Config {
    let kubeconfig =
        Kubeconfig::from_yaml(&falco_testenv::shared().kubeconfig_yaml()).expect("yaml");
    kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("config")
}

/// The operator, in process, watching `ns` only, with its requests counted.
pub async fn operator(ns: &str) -> Running {
    operator_with(ns, OperatorConfig::default()).await
}

/// [`operator`] with settings.
pub async fn operator_with(ns: &str, operator: OperatorConfig) -> Running {
    let metrics = Arc::new(Metrics::new());
    let client = instrumented_client(admin_config().await, &metrics).expect("client");
    start(client, metrics, ns, operator).await
}

/// Starts the operator on `client` and waits for its caches.
pub async fn start(
    client: Client,
    metrics: Arc<Metrics>,
    ns: &str,
    operator: OperatorConfig,
) -> Running {
    let mut running = run::start(
        client,
        metrics,
        RunConfig {
            operator,
            namespace: Some(ns.to_owned()),
            // Resyncs are triggered by the tests.
            resync_interval: Duration::from_secs(3600),
            concurrency: 4,
            instance: "test".to_owned(),
            state_namespace: Some(ns.to_owned()),
        },
    );
    tokio::time::timeout(DEADLINE, running.wait_ready())
        .await
        .expect("caches synced");
    running
}

/// Polls `check` until it returns `Some`, or panics with `what` after [`DEADLINE`].
pub async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    wait_within(DEADLINE, what, &mut check).await
}

/// [`wait_for`] with an explicit deadline.
pub async fn wait_within<T, F, Fut>(deadline: Duration, what: &str, check: &mut F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = tokio::time::Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Creates a Falco from a JSON spec.
pub async fn create_falco(client: &Client, ns: &str, name: &str, spec: Value) -> Falco {
    let mut cr = Falco::new(name, serde_json::from_value(spec).expect("spec"));
    cr.metadata.labels = Some([("team".to_owned(), "sec".to_owned())].into());
    Api::<Falco>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &cr)
        .await
        .expect("create Falco")
}

/// Creates a Component of `kind`.
pub async fn create_component(client: &Client, ns: &str, name: &str, kind: &str) -> Component {
    let spec =
        serde_json::from_value(serde_json::json!({"component": {"type": kind}})).expect("spec");
    Api::<Component>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &Component::new(name, spec))
        .await
        .expect("create Component")
}

/// `(status, reason)` of a condition of a CR's status, read from the API.
pub fn condition(
    status: Option<&falco_api::InstanceStatus>,
    type_: &str,
) -> Option<(String, String)> {
    status?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone()))
}

/// Waits until the Falco's condition `type_` has `status` and returns the CR.
pub async fn wait_falco_condition(
    client: &Client,
    ns: &str,
    name: &str,
    type_: &str,
    status: &str,
) -> Falco {
    let api = Api::<Falco>::namespaced(client.clone(), ns);
    wait_for(&format!("Falco {name}: {type_}={status}"), || {
        let api = api.clone();
        async move {
            let f = api.get_opt(name).await.ok().flatten()?;
            let (s, _) = condition(f.status.as_ref(), type_)?;
            (s == status && f.status.as_ref()?.observed_generation == f.metadata.generation)
                .then_some(f)
        }
    })
    .await
}

/// Waits until the Component's `Reconciled` is `True` for its generation.
pub async fn wait_component_reconciled(client: &Client, ns: &str, name: &str) -> Component {
    let api = Api::<Component>::namespaced(client.clone(), ns);
    wait_for(&format!("Component {name} reconciled"), || {
        let api = api.clone();
        async move {
            let c = api.get_opt(name).await.ok().flatten()?;
            let (s, _) = condition(c.status.as_ref(), "Reconciled")?;
            (s == "True" && c.status.as_ref()?.observed_generation == c.metadata.generation)
                .then_some(c)
        }
    })
    .await
}

/// Waits until `api.get(name)` is NotFound.
pub async fn wait_gone<K>(api: &Api<K>, name: &str)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    wait_for(&format!("{name} deleted"), || async {
        match api.get_opt(name).await {
            Ok(None) => Some(()),
            _ => None,
        }
    })
    .await;
}

/// Triggers a resync and waits until at least `n` reconciles ran.
pub async fn resync_and_wait(running: &Running, n: u64) {
    let before = running.metrics.reconciles();
    running.resync();
    wait_for("the resync's reconciles", || {
        let done = running.metrics.reconciles() >= before + n;
        async move { done.then_some(()) }
    })
    .await;
}
