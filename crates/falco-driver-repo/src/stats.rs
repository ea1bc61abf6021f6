//! Download statistics: counted in memory at the serving layer, flushed as immutable
//! segments into the storage, summed by `stats`. See the crate documentation for why a
//! segment can be neither lost twice nor counted twice.
//!
//! Besides downloads, requests for drivers that do not exist (404 on a well-formed driver
//! name) are counted the same way as *misses*: the demand for drivers nobody has built yet.
//!
//! Client addresses are hashed with a key of their UTC day ([`SourceKeys`]), so distinct
//! sources add up across replicas within a day, and the key is deleted once the day's counts
//! are final: the stored hashes can then no longer be reversed by hashing every IPv4 address.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use falco_core::driver::DriverFileName;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::layout::DriverPath;
use crate::storage::Storage;
use crate::{Error, Result};

/// Prefix of all statistics segments.
pub const SEGMENTS_PREFIX: &str = "stats/segments/";
/// Prefix of the per-day keys of the client-address hash: `stats/source-keys/<day>`.
pub const SOURCE_KEYS_PREFIX: &str = "stats/source-keys/";
/// The single key of earlier versions, deleted by [`SourceKeys::delete_final`].
pub const LEGACY_SOURCE_KEY: &str = "stats/source-key";
/// A day's counts are final, and its source key is deleted, this many days after the day:
/// by then every server has flushed (intervals are seconds) and the CDN has delivered its
/// access logs (CloudFront delivers within hours, "up to 24 hours" at worst).
pub const FINAL_AFTER_DAYS: u32 = 3;
/// Environment variable that replaces today's UTC date (`YYYY-MM-DD`), for tests only.
pub const TEST_DAY_ENV: &str = "FALCO_DRIVER_REPO_TEST_DAY";
/// Default cap on distinct missing-driver keys counted per flush interval and process.
pub const DEFAULT_MISS_CAPACITY: usize = 1000;

/// What one counter row is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct StatKey {
    /// UTC day, `YYYY-MM-DD`.
    pub day: String,
    /// Driver version.
    pub version: String,
    /// Architecture.
    pub arch: String,
    /// Target id.
    pub target: String,
    /// Kernel release.
    pub kernelrelease: String,
    /// Kernel version.
    pub kernelversion: String,
    /// Client class (closed set, see [`client_class`]); empty in segments of earlier
    /// versions, filled in from `client` when they are read.
    #[serde(default)]
    pub class: String,
    /// Client family (closed set, see [`client_family`]).
    pub client: String,
    /// Client version, empty when unknown.
    pub client_version: String,
}

/// One row of a segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Row {
    /// What is counted.
    #[serde(flatten)]
    pub key: StatKey,
    /// Number of downloads.
    pub downloads: u64,
    /// Keyed hashes of the distinct client addresses.
    pub sources: BTreeSet<String>,
}

/// What a missing-driver row is about. The row whose `file` is empty is the overflow
/// bucket: misses beyond the cap of distinct keys, counted but not told apart.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MissKey {
    /// UTC day, `YYYY-MM-DD`.
    pub day: String,
    /// Driver version.
    pub version: String,
    /// Architecture.
    pub arch: String,
    /// Requested file name, `<name>_<target>_<kernelrelease>_<kernelversion>.{ko,o}`.
    pub file: String,
    /// Target id.
    pub target: String,
    /// Kernel release.
    pub kernelrelease: String,
    /// Kernel version.
    pub kernelversion: String,
}

impl MissKey {
    /// Whether this is the overflow bucket.
    pub fn is_other(&self) -> bool {
        self.file.is_empty()
    }
}

/// One missing-driver row of a segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MissRow {
    /// What is counted.
    #[serde(flatten)]
    pub key: MissKey,
    /// Requests answered 404.
    pub requests: u64,
    /// Keyed hashes of the distinct client addresses.
    pub sources: BTreeSet<String>,
}

/// A statistics segment as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    /// Who wrote it: a server process (`<writer id>`) or an ingested log (`log:<key>`).
    pub writer: String,
    /// Sequence number within the writer.
    pub seq: u64,
    /// Counter rows.
    pub rows: Vec<Row>,
    /// Missing-driver rows (absent in segments of earlier versions).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub misses: Vec<MissRow>,
}

#[derive(Debug, Default)]
struct Agg {
    downloads: u64,
    sources: BTreeSet<String>,
}

/// A segment built but not yet known to be stored.
#[derive(Debug)]
struct Pending {
    key: String,
    bytes: Bytes,
}

#[derive(Debug, Default)]
struct State {
    counters: hashbrown::HashMap<HotKey, HotAgg>,
    misses: hashbrown::HashMap<HotMiss, HotAgg>,
    /// Misses beyond the cap, per day.
    miss_overflow: HashMap<u32, HotAgg>,
    pending: Option<Pending>,
    seq: u64,
}

/// What the serving path counts under, borrowed from the request: nothing is allocated or hashed
/// with a key per download, only when a new combination first appears within a flush interval.
/// Parsing the file name, the day's date, lower-casing and the keyed address hash happen at flush.
#[derive(Debug, PartialEq, Eq)]
struct HotKey {
    /// Days since 1970-01-01 (UTC).
    day: u32,
    version: Box<str>,
    arch: Box<str>,
    file: Box<str>,
    client: &'static str,
    client_version: Box<str>,
    /// The request had a `Range` header.
    ranged: bool,
}

/// [`HotKey`] borrowed from a request, for lookups.
struct HotRef<'a> {
    day: u32,
    version: &'a str,
    arch: &'a str,
    file: &'a str,
    client: &'static str,
    client_version: &'a str,
    ranged: bool,
}

impl std::hash::Hash for HotKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        HotRef::from(self).hash(state);
    }
}

impl std::hash::Hash for HotRef<'_> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (self.day, self.version, self.arch, self.file).hash(state);
        (self.client, self.client_version, self.ranged).hash(state);
    }
}

impl<'a> From<&'a HotKey> for HotRef<'a> {
    fn from(k: &'a HotKey) -> Self {
        Self {
            day: k.day,
            version: &k.version,
            arch: &k.arch,
            file: &k.file,
            client: k.client,
            client_version: &k.client_version,
            ranged: k.ranged,
        }
    }
}

impl hashbrown::Equivalent<HotKey> for HotRef<'_> {
    fn equivalent(&self, k: &HotKey) -> bool {
        self.day == k.day
            && self.version == &*k.version
            && self.arch == &*k.arch
            && self.file == &*k.file
            && self.client == k.client
            && self.client_version == &*k.client_version
            && self.ranged == k.ranged
    }
}

