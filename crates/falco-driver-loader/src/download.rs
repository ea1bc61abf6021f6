//! HTTP downloads with retries, progress and atomic, verified installation.
//!
//! - Every request has a timeout (`--http-timeout`, per request as in falcoctl) and honours
//!   `HTTP_PROXY`/`HTTPS_PROXY`/`NO_PROXY` (reqwest's system proxy).
//! - Connection errors, timeouts, broken or truncated bodies and 5xx answers are retried with
//!   exponential backoff; a 429 waits for `Retry-After` (seconds or an HTTP date). Other
//!   statuses (404 first of all) are final for that URL.
//! - A driver is streamed into `.<file>.<random>.part` in the destination directory while it
//!   is hashed; it is checked against `Content-Length`, the expected size and the expected
//!   sha256, fsynced, and only then renamed to its final name, after `<file>.sha256` (the
//!   digest of the installed bytes) was written the same way. The directory is fsynced.
//! - [`verify_cached`] re-hashes a cached file against its `.sha256` record before reuse and
//!   discards it on any doubt; leftovers of killed downloads are removed.

use std::fs;
use std::io::{BufWriter, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use falco_core::driver::redact_url;
use futures::StreamExt as _;
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use reqwest::{Response, StatusCode};
use sha2::{Digest as _, Sha256};

use crate::config::sync_dir;
use crate::verify::Expected;
use crate::{Error, Result};

/// HTTP behaviour.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// Skip TLS certificate verification.
    pub insecure: bool,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Extra headers on every request.
    pub headers: Vec<(String, String)>,
    /// Retries after the first attempt.
    pub retries: u32,
    /// First backoff delay; doubles up to [`HttpOptions::max_backoff`].
    pub backoff: Duration,
    /// Largest backoff delay.
    pub max_backoff: Duration,
    /// Longest `Retry-After` honoured; a longer one fails the URL at once.
    pub max_retry_after: Duration,
    /// Show a progress bar (on a terminal) instead of log lines.
    pub progress_bar: bool,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            insecure: false,
            timeout: Duration::from_secs(60),
            headers: Vec::new(),
            retries: 3,
            backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(8),
            max_retry_after: Duration::from_secs(120),
            progress_bar: false,
        }
    }
}

/// The result of one attempt.
enum Attempt<T> {
    /// Success or a final failure.
    Done(Result<T>),
    /// A failure worth another try, after the given delay (backoff when `None`).
    Retry(Error, Option<Duration>),
}

/// A downloaded and installed file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    /// Final path.
    pub path: PathBuf,
    /// Lowercase hex sha256 of its bytes.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
}

/// An HTTP client with the loader's retry policy.
///
/// Plain-HTTP URLs use a client without TLS roots, so a loopback or in-cluster mirror does
/// not pay for loading the system's certificate store; the TLS client is built on first use
/// (an `https` URL, or a redirect from `http` to `https`).
#[derive(Debug)]
pub struct Fetcher {
    plain: reqwest::Client,
    tls: tokio::sync::OnceCell<reqwest::Client>,
    headers: HeaderMap,
    opts: HttpOptions,
}

/// Redirects followed by the plain client while they stay on `http`.
const MAX_REDIRECTS: usize = 10;

