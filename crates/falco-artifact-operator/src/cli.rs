//! Command-line arguments of `falco-artifact-operator`, every flag with an environment fallback.
//! A "simulated node" for tests and the demo is just another process with its own
//! `NODE_NAME` and directories; the kubeconfig comes from `KUBECONFIG` or the in-cluster
//! service account (kube's usual inference).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// The per-node sidecar of every Falco pod: delivers Rulesfile, Plugin and Config resources to
/// the files Falco reads.
#[derive(Parser, Debug)]
#[command(name = "falco-artifact-operator", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Reconcile this node's artifacts until stopped (SIGTERM/SIGINT).
    Run(RunArgs),
    /// Pull one artifact and install it as `run` would, then exit (for debugging, benchmarks and
    /// nodes without an API server).
    Pull(PullArgs),
    /// Print the CRDs of artifact.falcosecurity.dev as YAML.
    Crd {
        /// Write one file per CRD into this directory instead of printing them.
        #[arg(long, value_name = "DIR")]
        output_dir: Option<PathBuf>,
    },
}

/// `run`.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// This node's name: only artifacts selecting this Node are delivered.
    #[arg(long, env = "NODE_NAME")]
    pub node_name: String,
    /// Namespace of the Falco instance; artifacts are read from it.
    #[arg(long, env = "POD_NAMESPACE")]
    pub namespace: String,
    /// Directories shared with Falco.
    #[command(flatten)]
    pub dirs: DirArgs,
    /// Registry access.
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// Signature policy.
    #[command(flatten)]
    pub signatures: SignatureArgs,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, env = "PROBE_ADDR", default_value = "0.0.0.0:8081")]
    pub probe_addr: SocketAddr,
    /// The driver loader's status file, reported in this node's NodeArtifacts record (set by
    /// the instance operator for Falco with spec.driver kmod or auto)
    #[arg(long, env = "DRIVER_STATUS_FILE", value_name = "FILE")]
    pub driver_status_file: Option<PathBuf>,
    /// Milliseconds a sync pass waits after the first change, so that artifacts changed
    /// together are written as one batch and Falco reloads once
    #[arg(long, env = "BATCH_WINDOW_MS", default_value_t = 500)]
    pub batch_window_ms: u64,
}

/// `pull`.
#[derive(Args, Debug, Clone)]
pub struct PullArgs {
    /// `registry/repository:tag` or `registry/repository@sha256:…`.
    pub reference: String,
    /// What the artifact is.
    #[arg(long, value_enum, default_value = "rulesfile")]
    pub kind: PullKind,
    /// Name the file is installed under (the CR name in `run`).
    #[arg(long)]
    pub name: String,
    /// Load-order priority of a rules file.
    #[arg(long, default_value_t = 50)]
    pub priority: u8,
    /// Directories shared with Falco.
    #[command(flatten)]
    pub dirs: DirArgs,
    /// Registry access.
    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// Artifact kinds `pull` accepts.
#[derive(clap::ValueEnum, Debug, Clone, Copy)]
pub enum PullKind {
    /// A rules file (`Rulesfile`).
    Rulesfile,
    /// A plugin library (`Plugin`).
    Plugin,
}

/// Directories shared with Falco, and the sidecar's private state.
#[derive(Args, Debug, Clone)]
pub struct DirArgs {
    /// Falco's rules directory.
    #[arg(long, env = "FALCO_RULES_DIR", default_value = "/etc/falco/rules.d")]
    pub rules_dir: PathBuf,
    /// Falco's config.d directory.
    #[arg(long, env = "FALCO_CONFIG_DIR", default_value = "/etc/falco/config.d")]
    pub config_dir: PathBuf,
    /// Where plugin libraries are written.
    #[arg(
        long,
        env = "FALCO_PLUGINS_DIR",
        default_value = "/usr/share/falco/plugins"
    )]
    pub plugins_dir: PathBuf,
    /// The manifest of files this sidecar wrote; must live as long as the shared directories
    /// (default: .falco-artifact-operator inside the plugins directory).
    #[arg(long, env = "ARTIFACT_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
}

/// Registry access shared by every artifact.
#[derive(Args, Debug, Clone)]
pub struct RegistryArgs {
    /// PEM bundle of extra CA certificates trusted for registries.
    #[arg(long, env = "REGISTRY_CA_FILE", value_name = "FILE")]
    pub registry_ca_file: Option<PathBuf>,
    /// Registry host (with its port, if any) reached over plain HTTP; repeat, or comma-separate in the env.
    #[arg(
        long = "insecure-registry",
        env = "INSECURE_REGISTRIES",
        value_delimiter = ','
    )]
    pub insecure_registries: Vec<String>,
    /// Seconds between checks of a tag for a new digest (digest-pinned artifacts are never
    /// re-checked); 0 disables the check.
    #[arg(long, env = "OCI_RESYNC_SECONDS", default_value_t = 600)]
    pub oci_resync_seconds: u64,
}

impl DirArgs {
    /// The store directories, the state directory defaulted.
    pub fn store_dirs(&self) -> crate::store::Dirs {
        crate::store::Dirs {
            rules: self.rules_dir.clone(),
            config: self.config_dir.clone(),
            plugins: self.plugins_dir.clone(),
            state: self
                .state_dir
                .clone()
                .unwrap_or_else(|| self.plugins_dir.join(".falco-artifact-operator")),
        }
    }
}

impl RegistryArgs {
    /// The tag re-check interval, if enabled.
    pub fn resync(&self) -> Option<Duration> {
        (self.oci_resync_seconds > 0).then(|| Duration::from_secs(self.oci_resync_seconds))
    }
}

/// Signature policy for OCI artifacts.
#[derive(Args, Debug, Clone)]
pub struct SignatureArgs {
    /// Cosign public key (PEM) for artifacts whose CR names none.
    #[arg(long, env = "COSIGN_PUBLIC_KEY_FILE", value_name = "FILE")]
    pub cosign_public_key: Option<PathBuf>,
    /// Keyless signer for artifacts whose CR names none: the certificate's email or URI,
    /// exactly (needs --cosign-issuer and --cosign-trusted-root).
    #[arg(
        long,
        env = "COSIGN_IDENTITY",
        value_name = "IDENTITY",
        requires_all = ["cosign_issuer", "cosign_trusted_root"],
        conflicts_with = "cosign_public_key"
    )]
    pub cosign_identity: Option<String>,
    /// OIDC issuer of the --cosign-identity signer, exactly.
    #[arg(
        long,
        env = "COSIGN_ISSUER",
        value_name = "URL",
        requires = "cosign_identity"
    )]
    pub cosign_issuer: Option<String>,
    /// Sigstore trusted root (trusted_root.json, as `cosign verify --trusted-root` reads) that
    /// keyless signatures are checked against, offline: Fulcio CAs and Rekor keys.
    #[arg(long, env = "COSIGN_TRUSTED_ROOT_FILE", value_name = "FILE")]
    pub cosign_trusted_root: Option<PathBuf>,
    /// Refuse every OCI artifact without a valid cosign signature (needs --cosign-public-key,
    /// --cosign-identity, or a policy in the CR).
    #[arg(long, env = "REQUIRE_SIGNATURES")]
    pub require_signatures: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }
}
