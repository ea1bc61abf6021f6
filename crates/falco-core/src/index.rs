//! The signed driver index and checksum files of a driver repository.
//!
//! This is the contract between the driver repository (which writes these files) and the
//! driver loader (which checks a download against them). Everything is pure: bytes in,
//! values out.
//!
//! Layout, per driver version and architecture:
//! - `driver/<version>/<arch>/index.json`: a [`DriverIndex`] as JSON, its `files` sorted by
//!   name. The bytes of the file are what is signed; readers verify the bytes they downloaded
//!   and parse only after the signature holds.
//! - `driver/<version>/<arch>/index.json.sig`: the standard base64 of the 64-byte ed25519
//!   signature over the exact bytes of `index.json`, followed by one newline ([`sign`]).
//! - `<file>.sha256` beside each driver: `sha256sum` format, lowercase hex, two spaces, the
//!   file name and a newline ([`format_sha256_file`], [`parse_sha256_file`]).
//!
//! Freshness: an index carries the driver `version` and `arch` it is for, a `serial` that
//! grows by one on every write and an `expires` time (unix seconds, UTC). A reader that asked
//! for one version and arch checks, with [`DriverIndex::check_fresh`], that the verified index
//! is for them (an index copied from another version's folder is refused), that it has not
//! expired (a frozen repository cannot serve an old index forever), and that its serial is not
//! lower than the highest it has seen (an older signed index cannot be replayed). An index
//! without `serial` and `expires` is *legacy*: it still parses, and a reader that requires
//! freshness refuses it.
//!
//! Keys: the public key file is the standard base64 of the 32-byte ed25519 public key plus a
//! newline; the private key file is the standard base64 of the 32-byte seed plus a newline
//! (the writer creates it with mode 0600).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// File name of the index inside a `driver/<version>/<arch>/` directory.
pub const INDEX_FILE: &str = "index.json";
/// File name of the index signature inside a `driver/<version>/<arch>/` directory.
pub const SIGNATURE_FILE: &str = "index.json.sig";
/// Suffix of the checksum file written beside each driver.
pub const SHA256_SUFFIX: &str = ".sha256";

/// Why an index, a signature, a key or a checksum file was rejected.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// The index is not valid JSON of the expected shape.
    #[error("index.json is not a valid driver index: {0}")]
    ParseIndex(#[source] serde_json::Error),
    /// The index parsed but breaks an invariant (order, checksum format, duplicates).
    #[error("index.json is invalid: {0}")]
    InvalidIndex(String),
    /// The signature file is not base64 of 64 bytes.
    #[error("index.json.sig is not the base64 of a 64-byte ed25519 signature")]
    ParseSignature,
    /// The signature does not verify against the index bytes and the public key.
    #[error("the signature of index.json does not verify with the given public key")]
    BadSignature,
    /// A key file is not base64 of 32 bytes, or not a valid ed25519 point.
    #[error("{0} key is not the base64 of a 32-byte ed25519 key")]
    ParseKey(&'static str),
    /// A `.sha256` file is not in `sha256sum` format.
    #[error("not a sha256sum line: {0:?}")]
    ParseSha256(String),
    /// The verified index is for another driver version or architecture.
    #[error("index.json is for {field} {got:?}, not {wanted:?}; refused")]
    WrongScope {
        /// `version` or `arch`.
        field: &'static str,
        /// What the index says.
        got: String,
        /// What was asked for.
        wanted: String,
    },
    /// The index has no `serial` and `expires` (written before they existed).
    #[error("index.json has no serial and expiry (a legacy index); refused")]
    Legacy,
    /// The index expired.
    #[error("index.json expired at {expires} (unix seconds; now {now}); refused")]
    Expired {
        /// Its `expires`.
        expires: u64,
        /// The reader's clock.
        now: u64,
    },
    /// The index is older than one already seen.
    #[error(
        "index.json has serial {serial}, older than serial {seen} seen before (rollback); refused"
    )]
    Rollback {
        /// Its `serial`.
        serial: u64,
        /// The highest serial seen before.
        seen: u64,
    },
}

/// One driver file listed in an index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexEntry {
    /// File name, e.g. `falco_ubuntu-generic_5.0.0_26.ko`.
    pub file: String,
    /// Size in bytes.
    pub size: u64,
    /// Lowercase hex SHA-256 of the file.
    pub sha256: String,
    /// Target (distribution) id, e.g. `ubuntu-generic`.
    pub target: String,
    /// Kernel release (`uname -r` after the loader's fix-ups).
    pub kernelrelease: String,
    /// Kernel version (the loader's short form of `uname -v`).
    pub kernelversion: String,
}

