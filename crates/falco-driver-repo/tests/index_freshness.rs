//! Rollback and freeze of the signed index, end to end: the real repository binary publishes
//! and serves (local storage and Garage), the loader (in process, host commands scripted)
//! downloads with `--trusted-key`, and the index it is served is replaced behind its back by
//! an older one, one from another version's folder, an expired one, a legacy one, or none.

mod support;

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use falco_core::driver::{Arch, DriverType};
use falco_core::index::{self, DriverIndex};
use falco_driver_loader::cli::DriverSettings;
use falco_driver_loader::download::HttpOptions;
use falco_driver_loader::host::ScriptedRunner;
use falco_driver_loader::install::{InstallOptions, Outcome, Source, install};
use falco_driver_loader::kmod::KmodOptions;
use falco_driver_loader::resolve::{KernelFacts, resolve};
use support::*;

const V: &str = "8.0.0+driver";
const OTHER: &str = "7.0.0+driver";
const KO: &str = "falco_ubuntu-generic_5.15.0-100-generic_110.ko";
const DAY: u64 = 86_400;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A node: an Ubuntu host root and a HOME for the loader's cache.
struct Node {
    dir: tempfile::TempDir,
}

impl Node {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("host/etc")).unwrap();
        std::fs::write(dir.path().join("host/etc/os-release"), "ID=ubuntu\n").unwrap();
        std::fs::create_dir_all(dir.path().join("home")).unwrap();
        Self { dir }
    }

    fn cache_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("home/.falco").join(V).join("x86_64")
    }

    /// `install --download --require-verified [--trusted-key]` against `repo`.
    async fn install(
        &self,
        repo: &str,
        key: Option<&Path>,
    ) -> falco_driver_loader::Result<Outcome> {
        let settings = DriverSettings {
            types: vec![DriverType::Kmod],
            version: V.into(),
            repos: vec![repo.into()],
            name: "falco".into(),
            host_root: self.dir.path().join("host"),
            kernel_release: Some("5.15.0-100-generic".into()),
            kernel_version: Some("#110-Ubuntu SMP".into()),
            arch: Arch::X86_64,
        };
        let facts = KernelFacts {
            release: "5.15.0-100-generic".into(),
            version: "#110-Ubuntu SMP".into(),
            modern_ebpf: false,
        };
        let resolved = resolve(settings, &facts)?;
        let opts = InstallOptions {
            download: true,
            compile: false,
            require_verified: true,
            trusted_key: key.map(|k| falco_driver_loader::verify::load_trusted_key(k).unwrap()),
            http: HttpOptions {
                retries: 0,
                ..HttpOptions::default()
            },
            home: self.dir.path().join("home"),
            kmod: KmodOptions {
                rmmod_attempts: 1,
                rmmod_wait: std::time::Duration::ZERO,
                ..KmodOptions::default()
            },
        };
        install(&resolved, &opts, &ScriptedRunner::new()).await
    }

    /// The serials the loader keeps beside its cache.
    fn serials(&self) -> serde_json::Value {
        let text = std::fs::read_to_string(self.cache_dir().join("index-serials.json"))
            .unwrap_or_else(|_| "{}".into());
        serde_json::from_str(&text).unwrap()
    }
}

/// The stored index and signature of a version.
async fn stored_index(backend: &Backend, version: &str) -> (Bytes, Bytes) {
    let s = backend.storage();
    let dir = format!("driver/{version}/x86_64");
    (
        s.read(&format!("{dir}/index.json")).await.unwrap().unwrap(),
        s.read(&format!("{dir}/index.json.sig"))
            .await
            .unwrap()
            .unwrap(),
    )
}

async fn put_index(backend: &Backend, bytes: &[u8], sig: &[u8]) {
    let s = backend.storage();
    let dir = format!("driver/{V}/x86_64");
    s.put(
        &format!("{dir}/index.json"),
        Bytes::copy_from_slice(bytes),
        false,
    )
    .await
    .unwrap();
    s.put(
        &format!("{dir}/index.json.sig"),
        Bytes::copy_from_slice(sig),
        false,
    )
    .await
    .unwrap();
}

fn refused(result: falco_driver_loader::Result<Outcome>, what: &str) -> String {
    let err = match result {
        Ok(outcome) => panic!("expected a refusal ({what}), got {outcome:?}"),
        Err(e) => e.to_string(),
    };
    eprintln!("refused ({what}): {err}");
    assert!(err.contains(what), "expected {what:?} in: {err}");
    assert!(!err.contains('\n'), "one line: {err}");
    err
}

