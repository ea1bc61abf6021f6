//! Command line: falcoctl's `driver` flags and the driver-loader image's entrypoint form.
//!
//! Two shapes are accepted by one parser:
//! - `falco-driver-loader [driver flags] install|printenv|config|cleanup [flags]`, as
//!   `falcoctl driver …` (the driver flags are global, so they may also follow the
//!   subcommand);
//! - `falco-driver-loader auto|kmod|modern_ebpf [--compile] [--download] [--http-insecure]
//!   [--kernel-release v] [--kernel-version v] [--print-env] [--clean]`, as the
//!   `falco-driver-loader` image's entrypoint (drivers.md §2.4).
//!
//! Precedence, as falcoctl: flag > environment > falcoctl config file > default. Scalars use
//! clap's `env`; the list variables `FALCOCTL_DRIVER_TYPE` and `FALCOCTL_DRIVER_REPOS` are
//! split on `;` (and `,`) by [`DriverArgs::resolve`], and `HOST_ROOT` backs up
//! `FALCOCTL_DRIVER_HOSTROOT`.
//!
//! Repositories: `--repo` > `FALCOCTL_DRIVER_REPOS` > `DRIVERS_REPO` > the config file's
//! `driver.repos` > `https://download.falco.org/driver`, in both forms. `DRIVERS_REPO` is the
//! knob of the shell `falco-driver-loader` (Falco ≤ 0.36) and of the driver-storage proposal
//! (`docker run -e DRIVERS_REPO=…`, a container's `env`); falcoctl ignores it. It is honoured
//! as a fallback so those setups keep working, below `FALCOCTL_DRIVER_REPOS`, the name current
//! falcoctl reads, so that a deployment setting both gets what falcoctl would do.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};
use falco_core::driver::{Arch, DEFAULT_NAME, DEFAULT_REPO, DriverType};

use crate::config::FileDriverConfig;
use crate::{Error, Result};

/// Default falcoctl config file.
pub const DEFAULT_CONFIG: &str = "/etc/falcoctl/falcoctl.yaml";
/// Where driver sources are looked up when no version is given.
pub const DEFAULT_SRC_ROOT: &str = "/usr/src";

/// Puts the right Falco driver on this node (a verified, falcoctl-compatible loader).
#[derive(Debug, Parser)]
#[command(name = "falco-driver-loader", version, about, long_about = None, disable_version_flag = true)]
pub struct Cli {
    /// Print the loader's version (--version is falcoctl's driver version)
    #[arg(short = 'V', long = "loader-version", action = ArgAction::Version)]
    pub loader_version: Option<bool>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// Which driver, for which host (global).
    #[command(flatten)]
    pub driver: DriverArgs,
    /// Logging (global).
    #[command(flatten)]
    pub log: LogArgs,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Download (or compile) the driver, verify it, install it and load it.
    Install(InstallArgs),
    /// Print the resolved driver variables as KEY="value" lines.
    Printenv,
    /// Store the driver choice and set Falco's engine.kind.
    Config(ConfigArgs),
    /// Unload the kernel module and remove it from dkms.
    Cleanup(CleanupArgs),
    /// Entrypoint form: pick modern_ebpf, else kmod, then install.
    Auto(EntrypointArgs),
    /// Entrypoint form: use the kernel module.
    Kmod(EntrypointArgs),
    /// Entrypoint form: use the modern eBPF probe (no artifact needed).
    #[command(name = "modern_ebpf", alias = "modern-bpf")]
    ModernEbpf(EntrypointArgs),
}