impl Fetcher {
    /// Builds the plain-HTTP client (the TLS one is built when first needed).
    pub fn new(opts: HttpOptions) -> Result<Self> {
        let mut headers = HeaderMap::new();
        for (k, v) in &opts.headers {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|e| Error::InvalidArgument(format!("invalid header name {k:?}: {e}")))?;
            let value = HeaderValue::from_str(v).map_err(|e| {
                Error::InvalidArgument(format!("invalid value for header {k}: {e}"))
            })?;
            headers.insert(name, value);
        }
        let plain = Self::builder(&opts, &headers)
            .tls_certs_only(Vec::new())
            .redirect(reqwest::redirect::Policy::custom(|attempt| {
                if attempt.url().scheme() != "http" {
                    attempt.stop()
                } else if attempt.previous().len() >= MAX_REDIRECTS {
                    attempt.error("too many redirects")
                } else {
                    attempt.follow()
                }
            }))
            .build()
            .map_err(Error::HttpClient)?;
        Ok(Self {
            plain,
            tls: tokio::sync::OnceCell::new(),
            headers,
            opts,
        })
    }

    fn builder(opts: &HttpOptions, headers: &HeaderMap) -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .user_agent(concat!("falco-driver-loader/", env!("CARGO_PKG_VERSION")))
            .default_headers(headers.clone())
            .timeout(opts.timeout)
            .connect_timeout(opts.timeout.min(Duration::from_secs(10)))
            .danger_accept_invalid_certs(opts.insecure)
    }

    async fn client_for(&self, url: &str) -> Result<&reqwest::Client> {
        if url.starts_with("http:") {
            return Ok(&self.plain);
        }
        self.tls
            .get_or_try_init(|| async {
                Self::builder(&self.opts, &self.headers)
                    .build()
                    .map_err(Error::HttpClient)
            })
            .await
    }

    /// GET through the right client; an `http` → `https` redirect continues on the TLS one.
    async fn get(&self, url: &str) -> Result<Result<Response, reqwest::Error>> {
        let first = self.client_for(url).await?.get(url).send().await;
        let next = match &first {
            Ok(resp) if resp.status().is_redirection() => resp
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .and_then(|l| resp.url().join(l).ok())
                .filter(|u| u.scheme() == "https"),
            _ => None,
        };
        match next {
            Some(next) => Ok(self.client_for(next.as_str()).await?.get(next).send().await),
            None => Ok(first),
        }
    }

    async fn with_retries<T, F, Fut>(&self, url: &str, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Attempt<T>>,
    {
        let mut backoff = self.opts.backoff;
        let mut attempt = 0;
        loop {
            match op().await {
                Attempt::Done(result) => return result,
                Attempt::Retry(err, wait) => {
                    if attempt >= self.opts.retries {
                        return Err(err);
                    }
                    let wait = match wait {
                        Some(w) if w > self.opts.max_retry_after => {
                            tracing::warn!(
                                url = %redact_url(url),
                                wait_s = w.as_secs(),
                                "Retry-After too long; giving up on this URL"
                            );
                            return Err(err);
                        }
                        Some(w) => w,
                        None => {
                            let w = backoff;
                            backoff = (backoff * 2).min(self.opts.max_backoff);
                            w
                        }
                    };
                    attempt += 1;
                    tracing::warn!(
                        url = %redact_url(url),
                        error = %err,
                        retry = attempt,
                        of = self.opts.retries,
                        wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                        "retrying"
                    );
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// One GET: a 2xx response, or a classified failure.
    async fn send(&self, url: &str) -> Attempt<Response> {
        let sent = match self.get(url).await {
            Ok(sent) => sent,
            Err(e) => return Attempt::Done(Err(e)),
        };
        match sent {
            Err(source) if source.is_builder() => Attempt::Done(Err(Error::Http {
                url: redact_url(url).into_owned(),
                source: source.without_url(),
            })),
            Err(source) => Attempt::Retry(
                Error::Http {
                    url: redact_url(url).into_owned(),
                    source: source.without_url(),
                },
                None,
            ),
            Ok(resp) => {
                let status = resp.status();
                let err = || Error::HttpStatus {
                    url: redact_url(url).into_owned(),
                    status: status.as_u16(),
                };
                if status.is_success() {
                    Attempt::Done(Ok(resp))
                } else if status == StatusCode::TOO_MANY_REQUESTS {
                    Attempt::Retry(err(), retry_after(&resp))
                } else if status.is_server_error() {
                    Attempt::Retry(err(), None)
                } else {
                    Attempt::Done(Err(err()))
                }
            }
        }
    }

    /// GETs a small file; `Ok(None)` when absent (404, 410, or 403 as S3 answers for a
    /// missing key).
    pub async fn fetch_small(&self, url: &str, limit: u64) -> Result<Option<Vec<u8>>> {
        self.with_retries(url, || async {
            let resp = match self.send(url).await {
                Attempt::Done(Ok(resp)) => resp,
                // S3 answers 403 for a missing key when listing is not allowed.
                Attempt::Done(Err(Error::HttpStatus {
                    status: 403 | 404 | 410,
                    ..
                })) => {
                    return Attempt::Done(Ok(None));
                }
                Attempt::Done(Err(e)) => return Attempt::Done(Err(e)),
                Attempt::Retry(e, w) => return Attempt::Retry(e, w),
            };
            if resp.content_length().is_some_and(|len| len > limit) {
                return Attempt::Done(Err(Error::TooLarge {
                    url: redact_url(url).into_owned(),
                    limit,
                }));
            }
            let expected = resp.content_length();
            let mut body = Vec::new();
            let mut stream = resp.bytes_stream();
            while let Some(chunk) = stream.next().await {
                match chunk {
                    Ok(chunk) => {
                        body.extend_from_slice(&chunk);
                        if body.len() as u64 > limit {
                            return Attempt::Done(Err(Error::TooLarge {
                                url: redact_url(url).into_owned(),
                                limit,
                            }));
                        }
                    }
                    Err(source) => {
                        return Attempt::Retry(
                            broken_body(url, body.len() as u64, expected, source),
                            None,
                        );
                    }
                }
            }
            if let Some(expected) = expected.filter(|&e| e != body.len() as u64) {
                return Attempt::Retry(
                    Error::Truncated {
                        url: redact_url(url).into_owned(),
                        received: body.len() as u64,
                        expected,
                    },
                    None,
                );
            }
            Attempt::Done(Ok(Some(body)))
        })
        .await
    }

    /// Downloads `url` to `dest` atomically after checking it against `expected`.
    pub async fn download(&self, url: &str, dest: &Path, expected: &Expected) -> Result<Installed> {
        let staged = self.stage(url, dest).await?;
        install_staged(staged, dest, expected)
    }

    /// Downloads `url` into a temporary file beside `dest` (nothing at `dest` changes).
    pub async fn stage(&self, url: &str, dest: &Path) -> Result<Staged> {
        let dir = dest.parent().unwrap_or(Path::new("."));
        let file = file_name(dest);
        fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
        remove_stale_parts(dir, &file);
        let (tmp, sha256, size) = self
            .with_retries(url, || self.download_once(url, dir, &file))
            .await?;
        Ok(Staged {
            tmp,
            sha256,
            size,
            url: redact_url(url).into_owned(),
        })
    }

    async fn download_once(
        &self,
        url: &str,
        dir: &Path,
        file: &str,
    ) -> Attempt<(tempfile::NamedTempFile, String, u64)> {
        let resp = match self.send(url).await {
            Attempt::Done(Ok(resp)) => resp,
            Attempt::Done(Err(e)) => return Attempt::Done(Err(e)),
            Attempt::Retry(e, w) => return Attempt::Retry(e, w),
        };
        let total = resp.content_length();
        let tmp = match tempfile::Builder::new()
            .prefix(&format!(".{file}."))
            .suffix(".part")
            .tempfile_in(dir)
        {
            Ok(tmp) => tmp,
            Err(e) => return Attempt::Done(Err(Error::io("create temp file in", dir, e))),
        };
        // Marks the part file as in use for a concurrent loader's cleanup (released on exit).
        let _ = tmp.as_file().try_lock();
        let mut progress = Progress::start(url, total, self.opts.progress_bar);
        // Hashing and writing run on a thread of their own, so they overlap with receiving.
        let sink = match tmp.reopen() {
            Ok(file) => HashingWriter::spawn(file),
            Err(e) => return Attempt::Done(Err(Error::io("open", tmp.path().to_owned(), e))),
        };
        let mut received = 0u64;
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(source) => {
                    progress.abandon();
                    let _ = sink.finish();
                    return Attempt::Retry(broken_body(url, received, total, source), None);
                }
            };
            received += chunk.len() as u64;
            if !sink.push(chunk) {
                break; // the writer failed; finish() reports why
            }
            progress.advance(received);
        }
        let sha256 = match sink.finish() {
            Ok(sha256) => sha256,
            Err(e) => {
                progress.abandon();
                return Attempt::Done(Err(Error::io("write", tmp.path().to_owned(), e)));
            }
        };
        if let Some(expected) = total.filter(|&t| t != received) {
            progress.abandon();
            return Attempt::Retry(
                Error::Truncated {
                    url: redact_url(url).into_owned(),
                    received,
                    expected,
                },
                None,
            );
        }
        progress.finish(received);
        Attempt::Done(Ok((tmp, sha256, received)))
    }
}

/// Writes chunks to a file and hashes them on a dedicated thread.
///
/// Every [`WRITEBACK_CHUNK`] written, the kernel is told to start writing that range to disk
/// (`posix_fadvise(DONTNEED)` starts writeback of dirty pages without waiting for it), so the
/// disk works while the rest of the driver is still arriving and the fsync before the rename
/// finds little left to do: 10 MiB cost 7–8 ms of fsync at the end without it, 0.3 ms with it.
struct HashingWriter {
    tx: std::sync::mpsc::SyncSender<Bytes>,
    worker: std::thread::JoinHandle<std::io::Result<String>>,
}

/// Bytes buffered before a write and its writeback hint.
const WRITEBACK_CHUNK: usize = 1 << 20;

impl HashingWriter {
    fn spawn(mut file: fs::File) -> Self {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Bytes>(64);
        let worker = std::thread::spawn(move || {
            let mut buf = Vec::with_capacity(WRITEBACK_CHUNK);
            let mut offset = 0u64;
            let mut hasher = Sha256::new();
            for chunk in rx {
                hasher.update(&chunk);
                buf.extend_from_slice(&chunk);
                if buf.len() >= WRITEBACK_CHUNK {
                    offset = write_and_start_writeback(&mut file, &buf, offset)?;
                    buf.clear();
                }
            }
            write_and_start_writeback(&mut file, &buf, offset)?;
            Ok(hex::encode(hasher.finalize()))
        });
        Self { tx, worker }
    }

    /// Queues a chunk (waits when the writer is behind); false when the writer has stopped.
    fn push(&self, chunk: Bytes) -> bool {
        self.tx.send(chunk).is_ok()
    }

    /// Waits for the writer; returns the sha256 of everything written.
    fn finish(self) -> std::io::Result<String> {
        drop(self.tx);
        self.worker
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("writer thread panicked")))
    }
}

