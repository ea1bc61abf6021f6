//! What a repository says a driver must hash to, and how much to trust it.
//!
//! Sources, per repository (contract in [`falco_core::index`]):
//! 1. with `--trusted-key`: `<repo>/<version>/<arch>/index.json` and `index.json.sig`, and
//!    nothing else. A missing index or signature, a signature that does not verify, an index
//!    for another version or arch, an expired or legacy index (no serial and expiry), one
//!    whose serial is lower than the newest seen from that repository ([`SerialStore`]), or
//!    a file the index does not list makes the repository fail for this driver (error, next
//!    repository); there is no fallback to the `.sha256`. A file listed in a verified, fresh
//!    index is [`Expected::Signed`].
//! 2. without a key, `<driver URL>.sha256` (`sha256sum` format): [`Expected::Checksum`]. It
//!    protects against truncation and corruption, not against a compromised repository.
//! 3. without a key, nothing published: [`Expected::Nothing`].
//!
//! `--require-verified` accepts [`Expected::Signed`] when a trusted key is given, and
//! [`Expected::Signed`] or [`Expected::Checksum`] otherwise.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use ed25519_dalek::VerifyingKey;
use falco_core::driver::{path_escape, redact_url};
use falco_core::index::{self, Freshness, INDEX_FILE, SHA256_SUFFIX, SIGNATURE_FILE};

use crate::download::Fetcher;
use crate::{Error, Result};

/// Largest index or checksum file accepted.
const METADATA_LIMIT: u64 = 16 * 1024 * 1024;

/// The expected content of a driver file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expected {
    /// Listed in an index whose signature verified with the trusted key.
    Signed {
        /// Lowercase hex sha256.
        sha256: String,
        /// Size in bytes.
        size: u64,
    },
    /// Published as `<file>.sha256`.
    Checksum {
        /// Lowercase hex sha256.
        sha256: String,
    },
    /// The repository publishes nothing to check the file against.
    Nothing,
}

impl Expected {
    /// The expected digest, if any.
    pub fn sha256(&self) -> Option<&str> {
        match self {
            Self::Signed { sha256, .. } | Self::Checksum { sha256 } => Some(sha256),
            Self::Nothing => None,
        }
    }

    /// The expected size, if known.
    pub fn size(&self) -> Option<u64> {
        match self {
            Self::Signed { size, .. } => Some(*size),
            _ => None,
        }
    }

    /// Why this does not satisfy `--require-verified`, if it does not.
    pub fn unverified_reason(&self, key_given: bool) -> Option<&'static str> {
        match (self, key_given) {
            (Self::Signed { .. }, _) | (Self::Checksum { .. }, false) => None,
            (Self::Checksum { .. }, true) => Some(
                "not listed in an index signed by the trusted key (only a .sha256 is published)",
            ),
            (Self::Nothing, _) => Some("the repository publishes no checksum for it"),
        }
    }

    /// A short label for logs.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Signed { .. } => "signed index",
            Self::Checksum { .. } => "sha256 file",
            Self::Nothing => "unverified",
        }
    }
}

