use std::path::PathBuf;

/// Why the control plane could not be started or used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kube-apiserver/etcd binaries are missing and could not be built.
    #[error("{0}")]
    Binaries(String),
    /// Creating the temporary directory, certificates or config files failed.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The demo's OCI registry could not be started or an artifact could not be pushed.
    #[error("OCI registry: {0}")]
    Registry(String),
    /// Generating the throw-away certificates failed.
    #[error("cannot generate certificates: {0}")]
    Certificates(#[from] rcgen::Error),
    /// A server process could not be spawned.
    #[error("cannot start {name} ({binary}): {source}")]
    Spawn {
        /// etcd or kube-apiserver.
        name: &'static str,
        /// Path of the binary.
        binary: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A server did not become ready in time.
    #[error("{name} did not become ready within {seconds} s; last lines of {log}:\n{tail}")]
    NotReady {
        /// etcd or kube-apiserver.
        name: &'static str,
        /// The deadline.
        seconds: u64,
        /// Its log file.
        log: PathBuf,
        /// The end of its log.
        tail: String,
    },
    /// A server exited while starting.
    #[error("{name} exited while starting ({status}); last lines of {log}:\n{tail}")]
    Exited {
        /// etcd or kube-apiserver.
        name: &'static str,
        /// Its exit status.
        status: String,
        /// Its log file.
        log: PathBuf,
        /// The end of its log.
        tail: String,
    },
    /// Building the kubeconfig or a client failed.
    #[error("cannot build a client: {0}")]
    Kubeconfig(String),
    /// A request to the API server failed.
    #[error("API request failed: {0}")]
    Kube(#[from] kube::Error),
    /// A manifest could not be read or applied.
    #[error("bad manifest: {0}")]
    Manifest(String),
    /// A CRD did not become Established in time.
    #[error("CRD {0} was not Established within 30 s")]
    CrdNotEstablished(String),
    /// The node (containerd + kubelet) could not be set up.
    #[error("falco-testenv node: {0}")]
    Node(String),
    /// An image could not be built or pushed.
    #[error("falco-testenv image: {0}")]
    Image(String),
}
