//! Command line: `serve`, `publish`, `keygen`, `stats`, `mirror`, `gc`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::serve::{AppState, ServeConfig};
use crate::stats::{Recorder, SourceKeys};
use crate::storage::{Storage, StorageOptions};
use crate::{Error, Result};

/// Falco driver repository: serve, publish and count downloads of prebuilt Falco drivers.
#[derive(Debug, Parser)]
#[command(name = "falco-driver-repo", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve drivers over HTTP at /driver/<version>/<arch>/<file>, with /healthz and /metrics.
    Serve(ServeArgs),
    /// Upload drivers from a driverkit output directory (<version>/<arch>/<file>), with
    /// .sha256 files and a signed index.json per version and arch.
    Publish(PublishArgs),
    /// Create an ed25519 key pair for signing indexes.
    Keygen(KeygenArgs),
    /// Print download statistics.
    Stats(StatsArgs),
    /// Copy drivers from another repository, verifying sizes and checksums where present.
    Mirror(MirrorArgs),
    /// Remove old driver versions, keeping the newest N (dry run unless --yes).
    Gc(GcArgs),
}

/// Where the repository is stored; shared by every subcommand.
#[derive(Debug, Clone, Args)]
pub struct StorageArgs {
    /// Storage URL: file://DIR (or a plain directory) or s3://BUCKET[/PREFIX].
    #[arg(
        long,
        env = "FALCO_DRIVER_REPO_STORAGE",
        default_value = "file://./repository"
    )]
    pub storage: String,
    /// S3 endpoint URL, for S3 servers other than AWS (path-style addressing is used).
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    pub s3_endpoint: Option<String>,
    /// S3 region.
    #[arg(long, env = "AWS_REGION", default_value = "us-east-1")]
    pub s3_region: String,
    /// S3 access key id (anonymous requests when neither key is given).
    #[arg(long, env = "AWS_ACCESS_KEY_ID", hide_env_values = true)]
    pub s3_access_key_id: Option<String>,
    /// S3 secret access key.
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub s3_secret_access_key: Option<String>,
    /// S3 session token.
    #[arg(long, env = "AWS_SESSION_TOKEN", hide_env_values = true)]
    pub s3_session_token: Option<String>,
    /// Use virtual-hosted-style S3 requests (bucket in the host name) instead of path-style.
    #[arg(long)]
    pub s3_virtual_hosted_style: bool,
    /// Timeout of one storage request, in seconds.
    #[arg(long, default_value_t = 30)]
    pub storage_timeout: u64,
    /// Retries of a failed storage request.
    #[arg(long, default_value_t = 2)]
    pub storage_retries: usize,
}

impl StorageArgs {
    /// Opens the storage.
    pub fn open(&self) -> Result<Storage> {
        Storage::open(&StorageOptions {
            url: self.storage.clone(),
            endpoint: self.s3_endpoint.clone(),
            region: Some(self.s3_region.clone()),
            access_key_id: self.s3_access_key_id.clone(),
            secret_access_key: self.s3_secret_access_key.clone(),
            session_token: self.s3_session_token.clone(),
            virtual_hosted_style: self.s3_virtual_hosted_style,
            timeout: Duration::from_secs(self.storage_timeout.max(1)),
            max_retries: self.storage_retries,
        })
    }
}

/// How long a new source key must stay unchanged before it is used (see
/// `stats::SourceKeys`): zero on local storage, where create-only writes are atomic.
fn key_settle(storage: &Storage, seconds: u64) -> Duration {
    if storage.is_local() {
        Duration::ZERO
    } else {
        Duration::from_secs(seconds)
    }
}

