//! The HTTP server: GET and HEAD of drivers, checksums and indexes at the same paths as
//! `download.falco.org`, with Range, conditional requests, CDN cache headers, a negative
//! cache for missing objects, download statistics, `/healthz` and `/metrics`.
//!
//! Connections are accepted by an own loop over hyper's HTTP/1.1 server so that abuse has
//! bounds: a request head must arrive within the header-read timeout, a connection that
//! moves no byte for the idle timeout is closed, and at most `max_connections` are open
//! (beyond that new connections wait in the kernel's accept queue until one closes).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use object_store::{GetOptions, GetRange, GetResult, GetResultPayload, ObjectMeta};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::layout::{DriverPath, ObjectKind, parse_url_path};
use crate::stats::{MissOutcome, Recorder};
use crate::storage::Storage;
use crate::{Error, Result};

/// Largest accepted sum of request header names and values, in bytes.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Settings of the server.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// `max-age` of drivers and checksums (immutable once published).
    pub max_age: Duration,
    /// `max-age` of `index.json` and its signature (they change when a driver is published).
    pub index_max_age: Duration,
    /// How long a missing object is answered 404 without asking the storage.
    pub negative_ttl: Duration,
    /// Most entries in the negative cache.
    pub negative_capacity: usize,
    /// `Retry-After` seconds of a 503.
    pub retry_after: Duration,
    /// Take the client address from the first `X-Forwarded-For` entry (behind a CDN or proxy).
    pub trust_forwarded_for: bool,
    /// Longest wait for a request head (request line and headers), also between two requests
    /// of a keep-alive connection.
    pub header_read_timeout: Duration,
    /// A connection that reads and writes nothing for this long is closed.
    pub idle_timeout: Duration,
    /// Most connections open at once; further ones wait to be accepted.
    pub max_connections: usize,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            max_age: Duration::from_secs(86_400),
            index_max_age: Duration::from_secs(300),
            negative_ttl: Duration::from_secs(60),
            negative_capacity: 100_000,
            retry_after: Duration::from_secs(5),
            trust_forwarded_for: false,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 4096,
        }
    }
}

/// HTTP status, a metric label (closed set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
enum StatusLabel {
    ok_200,
    partial_206,
    not_modified_304,
    bad_request_400,
    not_found_404,
    range_416,
    headers_too_large_431,
    unavailable_503,
    other,
}