/// falcoctl's persistent `driver` flags.
#[derive(Debug, Clone, Default, Args)]
pub struct DriverArgs {
    /// Driver types to try, in order (modern_ebpf, kmod) [env: FALCOCTL_DRIVER_TYPE, ';'-separated] [default: modern_ebpf,kmod]
    #[arg(long = "type", global = true, value_delimiter = ',', value_parser = parse_type)]
    pub types: Vec<DriverType>,
    /// Driver version [default: newest /usr/src/falco-* directory]
    #[arg(long, global = true, env = "FALCOCTL_DRIVER_VERSION")]
    pub version: Option<String>,
    /// Driver repositories, tried in order [env: FALCOCTL_DRIVER_REPOS, ';'-separated] [default: https://download.falco.org/driver]
    #[arg(long = "repo", global = true, value_delimiter = ',')]
    pub repos: Vec<String>,
    /// Driver name [default: falco]
    #[arg(long, global = true, env = "FALCOCTL_DRIVER_NAME")]
    pub name: Option<String>,
    /// Absolute path where the host filesystem is mounted [env: HOST_ROOT too] [default: /]
    #[arg(long, global = true, env = "FALCOCTL_DRIVER_HOSTROOT")]
    pub host_root: Option<PathBuf>,
    /// Kernel release to use instead of the running kernel's (uname -r)
    #[arg(long, global = true)]
    pub kernelrelease: Option<String>,
    /// Kernel version to use instead of the running kernel's (uname -v)
    #[arg(long, global = true)]
    pub kernelversion: Option<String>,
    /// Architecture of the driver (x86_64, aarch64) [default: this machine's]
    #[arg(long, global = true, value_parser = parse_arch)]
    pub arch: Option<Arch>,
    /// falcoctl config file (read for defaults, written by config)
    #[arg(long, global = true, default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// Log host commands (rmmod, insmod, dkms, …) instead of running them
    #[arg(long, global = true, env = "FALCO_DRIVER_DRY_RUN")]
    pub dry_run: bool,
    /// Write what install did (driver, kernel, source, sha256, verification, error) as JSON to this file
    #[arg(
        long,
        global = true,
        env = "FALCO_DRIVER_STATUS_FILE",
        value_name = "FILE"
    )]
    pub status_file: Option<PathBuf>,
}

/// Logging flags.
#[derive(Debug, Clone, Args)]
pub struct LogArgs {
    /// Log level (error, warn, info, debug, trace)
    #[arg(
        long,
        global = true,
        env = "FALCOCTL_LOG_LEVEL",
        default_value = "info"
    )]
    pub log_level: String,
    /// Log format
    #[arg(long, global = true, env = "FALCOCTL_LOG_FORMAT", value_enum, default_value_t = LogFormat::Color)]
    pub log_format: LogFormat,
}

/// Log output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable, coloured on a terminal.
    Color,
    /// Human-readable, never coloured.
    Text,
    /// One JSON object per line.
    Json,
}

/// HTTP flags shared by `install` and the entrypoint form.
#[derive(Debug, Clone, Args)]
pub struct HttpArgs {
    /// Skip TLS certificate verification
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true",
          default_value_t = false, action = ArgAction::Set)]
    pub http_insecure: bool,
    /// Timeout of each HTTP request (Go duration: 60s, 1m30s, 500ms)
    #[arg(long, default_value = "60s", value_parser = parse_go_duration)]
    pub http_timeout: Duration,
    /// Extra request headers, comma-separated "Key: value" items
    #[arg(long, env = "FALCOCTL_DRIVER_HTTP_HEADERS", default_value = "")]
    pub http_headers: String,
    /// Retries after a connection error, a timeout, a truncated body, a 5xx or a 429
    #[arg(long, default_value_t = 3)]
    pub http_retries: u32,
}

/// Verification flags shared by `install` and the entrypoint form.
#[derive(Debug, Clone, Default, Args)]
pub struct VerifyArgs {
    /// Public key (base64 ed25519) that must have signed the repository's index.json
    #[arg(long, env = "FALCO_DRIVER_TRUSTED_KEY")]
    pub trusted_key: Option<PathBuf>,
    /// Refuse any driver that cannot be verified against a published checksum
    /// (against the signed index when --trusted-key is given)
    #[arg(long, env = "FALCO_DRIVER_REQUIRE_VERIFIED", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", default_value_t = false, action = ArgAction::Set)]
    pub require_verified: bool,
}

