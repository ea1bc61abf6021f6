//! `falco-driver-loader` binary: parse, set up logging, dispatch (see the library docs).

use std::io::IsTerminal as _;
use std::process::ExitCode;

use clap::Parser as _;
use falco_driver_loader::cli::{Cli, LogFormat};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help, --version
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // One line: clap's first line ("error: …"), without usage and tips.
            let rendered = e.render().to_string();
            let line = rendered
                .lines()
                .next()
                .unwrap_or("error: invalid arguments");
            eprintln!("{line}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = init_logging(&cli.log.log_level, cli.log.log_format) {
        eprintln!("error: {e:#}");
        return ExitCode::from(2);
    }
    let mut stdout = std::io::stdout();
    match falco_driver_loader::app::run(cli, &mut stdout).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The message already carries its causes, on one line.
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(level: &str, format: LogFormat) -> anyhow::Result<()> {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(level)
        .map_err(|e| anyhow::anyhow!("invalid --log-level {level:?}: {e}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Color => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Text => builder.with_ansi(false).init(),
    }
    Ok(())
}
