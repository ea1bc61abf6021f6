//! Download statistics: counted in memory at the serving layer, flushed as immutable
//! segments into the storage, summed by `stats`. See the crate documentation for why a
//! segment can be neither lost twice nor counted twice.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Mutex;

use bytes::Bytes;
use falco_core::driver::DriverFileName;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::layout::DriverPath;
use crate::storage::Storage;
use crate::{Error, Result};

/// Prefix of all statistics segments.
pub const SEGMENTS_PREFIX: &str = "stats/segments/";
/// Key of the shared key of the client-address hash.
pub const SOURCE_KEY: &str = "stats/source-key";

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

/// A statistics segment as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    /// Who wrote it: a server process (`<writer id>`) or an ingested log (`log:<key>`).
    pub writer: String,
    /// Sequence number within the writer.
    pub seq: u64,
    /// Counter rows.
    pub rows: Vec<Row>,
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
}

/// [`HotKey`] borrowed from a request, for lookups.
struct HotRef<'a> {
    day: u32,
    version: &'a str,
    arch: &'a str,
    file: &'a str,
    client: &'static str,
    client_version: &'a str,
}

impl std::hash::Hash for HotKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        HotRef::from(self).hash(state);
    }
}

impl std::hash::Hash for HotRef<'_> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (self.day, self.version, self.arch, self.file).hash(state);
        (self.client, self.client_version).hash(state);
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
    }
}

/// Downloads and distinct client addresses of one [`HotKey`]. The addresses stay in memory for
/// one flush interval at most and only their keyed hashes are ever written.
#[derive(Debug, Default)]
struct HotAgg {
    downloads: u64,
    sources: hashbrown::HashSet<IpAddr>,
}

/// In-memory download counters of one server process.
#[derive(Debug)]
pub struct Recorder {
    writer: String,
    source_key: [u8; 32],
    state: Mutex<State>,
    flush_lock: tokio::sync::Mutex<()>,
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

/// Keyed hash of a client address: 16 hex characters, the address cannot be recovered.
pub fn source_hash(key: &[u8; 32], addr: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(key);
    hasher.update(addr.as_bytes());
    hasher.update(key);
    hex::encode(&hasher.finalize()[..8])
}

/// Today's UTC day.
pub fn today() -> String {
    chrono::Utc::now().format("%Y-%m-%d").to_string()
}

/// Today as days since 1970-01-01 (UTC): what the serving path keys on.
fn day_number() -> u32 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    (secs / 86_400) as u32
}

