//! `falco-testenv`: a real local Kubernetes control plane for the demo and the benchmarks.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use falco_testenv::registry::{ArtifactKind, Registry, push_artifact};
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
        /// Also run the controller manager, the scheduler and a node (containerd + kubelet),
        /// with a local registry holding the project's images (built from the static binaries
        /// in --image-bins); pods run for real.
        #[arg(long)]
        node: bool,
        /// Directory of the static musl binaries the images are built from (`make images`).
        #[arg(long, env = "FALCO_IMAGE_BINS", requires = "node")]
        image_bins: Option<PathBuf>,
    },
    /// Build (or find in the per-machine cache) etcd and kube-apiserver and print their directory.
    Binaries,
    /// Start a plain-HTTP OCI registry on loopback (Debian's docker-registry), push Falco
    /// artifacts into it, print `export FALCO_REGISTRY=127.0.0.1:<port>` and run until interrupted.
    Registry {
        /// Directory of the registry's data, configuration and log.
        #[arg(long)]
        dir: PathBuf,
        /// Artifacts to push, as KIND:REPOSITORY:TAG:FILE (KIND is rulesfile or plugin).
        #[arg(long, value_name = "KIND:REPOSITORY:TAG:FILE", value_parser = parse_push)]
        push: Vec<Push>,
    },
    /// Build the project's images (and the test stand-ins) from the static musl binaries without
    /// a container engine, push them to a fresh local registry, read each back (manifest,
    /// config, layers) and print their references and sizes.
    Images {
        /// Directory of the static binaries (`make images` / hack/build-images.sh).
        #[arg(long, env = "FALCO_IMAGE_BINS")]
        bins: PathBuf,
        /// Directory for the registry's data.
        #[arg(long)]
        dir: PathBuf,
    },
    /// Server-side apply YAML manifests (files or directories) to the cluster of KUBECONFIG; for
    /// scripts on machines without kubectl.
    Apply {
        /// Manifest files or directories.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Namespace for namespaced objects that name none.
        #[arg(long, short, default_value = "default")]
        namespace: String,
    },
    /// Wait until an object's status condition has a status (like `kubectl wait --for
    /// condition=…`), printing its conditions; for scripts on machines without kubectl.
    Wait {
        /// KIND/NAME, KIND one of falco, component, rulesfile, plugin, config.
        #[arg(value_name = "KIND/NAME")]
        object: String,
        /// CONDITION[=STATUS] (STATUS defaults to True).
        #[arg(long = "for", value_name = "CONDITION[=STATUS]", value_parser = parse_expected)]
        expected: Expected,
        /// Namespace of the object.
        #[arg(long, short, default_value = "default")]
        namespace: String,
        /// Seconds to wait.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
}

/// A condition `wait` waits for.
#[derive(Clone, Debug)]
struct Expected {
    condition: String,
    status: String,
}

fn parse_expected(value: &str) -> Result<Expected, String> {
    let (condition, status) = value.split_once('=').unwrap_or((value, "True"));
    Ok(Expected {
        condition: condition.to_owned(),
        status: status.to_owned(),
    })
}

/// One `--push` of `registry`.
#[derive(Clone, Debug)]
struct Push {
    kind: ArtifactKind,
    repository: String,
    tag: String,
    file: PathBuf,
}

fn parse_push(value: &str) -> Result<Push, String> {
    let mut parts = value.splitn(4, ':');
    let (Some(kind), Some(repository), Some(tag), Some(file)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("expected KIND:REPOSITORY:TAG:FILE".to_owned());
    };
    let kind = <ArtifactKind as clap::ValueEnum>::from_str(kind, true)
        .map_err(|_| format!("unknown artifact kind {kind:?}: rulesfile or plugin"))?;
    Ok(Push {
        kind,
        repository: repository.to_owned(),
        tag: tag.to_owned(),
        file: PathBuf::from(file),
    })
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
            node,
            image_bins,
        } => {
            let node =
                node.then(|| image_bins.unwrap_or_else(falco_testenv::image::image_bins_dir));
            up(dir, no_crds, apply, namespace, node).await?
        }
        Command::Registry { dir, push } => registry(dir, push).await?,
        Command::Images { bins, dir } => images(bins, dir).await?,
        Command::Apply { paths, namespace } => {
            let client = kube::Client::try_default()
                .await
                .context("connecting (KUBECONFIG)")?;
            for path in &paths {
                let objects = read_manifests(path)?;
                for applied in apply_manifests(&client, &namespace, &objects).await? {
                    eprintln!("applied {applied}");
                }
            }
        }
        Command::Wait {
            object,
            expected,
            namespace,
            timeout,
        } => wait(&object, &expected, &namespace, timeout).await?,
    }
    Ok(())
}

async fn up(
    dir: PathBuf,
    no_crds: bool,
    apply: Vec<PathBuf>,
    namespace: String,
    node_images: Option<PathBuf>,
) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let cp = ControlPlane::start(StartOptions {
        controllers: node_images.is_some(),
        ..StartOptions::default()
    })
    .await
    .context("starting the control plane")?;
    let api_ready = started.elapsed();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let node = match &node_images {
        Some(bins) => Some(start_node(&cp, &dir, bins).await?),
        None => None,
    };
    let client = cp.client().await?;
    if !no_crds {
        install_crds(&client, &falco_api::all_crds())
            .await
            .context("installing the CRDs")?;
    }
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
    match &node {
        Some((_, registry, _)) => println!(
            "export KUBECONFIG={} FALCO_REGISTRY={}",
            kubeconfig.display(),
            registry.host()
        ),
        None => println!("export KUBECONFIG={}", kubeconfig.display()),
    }

    wait_for_shutdown().await?;
    // stderr may be gone by now (a pipe closed by the same Ctrl-C): never panic on it.
    let _ = writeln!(std::io::stderr(), "stopping the control plane");
    let _ = std::fs::remove_file(&kubeconfig);
    drop(node);
    cp.stop();
    Ok(())
}

