//! The object store behind the repository, with every call counted by operation and outcome.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt as _;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    BackoffConfig, ClientOptions, GetOptions, GetRange, GetResult, GetResultPayload, ObjectMeta,
    ObjectStore, ObjectStoreExt as _, PutMode, PutOptions, PutPayload, RetryConfig,
};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use crate::{Error, Result};

/// Storage options shared by all subcommands (see `cli::StorageArgs`).
#[derive(Debug, Clone, Default)]
pub struct StorageOptions {
    /// `file://DIR`, a plain directory, or `s3://bucket[/prefix]`.
    pub url: String,
    /// S3 endpoint for non-AWS servers, e.g. `http://127.0.0.1:3900`.
    pub endpoint: Option<String>,
    /// S3 region.
    pub region: Option<String>,
    /// S3 access key id.
    pub access_key_id: Option<String>,
    /// S3 secret access key.
    pub secret_access_key: Option<String>,
    /// S3 session token.
    pub session_token: Option<String>,
    /// Use virtual-hosted-style requests instead of path-style.
    pub virtual_hosted_style: bool,
    /// Timeout of one storage request.
    pub timeout: Duration,
    /// Retries of a failed storage request.
    pub max_retries: usize,
}

/// Storage operation, a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Op {
    get,
    head,
    put,
    list,
    delete,
}

/// Outcome of a storage call, a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Outcome {
    ok,
    not_found,
    not_modified,
    error,
}

/// Labels of `storage_requests`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct StorageLabels {
    /// Operation.
    pub op: Op,
    /// Outcome.
    pub outcome: Outcome,
}

/// The repository storage: an object store rooted at the URL's directory or prefix.
#[derive(Debug, Clone)]
pub struct Storage {
    store: Arc<dyn ObjectStore>,
    url: String,
    calls: Family<StorageLabels, Counter>,
    /// Root directory of local storage, for the read fast path of [`Storage::get_opts`].
    local_root: Option<std::path::PathBuf>,
}