/// `YYYY-MM-DD` of a [`day_number`].
fn day_string(day: u32) -> String {
    chrono::DateTime::from_timestamp(i64::from(day) * 86_400, 0)
        .map(|t| t.format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

/// Loads the shared source key from the storage, creating it when absent.
///
/// Replicas must agree on the key for distinct sources to add up; the key is created once
/// and then re-read, so replicas starting at the same moment converge on what was stored.
pub async fn load_source_key(storage: &Storage) -> Result<[u8; 32]> {
    let parse = |bytes: &[u8]| -> Option<[u8; 32]> {
        let text = std::str::from_utf8(bytes).ok()?;
        hex::decode(text.trim()).ok()?.try_into().ok()
    };
    if let Some(bytes) = storage.read(SOURCE_KEY).await?
        && let Some(key) = parse(&bytes)
    {
        return Ok(key);
    }
    let mut fresh = [0u8; 32];
    random(&mut fresh);
    storage
        .put(
            SOURCE_KEY,
            Bytes::from(format!("{}\n", hex::encode(fresh))),
            true,
        )
        .await?;
    let stored = storage.read(SOURCE_KEY).await?.unwrap_or_default();
    Ok(parse(&stored).unwrap_or(fresh))
}

/// Fills a buffer from the operating system's random source.
pub fn random(buf: &mut [u8]) {
    // The OS random source failing is not recoverable and not expected on Linux.
    if let Err(e) = getrandom::fill(buf) {
        panic!("the operating system's random source failed: {e}");
    }
}

impl Recorder {
    /// A recorder with a fresh writer id.
    pub fn new(source_key: [u8; 32]) -> Self {
        let mut id = [0u8; 8];
        random(&mut id);
        Self {
            writer: hex::encode(id),
            source_key,
            state: Mutex::default(),
            flush_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// This process's writer id.
    pub fn writer(&self) -> &str {
        &self.writer
    }

    /// Counts one download of a driver. This is on every download's path, so it only looks up
    /// (and rarely inserts) a counter under a lock; see [`HotKey`].
    pub fn record(&self, path: &DriverPath, user_agent: Option<&str>, client: IpAddr) {
        let (client_family, client_version) = client_family_ref(user_agent);
        let key = HotRef {
            day: day_number(),
            version: &path.version,
            arch: &path.arch,
            file: &path.file,
            client: client_family,
            client_version,
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
                })
                .or_default(),
        };
        agg.downloads += 1;
        agg.sources.insert(client);
    }

    /// The counters gathered since the last flush as segment rows: file names parsed, days
    /// formatted, addresses replaced by their keyed hashes.
    fn rows(&self, counters: hashbrown::HashMap<HotKey, HotAgg>) -> Vec<Row> {
        let mut merged: BTreeMap<StatKey, Agg> = BTreeMap::new();
        for (key, agg) in counters {
            let Some(name) = DriverFileName::parse(&key.file) else {
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
                    client: key.client.into(),
                    client_version: key.client_version.to_ascii_lowercase(),
                })
                .or_default();
            row.downloads += agg.downloads;
            row.sources.extend(
                agg.sources
                    .iter()
                    .map(|ip| source_hash(&self.source_key, &ip.to_string())),
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

    /// Writes the pending segment (if a previous write failed) and then the counters
    /// gathered since the last flush as a new segment. Returns the downloads written.
    pub async fn flush(&self, storage: &Storage) -> Result<u64> {
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
        // Only the swap happens under the lock: downloads keep being counted while the
        // segment is built (flushes are serialised by `flush_lock`, so `seq` stays ordered).
        let (counters, seq) = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if state.counters.is_empty() {
                return Ok(0);
            }
            state.seq += 1;
            (std::mem::take(&mut state.counters), state.seq)
        };
        let rows = self.rows(counters);
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
        };
        let bytes = Bytes::from(serde_json::to_vec(&segment).unwrap_or_default());
        let pending = Pending { key, bytes };
        if let Err(e) = storage.put(&pending.key, pending.bytes.clone(), true).await {
            self.state.lock().unwrap_or_else(|e| e.into_inner()).pending = Some(pending);
            return Err(e);
        }
        Ok(downloads)
    }
}

/// Reads every segment in the storage and sums them.
pub async fn load_rows(storage: &Storage) -> Result<Vec<Row>> {
    let objects = storage.list(SEGMENTS_PREFIX).await?;
    let mut merged: BTreeMap<StatKey, Agg> = BTreeMap::new();
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
        for row in segment.rows {
            let agg = merged.entry(row.key).or_default();
            agg.downloads += row.downloads;
            agg.sources.extend(row.sources);
        }
    }
    Ok(merged
        .into_iter()
        .map(|(key, agg)| Row {
            key,
            downloads: agg.downloads,
            sources: agg.sources,
        })
        .collect())
}

/// One line of a report group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupLine {
    /// The group value, e.g. a kernel or a day.
    pub key: String,
    /// Downloads in the group.
    pub downloads: u64,
    /// Distinct sources in the group.
    pub sources: u64,
}

/// The statistics report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// All downloads.
    pub total_downloads: u64,
    /// Distinct sources over everything.
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
    /// Per client family and version.
    pub by_client: Vec<GroupLine>,
}

