//! The `install` flow (falcoctl's `driver install`, with verification and atomic caching).
//!
//! 1. A type without artifact (`modern_ebpf`) needs nothing: say so and stop. Download and
//!    compile both off: nothing to do.
//! 2. Undetermined target: only compilation makes sense (error if it is off).
//! 3. kmod cleanup (`rmmod`, `dkms remove`).
//! 4. Download: a cached file that matches its `.sha256` record is reused (with
//!    `--require-verified`, only if a repository vouches for the same digest); otherwise each
//!    repository in order: find what the file must hash to ([`crate::verify`]), refuse it if
//!    it cannot be verified and verification is required, download, verify, install.
//! 5. Compile with dkms when no download succeeded and compile is on (with download off, a
//!    cached file that matches its record is reused first, as falcoctl's build step does).
//! 6. Load: `insmod` the file, or `modprobe <name>` when nothing could be obtained (not with
//!    `--require-verified`, since that module cannot be verified).

use std::path::PathBuf;

use ed25519_dalek::VerifyingKey;
use falco_core::driver::{DriverType, driver_url, redact_url, repo_dir_url};

use crate::download::{Fetcher, HttpOptions, install_local, install_staged, verify_cached};
use crate::host::CommandRunner;
use crate::kmod::{self, CompileRequest, KmodOptions};
use crate::resolve::Resolved;
use crate::verify::{Expected, IndexPolicy, SerialStore, expected_for};
use crate::{Error, Result};

/// Options of the install flow.
#[derive(Debug, Clone)]
pub struct InstallOptions {
    /// Try to download a prebuilt driver.
    pub download: bool,
    /// Try to compile with dkms when download fails.
    pub compile: bool,
    /// Refuse drivers that cannot be verified.
    pub require_verified: bool,
    /// Key that must have signed repository indexes.
    pub trusted_key: Option<VerifyingKey>,
    /// HTTP behaviour.
    pub http: HttpOptions,
    /// Home directory holding the `.falco` cache.
    pub home: PathBuf,
    /// kmod tunables.
    pub kmod: KmodOptions,
}

/// Where the loaded module came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A cached file that matched its record.
    Cache,
    /// A cached file whose sha256 matched the repository's checksum for it, read from `url`'s
    /// directory and verified as `verification` says (with `requireVerified`, the cache is
    /// trusted only this way).
    CacheMatched {
        /// The driver's URL in the repository that vouched for it.
        url: String,
        /// How the repository's checksum was verified.
        verification: &'static str,
    },
    /// Downloaded from this URL.
    Download {
        /// The URL.
        url: String,
        /// How it was verified.
        verification: &'static str,
    },
    /// Built locally with dkms.
    Compiled,
}

/// What `install` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The driver type needs no artifact.
    NoArtifact(DriverType),
    /// Download and compile were both disabled.
    NothingToDo,
    /// A module file was installed and loaded.
    Loaded {
        /// Its path in the cache.
        path: PathBuf,
        /// Where it came from.
        source: Source,
    },
    /// Nothing could be obtained but `modprobe <name>` loaded a system module.
    Fallback,
    /// A module file was obtained (as `source` says, verified as it says) but the kernel refused
    /// it; `message` is the load error. The run still fails ([`Outcome::into_result`]); the
    /// status report keeps where the file came from, so a person sees the download was fine
    /// and the kernel is the problem.
    NotLoaded {
        /// Its path in the cache.
        path: PathBuf,
        /// Where it came from.
        source: Source,
        /// Why the kernel refused it.
        message: String,
    },
}

impl Outcome {
    /// The run's result: a module the kernel refused fails the run.
    pub fn into_result(self) -> Result<Outcome> {
        match self {
            Outcome::NotLoaded { message, .. } => Err(Error::Load(message)),
            outcome => Ok(outcome),
        }
    }
}