/// A missing driver as counted on the serving path.
#[derive(Debug, PartialEq, Eq, Hash)]
struct HotMiss {
    day: u32,
    version: Box<str>,
    arch: Box<str>,
    file: Box<str>,
}

/// [`HotMiss`] borrowed from a request.
#[derive(Hash)]
struct HotMissRef<'a> {
    day: u32,
    version: &'a str,
    arch: &'a str,
    file: &'a str,
}

impl hashbrown::Equivalent<HotMiss> for HotMissRef<'_> {
    fn equivalent(&self, k: &HotMiss) -> bool {
        self.day == k.day
            && self.version == &*k.version
            && self.arch == &*k.arch
            && self.file == &*k.file
    }
}

// `HotMiss` derives `Hash` over the same fields in the same order as `HotMissRef`, with
// `Box<str>` hashing like `&str`.

/// Downloads and distinct client addresses of one [`HotKey`]. The addresses stay in memory for
/// one flush interval at most and only their keyed hashes are ever written.
#[derive(Debug, Default)]
struct HotAgg {
    downloads: u64,
    sources: hashbrown::HashSet<IpAddr>,
}

impl HotAgg {
    fn add(&mut self, other: HotAgg) {
        self.downloads += other.downloads;
        self.sources.extend(other.sources);
    }
}

/// What [`Recorder::record_miss`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissOutcome {
    /// Counted under its driver.
    Counted,
    /// Counted in the overflow bucket: the cap of distinct missing drivers was reached.
    Overflow,
    /// Not a driver file name: not counted.
    NotADriver,
}

/// In-memory download counters of one server process.
#[derive(Debug)]
pub struct Recorder {
    writer: String,
    keys: SourceKeys,
    miss_capacity: usize,
    state: Mutex<State>,
    flush_lock: tokio::sync::Mutex<()>,
    /// The day whose final keys were last deleted.
    cleaned: Mutex<Option<u32>>,
}

/// The client family of a User-Agent: a closed set, and a bounded version string.
pub fn client_family(user_agent: Option<&str>) -> (&'static str, String) {
    let (family, version) = client_family_ref(user_agent);
    (family, version.to_ascii_lowercase())
}

/// [`client_family`] without allocating: the version is a slice of the User-Agent, as sent.
fn client_family_ref(user_agent: Option<&str>) -> (&'static str, &str) {
    let Some(ua) = user_agent.filter(|ua| !ua.is_empty()) else {
        return ("none", "");
    };
    const FAMILIES: [(&str, &str); 8] = [
        ("falcoctl", "falcoctl"),
        ("falco-driver-loader", "falco-driver-loader"),
        ("falco-driver-repo", "falco-driver-repo"),
        ("curl", "curl"),
        ("wget", "wget"),
        ("go-http-client", "go-http-client"),
        ("python-requests", "python-requests"),
        ("amazon cloudfront", "cloudfront"),
    ];
    for (needle, family) in FAMILIES {
        let found = ua
            .as_bytes()
            .windows(needle.len())
            .position(|w| w.eq_ignore_ascii_case(needle.as_bytes()));
        if let Some(at) = found {
            let version = ua[at + needle.len()..]
                .strip_prefix('/')
                .map(|v| {
                    let len = v
                        .bytes()
                        .take_while(|c| {
                            c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'+')
                        })
                        .take(32)
                        .count();
                    &v[..len]
                })
                .unwrap_or_default();
            return (family, version);
        }
    }
    ("other", "")
}

/// Who a download is attributed to: a closed set, derived from the agent family and the
/// request pattern (see `docs/driver-repository.md`, "Who downloads").
///
/// * `falcoctl`: `falcoctl driver install` sends Go's default agent (`Go-http-client/1.1`,
///   `/2.0` over HTTP/2) and fetches the whole driver with one GET, never a `Range`; an
///   agent naming falcoctl counts too. Any other Go program fetching a driver whole looks
///   the same and is counted here.
/// * `legacy-loader-script`: the `falco-driver-loader` shell script of Falco < 0.37 runs
///   `curl` for the whole file; a person running curl by hand looks the same.
/// * `falco-driver-loader`: this project's loader, by its own agent (version kept).
/// * `mirror`: `falco-driver-repo mirror` copying from this repository.
/// * `cdn`: a CDN fetching from the origin under its own agent.
/// * `other`: everything else (Go or curl with a `Range`, wget, browsers, no agent).
pub fn client_class(family: &str, ranged: bool) -> &'static str {
    match family {
        "falcoctl" => "falcoctl",
        "go-http-client" if !ranged => "falcoctl",
        "curl" if !ranged => "legacy-loader-script",
        "falco-driver-loader" => "falco-driver-loader",
        "falco-driver-repo" => "mirror",
        "cloudfront" => "cdn",
        _ => "other",
    }
}

/// Keyed hash of a client address: 16 hex characters, the address cannot be recovered.
pub fn source_hash(key: &[u8; 32], addr: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(key);
    hasher.update(addr.as_bytes());
    hasher.update(key);
    hex::encode(&hasher.finalize()[..8])
}

/// The test override of today ([`TEST_DAY_ENV`]), read once.
fn test_day() -> Option<u32> {
    static DAY: std::sync::OnceLock<Option<u32>> = std::sync::OnceLock::new();
    *DAY.get_or_init(|| {
        let text = std::env::var(TEST_DAY_ENV).ok()?;
        let day = parse_day(&text);
        if day.is_none() {
            tracing::warn!(value = %text, "ignoring {TEST_DAY_ENV}: not a YYYY-MM-DD date");
        }
        day
    })
}

/// Today as days since 1970-01-01 (UTC): what the serving path keys on.
pub fn day_number() -> u32 {
    if let Some(day) = test_day() {
        return day;
    }
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    (secs / 86_400) as u32
}

/// Today's UTC day, `YYYY-MM-DD`.
pub fn today() -> String {
    day_string(day_number())
}