impl StatusLabel {
    fn of(status: StatusCode) -> Self {
        match status.as_u16() {
            200 => Self::ok_200,
            206 => Self::partial_206,
            304 => Self::not_modified_304,
            400 => Self::bad_request_400,
            404 => Self::not_found_404,
            416 => Self::range_416,
            431 => Self::headers_too_large_431,
            503 => Self::unavailable_503,
            _ => Self::other,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
enum MethodLabel {
    get,
    head,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
enum KindLabel {
    driver,
    index,
    checksum,
    other,
    invalid,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    method: MethodLabel,
    kind: KindLabel,
    status: StatusLabel,
}

/// Why a connection ended, a metric label (closed set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
enum CloseReason {
    /// The client closed it, or it was closed after a response.
    done,
    /// The request head did not arrive within the header-read timeout.
    header_timeout,
    /// No byte moved for the idle timeout.
    idle_timeout,
    /// A protocol or I/O error.
    error,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CloseLabels {
    reason: CloseReason,
}

#[derive(Debug, Default, Clone)]
struct Metrics {
    requests: Family<RequestLabels, Counter>,
    negative_hits: Counter,
    downloads: Counter,
    misses: Counter,
    miss_overflow: Counter,
    connections_open: Gauge,
    connections_closed: Family<CloseLabels, Counter>,
}

/// Missing keys answered 404 without a storage call until their deadline.
#[derive(Debug, Default)]
struct NegativeCache {
    entries: Mutex<HashMap<String, Instant>>,
}

impl NegativeCache {
    fn contains(&self, key: &str) -> bool {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(key)
            .is_some_and(|deadline| *deadline > Instant::now())
    }

    fn insert(&self, key: &str, ttl: Duration, capacity: usize) {
        if ttl.is_zero() || capacity == 0 {
            return;
        }
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= capacity {
            entries.retain(|_, deadline| *deadline > now);
            if entries.len() >= capacity {
                entries.clear();
            }
        }
        entries.insert(key.to_owned(), now + ttl);
    }
}

/// Shared state of the handlers.
#[derive(Debug)]
pub struct AppState {
    storage: Storage,
    recorder: Option<Arc<Recorder>>,
    config: ServeConfig,
    negative: NegativeCache,
    metrics: Metrics,
    registry: Registry,
}

impl AppState {
    /// State for a server over a storage, counting downloads into `recorder` when given.
    pub fn new(storage: Storage, recorder: Option<Arc<Recorder>>, config: ServeConfig) -> Self {
        let metrics = Metrics::default();
        let mut registry = Registry::with_prefix("driver_repo");
        registry.register(
            "http_requests",
            "HTTP requests under /driver by method, object kind and status",
            metrics.requests.clone(),
        );
        registry.register(
            "negative_cache_hits",
            "404 answers served from the negative cache without a storage call",
            metrics.negative_hits.clone(),
        );
        registry.register(
            "downloads",
            "Driver downloads counted for the statistics",
            metrics.downloads.clone(),
        );
        registry.register(
            "missing_driver_requests",
            "GETs of well-formed driver names answered 404, counted for the statistics",
            metrics.misses.clone(),
        );
        registry.register(
            "missing_driver_overflow",
            "Missing-driver requests counted in the overflow bucket (more distinct missing drivers than --stats-miss-capacity in one flush interval)",
            metrics.miss_overflow.clone(),
        );
        registry.register(
            "connections_open",
            "HTTP connections open now",
            metrics.connections_open.clone(),
        );
        registry.register(
            "connections_closed",
            "HTTP connections closed, by reason",
            metrics.connections_closed.clone(),
        );
        registry.register(
            "storage_requests",
            "Storage calls by operation and outcome",
            storage.calls().clone(),
        );
        Self {
            storage,
            recorder,
            config,
            negative: NegativeCache::default(),
            metrics,
            registry,
        }
    }
}

/// The HTTP routes.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/driver/{*rest}", get(driver))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// Serves until `shutdown` resolves, then flushes the statistics one last time.
pub async fn run(
    listener: TcpListener,
    state: Arc<AppState>,
    flush_interval: Duration,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let flusher = state.recorder.clone().map(|recorder| {
        let storage = state.storage.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(flush_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                match recorder.flush(&storage).await {
                    Ok(n) if n > 0 => tracing::debug!(downloads = n, "flushed statistics"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "statistics flush failed; retrying next interval"),
                }
            }
        })
    });
    let served = accept_loop(listener, state.clone(), shutdown).await;
    if let Some(flusher) = flusher {
        flusher.abort();
    }
    if let Some(recorder) = &state.recorder {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match recorder.flush_final(&state.storage).await {
                Ok(n) => {
                    tracing::info!(downloads = n, "final statistics flush");
                    break;
                }
                Err(e) if Instant::now() < deadline => {
                    tracing::warn!(error = %e, "final statistics flush failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => {
                    tracing::error!(error = %e, "final statistics flush failed; counts of the last interval are lost");
                    break;
                }
            }
        }
    }
    served.map_err(Error::Serve)
}

/// Milliseconds since a connection started at which it last read or wrote a byte.
#[derive(Debug)]
struct Activity {
    start: Instant,
    last_ms: std::sync::atomic::AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last_ms: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(std::sync::atomic::Ordering::Relaxed))
    }
}

/// A socket that records when it last moved a byte, for the idle timeout.
struct Tracked {
    inner: tokio::net::TcpStream,
    activity: Arc<Activity>,
}

impl tokio::io::AsyncRead for Tracked {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl tokio::io::AsyncWrite for Tracked {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, std::task::Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, std::task::Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Accepts connections until `shutdown`, at most `max_connections` at once, then lets the
/// open ones finish their requests (for at most 30 s).
async fn accept_loop(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let max = state.config.max_connections.clamp(1, u32::MAX as usize);
    let slots = Arc::new(tokio::sync::Semaphore::new(max));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let app = router(state.clone());
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(state.config.header_read_timeout)
        .keep_alive(true);
    let http = Arc::new(http);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors or a connection reset before accept: the
                    // listener is fine; back off briefly so a full table is not spun on.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Headers and a small body go out as separate writes; without TCP_NODELAY, Nagle's
        // algorithm and delayed ACKs hold every small response for tens of milliseconds.
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
        tokio::spawn(connection(
            tcp,
            peer,
            app.clone(),
            http.clone(),
            state.clone(),
            stop_rx.clone(),
            permit,
        ));
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Every connection holds a slot until it ends: all slots back means all are closed.
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    if tokio::time::timeout(Duration::from_secs(30), slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("connections still open 30 s after shutdown; closing them");
    }
    Ok(())
}

/// Serves one connection, closing it when idle for too long or when the server stops.
async fn connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    app: Router,
    http: Arc<hyper::server::conn::http1::Builder>,
    state: Arc<AppState>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    _slot: tokio::sync::OwnedSemaphorePermit,
) {
    let metrics = &state.metrics;
    metrics.connections_open.inc();
    let activity = Arc::new(Activity::new());
    let io = hyper_util::rt::TokioIo::new(Tracked {
        inner: tcp,
        activity: activity.clone(),
    });
    let service =
        hyper::service::service_fn(move |req: axum::http::Request<hyper::body::Incoming>| {
            let mut req = req.map(Body::new);
            req.extensions_mut().insert(ConnectInfo(peer));
            let mut app = app.clone();
            async move { tower_service::Service::call(&mut app, req).await }
        });
    let conn = http.serve_connection(io, service);
    tokio::pin!(conn);
    let idle = state.config.idle_timeout.max(Duration::from_millis(100));
    let mut stopping = *stop.borrow();
    if stopping {
        conn.as_mut().graceful_shutdown();
    }
    let reason = loop {
        tokio::select! {
            served = conn.as_mut() => break match served {
                Ok(()) => CloseReason::done,
                Err(e) if e.is_timeout() => CloseReason::header_timeout,
                Err(e) if e.is_incomplete_message() => CloseReason::done,
                Err(e) => {
                    tracing::debug!(error = %e, %peer, "connection error");
                    CloseReason::error
                }
            },
            () = tokio::time::sleep_until((activity.last() + idle).into()) => {
                if activity.last() + idle <= Instant::now() {
                    break CloseReason::idle_timeout;
                }
            }
            changed = stop.changed(), if !stopping => {
                stopping = true;
                if changed.is_ok() {
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    };
    metrics
        .connections_closed
        .get_or_create(&CloseLabels { reason })
        .inc();
    metrics.connections_open.dec();
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, &state.registry).is_err() {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        out,
    )
        .into_response()
}

async fn driver(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let method_label = if method == Method::HEAD {
        MethodLabel::head
    } else {
        MethodLabel::get
    };
    let (kind, response) = handle(&state, peer, &method, &uri, &headers).await;
    let kind = match kind {
        None => KindLabel::invalid,
        Some(ObjectKind::Driver) => KindLabel::driver,
        Some(ObjectKind::Index) => KindLabel::index,
        Some(ObjectKind::Checksum) => KindLabel::checksum,
        Some(ObjectKind::Other) => KindLabel::other,
    };
    state
        .metrics
        .requests
        .get_or_create(&RequestLabels {
            method: method_label,
            kind,
            status: StatusLabel::of(response.status()),
        })
        .inc();
    response
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text,
    )
        .into_response()
}

async fn handle(
    state: &AppState,
    peer: SocketAddr,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> (Option<ObjectKind>, Response) {
    let header_bytes: usize = headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len())
        .sum();
    if header_bytes > MAX_HEADER_BYTES {
        return (
            None,
            plain(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "request headers too large\n",
            ),
        );
    }
    let rest = uri.path().strip_prefix("/driver/").unwrap_or_default();
    let Some(path) = parse_url_path(rest) else {
        return (
            None,
            plain(StatusCode::BAD_REQUEST, "invalid driver path\n"),
        );
    };
    let kind = ObjectKind::of(&path.file);
    (
        Some(kind),
        serve_object(state, peer, method, headers, &path, kind).await,
    )
}

fn quote_etag(e_tag: &str) -> String {
    if e_tag.starts_with('"') || e_tag.starts_with("W/") {
        e_tag.to_owned()
    } else {
        format!("\"{e_tag}\"")
    }
}

fn etag_matches(if_none_match: &str, etag: &str) -> bool {
    let bare = |t: &str| t.trim().trim_start_matches("W/").to_owned();
    let etag = bare(etag);
    if_none_match
        .split(',')
        .any(|t| t.trim() == "*" || bare(t) == etag)
}

/// What to do with a `Range` header (RFC 9110 §14.2).
#[derive(Debug, PartialEq, Eq)]
enum RangeRequest {
    /// No `Range`, or one that is ignored: answer 200 with the whole file. A server must
    /// ignore a range unit it does not know (`items=0-1`) and may ignore an invalid or a
    /// multi-range set; the whole file is a correct answer to a satisfiable multi-range.
    None,
    /// One byte range, inclusive: answer 206.
    Satisfiable { start: u64, end: u64 },
    /// One syntactically valid byte range that selects nothing of this file: answer 416.
    Unsatisfiable,
}

/// One `byte-range-spec` or `suffix-byte-range-spec`; `None` when invalid.
#[derive(Debug, PartialEq, Eq)]
enum ByteRange {
    /// `first-last` or `first-`; `u64::MAX` stands for a position too large to represent.
    From { first: u64, last: Option<u64> },
    /// `-length`.
    Suffix(u64),
}

fn parse_byte_range(spec: &str) -> Option<ByteRange> {
    // Positions are 1*DIGIT; a value too large for u64 is still a valid (huge) position.
    let pos = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
            .then(|| s.parse().unwrap_or(u64::MAX))
    };
    let (a, b) = spec.split_once('-')?;
    if a.is_empty() {
        return pos(b).map(ByteRange::Suffix);
    }
    let first = pos(a)?;
    let last = if b.is_empty() { None } else { Some(pos(b)?) };
    // "A byte-range-spec is invalid if the last-pos value is present and less than the
    // first-pos" (RFC 9110 §14.1.2).
    if last.is_some_and(|last| last < first) {
        return None;
    }
    Some(ByteRange::From { first, last })
}

fn parse_range(value: &str, size: u64) -> RangeRequest {
    let Some((unit, set)) = value.trim().split_once('=') else {
        return RangeRequest::None;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return RangeRequest::None;
    }
    // A list may hold empty elements (RFC 9110 §5.6.1).
    let specs: Vec<&str> = set
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let [spec] = specs.as_slice() else {
        return RangeRequest::None;
    };
    match parse_byte_range(spec) {
        None => RangeRequest::None,
        Some(_) if size == 0 => RangeRequest::Unsatisfiable,
        Some(ByteRange::Suffix(0)) => RangeRequest::Unsatisfiable,
        Some(ByteRange::Suffix(n)) => RangeRequest::Satisfiable {
            start: size.saturating_sub(n),
            end: size - 1,
        },
        Some(ByteRange::From { first, .. }) if first >= size => RangeRequest::Unsatisfiable,
        Some(ByteRange::From { first, last }) => RangeRequest::Satisfiable {
            start: first,
            end: last.unwrap_or(u64::MAX).min(size - 1),
        },
    }
}

fn cache_control(state: &AppState, kind: ObjectKind) -> HeaderValue {
    let age = match kind {
        ObjectKind::Index => state.config.index_max_age,
        _ => state.config.max_age,
    };
    HeaderValue::from_str(&format!("public, max-age={}", age.as_secs()))
        .unwrap_or(HeaderValue::from_static("no-cache"))
}

fn object_headers(state: &AppState, kind: ObjectKind, meta: &ObjectMeta) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(header::CACHE_CONTROL, cache_control(state, kind));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    let content_type = match kind {
        ObjectKind::Index if meta.location.as_ref().ends_with(".json") => "application/json",
        ObjectKind::Index | ObjectKind::Checksum => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    };
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Some(e_tag) = &meta.e_tag
        && let Ok(v) = HeaderValue::from_str(&quote_etag(e_tag))
    {
        h.insert(header::ETAG, v);
    }
    let modified: SystemTime = meta.last_modified.into();
    if let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(modified)) {
        h.insert(header::LAST_MODIFIED, v);
    }
    h
}

