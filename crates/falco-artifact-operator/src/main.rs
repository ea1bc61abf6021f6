//! `falco-artifact-operator`: the per-node artifact sidecar.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// The per-node sidecar of every Falco pod: delivers Rulesfile, Plugin and Config resources to
/// the files Falco reads.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the CRDs of artifact.falcosecurity.dev (Rulesfile, Plugin, Config) as YAML.
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
                falco_api::render_crds(&falco_api::artifact_crds(), output_dir.as_deref())?
            );
        }
    }
    Ok(())
}
