//! A real node joined to a [`ControlPlane`]: containerd 2.x with Debian's runc, and a kubelet.
//!
//! # What it is
//! One kubelet, registered as `falco-testenv-node-<suffix>` with a client certificate of
//! `system:node:<name>` (the Node authorizer and NodeRestriction check it like on any cluster),
//! running pods through its own containerd. Each node has a directory of its own for every file
//! the two keep (containerd's content store and snapshots, the kubelet's pods and volumes, the
//! pods' logs), its own cgroup root `/falco-testenv-<suffix>` in every cgroup hierarchy, and its
//! own mount namespace. Images come from plain-HTTP registries on loopback
//! ([`NodeOptions::registries`]); nothing is pulled from the internet.
//!
//! # Networking: the host's
//! The control plane listens on `127.0.0.1` only, and a loopback address cannot be a Service
//! endpoint, so there is no `kubernetes` Service a pod network could reach and no kube-proxy.
//! Every pod therefore runs in the host's network namespace: a MutatingAdmissionPolicy that
//! [`Node::start`] installs (`falco-testenv-host-network`) sets `hostNetwork: true` on every
//! pod, the matching `hostPort` on its ports, and points `KUBERNETES_SERVICE_HOST`/`_PORT` of
//! every container at the API server, so in-cluster clients (the operator, the sidecar) use
//! their ServiceAccount token against it exactly as they would through the Service. The CNI
//! configuration holds only the loopback plugin: the runtime reports its network ready, and a
//! pod that escaped the policy would get a network namespace with `lo` and nothing else. Two
//! pods listening on one port cannot share the node: the scheduler keeps the second Pending.
//!
//! # No orphans
//! Everything the node starts lives in the cgroup `/falco-testenv-<suffix>`: containerd and the
//! kubelet in its `daemons` child, the shims with them, the containers below the kubelet's
//! `kubepods`. A guard process (see [`crate::ControlPlane`]) waits for its pipe from this
//! process to close, normally or because this process died (panic, `exit`, SIGKILL), then kills
//! every process of that cgroup until none is left, removes the cgroups, and removes the
//! directory. The mounts (overlay root file systems, volume tmpfs) were made in the node's own
//! mount namespace, which ends with its last process, so none is left in the host's; so was a
//! tmpfs on `/run/containerd`, where containerd's shims put their sockets whatever it is told.
//! What stays on the host are empty directories a pod's `hostPath` named and containerd created
//! (`/run/crio` for a Falco pod, `/var/lib/falco-driver` for its driver cache).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node as KubeNode;
use kube::api::Api;
use serde_json::json;

use crate::{Binaries, ControlPlane, Error, locate_binaries};

/// Where Debian's `runc` package installs runc.
pub const RUNC_BIN: &str = "/usr/sbin/runc";
/// Environment variable naming another OCI runtime binary than [`RUNC_BIN`] (e.g. crun).
pub const RUNTIME_ENV: &str = "FALCO_TESTENV_RUNTIME";
/// Name of the admission policy that puts every pod in the host network.
pub const HOST_NETWORK_POLICY: &str = "falco-testenv-host-network";
const POLL: Duration = Duration::from_millis(100);
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The guard: waits until its stdin closes, then kills the node's cgroup, removes it and the
/// node's directory. Arguments: the directory, the cgroup name.
const GUARD_SCRIPT: &str = r#"
trap '' INT TERM HUP
dir=$1 cg=$2
cat >/dev/null
procs() { find "/sys/fs/cgroup/pids/$cg" -name cgroup.procs -exec cat {} + 2>/dev/null; }
i=0
while [ $i -lt 200 ]; do
  p=$(procs)
  [ -z "$p" ] && break
  kill -KILL $p 2>/dev/null
  sleep 0.05
  i=$((i + 1))