fn not_found(state: &AppState) -> Response {
    let mut r = plain(StatusCode::NOT_FOUND, "not found\n");
    if let Ok(v) = HeaderValue::from_str(&format!(
        "public, max-age={}",
        state.config.negative_ttl.as_secs()
    )) {
        r.headers_mut().insert(header::CACHE_CONTROL, v);
    }
    r
}

fn unavailable(state: &AppState, error: &object_store::Error) -> Response {
    tracing::warn!(%error, "storage unavailable");
    let mut r = plain(
        StatusCode::SERVICE_UNAVAILABLE,
        "storage unavailable, retry later\n",
    );
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(v) = HeaderValue::from_str(&state.config.retry_after.as_secs().max(1).to_string()) {
        h.insert(header::RETRY_AFTER, v);
    }
    r
}

fn not_modified(
    meta: &ObjectMeta,
    if_none_match: Option<&str>,
    if_modified_since: Option<&str>,
) -> bool {
    if let Some(inm) = if_none_match {
        return meta
            .e_tag
            .as_deref()
            .is_some_and(|e| etag_matches(inm, &quote_etag(e)));
    }
    if let Some(ims) = if_modified_since.and_then(|v| httpdate::parse_http_date(v).ok()) {
        let modified = meta.last_modified.timestamp();
        let since = ims
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        return modified <= since;
    }
    false
}