/// Arguments of `serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port; the address is printed on stdout).
    #[arg(long, env = "FALCO_DRIVER_REPO_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: String,
    #[command(flatten)]
    pub storage: StorageArgs,
    /// Do not count downloads.
    #[arg(long)]
    pub no_stats: bool,
    /// Seconds between two flushes of the download counters into the storage.
    #[arg(
        long,
        env = "FALCO_DRIVER_REPO_STATS_FLUSH_INTERVAL",
        default_value_t = 10
    )]
    pub stats_flush_interval: u64,
    /// Take the client address from X-Forwarded-For (only behind a trusted proxy or CDN).
    #[arg(long)]
    pub trust_forwarded_for: bool,
    /// Cache-Control max-age of drivers and checksums, in seconds.
    #[arg(long, default_value_t = 86_400)]
    pub max_age: u64,
    /// Cache-Control max-age of index.json and its signature, in seconds.
    #[arg(long, default_value_t = 300)]
    pub index_max_age: u64,
    /// Seconds a missing object is answered 404 without asking the storage again.
    #[arg(long, default_value_t = 60)]
    pub negative_ttl: u64,
    /// Retry-After seconds sent with 503 when the storage is unavailable.
    #[arg(long, default_value_t = 5)]
    pub retry_after: u64,
    /// Seconds a client has to send a request head (request line and headers); also the
    /// longest wait for the next request on a keep-alive connection.
    #[arg(long, default_value_t = 10)]
    pub header_read_timeout: u64,
    /// Seconds after which a connection that neither reads nor writes a byte is closed
    /// (keep it above --storage-timeout).
    #[arg(long, default_value_t = 60)]
    pub idle_timeout: u64,
    /// Most connections open at once; further connections wait in the accept queue until
    /// one closes (needs `ulimit -n` above it).
    #[arg(long, default_value_t = 4096)]
    pub max_connections: usize,
    /// Most distinct missing drivers counted per flush interval; further 404s are counted in
    /// one overflow bucket.
    #[arg(long, default_value_t = crate::stats::DEFAULT_MISS_CAPACITY)]
    pub stats_miss_capacity: usize,
    /// Seconds a newly created daily source key must stay unchanged in S3 before it is used
    /// (S3 servers that ignore create-only writes let two replicas both create it; must
    /// exceed the time one storage write takes).
    #[arg(long, default_value_t = 5)]
    pub stats_key_settle: u64,
}

/// Arguments of `publish`.
#[derive(Debug, Args)]
pub struct PublishArgs {
    /// Directory in the driverkit output layout: <version>/<arch>/<name>_<target>_<kr>_<kv>.{ko,o}.
    pub dir: PathBuf,
    #[command(flatten)]
    pub storage: StorageArgs,
    /// Private key file (from `keygen`) used to sign index.json.
    #[arg(long, env = "FALCO_DRIVER_REPO_SIGNING_KEY")]
    pub signing_key: PathBuf,
    #[command(flatten)]
    pub validity: ValidityArgs,
    /// Replace stored drivers whose content differs.
    #[arg(long)]
    pub force: bool,
}

/// How long a written index stays valid; shared by `publish`, `mirror` and `gc`.
#[derive(Debug, Clone, Args)]
pub struct ValidityArgs {
    /// How long a written index.json stays valid (loaders refuse it after): a number with
    /// s, m, h or d. Every publish, mirror and gc --signing-key renews it.
    #[arg(long, env = "FALCO_DRIVER_REPO_INDEX_VALIDITY", default_value = "30d", value_parser = crate::publish::parse_validity)]
    pub index_validity: Duration,
}

/// Arguments of `keygen`.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Where to write the private key (mode 0600).
    #[arg(long)]
    pub private_key: PathBuf,
    /// Where to write the public key.
    #[arg(long)]
    pub public_key: PathBuf,
}

/// Output format of reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Tables for a person.
    Table,
    /// JSON for a program.
    Json,
}

/// Arguments of `stats`.
#[derive(Debug, Args)]
pub struct StatsArgs {
    #[command(flatten)]
    pub storage: StorageArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Lines per group.
    #[arg(long, default_value_t = 20)]
    pub top: usize,
    /// First ingest the CloudFront standard access logs under this storage prefix (each log
    /// file is counted once, however often it is ingested).
    #[arg(long, value_name = "PREFIX")]
    pub ingest_cloudfront: Option<String>,
    /// First ingest the S3 server access logs under this storage prefix (each once).
    #[arg(long, value_name = "PREFIX")]
    pub ingest_s3_logs: Option<String>,
    /// Print the most-requested missing drivers (404s on driver names, most distinct
    /// sources first; drivers published since are left out) instead of the downloads.
    #[arg(long)]
    pub missing: bool,
    /// Seconds a newly created daily source key must stay unchanged in S3 before it is used
    /// (S3 servers that ignore create-only writes let two replicas both create it; must
    /// exceed the time one storage write takes).
    #[arg(long, default_value_t = 5)]
    pub stats_key_settle: u64,
}

