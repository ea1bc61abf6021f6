//! Running the operator: watches, the two controllers, reference protection, and the admin HTTP
//! server (`/healthz`, `/readyz`, `/metrics`).
//!
//! [`start`] takes a ready [`kube::Client`] (built with [`crate::metrics::instrumented_client`] so
//! its requests are counted) and returns a [`Running`] handle; the binary adds leader election and
//! signals around it, tests drive it in-process.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use falco_api::{Component, Config, Falco, Plugin, Rulesfile};
use futures::channel::mpsc;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use kube::api::Api;
use kube::runtime::controller::Config as ControllerConfig;
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::runtime::{Controller, WatchStreamExt};
use kube::{Client, Resource, ResourceExt};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::cache::{self, Router};
use crate::events::Publisher;
use crate::metrics::Metrics;
use crate::reconcile::{self, Context, Instance};
use crate::references::{self, References};
use crate::{COMPONENT_FIELD_MANAGER, FALCO_FIELD_MANAGER, OperatorConfig};

/// Settings of a running operator.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// Settings shaping the children.
    pub operator: OperatorConfig,
    /// Watch one namespace, or all when `None`.
    pub namespace: Option<String>,
    /// Reconcile every CR this often, as a safety net (the reconcile sends nothing when nothing
    /// changed).
    pub resync_interval: Duration,
    /// Reconciles running at once, per controller.
    pub concurrency: u16,
    /// The `reportingInstance` of Events.
    pub instance: String,
    /// Where the operator keeps its reference ledger (its own namespace); `None`: no ledger
    /// ([`crate::references`]).
    pub state_namespace: Option<String>,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            operator: OperatorConfig::default(),
            namespace: None,
            resync_interval: Duration::from_secs(600),
            concurrency: 16,
            instance: "falco-operator".to_owned(),
            state_namespace: None,
        }
    }
}

