//! Dispatch of a parsed command line (what `main` calls).

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};

use falco_core::driver::DriverType;

use crate::cli::{
    Cli, Command, ConfigArgs, DEFAULT_SRC_ROOT, DriverSettings, EntrypointArgs, HttpArgs,
    VerifyArgs, parse_headers,
};
use crate::config::{
    EngineKindUpdate, read_driver_config, store_driver_config, update_engine_kind,
};
use crate::download::HttpOptions;
use crate::host::{CommandRunner, DryRunRunner, RealRunner};
use crate::install::{InstallOptions, Outcome, install};
use crate::kmod::{self, KmodOptions};
use crate::resolve::{KernelFacts, Resolved, resolve};
use crate::verify::load_trusted_key;
use crate::{Result, printenv};

/// Runs a command line against the real host; printenv output goes to `out`.
pub async fn run(cli: Cli, out: &mut dyn std::io::Write) -> Result<()> {
    let runner: Box<dyn CommandRunner> = if cli.driver.dry_run {
        Box::new(DryRunRunner)
    } else {
        Box::new(RealRunner)
    };
    let env = |k: &str| std::env::var(k).ok();
    let file = read_driver_config(&cli.driver.config)?;
    let mut settings = cli
        .driver
        .resolve(&env, &file, Path::new(DEFAULT_SRC_ROOT))?;
    let config_path = cli.driver.config.clone();
    let status_file = cli.driver.status_file.clone();
    match cli.command {
        Command::Printenv => {
            let resolved = resolve(settings, &KernelFacts::running()?)?;
            write_out(out, &printenv::render(&resolved)?)
        }
        Command::Cleanup(args) => {
            let opts = KmodOptions {
                rmmod_wait: std::time::Duration::from_secs(args.rmmod_wait),
                ..KmodOptions::default()
            };
            kmod::cleanup(runner.as_ref(), &settings.name, &opts)
        }
        Command::Config(args) => {
            let resolved = resolve(settings, &KernelFacts::running()?)?;
            configure(&resolved, &config_path, &args)
        }
        Command::Install(args) => {
            let resolved = match KernelFacts::running().and_then(|facts| resolve(settings, &facts))
            {
                Ok(resolved) => resolved,
                Err(e) => return recorded(status_file.as_deref(), None, Err(e)),
            };
            let outcome =
                match install_options(args.download, args.compile, &args.http, &args.verify) {
                    Ok(opts) => install(&resolved, &opts, runner.as_ref()).await,
                    Err(e) => Err(e),
                };
            recorded(status_file.as_deref(), Some(&resolved), outcome)
        }
        Command::Auto(ep) | Command::Kmod(ep) | Command::ModernEbpf(ep) if ep.clean => {
            kmod::cleanup(runner.as_ref(), &settings.name, &KmodOptions::default())
        }
        ref cmd @ (Command::Auto(_) | Command::Kmod(_) | Command::ModernEbpf(_)) => {
            let (types, ep) = match cmd {
                Command::Kmod(ep) => (vec![DriverType::Kmod], ep),
                Command::ModernEbpf(ep) => (vec![DriverType::ModernEbpf], ep),
                Command::Auto(ep) => (vec![DriverType::ModernEbpf, DriverType::Kmod], ep),
                _ => unreachable!("matched above"),
            };
            settings.types = types;
            entrypoint(
                settings,
                ep,
                &config_path,
                status_file.as_deref(),
                runner.as_ref(),
                out,
            )
            .await
        }
    }
}

/// The image entrypoint: config, then install (or printenv / clean).
async fn entrypoint(
    mut settings: DriverSettings,
    ep: &EntrypointArgs,
    config_path: &Path,
    status_file: Option<&Path>,
    runner: &dyn CommandRunner,
    out: &mut dyn std::io::Write,
) -> Result<()> {
    if let Some(kr) = &ep.kernel_release {
        settings.kernel_release = Some(kr.clone());
    }
    if let Some(kv) = &ep.kernel_version {
        settings.kernel_version = Some(kv.clone());
    }
    let resolved = match KernelFacts::running().and_then(|facts| resolve(settings, &facts)) {
        Ok(resolved) => resolved,
        Err(e) if ep.print_env => return Err(e),
        Err(e) => return recorded(status_file, None, Err(e)),
    };
    if ep.print_env {
        return write_out(out, &printenv::render(&resolved)?);
    }
    let (download, compile) = if ep.download || ep.compile {
        (ep.download, ep.compile)
    } else {
        (true, true)
    };
    let outcome = match configure(&resolved, config_path, &ep.config)
        .and_then(|()| install_options(download, compile, &ep.http, &ep.verify))
    {
        Ok(opts) => install(&resolved, &opts, runner).await,
        Err(e) => Err(e),
    };
    recorded(status_file, Some(&resolved), outcome)
}

/// Logs the outcome, writes the status file (`--status-file`) either way, and returns the
/// error, if any.
fn recorded(
    status_file: Option<&Path>,
    resolved: Option<&Resolved>,
    outcome: Result<Outcome>,
) -> Result<()> {
    if let Some(path) = status_file {
        crate::status::write(path, &crate::status::build(resolved, &outcome));
    }
    report(outcome.and_then(Outcome::into_result)?);
    Ok(())
}

fn configure(resolved: &Resolved, config_path: &Path, args: &ConfigArgs) -> Result<()> {
    store_driver_config(config_path, &resolved.settings, resolved.driver)?;
    tracing::info!(path = %config_path.display(), driver = %resolved.driver, "driver configuration stored");
    if !args.update_falco {
        return Ok(());
    }
    if args.namespace.is_some() || args.configmap.is_some() {
        tracing::warn!(
            "reading falco.yaml from a ConfigMap is not supported; using {}",
            args.falco_config_dir.display()
        );
    }
    match update_engine_kind(&args.falco_config_dir, resolved.driver)? {
        EngineKindUpdate::Written(path) => {
            tracing::info!(path = %path.display(), kind = %resolved.driver, "Falco engine.kind set");
        }
        EngineKindUpdate::Skipped(kind) => {
            tracing::info!(
                kind,
                "Falco uses a non-driver engine; engine.kind left alone"
            );
        }
    }
    Ok(())
}

fn install_options(
    download: bool,
    compile: bool,
    http: &HttpArgs,
    verify: &VerifyArgs,
) -> Result<InstallOptions> {
    let trusted_key = verify
        .trusted_key
        .as_deref()
        .map(load_trusted_key)
        .transpose()?;
    Ok(InstallOptions {
        download,
        compile,
        require_verified: verify.require_verified,
        trusted_key,
        http: HttpOptions {
            insecure: http.http_insecure,
            timeout: http.http_timeout,
            headers: parse_headers(&http.http_headers)?,
            retries: http.http_retries,
            progress_bar: std::io::stderr().is_terminal(),
            ..HttpOptions::default()
        },
        home: std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/root")),
        kmod: KmodOptions::default(),
    })
}

fn report(outcome: Outcome) {
    match outcome {
        Outcome::Loaded { path, source } => {
            tracing::info!(path = %path.display(), ?source, "driver installed and loaded");
        }
        Outcome::Fallback => tracing::info!("a pre-existing system module was loaded"),
        Outcome::NoArtifact(ty) => tracing::info!(driver = %ty, "nothing to install"),
        // A refused module is an error by now (`Outcome::into_result`).
        Outcome::NothingToDo | Outcome::NotLoaded { .. } => {}
    }
}

fn write_out(out: &mut dyn std::io::Write, text: &str) -> Result<()> {
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| crate::Error::io("write", "stdout", e))
}