/// `YYYY-MM-DD` of a [`day_number`].
pub fn day_string(day: u32) -> String {
    chrono::DateTime::from_timestamp(i64::from(day) * 86_400, 0)
        .map(|t| t.format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

/// The [`day_number`] of `YYYY-MM-DD`.
pub fn parse_day(text: &str) -> Option<u32> {
    let date = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
    let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1)?;
    u32::try_from(date.signed_duration_since(epoch).num_days()).ok()
}

/// Fills a buffer from the operating system's random source.
pub fn random(buf: &mut [u8]) {
    // The OS random source failing is not recoverable and not expected on Linux.
    if let Err(e) = getrandom::fill(buf) {
        panic!("the operating system's random source failed: {e}");
    }
}

/// A day's key as this process knows it.
#[derive(Debug, Clone)]
struct KnownKey {
    key: [u8; 32],
    /// When this process first read this value.
    seen: Instant,
    /// No other writer can replace it any more.
    settled: bool,
}

/// The per-day keys of the client-address hash, shared by all replicas through the storage.
///
/// The key of a day is the object `stats/source-keys/<day>`. The first process that needs it
/// creates it (a create-only PUT, honoured by AWS S3 and local storage) and reads it back.
/// Garage ignores create-only PUTs, so two replicas creating the key at the same moment both
/// succeed and the last write wins; a replica therefore uses a new key only once it is
/// *settled*: read with the same value again at least `settle` later (`settle` must exceed
/// the time one storage write takes). A racing writer read the key as absent before the
/// first write became visible, so its own write lands within that time; afterwards every
/// replica reads the same value (the last write) and uses it. A key stored longer ago than
/// `settle` (by the storage's clock) is settled when first read, and every flush creates
/// tomorrow's key ahead of time, so waiting is the exception (the first minutes of a new
/// deployment); counts of a day without a settled key stay in memory until it settles. On
/// local storage create-only writes are atomic and `settle` is zero.
#[derive(Debug)]
pub struct SourceKeys {
    settle: Duration,
    known: Mutex<HashMap<u32, KnownKey>>,
}

fn parse_key(bytes: &[u8]) -> Option<[u8; 32]> {
    let text = std::str::from_utf8(bytes).ok()?;
    hex::decode(text.trim()).ok()?.try_into().ok()
}

/// Storage key of a day's source key.
pub fn source_key_path(day: u32) -> String {
    format!("{SOURCE_KEYS_PREFIX}{}", day_string(day))
}

impl SourceKeys {
    /// Keys that settle after `settle` (see the type's documentation).
    pub fn new(settle: Duration) -> Self {
        Self {
            settle,
            known: Mutex::default(),
        }
    }

    /// The settled key of `day`, creating it when absent; `None` while it may still change.
    pub async fn get(&self, storage: &Storage, day: u32) -> Result<Option<[u8; 32]>> {
        let (key, settled) = self.current(storage, day).await?;
        Ok(settled.then_some(key))
    }

    /// The key of `day` as stored now, creating it when absent, and whether it is settled.
    pub async fn current(&self, storage: &Storage, day: u32) -> Result<([u8; 32], bool)> {
        if let Some(known) = self.lock().get(&day)
            && known.settled
        {
            return Ok((known.key, true));
        }
        let path = source_key_path(day);
        let (key, stored_at) = match self.read(storage, &path).await? {
            Some(found) => found,
            None => {
                let mut fresh = [0u8; 32];
                random(&mut fresh);
                let body = Bytes::from(format!("{}\n", hex::encode(fresh)));
                // Create-only when absent; a stored value that is not a key is replaced.
                let absent = storage.head(&path).await?.is_none();
                storage.put(&path, body, absent).await?;
                self.read(storage, &path)
                    .await?
                    .ok_or_else(|| Error::Parse {
                        key: path.clone(),
                        reason: "the source key read back is not a key".into(),
                    })?
            }
        };
        let now = Instant::now();
        let old_enough = chrono::Utc::now()
            .signed_duration_since(stored_at)
            .to_std()
            .is_ok_and(|age| age >= self.settle);
        let mut known = self.lock();
        let entry = known.entry(day).or_insert(KnownKey {
            key,
            seen: now,
            settled: false,
        });
        if entry.key != key {
            *entry = KnownKey {
                key,
                seen: now,
                settled: false,
            };
        }
        entry.settled = old_enough || now.duration_since(entry.seen) >= self.settle;
        Ok((entry.key, entry.settled))
    }

    /// Like [`SourceKeys::get`], waiting (up to a few settle times) until the key settles.
    pub async fn wait(&self, storage: &Storage, day: u32) -> Result<[u8; 32]> {
        let deadline = Instant::now() + self.settle * 4 + Duration::from_secs(5);
        loop {
            if let Some(key) = self.get(storage, day).await? {
                return Ok(key);
            }
            if Instant::now() > deadline {
                return Err(Error::Parse {
                    key: source_key_path(day),
                    reason: "the source key kept changing (concurrent writers?)".into(),
                });
            }
            tokio::time::sleep((self.settle / 4).max(Duration::from_millis(100))).await;
        }
    }

    async fn read(
        &self,
        storage: &Storage,
        path: &str,
    ) -> Result<Option<([u8; 32], chrono::DateTime<chrono::Utc>)>> {
        match storage
            .get_opts(path, object_store::GetOptions::default())
            .await
        {
            Ok(result) => {
                let modified = result.meta.last_modified;
                let bytes = result
                    .bytes()
                    .await
                    .map_err(|source| crate::storage::storage_error("read", path, source))?;
                Ok(parse_key(&bytes).map(|key| (key, modified)))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(source) => Err(crate::storage::storage_error("get", path, source)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, KnownKey>> {
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Deletes the keys of days whose counts are final (`FINAL_AFTER_DAYS` after the day)
    /// and the single key of earlier versions; returns the keys deleted.
    pub async fn delete_final(&self, storage: &Storage, today: u32) -> Result<Vec<String>> {
        let mut deleted = Vec::new();
        for meta in storage.list(SOURCE_KEYS_PREFIX).await? {
            let key = meta.location.to_string();
            let Some(day) = key.strip_prefix(SOURCE_KEYS_PREFIX).and_then(parse_day) else {
                continue;
            };
            if day + FINAL_AFTER_DAYS <= today {
                storage.delete(&key).await?;
                deleted.push(key);
            }
        }
        if storage.head(LEGACY_SOURCE_KEY).await?.is_some() {
            storage.delete(LEGACY_SOURCE_KEY).await?;
            deleted.push(LEGACY_SOURCE_KEY.into());
        }
        self.lock().retain(|day, _| day + FINAL_AFTER_DAYS > today);
        Ok(deleted)
    }
}

/// Whether the counts of `day` are final on `today` (its source key is deleted).
pub fn is_final(day: u32, today: u32) -> bool {
    day + FINAL_AFTER_DAYS <= today
}

/// Moves every entry of `from` into `into`, adding counts of equal keys.
fn merge_back<K: std::hash::Hash + Eq>(
    into: &mut hashbrown::HashMap<K, HotAgg>,
    from: impl IntoIterator<Item = (K, HotAgg)>,
) {
    for (k, agg) in from {
        into.entry(k).or_default().add(agg);
    }
}

impl Recorder {
    /// A recorder with a fresh writer id, hashing addresses with `keys`, counting at most
    /// `miss_capacity` distinct missing drivers per flush interval.
    pub fn new(keys: SourceKeys, miss_capacity: usize) -> Self {
        let mut id = [0u8; 8];
        random(&mut id);
        Self {
            writer: hex::encode(id),
            keys,
            miss_capacity,
            state: Mutex::default(),
            flush_lock: tokio::sync::Mutex::new(()),
            cleaned: Mutex::new(None),
        }
    }

    /// This process's writer id.
    pub fn writer(&self) -> &str {
        &self.writer
    }

    /// Counts one download of a driver. This is on every download's path, so it only looks up
    /// (and rarely inserts) a counter under a lock; see [`HotKey`].
    pub fn record(
        &self,
        path: &DriverPath,
        user_agent: Option<&str>,
        ranged: bool,
        client: IpAddr,
    ) {
        let (client_family, client_version) = client_family_ref(user_agent);
        let key = HotRef {
            day: day_number(),
            version: &path.version,
            arch: &path.arch,
            file: &path.file,
            client: client_family,
            client_version,
            ranged,
        };
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let agg = match state.counters.get_mut(&key) {
            Some(agg) => agg,
            None => state
                .counters
                .entry(HotKey {
                    day: key.day,
                    version: key.version.into(),
                    arch: key.arch.into(),
                    file: key.file.into(),
                    client: key.client,
                    client_version: key.client_version.into(),
                    ranged: key.ranged,
                })
                .or_default(),
        };
        agg.downloads += 1;
        agg.sources.insert(client);
    }

    /// Counts one request for a driver that does not exist. Only well-formed driver names
    /// count, and at most `miss_capacity` distinct ones per flush interval; beyond that the
    /// request is counted in the day's overflow bucket.
    pub fn record_miss(&self, path: &DriverPath, client: IpAddr) -> MissOutcome {
        let key = HotMissRef {
            day: day_number(),
            version: &path.version,
            arch: &path.arch,
            file: &path.file,
        };
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(agg) = state.misses.get_mut(&key) {
            agg.downloads += 1;
            agg.sources.insert(client);
            return MissOutcome::Counted;
        }
        if DriverFileName::parse(key.file).is_none() {
            return MissOutcome::NotADriver;
        }
        let (agg, outcome) = if state.misses.len() < self.miss_capacity {
            let agg = state
                .misses
                .entry(HotMiss {
                    day: key.day,
                    version: key.version.into(),
                    arch: key.arch.into(),
                    file: key.file.into(),
                })
                .or_default();
            (agg, MissOutcome::Counted)
        } else {
            (
                state.miss_overflow.entry(key.day).or_default(),
                MissOutcome::Overflow,
            )
        };
        agg.downloads += 1;
        agg.sources.insert(client);
        outcome
    }

    /// The counters of one interval as segment rows: file names parsed, days formatted,
    /// addresses replaced by their keyed hashes (`keys` holds a key for every day).
    fn rows(
        counters: hashbrown::HashMap<HotKey, HotAgg>,
        keys: &HashMap<u32, [u8; 32]>,
    ) -> Vec<Row> {
        let mut merged: BTreeMap<StatKey, Agg> = BTreeMap::new();
        for (key, agg) in counters {
            let (Some(name), Some(source_key)) =
                (DriverFileName::parse(&key.file), keys.get(&key.day))
            else {
                continue;
            };
            let row = merged
                .entry(StatKey {
                    day: day_string(key.day),
                    version: key.version.into(),
                    arch: key.arch.into(),
                    target: name.target,
                    kernelrelease: name.kernelrelease,
                    kernelversion: name.kernelversion,
                    class: client_class(key.client, key.ranged).into(),
                    client: key.client.into(),
                    client_version: key.client_version.to_ascii_lowercase(),
                })
                .or_default();
            row.downloads += agg.downloads;
            row.sources.extend(
                agg.sources
                    .iter()
                    .map(|ip| source_hash(source_key, &ip.to_string())),
            );
        }
        merged
            .into_iter()
            .map(|(key, agg)| Row {
                key,
                downloads: agg.downloads,
                sources: agg.sources,
            })
            .collect()
    }

    /// Missing-driver rows of one interval, like [`Recorder::rows`].
    fn miss_rows(
        misses: hashbrown::HashMap<HotMiss, HotAgg>,
        overflow: HashMap<u32, HotAgg>,
        keys: &HashMap<u32, [u8; 32]>,
    ) -> Vec<MissRow> {
        let mut merged: BTreeMap<MissKey, Agg> = BTreeMap::new();
        let parsed = misses.into_iter().filter_map(|(k, agg)| {
            let name = DriverFileName::parse(&k.file)?;
            let key = MissKey {
                day: day_string(k.day),
                version: k.version.into(),
                arch: k.arch.into(),
                file: k.file.into(),
                target: name.target,
                kernelrelease: name.kernelrelease,
                kernelversion: name.kernelversion,
            };
            Some((k.day, key, agg))
        });
        let other = overflow.into_iter().map(|(day, agg)| {
            let key = MissKey {
                day: day_string(day),
                version: String::new(),
                arch: String::new(),
                file: String::new(),
                target: String::new(),
                kernelrelease: String::new(),
                kernelversion: String::new(),
            };
            (day, key, agg)
        });
        for (day, key, agg) in parsed.chain(other) {
            let Some(source_key) = keys.get(&day) else {
                continue;
            };
            let row = merged.entry(key).or_default();
            row.downloads += agg.downloads;
            row.sources.extend(
                agg.sources
                    .iter()
                    .map(|ip| source_hash(source_key, &ip.to_string())),
            );
        }
        merged
            .into_iter()
            .map(|(key, agg)| MissRow {
                key,
                requests: agg.downloads,
                sources: agg.sources,
            })
            .collect()
    }

    /// What a server does before serving: deletes final source keys and creates today's and
    /// tomorrow's, so the first flush seldom waits for a key to settle.
    pub async fn prepare(&self, storage: &Storage) -> Result<()> {
        self.maintain_keys(storage).await;
        self.keys.get(storage, day_number()).await?;
        Ok(())
    }

    /// Deletes final source keys once per day, and creates tomorrow's ahead of time. Failures
    /// are logged: they only delay the deletion or the creation to the next flush.
    async fn maintain_keys(&self, storage: &Storage) {
        let today = day_number();
        let due = *self.cleaned.lock().unwrap_or_else(|e| e.into_inner()) != Some(today);
        if due {
            match self.keys.delete_final(storage, today).await {
                Ok(deleted) => {
                    for key in deleted {
                        tracing::info!(%key, "deleted the source key of a final day");
                    }
                    *self.cleaned.lock().unwrap_or_else(|e| e.into_inner()) = Some(today);
                }
                Err(e) => tracing::warn!(error = %e, "cannot delete final source keys"),
            }
        }
        if let Err(e) = self.keys.get(storage, today + 1).await {
            tracing::warn!(error = %e, "cannot create tomorrow's source key");
        }
    }

    /// Writes the pending segment (if a previous write failed) and then the counters
    /// gathered since the last flush as a new segment. Returns the downloads written.
    ///
    /// Counts of a day whose source key has not settled yet stay in memory for a later
    /// flush (see [`SourceKeys`]).
    pub async fn flush(&self, storage: &Storage) -> Result<u64> {
        self.flush_with(storage, false).await
    }

    /// The last flush before the process exits: counts of a day whose key has not settled
    /// are written with the key as stored now rather than lost. Downloads stay exact; only
    /// if another replica replaces that key afterwards (two replicas created it at the same
    /// moment, and this one exits within the settle time) do that day's sources of this
    /// segment fail to union with the others'.
    pub async fn flush_final(&self, storage: &Storage) -> Result<u64> {
        self.flush_with(storage, true).await
    }

    async fn flush_with(&self, storage: &Storage, last: bool) -> Result<u64> {
        let _one_flush_at_a_time = self.flush_lock.lock().await;
        let retry = self
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pending
            .take();
        if let Some(pending) = retry
            && let Err(e) = storage.put(&pending.key, pending.bytes.clone(), true).await
        {
            self.state.lock().unwrap_or_else(|e| e.into_inner()).pending = Some(pending);
            return Err(e);
        }
        self.maintain_keys(storage).await;
        // Only the swap happens under the lock: downloads keep being counted while the
        // segment is built (flushes are serialised by `flush_lock`, so `seq` stays ordered).
        let (counters, misses, overflow) = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if state.counters.is_empty()
                && state.misses.is_empty()
                && state.miss_overflow.is_empty()
            {
                return Ok(0);
            }
            (
                std::mem::take(&mut state.counters),
                std::mem::take(&mut state.misses),
                std::mem::take(&mut state.miss_overflow),
            )
        };
        let days: BTreeSet<u32> = counters
            .keys()
            .map(|k| k.day)
            .chain(misses.keys().map(|k| k.day))
            .chain(overflow.keys().copied())
            .collect();
        let mut keys = HashMap::new();
        let mut failed = None;
        for day in days {
            match self.keys.current(storage, day).await {
                Ok((key, settled)) if settled || last => {
                    keys.insert(day, key);
                }
                Ok(_) => {}
                Err(e) => failed = Some(e),
            }
        }
        // Counts of days without a settled key go back for a later flush.
        let (counters, later): (hashbrown::HashMap<_, _>, Vec<_>) = {
            let mut now = hashbrown::HashMap::new();
            let mut later = Vec::new();
            for (k, agg) in counters {
                if keys.contains_key(&k.day) {
                    now.insert(k, agg);
                } else {
                    later.push((k, agg));
                }
            }
            (now, later)
        };
        let (misses, later_misses): (hashbrown::HashMap<_, _>, Vec<_>) = {
            let mut now = hashbrown::HashMap::new();
            let mut later = Vec::new();
            for (k, agg) in misses {
                if keys.contains_key(&k.day) {
                    now.insert(k, agg);
                } else {
                    later.push((k, agg));
                }
            }
            (now, later)
        };
        let (overflow, later_overflow): (HashMap<_, _>, HashMap<_, _>) = overflow
            .into_iter()
            .partition(|(day, _)| keys.contains_key(day));
        {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            merge_back(&mut state.counters, later);
            merge_back(&mut state.misses, later_misses);
            for (day, agg) in later_overflow {
                state.miss_overflow.entry(day).or_default().add(agg);
            }
        }
        let rows = Self::rows(counters, &keys);
        let misses = Self::miss_rows(misses, overflow, &keys);
        if rows.is_empty() && misses.is_empty() {
            return failed.map_or(Ok(0), Err);
        }
        let seq = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            state.seq += 1;
            state.seq
        };
        let downloads = rows.iter().map(|r| r.downloads).sum::<u64>();
        let key = format!(
            "{SEGMENTS_PREFIX}{}/{}-{seq:010}.json",
            today(),
            self.writer,
        );
        let segment = Segment {
            writer: self.writer.clone(),
            seq,
            rows,
            misses,
        };
        let bytes = Bytes::from(serde_json::to_vec(&segment).unwrap_or_default());
        let pending = Pending { key, bytes };
        if let Err(e) = storage.put(&pending.key, pending.bytes.clone(), true).await {
            self.state.lock().unwrap_or_else(|e| e.into_inner()).pending = Some(pending);
            return Err(e);
        }
        failed.map_or(Ok(downloads), Err)
    }
}

/// Every segment in the storage, summed: download rows and missing-driver rows.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Loaded {
    /// Download rows.
    pub rows: Vec<Row>,
    /// Missing-driver rows.
    pub misses: Vec<MissRow>,
}

/// Reads every segment in the storage and sums them.
pub async fn load(storage: &Storage) -> Result<Loaded> {
    let objects = storage.list(SEGMENTS_PREFIX).await?;
    let mut merged: BTreeMap<StatKey, Agg> = BTreeMap::new();
    let mut misses: BTreeMap<MissKey, Agg> = BTreeMap::new();
    for meta in objects {
        let key = meta.location.to_string();
        if !key.ends_with(".json") {
            continue;
        }
        let Some(bytes) = storage.read(&key).await? else {
            continue;
        };
        let segment: Segment = serde_json::from_slice(&bytes).map_err(|e| Error::Parse {
            key: key.clone(),
            reason: e.to_string(),
        })?;
        for mut row in segment.rows {
            if row.key.class.is_empty() {
                // Earlier versions did not record Range requests: whole-file GETs were
                // counted from their first byte, so classify them as unranged.
                row.key.class = client_class(&row.key.client, false).into();
            }
            let agg = merged.entry(row.key).or_default();
            agg.downloads += row.downloads;
            agg.sources.extend(row.sources);
        }
        for row in segment.misses {
            let agg = misses.entry(row.key).or_default();
            agg.downloads += row.requests;
            agg.sources.extend(row.sources);
        }
    }
    Ok(Loaded {
        rows: merged
            .into_iter()
            .map(|(key, agg)| Row {
                key,
                downloads: agg.downloads,
                sources: agg.sources,
            })
            .collect(),
        misses: misses
            .into_iter()
            .map(|(key, agg)| MissRow {
                key,
                requests: agg.downloads,
                sources: agg.sources,
            })
            .collect(),
    })
}

/// Reads every segment in the storage and sums the download rows.
pub async fn load_rows(storage: &Storage) -> Result<Vec<Row>> {
    Ok(load(storage).await?.rows)
}

/// One line of a report group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupLine {
    /// The group value, e.g. a kernel or a day.
    pub key: String,
    /// Downloads in the group.
    pub downloads: u64,
    /// Distinct sources in the group: per day, summed over the days.
    pub sources: u64,
}

/// The statistics report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// All downloads.
    pub total_downloads: u64,
    /// Distinct sources of each day, summed over the days (the hash key changes daily, so
    /// an address seen on two days counts on both).
    pub distinct_sources: u64,
    /// Per day, oldest first.
    pub by_day: Vec<GroupLine>,
    /// Per driver version, most downloaded first.
    pub by_version: Vec<GroupLine>,
    /// Per arch.
    pub by_arch: Vec<GroupLine>,
    /// Per target.
    pub by_target: Vec<GroupLine>,
    /// Per kernel (`target kernelrelease kernelversion`).
    pub by_kernel: Vec<GroupLine>,
    /// Per client class (see [`client_class`]).
    pub by_class: Vec<GroupLine>,
    /// Per client agent family and version.
    pub by_client: Vec<GroupLine>,
}

/// Distinct sources per day, summed over the days.
fn daily_sources<'a>(rows: impl Iterator<Item = (&'a str, &'a BTreeSet<String>)>) -> u64 {
    let mut per_day: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (day, sources) in rows {
        per_day
            .entry(day)
            .or_default()
            .extend(sources.iter().map(String::as_str));
    }
    per_day.values().map(|s| s.len() as u64).sum()
}