/// Arguments of `mirror`.
#[derive(Debug, Args)]
pub struct MirrorArgs {
    /// Base URL of the source repository, e.g. https://download.falco.org/driver.
    #[arg(long)]
    pub from: String,
    /// Driver version, e.g. 8.0.0+driver.
    #[arg(long)]
    pub driver_version: String,
    /// Architecture.
    #[arg(long, default_value = "x86_64")]
    pub arch: String,
    /// Driver files to copy; none means every file listed in the source's index.json.
    pub files: Vec<String>,
    #[command(flatten)]
    pub storage: StorageArgs,
    /// Verify the source's index.json signature with this public key.
    #[arg(long)]
    pub source_public_key: Option<PathBuf>,
    /// Private key to re-sign this repository's index after copying.
    #[arg(long, env = "FALCO_DRIVER_REPO_SIGNING_KEY")]
    pub signing_key: Option<PathBuf>,
    #[command(flatten)]
    pub validity: ValidityArgs,
    /// Replace stored drivers whose content differs.
    #[arg(long)]
    pub force: bool,
}

/// Arguments of `gc`.
#[derive(Debug, Args)]
pub struct GcArgs {
    #[command(flatten)]
    pub storage: StorageArgs,
    /// Number of driver versions to keep (the highest versions).
    #[arg(long)]
    pub keep: usize,
    /// Delete for real; without it only the report is printed.
    #[arg(long)]
    pub yes: bool,
    /// Private key to renew the index of every kept version and arch (with --yes), so a
    /// periodic gc keeps the indexes from expiring.
    #[arg(long, env = "FALCO_DRIVER_REPO_SIGNING_KEY")]
    pub signing_key: Option<PathBuf>,
    #[command(flatten)]
    pub validity: ValidityArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
    tracing::info!("shutting down");
}