/// `install` flags.
#[derive(Debug, Clone, Args)]
pub struct InstallArgs {
    /// Try to download a prebuilt driver
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true",
          default_value_t = true, action = ArgAction::Set)]
    pub download: bool,
    /// Try to compile the driver locally with dkms when no download succeeds
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true",
          default_value_t = true, action = ArgAction::Set)]
    pub compile: bool,
    /// Accepted for falcoctl compatibility; kernel headers are not downloaded automatically
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true",
          default_value_t = true, action = ArgAction::Set)]
    pub download_headers: bool,
    /// HTTP options.
    #[command(flatten)]
    pub http: HttpArgs,
    /// Verification options.
    #[command(flatten)]
    pub verify: VerifyArgs,
}

/// `config` flags.
#[derive(Debug, Clone, Args)]
pub struct ConfigArgs {
    /// Write Falco's engine.kind into <falco-config-dir>/config.d/engine-kind-falcoctl.yaml
    #[arg(long, env = "FALCOCTL_DRIVER_CONFIG_UPDATE_FALCO", num_args = 0..=1,
          require_equals = true, default_missing_value = "true", default_value_t = true,
          action = ArgAction::Set)]
    pub update_falco: bool,
    /// Falco's configuration directory
    #[arg(
        long,
        env = "FALCOCTL_DRIVER_CONFIG_FALCO_CONFIG_DIR",
        default_value = "/etc/falco"
    )]
    pub falco_config_dir: PathBuf,
    /// Namespace of a ConfigMap holding falco.yaml (not supported: falco.yaml is read from
    /// --falco-config-dir)
    #[arg(long, env = "FALCOCTL_DRIVER_CONFIG_NAMESPACE")]
    pub namespace: Option<String>,
    /// Name of that ConfigMap (not supported, see --namespace)
    #[arg(long, env = "FALCOCTL_DRIVER_CONFIG_CONFIGMAP")]
    pub configmap: Option<String>,
}

/// `cleanup` flags.
#[derive(Debug, Clone, Args)]
pub struct CleanupArgs {
    /// Seconds between rmmod attempts
    #[arg(long, default_value_t = 5, hide = true)]
    pub rmmod_wait: u64,
}

/// The image entrypoint's flags (drivers.md §2.4).
#[derive(Debug, Clone, Args)]
pub struct EntrypointArgs {
    /// Unload and remove an installed driver, then exit
    #[arg(long)]
    pub clean: bool,
    /// Compile the driver locally (with --download: only these; neither: both)
    #[arg(long)]
    pub compile: bool,
    /// Download a prebuilt driver (with --compile: only these; neither: both)
    #[arg(long)]
    pub download: bool,
    /// Set the kernel release
    #[arg(long, value_name = "RELEASE")]
    pub kernel_release: Option<String>,
    /// Set the kernel version
    #[arg(long, value_name = "VERSION")]
    pub kernel_version: Option<String>,
    /// Print the variables and exit
    #[arg(long)]
    pub print_env: bool,
    /// HTTP options.
    #[command(flatten)]
    pub http: HttpArgs,
    /// Verification options.
    #[command(flatten)]
    pub verify: VerifyArgs,
    /// Config options.
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// Driver settings after applying flags, environment, config file and defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriverSettings {
    /// Types to try, in order.
    pub types: Vec<DriverType>,
    /// Driver version (unescaped).
    pub version: String,
    /// Repositories, in order.
    pub repos: Vec<String>,
    /// Driver name.
    pub name: String,
    /// Host root (absolute, an existing directory).
    pub host_root: PathBuf,
    /// Kernel release override.
    pub kernel_release: Option<String>,
    /// Kernel version override.
    pub kernel_version: Option<String>,
    /// Architecture.
    pub arch: Arch,
}

fn parse_type(s: &str) -> Result<DriverType, String> {
    s.parse()
        .map_err(|e: falco_core::driver::DriverError| e.to_string())
}

fn parse_arch(s: &str) -> Result<Arch, String> {
    s.parse()
        .map_err(|e: falco_core::driver::DriverError| e.to_string())
}