impl Storage {
    /// Opens the storage named by the options.
    pub fn open(opts: &StorageOptions) -> Result<Self> {
        let url = opts.url.clone();
        let bad = |reason: &str| Error::StorageUrl {
            url: url.clone(),
            reason: reason.into(),
        };
        let mut local_root = None;
        let store: Arc<dyn ObjectStore> = if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(bad("no bucket name"));
            }
            let mut client = ClientOptions::new()
                .with_timeout(opts.timeout)
                .with_connect_timeout(Duration::from_secs(5));
            if opts
                .endpoint
                .as_deref()
                .is_some_and(|e| e.starts_with("http://"))
            {
                client = client.with_allow_http(true);
            }
            let retry = RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(100),
                    max_backoff: Duration::from_secs(2),
                    base: 2.0,
                },
                max_retries: opts.max_retries,
                retry_timeout: opts.timeout,
            };
            let mut builder = AmazonS3Builder::new()
                .with_bucket_name(bucket)
                .with_region(opts.region.clone().unwrap_or_else(|| "us-east-1".into()))
                .with_virtual_hosted_style_request(opts.virtual_hosted_style)
                .with_client_options(client)
                .with_retry(retry);
            if let Some(endpoint) = &opts.endpoint {
                builder = builder.with_endpoint(endpoint);
            }
            match (&opts.access_key_id, &opts.secret_access_key) {
                (Some(id), Some(secret)) => {
                    builder = builder
                        .with_access_key_id(id)
                        .with_secret_access_key(secret);
                    if let Some(token) = &opts.session_token {
                        builder = builder.with_token(token);
                    }
                }
                (None, None) => builder = builder.with_skip_signature(true),
                _ => {
                    return Err(bad(
                        "give both an access key id and a secret access key, or neither",
                    ));
                }
            }
            let s3 = builder.build().map_err(|source| Error::OpenStorage {
                url: url.clone(),
                source,
            })?;
            let prefix = prefix.trim_matches('/');
            if prefix.is_empty() {
                Arc::new(s3)
            } else {
                Arc::new(object_store::prefix::PrefixStore::new(s3, prefix))
            }
        } else {
            let dir = url.strip_prefix("file://").unwrap_or(&url);
            if dir.is_empty() {
                return Err(bad("no directory"));
            }
            if url.contains("://") && !url.starts_with("file://") {
                return Err(bad("scheme must be file:// or s3://"));
            }
            std::fs::create_dir_all(dir).map_err(|source| Error::LocalFile {
                op: "create",
                path: dir.into(),
                source,
            })?;
            local_root = std::fs::canonicalize(dir).ok();
            let fs =
                LocalFileSystem::new_with_prefix(dir).map_err(|source| Error::OpenStorage {
                    url: url.clone(),
                    source,
                })?;
            Arc::new(fs.with_automatic_cleanup(true))
        };
        Ok(Self {
            store,
            url,
            calls: Family::default(),
            local_root,
        })
    }

    /// Whether this is local storage (a directory), where create-only writes are atomic.
    pub fn is_local(&self) -> bool {
        self.local_root.is_some()
    }

    /// The URL the storage was opened from.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Counter family of storage calls, to register in a metrics registry.
    pub fn calls(&self) -> &Family<StorageLabels, Counter> {
        &self.calls
    }

    fn count<T>(&self, op: Op, result: &std::result::Result<T, object_store::Error>) {
        let outcome = match result {
            Ok(_) => Outcome::ok,
            Err(object_store::Error::NotFound { .. }) => Outcome::not_found,
            Err(object_store::Error::NotModified { .. }) => Outcome::not_modified,
            Err(_) => Outcome::error,
        };
        self.calls
            .get_or_create(&StorageLabels { op, outcome })
            .inc();
    }

    fn path(key: &str) -> std::result::Result<Path, object_store::Error> {
        Path::parse(key).map_err(|e| object_store::Error::InvalidPath { source: e })
    }

    /// GET with options; the raw `object_store` error is kept so callers can tell a missing
    /// object from an outage.
    pub async fn get_opts(
        &self,
        key: &str,
        opts: GetOptions,
    ) -> std::result::Result<GetResult, object_store::Error> {
        let plain = opts.if_match.is_none()
            && opts.if_none_match.is_none()
            && opts.if_modified_since.is_none()
            && opts.if_unmodified_since.is_none()
            && opts.version.is_none()
            && !opts.head;
        let result = match Self::path(key) {
            Ok(path) => match (&self.local_root, &opts.range) {
                (Some(root), None | Some(GetRange::Bounded(_))) if plain => {
                    local_get(root, &path, opts.range)
                }
                _ => self.store.get_opts(&path, opts).await,
            },
            Err(e) => Err(e),
        };
        self.count(Op::get, &result);
        result
    }

    /// HEAD; raw error as for [`Storage::get_opts`].
    pub async fn head_raw(
        &self,
        key: &str,
    ) -> std::result::Result<ObjectMeta, object_store::Error> {
        let result = match Self::path(key) {
            Ok(path) => match &self.local_root {
                Some(root) => local_get(root, &path, None).map(|r| r.meta),
                None => self.store.head(&path).await,
            },
            Err(e) => Err(e),
        };
        self.count(Op::head, &result);
        result
    }

    /// HEAD; `None` when the object does not exist.
    pub async fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
        match self.head_raw(key).await {
            Ok(meta) => Ok(Some(meta)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(source) => Err(storage_error("head", key, source)),
        }
    }

    /// Reads a whole object; `None` when it does not exist.
    pub async fn read(&self, key: &str) -> Result<Option<Bytes>> {
        match self.get_opts(key, GetOptions::default()).await {
            Ok(result) => result
                .bytes()
                .await
                .map(Some)
                .map_err(|source| storage_error("read", key, source)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(source) => Err(storage_error("get", key, source)),
        }
    }

    /// Streams an object through a SHA-256; `None` when it does not exist.
    pub async fn sha256(&self, key: &str) -> Result<Option<(String, u64)>> {
        use sha2::Digest as _;
        let result = match self.get_opts(key, GetOptions::default()).await {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(source) => return Err(storage_error("get", key, source)),
        };
        let mut hasher = sha2::Sha256::new();
        let mut size = 0u64;
        let mut stream = result.into_stream();
        while let Some(chunk) = stream
            .try_next()
            .await
            .map_err(|source| storage_error("read", key, source))?
        {
            size += chunk.len() as u64;
            hasher.update(&chunk);
        }
        Ok(Some((hex::encode(hasher.finalize()), size)))
    }

    /// Writes an object. With `create_only`, asks the backend not to replace an existing
    /// object (honoured by AWS S3 and local storage, ignored by some S3 servers); returns
    /// `false` when the backend reported that the object already exists.
    pub async fn put(&self, key: &str, bytes: Bytes, create_only: bool) -> Result<bool> {
        let mode = if create_only {
            PutMode::Create
        } else {
            PutMode::Overwrite
        };
        let opts = PutOptions {
            mode,
            ..PutOptions::default()
        };
        let result = match Self::path(key) {
            Ok(path) => {
                self.store
                    .put_opts(&path, PutPayload::from(bytes), opts)
                    .await
            }
            Err(e) => Err(e),
        };
        self.count(Op::put, &result);
        match result {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(source) => Err(storage_error("put", key, source)),
        }
    }

    /// Lists all objects under a prefix (recursively).
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let path = Self::path(prefix.trim_end_matches('/'))
            .map_err(|source| storage_error("list", prefix, source))?;
        let result: std::result::Result<Vec<ObjectMeta>, _> =
            self.store.list(Some(&path)).try_collect().await;
        self.count(Op::list, &result);
        result.map_err(|source| storage_error("list", prefix, source))
    }

    /// Lists the immediate sub-directories of a prefix, as full keys without a trailing `/`.
    pub async fn list_dirs(&self, prefix: &str) -> Result<Vec<String>> {
        let path = Self::path(prefix.trim_end_matches('/'))
            .map_err(|source| storage_error("list", prefix, source))?;
        let result = self.store.list_with_delimiter(Some(&path)).await;
        self.count(Op::list, &result);
        let listing = result.map_err(|source| storage_error("list", prefix, source))?;
        Ok(listing
            .common_prefixes
            .iter()
            .map(|p| p.to_string())
            .collect())
    }

    /// Deletes an object (missing objects are fine).
    pub async fn delete(&self, key: &str) -> Result<()> {
        let result = match Self::path(key) {
            Ok(path) => self.store.delete(&path).await,
            Err(e) => Err(e),
        };
        self.count(Op::delete, &result);
        match result {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(source) => Err(storage_error("delete", key, source)),
        }
    }
}

