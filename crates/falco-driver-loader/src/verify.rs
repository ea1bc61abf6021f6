//! What a repository says a driver must hash to, and how much to trust it.
//!
//! Sources, per repository (contract in [`falco_core::index`]):
//! 1. with `--trusted-key`: `<repo>/<version>/<arch>/index.json` and `index.json.sig`. A
//!    signature that does not verify makes the whole repository untrusted (error, next
//!    repository). A file listed in a verified index is [`Expected::Signed`].
//! 2. `<driver URL>.sha256` (`sha256sum` format): [`Expected::Checksum`]. It protects against
//!    truncation and corruption, not against a compromised repository.
//! 3. nothing published: [`Expected::Nothing`].
//!
//! `--require-verified` accepts [`Expected::Signed`] when a trusted key is given, and
//! [`Expected::Signed`] or [`Expected::Checksum`] otherwise.

use std::path::Path;

use ed25519_dalek::VerifyingKey;
use falco_core::index::{self, INDEX_FILE, SHA256_SUFFIX, SIGNATURE_FILE};

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

/// Finds what `file` must hash to in one repository directory (`<repo>/<version>/<arch>`).
pub async fn expected_for(
    fetcher: &Fetcher,
    dir_url: &str,
    file: &str,
    key: Option<&VerifyingKey>,
) -> Result<Expected> {
    if let Some(key) = key {
        let index_url = format!("{dir_url}/{INDEX_FILE}");
        if let Some(index_bytes) = fetcher.fetch_small(&index_url, METADATA_LIMIT).await? {
            let sig_url = format!("{dir_url}/{SIGNATURE_FILE}");
            match fetcher.fetch_small(&sig_url, METADATA_LIMIT).await? {
                None => tracing::warn!(url = %index_url, "index has no signature; ignoring it"),
                Some(sig) => {
                    let sig = String::from_utf8_lossy(&sig);
                    let index =
                        index::verify(&index_bytes, &sig, key).map_err(|source| Error::Index {
                            url: index_url.clone(),
                            source,
                        })?;
                    match index.entry(file) {
                        Some(entry) => {
                            return Ok(Expected::Signed {
                                sha256: entry.sha256.clone(),
                                size: entry.size,
                            });
                        }
                        None => {
                            tracing::warn!(url = %index_url, file, "file not listed in the signed index")
                        }
                    }
                }
            }
        }
    }
    let sha_url = format!("{dir_url}/{file}{SHA256_SUFFIX}");
    match fetcher.fetch_small(&sha_url, METADATA_LIMIT).await? {
        Some(bytes) => {
            let (sha256, _) =
                index::parse_sha256_file(&String::from_utf8_lossy(&bytes)).map_err(|source| {
                    Error::Index {
                        url: sha_url,
                        source,
                    }
                })?;
            Ok(Expected::Checksum { sha256 })
        }
        None => Ok(Expected::Nothing),
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