/// The registry with the project's images, then the node pulling from it.
async fn start_node(
    cp: &ControlPlane,
    dir: &std::path::Path,
    bins: &std::path::Path,
) -> anyhow::Result<(falco_testenv::Node, Registry, Vec<(String, String)>)> {
    let registry = tokio::task::block_in_place(|| Registry::start(&dir.join("registry")))?;
    cp.adopt(registry.pid());
    let images = falco_testenv::image::push_project_images(registry.host(), "dev", bins)
        .await
        .context("building and pushing the project's images")?;
    for (_, reference) in &images {
        eprintln!("pushed image {reference}");
    }
    let started = std::time::Instant::now();
    let node = falco_testenv::Node::start(
        cp,
        falco_testenv::NodeOptions {
            registries: vec![registry.host().to_owned()],
            pause_image: format!("{}/falco-testenv-pause:dev", registry.host()),
            timeout: std::time::Duration::from_secs(120),
        },
    )
    .await
    .context("starting the node")?;
    eprintln!(
        "node {} Ready in {:.2} s (kubelet and containerd logs in {})",
        node.name(),
        started.elapsed().as_secs_f64(),
        node.dir().display()
    );
    Ok((node, registry, images))
}

async fn images(bins: PathBuf, dir: PathBuf) -> anyhow::Result<()> {
    let registry = tokio::task::block_in_place(|| Registry::start(&dir))?;
    let pushed = falco_testenv::image::push_project_images(registry.host(), "dev", &bins).await?;
    for (repository, reference) in &pushed {
        let size = falco_testenv::image::pulled_size(registry.host(), repository, "dev")
            .await
            .with_context(|| format!("reading {reference} back"))?;
        println!("{reference}\t{:.1} MiB", size as f64 / (1024.0 * 1024.0));
    }
    Ok(())
}

async fn registry(dir: PathBuf, pushes: Vec<Push>) -> anyhow::Result<()> {
    let registry = tokio::task::block_in_place(|| Registry::start(&dir))?;
    eprintln!(
        "OCI registry listening on http://{} (data and log in {})",
        registry.host(),
        dir.display()
    );
    for push in &pushes {
        let url = push_artifact(
            registry.host(),
            &push.repository,
            &push.tag,
            push.kind,
            &push.file,
        )
        .await?;
        eprintln!(
            "pushed {} as {}/{}:{} ({url})",
            push.file.display(),
            registry.host(),
            push.repository,
            push.tag
        );
    }
    println!("export FALCO_REGISTRY={}", registry.host());
    wait_for_shutdown().await?;
    drop(registry);
    Ok(())
}

async fn wait(
    object: &str,
    expected: &Expected,
    namespace: &str,
    timeout: u64,
) -> anyhow::Result<()> {
    use kube::api::{Api, ApiResource, DynamicObject};
    let (kind, name) = object
        .split_once('/')
        .context("expected KIND/NAME, e.g. falco/falco")?;
    let resource = match kind.to_ascii_lowercase().trim_end_matches('s') {
        "falco" => ApiResource::erase::<falco_api::Falco>(&()),
        "component" => ApiResource::erase::<falco_api::Component>(&()),
        "rulesfile" => ApiResource::erase::<falco_api::Rulesfile>(&()),
        "plugin" => ApiResource::erase::<falco_api::Plugin>(&()),
        "config" => ApiResource::erase::<falco_api::Config>(&()),
        other => {
            anyhow::bail!("unknown kind {other:?}: falco, component, rulesfile, plugin or config")
        }
    };
    let client = kube::Client::try_default()
        .await
        .context("connecting (KUBECONFIG)")?;
    let api: Api<DynamicObject> = Api::namespaced_with(client, namespace, &resource);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(timeout);
    let mut last = String::new();
    loop {
        if let Some(obj) = api.get_opt(name).await? {
            let conditions = obj.data["status"]["conditions"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            last = conditions
                .iter()
                .map(|c| {
                    format!(
                        "{}={} ({}: {})",
                        c["type"].as_str().unwrap_or("?"),
                        c["status"].as_str().unwrap_or("?"),
                        c["reason"].as_str().unwrap_or(""),
                        c["message"].as_str().unwrap_or("")
                    )
                })
                .collect::<Vec<_>>()
                .join("\n  ");
            let met = conditions.iter().any(|c| {
                c["type"].as_str() == Some(expected.condition.as_str())
                    && c["status"].as_str() == Some(expected.status.as_str())
            });
            if met {
                println!("{kind}/{name}:\n  {last}");
                return Ok(());
            }
        }
        if std::time::Instant::now() > deadline {
            anyhow::bail!(
                "{kind}/{name} has no {}={} after {timeout} s; conditions:\n  {last}",
                expected.condition,
                expected.status
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
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
