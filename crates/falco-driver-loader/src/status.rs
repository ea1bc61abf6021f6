//! `--status-file`: what the loader did on this node, as one small JSON document
//! ([`falco_core::driver::status::DriverStatus`]) that the node's artifact-operator sidecar
//! carries into the node's `NodeArtifacts` record.
//!
//! Written atomically (temporary file, fsync, rename) at the end of `install` and of the
//! entrypoint form, on success and on failure, so a reader sees the previous report or the new
//! one, never half of one. A failure to write it is logged and does not change the exit code.

use std::path::Path;

use falco_core::driver::status::{DriverOrigin, DriverStatus, Verification, reason};

use crate::Error;
use crate::install::{Outcome, Source};
use crate::resolve::Resolved;

/// The reason of an error, from the closed set of [`reason`].
pub fn reason_of(error: &Error) -> &'static str {
    match error {
        // A signed index that does not list the driver: the repository does not have it.
        Error::NotFound { .. } | Error::NotInIndex { .. } => reason::NOT_FOUND,
        Error::ChecksumMismatch { .. } | Error::Index { .. } => reason::VERIFICATION_FAILED,
        Error::Unverified { .. } | Error::Unsigned { .. } => reason::UNVERIFIED,
        Error::Http { .. }
        | Error::HttpStatus { .. }
        | Error::Truncated { .. }
        | Error::TooLarge { .. }
        | Error::HttpClient(_) => reason::REPOSITORY_UNAVAILABLE,
        Error::Compile(_) => reason::COMPILE_FAILED,
        Error::Load(_) => reason::LOAD_FAILED,
        Error::NoSupportedDriver(_) => reason::NO_SUPPORTED_DRIVER,
        Error::InvalidArgument(_)
        | Error::HostRoot { .. }
        | Error::TrustedKey { .. }
        | Error::UndeterminedTarget(_) => reason::INVALID_SETTINGS,
        _ => reason::LOADER_ERROR,
    }
}

fn verification_of(label: &str) -> Verification {
    if label.contains("sign") {
        Verification::Signature
    } else if label.contains("sha256") || label.contains("checksum") {
        Verification::Checksum
    } else {
        Verification::None
    }
}

/// The sha256 the cache's `.sha256` record holds for `path` (written once the file was
/// verified or built).
fn recorded_sha256(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(crate::download::record_path(path)).ok()?;
    falco_core::index::parse_sha256_file(&text)
        .ok()
        .map(|(sha, _)| sha)
}

/// The report of a run: `resolved` when the host was resolved, and what `install` gave.
pub fn build(resolved: Option<&Resolved>, result: &Result<Outcome, Error>) -> DriverStatus {
    let mut status = DriverStatus::default();
    if let Some(r) = resolved {
        status.kind = r.driver.as_str().to_owned();
        status.version = Some(r.settings.version.clone());
        status.target = Some(r.distro.target_id.clone()).filter(|t| !t.is_empty());
        status.kernel_release = Some(r.kernel_release_raw.clone());
        status.kernel_version = Some(r.kernel_version.clone());
        status.file = r.filename().ok().flatten();
    }
    match result {
        Err(e) => status.with_error(reason_of(e), &e.to_string()),
        Ok(Outcome::NoArtifact(_)) => {
            status.origin = Some(DriverOrigin::Bundled);
            status.loaded = true;
            status
        }
        Ok(Outcome::NothingToDo) => status.with_error(
            reason::INVALID_SETTINGS,
            "download and compile are both disabled: no driver was installed",
        ),
        Ok(Outcome::Fallback) => {
            status.origin = Some(DriverOrigin::System);
            status.loaded = true;
            status
        }
        Ok(Outcome::Loaded { path, source }) => {
            let mut status = obtained(status, resolved, path, source);
            status.loaded = true;
            status
        }
        Ok(Outcome::NotLoaded {
            path,
            source,
            message,
        }) => obtained(status, resolved, path, source).with_error(
            reason::LOAD_FAILED,
            &Error::Load(message.clone()).to_string(),
        ),
    }
}

/// Where an obtained module file came from and how it was verified.
fn obtained(
    mut status: DriverStatus,
    resolved: Option<&Resolved>,
    path: &Path,
    source: &Source,
) -> DriverStatus {
    status.sha256 = recorded_sha256(path);
    match source {
        Source::Cache => {
            status.origin = Some(DriverOrigin::Cached);
            // The cached file matched the record written when it was verified.
            status.verification = Verification::Checksum;
        }
        Source::Compiled => {
            status.origin = Some(DriverOrigin::Compiled);
            status.repository = Some("compiled".to_owned());
        }
        Source::Download { url, verification } | Source::CacheMatched { url, verification } => {
            status.origin = Some(if matches!(source, Source::Download { .. }) {
                DriverOrigin::Downloaded
            } else {
                DriverOrigin::Cached
            });
            status.verification = verification_of(verification);
            status.repository = resolved
                .and_then(|r| {
                    r.settings
                        .repos
                        .iter()
                        .find(|repo| url.starts_with(repo.trim_end_matches('/')))
                        .cloned()
                })
                .or_else(|| Some(url.clone()));
        }
    }
    status
}

