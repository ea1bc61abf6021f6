//! `publish` (drivers, checksums, signed index) and `keygen`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use ed25519_dalek::SigningKey;
use falco_core::index::{self, DriverIndex, IndexEntry};

use crate::storage::Storage;
use crate::{Error, Result};
use falco_core::driver::{DriverFileName, is_repository_segment};

/// How many times the index is rebuilt before publishing gives up.
const INDEX_ATTEMPTS: u32 = 10;

/// Default validity of a written index (`--index-validity`): 30 days.
pub const DEFAULT_INDEX_VALIDITY: Duration = Duration::from_secs(30 * 24 * 3600);

/// How a writer signs an index: the key, and how long the index stays valid.
#[derive(Debug, Clone)]
pub struct Signer {
    /// The ed25519 signing key.
    pub key: SigningKey,
    /// Written indexes expire this long after they are written.
    pub validity: Duration,
}

impl Signer {
    /// `expires` of an index written now.
    fn expires(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            .saturating_add(self.validity.as_secs())
    }
}

/// Parses `--index-validity`: a number of seconds with an optional unit, `s`, `m`, `h` or `d`
/// (`30d`, `12h`, `3600`); at least one second.
pub fn parse_validity(text: &str) -> std::result::Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "{text:?}: expected a number and s, m, h or d (e.g. 30d)"
            ));
        }
    };
    let secs = number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .filter(|&n| n > 0)
        .ok_or_else(|| {
            format!("{text:?}: expected a positive number and s, m, h or d (e.g. 30d)")
        })?;
    Ok(Duration::from_secs(secs))
}

/// What a publish did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PublishReport {
    /// Drivers uploaded.
    pub uploaded: Vec<String>,
    /// Drivers already present with the same content.
    pub unchanged: Vec<String>,
    /// Drivers replaced because of `--force`.
    pub replaced: Vec<String>,
    /// Index prefixes (`driver/<version>/<arch>/`) written.
    pub indexes_written: Vec<String>,
}

/// A local driver found in the directory to publish.
#[derive(Debug, Clone)]
struct LocalDriver {
    version: String,
    arch: String,
    file: String,
    path: PathBuf,
}

fn read_dir(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|source| Error::LocalFile {
        op: "list",
        path: dir.into(),
        source,
    })?;
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| Error::LocalFile {
            op: "list",
            path: dir.into(),
            source,
        })?;
        out.push(entry.path());
    }
    out.sort();
    Ok(out)
}

fn name_of(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Refuses a driver version or arch that cannot be a repository path segment.
pub(crate) fn check_segments(version: &str, arch: &str) -> Result<()> {
    for (what, value) in [("driver version", version), ("arch", arch)] {
        if !is_repository_segment(value) {
            return Err(Error::BadSegment {
                what,
                value: value.to_owned(),
            });
        }
    }
    Ok(())
}

/// Finds drivers in the driverkit output layout `<dir>/<version>/<arch>/<file>.{ko,o}`.
fn find_drivers(dir: &Path) -> Result<Vec<LocalDriver>> {
    let mut drivers = Vec::new();
    for version_dir in read_dir(dir)?.into_iter().filter(|p| p.is_dir()) {
        for arch_dir in read_dir(&version_dir)?.into_iter().filter(|p| p.is_dir()) {
            for file in read_dir(&arch_dir)?.into_iter().filter(|p| p.is_file()) {
                let name = name_of(&file);
                if !(name.ends_with(".ko") || name.ends_with(".o")) {
                    continue;
                }
                let (version, arch) = (name_of(&version_dir), name_of(&arch_dir));
                if DriverFileName::parse(&name).is_none() {
                    return Err(Error::BadDriverName(file.display().to_string()));
                }
                check_segments(&version, &arch)?;
                drivers.push(LocalDriver {
                    version,
                    arch,
                    file: name,
                    path: file,
                });
            }
        }
    }
    if drivers.is_empty() {
        return Err(Error::NothingToPublish(dir.into()));
    }
    Ok(drivers)
}

/// The SHA-256 of a stored driver: from its `.sha256` when that parses, else by hashing it.
async fn stored_sha256(storage: &Storage, key: &str) -> Result<Option<String>> {
    if let Some(text) = storage
        .read(&format!("{key}{}", index::SHA256_SUFFIX))
        .await?
        && let Ok((hash, _)) = index::parse_sha256_file(&String::from_utf8_lossy(&text))
    {
        return Ok(Some(hash));
    }
    Ok(storage.sha256(key).await?.map(|(hash, _)| hash))
}

/// Uploads the drivers found under `dir` and rebuilds the signed index of every
/// version/arch touched, renewing it (serial + 1, new expiry) even when no driver changed.
/// Idempotent for the drivers; refuses to replace different content unless `force`.
pub async fn publish(
    storage: &Storage,
    dir: &Path,
    signer: &Signer,
    force: bool,
) -> Result<PublishReport> {
    let drivers = find_drivers(dir)?;
    let mut report = PublishReport::default();
    let mut touched: BTreeSet<(String, String)> = BTreeSet::new();
    for d in &drivers {
        let bytes = std::fs::read(&d.path).map_err(|source| Error::LocalFile {
            op: "read",
            path: d.path.clone(),
            source,
        })?;
        touched.insert((d.version.clone(), d.arch.clone()));
        let key_name = format!("driver/{}/{}/{}", d.version, d.arch, d.file);
        match upload_driver(storage, &key_name, &d.file, Bytes::from(bytes), force).await? {
            Upload::Unchanged => report.unchanged.push(key_name),
            Upload::Created => report.uploaded.push(key_name),
            Upload::Replaced => report.replaced.push(key_name),
        }
    }
    for (version, arch) in &touched {
        if rebuild_index(storage, version, arch, signer).await? {
            report
                .indexes_written
                .push(format!("driver/{version}/{arch}/"));
        }
    }
    Ok(report)
}

/// What [`upload_driver`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upload {
    /// The same content was already stored.
    Unchanged,
    /// The driver was new.
    Created,
    /// Different content was replaced (`force`).
    Replaced,
}