/// Splits a list environment variable on `;` and `,` (falcoctl accepts both).
fn split_list(value: &str) -> Vec<String> {
    value
        .split([';', ','])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

impl DriverArgs {
    /// Applies falcoctl's precedence. `env` looks up environment variables (clap has already
    /// applied those of the scalar flags); `file` is the `driver` section of the falcoctl
    /// config; `src_root` is where `<name>-<version>` source trees live.
    pub fn resolve(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
        file: &FileDriverConfig,
        src_root: &Path,
    ) -> Result<DriverSettings> {
        let types = if !self.types.is_empty() {
            self.types.clone()
        } else if let Some(v) = env("FALCOCTL_DRIVER_TYPE").filter(|v| !v.is_empty()) {
            parse_types(&split_list(&v))?
        } else if !file.types.is_empty() {
            parse_types(&file.types)?
        } else {
            vec![DriverType::ModernEbpf, DriverType::Kmod]
        };
        let repos = if !self.repos.is_empty() {
            self.repos.clone()
        } else if let Some(v) = env("FALCOCTL_DRIVER_REPOS").filter(|v| !v.is_empty()) {
            split_list(&v)
        } else if let Some(v) = env("DRIVERS_REPO").filter(|v| !v.trim().is_empty()) {
            split_list(&v)
        } else if !file.repos.is_empty() {
            file.repos.clone()
        } else {
            vec![DEFAULT_REPO.to_owned()]
        };
        for repo in &repos {
            validate_repo(repo)?;
        }
        let name = self
            .name
            .clone()
            .or_else(|| file.name.clone())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| DEFAULT_NAME.to_owned());
        let host_root = self
            .host_root
            .clone()
            .or_else(|| {
                env("HOST_ROOT")
                    .filter(|v| !v.is_empty())
                    .map(PathBuf::from)
            })
            .or_else(|| file.host_root.clone().map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("/"));
        validate_host_root(&host_root)?;
        let version = match self
            .version
            .clone()
            .or_else(|| file.version.clone())
            .filter(|v| !v.is_empty())
        {
            Some(v) => v,
            None => newest_source_version(src_root).ok_or_else(|| {
                Error::InvalidArgument("version is mandatory and cannot be empty".to_owned())
            })?,
        };
        let arch = match self.arch {
            Some(arch) => arch,
            None => Arch::current().map_err(|e| Error::InvalidArgument(e.to_string()))?,
        };
        Ok(DriverSettings {
            types,
            version,
            repos,
            name,
            host_root,
            kernel_release: self.kernelrelease.clone().filter(|s| !s.is_empty()),
            kernel_version: self.kernelversion.clone().filter(|s| !s.is_empty()),
            arch,
        })
    }
}

fn parse_types(items: &[String]) -> Result<Vec<DriverType>> {
    items
        .iter()
        .map(|t| {
            t.parse()
                .map_err(|e: falco_core::driver::DriverError| Error::InvalidArgument(e.to_string()))
        })
        .collect()
}

fn validate_repo(repo: &str) -> Result<()> {
    let bad = |why: &str| Error::InvalidArgument(format!("invalid repo {repo:?}: {why}"));
    let url = reqwest::Url::parse(repo).map_err(|e| bad(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(bad("expected an http(s) URL"));
    }
    Ok(())
}

/// falcoctl's host-root checks, plus: the directory must exist.
pub fn validate_host_root(path: &Path) -> Result<()> {
    let err = |reason: String| Error::HostRoot {
        path: path.to_owned(),
        reason,
    };
    if !path.is_absolute() {
        return Err(err("must be an absolute path".to_owned()));
    }
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(err("is not a directory".to_owned())),
        Err(e) => Err(err(e.to_string())),
    }
}

