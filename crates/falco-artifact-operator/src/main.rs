//! `falco-artifact-operator`: the per-node artifact sidecar.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::Context;
use clap::Parser;
use falco_artifact_operator::cli::{Cli, Command, PullArgs, PullKind, RunArgs};
use falco_artifact_operator::http::{HttpState, router};
use falco_artifact_operator::metrics::Metrics;
use falco_artifact_operator::oci::{ArtifactType, PullOutcome, Puller, RegistryConfig};
use falco_artifact_operator::oci::{Limits, RetryPolicy};
use falco_artifact_operator::reconcile::CosignPolicy;
use falco_artifact_operator::store::{ArtifactKey, Kind, Medium, Store};
use falco_artifact_operator::sync::{self, Settings};

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crd { output_dir } => {
            print!(
                "{}",
                falco_api::render_crds(&falco_api::artifact_crds(), output_dir.as_deref())?
            );
            Ok(())
        }
        Command::Pull(args) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(pull(args)),
        Command::Run(args) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?
            .block_on(run(args)),
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let RunArgs {
        node_name,
        namespace,
        dirs,
        registry,
        signatures,
        probe_addr,
        driver_status_file,
        batch_window_ms,
    } = args;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        node = %node_name,
        namespace = %namespace,
        "falco-artifact-operator starting"
    );
    let read = |path: &std::path::Path| {
        std::fs::read(path).with_context(|| format!("reading {}", path.display()))
    };
    let ca_pem = registry.registry_ca_file.as_deref().map(read).transpose()?;
    let cosign_key = signatures
        .cosign_public_key
        .as_deref()
        .map(read)
        .transpose()?
        .map(|b| String::from_utf8_lossy(&b).into_owned());
    if let Some(pem) = &cosign_key {
        falco_artifact_operator::cosign::PublicKey::from_pem(pem).context("--cosign-public-key")?;
    }
    let trusted_root = match signatures.cosign_trusted_root.as_deref() {
        Some(path) => Some(Arc::new(
            falco_artifact_operator::cosign::TrustedRoot::from_json(&read(path)?)
                .with_context(|| format!("--cosign-trusted-root {}", path.display()))?,
        )),
        None => None,
    };
    let keyless = signatures
        .cosign_identity
        .zip(signatures.cosign_issuer)
        .map(|(identity, issuer)| {
            CosignPolicy::Keyless(falco_artifact_operator::cosign::KeylessIdentity {
                identity,
                issuer,
            })
        });
    let cosign = cosign_key.map(CosignPolicy::Key).or(keyless);
    let settings = Settings {
        node_name,
        namespace,
        dirs: dirs.store_dirs(),
        ca_pem,
        insecure_registries: registry.insecure_registries.clone(),
        resync: registry.resync(),
        cosign,
        trusted_root,
        require_signatures: signatures.require_signatures,
        retry: RetryPolicy::default(),
        limits: Limits::default(),
        driver_status_file,
        batch_window: std::time::Duration::from_millis(batch_window_ms),
    };
    let client = kube::Client::try_default()
        .await
        .context("no Kubernetes configuration (KUBECONFIG or in-cluster)")?;

    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Arc::new(Metrics::new(&mut registry));
    let ready = Arc::new(AtomicBool::new(false));
    let listener = tokio::net::TcpListener::bind(probe_addr)
        .await
        .with_context(|| format!("binding {probe_addr}"))?;
    tracing::info!(addr = %listener.local_addr()?, "serving /healthz /readyz /metrics");
    let app = router(HttpState {
        ready: ready.clone(),
        registry: Arc::new(registry),
    });
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "probe server stopped");
        }
    });
    sync::run(client, settings, metrics, ready, shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

async fn pull(args: PullArgs) -> anyhow::Result<()> {
    let ca_pem = args
        .registry
        .registry_ca_file
        .as_deref()
        .map(std::fs::read)
        .transpose()
        .context("--registry-ca-file")?;
    let puller = Puller::new(RegistryConfig {
        ca_pem,
        insecure_registries: args.registry.insecure_registries.clone(),
        ..RegistryConfig::default()
    })?;
    let mut store = Store::open(args.dirs.store_dirs())?;
    let (kind, artifact_type, mode) = match args.kind {
        PullKind::Rulesfile => (Kind::Rulesfile, ArtifactType::Rulesfile, None),
        PullKind::Plugin => (Kind::PluginBinary, ArtifactType::Plugin, Some(0o755)),
    };
    let key = ArtifactKey::new(kind, &args.name, Medium::Oci);
    let installed = store.installed_digest(&key).map(str::to_owned);
    match puller
        .pull(&args.reference, artifact_type, installed.as_deref())
        .await?
    {
        PullOutcome::Unchanged { digest } => println!("unchanged {digest}"),
        PullOutcome::Pulled(p) => {
            let mode = mode.unwrap_or((p.file.mode & 0o777) | 0o400);
            let action = store.put(&key, args.priority, &p.file.data, mode, Some(&p.digest))?;
            let path = store.path_for(&key, args.priority)?;
            println!("{action:?} {} {}", p.digest, path.display());
        }
    }
    Ok(())
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