/// Stores one driver and its `.sha256` without ever silently replacing different content.
pub async fn upload_driver(
    storage: &Storage,
    key: &str,
    file: &str,
    bytes: Bytes,
    force: bool,
) -> Result<Upload> {
    let local = index::sha256_hex(&bytes);
    let mut replacing = false;
    if storage.head(key).await?.is_some() {
        match stored_sha256(storage, key).await? {
            Some(stored) if stored == local => {
                ensure_checksum(storage, key, &local, file).await?;
                return Ok(Upload::Unchanged);
            }
            Some(stored) if !force => {
                return Err(Error::Conflict {
                    key: key.into(),
                    stored,
                    local,
                });
            }
            _ => replacing = true,
        }
    }
    // Create-only where the backend honours it; the read-back below is what keeps this
    // correct where it does not.
    let created = storage.put(key, bytes, !replacing).await?;
    if !created {
        // Someone else created it between our HEAD and PUT: compare as above.
        let stored = stored_sha256(storage, key).await?.unwrap_or_default();
        if stored != local {
            return Err(Error::Conflict {
                key: key.into(),
                stored,
                local,
            });
        }
    }
    let found = storage
        .sha256(key)
        .await?
        .map(|(h, _)| h)
        .unwrap_or_default();
    if found != local {
        return Err(Error::ConcurrentWrite {
            key: key.into(),
            expected: local,
            found,
        });
    }
    ensure_checksum(storage, key, &local, file).await?;
    tracing::info!(%key, sha256 = %local, "published");
    Ok(if replacing {
        Upload::Replaced
    } else {
        Upload::Created
    })
}

async fn ensure_checksum(storage: &Storage, key: &str, sha256: &str, file: &str) -> Result<()> {
    let sum_key = format!("{key}{}", index::SHA256_SUFFIX);
    let wanted = index::format_sha256_file(sha256, file);
    if storage.read(&sum_key).await?.as_deref() != Some(wanted.as_bytes()) {
        storage.put(&sum_key, Bytes::from(wanted), false).await?;
    }
    Ok(())
}