/// Runs the install flow.
pub async fn install(
    resolved: &Resolved,
    opts: &InstallOptions,
    runner: &dyn CommandRunner,
) -> Result<Outcome> {
    let ty = resolved.driver;
    if !ty.has_artifact() {
        tracing::info!(driver = %ty, "no artifact needed: the modern eBPF probe is bundled in the Falco binary");
        return Ok(Outcome::NoArtifact(ty));
    }
    let mut download = opts.download;
    if !download && !opts.compile {
        tracing::info!("download and compile are both disabled: nothing to do");
        return Ok(Outcome::NothingToDo);
    }
    if let Some(why) = &resolved.undetermined {
        if !opts.compile {
            return Err(Error::UndeterminedTarget(why.clone()));
        }
        tracing::warn!(reason = %why, "target undetermined; only compiling the driver");
        download = false;
    }
    let name = &resolved.settings.name;
    kmod::cleanup(runner, name, &opts.kmod)?;

    let file = resolved.filename_for(ty)?;
    let dest = resolved.cache_path(&opts.home, &file)?;
    let mut failure = None;
    let mut obtained = None;
    if download {
        match obtain(resolved, opts, &file, &dest).await {
            Ok(source) => obtained = Some(source),
            Err(e) => {
                tracing::warn!(error = %e, "no prebuilt driver installed");
                failure = Some(e);
            }
        }
    }
    if obtained.is_none() && opts.compile && !download && !opts.require_verified {
        // As falcoctl's build step: an existing file is reused, but only once re-verified.
        if verify_cached(&dest)?.is_some() {
            tracing::info!(path = %dest.display(), "using the cached driver (checksum record matches)");
            obtained = Some(Source::Cache);
        }
    }
    if obtained.is_none() && opts.compile {
        let req = CompileRequest {
            name,
            version: &resolved.settings.version,
            kernel_release: &resolved.kernel_release_raw,
            arch: resolved.settings.arch,
            host_root: &resolved.settings.host_root,
        };
        match kmod::compile(runner, &opts.kmod, &req).and_then(|built| install_local(&built, &dest))
        {
            Ok(installed) => {
                tracing::info!(path = %installed.path.display(), sha256 = %installed.sha256, "compiled driver installed");
                obtained = Some(Source::Compiled);
            }
            Err(e) => {
                tracing::warn!(error = %e, "local compilation failed");
                failure = Some(e);
            }
        }
    }
    match obtained {
        Some(source) => match kmod::load(runner, &dest) {
            Ok(()) => Ok(Outcome::Loaded { path: dest, source }),
            Err(Error::Load(message)) => Ok(Outcome::NotLoaded {
                path: dest,
                source,
                message,
            }),
            Err(e) => Err(e),
        },
        None if opts.require_verified => Err(failure.unwrap_or(Error::NotFound { file })),
        None => match kmod::modprobe_fallback(runner, name) {
            Ok(()) => Ok(Outcome::Fallback),
            Err(e) => Err(failure.unwrap_or(e)),
        },
    }
}

/// Reuses a verified cached file or downloads one from the first repository that has it.
async fn obtain(
    resolved: &Resolved,
    opts: &InstallOptions,
    file: &str,
    dest: &std::path::Path,
) -> Result<Source> {
    let cached = verify_cached(dest)?;
    if cached.is_some() && !opts.require_verified {
        tracing::info!(path = %dest.display(), "using the cached driver (checksum record matches)");
        return Ok(Source::Cache);
    }
    let fetcher = Fetcher::new(opts.http.clone())?;
    let s = &resolved.settings;
    let key = opts.trusted_key.as_ref();
    let serials = SerialStore::in_dir(&resolved.cache_dir(&opts.home)?);
    let policy = key.map(|key| IndexPolicy {
        key,
        version: &s.version,
        arch: s.arch.as_str(),
        serials: &serials,
    });
    let mut last_error = None;
    for repo_url in &s.repos {
        let url = driver_url(repo_url, &s.version, s.arch, file);
        let dir = repo_dir_url(repo_url, &s.version, s.arch);
        let repo = redact_url(repo_url);
        let repo = repo.as_ref();
        let shown_url = redact_url(&url).into_owned();
        // Unless verification is required up front, the checksum and the driver are fetched
        // at the same time; the driver stays in its temporary file until checked.
        let (expected, staged) = if opts.require_verified || cached.is_some() {
            (
                expected_for(&fetcher, repo_url, &dir, file, policy.as_ref()).await,
                None,
            )
        } else {
            let (expected, staged) = tokio::join!(
                expected_for(&fetcher, repo_url, &dir, file, policy.as_ref()),
                fetcher.stage(&url, dest)
            );
            (expected, Some(staged))
        };
        let expected = match expected {
            Ok(expected) => expected,
            Err(e) => {
                tracing::warn!(repo, error = %e, "cannot read the repository's checksums; trying the next repository");
                last_error = Some(e);
                continue;
            }
        };
        if opts.require_verified
            && let Some(reason) = expected.unverified_reason(key.is_some())
        {
            let e = Error::Unverified {
                file: file.to_owned(),
                reason: reason.to_owned(),
            };
            tracing::warn!(repo, error = %e, "trying the next repository");
            last_error = Some(e);
            continue;
        }
        if let (Some(have), Some(want)) = (cached.as_deref(), expected.sha256())
            && have == want
        {
            tracing::info!(path = %dest.display(), verification = expected.label(), "using the cached driver (matches the repository)");
            return Ok(Source::CacheMatched {
                url: shown_url,
                verification: expected.label(),
            });
        }
        let installed = match staged {
            Some(staged) => staged.and_then(|staged| install_staged(staged, dest, &expected)),
            None => fetcher.download(&url, dest, &expected).await,
        };
        match installed {
            Ok(installed) => {
                if matches!(expected, Expected::Nothing) {
                    tracing::warn!(
                        url = %shown_url,
                        "the repository publishes no checksum: the driver was only checked for completeness"
                    );
                }
                tracing::info!(
                    url = %shown_url,
                    path = %installed.path.display(),
                    sha256 = %installed.sha256,
                    verification = expected.label(),
                    "driver downloaded and installed"
                );
                return Ok(Source::Download {
                    url: shown_url,
                    verification: expected.label(),
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "download failed; trying the next repository");
                if !matches!(e, Error::HttpStatus { status: 404, .. }) || last_error.is_none() {
                    last_error = Some(e);
                }
            }
        }
    }
    Err(match last_error {
        None | Some(Error::HttpStatus { status: 404, .. }) => Error::NotFound {
            file: file.to_owned(),
        },
        Some(e) => e,
    })
}