fn group(
    rows: &[Row],
    top: usize,
    by_count: bool,
    f: impl Fn(&StatKey) -> String,
) -> Vec<GroupLine> {
    let mut groups: BTreeMap<String, (u64, Vec<&Row>)> = BTreeMap::new();
    for row in rows {
        let g = groups.entry(f(&row.key)).or_default();
        g.0 += row.downloads;
        g.1.push(row);
    }
    let mut lines: Vec<GroupLine> = groups
        .into_iter()
        .map(|(key, (downloads, rows))| GroupLine {
            key,
            downloads,
            sources: daily_sources(rows.iter().map(|r| (r.key.day.as_str(), &r.sources))),
        })
        .collect();
    if by_count {
        lines.sort_by(|a, b| {
            b.downloads
                .cmp(&a.downloads)
                .then_with(|| a.key.cmp(&b.key))
        });
    }
    lines.truncate(top);
    lines
}

/// Builds the report from summed rows; `top` bounds each group (days are not bounded).
pub fn report(rows: &[Row], top: usize) -> Report {
    Report {
        total_downloads: rows.iter().map(|r| r.downloads).sum(),
        distinct_sources: daily_sources(rows.iter().map(|r| (r.key.day.as_str(), &r.sources))),
        by_day: group(rows, usize::MAX, false, |k| k.day.clone()),
        by_version: group(rows, top, true, |k| k.version.clone()),
        by_arch: group(rows, top, true, |k| k.arch.clone()),
        by_target: group(rows, top, true, |k| k.target.clone()),
        by_kernel: group(rows, top, true, |k| {
            format!("{} {} {}", k.target, k.kernelrelease, k.kernelversion)
        }),
        by_class: group(rows, top, true, |k| k.class.clone()),
        by_client: group(rows, top, true, |k| {
            if k.client_version.is_empty() {
                k.client.clone()
            } else {
                format!("{}/{}", k.client, k.client_version)
            }
        }),
    }
}