fn client_ip(state: &AppState, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
    if state.config.trust_forwarded_for
        && let Some(ip) = headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .and_then(|v| v.trim().parse().ok())
    {
        return ip;
    }
    peer.ip()
}

async fn serve_object(
    state: &AppState,
    peer: SocketAddr,
    method: &Method,
    headers: &HeaderMap,
    path: &DriverPath,
    kind: ObjectKind,
) -> Response {
    // A 404 for a driver is demand for a driver nobody built: counted, from the negative
    // cache too.
    let missing = || {
        if *method == Method::GET
            && kind == ObjectKind::Driver
            && let Some(recorder) = &state.recorder
        {
            match recorder.record_miss(path, client_ip(state, peer, headers)) {
                MissOutcome::Counted => {
                    state.metrics.misses.inc();
                }
                MissOutcome::Overflow => {
                    state.metrics.misses.inc();
                    state.metrics.miss_overflow.inc();
                }
                MissOutcome::NotADriver => {}
            }
        }
        not_found(state)
    };
    if state.negative.contains(&path.key) {
        state.metrics.negative_hits.inc();
        return missing();
    }
    let text = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let range = headers.get(header::RANGE);
    let if_none_match = text(header::IF_NONE_MATCH);
    let if_modified_since = text(header::IF_MODIFIED_SINCE);
    let head = *method == Method::HEAD;

    // The common case, a plain GET, costs one storage call; HEAD, Range and conditional
    // requests first read the metadata.
    let (meta, get_range) =
        if head || range.is_some() || if_none_match.is_some() || if_modified_since.is_some() {
            let meta = match state.storage.head_raw(&path.key).await {
                Ok(meta) => meta,
                Err(object_store::Error::NotFound { .. }) => {
                    state.negative.insert(
                        &path.key,
                        state.config.negative_ttl,
                        state.config.negative_capacity,
                    );
                    return missing();
                }
                Err(e) => return unavailable(state, &e),
            };
            if not_modified(&meta, if_none_match, if_modified_since) {
                let mut r = StatusCode::NOT_MODIFIED.into_response();
                let mut h = object_headers(state, kind, &meta);
                h.remove(header::CONTENT_TYPE);
                r.headers_mut().extend(h);
                return r;
            }
            let requested = match range.map(|r| r.to_str().unwrap_or("")) {
                None => RangeRequest::None,
                Some(value) => parse_range(value, meta.size),
            };
            match requested {
                RangeRequest::Unsatisfiable => {
                    let mut r = plain(StatusCode::RANGE_NOT_SATISFIABLE, "range not satisfiable\n");
                    if let Ok(v) = HeaderValue::from_str(&format!("bytes */{}", meta.size)) {
                        r.headers_mut().insert(header::CONTENT_RANGE, v);
                    }
                    return r;
                }
                RangeRequest::None if head => {
                    let mut r = StatusCode::OK.into_response();
                    r.headers_mut().extend(object_headers(state, kind, &meta));
                    r.headers_mut()
                        .insert(header::CONTENT_LENGTH, HeaderValue::from(meta.size));
                    return r;
                }
                RangeRequest::None => (Some(meta), None),
                RangeRequest::Satisfiable { start, end } => (Some(meta), Some((start, end))),
            }
        } else {
            (None, None)
        };

    if head {
        // HEAD with a satisfiable Range: describe the part without reading it.
        let (Some(meta), Some((start, end))) = (meta, get_range) else {
            return plain(StatusCode::BAD_REQUEST, "bad request\n");
        };
        let mut r = StatusCode::PARTIAL_CONTENT.into_response();
        r.headers_mut().extend(object_headers(state, kind, &meta));
        insert_range_headers(r.headers_mut(), start, end, meta.size);
        return r;
    }

    let mut opts = GetOptions::default();
    if let Some((start, end)) = get_range {
        opts.range = Some(GetRange::Bounded(start..end + 1));
    }
    let result = match state.storage.get_opts(&path.key, opts).await {
        Ok(result) => result,
        Err(object_store::Error::NotFound { .. }) => {
            state.negative.insert(
                &path.key,
                state.config.negative_ttl,
                state.config.negative_capacity,
            );
            return missing();
        }
        Err(e) => return unavailable(state, &e),
    };
    let meta = result.meta.clone();
    let served = result.range.clone();
    let counted = kind == ObjectKind::Driver && served.start == 0;
    if counted && let Some(recorder) = &state.recorder {
        let ua = text(header::USER_AGENT);
        recorder.record(path, ua, range.is_some(), client_ip(state, peer, headers));
        state.metrics.downloads.inc();
    }
    let mut r = Response::new(body(result));
    r.headers_mut().extend(object_headers(state, kind, &meta));
    if get_range.is_some() {
        *r.status_mut() = StatusCode::PARTIAL_CONTENT;
        insert_range_headers(
            r.headers_mut(),
            served.start,
            served.end.saturating_sub(1),
            meta.size,
        );
    } else {
        r.headers_mut().insert(
            header::CONTENT_LENGTH,
            HeaderValue::from(served.end - served.start),
        );
    }
    r
}