/// Reads a trusted public key file (base64 of 32 bytes).
pub fn load_trusted_key(path: &Path) -> Result<VerifyingKey> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::TrustedKey {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    index::parse_public_key(&text).map_err(|e| Error::TrustedKey {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// What a signed index must be, beyond its signature: for the version and arch asked for,
/// not expired, not older than the newest seen from the same repository.
#[derive(Debug, Clone)]
pub struct IndexPolicy<'a> {
    /// The key that must have signed the index.
    pub key: &'a VerifyingKey,
    /// The driver version asked for (unescaped).
    pub version: &'a str,
    /// The architecture asked for.
    pub arch: &'a str,
    /// Where the newest serial seen per repository is kept (see [`SerialStore`]).
    pub serials: &'a SerialStore,
}

/// Finds what `file` must hash to in one repository directory (`<repo>/<version>/<arch>`).
///
/// With a policy (a trusted key), only a signed index counts: a missing index or signature,
/// an index that fails [`index::DriverIndex::check_fresh`], or a file it does not list is an
/// error, never a fallback to the `.sha256` file. The serial of an accepted index is recorded.
pub async fn expected_for(
    fetcher: &Fetcher,
    repo: &str,
    dir_url: &str,
    file: &str,
    policy: Option<&IndexPolicy<'_>>,
) -> Result<Expected> {
    if let Some(policy) = policy {
        return signed_expected(fetcher, repo, dir_url, file, policy).await;
    }
    let sha_url = format!("{dir_url}/{}{SHA256_SUFFIX}", path_escape(file));
    match fetcher.fetch_small(&sha_url, METADATA_LIMIT).await? {
        Some(bytes) => {
            let (sha256, _) =
                index::parse_sha256_file(&String::from_utf8_lossy(&bytes)).map_err(|source| {
                    Error::Index {
                        url: redact_url(&sha_url).into_owned(),
                        source,
                    }
                })?;
            Ok(Expected::Checksum { sha256 })
        }
        None => Ok(Expected::Nothing),
    }
}

async fn signed_expected(
    fetcher: &Fetcher,
    repo: &str,
    dir_url: &str,
    file: &str,
    policy: &IndexPolicy<'_>,
) -> Result<Expected> {
    let index_url = format!("{dir_url}/{INDEX_FILE}");
    let shown = redact_url(&index_url).into_owned();
    let unsigned = |what: &'static str| Error::Unsigned {
        url: shown.clone(),
        what,
    };
    let index_bytes = fetcher
        .fetch_small(&index_url, METADATA_LIMIT)
        .await?
        .ok_or_else(|| unsigned("no index.json"))?;
    let sig = fetcher
        .fetch_small(&format!("{dir_url}/{SIGNATURE_FILE}"), METADATA_LIMIT)
        .await?
        .ok_or_else(|| unsigned("no index.json.sig"))?;
    let index_error = |source| Error::Index {
        url: shown.clone(),
        source,
    };
    let index = index::verify(&index_bytes, &String::from_utf8_lossy(&sig), policy.key)
        .map_err(index_error)?;
    let repo_id = redact_url(repo).into_owned();
    let serial = index
        .check_fresh(&Freshness {
            version: policy.version,
            arch: policy.arch,
            now: unix_now(),
            seen: policy.serials.seen(&repo_id)?,
        })
        .map_err(index_error)?;
    policy.serials.record(&repo_id, serial)?;
    let entry = index.entry(file).ok_or_else(|| Error::NotInIndex {
        url: shown.clone(),
        file: file.to_owned(),
    })?;
    tracing::debug!(url = %shown, serial, expires = index.expires, "signed index verified");
    Ok(Expected::Signed {
        sha256: entry.sha256.clone(),
        size: entry.size,
    })
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The newest index serial seen per repository, for one driver version and arch: a JSON
/// object `{"<repository URL, credentials redacted>": <serial>}` in
/// `<home>/.falco/<version>/<arch>/index-serials.json`, beside the cached drivers, replaced
/// atomically (temporary file, fsync, rename).
#[derive(Debug, Clone)]
pub struct SerialStore {
    path: PathBuf,
}

/// File name of the serial store inside a cache directory.
pub const SERIALS_FILE: &str = "index-serials.json";

impl SerialStore {
    /// The store of a cache directory (`<home>/.falco/<version>/<arch>`).
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            path: dir.join(SERIALS_FILE),
        }
    }

    /// Where it is kept.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn load(&self) -> Result<BTreeMap<String, u64>> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::State {
                path: self.path.clone(),
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(Error::io("read", &self.path, e)),
        }
    }

    /// The newest serial seen from a repository.
    pub fn seen(&self, repo: &str) -> Result<Option<u64>> {
        Ok(self.load()?.get(repo).copied())
    }

    /// Records a serial if it is newer than the one kept.
    pub fn record(&self, repo: &str, serial: u64) -> Result<()> {
        let mut all = self.load()?;
        if all.get(repo).is_some_and(|&seen| seen >= serial) {
            return Ok(());
        }
        all.insert(repo.to_owned(), serial);
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
        let mut tmp =
            tempfile::NamedTempFile::new_in(dir).map_err(|e| Error::io("create", dir, e))?;
        let mut bytes = serde_json::to_vec_pretty(&all).unwrap_or_default();
        bytes.push(b'\n');
        tmp.write_all(&bytes)
            .and_then(|()| tmp.as_file().sync_all())
            .map_err(|e| Error::io("write", tmp.path().to_owned(), e))?;
        tmp.persist(&self.path)
            .map_err(|e| Error::io("rename", &self.path, e.error))?;
        crate::config::sync_dir(dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn require_verified_rules() {
        let signed = Expected::Signed {
            sha256: "a".into(),
            size: 1,
        };
        let sum = Expected::Checksum { sha256: "a".into() };
        assert_eq!(signed.unverified_reason(true), None);
        assert_eq!(signed.unverified_reason(false), None);
        assert_eq!(sum.unverified_reason(false), None);
        assert!(sum.unverified_reason(true).is_some());
        assert!(Expected::Nothing.unverified_reason(false).is_some());
        assert_eq!(signed.size(), Some(1));
        assert_eq!(sum.sha256(), Some("a"));
    }

    #[test]
    fn trusted_keys_load_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let key = index::signing_key_from_seed([3; 32]);
        let path = dir.path().join("key.pub");
        std::fs::write(&path, index::encode_public_key(&key.verifying_key())).unwrap();
        assert_eq!(load_trusted_key(&path).unwrap(), key.verifying_key());
        std::fs::write(&path, "garbage").unwrap();
        assert!(matches!(
            load_trusted_key(&path),
            Err(Error::TrustedKey { .. })
        ));
        assert!(load_trusted_key(&dir.path().join("missing")).is_err());
    }
}