fn render_lines(out: &mut String, title: &str, head: [&str; 2], lines: &[(String, u64, u64)]) {
    use std::fmt::Write as _;
    let width = lines
        .iter()
        .map(|l| l.0.len())
        .max()
        .unwrap_or(0)
        .max(title.len());
    let _ = writeln!(out, "{title:<width$}  {:>10}  {:>8}", head[0], head[1]);
    for (key, a, b) in lines {
        let _ = writeln!(out, "{key:<width$}  {a:>10}  {b:>8}");
    }
    out.push('\n');
}

/// Renders the report as tables for a person.
pub fn render_table(report: &Report) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Downloads: {}   distinct sources (per day, summed): {}\n",
        report.total_downloads, report.distinct_sources
    );
    for (title, lines) in [
        ("By day", &report.by_day),
        ("Top driver versions", &report.by_version),
        ("Arches", &report.by_arch),
        ("Top targets", &report.by_target),
        ("Top kernels", &report.by_kernel),
        ("Client classes", &report.by_class),
        ("Top client agents", &report.by_client),
    ] {
        let lines: Vec<_> = lines
            .iter()
            .map(|l| (l.key.clone(), l.downloads, l.sources))
            .collect();
        render_lines(&mut out, title, ["DOWNLOADS", "SOURCES"], &lines);
    }
    out
}

