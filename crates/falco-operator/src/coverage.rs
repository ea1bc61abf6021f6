//! `falco-operator driver-coverage`: before rolling out a `kmod` instance, which nodes would get a
//! prebuilt driver from the repositories and which would have to compile one.
//!
//! The Nodes come from the cluster of the current kubeconfig (listed in pages of 500) or from
//! `kubectl get nodes -o json` in a file or on stdin. Each repository is asked for one signed
//! `index.json` per architecture present (never one request per kernel); the matching itself is
//! [`falco_core::driver::coverage`], which also says where a guess from `nodeInfo` cannot be exact.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::Path;
use std::time::Duration;

use falco_core::driver::coverage::{self, NodeFacts, RepoFiles};
use falco_core::driver::{Arch, repo_dir_url};
use falco_core::index::{self, DriverIndex, INDEX_FILE, SIGNATURE_FILE};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams};

use crate::cli::{CoverageArgs, ReportFormat};
use crate::{Error, Result};

/// Largest `index.json` (or signature) read.
const INDEX_LIMIT: usize = 64 * 1024 * 1024;

fn fail(step: &'static str, reason: impl std::fmt::Display) -> Error {
    Error::Coverage {
        step,
        reason: reason.to_string(),
    }
}

/// What `driver-coverage` needs.
#[derive(Debug, Clone)]
pub struct CoverageRequest {
    /// `kubectl get nodes -o json` output (`-` = stdin); the cluster when absent.
    pub nodes_file: Option<std::path::PathBuf>,
    /// Repositories, in order.
    pub repos: Vec<String>,
    /// Driver version.
    pub driver_version: String,
    /// Public key that must have signed each index.
    pub trusted_key: Option<ed25519_dalek::VerifyingKey>,
    /// Timeout of each request.
    pub timeout: Duration,
}

/// The facts coverage needs from a Node object.
pub fn node_facts(node: &Node) -> NodeFacts {
    let info = node.status.as_ref().and_then(|s| s.node_info.as_ref());
    NodeFacts {
        name: node.metadata.name.clone().unwrap_or_default(),
        os_image: info.map(|i| i.os_image.clone()).unwrap_or_default(),
        kernel_release: info.map(|i| i.kernel_version.clone()).unwrap_or_default(),
        architecture: info.map(|i| i.architecture.clone()).unwrap_or_default(),
        minikube_version: node
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(coverage::MINIKUBE_VERSION_LABEL))
            .cloned(),
    }
}

/// Parses `kubectl get nodes -o json` (a `List` or `NodeList`, or a single `Node`).
pub fn parse_nodes(json: &[u8]) -> Result<Vec<NodeFacts>> {
    let value: serde_json::Value =
        serde_json::from_slice(json).map_err(|e| fail("reading the Nodes", e))?;
    let items = match value.get("items") {
        Some(items) => items.clone(),
        None => serde_json::Value::Array(vec![value]),
    };
    let nodes: Vec<Node> = serde_json::from_value(items).map_err(|e| {
        fail(
            "reading the Nodes (expected `kubectl get nodes -o json`)",
            e,
        )
    })?;
    Ok(nodes.iter().map(node_facts).collect())
}

async fn cluster_nodes() -> Result<Vec<NodeFacts>> {
    let client = kube::Client::try_default()
        .await
        .map_err(|e| fail("connecting to the cluster", e))?;
    let api: Api<Node> = Api::all(client);
    let mut facts = Vec::new();
    let mut params = ListParams::default().limit(500);
    loop {
        let page = api
            .list(&params)
            .await
            .map_err(|e| fail("listing the Nodes", e))?;
        facts.extend(page.items.iter().map(node_facts));
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => return Ok(facts),
        }
    }
}

/// GET of a small file; `None` on 404/403 (S3 answers 403 for a missing key).
async fn get(client: &reqwest::Client, url: &str) -> Result<Option<Vec<u8>>> {
    let resp = client
        .get(url)
        .send()
        .await
        .map_err(|e| fail("fetching an index", format!("GET {url}: {e}")))?;
    match resp.status().as_u16() {
        403 | 404 | 410 => return Ok(None),
        s if !(200..300).contains(&s) => {
            return Err(fail("fetching an index", format!("GET {url}: HTTP {s}")));
        }
        _ => {}
    }
    if resp
        .content_length()
        .is_some_and(|l| l > INDEX_LIMIT as u64)
    {
        return Err(fail("fetching an index", format!("GET {url}: too large")));
    }
    let body = resp
        .bytes()
        .await
        .map_err(|e| fail("fetching an index", format!("GET {url}: {e}")))?;
    Ok(Some(body.to_vec()))
}

