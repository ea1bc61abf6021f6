//! Starting, using and stopping etcd + kube-apiserver.

use std::fs::File;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use tempfile::TempDir;

use crate::certs::{Authority, Pem, service_account_keys};
use crate::{Binaries, Error, locate_binaries};

/// Field manager the harness applies CRDs with.
const FIELD_MANAGER: &str = "falco-testenv";
/// How often readiness is polled while waiting on a deadline.
const POLL: Duration = Duration::from_millis(50);

/// The guard: reads PIDs, one per line, until its stdin closes (this process closed it or
/// died), then terminates them, escalates to SIGKILL after 5 s and removes the directory.
/// It ignores INT/TERM/HUP so a Ctrl-C that hits the whole process group cannot skip clean-up.
const GUARD_SCRIPT: &str = r#"
trap '' INT TERM HUP
dir=$1
pids=
while read -r pid; do pids="$pids $pid"; done
if [ -n "$pids" ]; then
  kill -TERM $pids 2>/dev/null
  i=0
  while [ $i -lt 50 ]; do
    alive=
    for p in $pids; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ -z "$alive" ] && break
    sleep 0.1
    i=$((i + 1))
  done
  kill -KILL $pids 2>/dev/null
fi
rm -rf "$dir"
"#;

/// How to start a control plane.
#[derive(Clone, Debug)]
pub struct StartOptions {
    /// Binaries to run; found with [`locate_binaries`] when `None`.
    pub binaries: Option<Binaries>,
    /// Deadline for each server to become ready.
    pub timeout: Duration,
    /// Extra kube-apiserver flags, e.g. `--v=4`.
    pub extra_apiserver_args: Vec<String>,
    /// Also run kube-controller-manager and kube-scheduler, with the API server set up for
    /// pods (ServiceAccount admission, the Node authorizer and NodeRestriction), so that a
    /// [`crate::Node`] can join. Without it the control plane stores objects and nothing acts
    /// on them, which is all most tests need.
    pub controllers: bool,
}

impl Default for StartOptions {
    fn default() -> Self {
        Self {
            binaries: None,
            timeout: Duration::from_secs(90),
            extra_apiserver_args: Vec::new(),
            controllers: false,
        }
    }
}

/// A running etcd + kube-apiserver. Dropping it stops both and removes every file it wrote.
pub struct ControlPlane {
    dir: TempDir,
    server: String,
    port: u16,
    controllers: bool,
    etcd_url: String,
    serving_ca_pem: String,
    client_ca: Authority,
    admin: Pem,
    kubeconfig_path: PathBuf,
    processes: Mutex<Vec<Child>>,
    guard: Mutex<Option<(Child, ChildStdin)>>,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("server", &self.server)
            .field("etcd", &self.etcd_url)
            .field("dir", &self.dir.path())
            .finish_non_exhaustive()
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_owned(),
        source,
    }
}

fn write_file(path: &Path, contents: &str) -> Result<(), Error> {
    std::fs::write(path, contents).map_err(io_err(path))
}

fn free_port() -> Result<u16, Error> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(io_err(Path::new("127.0.0.1:0")))?;
    let port = listener
        .local_addr()
        .map_err(io_err(Path::new("127.0.0.1:0")))?
        .port();
    Ok(port)
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Where the servers keep their files: tmpfs when there is one (etcd writes a lot), else the
/// system's temporary directory.
fn scratch_dir() -> Result<TempDir, Error> {
    let builder = || {
        let mut b = tempfile::Builder::new();
        b.prefix("falco-testenv-");
        b
    };
    builder().tempdir_in("/dev/shm").or_else(|_| {
        let base = std::env::temp_dir();
        builder().tempdir_in(&base).map_err(io_err(&base))
    })
}