fn group(
    rows: &[Row],
    top: usize,
    by_count: bool,
    f: impl Fn(&StatKey) -> String,
) -> Vec<GroupLine> {
    let mut groups: BTreeMap<String, (u64, BTreeSet<&str>)> = BTreeMap::new();
    for row in rows {
        let g = groups.entry(f(&row.key)).or_default();
        g.0 += row.downloads;
        g.1.extend(row.sources.iter().map(String::as_str));
    }
    let mut lines: Vec<GroupLine> = groups
        .into_iter()
        .map(|(key, (downloads, sources))| GroupLine {
            key,
            downloads,
            sources: sources.len() as u64,
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
    let all: BTreeSet<&str> = rows
        .iter()
        .flat_map(|r| r.sources.iter().map(String::as_str))
        .collect();
    Report {
        total_downloads: rows.iter().map(|r| r.downloads).sum(),
        distinct_sources: all.len() as u64,
        by_day: group(rows, usize::MAX, false, |k| k.day.clone()),
        by_version: group(rows, top, true, |k| k.version.clone()),
        by_arch: group(rows, top, true, |k| k.arch.clone()),
        by_target: group(rows, top, true, |k| k.target.clone()),
        by_kernel: group(rows, top, true, |k| {
            format!("{} {} {}", k.target, k.kernelrelease, k.kernelversion)
        }),
        by_client: group(rows, top, true, |k| {
            if k.client_version.is_empty() {
                k.client.clone()
            } else {
                format!("{}/{}", k.client, k.client_version)
            }
        }),
    }
}

/// Renders the report as tables for a person.
pub fn render_table(report: &Report) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Downloads: {}   distinct sources: {}\n",
        report.total_downloads, report.distinct_sources
    );
    for (title, lines) in [
        ("By day", &report.by_day),
        ("Top driver versions", &report.by_version),
        ("Arches", &report.by_arch),
        ("Top targets", &report.by_target),
        ("Top kernels", &report.by_kernel),
        ("Top clients", &report.by_client),
    ] {
        let width = lines
            .iter()
            .map(|l| l.key.len())
            .max()
            .unwrap_or(0)
            .max(title.len());
        let _ = writeln!(
            out,
            "{title:<width$}  {:>10}  {:>8}",
            "DOWNLOADS", "SOURCES"
        );
        for line in lines {
            let _ = writeln!(
                out,
                "{:<width$}  {:>10}  {:>8}",
                line.key, line.downloads, line.sources
            );
        }
        out.push('\n');
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
        let recorder = Recorder::new([7; 32]);
        let path = |file: &str| DriverPath {
            version: "8.0.0+driver".into(),
            arch: "x86_64".into(),
            file: file.into(),
            key: format!("driver/8.0.0+driver/x86_64/{file}"),
        };
        let ko = path("falco_ubuntu-generic_6.8.0-31-generic_33.ko");
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "2001:db8::1".parse().unwrap();
        recorder.record(&ko, Some("curl/8.5.0"), a);
        recorder.record(&ko, Some("curl/8.5.0"), a);
        recorder.record(&ko, Some("CURL/8.5.0"), b); // the same counter: versions are compared as sent
        recorder.record(&ko, Some("curl/8.6.0-RC1"), a);
        recorder.record(&ko, Some("curl/8.6.0-rc1"), b); // the same row once lower-cased
        recorder.record(&ko, Some("falcoctl/0.11.0"), b);
        recorder.record(&path("not-a-driver.ko"), Some("curl/8.5.0"), a); // dropped at flush
        let counters = std::mem::take(&mut recorder.state.lock().unwrap().counters);
        assert_eq!(counters.len(), 5);
        let rows = recorder.rows(counters);
        assert_eq!(rows.len(), 3);
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
        let falcoctl = rows.iter().find(|r| r.key.client == "falcoctl").unwrap();
        assert_eq!((falcoctl.downloads, falcoctl.sources.len()), (1, 1));
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
        assert_eq!(r.distinct_sources, 2);
        assert_eq!(r.by_version[0].sources, 2);
        assert_eq!(r.by_kernel[0].key, "ubuntu-generic 5.0 1");
        assert_eq!(r.by_day.len(), 2);
        assert!(render_table(&r).contains("Top kernels"));
    }
}