/// The index of one driver version and architecture.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriverIndex {
    /// Driver version, e.g. `8.0.0+driver` (unescaped).
    pub version: String,
    /// Architecture directory, `x86_64` or `aarch64`.
    pub arch: String,
    /// Grows by one on every write of this version's and arch's index; absent in legacy
    /// indexes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<u64>,
    /// When the index stops being valid, in unix seconds (UTC); absent in legacy indexes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<u64>,
    /// Driver files, sorted by name, names unique.
    pub files: Vec<IndexEntry>,
}

/// What a reader knows when it checks an index's freshness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freshness<'a> {
    /// The driver version asked for.
    pub version: &'a str,
    /// The architecture asked for.
    pub arch: &'a str,
    /// The reader's clock, unix seconds.
    pub now: u64,
    /// The highest serial seen before for this repository, version and arch.
    pub seen: Option<u64>,
}

impl DriverIndex {
    /// Builds an index, sorting the files by name and keeping the last entry of a duplicate name.
    pub fn new(
        version: impl Into<String>,
        arch: impl Into<String>,
        mut files: Vec<IndexEntry>,
    ) -> Self {
        files.sort_by(|a, b| a.file.cmp(&b.file));
        files.dedup_by(|later, earlier| {
            if later.file == earlier.file {
                std::mem::swap(later, earlier);
                true
            } else {
                false
            }
        });
        Self {
            version: version.into(),
            arch: arch.into(),
            serial: None,
            expires: None,
            files,
        }
    }

    /// The same index with a serial and an expiry (what a writer publishes).
    pub fn with_freshness(mut self, serial: u64, expires: u64) -> Self {
        self.serial = Some(serial);
        self.expires = Some(expires);
        self
    }

    /// Whether the index lacks `serial` or `expires`.
    pub fn is_legacy(&self) -> bool {
        self.serial.is_none() || self.expires.is_none()
    }

    /// Whether the files are the same as another index's, ignoring version, serial and expiry.
    pub fn same_files(&self, other: &Self) -> bool {
        self.files == other.files
    }

    /// Checks a verified index against what the reader asked for: the same version and
    /// arch, not legacy, not expired (`expires` must be later than `now`), and a serial not
    /// lower than the highest seen (equal is fine: the same index read again). Returns the
    /// serial.
    pub fn check_fresh(&self, want: &Freshness<'_>) -> Result<u64, IndexError> {
        for (field, got, wanted) in [
            ("version", &self.version, want.version),
            ("arch", &self.arch, want.arch),
        ] {
            if got != wanted {
                return Err(IndexError::WrongScope {
                    field,
                    got: got.clone(),
                    wanted: wanted.to_owned(),
                });
            }
        }
        let (Some(serial), Some(expires)) = (self.serial, self.expires) else {
            return Err(IndexError::Legacy);
        };
        if expires <= want.now {
            return Err(IndexError::Expired {
                expires,
                now: want.now,
            });
        }
        if let Some(seen) = want.seen
            && serial < seen
        {
            return Err(IndexError::Rollback { serial, seen });
        }
        Ok(serial)
    }

    /// The canonical bytes of `index.json`: pretty JSON and a trailing newline.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).unwrap_or_default();
        out.push(b'\n');
        out
    }

    /// Parses `index.json` bytes and checks the invariants, without checking a signature.
    pub fn parse(bytes: &[u8]) -> Result<Self, IndexError> {
        let index: Self = serde_json::from_slice(bytes).map_err(IndexError::ParseIndex)?;
        index.validate()?;
        Ok(index)
    }

    /// The entry for a file name, if listed.
    pub fn entry(&self, file: &str) -> Option<&IndexEntry> {
        self.files
            .binary_search_by(|e| e.file.as_str().cmp(file))
            .ok()
            .map(|i| &self.files[i])
    }

    fn validate(&self) -> Result<(), IndexError> {
        for pair in self.files.windows(2) {
            if pair[0].file >= pair[1].file {
                return Err(IndexError::InvalidIndex(format!(
                    "files are not sorted by unique name at {:?}",
                    pair[1].file
                )));
            }
        }
        for e in &self.files {
            if !is_sha256_hex(&e.sha256) {
                return Err(IndexError::InvalidIndex(format!(
                    "bad sha256 for {:?}",
                    e.file
                )));
            }
            if e.file.is_empty() || e.file.contains('/') {
                return Err(IndexError::InvalidIndex(format!(
                    "bad file name {:?}",
                    e.file
                )));
            }
        }
        Ok(())
    }
}

/// Signs the exact bytes of `index.json`; returns the content of `index.json.sig`.
pub fn sign(index_bytes: &[u8], key: &SigningKey) -> String {
    let signature = key.sign(index_bytes);
    format!("{}\n", STANDARD.encode(signature.to_bytes()))
}