impl ControlPlane {
    /// Starts etcd and kube-apiserver and waits until the API server is ready and namespace
    /// `default` exists.
    pub async fn start(mut options: StartOptions) -> Result<Self, Error> {
        let binaries = match options.binaries.take() {
            Some(b) => b,
            None => tokio::task::spawn_blocking(locate_binaries)
                .await
                .map_err(|e| Error::Binaries(e.to_string()))??,
        };
        let dir = scratch_dir()?;
        let root = dir.path().to_owned();

        let mut guard = Command::new("sh")
            .arg("-c")
            .arg(GUARD_SCRIPT)
            .arg("falco-testenv-guard")
            .arg(&root)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| Error::Spawn {
                name: "sh (clean-up guard)",
                binary: "sh".into(),
                source,
            })?;
        let guard_stdin = guard.stdin.take().expect("guard stdin is piped");

        let serving_ca = Authority::new("falco-testenv-serving-ca")?;
        let serving = serving_ca.serving()?;
        let client_ca = Authority::new("falco-testenv-client-ca")?;
        let admin = client_ca.client("admin", Some("system:masters"))?;
        let (sa_key, sa_pub) = service_account_keys()?;
        let certs = root.join("certs");
        std::fs::create_dir_all(&certs).map_err(io_err(&certs))?;
        for (name, contents) in [
            ("serving.crt", serving.cert.as_str()),
            ("serving.key", serving.key.as_str()),
            ("client-ca.crt", client_ca.cert_pem.as_str()),
            ("serving-ca.crt", serving_ca.cert_pem.as_str()),
            ("sa.key", sa_key.as_str()),
            ("sa.pub", sa_pub.as_str()),
        ] {
            write_file(&certs.join(name), contents)?;
        }