/// Bytes read from a local file per blocking call (object_store's own stream reads 8 KiB).
const FILE_CHUNK: u64 = 256 * 1024;
/// Reads up to this size are done on the async worker instead of the blocking pool.
const INLINE_READ: u64 = 64 * 1024;

/// The response body of a storage read, streamed without buffering the whole object.
///
/// A local file is read in large chunks on the blocking pool, so a small driver costs one
/// read and a large one few. Each response reuses its read buffer once the server has sent the
/// previous chunk (`BytesMut::reserve` takes the allocation back when no `Bytes` points into it
/// any more): a fresh 256 KiB allocation per chunk cost page faults and page clearing, 10–15 % of
/// the CPU of a 10 MiB download. Remote objects are passed through as they arrive.
fn body(result: GetResult) -> Body {
    let range = result.range.clone();
    match result.payload {
        GetResultPayload::File(file, _path) => {
            let chunks = futures::stream::try_unfold(
                (file, range.start, range.end, bytes::BytesMut::new()),
                |(file, pos, end, buf)| async move {
                    if pos >= end {
                        return Ok(None);
                    }
                    let want = (end - pos).min(FILE_CHUNK) as usize;
                    let read = move |mut file: std::fs::File, mut buf: bytes::BytesMut| {
                        use std::io::{Read as _, Seek as _, SeekFrom};
                        buf.reserve(want);
                        buf.resize(want, 0);
                        file.seek(SeekFrom::Start(pos))?;
                        let mut filled = 0;
                        while filled < want {
                            match file.read(&mut buf[filled..])? {
                                0 => break,
                                n => filled += n,
                            }
                        }
                        buf.truncate(filled);
                        std::io::Result::Ok((file, buf))
                    };
                    // A small read from the page cache takes microseconds: cheaper inline
                    // than a hop to the blocking pool (NGINX reads small files inline too).
                    let (file, mut buf) = if end - pos <= INLINE_READ {
                        read(file, buf)?
                    } else {
                        tokio::task::spawn_blocking(move || read(file, buf))
                            .await
                            .map_err(std::io::Error::other)??
                    };
                    if buf.is_empty() {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            "the file is shorter than its metadata",
                        ));
                    }
                    let chunk = buf.split().freeze();
                    let next = pos + chunk.len() as u64;
                    Ok(Some((chunk, (file, next, end, buf))))
                },
            );
            Body::from_stream(chunks)
        }
        GetResultPayload::Stream(stream) => Body::from_stream(stream),
    }
}