/// Writes `buf` at `offset` (the end of the file) and starts its writeback; returns the new end.
fn write_and_start_writeback(file: &mut fs::File, buf: &[u8], offset: u64) -> std::io::Result<u64> {
    file.write_all(buf)?;
    if let Some(len) = std::num::NonZeroU64::new(buf.len() as u64) {
        // Only a hint: where it is not supported the final fsync does all the work.
        let _ = rustix::fs::fadvise(&*file, offset, Some(len), rustix::fs::Advice::DontNeed);
    }
    Ok(offset + buf.len() as u64)
}

/// A complete download in its temporary file, not yet checked nor installed; dropping it
/// deletes the file.
#[derive(Debug)]
pub struct Staged {
    tmp: tempfile::NamedTempFile,
    /// Lowercase hex sha256 of the bytes received.
    pub sha256: String,
    /// Bytes received.
    pub size: u64,
    url: String,
}

/// Checks a staged download against `expected` and, if it holds, installs it at `dest`.
pub fn install_staged(staged: Staged, dest: &Path, expected: &Expected) -> Result<Installed> {
    let Staged {
        tmp,
        sha256,
        size,
        url,
    } = staged;
    let file = file_name(dest);
    if let Some(want) = expected.size()
        && want != size
    {
        return Err(if size < want {
            Error::Truncated {
                url,
                received: size,
                expected: want,
            }
        } else {
            Error::ChecksumMismatch {
                file,
                expected: expected.sha256().unwrap_or_default().to_owned(),
                actual: sha256,
            }
        });
    }
    if let Some(want) = expected.sha256()
        && want != sha256
    {
        return Err(Error::ChecksumMismatch {
            file,
            expected: want.to_owned(),
            actual: sha256,
        });
    }
    commit(tmp, dest, &sha256)?;
    Ok(Installed {
        path: dest.to_owned(),
        sha256,
        size,
    })
}