/// Verifies `index.json` bytes against the content of `index.json.sig`, then parses them.
pub fn verify(
    index_bytes: &[u8],
    signature_file: &str,
    key: &VerifyingKey,
) -> Result<DriverIndex, IndexError> {
    let raw = STANDARD
        .decode(signature_file.trim_end_matches(['\n', '\r']))
        .map_err(|_| IndexError::ParseSignature)?;
    let raw: [u8; 64] = raw.try_into().map_err(|_| IndexError::ParseSignature)?;
    let signature = Signature::from_bytes(&raw);
    key.verify_strict(index_bytes, &signature)
        .map_err(|_| IndexError::BadSignature)?;
    DriverIndex::parse(index_bytes)
}

/// The signing key from a seed (e.g. 32 random bytes from the operating system).
pub fn signing_key_from_seed(seed: [u8; 32]) -> SigningKey {
    SigningKey::from_bytes(&seed)
}

/// The content of a private key file: base64 of the 32-byte seed and a newline.
pub fn encode_private_key(key: &SigningKey) -> String {
    format!("{}\n", STANDARD.encode(key.to_bytes()))
}

/// The content of a public key file: base64 of the 32-byte public key and a newline.
pub fn encode_public_key(key: &VerifyingKey) -> String {
    format!("{}\n", STANDARD.encode(key.to_bytes()))
}

/// Parses a private key file.
pub fn parse_private_key(text: &str) -> Result<SigningKey, IndexError> {
    Ok(SigningKey::from_bytes(&decode_32(text, "private")?))
}

/// Parses a public key file.
pub fn parse_public_key(text: &str) -> Result<VerifyingKey, IndexError> {
    VerifyingKey::from_bytes(&decode_32(text, "public")?)
        .map_err(|_| IndexError::ParseKey("public"))
}

fn decode_32(text: &str, what: &'static str) -> Result<[u8; 32], IndexError> {
    let raw = STANDARD
        .decode(text.trim())
        .map_err(|_| IndexError::ParseKey(what))?;
    raw.try_into().map_err(|_| IndexError::ParseKey(what))
}

/// Lowercase hex SHA-256 of some bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The content of `<file>.sha256`: `<hex>  <file>\n`.
pub fn format_sha256_file(sha256: &str, file: &str) -> String {
    format!("{sha256}  {file}\n")
}

