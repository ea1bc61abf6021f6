//! `mirror --from URL`: copies drivers from another repository (such as upstream's
//! `https://download.falco.org/driver`), verifying sizes and checksums where present.

use bytes::Bytes;
use ed25519_dalek::VerifyingKey;
use falco_core::driver::{DriverFileName, redact_url};
use falco_core::index::{self, DriverIndex};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::publish::{Signer, Upload, check_segments, rebuild_index, upload_driver};
use crate::storage::Storage;
use crate::{Error, Result};

/// Characters escaped in a path segment of the source URL (like Go's `url.PathEscape`).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// What to mirror.
#[derive(Debug, Clone)]
pub struct MirrorRequest {
    /// Base URL of the source repository, e.g. `https://download.falco.org/driver`.
    pub from: String,
    /// Driver version.
    pub version: String,
    /// Architecture.
    pub arch: String,
    /// Files to copy; empty means every file of the source's `index.json`.
    pub files: Vec<String>,
    /// Verify the source's index signature with this key.
    pub public_key: Option<VerifyingKey>,
    /// Replace different content.
    pub force: bool,
}

/// What a mirror did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MirrorReport {
    /// Files copied.
    pub copied: u64,
    /// Files already present with the same content.
    pub unchanged: u64,
    /// Files verified against a checksum (from an index or a `.sha256`).
    pub verified: u64,
}

async fn fetch(client: &reqwest::Client, url: &str) -> Result<Option<Bytes>> {
    let failed = |reason: String| Error::Download {
        url: redact_url(url).into_owned(),
        reason,
    };
    let response = client
        .get(url)
        .send()
        .await
        .map_err(|e| failed(e.without_url().to_string()))?;
    if response.status() == reqwest::StatusCode::NOT_FOUND {
        return Ok(None);
    }
    if !response.status().is_success() {
        return Err(failed(format!("HTTP {}", response.status())));
    }
    response
        .bytes()
        .await
        .map(Some)
        .map_err(|e| failed(e.without_url().to_string()))
}

/// Copies the requested drivers into the storage and re-signs the index when a signer is
/// given (serial + 1, expiry renewed; the source's serial and expiry are not copied: this
/// repository's index is its own).
pub async fn mirror(
    storage: &Storage,
    req: &MirrorRequest,
    signer: Option<&Signer>,
) -> Result<MirrorReport> {
    check_segments(&req.version, &req.arch)?;
    let client = reqwest::Client::builder()
        .user_agent(concat!("falco-driver-repo/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| Error::Download {
            url: redact_url(&req.from).into_owned(),
            reason: e.to_string(),
        })?;
    let base = format!(
        "{}/{}/{}",
        req.from.trim_end_matches('/'),
        utf8_percent_encode(&req.version, SEGMENT),
        utf8_percent_encode(&req.arch, SEGMENT)
    );
    let index_url = format!("{base}/{}", index::INDEX_FILE);
    let shown_index_url = redact_url(&index_url).into_owned();
    let source_index: Option<DriverIndex> = match fetch(&client, &index_url).await? {
        None => None,
        Some(bytes) => Some(match &req.public_key {
            Some(key) => {
                let sig_url = format!("{base}/{}", index::SIGNATURE_FILE);
                let sig = fetch(&client, &sig_url).await?.unwrap_or_default();
                index::verify(&bytes, &String::from_utf8_lossy(&sig), key).map_err(|e| {
                    Error::Verify {
                        what: "signature",
                        key: shown_index_url.clone(),
                        expected: "a valid signature".into(),
                        actual: e.to_string(),
                    }
                })?
            }
            None => DriverIndex::parse(&bytes).map_err(|e| Error::Parse {
                key: shown_index_url.clone(),
                reason: e.to_string(),
            })?,
        }),
    };
    // The source's index must be the one of the version and arch asked for (not one copied
    // from another folder), and not expired when it says when it expires.
    if let Some(idx) = &source_index {
        for (what, got, wanted) in [
            ("version", &idx.version, &req.version),
            ("arch", &idx.arch, &req.arch),
        ] {
            if got != wanted {
                return Err(Error::Verify {
                    what,
                    key: shown_index_url.clone(),
                    expected: wanted.clone(),
                    actual: got.clone(),
                });
            }
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if let Some(expires) = idx.expires
            && expires <= now
        {
            return Err(Error::Verify {
                what: "expiry",
                key: shown_index_url.clone(),
                expected: format!("later than {now}"),
                actual: expires.to_string(),
            });
        }
    }
    if source_index.is_none() && req.public_key.is_some() {
        return Err(Error::Download {
            url: shown_index_url,
            reason: "no index.json to verify the signature of".into(),
        });
    }
    let files: Vec<String> = if req.files.is_empty() {
        match &source_index {
            Some(idx) => idx.files.iter().map(|f| f.file.clone()).collect(),
            None => {
                return Err(Error::Download {
                    url: shown_index_url,
                    reason: "no index.json: name the files to mirror".into(),
                });
            }
        }
    } else {
        req.files.clone()
    };
    let mut report = MirrorReport::default();
    for file in &files {
        if DriverFileName::parse(file).is_none() {
            return Err(Error::BadDriverName(file.clone()));
        }
        let url = format!("{base}/{}", utf8_percent_encode(file, SEGMENT));
        let bytes = fetch(&client, &url).await?.ok_or_else(|| Error::Download {
            url: redact_url(&url).into_owned(),
            reason: "HTTP 404".into(),
        })?;
        let actual = index::sha256_hex(&bytes);
        let expected = match source_index.as_ref().and_then(|i| i.entry(file)) {
            Some(entry) => {
                if entry.size != bytes.len() as u64 {
                    return Err(Error::Verify {
                        what: "size",
                        key: redact_url(&url).into_owned(),
                        expected: entry.size.to_string(),
                        actual: bytes.len().to_string(),
                    });
                }
                Some(entry.sha256.clone())
            }
            None => match fetch(&client, &format!("{url}{}", index::SHA256_SUFFIX)).await? {
                Some(text) => Some(
                    index::parse_sha256_file(&String::from_utf8_lossy(&text))
                        .map_err(|e| Error::Parse {
                            key: format!("{}{}", redact_url(&url), index::SHA256_SUFFIX),
                            reason: e.to_string(),
                        })?
                        .0,
                ),
                None => None,
            },
        };
        if let Some(expected) = expected {
            if expected != actual {
                return Err(Error::Verify {
                    what: "sha256",
                    key: redact_url(&url).into_owned(),
                    expected,
                    actual,
                });
            }
            report.verified += 1;
        }
        let key = format!("driver/{}/{}/{file}", req.version, req.arch);
        match upload_driver(storage, &key, file, bytes, req.force).await? {
            Upload::Unchanged => report.unchanged += 1,
            Upload::Created | Upload::Replaced => report.copied += 1,
        }
    }
    if let Some(signer) = signer {
        rebuild_index(storage, &req.version, &req.arch, signer).await?;
    }
    Ok(report)
}