/// Rebuilds `driver/<version>/<arch>/index.json` and its signature from the stored objects,
/// with `serial` one more than the stored index's and `expires` renewed, then re-checks until
/// the stored, verified index lists exactly the stored drivers (a concurrent publisher may
/// have replaced it). Returns whether anything was written (always, unless the loop gives up).
pub async fn rebuild_index(
    storage: &Storage,
    version: &str,
    arch: &str,
    signer: &Signer,
) -> Result<bool> {
    let prefix = format!("driver/{version}/{arch}/");
    let index_key = format!("{prefix}{}", index::INDEX_FILE);
    let sig_key = format!("{prefix}{}", index::SIGNATURE_FILE);
    let public = signer.key.verifying_key();
    let mut wrote = false;
    for _ in 0..INDEX_ATTEMPTS {
        let objects = storage.list(&prefix).await?;
        let stored_bytes = storage.read(&index_key).await?;
        let stored_sig = storage.read(&sig_key).await?;
        let stored_index = match (&stored_bytes, &stored_sig) {
            (Some(b), Some(s)) => index::verify(b, &String::from_utf8_lossy(s), &public).ok(),
            _ => None,
        };
        let previous = stored_bytes
            .as_deref()
            .and_then(|b| DriverIndex::parse(b).ok());
        let index_modified = storage.head(&index_key).await?.map(|m| m.last_modified);
        let mut entries = Vec::new();
        for meta in &objects {
            let key_name = meta.location.to_string();
            let Some(file) = key_name.strip_prefix(&prefix) else {
                continue;
            };
            if file.contains('/') {
                continue;
            }
            let Some(name) = DriverFileName::parse(file) else {
                continue;
            };
            // Reuse a checksum already in the index for a driver older than the index;
            // anything newer is read from its `.sha256` (or hashed).
            let known = previous
                .as_ref()
                .filter(|_| index_modified.is_some_and(|t| meta.last_modified < t))
                .and_then(|p| p.entry(file))
                .filter(|e| e.size == meta.size)
                .map(|e| e.sha256.clone());
            let sha256 = match known {
                Some(h) => h,
                None => match stored_sha256(storage, &key_name).await? {
                    Some(h) => h,
                    None => continue,
                },
            };
            entries.push(IndexEntry {
                file: file.to_owned(),
                size: meta.size,
                sha256,
                target: name.target,
                kernelrelease: name.kernelrelease,
                kernelversion: name.kernelversion,
            });
        }
        let wanted = DriverIndex::new(version, arch, entries);
        // Once this writer has written, an index signed by this key, fresh and listing the
        // same files is the converged state, whoever wrote it.
        if wrote
            && let Some(stored) = &stored_index
            && stored.version == version
            && stored.arch == arch
            && !stored.is_legacy()
            && stored.same_files(&wanted)
        {
            return Ok(true);
        }
        // The serial only grows: one more than any stored index (verified or not, so a key
        // rotation does not restart it).
        let serial = [stored_index.as_ref(), previous.as_ref()]
            .into_iter()
            .flatten()
            .filter_map(|i| i.serial)
            .max()
            .unwrap_or(0)
            .saturating_add(1);
        let wanted = wanted.with_freshness(serial, signer.expires());
        let bytes = wanted.to_bytes();
        let sig = index::sign(&bytes, &signer.key);
        storage.put(&index_key, Bytes::from(bytes), false).await?;
        storage.put(&sig_key, Bytes::from(sig), false).await?;
        tracing::info!(%prefix, serial, expires = wanted.expires, files = wanted.files.len(), "index written");
        wrote = true;
    }
    Err(Error::IndexNotConverged {
        prefix,
        attempts: INDEX_ATTEMPTS,
    })
}

/// Reads a private key file.
pub fn read_private_key(path: &Path) -> Result<SigningKey> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::LocalFile {
        op: "read",
        path: path.into(),
        source,
    })?;
    index::parse_private_key(&text).map_err(|source| Error::Key {
        path: path.into(),
        source,
    })
}

/// Reads a public key file.
pub fn read_public_key(path: &Path) -> Result<ed25519_dalek::VerifyingKey> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::LocalFile {
        op: "read",
        path: path.into(),
        source,
    })?;
    index::parse_public_key(&text).map_err(|source| Error::Key {
        path: path.into(),
        source,
    })
}

/// Writes a new key pair: the private key with mode 0600, never overwriting a file.
pub fn keygen(private: &Path, public: &Path) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    for path in [private, public] {
        if path.exists() {
            return Err(Error::KeyExists(path.into()));
        }
    }
    let mut seed = [0u8; 32];
    crate::stats::random(&mut seed);
    let key = index::signing_key_from_seed(seed);
    let write = |path: &Path, mode: u32, text: String| -> Result<()> {
        let err = |source| Error::LocalFile {
            op: "write",
            path: path.into(),
            source,
        };
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)
            .map_err(err)?;
        f.write_all(text.as_bytes()).map_err(err)
    };
    write(private, 0o600, index::encode_private_key(&key))?;
    write(
        public,
        0o644,
        index::encode_public_key(&key.verifying_key()),
    )?;
    Ok(())
}