/// Local read fast path: opens the file and reads its metadata on the calling thread.
///
/// `object_store`'s local backend hops to the blocking pool for every open, which dominates
/// the cost of serving a small driver; an open and a `stat` of a local file take
/// microseconds. The metadata (ETag included) is computed exactly as `object_store` does, so
/// both paths agree; writes, listings and deletes still go through `object_store`.
fn local_get(
    root: &std::path::Path,
    location: &Path,
    range: Option<GetRange>,
) -> std::result::Result<GetResult, object_store::Error> {
    use std::os::unix::fs::MetadataExt as _;
    let file_path = location
        .parts()
        .fold(root.to_path_buf(), |p, part| p.join(part.as_ref()));
    let not_found = |source: std::io::Error| object_store::Error::NotFound {
        path: file_path.display().to_string(),
        source: Box::new(source),
    };
    let generic = |source: std::io::Error| object_store::Error::Generic {
        store: "LocalFileSystem",
        source: Box::new(source),
    };
    let file = match std::fs::File::open(&file_path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(not_found(e)),
        Err(e) => return Err(generic(e)),
    };
    let metadata = file.metadata().map_err(generic)?;
    if !metadata.is_file() {
        return Err(not_found(std::io::Error::from(
            std::io::ErrorKind::NotFound,
        )));
    }
    let modified = metadata.modified().map_err(generic)?;
    let mtime = modified
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros();
    let size = metadata.len();
    let meta = ObjectMeta {
        location: location.clone(),
        last_modified: modified.into(),
        size,
        e_tag: Some(format!("\"{:x}-{mtime:x}-{size:x}\"", metadata.ino())),
        version: None,
    };
    let range = match range {
        Some(GetRange::Bounded(r)) => r.start.min(size)..r.end.min(size),
        _ => 0..size,
    };
    Ok(GetResult {
        payload: GetResultPayload::File(file, file_path),
        meta,
        range,
        attributes: Default::default(),
        extensions: Default::default(),
    })
}

/// Wraps an `object_store` error with the failing operation and key.
pub fn storage_error(op: &'static str, key: &str, source: object_store::Error) -> Error {
    Error::Storage {
        op,
        key: key.into(),
        source,
    }
}