fn broken_body(url: &str, received: u64, expected: Option<u64>, source: reqwest::Error) -> Error {
    match expected {
        Some(expected) if received < expected && !source.is_timeout() => Error::Truncated {
            url: redact_url(url).into_owned(),
            received,
            expected,
        },
        _ => Error::Http {
            url: redact_url(url).into_owned(),
            source: source.without_url(),
        },
    }
}

/// `Retry-After` as a delay: delta-seconds or an HTTP date.
fn retry_after(resp: &Response) -> Option<Duration> {
    let value = resp.headers().get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The path of the `.sha256` record kept beside a cached driver.
pub fn record_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(falco_core::index::SHA256_SUFFIX);
    PathBuf::from(name)
}

/// Removes `.<file>.*.part` leftovers of killed downloads (not those of a running one).
fn remove_stale_parts(dir: &Path, file: &str) {
    let prefix = format!(".{file}.");
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with(&prefix) && name.ends_with(".part")) {
            continue;
        }
        // A live download holds a lock on its part file; the kernel drops it when the
        // process dies, however it dies.
        let abandoned = fs::File::open(entry.path()).is_ok_and(|f| f.try_lock().is_ok());
        if abandoned {
            tracing::info!(path = %entry.path().display(), "removing the leftover of an interrupted download");
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// fsyncs the temp file, writes the `.sha256` record, renames the file into place and fsyncs
/// the directory. Readers see the old state or the new one, never a partial file.
fn commit(tmp: tempfile::NamedTempFile, dest: &Path, sha256: &str) -> Result<()> {
    tmp.as_file()
        .sync_data()
        .map_err(|e| Error::io("fsync", tmp.path().to_owned(), e))?;
    let record = falco_core::index::format_sha256_file(sha256, &file_name(dest));
    // Record first: a crash between the two renames leaves a record that does not match the
    // file, which only costs a new download.
    crate::config::write_replace(&record_path(dest), record.as_bytes(), 0o644)?;
    {
        use std::os::unix::fs::PermissionsExt as _;
        tmp.as_file()
            .set_permissions(fs::Permissions::from_mode(0o644))
            .map_err(|e| Error::io("chmod", tmp.path().to_owned(), e))?;
    }
    tmp.persist(dest)
        .map_err(|e| Error::io("rename to", dest, e.error))?;
    sync_dir(dest.parent().unwrap_or(Path::new(".")))
}

/// Copies a local file (a compiled module) to `dest` with the same atomic protocol.
pub fn install_local(src: &Path, dest: &Path) -> Result<Installed> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
    let file = file_name(dest);
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{file}."))
        .suffix(".part")
        .tempfile_in(dir)
        .map_err(|e| Error::io("create temp file in", dir, e))?;
    let _ = tmp.as_file().try_lock();
    let mut input = fs::File::open(src).map_err(|e| Error::io("open", src, e))?;
    let mut hasher = Sha256::new();
    let mut out = BufWriter::new(tmp.as_file());
    let mut buf = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        let n = input
            .read(&mut buf)
            .map_err(|e| Error::io("read", src, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])
            .map_err(|e| Error::io("write", dest, e))?;
        size += n as u64;
    }
    out.flush().map_err(|e| Error::io("write", dest, e))?;
    drop(out);
    let sha256 = hex::encode(hasher.finalize());
    commit(tmp, dest, &sha256)?;
    Ok(Installed {
        path: dest.to_owned(),
        sha256,
        size,
    })
}

