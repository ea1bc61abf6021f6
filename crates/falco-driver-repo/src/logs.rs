//! Ingestion of CDN and bucket access logs into the download statistics.
//!
//! Behind a CDN only cache misses reach the servers, so the edge's logs are the complete
//! record. Each log object becomes one segment whose key is derived from the log's key and
//! ETag: ingesting the same log again finds (or rewrites) the same segment, so it is counted
//! once. GETs answered 404 for a well-formed driver name are counted as missing drivers, as
//! the server counts them; a log is bounded by its size, so no cap applies here.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read as _;

use bytes::Bytes;
use percent_encoding::percent_decode_str;

use crate::layout::parse_url_path;
use crate::stats::{
    MissKey, MissRow, Row, SEGMENTS_PREFIX, Segment, SourceKeys, StatKey, client_class,
    client_family, source_hash,
};
use crate::storage::Storage;
use crate::{Error, Result};

/// Which log format a prefix holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// CloudFront standard (legacy) access logs: W3C, tab separated, usually gzip.
    CloudFront,
    /// S3 server access logs.
    S3,
}

/// What an ingestion did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct IngestReport {
    /// Log files turned into segments now.
    pub ingested: u64,
    /// Log files already ingested before.
    pub skipped: u64,
    /// Downloads found in the newly ingested files.
    pub downloads: u64,
    /// Requests for missing drivers found in the newly ingested files.
    pub misses: u64,
}

/// One download (or miss) found in a log.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Download {
    day: String,
    uri_path: String,
    ip: String,
    user_agent: String,
    /// Answered with a part of the file (206): the request had a `Range`.
    ranged: bool,
    /// Answered 404: a request for a missing object.
    missing: bool,
}

fn decompress(key: &str, bytes: &[u8]) -> Result<String> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut text = String::new();
        flate2::read::MultiGzDecoder::new(bytes)
            .read_to_string(&mut text)
            .map_err(|e| Error::Parse {
                key: key.into(),
                reason: format!("gzip: {e}"),
            })?;
        Ok(text)
    } else {
        Ok(String::from_utf8_lossy(bytes).into_owned())
    }
}

/// CloudFront encodes some characters twice (`%2B` appears as `%252B`); decode once here
/// so the path is an ordinary URL path again.
fn cloudfront_field(s: &str) -> String {
    percent_decode_str(s).decode_utf8_lossy().into_owned()
}

fn parse_cloudfront(text: &str) -> Vec<Download> {
    let mut fields: Vec<&str> = Vec::new();
    let mut out = Vec::new();
    for line in text.lines() {
        if let Some(f) = line.strip_prefix("#Fields:") {
            fields = f.split_whitespace().collect();
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let values: Vec<&str> = line.split('\t').collect();
        let get = |name: &str| {
            fields
                .iter()
                .position(|f| *f == name)
                .and_then(|i| values.get(i).copied())
        };
        let (Some(date), Some(method), Some(status), Some(stem)) = (
            get("date"),
            get("cs-method"),
            get("sc-status"),
            get("cs-uri-stem"),
        ) else {
            continue;
        };
        let whole = status == "200"
            || (status == "206" && get("sc-range-start").is_none_or(|s| s == "0" || s == "-"));
        let missing = status == "404";
        if method != "GET" || !(whole || missing) {
            continue;
        }
        out.push(Download {
            day: date.into(),
            uri_path: cloudfront_field(stem),
            ip: get("c-ip").unwrap_or("-").into(),
            user_agent: cloudfront_field(get("cs(User-Agent)").unwrap_or("-")),
            ranged: status == "206",
            missing,
        });
    }
    out
}

/// Splits an S3 access log line into fields: quoted strings and `[...]` are single fields.
fn s3_fields(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c == ' ' {
            chars.next();
            continue;
        }
        let mut field = String::new();
        let close = match c {
            '"' => Some('"'),
            '[' => Some(']'),
            _ => None,
        };
        if let Some(close) = close {
            chars.next();
            for c in chars.by_ref() {
                if c == close {
                    break;
                }
                field.push(c);
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ' ' {
                    break;
                }
                field.push(c);
                chars.next();
            }
        }
        out.push(field);
    }
    out
}

