//! Command line of `falco-operator` (clap derive; every `run` flag has an environment fallback).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Runs Falco on Kubernetes: turns Falco and Component resources into workloads, RBAC, Services
/// and ConfigMaps.
#[derive(Parser, Debug)]
#[command(name = "falco-operator", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the operator.
    Run(Box<RunArgs>),
    /// Print the CRDs of instance.falcosecurity.dev (Falco, Component) as YAML.
    Crd {
        /// Write one file per CRD into this directory instead of printing them.
        #[arg(long, value_name = "DIR")]
        output_dir: Option<PathBuf>,
    },
    /// Print the ClusterRole the operator needs, as YAML.
    Rbac {
        /// Name of the ClusterRole.
        #[arg(long, default_value = "falco-operator")]
        name: String,
    },
    /// Before rolling out a kmod instance: which nodes would get a prebuilt driver from the
    /// repositories and which would compile one, grouped by target and kernel.
    DriverCoverage(CoverageArgs),
}

/// `falco-operator driver-coverage`.
#[derive(Args, Debug)]
pub struct CoverageArgs {
    /// Read the Nodes from this file (`kubectl get nodes -o json`; `-` for stdin) instead of
    /// listing them in the cluster of the current kubeconfig.
    #[arg(long, value_name = "FILE")]
    pub nodes: Option<PathBuf>,
    /// Driver repositories, tried in order (repeat the flag or separate with commas).
    #[arg(long = "repo", value_delimiter = ',', default_value = falco_core::driver::DEFAULT_REPO)]
    pub repos: Vec<String>,
    /// Driver version, e.g. 8.0.0+driver.
    #[arg(long)]
    pub driver_version: String,
    /// Public key file (base64 ed25519, from `falco-driver-repo keygen`) that must have signed
    /// each repository's index.json.
    #[arg(long, value_name = "FILE")]
    pub trusted_key: Option<PathBuf>,
    /// Timeout of each HTTP request, in seconds.
    #[arg(long, default_value_t = 30)]
    pub timeout_seconds: u64,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
    pub format: ReportFormat,
}

/// Output format of a report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    /// A table for a person.
    Table,
    /// JSON for a program.
    Json,
}

/// `falco-operator run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// Watch only this namespace (all namespaces when absent).
    #[arg(long, env = "WATCH_NAMESPACE", value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    /// Label-key glob patterns (`*` matches any run, `/` included) of CR labels not copied onto
    /// children; repeat the flag or separate with commas.
    #[arg(
        long = "excluded-labels",
        env = "EXCLUDED_LABELS",
        value_delimiter = ',',
        value_name = "GLOB"
    )]
    pub excluded_labels: Vec<String>,
    /// Image of the artifact-operator sidecar in Falco pods.
    #[arg(long, env = "ARTIFACT_OPERATOR_IMAGE", default_value = crate::DEFAULT_ARTIFACT_OPERATOR_IMAGE)]
    pub artifact_operator_image: String,
    /// Image of the driver loader in Falco pods with `spec.driver` kmod or auto, when the CR
    /// names none.
    #[arg(long, env = "DRIVER_LOADER_IMAGE", default_value = crate::DEFAULT_DRIVER_LOADER_IMAGE)]
    pub driver_loader_image: String,
    /// Reconcile every CR this often, in seconds, as a safety net (sends nothing when nothing changed).
    #[arg(long, env = "RESYNC_INTERVAL_SECONDS", default_value_t = 600)]
    pub resync_interval_seconds: u64,
    /// Reconciles running at once, per controller.
    #[arg(long, env = "CONCURRENCY", default_value_t = 16)]
    pub concurrency: u16,
    #[command(flatten)]
    pub admin: AdminArgs,
    #[command(flatten)]
    pub leader: LeaderArgs,
    #[command(flatten)]
    pub log: LogArgs,
}

/// The admin HTTP endpoints.
#[derive(Args, Debug)]
pub struct AdminArgs {
    /// Address of `/metrics` (`:8080` = all interfaces; `0` disables it).
    #[arg(long, env = "METRICS_BIND_ADDRESS", default_value = ":8080")]
    pub metrics_bind_address: String,
    /// Address of `/healthz` and `/readyz` (`0` disables it).
    #[arg(long, env = "HEALTH_PROBE_BIND_ADDRESS", default_value = ":8081")]
    pub health_probe_bind_address: String,
}

/// Leader election.
#[derive(Args, Debug)]
pub struct LeaderArgs {
    /// Run only while holding a Lease, so that one of several replicas is active.
    #[arg(long, env = "LEADER_ELECT")]
    pub leader_elect: bool,
    /// Name of the Lease.
    #[arg(
        long,
        env = "LEADER_ELECTION_ID",
        default_value = "falco-operator.instance.falcosecurity.dev"
    )]
    pub leader_election_id: String,
    /// Namespace of the Lease (default: the pod's namespace, else `default`).
    #[arg(long, env = "POD_NAMESPACE")]
    pub leader_election_namespace: Option<String>,
    /// Seconds a leader's Lease stays valid without renewal; a standby takes over after it expires.
    #[arg(long, env = "LEADER_ELECTION_LEASE_SECONDS", default_value_t = 15)]
    pub leader_election_lease_seconds: u64,
}

/// Logging.
#[derive(Args, Debug)]
pub struct LogArgs {
    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log filter (`tracing` syntax, e.g. `info,falco_operator=debug`).
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub log_level: String,
}

/// Log formats.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Parses a bind address: `0` → disabled; `:PORT` → all interfaces; else `HOST:PORT`.
pub fn bind_address(value: &str) -> Result<Option<SocketAddr>, String> {
    match value {
        "0" | "" => Ok(None),
        v if v.starts_with(':') => format!("0.0.0.0{v}")
            .parse()
            .map(Some)
            .map_err(|e| format!("{value:?}: {e}")),
        v => v.parse().map(Some).map_err(|e| format!("{value:?}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn bind_addresses() {
        assert_eq!(bind_address("0"), Ok(None));
        assert_eq!(
            bind_address(":8081"),
            Ok(Some("0.0.0.0:8081".parse().unwrap()))
        );
        assert_eq!(
            bind_address("127.0.0.1:9"),
            Ok(Some("127.0.0.1:9".parse().unwrap()))
        );
        assert!(bind_address("nonsense").is_err());
    }

    #[test]
    fn excluded_labels_accept_commas_and_repeats() {
        let cli = Cli::try_parse_from([
            "falco-operator",
            "run",
            "--excluded-labels",
            "a/*,b",
            "--excluded-labels",
            "c",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("not run")
        };
        assert_eq!(args.excluded_labels, ["a/*", "b", "c"]);
    }
}