/// Lowercase hex sha256 of a file.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Checks a cached driver against its `.sha256` record.
///
/// Returns its digest when it matches. A file without a record (e.g. left by falcoctl, which
/// may have been interrupted) or with a mismatching one is removed, with its record, and
/// `None` is returned: a cached file is never trusted on sight.
pub fn verify_cached(path: &Path) -> Result<Option<String>> {
    if !path.exists() {
        return Ok(None);
    }
    let record = record_path(path);
    let recorded = fs::read_to_string(&record)
        .ok()
        .and_then(|t| falco_core::index::parse_sha256_file(&t).ok())
        .map(|(sha, _)| sha);
    let actual = sha256_file(path).map_err(|e| Error::io("read", path, e))?;
    if recorded.as_deref() == Some(actual.as_str()) {
        return Ok(Some(actual));
    }
    tracing::warn!(
        path = %path.display(),
        recorded = recorded.as_deref().unwrap_or("none"),
        actual = %actual,
        "cached driver does not match its checksum record; discarding it"
    );
    fs::remove_file(path).map_err(|e| Error::io("remove", path, e))?;
    let _ = fs::remove_file(&record);
    Ok(None)
}

/// Download feedback: a progress bar on a terminal, log lines otherwise.
enum Progress {
    Bar(ProgressBar),
    Log {
        url: String,
        total: Option<u64>,
        next: u64,
    },
}

