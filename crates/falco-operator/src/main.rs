//! `falco-operator`: the instance operator.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Runs Falco on Kubernetes: turns Falco and Component resources into workloads, RBAC, Services
/// and ConfigMaps.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the CRDs of instance.falcosecurity.dev (Falco, Component) as YAML.
    Crd {
        /// Write one file per CRD into this directory instead of printing them.
        #[arg(long, value_name = "DIR")]
        output_dir: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crd { output_dir } => {
            print!(
                "{}",
                falco_api::render_crds(&falco_api::instance_crds(), output_dir.as_deref())?
            );
        }
    }
    Ok(())
}
