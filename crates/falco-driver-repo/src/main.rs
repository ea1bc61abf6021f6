//! `falco-driver-repo`: see the library documentation.

use clap::Parser as _;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = falco_driver_repo::cli::Cli::parse();
    falco_driver_repo::cli::run(cli).await?;
    Ok(())
}