/// Parses a `sha256sum` line (`<hex>  <file>` or `<hex> *<file>`); returns (lowercase hex, file).
///
/// A bare hex digest without a file name is accepted too (file name empty), since some
/// repositories publish only the digest.
pub fn parse_sha256_file(text: &str) -> Result<(String, String), IndexError> {
    let line = text.lines().next().unwrap_or_default().trim_end();
    let bad = || IndexError::ParseSha256(line.chars().take(200).collect());
    let (hash, rest) = match line.split_once(' ') {
        Some((hash, rest)) => (hash, rest),
        None => (line, ""),
    };
    let hash = hash.to_ascii_lowercase();
    if !is_sha256_hex(&hash) {
        return Err(bad());
    }
    let file = rest
        .strip_prefix(' ')
        .or_else(|| rest.strip_prefix('*'))
        .unwrap_or(rest);
    if file.contains('/') {
        return Err(bad());
    }
    Ok((hash, file.to_owned()))
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(file: &str) -> IndexEntry {
        IndexEntry {
            file: file.into(),
            size: 3,
            sha256: sha256_hex(b"abc"),
            target: "ubuntu-generic".into(),
            kernelrelease: "5.0.0".into(),
            kernelversion: "26".into(),
        }
    }

    #[test]
    fn sign_then_verify_round_trips_and_tampering_fails() {
        let key = signing_key_from_seed([7; 32]);
        let index = DriverIndex::new("8.0.0+driver", "x86_64", vec![entry("b.ko"), entry("a.ko")]);
        assert_eq!(index.files[0].file, "a.ko");
        let bytes = index.to_bytes();
        let sig = sign(&bytes, &key);
        assert!(sig.ends_with('\n'));
        let parsed = verify(&bytes, &sig, &key.verifying_key()).unwrap();
        assert_eq!(parsed, index);
        assert_eq!(parsed.entry("b.ko").unwrap().size, 3);
        assert!(parsed.entry("c.ko").is_none());

        let mut tampered = bytes.clone();
        tampered[10] ^= 1;
        assert!(matches!(
            verify(&tampered, &sig, &key.verifying_key()),
            Err(IndexError::BadSignature)
        ));
        let other = signing_key_from_seed([8; 32]);
        assert!(matches!(
            verify(&bytes, &sig, &other.verifying_key()),
            Err(IndexError::BadSignature)
        ));
        assert!(matches!(
            verify(&bytes, "nope\n", &key.verifying_key()),
            Err(IndexError::ParseSignature)
        ));
    }

    #[test]
    fn index_json_matches_the_contract() {
        let index = DriverIndex::new(
            "8.0.0+driver",
            "x86_64",
            vec![entry("falco_ubuntu-generic_5.0.0_26.ko")],
        );
        let v: serde_json::Value = serde_json::from_slice(&index.to_bytes()).unwrap();
        assert_eq!(v["version"], "8.0.0+driver");
        assert_eq!(v["arch"], "x86_64");
        assert_eq!(v["files"][0]["file"], "falco_ubuntu-generic_5.0.0_26.ko");
        assert_eq!(v["files"][0]["size"], 3);
        assert_eq!(v["files"][0]["kernelrelease"], "5.0.0");
        assert_eq!(v["files"][0]["kernelversion"], "26");
        assert_eq!(v["files"][0]["target"], "ubuntu-generic");
    }

    #[test]
    fn freshness_binds_version_arch_serial_and_expiry() {
        let index =
            DriverIndex::new("8.0.0+driver", "x86_64", vec![entry("a.ko")]).with_freshness(5, 1000);
        let v: serde_json::Value = serde_json::from_slice(&index.to_bytes()).unwrap();
        assert_eq!(
            (v["serial"].as_u64(), v["expires"].as_u64()),
            (Some(5), Some(1000))
        );
        assert_eq!(DriverIndex::parse(&index.to_bytes()).unwrap(), index);
        let want = Freshness {
            version: "8.0.0+driver",
            arch: "x86_64",
            now: 999,
            seen: Some(5),
        };
        assert_eq!(index.check_fresh(&want).unwrap(), 5);
        assert_eq!(
            index
                .check_fresh(&Freshness { seen: None, ..want })
                .unwrap(),
            5
        );
        assert_eq!(
            index
                .check_fresh(&Freshness {
                    seen: Some(4),
                    ..want
                })
                .unwrap(),
            5
        );
        let err = |w: Freshness<'_>| index.check_fresh(&w).unwrap_err();
        assert!(matches!(
            err(Freshness {
                seen: Some(6),
                ..want
            }),
            IndexError::Rollback { serial: 5, seen: 6 }
        ));
        assert!(matches!(
            err(Freshness { now: 1000, ..want }),
            IndexError::Expired {
                expires: 1000,
                now: 1000
            }
        ));
        assert!(matches!(
            err(Freshness {
                version: "7.0.0+driver",
                ..want
            }),
            IndexError::WrongScope {
                field: "version",
                ..
            }
        ));
        assert!(matches!(
            err(Freshness {
                arch: "aarch64",
                ..want
            }),
            IndexError::WrongScope { field: "arch", .. }
        ));
        // A legacy index (no serial, no expiry) parses, and is refused by check_fresh.
        let legacy = br#"{"version":"8.0.0+driver","arch":"x86_64","files":[]}"#;
        let legacy = DriverIndex::parse(legacy).unwrap();
        assert!(legacy.is_legacy());
        assert!(matches!(legacy.check_fresh(&want), Err(IndexError::Legacy)));
        assert!(
            !DriverIndex::new("1", "x86_64", vec![])
                .to_bytes()
                .windows(6)
                .any(|w| w == b"serial")
        );
    }

    #[test]
    fn unsorted_or_bad_checksums_are_rejected() {
        let mut index = DriverIndex::new("1", "x86_64", vec![entry("a.ko"), entry("b.ko")]);
        index.files.swap(0, 1);
        assert!(DriverIndex::parse(&index.to_bytes()).is_err());
        let mut index = DriverIndex::new("1", "x86_64", vec![entry("a.ko")]);
        index.files[0].sha256 = "ABC".into();
        assert!(DriverIndex::parse(&index.to_bytes()).is_err());
    }

    #[test]
    fn keys_round_trip_through_their_files() {
        let key = signing_key_from_seed([1; 32]);
        let private = encode_private_key(&key);
        let public = encode_public_key(&key.verifying_key());
        assert!(private.ends_with('\n') && public.ends_with('\n'));
        assert_eq!(
            parse_private_key(&private).unwrap().to_bytes(),
            key.to_bytes()
        );
        assert_eq!(parse_public_key(&public).unwrap(), key.verifying_key());
        assert!(parse_public_key("AAAA\n").is_err());
    }

    #[test]
    fn sha256_files_parse_in_sha256sum_format() {
        let hash = sha256_hex(b"abc");
        let text = format_sha256_file(&hash, "a.ko");
        assert_eq!(text, format!("{hash}  a.ko\n"));
        assert_eq!(
            parse_sha256_file(&text).unwrap(),
            (hash.clone(), "a.ko".into())
        );
        assert_eq!(
            parse_sha256_file(&format!("{hash} *a.ko")).unwrap().1,
            "a.ko"
        );
        assert_eq!(parse_sha256_file(&hash.to_uppercase()).unwrap().0, hash);
        assert!(parse_sha256_file("xyz  a.ko\n").is_err());
    }
}
