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
        /// Directory of the static musl binaries the images are built from (`make images`);
        /// used with --node only.
        #[arg(long, env = "FALCO_IMAGE_BINS")]
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
    /// Print objects as `kubectl get` does (the API server's table: the CRD's printer columns),
    /// or as JSON; for scripts on machines without kubectl.
    Get {
        /// KIND or KIND/NAME, KIND one of falco, component, rulesfile, plugin, config,
        /// nodeartifacts, daemonset, deployment, pod.
        #[arg(value_name = "KIND[/NAME]")]
        object: String,
        /// Namespace of the objects.
        #[arg(long, short, default_value = "default")]
        namespace: String,
        /// `table` (the printer columns) or `json` (the object, or a list of them).
        #[arg(long, short, default_value = "table", value_parser = ["table", "json"])]
        output: String,
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
        Command::Get {
            object,
            namespace,
            output,
        } => get(&object, &namespace, &output).await?,
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
    use kube::api::{Api, DynamicObject};
    let (kind, name) = object
        .split_once('/')
        .context("expected KIND/NAME, e.g. falco/falco")?;
    let resource = resource_of(kind)?;
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

/// The API resource of a kind name as `wait` and `get` take it (singular or plural).
fn resource_of(kind: &str) -> anyhow::Result<kube::api::ApiResource> {
    use kube::api::ApiResource;
    Ok(match kind.to_ascii_lowercase().trim_end_matches('s') {
        "falco" => ApiResource::erase::<falco_api::Falco>(&()),
        "component" => ApiResource::erase::<falco_api::Component>(&()),
        "rulesfile" => ApiResource::erase::<falco_api::Rulesfile>(&()),
        "plugin" => ApiResource::erase::<falco_api::Plugin>(&()),
        "config" => ApiResource::erase::<falco_api::Config>(&()),
        "nodeartifact" => ApiResource::erase::<falco_api::NodeArtifacts>(&()),
        "daemonset" => ApiResource::erase::<k8s_openapi::api::apps::v1::DaemonSet>(&()),
        "deployment" => ApiResource::erase::<k8s_openapi::api::apps::v1::Deployment>(&()),
        "pod" => ApiResource::erase::<k8s_openapi::api::core::v1::Pod>(&()),
        other => anyhow::bail!(
            "unknown kind {other:?}: falco, component, rulesfile, plugin, config, nodeartifacts, daemonset, deployment or pod"
        ),
    })
}

/// `get`: one object or every object of a kind in a namespace, as the API server's table
/// (`Accept: …;as=Table`, the columns `kubectl get` prints) or as JSON.
async fn get(object: &str, namespace: &str, output: &str) -> anyhow::Result<()> {
    use kube::api::{Api, DynamicObject, GetParams, ListParams};
    let (kind, name) = match object.split_once('/') {
        Some((kind, name)) => (kind, Some(name)),
        None => (object, None),
    };
    let resource = resource_of(kind)?;
    let client = kube::Client::try_default()
        .await
        .context("connecting (KUBECONFIG)")?;
    if output == "json" {
        let api: Api<DynamicObject> = Api::namespaced_with(client, namespace, &resource);
        let value = match name {
            Some(name) => serde_json::to_value(api.get(name).await?)?,
            None => serde_json::to_value(api.list(&ListParams::default()).await?.items)?,
        };
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    let url = Api::<DynamicObject>::namespaced_with(client.clone(), namespace, &resource)
        .resource_url()
        .to_owned();
    let request = kube::core::Request::new(url);
    let mut request = match name {
        Some(name) => request.get(name, &GetParams::default())?,
        None => request.list(&ListParams::default())?,
    };
    request.headers_mut().insert(
        http::header::ACCEPT,
        http::HeaderValue::from_static("application/json;as=Table;v=v1;g=meta.k8s.io"),
    );
    let table: serde_json::Value = client.request(request).await?;
    print!("{}", render_table(&table, time::OffsetDateTime::now_utc()));
    Ok(())
}

/// A `meta.k8s.io/v1` Table as `kubectl get` prints it: the priority-0 columns, upper-case
/// headers, left-aligned cells separated by three spaces, dates as ages.
fn render_table(table: &serde_json::Value, now: time::OffsetDateTime) -> String {
    let columns: Vec<(usize, &serde_json::Value)> = table["columnDefinitions"]
        .as_array()
        .map(|c| c.iter().enumerate().collect())
        .unwrap_or_default();
    let shown: Vec<(usize, &serde_json::Value)> = columns
        .into_iter()
        .filter(|(_, c)| c["priority"].as_i64().unwrap_or(0) == 0)
        .collect();
    let mut rows: Vec<Vec<String>> = vec![
        shown
            .iter()
            .map(|(_, c)| c["name"].as_str().unwrap_or("").to_ascii_uppercase())
            .collect(),
    ];
    for row in table["rows"].as_array().into_iter().flatten() {
        rows.push(
            shown
                .iter()
                .map(|(i, c)| {
                    let cell = &row["cells"][*i];
                    match cell {
                        serde_json::Value::Null => "<none>".to_owned(),
                        serde_json::Value::String(s) if c["type"] == "date" => age(s, now),
                        serde_json::Value::String(s) if s.is_empty() => "<none>".to_owned(),
                        serde_json::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    }
                })
                .collect(),
        );
    }
    if rows.len() == 1 {
        return "No resources found.\n".to_owned();
    }
    let widths: Vec<usize> = (0..shown.len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(line.join("   ").trim_end());
        out.push('\n');
    }
    out
}

/// An RFC 3339 timestamp as an age (`42s`, `3m`, `5h`, `2d`), as kubectl shows dates.
fn age(timestamp: &str, now: time::OffsetDateTime) -> String {
    let Ok(then) =
        time::OffsetDateTime::parse(timestamp, &time::format_description::well_known::Rfc3339)
    else {
        return timestamp.to_owned();
    };
    let secs = (now - then).whole_seconds().max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_prints_as_kubectl_prints_it() {
        let table = serde_json::json!({
            "kind": "Table",
            "columnDefinitions": [
                {"name": "Name", "type": "string", "priority": 0},
                {"name": "Driver", "type": "string", "priority": 0},
                {"name": "Hidden", "type": "string", "priority": 1},
                {"name": "Ready", "type": "integer", "priority": 0},
                {"name": "Age", "type": "date", "priority": 0},
            ],
            "rows": [
                {"cells": ["falco", "False", "x", 0, "2026-12-03T17:00:00Z"]},
                {"cells": ["other-instance", null, "y", null, "2026-12-03T16:58:00Z"]},
            ],
        });
        let now = time::OffsetDateTime::parse(
            "2026-12-03T17:00:42Z",
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        assert_eq!(
            render_table(&table, now),
            "NAME             DRIVER   READY    AGE\n\
             falco            False    0        42s\n\
             other-instance   <none>   <none>   2m\n"
        );
        let empty =
            serde_json::json!({"columnDefinitions": table["columnDefinitions"], "rows": []});
        assert_eq!(render_table(&empty, now), "No resources found.\n");
    }

    #[test]
    fn an_unknown_kind_is_refused_with_the_known_ones() {
        let err = resource_of("services").unwrap_err().to_string();
        assert!(
            err.contains("unknown kind \"service\"") && err.contains("daemonset"),
            "{err}"
        );
        assert_eq!(
            resource_of("NodeArtifacts").unwrap().plural,
            "nodeartifacts"
        );
        assert_eq!(resource_of("falcos").unwrap().kind, "Falco");
    }
}