async fn rollback_and_freeze(backend: Backend) {
    let (private, public, _keys) = keys();
    let key = private.to_str().unwrap();
    let src = tempfile::tempdir().unwrap();
    let ko = write_driver(src.path(), V, "x86_64", KO, 1, 20_000);
    write_driver(src.path(), OTHER, "x86_64", KO, 1, 20_000);
    let dir = src.path().to_str().unwrap();
    let out = cli_ok(&backend, &["publish", dir, "--signing-key", key]);
    assert!(out.contains("indexes written 2"), "{out}");
    let signing = index::parse_private_key(&std::fs::read_to_string(&private).unwrap()).unwrap();
    let verifying = signing.verifying_key();

    // The published index binds version and arch, starts at serial 1 and expires in 30 days.
    let (first, first_sig) = stored_index(&backend, V).await;
    let idx = index::verify(&first, &String::from_utf8_lossy(&first_sig), &verifying).unwrap();
    assert_eq!((idx.version.as_str(), idx.arch.as_str()), (V, "x86_64"));
    assert_eq!(idx.serial, Some(1));
    let expires = idx.expires.unwrap();
    assert!(
        (now() + 29 * DAY..=now() + 31 * DAY).contains(&expires),
        "{expires}"
    );

    let server = Server::start(&backend, &["--negative-ttl", "0"]);
    let repo = server.url("/driver");
    let node = Node::new();
    let outcome = node.install(&repo, Some(&public)).await.unwrap();
    assert!(
        matches!(
            &outcome,
            Outcome::Loaded {
                source: Source::Download {
                    verification: "signed index",
                    ..
                },
                ..
            }
        ),
        "{outcome:?}"
    );
    assert_eq!(std::fs::read(node.cache_dir().join(KO)).unwrap(), ko);
    assert_eq!(node.serials()[&repo], 1);

    // Publishing again renews the index: serial 2, and the loader moves on to it.
    let out = cli_ok(&backend, &["publish", dir, "--signing-key", key]);
    assert!(
        out.contains("unchanged 2") && out.contains("indexes written 2"),
        "{out}"
    );
    let (second, second_sig) = stored_index(&backend, V).await;
    let idx = index::verify(&second, &String::from_utf8_lossy(&second_sig), &verifying).unwrap();
    assert_eq!(idx.serial, Some(2));
    node.install(&repo, Some(&public)).await.unwrap();
    assert_eq!(node.serials()[&repo], 2);

    // 1. The older signed index served again: a rollback, refused.
    put_index(&backend, &first, &first_sig).await;
    refused(
        node.install(&repo, Some(&public)).await,
        "serial 1, older than serial 2",
    );
    assert_eq!(node.serials()[&repo], 2, "the newest serial is kept");
    // A node that never saw serial 2 accepts serial 1 (a first contact cannot tell).
    Node::new().install(&repo, Some(&public)).await.unwrap();

    // 2. The index of another version copied into this version's folder: refused.
    let (other, other_sig) = stored_index(&backend, OTHER).await;
    put_index(&backend, &other, &other_sig).await;
    refused(
        node.install(&repo, Some(&public)).await,
        "index.json is for version \"7.0.0+driver\", not \"8.0.0+driver\"",
    );

    // 3. An expired index, validly signed with a high serial: refused.
    let expired = DriverIndex::parse(&second)
        .unwrap()
        .with_freshness(100, now() - 60)
        .to_bytes();
    put_index(
        &backend,
        &expired,
        index::sign(&expired, &signing).as_bytes(),
    )
    .await;
    refused(node.install(&repo, Some(&public)).await, "expired");

    // 4. A legacy index (no serial, no expiry), validly signed: refused with a key.
    let mut legacy = DriverIndex::parse(&second).unwrap();
    legacy.serial = None;
    legacy.expires = None;
    let legacy = legacy.to_bytes();
    put_index(&backend, &legacy, index::sign(&legacy, &signing).as_bytes()).await;
    refused(node.install(&repo, Some(&public)).await, "legacy");

    // 5. No signature: with a trusted key that is a failure, not a fall back to the .sha256
    //    (which is still served and matches).
    put_index(&backend, &second, &second_sig).await;
    node.install(&repo, Some(&public)).await.unwrap();
    let storage = backend.storage();
    storage
        .delete(&format!("driver/{V}/x86_64/index.json.sig"))
        .await
        .unwrap();
    refused(
        node.install(&repo, Some(&public)).await,
        "no index.json.sig, but --trusted-key requires a signed index",
    );
    storage
        .delete(&format!("driver/{V}/x86_64/index.json"))
        .await
        .unwrap();
    refused(
        node.install(&repo, Some(&public)).await,
        "no index.json, but --trusted-key requires a signed index",
    );
    // Without a key the .sha256 still verifies the driver.
    node.install(&repo, None).await.unwrap();

    // 6. Publishing after all that continues the serial from the stored index (there is
    //    none now: it restarts at 1, and a node that saw 2 refuses it until it is renewed
    //    past 2: the serial is the repository's promise, kept by its operator).
    cli_ok(&backend, &["publish", dir, "--signing-key", key]);
    refused(
        node.install(&repo, Some(&public)).await,
        "older than serial 2",
    );
    cli_ok(&backend, &["publish", dir, "--signing-key", key]);
    node.install(&repo, Some(&public)).await.unwrap();
    assert_eq!(node.serials()[&repo], 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn rollback_and_freeze_local() {
    rollback_and_freeze(Backend::local()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rollback_and_freeze_garage() {
    rollback_and_freeze(Backend::garage()).await;
}

/// `gc` keeps the highest versions (not the last written) and renews the kept indexes;
/// `mirror` re-signs with its own serial and expiry.
async fn gc_and_mirror_keep_indexes_valid(backend: Backend) {
    let (private, public, _keys) = keys();
    let key = private.to_str().unwrap();
    // Published in descending version order: the newest objects belong to the oldest version.
    for version in ["10.0.0+driver", "9.0.0+driver", "2.0.0+driver"] {
        let src = tempfile::tempdir().unwrap();
        write_driver(src.path(), version, "x86_64", KO, 1, 1000);
        cli_ok(
            &backend,
            &[
                "publish",
                src.path().to_str().unwrap(),
                "--signing-key",
                key,
            ],
        );
    }
    let out = cli_ok(
        &backend,
        &[
            "gc",
            "--keep",
            "1",
            "--yes",
            "--signing-key",
            key,
            "--index-validity",
            "2d",
        ],
    );
    assert!(out.contains("indexes renewed 1"), "{out}");
    let storage = backend.storage();
    let left = storage.list("driver/").await.unwrap();
    assert!(!left.is_empty());
    assert!(
        left.iter()
            .all(|m| m.location.as_ref().starts_with("driver/10.0.0+driver/")),
        "{left:?}"
    );
    let verifying = index::parse_public_key(&std::fs::read_to_string(&public).unwrap()).unwrap();
    let (bytes, sig) = stored_index(&backend, "10.0.0+driver").await;
    let idx = index::verify(&bytes, &String::from_utf8_lossy(&sig), &verifying).unwrap();
    assert_eq!(idx.serial, Some(2), "renewed by gc");
    let expires = idx.expires.unwrap();
    assert!(
        (now() + DAY..=now() + 2 * DAY + 60).contains(&expires),
        "{expires}"
    );

    // Mirror into a second repository: its index is its own (serial 1 there), signed, valid.
    let server = Server::start(&backend, &[]);
    let target = Backend::local();
    let out = cli_ok(
        &target,
        &[
            "mirror",
            "--from",
            &server.url("/driver"),
            "--driver-version",
            "10.0.0+driver",
            "--source-public-key",
            public.to_str().unwrap(),
            "--signing-key",
            key,
        ],
    );
    assert!(out.contains("copied 1"), "{out}");
    let (bytes, sig) = stored_index(&target, "10.0.0+driver").await;
    let idx = index::verify(&bytes, &String::from_utf8_lossy(&sig), &verifying).unwrap();
    assert_eq!(idx.serial, Some(1));
    assert!(idx.expires.unwrap() > now() + 29 * DAY);

    // A source whose index was copied from another version's folder is refused by mirror.
    let src = tempfile::tempdir().unwrap();
    write_driver(src.path(), "11.0.0+driver", "x86_64", KO, 1, 1000);
    cli_ok(
        &backend,
        &[
            "publish",
            src.path().to_str().unwrap(),
            "--signing-key",
            key,
        ],
    );
    let (bytes, sig) = stored_index(&backend, "10.0.0+driver").await;
    let dir = "driver/11.0.0+driver/x86_64";
    storage
        .put(&format!("{dir}/index.json"), bytes, false)
        .await
        .unwrap();
    storage
        .put(&format!("{dir}/index.json.sig"), sig, false)
        .await
        .unwrap();
    let failed = cli(
        &Backend::local(),
        &[
            "mirror",
            "--from",
            &server.url("/driver"),
            "--driver-version",
            "11.0.0+driver",
            "--source-public-key",
            public.to_str().unwrap(),
        ],
    );
    assert!(!failed.status.success());
    let err = String::from_utf8_lossy(&failed.stderr);
    assert!(err.contains("version"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn gc_and_mirror_keep_indexes_valid_local() {
    gc_and_mirror_keep_indexes_valid(Backend::local()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn gc_and_mirror_keep_indexes_valid_garage() {
    gc_and_mirror_keep_indexes_valid(Backend::garage()).await;
}

/// A repository URL with credentials never shows them in the loader's errors.
#[tokio::test(flavor = "multi_thread")]
async fn credentials_in_repository_urls_are_redacted() {
    let backend = Backend::local();
    let server = Server::start(&backend, &[]);
    let repo = server
        .url("/driver")
        .replace("http://", "http://user:s3cret@");
    let err = match Node::new().install(&repo, None).await {
        Ok(outcome) => panic!("nothing was published: {outcome:?}"),
        Err(e) => e.to_string(),
    };
    assert!(!err.contains("s3cret") && !err.contains("user:"), "{err}");
    // A transport error (nothing listening) carries the URL too: redacted as well.
    let dead = "http://user:s3cret@127.0.0.1:9/driver";
    let err = match Node::new().install(dead, None).await {
        Ok(outcome) => panic!("{outcome:?}"),
        Err(e) => e.to_string(),
    };
    assert!(!err.contains("s3cret"), "{err}");
    assert!(err.contains("***@127.0.0.1:9"), "{err}");
}