fn insert_range_headers(h: &mut HeaderMap, start: u64, end: u64, size: u64) {
    if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{end}/{size}")) {
        h.insert(header::CONTENT_RANGE, v);
    }
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start + 1));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_follow_rfc_9110() {
        use RangeRequest::*;
        for (value, want) in [
            ("bytes=0-9", Satisfiable { start: 0, end: 9 }),
            ("bytes=90-", Satisfiable { start: 90, end: 99 }),
            ("bytes=-10", Satisfiable { start: 90, end: 99 }),
            ("bytes=-1000", Satisfiable { start: 0, end: 99 }),
            ("bytes=50-1000", Satisfiable { start: 50, end: 99 }),
            ("Bytes = 1-1 ", Satisfiable { start: 1, end: 1 }),
            ("bytes=0-1,", Satisfiable { start: 0, end: 1 }),
            (
                "bytes=0-99999999999999999999999",
                Satisfiable { start: 0, end: 99 },
            ),
            // Syntactically valid single ranges selecting nothing.
            ("bytes=100-", Unsatisfiable),
            ("bytes=100-200", Unsatisfiable),
            ("bytes=-0", Unsatisfiable),
            ("bytes=99999999999999999999999-", Unsatisfiable),
            // Unknown units, invalid syntax and multi-range sets are ignored: 200.
            ("items=0-1", None),
            ("lines=1-2", None),
            ("bytes", None),
            ("bytes=", None),
            ("bytes=9-0", None),
            ("bytes=-", None),
            ("bytes=a-b", None),
            ("bytes=+1-2", None),
            ("bytes=--1", None),
            ("bytes=1-2-3", None),
            ("bytes=0-1,5-6", None),
            ("bytes=0-1,200-300", None),
            ("bytes=200-300,400-", None),
        ] {
            assert_eq!(parse_range(value, 100), want, "{value}");
        }
        assert_eq!(parse_range("bytes=0-0", 0), Unsatisfiable);
        assert_eq!(parse_range("items=0-0", 0), None);
    }

    #[test]
    fn etags_compare_strong_weak_and_star() {
        assert!(etag_matches("\"a\"", "\"a\""));
        assert!(etag_matches("W/\"a\", \"b\"", "\"a\""));
        assert!(etag_matches("*", "\"a\""));
        assert!(!etag_matches("\"b\"", "\"a\""));
        assert_eq!(quote_etag("x-1"), "\"x-1\"");
        assert_eq!(quote_etag("\"x\""), "\"x\"");
    }
}
