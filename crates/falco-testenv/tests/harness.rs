//! The harness itself: RBAC is enforced, namespaces isolate tests, and nothing outlives the
//! control plane, whether it is dropped or its process is killed.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use falco_testenv::{ControlPlane, StartOptions};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams};

/// Waits for `condition` with a deadline, polling; panics with `what` when it never holds.
fn wait_for(what: &str, deadline: Duration, mut condition: impl FnMut() -> bool) {
    let end = Instant::now() + deadline;
    while !condition() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn port_open(url: &str) -> bool {
    let addr = url
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    std::net::TcpStream::connect(addr).is_ok()
}

#[tokio::test]
async fn rbac_is_enforced_for_users_without_bindings() {
    let cp = falco_testenv::shared();
    let admin = cp.client().await.expect("admin");
    let ns = cp.namespace(&admin, "rbac").await.expect("namespace");
    Api::<ConfigMap>::namespaced(admin, &ns)
        .list(&ListParams::default())
        .await
        .expect("admin may list");
    let nobody = cp.client_as("nobody", None).await.expect("client");
    match Api::<ConfigMap>::namespaced(nobody, &ns)
        .list(&ListParams::default())
        .await
    {
        Err(kube::Error::Api(e)) => assert_eq!(e.code, 403, "{}", e.message),
        other => panic!("a user without bindings must be forbidden, got {other:?}"),
    }
}

#[tokio::test]
async fn namespaces_are_fresh_per_call() {
    let cp = falco_testenv::shared();
    let client = cp.client().await.expect("client");
    let a = cp.namespace(&client, "iso").await.expect("a");
    let b = cp.namespace(&client, "iso").await.expect("b");
    assert_ne!(a, b);
    assert!(a.starts_with("iso-"));
}

#[tokio::test]
async fn dropping_a_control_plane_stops_the_servers_and_removes_its_files() {
    let cp = ControlPlane::start(StartOptions::default())
        .await
        .expect("start");
    let dir = cp.dir().to_owned();
    let (server, etcd) = (cp.server_url().to_owned(), cp.etcd_url().to_owned());
    assert!(dir.join("kube-apiserver.log").is_file());
    assert!(port_open(&server) && port_open(&etcd));
    drop(cp);
    assert!(!dir.exists(), "{} is left behind", dir.display());
    assert!(!port_open(&server), "kube-apiserver still listens");
    assert!(!port_open(&etcd), "etcd still listens");
}

#[test]
fn killing_the_cli_with_sigkill_leaves_no_process_and_no_directory() {
    let out = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_falco-testenv"))
        .args(["up", "--dir"])
        .arg(out.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn falco-testenv up");
    // stderr names the server URL and the scratch directory; stdout says when it is ready.
    let stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let mut server = String::new();
    let mut dir = PathBuf::new();
    let mut seen = Vec::new();
    for line in stderr.lines() {
        let line = line.expect("line");
        seen.push(line.clone());
        if let Some(rest) = line.split("ready in ").nth(1) {
            server = rest
                .split_whitespace()
                .find(|w| w.starts_with("https://"))
                .unwrap_or_default()
                .to_owned();
            let logs = rest.split("logs in ").nth(1).unwrap_or_default();
            dir = PathBuf::from(logs.trim_end_matches(')'));
            break;
        }
    }
    assert!(
        server.starts_with("https://127.0.0.1:"),
        "no ready line; got server {server:?}; stderr:\n{}",
        seen.join("\n")
    );
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("ready line");
    assert!(line.starts_with("export KUBECONFIG="), "{line}");
    assert!(out.path().join("kubeconfig").is_file());
    assert!(dir.is_dir() && port_open(&server));

    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    wait_for(
        "the guard to stop kube-apiserver",
        Duration::from_secs(30),
        || !port_open(&server),
    );
    wait_for(
        "the guard to remove the scratch directory",
        Duration::from_secs(30),
        || !dir.exists(),
    );
}