/// A running operator.
pub struct Running {
    /// Its metrics.
    pub metrics: Arc<Metrics>,
    ready: watch::Receiver<bool>,
    resync: mpsc::UnboundedSender<()>,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Running {
    /// Reconciles every CR now (what the periodic resync does).
    pub fn resync(&self) {
        let _ = self.resync.unbounded_send(());
    }

    /// Whether every cache has had its first list.
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Waits until every cache has had its first list.
    pub async fn wait_ready(&mut self) {
        let _ = self.ready.wait_for(|r| *r).await;
    }

    /// A receiver of readiness, for the admin server.
    pub fn readiness(&self) -> watch::Receiver<bool> {
        self.ready.clone()
    }

    /// Stops the controllers (in-flight reconciles finish) and waits for them.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `K` in one namespace, or in all.
pub(crate) fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Starts the operator on `client`.
pub fn start(client: Client, metrics: Arc<Metrics>, config: RunConfig) -> Running {
    static FIELD_MANAGERS: [&str; 2] = [FALCO_FIELD_MANAGER, COMPONENT_FIELD_MANAGER];
    let ns = config.namespace.as_deref();
    let (falco_tx, falco_rx) = mpsc::unbounded();
    let (component_tx, component_rx) = mpsc::unbounded();
    let driver_trigger = falco_tx.clone();
    let router = Router {
        falco: falco_tx,
        component: component_tx,
    };
    let driver_reports = crate::driver_status::DriverReports::default();
    let (caches, drivers) = cache::start(&client, ns, &FIELD_MANAGERS, router);
    let (refs, refs_rx) = References::new(config.state_namespace.clone());
    let ctx = Arc::new(Context {
        client: client.clone(),
        config: config.operator.clone(),
        caches: caches.clone(),
        metrics: metrics.clone(),
        references: refs.clone(),
        falco_events: Publisher::new(client.clone(), "falco-controller", &config.instance),
        component_events: Publisher::new(client.clone(), "component-controller", &config.instance),
        failures: Default::default(),
        driver_reports: driver_reports.clone(),
    });

    let (ready_tx, ready_rx) = watch::channel(false);
    let (resync_tx, resync_rx) = mpsc::unbounded::<()>();
    let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
    let shutdown = shutdown_rx.map(|_| ()).shared();

    // Periodic and manual resyncs, fanned out to both controllers.
    let (falco_resync_tx, falco_resync) = mpsc::unbounded::<()>();
    let (component_resync_tx, component_resync) = mpsc::unbounded::<()>();
    let interval = config.resync_interval;
    let ticks = async_stream_interval(interval);
    let fanout = futures::stream::select(resync_rx, ticks).for_each(move |()| {
        let _ = falco_resync_tx.unbounded_send(());
        let _ = component_resync_tx.unbounded_send(());
        futures::future::ready(())
    });

    let controller_config = ControllerConfig::default().concurrency(config.concurrency);
    let (falco_store, falco_stream) = cr_watch::<Falco>(api(&client, ns));
    let (component_store, component_stream) = cr_watch::<Component>(api(&client, ns));
    // The references of every Falco and Component, as soon as their caches are full (their
    // reconciles set them too, but later): the ledger check waits for this.
    let primed = {
        let (refs, falco_store, component_store) =
            (refs.clone(), falco_store.clone(), component_store.clone());
        async move {
            let _ = falco_store.wait_until_ready().await;
            let _ = component_store.wait_until_ready().await;
            prime(&falco_store, &refs);
            prime(&component_store, &refs);
        }
    };
    let cr_stores = (falco_store.clone(), component_store.clone());
    let driver_feed = crate::aggregate::DriverFeed {
        reports: driver_reports,
        falcos: falco_store.clone(),
        trigger: driver_trigger,
    };
    let falco_ctrl = controller::<Falco>(
        (falco_store, falco_stream),
        controller_config.clone(),
        falco_rx,
        falco_resync,
        shutdown.clone(),
        ctx.clone(),
    );
    let component_ctrl = controller::<Component>(
        (component_store, component_stream),
        controller_config,
        component_rx,
        component_resync,
        shutdown.clone(),
        ctx.clone(),
    );

    let sources = futures::future::join3(
        references::watch_sources::<Rulesfile>(
            api(&client, ns),
            "Rulesfile",
            references::of_rulesfile,
            refs.clone(),
        ),
        references::watch_sources::<Plugin>(
            api(&client, ns),
            "Plugin",
            references::of_plugin,
            refs.clone(),
        ),
        references::watch_sources::<Config>(
            api(&client, ns),
            "Config",
            references::of_config,
            refs.clone(),
        ),
    );
    let refs_worker = refs.run(client.clone(), refs_rx, primed);
    let aggregation = crate::aggregate::run(
        client.clone(),
        config.namespace.clone(),
        caches.clone(),
        metrics.clone(),
        Duration::from_millis(200),
        driver_feed,
    );
    let readiness = async move {
        caches.wait_until_ready().await;
        // The CR caches too: kube's controller holds its reconciles until its store is ready, and
        // a graceful shutdown before that point would wait for it forever.
        let _ = cr_stores.0.wait_until_ready().await;
        let _ = cr_stores.1.wait_until_ready().await;
        let _ = ready_tx.send(true);
        tracing::info!("Caches synced; reconciling");
        futures::future::pending::<()>().await;
    };

    let task = tokio::spawn(async move {
        let background = futures::future::join5(
            futures::future::join_all(drivers),
            sources,
            refs_worker,
            fanout,
            readiness,
        );
        tokio::select! {
            _ = futures::future::join(falco_ctrl, component_ctrl) => {}
            _ = background => {}
            () = aggregation => {}
        }
    });

    Running {
        metrics,
        ready: ready_rx,
        resync: resync_tx,
        shutdown: Some(shutdown_tx),
        task,
    }
}

/// Records the references of every CR in `store` (what their reconciles will record too).
fn prime<I: Instance>(store: &Store<I>, refs: &References) {
    for obj in store.state() {
        let key = (I::KIND, obj.namespace().unwrap_or_default(), obj.name_any());
        refs.set(key, obj.references());
    }
}

/// `()` every `period`, starting one period from now.
fn async_stream_interval(period: Duration) -> impl futures::Stream<Item = ()> + Send {
    futures::stream::unfold(
        tokio::time::interval_at(tokio::time::Instant::now() + period, period),
        |mut interval| async move {
            interval.tick().await;
            Some(((), interval))
        },
    )
}

/// kubectl's copy of what it last applied.
const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// A CR watch feeding a store: the controller's input. The store keeps neither `managedFields`
/// nor kubectl's last-applied annotation (a second copy of the spec): nothing reads them.
fn cr_watch<I: Instance>(api: Api<I>) -> (Store<I>, BoxStream<'static, Result<I, watcher::Error>>) {
    let (reader, writer) = kube::runtime::reflector::store();
    let stream = kube::runtime::reflector(
        writer,
        watcher(api, watcher::Config::default())
            .default_backoff()
            .modify(|obj: &mut I| {
                let meta = obj.meta_mut();
                meta.managed_fields = None;
                if let Some(annotations) = meta.annotations.as_mut() {
                    annotations.remove(LAST_APPLIED_ANNOTATION);
                }
            }),
    )
    .applied_objects()
    .boxed();
    (reader, stream)
}

fn controller<I: Instance>(
    (reader, stream): (Store<I>, BoxStream<'static, Result<I, watcher::Error>>),
    config: ControllerConfig,
    triggers: mpsc::UnboundedReceiver<kube::runtime::reflector::ObjectRef<I>>,
    resync: mpsc::UnboundedReceiver<()>,
    shutdown: impl futures::Future<Output = ()> + Send + Sync + 'static,
    ctx: Arc<Context>,
) -> impl futures::Future<Output = ()> + Send {
    Controller::for_stream(stream, reader)
        .with_config(config)
        .reconcile_on(triggers)
        .reconcile_all_on(resync)
        .graceful_shutdown_on(shutdown)
        .run(reconcile::reconcile::<I>, reconcile::error_policy::<I>, ctx)
        .for_each(|result| {
            if let Err(error) = result {
                tracing::debug!(error = %reconcile::error_chain(&error), "Controller event");
            }
            futures::future::ready(())
        })
}

/// The admin server: `/healthz` (always 200), `/readyz` (200 once `ready` is true), `/metrics`.
pub async fn serve_admin(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    shutdown: impl futures::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::http::StatusCode;
    use axum::routing::get;
    let router = axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.load(Ordering::Relaxed);
                async move {
                    if ready {
                        (StatusCode::OK, "ok")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced")
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let text = metrics.encode();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        text,
                    )
                }
            }),
        );
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}
