//! Two operator processes (the real binary) with leader election on the harness's API server:
//! only the leader reconciles; when it is killed, the standby takes over within the issue's bound
//! (15 s); a graceful SIGTERM releases the Lease. And the admin endpoints of the binary.

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use serde_json::json;
use support::*;

const LEASE: &str = "falco-operator-test";

struct Operator {
    child: Child,
}

impl Operator {
    fn spawn(kubeconfig: &Path, ns: &str, name: &str, logs: &Path) -> Self {
        let log = std::fs::File::create(logs.join(format!("{name}.log"))).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_falco-operator"))
            .args([
                "run",
                "--namespace",
                ns,
                "--leader-elect",
                "--leader-election-id",
                LEASE,
                "--leader-election-namespace",
                ns,
                "--leader-election-lease-seconds",
                "4",
                "--metrics-bind-address",
                "0",
                "--health-probe-bind-address",
                "0",
            ])
            .env("KUBECONFIG", kubeconfig)
            .env("POD_NAME", name)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn falco-operator");
        Self { child }
    }

    fn identity(&self) -> String {
        // The binary's identity: `<POD_NAME>-<pid>`.
        format!("-{}", self.child.id())
    }

    fn terminate(&mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn holder(leases: &Api<Lease>) -> Option<String> {
    leases
        .get_opt(LEASE)
        .await
        .ok()??
        .spec?
        .holder_identity
        .filter(|h| !h.is_empty())
}

#[tokio::test]
async fn the_standby_takes_over_when_the_leader_dies_and_a_clean_exit_releases_the_lease() {
    let (client, ns) = setup("leader").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, falco_testenv::shared().kubeconfig_yaml()).expect("kubeconfig");
    let mut operators = vec![
        Operator::spawn(&kubeconfig, &ns, "op-a", dir.path()),
        Operator::spawn(&kubeconfig, &ns, "op-b", dir.path()),
    ];
    let leases = Api::<Lease>::namespaced(client.clone(), &ns);
    let leader_identity = wait_for("a leader", || holder(&leases)).await;
    let leader = operators
        .iter()
        .position(|o| leader_identity.ends_with(&o.identity()))
        .unwrap_or_else(|| panic!("holder {leader_identity} is neither operator"));

    create_falco(&client, &ns, "first", json!({})).await;
    wait_falco_condition(&client, &ns, "first", "Reconciled", "True").await;

    // Kill the leader outright: no release, the standby must wait for the Lease to expire.
    let mut dead = operators.remove(leader);
    dead.child.kill().expect("kill leader");
    dead.child.wait().expect("reap");
    let killed_at = tokio::time::Instant::now();
    create_falco(&client, &ns, "second", json!({})).await;
    let api = Api::<falco_api::Falco>::namespaced(client.clone(), &ns);
    wait_within(
        Duration::from_secs(15),
        "the standby reconciles within 15 s",
        &mut || {
            let api = api.clone();
            async move {
                let f = api.get_opt("second").await.ok()??;
                condition(f.status.as_ref(), "Reconciled").filter(|(s, _)| s == "True")
            }
        },
    )
    .await;
    let new_holder = holder(&leases).await.expect("holder");
    assert!(
        new_holder.ends_with(&operators[0].identity()),
        "{new_holder}"
    );
    eprintln!("standby took over in {:?}", killed_at.elapsed());

    // SIGTERM: the survivor exits cleanly and releases the Lease.
    operators[0].terminate();
    let status = operators[0].child.wait().expect("wait");
    let log = std::fs::read_to_string(dir.path().join("op-a.log")).unwrap_or_default()
        + &std::fs::read_to_string(dir.path().join("op-b.log")).unwrap_or_default();
    assert!(status.success(), "exit {status}; logs:\n{log}");
    assert_eq!(holder(&leases).await, None, "Lease released on shutdown");
    assert!(
        log.contains("Starting falco-operator"),
        "one startup line: {log}"
    );
}

/// `GET path` on 127.0.0.1:`port` (HTTP/1.0): (status code, body), or `None` when nothing answers.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let code = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((code, body))
}

#[tokio::test]
async fn the_admin_server_answers_health_readiness_and_metrics() {
    let (client, ns) = setup("admin").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, falco_testenv::shared().kubeconfig_yaml()).expect("kubeconfig");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let log = std::fs::File::create(dir.path().join("op.log")).expect("log");
    let child = Command::new(env!("CARGO_BIN_EXE_falco-operator"))
        .args(["run", "--namespace", &ns, "--metrics-bind-address", "0"])
        .args(["--health-probe-bind-address", &format!("127.0.0.1:{port}")])
        .env("KUBECONFIG", &kubeconfig)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn");
    let mut op = Operator { child };
    wait_for("/readyz 200", || async {
        (http_get(port, "/readyz")?.0 == 200).then_some(())
    })
    .await;
    assert_eq!(http_get(port, "/healthz").map(|r| r.0), Some(200));
    create_falco(&client, &ns, "falco", json!({})).await;
    wait_falco_condition(&client, &ns, "falco", "Reconciled", "True").await;
    let (code, metrics) = http_get(port, "/metrics").expect("metrics");
    assert_eq!(code, 200);
    for metric in [
        r#"falco_operator_reconciles_total{controller="falco",result="ok"}"#,
        "falco_operator_reconcile_duration_seconds_bucket",
        r#"falco_operator_api_requests_total{verb="patch"}"#,
        r#"falco_operator_api_requests_total{verb="watch"}"#,
    ] {
        assert!(metrics.contains(metric), "{metric} in:\n{metrics}");
    }
    op.terminate();
    let status = op.child.wait().expect("wait");
    assert!(status.success(), "SIGTERM exits cleanly: {status}");
}