/// One line of the missing-drivers report: a driver that was asked for and not found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MissingLine {
    /// Driver version.
    pub version: String,
    /// Architecture.
    pub arch: String,
    /// File name asked for.
    pub file: String,
    /// Target id.
    pub target: String,
    /// Kernel release.
    pub kernelrelease: String,
    /// Kernel version.
    pub kernelversion: String,
    /// Requests answered 404.
    pub requests: u64,
    /// Distinct sources per day, summed over the days.
    pub sources: u64,
    /// First day it was asked for.
    pub first_day: String,
    /// Last day it was asked for.
    pub last_day: String,
}

impl MissingLine {
    /// Storage key the driver would have.
    pub fn storage_key(&self) -> String {
        format!("driver/{}/{}/{}", self.version, self.arch, self.file)
    }
}

/// The most-requested missing drivers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MissingReport {
    /// All 404 requests for well-formed driver names, overflow included.
    pub total_requests: u64,
    /// Distinct missing drivers counted (not in the overflow bucket).
    pub distinct_drivers: u64,
    /// Requests counted in the overflow bucket (more distinct misses than the cap).
    pub other_requests: u64,
    /// The drivers, most distinct sources first, then most requests.
    pub missing: Vec<MissingLine>,
}

/// Builds the missing-drivers report, every driver sorted by demand; the caller bounds it.
pub fn missing_report(misses: &[MissRow]) -> MissingReport {
    type Group<'a> = (u64, Vec<(&'a str, &'a BTreeSet<String>)>, &'a MissKey);
    let mut groups: BTreeMap<(&str, &str, &str), Group<'_>> = BTreeMap::new();
    let mut other = 0;
    for row in misses {
        if row.key.is_other() {
            other += row.requests;
            continue;
        }
        let k = &row.key;
        let g = groups
            .entry((k.version.as_str(), k.arch.as_str(), k.file.as_str()))
            .or_insert((0, Vec::new(), k));
        g.0 += row.requests;
        g.1.push((k.day.as_str(), &row.sources));
    }
    let mut missing: Vec<MissingLine> = groups
        .into_values()
        .map(|(requests, days, k)| {
            let first_day = days.iter().map(|d| d.0).min().unwrap_or_default().into();
            let last_day = days.iter().map(|d| d.0).max().unwrap_or_default().into();
            MissingLine {
                version: k.version.clone(),
                arch: k.arch.clone(),
                file: k.file.clone(),
                target: k.target.clone(),
                kernelrelease: k.kernelrelease.clone(),
                kernelversion: k.kernelversion.clone(),
                requests,
                sources: daily_sources(days.into_iter()),
                first_day,
                last_day,
            }
        })
        .collect();
    missing.sort_by(|a, b| {
        b.sources
            .cmp(&a.sources)
            .then(b.requests.cmp(&a.requests))
            .then_with(|| (&a.version, &a.arch, &a.file).cmp(&(&b.version, &b.arch, &b.file)))
    });
    MissingReport {
        total_requests: missing.iter().map(|m| m.requests).sum::<u64>() + other,
        distinct_drivers: missing.len() as u64,
        other_requests: other,
        missing,
    }
}

