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
pub mod registry;
pub mod snapshot;

pub use apply::{apply_manifests, read_manifests};
pub use bins::{Binaries, locate_binaries, locate_helm};
pub use control_plane::{ControlPlane, StartOptions, install_crds};
pub use drift::assert_committed_crds_match;
pub use error::Error;

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