        let cp = Self {
            server: String::new(),
            port: 0,
            controllers: options.controllers,
            etcd_url: String::new(),
            serving_ca_pem: serving_ca.cert_pem.clone(),
            client_ca,
            admin,
            kubeconfig_path: root.join("kubeconfig"),
            processes: Mutex::new(Vec::new()),
            guard: Mutex::new(Some((guard, guard_stdin))),
            dir,
        };
        cp.boot(&binaries, &options).await
    }

    async fn boot(mut self, binaries: &Binaries, options: &StartOptions) -> Result<Self, Error> {
        let root = self.dir.path().to_owned();
        let certs = root.join("certs");

        let (client_port, peer_port) = (free_port()?, free_port()?);
        self.etcd_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let etcd_log = root.join("etcd.log");
        self.spawn(
            "etcd",
            &binaries.etcd,
            &[
                "--name=testenv".to_owned(),
                format!("--data-dir={}", root.join("etcd").display()),
                format!("--listen-client-urls={}", self.etcd_url),
                format!("--advertise-client-urls={}", self.etcd_url),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster=testenv={peer_url}"),
                "--unsafe-no-fsync=true".to_owned(),
                "--logger=zap".to_owned(),
                "--log-level=warn".to_owned(),
            ],
            &etcd_log,
        )?;
        self.wait_etcd(&etcd_log, options.timeout).await?;

        let port = free_port()?;
        self.port = port;
        self.server = format!("https://127.0.0.1:{port}");
        let mut args = vec![
            format!("--etcd-servers={}", self.etcd_url),
            format!("--cert-dir={}", certs.display()),
            format!("--tls-cert-file={}", certs.join("serving.crt").display()),
            format!(
                "--tls-private-key-file={}",
                certs.join("serving.key").display()
            ),
            format!("--secure-port={port}"),
            "--bind-address=127.0.0.1".to_owned(),
            // The default reconciler refuses a loopback address for the `kubernetes` Service.
            "--endpoint-reconciler-type=none".to_owned(),
            "--advertise-address=127.0.0.1".to_owned(),
            "--service-cluster-ip-range=10.0.0.0/16".to_owned(),
            "--allow-privileged=true".to_owned(),
            format!("--client-ca-file={}", certs.join("client-ca.crt").display()),
            format!("--service-account-issuer=https://127.0.0.1:{port}/"),
            format!(
                "--service-account-key-file={}",
                certs.join("sa.pub").display()
            ),
            format!(
                "--service-account-signing-key-file={}",
                certs.join("sa.key").display()
            ),
        ];
        if options.controllers {
            // Pods: service account tokens mounted, kubelets authorized as nodes.
            args.push("--enable-admission-plugins=NodeRestriction".to_owned());
            args.push("--authorization-mode=Node,RBAC".to_owned());
        } else {
            // Objects only: no controller creates the `default` ServiceAccounts that the
            // ServiceAccount admission plugin would require of every pod.
            args.push("--disable-admission-plugins=ServiceAccount".to_owned());
            args.push("--authorization-mode=RBAC".to_owned());
        }
        args.extend(options.extra_apiserver_args.iter().cloned());
        let apiserver_log = root.join("kube-apiserver.log");
        self.spawn(
            "kube-apiserver",
            &binaries.kube_apiserver,
            &args,
            &apiserver_log,
        )?;
        let kubeconfig = self.kubeconfig_yaml_for(&self.admin);
        write_file(&self.kubeconfig_path, &kubeconfig)?;
        self.wait_apiserver(&apiserver_log, options.timeout).await?;
        if options.controllers {
            self.start_controllers(binaries, options.timeout).await?;
        }
        Ok(self)
    }

    /// kube-controller-manager and kube-scheduler, each with a kubeconfig of its own (a
    /// `system:masters` client certificate: the harness does not run the token controllers that
    /// per-controller credentials would need), no leader election, serving on loopback only.
    async fn start_controllers(&self, binaries: &Binaries, timeout: Duration) -> Result<(), Error> {
        let root = self.dir.path().to_owned();
        let certs = root.join("certs");
        for (name, user) in [
            ("kube-controller-manager", "system:kube-controller-manager"),
            ("kube-scheduler", "system:kube-scheduler"),
        ] {
            let pem = self.client_ca.client(user, Some("system:masters"))?;
            write_file(
                &root.join(format!("{name}.kubeconfig")),
                &self.kubeconfig_yaml_for(&pem),
            )?;
        }
        let common = |name: &str, port: u16| {
            vec![
                format!(
                    "--kubeconfig={}",
                    root.join(format!("{name}.kubeconfig")).display()
                ),
                "--leader-elect=false".to_owned(),
                "--bind-address=127.0.0.1".to_owned(),
                format!("--secure-port={port}"),
                format!("--cert-dir={}", root.join(name).display()),
            ]
        };
        let mut kcm = common("kube-controller-manager", free_port()?);
        kcm.extend([
            format!("--root-ca-file={}", certs.join("serving-ca.crt").display()),
            "--cluster-name=falco-testenv".to_owned(),
            "--controllers=*".to_owned(),
            // Nodes that stop reporting are noticed in seconds, not minutes.
            "--node-monitor-grace-period=20s".to_owned(),
        ]);
        let kcm_log = root.join("kube-controller-manager.log");
        self.spawn(
            "kube-controller-manager",
            &binaries.other("kube-controller-manager")?,
            &kcm,
            &kcm_log,
        )?;
        let scheduler_port = free_port()?;
        let scheduler_log = root.join("kube-scheduler.log");
        self.spawn(
            "kube-scheduler",
            &binaries.other("kube-scheduler")?,
            &common("kube-scheduler", scheduler_port),
            &scheduler_log,
        )?;

        // The controller manager works once it has created `default/default` and published
        // the cluster CA; the scheduler once its health endpoint answers.
        let client = self.client().await?;
        let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> =
            Api::namespaced(client.clone(), "default");
        let config_maps: Api<k8s_openapi::api::core::v1::ConfigMap> =
            Api::namespaced(client, "default");
        let http = reqwest::Client::builder()
            .no_proxy()
            .danger_accept_invalid_certs(true) // its own self-signed loopback certificate
            .timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| Error::Kubeconfig(e.to_string()))?;
        let healthz = format!("https://127.0.0.1:{scheduler_port}/healthz");
        let deadline = Instant::now() + timeout;
        let (mut kcm_ready, mut scheduler_ready) = (false, false);
        while !(kcm_ready && scheduler_ready) {
            self.check_alive("kube-controller-manager or kube-scheduler", &kcm_log)?;
            if !kcm_ready {
                kcm_ready = accounts.get_opt("default").await.ok().flatten().is_some()
                    && config_maps
                        .get_opt("kube-root-ca.crt")
                        .await
                        .ok()
                        .flatten()
                        .is_some();
            }
            if !scheduler_ready {
                scheduler_ready = http
                    .get(&healthz)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
            }
            if Instant::now() > deadline {
                let (name, log) = if kcm_ready {
                    ("kube-scheduler", &scheduler_log)
                } else {
                    ("kube-controller-manager", &kcm_log)
                };
                return Err(Error::NotReady {
                    name,
                    seconds: timeout.as_secs(),
                    log: log.clone(),
                    tail: log_tail(log),
                });
            }
            tokio::time::sleep(POLL).await;
        }
        Ok(())
    }

    fn spawn(
        &self,
        name: &'static str,
        binary: &Path,
        args: &[String],
        log: &Path,
    ) -> Result<(), Error> {
        let out = File::create(log).map_err(io_err(log))?;
        let err = out.try_clone().map_err(io_err(log))?;
        let child = Command::new(binary)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|source| Error::Spawn {
                name,
                binary: binary.to_owned(),
                source,
            })?;
        let pid = child.id();
        self.processes.lock().expect("not poisoned").push(child);
        if let Some((_, stdin)) = self.guard.lock().expect("not poisoned").as_mut() {
            // If the guard is gone, Drop still stops the child; nothing to do here.
            let _ = writeln!(stdin, "{pid}").and_then(|()| stdin.flush());
        }
        Ok(())
    }

    /// Fails fast with the log when a server process has exited.
    fn check_alive(&self, name: &'static str, log: &Path) -> Result<(), Error> {
        let mut processes = self.processes.lock().expect("not poisoned");
        for child in processes.iter_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(Error::Exited {
                    name,
                    status: status.to_string(),
                    log: log.to_owned(),
                    tail: log_tail(log),
                });
            }
        }
        Ok(())
    }

    async fn wait_etcd(&self, log: &Path, timeout: Duration) -> Result<(), Error> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| Error::Kubeconfig(e.to_string()))?;
        let url = format!("{}/health", self.etcd_url);
        let deadline = Instant::now() + timeout;
        loop {
            self.check_alive("etcd", log)?;
            if let Ok(resp) = http.get(&url).send().await
                && resp.status().is_success()
                && resp.text().await.is_ok_and(|t| t.contains("true"))
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::NotReady {
                    name: "etcd",
                    seconds: timeout.as_secs(),
                    log: log.to_owned(),
                    tail: log_tail(log),
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn wait_apiserver(&self, log: &Path, timeout: Duration) -> Result<(), Error> {
        let client = self.client().await?;
        let deadline = Instant::now() + timeout;
        let namespaces: Api<Namespace> = Api::all(client.clone());
        loop {
            self.check_alive("kube-apiserver", log)?;
            let ready = client
                .request_text(
                    http::Request::get("/readyz")
                        .body(Vec::new())
                        .expect("static request"),
                )
                .await
                .is_ok_and(|body| body.trim() == "ok");
            if ready && namespaces.get_opt("default").await.ok().flatten().is_some() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::NotReady {
                    name: "kube-apiserver",
                    seconds: timeout.as_secs(),
                    log: log.to_owned(),
                    tail: log_tail(log),
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    fn kubeconfig_yaml_for(&self, user: &Pem) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: falco-testenv\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\nusers:\n- name: falco-testenv\n  user:\n    client-certificate-data: {cert}\n    client-key-data: {key}\ncontexts:\n- name: falco-testenv\n  context:\n    cluster: falco-testenv\n    user: falco-testenv\ncurrent-context: falco-testenv\n",
            server = self.server,
            ca = B64.encode(&self.serving_ca_pem),
            cert = B64.encode(&user.cert),
            key = B64.encode(&user.key),
        )
    }

    async fn client_from_yaml(yaml: &str) -> Result<Client, Error> {
        let kubeconfig =
            Kubeconfig::from_yaml(yaml).map_err(|e| Error::Kubeconfig(e.to_string()))?;
        let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .map_err(|e| Error::Kubeconfig(e.to_string()))?;
        Client::try_from(config).map_err(Error::Kube)
    }

    /// A client authenticated as `admin` in group `system:masters`. Build one per test (per
    /// tokio runtime).
    pub async fn client(&self) -> Result<Client, Error> {
        Self::client_from_yaml(&self.kubeconfig_yaml()).await
    }

    /// A client authenticated as `user`, in `group` when given (plus `system:authenticated`),
    /// for RBAC tests: it can do exactly what RBAC grants that user.
    pub async fn client_as(&self, user: &str, group: Option<&str>) -> Result<Client, Error> {
        let pem = self.client_ca.client(user, group)?;
        Self::client_from_yaml(&self.kubeconfig_yaml_for(&pem)).await
    }

    /// A kubeconfig (certificates embedded) for a client certificate of `user` in `group`.
    pub fn kubeconfig_yaml_as(&self, user: &str, group: Option<&str>) -> Result<String, Error> {
        Ok(self.kubeconfig_yaml_for(&self.client_ca.client(user, group)?))
    }

    /// The PEM of the CA that signed the API server's serving certificate.
    pub fn serving_ca_pem(&self) -> &str {
        &self.serving_ca_pem
    }

    /// The PEM of the CA that client certificates are checked against.
    pub fn client_ca_pem(&self) -> &str {
        &self.client_ca.cert_pem
    }

    /// The API server's port on `127.0.0.1`.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether kube-controller-manager and kube-scheduler run ([`StartOptions::controllers`]).
    pub fn has_controllers(&self) -> bool {
        self.controllers
    }

    /// The admin kubeconfig, with certificates embedded.
    pub fn kubeconfig_yaml(&self) -> String {
        self.kubeconfig_yaml_for(&self.admin)
    }

    /// Path of the admin kubeconfig file (inside the control plane's directory).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig_path
    }

    /// `https://127.0.0.1:<port>` of the API server.
    pub fn server_url(&self) -> &str {
        &self.server
    }

    /// `http://127.0.0.1:<port>` of etcd.
    pub fn etcd_url(&self) -> &str {
        &self.etcd_url
    }

    /// The directory holding certificates, data and the servers' logs (`etcd.log`,
    /// `kube-apiserver.log`). Removed when the control plane stops.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Creates a fresh namespace `<prefix>-<random suffix>` and returns its name. Tests isolate
    /// themselves this way on the shared control plane.
    pub async fn namespace(&self, client: &Client, prefix: &str) -> Result<String, Error> {
        let api: Api<Namespace> = Api::all(client.clone());
        let ns = Namespace {
            metadata: ObjectMeta {
                generate_name: Some(format!("{prefix}-")),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        let created = api.create(&PostParams::default(), &ns).await?;
        Ok(created.metadata.name.unwrap_or_default())
    }

    /// Hands process `pid` to this control plane's guard: it is terminated with the servers,
    /// also when this process dies without dropping anything (a shared control plane).
    pub fn adopt(&self, pid: u32) {
        if let Some((_, stdin)) = self
            .guard
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            let _ = writeln!(stdin, "{pid}").and_then(|()| stdin.flush());
        }
    }

    /// Stops both servers and removes every file. Same as dropping it.
    pub fn stop(self) {}
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let mut processes = self.processes.lock().unwrap_or_else(|e| e.into_inner());
        // kube-apiserver first, then etcd.
        for child in processes.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
        processes.clear();
        if let Some((mut guard, stdin)) =
            self.guard.lock().unwrap_or_else(|e| e.into_inner()).take()
        {
            drop(stdin);
            let _ = guard.wait();
        }
    }
}

/// Applies CRDs (server-side apply, field manager `falco-testenv`, all at once) and waits until
/// every one is Established.
pub async fn install_crds(client: &Client, crds: &[CustomResourceDefinition]) -> Result<(), Error> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    futures::future::try_join_all(crds.iter().map(|crd| {
        let name = crd.metadata.name.clone().unwrap_or_default();
        let (api, params) = (&api, &params);
        async move { api.patch(&name, params, &Patch::Apply(crd)).await }
    }))
    .await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    for crd in crds {
        let name = crd.metadata.name.clone().unwrap_or_default();
        loop {
            let established = api.get(&name).await?.status.is_some_and(|s| {
                s.conditions
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
            });
            if established {
                break;
            }
            if Instant::now() > deadline {
                return Err(Error::CrdNotEstablished(name));
            }
            tokio::time::sleep(POLL).await;
        }
    }
    Ok(())
}