/// Renders the missing-drivers report as a table.
pub fn render_missing(report: &MissingReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Most-requested missing drivers: {} requests for {} drivers not found{}\n",
        report.total_requests,
        report.distinct_drivers,
        if report.other_requests > 0 {
            format!(
                " ({} more requests beyond the cap of distinct drivers)",
                report.other_requests
            )
        } else {
            String::new()
        }
    );
    let header = [
        "VERSION",
        "ARCH",
        "TARGET",
        "KERNELRELEASE",
        "KERNELVERSION",
        "REQUESTS",
        "SOURCES",
        "LAST DAY",
    ];
    let cells: Vec<[String; 8]> = report
        .missing
        .iter()
        .map(|m| {
            [
                m.version.clone(),
                m.arch.clone(),
                m.target.clone(),
                m.kernelrelease.clone(),
                m.kernelversion.clone(),
                m.requests.to_string(),
                m.sources.to_string(),
                m.last_day.clone(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.len());
        }
    }
    let line = |out: &mut String, row: &[&str]| {
        let mut text = String::new();
        for (i, (c, w)) in row.iter().zip(widths).enumerate() {
            if i >= 5 {
                let _ = write!(text, "{c:>w$}  ");
            } else {
                let _ = write!(text, "{c:<w$}  ");
            }
        }
        let _ = writeln!(out, "{}", text.trim_end());
    };
    line(&mut out, &header);
    for row in &cells {
        line(&mut out, &row.each_ref().map(String::as_str));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_agents_map_to_a_closed_set_with_bounded_versions() {
        assert_eq!(
            client_family(Some("falcoctl/0.11.0")),
            ("falcoctl", "0.11.0".into())
        );
        assert_eq!(client_family(Some("curl/8.5.0")), ("curl", "8.5.0".into()));
        assert_eq!(
            client_family(Some("Go-http-client/1.1")),
            ("go-http-client", "1.1".into())
        );
        assert_eq!(client_family(Some("Mozilla/5.0 (X11)")).0, "other");
        assert_eq!(client_family(None).0, "none");
        let long = format!("curl/{}", "9".repeat(100));
        assert_eq!(client_family(Some(&long)).1.len(), 32);
    }

    #[test]
    fn recorded_downloads_become_rows_at_flush() {
        let recorder = Recorder::new(SourceKeys::new(Duration::ZERO), 10);
        let path = |file: &str| DriverPath {
            version: "8.0.0+driver".into(),
            arch: "x86_64".into(),
            file: file.into(),
            key: format!("driver/8.0.0+driver/x86_64/{file}"),
        };
        let ko = path("falco_ubuntu-generic_6.8.0-31-generic_33.ko");
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "2001:db8::1".parse().unwrap();
        recorder.record(&ko, Some("curl/8.5.0"), false, a);
        recorder.record(&ko, Some("curl/8.5.0"), false, a);
        recorder.record(&ko, Some("CURL/8.5.0"), false, b); // the same counter: versions are compared as sent
        recorder.record(&ko, Some("curl/8.6.0-RC1"), false, a);
        recorder.record(&ko, Some("curl/8.6.0-rc1"), false, b); // the same row once lower-cased
        recorder.record(&ko, Some("falcoctl/0.11.0"), false, b);
        recorder.record(&ko, Some("Go-http-client/1.1"), false, a);
        recorder.record(&ko, Some("Go-http-client/1.1"), true, a); // a Range: not falcoctl's pattern
        recorder.record(&path("not-a-driver.ko"), Some("curl/8.5.0"), false, a); // dropped at flush
        let counters = std::mem::take(&mut recorder.state.lock().unwrap().counters);
        assert_eq!(counters.len(), 7);
        let keys = HashMap::from([(day_number(), [7; 32])]);
        let rows = Recorder::rows(counters, &keys);
        assert_eq!(rows.len(), 5);
        let go = |class: &str| {
            rows.iter()
                .find(|r| r.key.client == "go-http-client" && r.key.class == class)
                .map(|r| r.downloads)
        };
        assert_eq!((go("falcoctl"), go("other")), (Some(1), Some(1)));
        let row = |version: &str| {
            rows.iter()
                .find(|r| r.key.client == "curl" && r.key.client_version == version)
                .unwrap()
        };
        let curl = row("8.5.0");
        assert_eq!(curl.downloads, 3);
        assert_eq!(curl.key.target, "ubuntu-generic");
        assert_eq!(curl.key.kernelrelease, "6.8.0-31-generic");
        assert_eq!(curl.key.kernelversion, "33");
        assert!(chrono::NaiveDate::parse_from_str(&curl.key.day, "%Y-%m-%d").is_ok());
        let expected: BTreeSet<String> = [
            source_hash(&[7; 32], "10.0.0.1"),
            source_hash(&[7; 32], "2001:db8::1"),
        ]
        .into();
        assert_eq!(curl.sources, expected);
        let rc = row("8.6.0-rc1");
        assert_eq!((rc.downloads, &rc.sources), (2, &expected));
        assert_eq!(curl.key.class, "legacy-loader-script");
        let falcoctl = rows.iter().find(|r| r.key.client == "falcoctl").unwrap();
        assert_eq!((falcoctl.downloads, falcoctl.sources.len()), (1, 1));
        assert_eq!(falcoctl.key.class, "falcoctl");
    }

    #[test]
    fn client_classes_follow_agent_and_range() {
        for (ua, ranged, class) in [
            ("Go-http-client/1.1", false, "falcoctl"),
            ("Go-http-client/2.0", false, "falcoctl"),
            ("Go-http-client/1.1", true, "other"),
            ("falcoctl/0.13.0", true, "falcoctl"),
            ("curl/8.5.0", false, "legacy-loader-script"),
            ("curl/8.5.0", true, "other"),
            ("falco-driver-loader/0.4.0", false, "falco-driver-loader"),
            ("falco-driver-repo/0.4.0", false, "mirror"),
            ("Amazon CloudFront", false, "cdn"),
            ("Wget/1.21", false, "other"),
            ("", false, "other"),
        ] {
            let (family, _) = client_family(Some(ua));
            assert_eq!(client_class(family, ranged), class, "{ua} ranged={ranged}");
        }
    }

    #[test]
    fn misses_are_capped_with_an_overflow_bucket() {
        let recorder = Recorder::new(SourceKeys::new(Duration::ZERO), 2);
        let path = |file: &str| DriverPath {
            version: "8.0.0+driver".into(),
            arch: "x86_64".into(),
            file: file.into(),
            key: format!("driver/8.0.0+driver/x86_64/{file}"),
        };
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let one = path("falco_ubuntu-generic_6.8.0-31-generic_33.ko");
        let two = path("falco_debian_6.1.0-18-amd64_1.o");
        let three = path("falco_amazonlinux2_5.10.0_1.ko");
        assert_eq!(recorder.record_miss(&one, a), MissOutcome::Counted);
        assert_eq!(recorder.record_miss(&one, b), MissOutcome::Counted);
        assert_eq!(
            recorder.record_miss(&path("index.json.ko"), a),
            MissOutcome::NotADriver
        );
        assert_eq!(recorder.record_miss(&two, a), MissOutcome::Counted);
        assert_eq!(recorder.record_miss(&three, a), MissOutcome::Overflow);
        assert_eq!(recorder.record_miss(&one, a), MissOutcome::Counted);
        let (misses, overflow) = {
            let mut state = recorder.state.lock().unwrap();
            (
                std::mem::take(&mut state.misses),
                std::mem::take(&mut state.miss_overflow),
            )
        };
        let keys = HashMap::from([(day_number(), [7; 32])]);
        let rows = Recorder::miss_rows(misses, overflow, &keys);
        assert_eq!(rows.len(), 3);
        let report = missing_report(&rows);
        assert_eq!(
            (
                report.total_requests,
                report.distinct_drivers,
                report.other_requests
            ),
            (5, 2, 1)
        );
        let first = &report.missing[0];
        assert_eq!(
            (first.file.as_str(), first.requests, first.sources),
            ("falco_ubuntu-generic_6.8.0-31-generic_33.ko", 3, 2)
        );
        assert_eq!(first.kernelrelease, "6.8.0-31-generic");
        assert_eq!(report.missing[1].target, "debian");
        let table = render_missing(&report);
        assert!(
            table.contains("6.8.0-31-generic") && table.contains("1 more requests"),
            "{table}"
        );
    }

    #[test]
    fn days_parse_and_finality() {
        assert_eq!(parse_day("1970-01-01"), Some(0));
        assert_eq!(parse_day("2026-11-23"), Some(20_780));
        assert_eq!(parse_day("2026-13-01"), None);
        assert_eq!(source_key_path(20_780), "stats/source-keys/2026-11-23");
        assert!(!is_final(20_780, 20_782));
        assert!(is_final(20_780, 20_783));
    }

    #[test]
    fn day_numbers_format_as_dates() {
        assert_eq!(day_string(0), "1970-01-01");
        assert_eq!(day_string(20_780), "2026-11-23");
    }

    #[test]
    fn source_hashes_are_keyed() {
        let a = source_hash(&[1; 32], "10.0.0.1");
        assert_eq!(a.len(), 16);
        assert_ne!(a, source_hash(&[2; 32], "10.0.0.1"));
        assert!(!a.contains("10.0.0.1"));
    }

    #[test]
    fn report_unions_sources_across_rows() {
        let key = |day: &str, kr: &str| StatKey {
            day: day.into(),
            version: "8.0.0+driver".into(),
            arch: "x86_64".into(),
            target: "ubuntu-generic".into(),
            kernelrelease: kr.into(),
            kernelversion: "1".into(),
            class: "legacy-loader-script".into(),
            client: "curl".into(),
            client_version: "8".into(),
        };
        let rows = vec![
            Row {
                key: key("2026-01-01", "5.0"),
                downloads: 3,
                sources: ["a".to_string(), "b".to_string()].into(),
            },
            Row {
                key: key("2026-01-02", "5.1"),
                downloads: 2,
                sources: ["b".to_string()].into(),
            },
        ];
        let r = report(&rows, 10);
        assert_eq!(r.total_downloads, 5);
        // Sources are distinct per day: "b" on two days counts on both.
        assert_eq!(r.distinct_sources, 3);
        assert_eq!(r.by_version[0].sources, 3);
        assert_eq!(r.by_day[0].sources, 2);
        assert_eq!(r.by_kernel[0].key, "ubuntu-generic 5.0 1");
        assert_eq!(r.by_day.len(), 2);
        assert!(render_table(&r).contains("Top kernels"));
    }
}