fn parse_s3(text: &str) -> Vec<Download> {
    let mut out = Vec::new();
    for line in text.lines() {
        let f = s3_fields(line);
        // owner bucket [time] ip requester id operation key "request" status error bytes size
        // total turnaround "referer" "user-agent" ...
        if f.len() < 17 || f[6] != "REST.GET.OBJECT" || !matches!(f[9].as_str(), "200" | "404") {
            continue;
        }
        let Some(date) = chrono::DateTime::parse_from_str(&f[2], "%d/%b/%Y:%H:%M:%S %z").ok()
        else {
            continue;
        };
        // The key is URL-encoded once; make it a URL path like the served ones.
        let key = percent_decode_str(&f[7]).decode_utf8_lossy().into_owned();
        let path = key
            .split('/')
            .map(|s| {
                percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC)
                    .to_string()
            })
            .collect::<Vec<_>>()
            .join("/");
        out.push(Download {
            day: date.format("%Y-%m-%d").to_string(),
            uri_path: format!("/{path}"),
            ip: f[3].clone(),
            user_agent: f[16].clone(),
            ranged: false,
            missing: f[9] == "404",
        });
    }
    out
}

/// Turns downloads and misses into counter rows, keeping only drivers under `/driver/`;
/// `key_of` gives the source key of a day.
fn rows(downloads: &[Download], key_of: impl Fn(&str) -> [u8; 32]) -> (Vec<Row>, Vec<MissRow>) {
    let mut merged: HashMap<StatKey, (u64, BTreeSet<String>)> = HashMap::new();
    let mut misses: BTreeMap<MissKey, (u64, BTreeSet<String>)> = BTreeMap::new();
    let mut keys: HashMap<&str, [u8; 32]> = HashMap::new();
    for d in downloads {
        let rest = d
            .uri_path
            .split_once("/driver/")
            .map(|(_, r)| r)
            .unwrap_or_default();
        let Some(path) = parse_url_path(rest) else {
            continue;
        };
        let Some(name) = falco_core::driver::DriverFileName::parse(&path.file) else {
            continue;
        };
        let source_key = *keys.entry(d.day.as_str()).or_insert_with(|| key_of(&d.day));
        let source = source_hash(&source_key, &d.ip);
        if d.missing {
            let e = misses
                .entry(MissKey {
                    day: d.day.clone(),
                    version: path.version,
                    arch: path.arch,
                    file: path.file,
                    target: name.target,
                    kernelrelease: name.kernelrelease,
                    kernelversion: name.kernelversion,
                })
                .or_default();
            e.0 += 1;
            e.1.insert(source);
            continue;
        }
        let ua = (d.user_agent != "-").then_some(d.user_agent.as_str());
        let (family, version) = client_family(ua);
        let key = StatKey {
            day: d.day.clone(),
            version: path.version,
            arch: path.arch,
            target: name.target,
            kernelrelease: name.kernelrelease,
            kernelversion: name.kernelversion,
            class: client_class(family, d.ranged).into(),
            client: family.into(),
            client_version: version,
        };
        let e = merged.entry(key).or_default();
        e.0 += 1;
        e.1.insert(source);
    }
    let mut rows: Vec<Row> = merged
        .into_iter()
        .map(|(key, (downloads, sources))| Row {
            key,
            downloads,
            sources,
        })
        .collect();
    rows.sort_by(|a, b| a.key.cmp(&b.key));
    let misses = misses
        .into_iter()
        .map(|(key, (requests, sources))| MissRow {
            key,
            requests,
            sources,
        })
        .collect();
    (rows, misses)
}