fn print(text: &str) -> Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(Error::Output)
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Serve(args) => {
            let storage = args.storage.open()?;
            let recorder = if args.no_stats {
                None
            } else {
                let keys = SourceKeys::new(key_settle(&storage, args.stats_key_settle));
                let recorder = Recorder::new(keys, args.stats_miss_capacity);
                // The storage may be down at start: serving does not wait for it, and the
                // key is created at the first flush instead.
                if let Err(e) = recorder.prepare(&storage).await {
                    tracing::warn!(error = %e, "cannot prepare the statistics source keys");
                }
                Some(Arc::new(recorder))
            };
            let config = ServeConfig {
                max_age: Duration::from_secs(args.max_age),
                index_max_age: Duration::from_secs(args.index_max_age),
                negative_ttl: Duration::from_secs(args.negative_ttl),
                retry_after: Duration::from_secs(args.retry_after),
                trust_forwarded_for: args.trust_forwarded_for,
                header_read_timeout: Duration::from_secs(args.header_read_timeout.max(1)),
                idle_timeout: Duration::from_secs(args.idle_timeout.max(1)),
                max_connections: args.max_connections.max(1),
                ..ServeConfig::default()
            };
            let listener = tokio::net::TcpListener::bind(&args.listen)
                .await
                .map_err(|source| Error::Listen {
                    addr: args.listen.clone(),
                    source,
                })?;
            let addr = listener.local_addr().map_err(|source| Error::Listen {
                addr: args.listen.clone(),
                source,
            })?;
            tracing::info!(%addr, storage = %storage.url(), stats = recorder.is_some(), "serving");
            print(&format!("listening on {addr}\n"))?;
            let state = Arc::new(AppState::new(storage, recorder, config));
            let interval = Duration::from_secs(args.stats_flush_interval.max(1));
            crate::serve::run(listener, state, interval, shutdown_signal()).await
        }
        Command::Publish(args) => {
            let storage = args.storage.open()?;
            let signer = crate::publish::Signer {
                key: crate::publish::read_private_key(&args.signing_key)?,
                validity: args.validity.index_validity,
            };
            let report = crate::publish::publish(&storage, &args.dir, &signer, args.force).await?;
            print(&format!(
                "uploaded {}, unchanged {}, replaced {}, indexes written {}\n",
                report.uploaded.len(),
                report.unchanged.len(),
                report.replaced.len(),
                report.indexes_written.len()
            ))
        }
        Command::Keygen(args) => {
            crate::publish::keygen(&args.private_key, &args.public_key)?;
            print(&format!(
                "wrote {} and {}\n",
                args.private_key.display(),
                args.public_key.display()
            ))
        }
        Command::Stats(args) => {
            let storage = args.storage.open()?;
            let keys = SourceKeys::new(key_settle(&storage, args.stats_key_settle));
            // Read-only credentials can still print the report: the servers delete keys too.
            match keys
                .delete_final(&storage, crate::stats::day_number())
                .await
            {
                Ok(deleted) => {
                    for key in deleted {
                        tracing::info!(%key, "deleted the source key of a final day");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot delete the source keys of final days"),
            }
            for (prefix, format) in [
                (&args.ingest_cloudfront, crate::logs::LogFormat::CloudFront),
                (&args.ingest_s3_logs, crate::logs::LogFormat::S3),
            ] {
                if let Some(prefix) = prefix {
                    let r = crate::logs::ingest(&storage, &keys, prefix, format).await?;
                    tracing::info!(
                        ingested = r.ingested,
                        skipped = r.skipped,
                        downloads = r.downloads,
                        misses = r.misses,
                        "ingested access logs"
                    );
                }
            }
            let loaded = crate::stats::load(&storage).await?;
            if args.missing {
                let mut report = crate::stats::missing_report(&loaded.misses);
                // Leave out what has been published since it was asked for.
                let mut kept = Vec::new();
                for line in std::mem::take(&mut report.missing) {
                    if kept.len() >= args.top {
                        break;
                    }
                    if storage.head(&line.storage_key()).await?.is_none() {
                        kept.push(line);
                    }
                }
                report.missing = kept;
                return match args.format {
                    Format::Table => print(&crate::stats::render_missing(&report)),
                    Format::Json => print(&format!(
                        "{}\n",
                        serde_json::to_string_pretty(&report).unwrap_or_default()
                    )),
                };
            }
            let report = crate::stats::report(&loaded.rows, args.top);
            match args.format {
                Format::Table => print(&crate::stats::render_table(&report)),
                Format::Json => print(&format!(
                    "{}\n",
                    serde_json::to_string_pretty(&report).unwrap_or_default()
                )),
            }
        }
        Command::Mirror(args) => {
            let storage = args.storage.open()?;
            let public_key = args
                .source_public_key
                .as_deref()
                .map(crate::publish::read_public_key)
                .transpose()?;
            let signer = args
                .signing_key
                .as_deref()
                .map(crate::publish::read_private_key)
                .transpose()?
                .map(|key| crate::publish::Signer {
                    key,
                    validity: args.validity.index_validity,
                });
            let request = crate::mirror::MirrorRequest {
                from: args.from,
                version: args.driver_version,
                arch: args.arch,
                files: args.files,
                public_key,
                force: args.force,
            };
            let report = crate::mirror::mirror(&storage, &request, signer.as_ref()).await?;
            print(&format!(
                "copied {}, unchanged {}, verified {}\n",
                report.copied, report.unchanged, report.verified
            ))
        }
        Command::Gc(args) => {
            let storage = args.storage.open()?;
            let signer = args
                .signing_key
                .as_deref()
                .map(crate::publish::read_private_key)
                .transpose()?
                .map(|key| crate::publish::Signer {
                    key,
                    validity: args.validity.index_validity,
                });
            let plan = crate::gc::plan(&storage, args.keep).await?;
            let text = match args.format {
                Format::Table => crate::gc::render(&plan, !args.yes),
                Format::Json => format!(
                    "{}\n",
                    serde_json::to_string_pretty(&plan).unwrap_or_default()
                ),
            };
            print(&text)?;
            if args.yes {
                let renewed = crate::gc::execute(&storage, &plan, signer.as_ref()).await?;
                if signer.is_some() {
                    print(&format!("indexes renewed {renewed}\n"))?;
                }
            }
            Ok(())
        }
    }
}
