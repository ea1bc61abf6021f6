//! `falco-operator driver-coverage` against the real API server (Nodes with their `nodeInfo`)
//! and a real driver repository (this project's server, in process, over loopback HTTP) that
//! holds some of the cluster's kernels in a signed index.

use std::process::{Command, Stdio};
use std::sync::Arc;

use falco_driver_repo::serve::{AppState, ServeConfig, router};
use falco_driver_repo::storage::{Storage, StorageOptions};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

const V: &str = "8.0.0+driver";

/// A Node with the `nodeInfo` a kubelet would report.
async fn node(api: &Api<Node>, name: &str, os: &str, kr: &str, arch: &str, labels: Value) {
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
    }))
    .unwrap();
    api.create(&PostParams::default(), &node).await.unwrap();
    let info = json!({
        "machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": kr, "osImage": os,
        "containerRuntimeVersion": "containerd://2.0.0", "kubeletVersion": "v1.37.2",
        "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": arch,
    });
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"nodeInfo": info}})),
    )
    .await
    .unwrap();
}

/// Publishes drivers with these names (x86_64) and serves the repository; returns its URL,
/// the public key file and the server's metrics URL.
async fn repository(files: &[&str], dir: &std::path::Path) -> (String, std::path::PathBuf) {
    let src = dir.join("src").join(V).join("x86_64");
    std::fs::create_dir_all(&src).unwrap();
    for (i, file) in files.iter().enumerate() {
        std::fs::write(src.join(file), vec![i as u8; 100]).unwrap();
    }
    let key = falco_core::index::signing_key_from_seed([9; 32]);
    let public = dir.join("repo.pub");
    std::fs::write(
        &public,
        falco_core::index::encode_public_key(&key.verifying_key()),
    )
    .unwrap();
    let storage = Storage::open(&StorageOptions {
        url: format!("file://{}", dir.join("store").display()),
        ..StorageOptions::default()
    })
    .unwrap();
    let signer = falco_driver_repo::publish::Signer {
        key: key.clone(),
        validity: falco_driver_repo::publish::DEFAULT_INDEX_VALIDITY,
    };
    falco_driver_repo::publish::publish(&storage, &dir.join("src"), &signer, false)
        .await
        .unwrap();
    let state = Arc::new(AppState::new(storage, None, ServeConfig::default()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), public)
}

/// Requests for index files the server answered, from its metrics.
async fn index_requests(base: &str) -> u64 {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| {
            l.starts_with("driver_repo_http_requests_total{") && l.contains("kind=\"index\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

fn coverage(kubeconfig: &std::path::Path, args: &[&str], stdin: Option<&[u8]>) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_falco-operator"));
    cmd.env_clear()
        .env("KUBECONFIG", kubeconfig)
        .arg("driver-coverage")
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run falco-operator");
    if let Some(input) = stdin {
        use std::io::Write as _;
        child.stdin.take().unwrap().write_all(input).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn coverage_of_a_cluster_against_a_signed_repository() {
    let cp = falco_testenv::shared();
    let client = cp.client().await.unwrap();
    let nodes: Api<Node> = Api::all(client);
    let gcp = "5.15.0-1049-gcp";
    for i in 0..3 {
        node(
            &nodes,
            &format!("ubuntu-{i}"),
            "Ubuntu 20.04.6 LTS",
            gcp,
            "amd64",
            json!({}),
        )
        .await;
    }
    let br = "Bottlerocket OS 1.19.2 (aws-k8s-1.28)";
    for i in 0..2 {
        node(
            &nodes,
            &format!("br-{i}"),
            br,
            "5.15.148",
            "amd64",
            json!({}),
        )
        .await;
    }
    let newer = "Bottlerocket OS 1.20.0 (aws-k8s-1.29)";
    node(&nodes, "br-new", newer, "5.15.160", "amd64", json!({})).await;
    let labels = json!({"minikube.k8s.io/version": "v1.32.0"});
    node(
        &nodes,
        "mk",
        "Buildroot 2023.02.9",
        "5.10.207",
        "amd64",
        labels,
    )
    .await;
    let cos = "Container-Optimized OS from Google";
    node(&nodes, "cos", cos, "6.1.58+", "amd64", json!({})).await;
    node(&nodes, "arm", "Ubuntu 22.04.4 LTS", gcp, "arm64", json!({})).await;

    let dir = tempfile::tempdir().unwrap();
    let (base, public) = repository(
        &[
            "falco_ubuntu-gcp_5.15.0-1049-gcp_57~20.04.1.ko",
            "falco_bottlerocket_5.15.148_1_1.19.2-aws.ko",
            "falco_minikube_5.10.207_1_1.32.0.ko",
        ],
        dir.path(),
    )
    .await;
    let repo = format!("{base}/driver");
    let key = public.to_str().unwrap();
    let args = ["--repo", &repo, "--driver-version", V, "--trusted-key", key];

    let before = index_requests(&base).await;
    let json_out = coverage(
        cp.kubeconfig_path(),
        &[&args[..], &["--format", "json"]].concat(),
        None,
    );
    // One index (and its signature) per architecture present, never one request per kernel:
    // x86_64 index + signature, aarch64 index (absent).
    assert_eq!(index_requests(&base).await - before, 3);
    let report: Value = serde_json::from_str(&json_out).unwrap();
    assert_eq!(report["nodes"], 9, "{report:#}");
    assert_eq!(
        report["prebuilt"], 3,
        "bottlerocket ×2 and minikube: {report:#}"
    );
    assert_eq!(
        report["likely"], 3,
        "ubuntu ×3, kernel version unknown: {report:#}"
    );
    assert_eq!(
        report["compile"], 2,
        "newer bottlerocket, arm64 ubuntu: {report:#}"
    );
    assert_eq!(report["notApplicable"], 1, "{report:#}");
    let warnings = report["warnings"].as_array().unwrap();
    assert!(
        warnings.iter().any(|w| w
            .as_str()
            .unwrap()
            .contains("aarch64/index.json: no index.json")),
        "{warnings:?}"
    );
    let groups = report["groups"].as_array().unwrap();
    let ubuntu = groups
        .iter()
        .find(|g| g["target"] == "ubuntu-gcp" && g["arch"] == "x86_64")
        .unwrap();
    assert_eq!(ubuntu["verdict"], "likely");
    assert_eq!(ubuntu["precision"], "release-only");
    assert_eq!(ubuntu["nodes"], 3);

    // The same from `kubectl get nodes -o json` on stdin, as a table.
    let list = nodes.list(&Default::default()).await.unwrap();
    let list = serde_json::to_vec(&json!({"kind": "List", "items": list.items})).unwrap();
    let table = coverage(
        cp.kubeconfig_path(),
        &[&args[..], &["--nodes", "-"]].concat(),
        Some(&list),
    );
    assert!(
        table.contains("9 nodes: 3 prebuilt, 3 likely prebuilt, 2 would compile, 1 not applicable"),
        "{table}"
    );
    assert!(
        table.contains("falco_bottlerocket_5.15.148_1_1.19.2-aws.ko"),
        "{table}"
    );

    // A repository whose index does not verify with the key is reported, not trusted.
    let other = falco_core::index::signing_key_from_seed([1; 32]);
    std::fs::write(
        &public,
        falco_core::index::encode_public_key(&other.verifying_key()),
    )
    .unwrap();
    let table = coverage(cp.kubeconfig_path(), &args, None);
    assert!(
        table.contains("0 prebuilt, 0 likely prebuilt, 8 would compile"),
        "{table}"
    );
    assert!(table.contains("does not verify"), "{table}");
}