/// Log a line every this many bytes when the size is unknown.
const LOG_STEP: u64 = 4 << 20;

impl Progress {
    fn start(url: &str, total: Option<u64>, bar: bool) -> Self {
        if bar {
            let pb = total.map_or_else(ProgressBar::new_spinner, ProgressBar::new);
            if let Ok(style) = ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            ) {
                pb.set_style(style.progress_chars("=> "));
            }
            pb.set_message(url.rsplit('/').next().unwrap_or(url).to_owned());
            Self::Bar(pb)
        } else {
            tracing::info!(url = %redact_url(url), size = total, "downloading");
            let next = total.map_or(LOG_STEP, |t| (t / 4).max(1));
            Self::Log {
                url: redact_url(url).into_owned(),
                total,
                next,
            }
        }
    }

    fn advance(&mut self, received: u64) {
        match self {
            Self::Bar(pb) => pb.set_position(received),
            Self::Log { url, total, next } => {
                if received >= *next && total.is_none_or(|t| received < t) {
                    match total {
                        Some(t) => {
                            tracing::info!(url = %url, received, total = *t, "{}%", received * 100 / (*t).max(1));
                            *next = received + (*t / 4).max(1);
                        }
                        None => {
                            tracing::info!(url = %url, received, "downloading");
                            *next = received + LOG_STEP;
                        }
                    }
                }
            }
        }
    }

    fn finish(&self, received: u64) {
        match self {
            Self::Bar(pb) => pb.finish_and_clear(),
            Self::Log { url, .. } => tracing::info!(url = %url, bytes = received, "downloaded"),
        }
    }

    fn abandon(&self) {
        if let Self::Bar(pb) = self {
            pb.abandon();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_files_are_checked_against_their_record() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src.ko");
        fs::write(&src, b"module bytes").unwrap();
        let dest = dir.path().join("cache/falco.ko");
        let installed = install_local(&src, &dest).unwrap();
        assert_eq!(
            installed.sha256,
            falco_core::index::sha256_hex(b"module bytes")
        );
        assert_eq!(
            verify_cached(&dest).unwrap(),
            Some(installed.sha256.clone())
        );

        // No leftover temp file beside it.
        let names: Vec<_> = fs::read_dir(dest.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");

        fs::write(&dest, b"module bytez").unwrap();
        assert_eq!(verify_cached(&dest).unwrap(), None);
        assert!(!dest.exists() && !record_path(&dest).exists());

        // A file without a record (falcoctl's cache) is not trusted.
        fs::write(&dest, b"partial").unwrap();
        assert_eq!(verify_cached(&dest).unwrap(), None);
        assert!(!dest.exists());
    }

    #[test]
    fn stale_parts_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(".f.ko.abc.part"), b"x").unwrap();
        fs::write(dir.path().join(".g.ko.abc.part"), b"x").unwrap();
        let busy = fs::File::create(dir.path().join(".f.ko.live.part")).unwrap();
        busy.lock().unwrap();
        remove_stale_parts(dir.path(), "f.ko");
        assert!(!dir.path().join(".f.ko.abc.part").exists());
        assert!(dir.path().join(".f.ko.live.part").exists(), "in use");
        assert!(dir.path().join(".g.ko.abc.part").exists());
    }
}