/// Writes the report to `path`; logs (and otherwise ignores) a failure.
pub fn write(path: &Path, status: &DriverStatus) {
    let result = serde_json::to_vec_pretty(status)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
        .map_err(|e| Error::io("serialise", path, e))
        .and_then(|bytes| crate::config::write_atomic(path, &bytes, 0o644));
    match result {
        Ok(()) => {
            tracing::info!(path = %path.display(), loaded = status.loaded, "driver status written")
        }
        Err(e) => tracing::warn!(error = %e, "the driver status file could not be written"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_reasons_a_person_can_act_on() {
        let not_found = Err(Error::NotFound {
            file: "falco_x_1_1.ko".into(),
        });
        let s = build(None, &not_found);
        assert!(!s.loaded);
        assert_eq!(s.reason.as_deref(), Some(reason::NOT_FOUND));
        assert_eq!(
            s.error.as_deref(),
            Some("unable to find a prebuilt driver falco_x_1_1.ko in any repository")
        );
        let not_listed = Err(Error::NotInIndex {
            url: "https://repo.example/driver/1.0.0%2Bdriver/x86_64/index.json".into(),
            file: "falco_x_1_1.ko".into(),
        });
        assert_eq!(
            build(None, &not_listed).reason.as_deref(),
            Some(reason::NOT_FOUND)
        );
        let unsigned = Err(Error::Unsigned {
            url: "https://repo.example/driver/1.0.0%2Bdriver/x86_64/index.json".into(),
            what: "no index.json.sig",
        });
        assert_eq!(
            build(None, &unsigned).reason.as_deref(),
            Some(reason::UNVERIFIED)
        );
        let s = build(None, &Err(Error::Compile("no headers".into())));
        assert_eq!(s.reason.as_deref(), Some(reason::COMPILE_FAILED));
        let s = build(None, &Ok(Outcome::Fallback));
        assert!(s.loaded);
        assert_eq!(s.origin, Some(DriverOrigin::System));
        assert_eq!(verification_of("signed index"), Verification::Signature);
        assert_eq!(verification_of("sha256 file"), Verification::Checksum);
        assert_eq!(verification_of("unverified"), Verification::None);
    }

    #[test]
    fn a_module_the_kernel_refuses_keeps_where_it_came_from() {
        let refused = Ok(Outcome::NotLoaded {
            path: "/root/.falco/8.0.0+driver/x86_64/falco_debian_6.1.0_1.ko".into(),
            source: Source::Download {
                url: "https://repo.example/driver/8.0.0%2Bdriver/x86_64/falco_debian_6.1.0_1.ko"
                    .into(),
                verification: "signed index",
            },
            message: "insmod: ERROR: could not insert module: Function not implemented".into(),
        });
        let s = build(None, &refused);
        assert!(!s.loaded);
        assert_eq!(s.reason.as_deref(), Some(reason::LOAD_FAILED));
        assert_eq!(
            s.error.as_deref(),
            Some(
                "cannot load the kernel module: insmod: ERROR: could not insert module: Function not implemented"
            )
        );
        assert_eq!(s.origin, Some(DriverOrigin::Downloaded));
        assert_eq!(s.verification, Verification::Signature);
        // The run itself fails.
        assert!(matches!(
            refused.and_then(Outcome::into_result),
            Err(Error::Load(_))
        ));
    }

    #[test]
    fn a_cached_file_the_repository_vouched_for_says_how() {
        let matched = Ok(Outcome::Loaded {
            path: "/root/.falco/8.0.0+driver/x86_64/falco_debian_6.1.0_1.ko".into(),
            source: Source::CacheMatched {
                url: "https://repo.example/driver/8.0.0%2Bdriver/x86_64/falco_debian_6.1.0_1.ko"
                    .into(),
                verification: "signed index",
            },
        });
        let s = build(None, &matched);
        assert!(s.loaded);
        assert_eq!(s.origin, Some(DriverOrigin::Cached));
        assert_eq!(s.verification, Verification::Signature);
        assert_eq!(
            s.repository.as_deref(),
            Some("https://repo.example/driver/8.0.0%2Bdriver/x86_64/falco_debian_6.1.0_1.ko")
        );
        // Matched against its own record only: a checksum.
        let local = Ok(Outcome::Loaded {
            path: "/nonexistent.ko".into(),
            source: Source::Cache,
        });
        assert_eq!(build(None, &local).verification, Verification::Checksum);
    }

    #[test]
    fn the_file_is_replaced_atomically_and_parses_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("status.json");
        let s = build(None, &Ok(Outcome::Fallback));
        write(&path, &s);
        assert_eq!(DriverStatus::parse(&std::fs::read(&path).unwrap()), Some(s));
    }
}