/// The newest `<src_root>/falco-<version>` by semver (falcoctl's default version); a
/// directory whose version is not semver is only used when it is the only one.
fn newest_source_version(src_root: &Path) -> Option<String> {
    let mut versions: Vec<String> = std::fs::read_dir(src_root)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_prefix("falco-"))
                .map(str::to_owned)
        })
        .collect();
    let key = |v: &String| -> Option<(u64, u64, u64)> {
        let core = v.split(['+', '-']).next()?;
        let mut parts = core.split('.').map(|p| p.parse::<u64>().ok());
        Some((parts.next()??, parts.next()??, parts.next()??))
    };
    versions.sort_by_key(|v| key(v));
    versions.pop()
}

/// Parses a Go duration (`60s`, `1m30s`, `500ms`, `1h`, `2.5s`).
pub fn parse_go_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {s:?} (examples: 60s, 1m30s, 500ms)");
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = 0f64;
    let mut rest = s;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let value: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += value * scale;
        rest = &rest[unit_len..];
    }
    Ok(Duration::from_secs_f64(total))
}

/// Parses `--http-headers`: comma-separated `Key: value` items. Unlike falcoctl, a value may
/// contain `:` and an item without `:` is an error rather than a crash.
pub fn parse_headers(s: &str) -> Result<Vec<(String, String)>> {
    s.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| {
            let (k, v) = item.split_once(':').ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "invalid --http-headers item {item:?}: expected \"Key: value\""
                ))
            })?;
            Ok((k.trim().to_owned(), v.trim().to_owned()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    fn resolve(
        args: &[&str],
        env: &[(&str, &str)],
        file: FileDriverConfig,
    ) -> Result<DriverSettings> {
        let cli = Cli::try_parse_from(args).map_err(|e| Error::InvalidArgument(e.to_string()))?;
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let lookup = move |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        cli.driver
            .resolve(&lookup, &file, Path::new("/nonexistent"))
    }

    #[test]
    fn precedence_is_flag_env_file_default() {
        let file = FileDriverConfig {
            types: vec!["kmod".into()],
            repos: vec!["https://file".into()],
            name: Some("filename".into()),
            version: Some("1.0.0".into()),
            host_root: Some("/".into()),
        };
        let s = resolve(&["x", "printenv"], &[], file.clone()).unwrap();
        assert_eq!(s.types, [DriverType::Kmod]);
        assert_eq!(s.repos, ["https://file"]);
        assert_eq!((s.name.as_str(), s.version.as_str()), ("filename", "1.0.0"));

        let env = [
            ("FALCOCTL_DRIVER_TYPE", "kmod;modern_ebpf"),
            ("FALCOCTL_DRIVER_REPOS", "https://a;https://b,https://c"),
            ("HOST_ROOT", "/tmp"),
        ];
        let s = resolve(&["x", "printenv"], &env, file.clone()).unwrap();
        assert_eq!(s.types, [DriverType::Kmod, DriverType::ModernEbpf]);
        assert_eq!(s.repos, ["https://a", "https://b", "https://c"]);
        assert_eq!(s.host_root, PathBuf::from("/tmp"));

        let s = resolve(
            &[
                "x",
                "--repo",
                "https://f1,https://f2",
                "install",
                "--type",
                "modern_ebpf",
                "--host-root",
                "/",
            ],
            &env,
            file,
        )
        .unwrap();
        assert_eq!(s.types, [DriverType::ModernEbpf]);
        assert_eq!(s.repos, ["https://f1", "https://f2"]);
        assert_eq!(s.host_root, PathBuf::from("/"));

        let s = resolve(
            &["x", "--version", "2.0.0", "printenv"],
            &[],
            FileDriverConfig::default(),
        )
        .unwrap();
        assert_eq!(s.types, [DriverType::ModernEbpf, DriverType::Kmod]);
        assert_eq!(s.repos, [DEFAULT_REPO]);
        assert_eq!(s.name, "falco");
    }

    #[test]
    fn drivers_repo_sits_between_falcoctl_repos_and_the_config_file() {
        let file = FileDriverConfig {
            repos: vec!["https://file".into()],
            version: Some("1.0.0".into()),
            ..FileDriverConfig::default()
        };
        let seed = [("DRIVERS_REPO", "https://seed.example/driver")];
        let both = [
            ("DRIVERS_REPO", "https://seed.example/driver"),
            ("FALCOCTL_DRIVER_REPOS", "https://falcoctl.example/driver"),
        ];
        for form in [&["x", "printenv"][..], &["x", "kmod"][..]] {
            let s = resolve(form, &seed, file.clone()).unwrap();
            assert_eq!(s.repos, ["https://seed.example/driver"], "{form:?}");
            let s = resolve(form, &both, file.clone()).unwrap();
            assert_eq!(s.repos, ["https://falcoctl.example/driver"], "{form:?}");
            let with_flag = [form, &["--repo", "https://flag.example"][..]].concat();
            let s = resolve(&with_flag, &both, file.clone()).unwrap();
            assert_eq!(s.repos, ["https://flag.example"], "{form:?}");
            let s = resolve(form, &[], file.clone()).unwrap();
            assert_eq!(s.repos, ["https://file"], "{form:?}");
        }
        // The shell loader took a comma-separated list.
        let s = resolve(
            &["x", "printenv"],
            &[("DRIVERS_REPO", "https://a.example, https://b.example")],
            file.clone(),
        )
        .unwrap();
        assert_eq!(s.repos, ["https://a.example", "https://b.example"]);
        let err = resolve(&["x", "printenv"], &[("DRIVERS_REPO", "ftp://x")], file).unwrap_err();
        assert!(err.to_string().starts_with("invalid repo"), "{err}");
    }

    #[test]
    fn bad_values_are_rejected_with_falcoctl_messages() {
        let none = FileDriverConfig::default();
        let err = resolve(&["x", "printenv"], &[], none.clone()).unwrap_err();
        assert_eq!(err.to_string(), "version is mandatory and cannot be empty");
        let err = resolve(
            &["x", "--version", "1", "--host-root", "foo/", "printenv"],
            &[],
            none.clone(),
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "host-root foo/: must be an absolute path");
        let err = resolve(
            &["x", "--version", "1", "--type", "foo", "printenv"],
            &[],
            none.clone(),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("unsupported driver type specified: foo"),
            "{err}"
        );
        let err = resolve(
            &["x", "--version", "1", "--repo", "not a url", "printenv"],
            &[],
            none,
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("invalid repo"), "{err}");
    }

    #[test]
    fn go_durations_and_headers_parse() {
        assert_eq!(parse_go_duration("60s").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_go_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(
            parse_go_duration("250ms").unwrap(),
            Duration::from_millis(250)
        );
        assert!(parse_go_duration("10").is_err());
        assert!(parse_go_duration("").is_err());
        assert_eq!(
            parse_headers("X-A: 1, Authorization: Basic a:b").unwrap(),
            [
                ("X-A".into(), "1".into()),
                ("Authorization".into(), "Basic a:b".into())
            ]
        );
        assert!(parse_headers("nocolon").is_err());
        assert!(parse_headers("").unwrap().is_empty());
    }

    #[test]
    fn newest_source_version_prefers_semver() {
        let dir = tempfile::tempdir().unwrap();
        for v in [
            "falco-7.0.0+driver",
            "falco-10.2.0+driver",
            "falco-9.1.0",
            "other",
        ] {
            std::fs::create_dir(dir.path().join(v)).unwrap();
        }
        assert_eq!(
            newest_source_version(dir.path()).as_deref(),
            Some("10.2.0+driver")
        );
    }

    #[test]
    fn bool_flags_take_go_style_values() {
        let cli = Cli::try_parse_from(["x", "install", "--download=false", "--compile"]).unwrap();
        let Command::Install(args) = cli.command else {
            panic!("install")
        };
        assert!(!args.download && args.compile);
        let cli = Cli::try_parse_from(["x", "kmod", "--compile", "--http-insecure"]).unwrap();
        let Command::Kmod(args) = cli.command else {
            panic!("kmod")
        };
        assert!(args.compile && !args.download && args.http.http_insecure);
    }
}
