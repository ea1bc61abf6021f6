//! A real Kubernetes control plane for tests, the demo and the benchmarks.
//!
//! [`ControlPlane::start`] runs etcd and kube-apiserver (built from the Go module proxy by
//! `hack/build-testenv.sh`, cached per machine) on free loopback ports, with throw-away
//! certificates, RBAC on, and the flags controller-runtime's envtest uses. Users are client
//! certificates: [`ControlPlane::client`] is `system:masters`, [`ControlPlane::client_as`] any
//! user and groups, so RBAC can be tested without touching the API server.
//!
//! Tests share one control plane per test binary through [`shared`], with the project's CRDs
//! installed and Established before the first test gets it, and isolate themselves with
//! [`ControlPlane::namespace`]. Each test builds its own [`kube::Client`], because a client is
//! bound to the tokio runtime it was created on and every `#[tokio::test]` has its own.
//!
//! # No orphans
//! Every control plane has a *guard*: a small `sh` process whose stdin is a pipe held by this
//! process and which learns the PID of each server. When this process closes the pipe, normally
//! (drop) or not (panic, `exit`, SIGKILL), the guard terminates the servers and removes the
//! temporary directory. Statics are never dropped in Rust, so this is what cleans up after the
//! shared control plane too.

mod apply;
mod bins;
mod certs;
mod control_plane;
mod drift;
mod error;
pub mod garage;
pub mod image;
mod node;
pub mod registry;
pub mod snapshot;

pub use apply::{apply_manifests, read_manifests};
pub use bins::{Binaries, locate_binaries, locate_helm};
pub use control_plane::{ControlPlane, StartOptions, install_crds};
pub use drift::assert_committed_crds_match;
pub use error::Error;
pub use node::{HOST_NETWORK_POLICY, Node, NodeOptions, RUNC_BIN, install_host_network_policy};

use std::collections::BTreeMap;
use std::sync::OnceLock;

/// The control plane shared by every test of this test binary, with all CRDs of the project
/// installed and Established. Started on first use; torn down when the process ends.
///
/// # Panics
/// When the control plane cannot start (binaries missing and not buildable, ports, timeouts).
/// The message names what is missing; a test never silently skips.
pub fn shared() -> &'static ControlPlane {
    static SHARED: OnceLock<Result<ControlPlane, String>> = OnceLock::new();
    let result = SHARED.get_or_init(|| {
        // Start on a thread of its own with its own runtime: callers may be inside a tokio
        // runtime (every #[tokio::test] is), where blocking on another runtime is not allowed.
        std::thread::spawn(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let cp = ControlPlane::start(StartOptions::default())
                    .await
                    .map_err(|e| e.to_string())?;
                let client = cp.client().await.map_err(|e| e.to_string())?;
                control_plane::install_crds(&client, &falco_api::all_crds())
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(cp)
            })
        })
        .join()
        .unwrap_or_else(|_| Err("the control plane start-up thread panicked".to_owned()))
    });
    match result {
        Ok(cp) => cp,
        Err(e) => panic!("falco-testenv: cannot start the test control plane: {e}"),
    }
}

/// A control plane with its controllers, a registry holding the project's images and a node
/// running pods from them: what the end-to-end tests run against.
pub struct Cluster {
    /// etcd, kube-apiserver, kube-controller-manager, kube-scheduler; CRDs installed.
    pub control_plane: ControlPlane,
    /// The node's kubelet and containerd.
    pub node: Node,
    /// The plain-HTTP registry the node pulls from (images and Falco artifacts).
    pub registry: registry::Registry,
    /// Image references by repository (`falco-operator`, `falco-standin`, …), tag `dev`.
    pub images: BTreeMap<String, String>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("control_plane", &self.control_plane)
            .field("node", &self.node)
            .field("registry", &self.registry.host())
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Starts all of it. The images are built from the static binaries in
    /// [`image::image_bins_dir`] (`make images`).
    pub async fn start() -> Result<Self, Error> {
        let control_plane = ControlPlane::start(StartOptions {
            controllers: true,
            ..StartOptions::default()
        })
        .await?;
        let client = control_plane.client().await?;
        control_plane::install_crds(&client, &falco_api::all_crds()).await?;
        let registry_dir = control_plane.dir().join("registry");
        let registry =
            tokio::task::spawn_blocking(move || registry::Registry::start(&registry_dir))
                .await
                .map_err(|e| Error::Registry(e.to_string()))??;
        control_plane.adopt(registry.pid());
        let images: BTreeMap<String, String> =
            image::push_project_images(registry.host(), "dev", &image::image_bins_dir())
                .await?
                .into_iter()
                .collect();
        let node = Node::start(
            &control_plane,
            NodeOptions {
                registries: vec![registry.host().to_owned()],
                pause_image: images
                    .get("falco-testenv-pause")
                    .cloned()
                    .unwrap_or_default(),
                timeout: std::time::Duration::from_secs(120),
            },
        )
        .await?;
        Ok(Self {
            control_plane,
            node,
            registry,
            images,
        })
    }

    /// The reference of the project image `repository` (e.g. `falco-operator`).
    ///
    /// # Panics
    /// When there is no such image.
    pub fn image(&self, repository: &str) -> &str {
        self.images
            .get(repository)
            .unwrap_or_else(|| panic!("no image {repository} in {:?}", self.images.keys()))
    }
}

/// The [`Cluster`] shared by every test of this test binary; started on first use, torn down
/// (guards) when the process ends.
///
/// # Panics
/// When any part cannot start; the message names it.
pub fn shared_cluster() -> &'static Cluster {
    static SHARED: OnceLock<Result<Cluster, String>> = OnceLock::new();
    let result = SHARED.get_or_init(|| {
        std::thread::spawn(|| {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime
                .block_on(Cluster::start())
                .map_err(|e| e.to_string())
        })
        .join()
        .unwrap_or_else(|_| Err("the cluster start-up thread panicked".to_owned()))
    });
    match result {
        Ok(cluster) => cluster,
        Err(e) => panic!("falco-testenv: cannot start the test cluster: {e}"),
    }
}