/// Ingests every log object under `prefix`, each once.
///
/// Addresses are hashed with their day's source key, shared with the servers, so a source
/// seen by the origin and by the CDN counts once that day. The key of a day whose counts
/// are already final has been deleted: lines of such a day (a log ingested late) are hashed
/// with a key of this ingestion only, never stored, so their sources still count, but are
/// not unioned with the other segments of that day.
pub async fn ingest(
    storage: &Storage,
    keys: &SourceKeys,
    prefix: &str,
    format: LogFormat,
) -> Result<IngestReport> {
    use sha2::Digest as _;
    let today = crate::stats::day_number();
    let mut late = [0u8; 32];
    crate::stats::random(&mut late);
    let mut report = IngestReport::default();
    for meta in storage.list(prefix).await? {
        let key = meta.location.to_string();
        let id = sha2::Sha256::digest(format!(
            "{key}\n{}",
            meta.e_tag.as_deref().unwrap_or_default()
        ));
        let segment_key = format!("{SEGMENTS_PREFIX}logs/{}.json", hex::encode(&id[..16]));
        if storage.head(&segment_key).await?.is_some() {
            report.skipped += 1;
            continue;
        }
        let Some(bytes) = storage.read(&key).await? else {
            continue;
        };
        let text = decompress(&key, &bytes)?;
        let downloads = match format {
            LogFormat::CloudFront => parse_cloudfront(&text),
            LogFormat::S3 => parse_s3(&text),
        };
        let mut day_keys: HashMap<String, [u8; 32]> = HashMap::new();
        for day in downloads
            .iter()
            .map(|d| d.day.as_str())
            .collect::<BTreeSet<_>>()
        {
            let source_key = match crate::stats::parse_day(day) {
                Some(n) if !crate::stats::is_final(n, today) => keys.wait(storage, n).await?,
                _ => late,
            };
            day_keys.insert(day.into(), source_key);
        }
        let (rows, misses) = rows(&downloads, |day| day_keys.get(day).copied().unwrap_or(late));
        report.downloads += rows.iter().map(|r| r.downloads).sum::<u64>();
        report.misses += misses.iter().map(|r| r.requests).sum::<u64>();
        let segment = Segment {
            writer: format!("log:{key}"),
            seq: 0,
            rows,
            misses,
        };
        let body = Bytes::from(serde_json::to_vec(&segment).unwrap_or_default());
        // Same key and same bytes for the same log: a concurrent second ingestion rewrites
        // an identical object.
        storage.put(&segment_key, body, false).await?;
        report.ingested += 1;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cloudfront_lines_become_downloads() {
        let text = "#Version: 1.0\n#Fields: date time x-edge-location sc-bytes c-ip cs-method cs(Host) cs-uri-stem sc-status cs(Referer) cs(User-Agent)\n\
            2026-11-20\t10:00:00\tFRA56-C1\t100\t192.0.2.1\tGET\td.cloudfront.net\t/driver/8.0.0%252Bdriver/x86_64/falco_ubuntu-generic_5.0.0_26.ko\t200\t-\tfalcoctl/0.11.0\n\
            2026-11-20\t10:00:01\tFRA56-C1\t100\t192.0.2.1\tHEAD\td.cloudfront.net\t/driver/8.0.0%252Bdriver/x86_64/falco_ubuntu-generic_5.0.0_26.ko\t200\t-\tfalcoctl/0.11.0\n\
            2026-11-20\t10:00:02\tFRA56-C1\t100\t192.0.2.2\tGET\td.cloudfront.net\t/driver/8.0.0%252Bdriver/x86_64/falco_nope_1_1.ko\t404\t-\tcurl/8.0\n";
        let d = parse_cloudfront(text);
        assert_eq!(d.len(), 2);
        let (r, m) = rows(&d, |_| [0; 32]);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].key.version, "8.0.0+driver");
        assert_eq!(r[0].key.client, "falcoctl");
        assert_eq!(r[0].key.class, "falcoctl");
        assert_eq!(m.len(), 1);
        assert_eq!(
            (
                m[0].key.target.as_str(),
                m[0].key.kernelrelease.as_str(),
                m[0].requests
            ),
            ("nope", "1", 1)
        );
    }

    #[test]
    fn s3_access_log_lines_become_downloads() {
        let line = r#"79a5 falco-distribution [06/Feb/2026:00:00:38 +0000] 192.0.2.3 - 3E57 REST.GET.OBJECT driver/8.0.0%2Bdriver/x86_64/falco_ubuntu-generic_5.0.0_26.ko "GET /driver/8.0.0%2Bdriver/x86_64/falco_ubuntu-generic_5.0.0_26.ko HTTP/1.1" 200 - 113 113 7 6 "-" "curl/8.5.0" - x SigV4 ECDHE TLS download.falco.org TLSv1.3 -"#;
        let d = parse_s3(line);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].day, "2026-02-06");
        let (r, _) = rows(&d, |_| [0; 32]);
        assert_eq!(r[0].key.version, "8.0.0+driver");
        assert_eq!(r[0].key.client, "curl");
        assert_eq!(r[0].key.class, "legacy-loader-script");
        let missing = line.replace("\" 200 -", "\" 404 NoSuchKey");
        let (r, m) = rows(&parse_s3(&missing), |_| [0; 32]);
        assert!(r.is_empty());
        assert_eq!(m[0].requests, 1);
    }
}