/// One repository's files for a version and arch, and a warning when it cannot tell.
async fn repo_files(
    client: &reqwest::Client,
    req: &CoverageRequest,
    repo: &str,
    arch: Arch,
) -> (RepoFiles, Option<String>) {
    let dir = repo_dir_url(repo, &req.driver_version, arch);
    let index_url = format!("{dir}/{INDEX_FILE}");
    let index: Result<Option<DriverIndex>> = async {
        let Some(bytes) = get(client, &index_url).await? else {
            return Ok(None);
        };
        let parsed = match &req.trusted_key {
            Some(key) => {
                let sig_url = format!("{dir}/{SIGNATURE_FILE}");
                let sig = get(client, &sig_url)
                    .await?
                    .ok_or_else(|| fail("verifying an index", format!("{sig_url} is missing")))?;
                // The loader's rules: signed by the key, for this version and arch, not
                // expired (no serial history here: a report remembers nothing).
                index::verify(&bytes, &String::from_utf8_lossy(&sig), key).and_then(|index| {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs());
                    index
                        .check_fresh(&index::Freshness {
                            version: &req.driver_version,
                            arch: arch.as_str(),
                            now,
                            seen: None,
                        })
                        .map(|_| index)
                })
            }
            None => DriverIndex::parse(&bytes),
        };
        parsed
            .map(Some)
            .map_err(|e| fail("verifying an index", format!("{index_url}: {e}")))
    }
    .await;
    match index {
        Ok(Some(index)) => (
            RepoFiles {
                entries: index.files,
            },
            None,
        ),
        Ok(None) => (
            RepoFiles::default(),
            Some(format!(
                "{index_url}: no index.json, so this repository's files for {arch} are unknown \
                 (coverage asks for one index per version and arch, never one file per kernel)"
            )),
        ),
        Err(e) => (RepoFiles::default(), Some(e.to_string())),
    }
}

/// `driver-coverage` from its command line: the rendered report.
pub async fn command(args: &CoverageArgs) -> Result<String> {
    let trusted_key = match &args.trusted_key {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| e.to_string())
                .and_then(|text| index::parse_public_key(&text).map_err(|e| e.to_string()))
                .map_err(|e| {
                    fail(
                        "reading the trusted key",
                        format!("{}: {e}", path.display()),
                    )
                })?,
        ),
        None => None,
    };
    let report = run(&CoverageRequest {
        nodes_file: args.nodes.clone(),
        repos: args.repos.clone(),
        driver_version: args.driver_version.clone(),
        trusted_key,
        timeout: Duration::from_secs(args.timeout_seconds),
    })
    .await?;
    Ok(match args.format {
        ReportFormat::Table => coverage::render_table(&report),
        ReportFormat::Json => {
            let mut json = serde_json::to_string_pretty(&report)
                .map_err(|e| fail("rendering the report", e))?;
            json.push('\n');
            json
        }
    })
}

/// Builds the coverage report.
pub async fn run(req: &CoverageRequest) -> Result<coverage::Report> {
    let nodes = match &req.nodes_file {
        Some(path) if path == Path::new("-") => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .map_err(|e| fail("reading the Nodes from stdin", e))?;
            parse_nodes(&buf)?
        }
        Some(path) => parse_nodes(
            &std::fs::read(path)
                .map_err(|e| fail("reading the Nodes", format!("{}: {e}", path.display())))?,
        )?,
        None => cluster_nodes().await?,
    };
    let client = reqwest::Client::builder()
        .user_agent(concat!(
            "falco-operator/",
            env!("CARGO_PKG_VERSION"),
            " driver-coverage"
        ))
        .timeout(req.timeout)
        .build()
        .map_err(|e| fail("building the HTTP client", e))?;
    let arches: std::collections::BTreeSet<Arch> = nodes
        .iter()
        .filter_map(|n| n.architecture.parse().ok())
        .collect();
    let fetches = arches
        .iter()
        .flat_map(|&arch| req.repos.iter().map(move |repo| (arch, repo.clone())));
    let fetched = futures::future::join_all(fetches.map(|(arch, repo)| {
        let client = &client;
        async move { (arch, repo_files(client, req, &repo, arch).await) }
    }))
    .await;
    let mut files: BTreeMap<Arch, Vec<RepoFiles>> = BTreeMap::new();
    let mut warnings = Vec::new();
    for (arch, (repo_files, warning)) in fetched {
        files.entry(arch).or_default().push(repo_files);
        warnings.extend(warning);
    }
    let mut report = coverage::report(&req.driver_version, &req.repos, &nodes, |arch| {
        files.remove(&arch).unwrap_or_default()
    });
    report.warnings = warnings;
    Ok(report)
}
