//! `falco-testenv`: a real local Kubernetes control plane for the demo and the benchmarks.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use falco_testenv::{ControlPlane, StartOptions, apply_manifests, install_crds, read_manifests};

/// A real etcd + kube-apiserver on loopback, with the Falco operator CRDs installed.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start the control plane, write DIR/kubeconfig and run until interrupted (Ctrl-C or SIGTERM).
    Up {
        /// Directory for the kubeconfig (created if missing; the kubeconfig is removed on exit).
        #[arg(long, env = "FALCO_TESTENV_DIR")]
        dir: PathBuf,
        /// Do not install the project's CRDs.
        #[arg(long)]
        no_crds: bool,
        /// YAML manifests (a file or a directory) to apply once the CRDs are Established.
        #[arg(long, value_name = "PATH")]
        apply: Vec<PathBuf>,
        /// Namespace for applied namespaced objects that name none.
        #[arg(long, default_value = "default")]
        namespace: String,
    },
    /// Build (or find in the per-machine cache) etcd and kube-apiserver and print their directory.
    Binaries,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                // kube's client logs every refused connection while the API server starts.
                .unwrap_or_else(|_| "info,kube_client=off".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Binaries => {
            let bins = tokio::task::spawn_blocking(falco_testenv::locate_binaries).await??;
            let dir = bins.etcd.parent().map(PathBuf::from).unwrap_or_default();
            println!("{}", dir.display());
        }
        Command::Up {
            dir,
            no_crds,
            apply,
            namespace,
        } => up(dir, no_crds, apply, namespace).await?,
    }
    Ok(())
}

async fn up(
    dir: PathBuf,
    no_crds: bool,
    apply: Vec<PathBuf>,
    namespace: String,
) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let cp = ControlPlane::start(StartOptions::default())
        .await
        .context("starting the control plane")?;
    let api_ready = started.elapsed();
    let client = cp.client().await?;
    if !no_crds {
        install_crds(&client, &falco_api::all_crds())
            .await
            .context("installing the CRDs")?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, cp.kubeconfig_yaml())
        .with_context(|| format!("writing {}", kubeconfig.display()))?;
    eprintln!(
        "control plane ready in {:.2} s (API server {:.2} s): {} (etcd {}, logs in {})",
        started.elapsed().as_secs_f64(),
        api_ready.as_secs_f64(),
        cp.server_url(),
        cp.etcd_url(),
        cp.dir().display()
    );
    for path in &apply {
        let objects = read_manifests(path)?;
        for applied in apply_manifests(&client, &namespace, &objects).await? {
            eprintln!("applied {applied}");
        }
    }
    // The one line on stdout: what a script waits for and a person copies.
    println!("export KUBECONFIG={}", kubeconfig.display());

    wait_for_shutdown().await?;
    // stderr may be gone by now (a pipe closed by the same Ctrl-C): never panic on it.
    let _ = writeln!(std::io::stderr(), "stopping the control plane");
    let _ = std::fs::remove_file(&kubeconfig);
    cp.stop();
    Ok(())
}

async fn wait_for_shutdown() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