done
i=0
while [ $i -lt 100 ]; do
  left=
  for h in /sys/fs/cgroup/*/; do
    if [ -d "$h$cg" ]; then
      find "$h$cg" -depth -type d -exec rmdir {} \; 2>/dev/null
      [ -d "$h$cg" ] && left=1
    fi
  done
  [ -z "$left" ] && break
  sleep 0.05
  i=$((i + 1))
done
awk -v d="$dir" 'index($2, d) == 1 { print $2 }' /proc/self/mounts | sort -r |
  while read -r m; do umount -l "$m"; done
rm -rf "$dir"
"#;

/// Runs in the node's new mount namespace: a private `/run/containerd`, containerd in the
/// background, then the kubelet once
/// containerd's socket exists (the kubelet exits at once when the runtime is not there).
/// Arguments: the directory, the containerd binary, the kubelet binary, then the kubelet's flags.
const NODE_SCRIPT: &str = r#"
dir=$1 containerd=$2 kubelet=$3
shift 3
# The shims' sockets go to /run/containerd/s whatever the configuration says; a tmpfs of this
# namespace keeps them off the host and goes with it.
mkdir -p /run/containerd && mount -t tmpfs -o mode=0711 falco-testenv-node /run/containerd || exit 1
"$containerd" --config "$dir/containerd.toml" >"$dir/containerd.log" 2>&1 &
i=0
while [ ! -S "$dir/containerd.sock" ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i + 1)); done
exec "$kubelet" "$@" >"$dir/kubelet.log" 2>&1
"#;

/// How to start a node.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    /// Plain-HTTP registries (`host:port` on loopback) the runtime may pull from.
    pub registries: Vec<String>,
    /// The pod sandbox ("pause") image; it must be pullable from one of `registries`.
    pub pause_image: String,
    /// Deadline for the node to become Ready.
    pub timeout: Duration,
}

/// A running kubelet + containerd. Dropping it stops both, every pod's processes, and removes
/// every file, cgroup and mount it made.
pub struct Node {
    name: String,
    dir: PathBuf,
    cgroup: String,
    kubelet: Mutex<Option<Child>>,
    guard: Mutex<Option<(Child, ChildStdin)>>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("name", &self.name)
            .field("dir", &self.dir)
            .field("cgroup", &self.cgroup)
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
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io_err(parent))?;
    }
    std::fs::write(path, contents).map_err(io_err(path))
}

fn free_port() -> Result<u16, Error> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(io_err(Path::new("127.0.0.1:0")))?;
    Ok(listener.port())
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// The cgroup hierarchies mounted under `/sys/fs/cgroup` (v1 controllers, named hierarchies and
/// the v2 one of a hybrid set-up). Their mounts are left as they are; only directories are made.
fn hierarchies() -> Result<Vec<PathBuf>, Error> {
    let root = Path::new(CGROUP_ROOT);
    if root.join("cgroup.controllers").is_file() {
        // Unified (cgroup v2 only): one hierarchy.
        return Ok(vec![root.to_owned()]);
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)
        .map_err(io_err(root))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    dirs.sort();
    Ok(dirs)
}

impl Node {
    /// Starts containerd and the kubelet, waits until the Node is `Ready` without the
    /// `not-ready` taint, and installs the host-network admission policy (once per cluster).
    ///
    /// The control plane must run its controllers ([`crate::StartOptions::controllers`]).
    pub async fn start(cp: &ControlPlane, options: NodeOptions) -> Result<Self, Error> {
        if !cp.has_controllers() {
            return Err(Error::Node(
                "the control plane runs no controller manager or scheduler: start it with \
                 StartOptions { controllers: true, .. }"
                    .to_owned(),
            ));
        }
        let runtime = std::env::var_os(RUNTIME_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(RUNC_BIN));
        if !runtime.is_file() {
            return Err(Error::Node(format!(
                "{} is missing: apt-get install runc (hack/install-deps.sh does)",
                runtime.display()
            )));
        }
        let binaries = tokio::task::spawn_blocking(locate_binaries)
            .await
            .map_err(|e| Error::Binaries(e.to_string()))??;
        let suffix: String = {
            use rand::Rng as _;
            let mut rng = rand::rng();
            (0..8)
                .map(|_| {
                    char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[rng.random_range(0..36)])
                })
                .collect()
        };
        let name = format!("falco-testenv-node-{suffix}");
        let cgroup = format!("falco-testenv-{suffix}");
        let dir = std::env::temp_dir().join(format!("falco-testenv-node-{suffix}"));
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;

        // The guard first: from here on, whatever happens, it cleans up.
        let mut guard = Command::new("sh")
            .arg("-c")
            .arg(GUARD_SCRIPT)
            .arg("falco-testenv-node-guard")
            .arg(&dir)
            .arg(&cgroup)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| Error::Spawn {
                name: "sh (node clean-up guard)",
                binary: "sh".into(),
                source,
            })?;
        let guard_stdin = guard
            .stdin
            .take()
            .ok_or_else(|| Error::Node("the node guard's stdin is not a pipe".to_owned()))?;
        let node = Self {
            name,
            dir,
            cgroup,
            kubelet: Mutex::new(None),
            guard: Mutex::new(Some((guard, guard_stdin))),
        };
        node.make_cgroups()?;
        node.write_config(cp, &binaries, &options)?;
        install_host_network_policy(cp).await?;
        node.launch(&binaries)?;
        node.wait_ready(cp, options.timeout).await?;
        Ok(node)
    }

    fn make_cgroups(&self) -> Result<(), Error> {
        for hierarchy in hierarchies()? {
            let dir = hierarchy.join(&self.cgroup);
            std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
            // A new cpuset cgroup has no CPUs and no memory nodes until given its parent's.
            for file in ["cpuset.cpus", "cpuset.mems"] {
                let parent = hierarchy.join(file);
                if parent.is_file() {
                    let value = std::fs::read_to_string(&parent).map_err(io_err(&parent))?;
                    let own = dir.join(file);
                    std::fs::write(&own, value.trim()).map_err(io_err(&own))?;
                }
            }
        }
        let daemons = Path::new(CGROUP_ROOT)
            .join("pids")
            .join(&self.cgroup)
            .join("daemons");
        std::fs::create_dir_all(&daemons).map_err(io_err(&daemons))?;
        Ok(())
    }

    fn write_config(
        &self,
        cp: &ControlPlane,
        binaries: &Binaries,
        options: &NodeOptions,
    ) -> Result<(), Error> {
        let dir = &self.dir;
        let d = |p: &str| dir.join(p).display().to_string();
        // Registries: plain HTTP, loopback only.
        for registry in &options.registries {
            write_file(
                &dir.join("certs.d").join(registry).join("hosts.toml"),
                &format!(
                    "server = \"http://{registry}\"\n\n[host.\"http://{registry}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
                ),
            )?;
        }
        write_file(
            &dir.join("cni/10-falco-testenv.conflist"),
            &json!({
                "cniVersion": "1.0.0",
                "name": "falco-testenv",
                "plugins": [{ "type": "loopback" }],
            })
            .to_string(),
        )?;
        let containerd = format!(
            r#"version = 3
root = '{root}'
state = '{state}'
imports = []
[grpc]
  address = '{sock}'
[ttrpc]
  address = '{sock}.ttrpc'
[plugins]
  [plugins.'io.containerd.cri.v1.images']
    snapshotter = 'overlayfs'
    [plugins.'io.containerd.cri.v1.images'.pinned_images]
      sandbox = '{pause}'
    [plugins.'io.containerd.cri.v1.images'.registry]
      config_path = '{certs}'
  [plugins.'io.containerd.cri.v1.runtime']
    enable_cdi = false
    # The kubelet asks for -998 for sandboxes; a process here may not lower its score below
    # its parent's (no CAP_SYS_RESOURCE on some machines), so keep scores at containerd's.
    restrict_oom_score_adj = true
    netns_mounts_under_state_dir = true
    [plugins.'io.containerd.cri.v1.runtime'.containerd]
      default_runtime_name = 'runc'
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
        runtime_type = 'io.containerd.runc.v2'
        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
          BinaryName = '{runc}'
          Root = '{runc_root}'
          SystemdCgroup = false
    [plugins.'io.containerd.cri.v1.runtime'.cni]
      bin_dirs = ['{cni_bin}']
      conf_dir = '{cni_conf}'
  [plugins.'io.containerd.grpc.v1.cri']
    stream_server_address = '127.0.0.1'
    stream_server_port = '0'
  [plugins.'io.containerd.internal.v1.opt']
    path = '{opt}'
  [plugins.'io.containerd.nri.v1.nri']
    disable = true
"#,
            root = d("containerd/root"),
            state = d("containerd/state"),
            sock = d("containerd.sock"),
            pause = options.pause_image,
            certs = d("certs.d"),
            runc = std::env::var(RUNTIME_ENV).unwrap_or_else(|_| RUNC_BIN.to_owned()),
            runc_root = d("runc"),
            cni_bin = binaries.dir.display(),
            cni_conf = d("cni"),
            opt = d("containerd/opt"),
        );
        write_file(&dir.join("containerd.toml"), &containerd)?;

        write_file(&dir.join("pki/ca.crt"), cp.client_ca_pem())?;
        write_file(
            &dir.join("kubelet.kubeconfig"),
            &cp.kubeconfig_yaml_as(&format!("system:node:{}", self.name), Some("system:nodes"))?,
        )?;
        let kubelet = json!({
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": "127.0.0.1",
            "port": free_port()?,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": free_port()?,
            "authentication": {
                "anonymous": { "enabled": false },
                "webhook": { "enabled": false },
                "x509": { "clientCAFile": d("pki/ca.crt") },
            },
            "authorization": { "mode": "AlwaysAllow" },
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": format!("/{}", self.cgroup),
            "failCgroupV1": false,
            "failSwapOn": false,
            "containerRuntimeEndpoint": format!("unix://{}", d("containerd.sock")),
            "podLogsDir": d("pod-logs"),
            "enforceNodeAllocatable": [],
            "makeIPTablesUtilChains": false,
            "serializeImagePulls": false,
            "resolvConf": "/etc/resolv.conf",
            // A test machine's disk may be nearly full; a test node evicts nothing for it.
            "evictionHard": {
                "memory.available": "1Mi",
                "nodefs.available": "0%",
                "nodefs.inodesFree": "0%",
                "imagefs.available": "0%",
            },
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "syncFrequency": "10s",
            "fileCheckFrequency": "10s",
            "nodeStatusUpdateFrequency": "2s",
            "shutdownGracePeriod": "0s",
            "registerNode": true,
        });
        write_file(&dir.join("kubelet.yaml"), &kubelet.to_string())?;
        Ok(())
    }

    fn launch(&self, binaries: &Binaries) -> Result<(), Error> {
        let d = |p: &str| self.dir.join(p).display().to_string();
        let kubelet_args = [
            format!("--config={}", d("kubelet.yaml")),
            format!("--kubeconfig={}", d("kubelet.kubeconfig")),
            format!("--root-dir={}", d("kubelet")),
            format!("--cert-dir={}", d("kubelet-pki")),
            format!("--hostname-override={}", self.name),
            "--v=1".to_owned(),
        ];
        let procs = Path::new(CGROUP_ROOT)
            .join("pids")
            .join(&self.cgroup)
            .join("daemons/cgroup.procs");
        let path = format!(
            "{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            binaries.dir.display()
        );
        // Into the node's cgroup, then a mount namespace of its own whose mounts do not
        // propagate back to the host (`slave`), then containerd and the kubelet.
        let launcher = format!(
            "echo $$ > '{}' && exec unshare --mount --propagation slave -- sh -c \"$0\" falco-testenv-node \"$@\"",
            procs.display()
        );
        let out = File::create(self.dir.join("node.log")).map_err(io_err(&self.dir))?;
        let child = Command::new("sh")
            .arg("-c")
            .arg(launcher)
            .arg(NODE_SCRIPT)
            .arg(&self.dir)
            .arg(binaries.other("containerd")?)
            .arg(binaries.other("kubelet")?)
            .args(kubelet_args)
            .env("PATH", path)
            .stdin(Stdio::null())
            .stdout(out.try_clone().map_err(io_err(&self.dir))?)
            .stderr(out)
            .spawn()
            .map_err(|source| Error::Spawn {
                name: "kubelet",
                binary: "sh".into(),
                source,
            })?;
        *self.kubelet.lock().unwrap_or_else(|e| e.into_inner()) = Some(child);
        Ok(())
    }

    fn check_alive(&self) -> Result<(), Error> {
        let mut kubelet = self.kubelet.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(child) = kubelet.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            let log = self.dir.join("kubelet.log");
            let mut tail = log_tail(&log);
            let containerd = log_tail(&self.dir.join("containerd.log"));
            tail.push_str("\n--- containerd.log ---\n");
            tail.push_str(&containerd);
            tail.push_str("\n--- node.log ---\n");
            tail.push_str(&log_tail(&self.dir.join("node.log")));
            return Err(Error::Exited {
                name: "kubelet",
                status: status.to_string(),
                log,
                tail,
            });
        }
        Ok(())
    }

    async fn wait_ready(&self, cp: &ControlPlane, timeout: Duration) -> Result<(), Error> {
        let client = cp.client().await?;
        let nodes: Api<KubeNode> = Api::all(client);
        let deadline = Instant::now() + timeout;
        loop {
            self.check_alive()?;
            if let Ok(Some(node)) = nodes.get_opt(&self.name).await
                && node_ready(&node)
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                let log = self.dir.join("kubelet.log");
                return Err(Error::NotReady {
                    name: "kubelet (node Ready)",
                    seconds: timeout.as_secs(),
                    tail: format!(
                        "{}\n--- containerd.log ---\n{}",
                        log_tail(&log),
                        log_tail(&self.dir.join("containerd.log"))
                    ),
                    log,
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The Node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The node's directory: `kubelet.log`, `containerd.log`, `pod-logs/`, the kubelet's root
    /// (`kubelet/`). Removed when the node stops.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The node's cgroup (`falco-testenv-<suffix>`), below `/sys/fs/cgroup/<hierarchy>/`.
    pub fn cgroup(&self) -> &str {
        &self.cgroup
    }

    /// What container `container` of pod `namespace/pod` wrote so far (all its restarts, in
    /// order), from the kubelet's pod log directory: the runtime's CRI log format, one line per
    /// write, `<time> <stream> <tag> <text>`; only the text is returned.
    pub fn container_log(&self, namespace: &str, pod: &str, container: &str) -> String {
        let logs = self.dir.join("pod-logs");
        let prefix = format!("{namespace}_{pod}_");
        let mut text = String::new();
        let Ok(entries) = std::fs::read_dir(&logs) else {
            return text;
        };
        for entry in entries.filter_map(|e| e.ok()) {
            if !entry.file_name().to_string_lossy().starts_with(&prefix) {
                continue;
            }
            let dir = entry.path().join(container);
            let mut files: Vec<(u32, PathBuf)> = std::fs::read_dir(&dir)
                .into_iter()
                .flatten()
                .filter_map(|e| e.ok())
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let n = name.strip_suffix(".log")?.parse().ok()?;
                    Some((n, e.path()))
                })
                .collect();
            files.sort();
            for (_, file) in files {
                for line in std::fs::read_to_string(file).unwrap_or_default().lines() {
                    let mut parts = line.splitn(4, ' ');
                    let (_, _, _, rest) = (parts.next(), parts.next(), parts.next(), parts.next());
                    text.push_str(rest.unwrap_or_default());
                    text.push('\n');
                }
            }
        }
        text
    }

    /// Stops the node and waits until its processes, cgroups and files are gone. Same as
    /// dropping it.
    pub fn stop(self) {}
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some((mut guard, stdin)) =
            self.guard.lock().unwrap_or_else(|e| e.into_inner()).take()
        {
            drop(stdin);
            let _ = guard.wait();
        }
        if let Some(mut kubelet) = self
            .kubelet
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let _ = kubelet.wait();
        }
    }
}

/// Ready, and the node lifecycle controller has lifted its `not-ready` taint.
fn node_ready(node: &KubeNode) -> bool {
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let tainted = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|t| t.iter().any(|t| t.key == "node.kubernetes.io/not-ready"));
    ready && !tainted
}

/// The MutatingAdmissionPolicy (and its binding) that runs every pod in the host network with
/// its in-cluster API address on loopback; see the module documentation for why.
pub async fn install_host_network_policy(cp: &ControlPlane) -> Result<(), Error> {
    let client = cp.client().await?;
    let port = cp.port();
    // `list` is `containers` or `initContainers`: CEL types an item by its field path.
    let per_container = |list: &str| {
        format!(
            "{list}: object.spec.{list}.map(c, Object.spec.{list}{{name: c.name, \
               env: [Object.spec.{list}.env{{name: 'KUBERNETES_SERVICE_HOST', value: '127.0.0.1'}}, \
                     Object.spec.{list}.env{{name: 'KUBERNETES_SERVICE_PORT', value: '{port}'}}, \
                     Object.spec.{list}.env{{name: 'KUBERNETES_SERVICE_PORT_HTTPS', value: '{port}'}}], \
               ports: has(c.ports) ? c.ports.map(p, Object.spec.{list}.ports{{containerPort: p.containerPort, \
                 protocol: has(p.protocol) ? p.protocol : 'TCP', hostPort: p.containerPort}}) : []}})"
        )
    };
    let expression = format!(
        "Object{{spec: Object.spec{{hostNetwork: true, \
           dnsPolicy: !has(object.spec.dnsPolicy) || object.spec.dnsPolicy == 'ClusterFirst' ? 'Default' : object.spec.dnsPolicy, \
           {containers}, \
           {init}}}}}",
        containers = per_container("containers"),
        init = per_container("initContainers").replacen(
            "initContainers: object.spec.initContainers.map",
            "initContainers: !has(object.spec.initContainers) ? [] : object.spec.initContainers.map",
            1
        ),
    );
    let policy = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingAdmissionPolicy",
        "metadata": { "name": HOST_NETWORK_POLICY },
        "spec": {
            "matchConstraints": {
                "resourceRules": [{
                    "apiGroups": [""], "apiVersions": ["v1"],
                    "operations": ["CREATE"], "resources": ["pods"],
                }],
            },
            "failurePolicy": "Fail",
            "reinvocationPolicy": "Never",
            "mutations": [{
                "patchType": "ApplyConfiguration",
                "applyConfiguration": { "expression": expression },
            }],
        },
    });
    let binding = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingAdmissionPolicyBinding",
        "metadata": { "name": HOST_NETWORK_POLICY },
        "spec": { "policyName": HOST_NETWORK_POLICY },
    });
    let objects: Vec<kube::api::DynamicObject> = [policy, binding]
        .into_iter()
        .map(serde_json::from_value)
        .collect::<Result<_, _>>()
        .map_err(|e| Error::Node(e.to_string()))?;
    crate::apply_manifests(&client, "default", &objects)
        .await
        .map_err(|e| Error::Node(format!("installing {HOST_NETWORK_POLICY}: {e}")))?;
    // The policy takes effect once the API server's admission has loaded it; a pod created
    // before would run with a network of its own. Probe with a dry-run pod until it is mutated.
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(cp.client().await?, "default");
    let probe: k8s_openapi::api::core::v1::Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "generateName": "falco-testenv-probe-" },
        "spec": { "containers": [{ "name": "probe", "image": "probe.invalid/probe" }] },
    }))
    .map_err(|e| Error::Node(e.to_string()))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let params = kube::api::PostParams {
        dry_run: true,
        ..Default::default()
    };
    loop {
        let mutated = pods
            .create(&params, &probe)
            .await
            .ok()
            .and_then(|p| p.spec)
            .and_then(|s| s.host_network)
            .unwrap_or(false);
        if mutated {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Error::Node(format!(
                "the API server did not apply {HOST_NETWORK_POLICY} to a dry-run pod within 30 s"
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}
