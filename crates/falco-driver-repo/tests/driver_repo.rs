//! End-to-end tests of the driver repository against local storage and a real S3 server
//! (Garage), with the real binary as a child process.

mod support;

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt as _;
use reqwest::StatusCode;
use support::*;

const V: &str = "8.0.0+driver";
const V_URL: &str = "8.0.0%2Bdriver";
const KO: &str = "falco_ubuntu-generic_5.15.0-100-generic_110.ko";
const KO2: &str = "falco_almalinux_4.18.0-553.100.1.el8_10.x86_64_1.ko";
const O: &str = "falco_debian_6.1.0-18-amd64_1.o";

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .user_agent("falco-driver-repo-test/1.0")
        .build()
        .expect("client")
}

async fn get(url: &str) -> reqwest::Response {
    client().get(url).send().await.expect("GET")
}

/// Publish, serve, download; the index verifies and matches what was downloaded.
async fn publish_serve_download(backend: Backend) {
    let (private, public, _keys) = keys();
    let src = tempfile::tempdir().unwrap();
    let ko = write_driver(src.path(), V, "x86_64", KO, 1, 300_000);
    let ko2 = write_driver(src.path(), V, "x86_64", KO2, 2, 1000);
    let o = write_driver(src.path(), V, "aarch64", O, 3, 5000);
    let dir = src.path().to_str().unwrap();
    let key = private.to_str().unwrap();
    let out = cli_ok(&backend, &["publish", dir, "--signing-key", key]);
    assert!(
        out.contains("uploaded 3, unchanged 0, replaced 0, indexes written 2"),
        "{out}"
    );

    // Legacy flat layout, written as the old publisher did.
    let storage = backend.storage();
    storage
        .put(
            &format!("driver/{V}/{KO}"),
            Bytes::from_static(b"legacy"),
            false,
        )
        .await
        .unwrap();

    let server = Server::start(&backend, &[]);
    for (arch, file, bytes) in [
        ("x86_64", KO, &ko),
        ("x86_64", KO2, &ko2),
        ("aarch64", O, &o),
    ] {
        let r = get(&server.url(&format!("/driver/{V_URL}/{arch}/{file}"))).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert!(
            r.headers()["cache-control"]
                .to_str()
                .unwrap()
                .contains("max-age=86400")
        );
        assert!(r.headers().contains_key("etag"));
        assert_eq!(&r.bytes().await.unwrap()[..], &bytes[..]);

        let sum = get(&server.url(&format!("/driver/{V_URL}/{arch}/{file}.sha256"))).await;
        assert_eq!(sum.status(), StatusCode::OK);
        let sum = sum.text().await.unwrap();
        let (hash, name) = falco_core::index::parse_sha256_file(&sum).unwrap();
        assert_eq!(name, file);
        assert_eq!(hash, falco_core::index::sha256_hex(bytes));
    }
    let public =
        falco_core::index::parse_public_key(&std::fs::read_to_string(&public).unwrap()).unwrap();
    let index = get(&server.url(&format!("/driver/{V_URL}/x86_64/index.json")))
        .await
        .bytes()
        .await
        .unwrap();
    let sig = get(&server.url(&format!("/driver/{V_URL}/x86_64/index.json.sig")))
        .await
        .text()
        .await
        .unwrap();
    let index = falco_core::index::verify(&index, &sig, &public).expect("index verifies");
    assert_eq!(index.version, V);
    assert_eq!(index.arch, "x86_64");
    assert_eq!(
        index
            .files
            .iter()
            .map(|f| f.file.as_str())
            .collect::<Vec<_>>(),
        [KO2, KO],
        "sorted by name"
    );
    let e = index.entry(KO).unwrap();
    assert_eq!(
        (e.size, e.sha256.as_str()),
        (300_000, falco_core::index::sha256_hex(&ko).as_str())
    );
    assert_eq!(
        (
            e.target.as_str(),
            e.kernelrelease.as_str(),
            e.kernelversion.as_str()
        ),
        ("ubuntu-generic", "5.15.0-100-generic", "110")
    );
    let legacy = get(&server.url(&format!("/driver/{V_URL}/{KO}"))).await;
    assert_eq!(legacy.status(), StatusCode::OK);
    assert_eq!(&legacy.bytes().await.unwrap()[..], b"legacy");

    // Idempotent for the drivers; the indexes are renewed (serial + 1, new expiry).
    let out = cli_ok(&backend, &["publish", dir, "--signing-key", key]);
    assert!(
        out.contains("uploaded 0, unchanged 3, replaced 0, indexes written 2"),
        "{out}"
    );

    // A different file under the same name is refused, and the stored one is untouched.
    write_driver(src.path(), V, "x86_64", KO, 99, 300_000);
    let refused = cli(&backend, &["publish", dir, "--signing-key", key]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("different content"));
    let body = get(&server.url(&format!("/driver/{V_URL}/x86_64/{KO}")))
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(&body[..], &ko[..]);

    // --force replaces it and re-signs the index.
    let out = cli_ok(&backend, &["publish", dir, "--signing-key", key, "--force"]);
    assert!(out.contains("replaced 1"), "{out}");
    let index = storage
        .read(&format!("driver/{V}/x86_64/index.json"))
        .await
        .unwrap()
        .unwrap();
    let sig = storage
        .read(&format!("driver/{V}/x86_64/index.json.sig"))
        .await
        .unwrap()
        .unwrap();
    let index = falco_core::index::verify(&index, &String::from_utf8_lossy(&sig), &public).unwrap();
    assert_eq!(
        index.entry(KO).unwrap().sha256,
        falco_core::index::sha256_hex(&content(99, 300_000))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn publish_serve_download_local() {
    publish_serve_download(Backend::local()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn publish_serve_download_garage() {
    publish_serve_download(Backend::garage()).await;
}

/// Range, ETag/If-None-Match, Last-Modified/If-Modified-Since, HEAD.
async fn range_etag_304(backend: Backend) {
    let ko = publish_one(&backend, 7, 100_000).await;
    let server = Server::start(&backend, &[]);
    let url = server.url(&format!("/driver/{V_URL}/x86_64/{KO}"));
    let c = client();

    let r = c
        .get(&url)
        .header("range", "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.headers()["content-range"], "bytes 10-19/100000");
    assert_eq!(&r.bytes().await.unwrap()[..], &ko[10..20]);
    let r = c
        .get(&url)
        .header("range", "bytes=-5")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(&r.bytes().await.unwrap()[..], &ko[99_995..]);
    let r = c
        .get(&url)
        .header("range", "bytes=99990-")
        .send()
        .await
        .unwrap();
    assert_eq!(&r.bytes().await.unwrap()[..], &ko[99_990..]);

    let r = c.head(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-length"], "100000");
    assert_eq!(r.headers()["accept-ranges"], "bytes");
    let etag = r.headers()["etag"].to_str().unwrap().to_owned();
    let modified = r.headers()["last-modified"].to_str().unwrap().to_owned();
    assert!(etag.starts_with('"'), "{etag}");

    let r = c
        .get(&url)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(r.headers()["etag"], etag.as_str());
    assert!(r.bytes().await.unwrap().is_empty());
    let r = c
        .get(&url)
        .header("if-none-match", "\"other\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap().len(), 100_000);
    let r = c
        .get(&url)
        .header("if-modified-since", &modified)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    let r = c
        .get(&url)
        .header("if-modified-since", "Mon, 01 Jan 2001 00:00:00 GMT")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    let index = c
        .get(server.url(&format!("/driver/{V_URL}/x86_64/index.json")))
        .send()
        .await
        .unwrap();
    assert!(
        index.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("max-age=300")
    );
}

/// RFC 9110 §14.2: an unknown unit or an invalid range is ignored and a multi-range is
/// answered with the whole file (200), never 416.
#[tokio::test(flavor = "multi_thread")]
async fn odd_ranges_get_the_whole_file_local() {
    let backend = Backend::local();
    let ko = publish_one(&backend, 5, 1000).await;
    let server = Server::start(&backend, &[]);
    let url = server.url(&format!("/driver/{V_URL}/x86_64/{KO}"));
    for range in [
        "items=0-1",
        "lines=1-2",
        "bytes=5-1",
        "bytes=--1",
        "bytes=a-b",
        "bytes=0-1,3-4",
        "bytes=0-1,2000-3000",
    ] {
        for head in [false, true] {
            let req = if head {
                client().head(&url)
            } else {
                client().get(&url)
            };
            let r = req.header("range", range).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::OK, "{range} head={head}");
            assert_eq!(r.headers()["content-length"], "1000", "{range}");
            assert!(!r.headers().contains_key("content-range"), "{range}");
            if !head {
                assert_eq!(&r.bytes().await.unwrap()[..], &ko[..], "{range}");
            }
        }
    }
    let r = client()
        .get(&url)
        .header("range", "bytes=998-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(&r.bytes().await.unwrap()[..], &ko[998..]);
}

/// A driver of several read chunks (256 KiB each, the buffer reused between them) arrives
/// whole, twice in a row on one connection, and a range across chunk boundaries is exact.
#[tokio::test(flavor = "multi_thread")]
async fn multi_chunk_driver_is_served_whole() {
    let backend = Backend::local();
    let ko = publish_one(&backend, 11, 700_001).await;
    let server = Server::start(&backend, &[]);
    let url = server.url(&format!("/driver/{V_URL}/x86_64/{KO}"));
    let c = client();
    for _ in 0..2 {
        let r = c.get(&url).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.bytes().await.unwrap(), ko);
    }
    let r = c
        .get(&url)
        .header("range", "bytes=1000-600000")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(&r.bytes().await.unwrap()[..], &ko[1000..=600000]);
}

#[tokio::test(flavor = "multi_thread")]
async fn range_etag_304_local() {
    range_etag_304(Backend::local()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn range_etag_304_garage() {
    range_etag_304(Backend::garage()).await;
}

/// Repeated 404s for a missing kernel cost one storage call within the TTL.
async fn negative_cache(backend: Backend) {
    let server = Server::start(&backend, &["--negative-ttl", "3600"]);
    let missing = server.url(&format!("/driver/{V_URL}/x86_64/falco_nope_1.0_1.ko"));
    let not_found_calls = |metrics: &str| {
        metric(
            metrics,
            r#"driver_repo_storage_requests_total{op="get",outcome="not_found"}"#,
        ) + metric(
            metrics,
            r#"driver_repo_storage_requests_total{op="head",outcome="not_found"}"#,
        )
    };
    // Start-up reads (the statistics key) are not part of the count.
    let before = not_found_calls(&get(&server.url("/metrics")).await.text().await.unwrap());
    for _ in 0..20 {
        let r = get(&missing).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(r.headers()["cache-control"], "public, max-age=3600");
    }
    // A HEAD of the same key is served from the cache too.
    assert_eq!(
        client().head(&missing).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    let metrics = get(&server.url("/metrics")).await.text().await.unwrap();
    assert_eq!(not_found_calls(&metrics) - before, 1.0, "{metrics}");
    assert_eq!(
        metric(&metrics, "driver_repo_negative_cache_hits_total"),
        20.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn negative_cache_local() {
    negative_cache(Backend::local()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn negative_cache_garage() {
    negative_cache(Backend::garage()).await;
}

async fn download_many(server: &Server, n: usize, forwarded: impl Fn(usize) -> Option<String>) {
    let c = client();
    let url = server.url(&format!("/driver/{V_URL}/x86_64/{KO}"));
    let results: Vec<StatusCode> = futures::stream::iter(0..n)
        .map(|i| {
            let mut req = c.get(&url);
            if let Some(ip) = forwarded(i) {
                req = req.header("x-forwarded-for", ip);
            }
            async move {
                let r = req.send().await.expect("GET");
                let status = r.status();
                r.bytes().await.expect("body");
                status
            }
        })
        .buffer_unordered(100)
        .collect()
        .await;
    assert!(results.iter().all(|s| *s == StatusCode::OK));
}

/// Publishes one driver `KO` of `len` bytes (content from `seed`); returns its bytes.
async fn publish_one(backend: &Backend, seed: u64, len: usize) -> Vec<u8> {
    let (private, _public, _keys) = keys();
    let src = tempfile::tempdir().unwrap();
    let ko = write_driver(src.path(), V, "x86_64", KO, seed, len);
    cli_ok(
        backend,
        &[
            "publish",
            src.path().to_str().unwrap(),
            "--signing-key",
            private.to_str().unwrap(),
        ],
    );
    ko
}

async fn total_downloads(backend: &Backend) -> u64 {
    stats_json(backend)["total_downloads"].as_u64().unwrap()
}

/// 1,000 concurrent downloads are counted exactly; a kill -9 after a flush loses nothing
/// flushed and a restarted server counts nothing twice.
async fn stats_exact(backend: Backend) {
    publish_one(&backend, 1, 2000).await;
    let server = Server::start(&backend, &["--stats-flush-interval", "1"]);
    download_many(&server, 1000, |_| None).await;
    let stats = &backend;
    wait_for(
        "1000 downloads flushed",
        Duration::from_secs(60),
        || async move { (total_downloads(stats).await == 1000).then_some(()) },
    )
    .await;
    server.kill9();

    let server = Server::start(&backend, &["--stats-flush-interval", "3600"]);
    download_many(&server, 234, |_| None).await;
    server.terminate();
    let report = stats_json(&backend);
    assert_eq!(report["total_downloads"], 1234);
    assert_eq!(report["distinct_sources"], 1);
    assert_eq!(report["by_version"][0]["key"], V);
    assert_eq!(
        report["by_kernel"][0]["key"],
        "ubuntu-generic 5.15.0-100-generic 110"
    );
    assert_eq!(report["by_client"][0]["key"], "falco-driver-repo");
    let table = cli_ok(&backend, &["stats"]);
    assert!(
        table.contains("Top kernels") && table.contains("1234"),
        "{table}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn stats_exact_local() {
    stats_exact(Backend::local()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn stats_exact_garage() {
    stats_exact(Backend::garage()).await;
}

/// Two replicas on the same storage add up, and distinct sources are unioned.
#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_share_storage_garage() {
    let backend = Backend::garage();
    publish_one(&backend, 1, 1000).await;
    let a = Server::start(&backend, &["--trust-forwarded-for"]);
    let b = Server::start(&backend, &["--trust-forwarded-for"]);
    tokio::join!(
        download_many(&a, 150, |i| Some(format!("10.0.0.{}", i % 7))),
        download_many(&b, 250, |i| Some(format!("10.0.0.{}", i % 5 + 3))),
    );
    a.terminate();
    b.terminate();
    let report = stats_json(&backend);
    assert_eq!(report["total_downloads"], 400);
    // 10.0.0.0-6 and 10.0.0.3-7: 8 distinct addresses.
    assert_eq!(report["distinct_sources"], 8);
}

/// Two publishers at once, overlapping: both succeed and the index covers everything.
async fn racing_publishers(backend: Backend) {
    let (private, public, _keys) = keys();
    let key = private.to_str().unwrap().to_owned();
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let mut expected = std::collections::BTreeMap::new();
    for i in 0..6u64 {
        let file = format!("falco_ubuntu-generic_5.{i}.0_1.ko");
        let bytes = write_driver(a.path(), V, "x86_64", &file, i, 4000);
        expected.insert(file, falco_core::index::sha256_hex(&bytes));
        let file = format!("falco_debian_6.{i}.0_1.ko");
        let bytes = write_driver(b.path(), V, "x86_64", &file, 100 + i, 4000);
        expected.insert(file, falco_core::index::sha256_hex(&bytes));
    }
    // One shared file, identical in both.
    let shared = write_driver(a.path(), V, "x86_64", KO, 42, 3000);
    write_driver(b.path(), V, "x86_64", KO, 42, 3000);
    expected.insert(KO.into(), falco_core::index::sha256_hex(&shared));

    let env = backend.env();
    let spawn = |dir: &std::path::Path| {
        let mut cmd = std::process::Command::new(BIN);
        cmd.args(["publish"]).arg(dir).args(["--signing-key", &key]);
        for (k, v) in &env {
            cmd.env(k, v);
        }
        cmd.spawn().unwrap()
    };
    let (mut pa, mut pb) = (spawn(a.path()), spawn(b.path()));
    assert!(pa.wait().unwrap().success());
    assert!(pb.wait().unwrap().success());

    let storage = backend.storage();
    let index = storage
        .read(&format!("driver/{V}/x86_64/index.json"))
        .await
        .unwrap()
        .unwrap();
    let sig = storage
        .read(&format!("driver/{V}/x86_64/index.json.sig"))
        .await
        .unwrap()
        .unwrap();
    let public =
        falco_core::index::parse_public_key(&std::fs::read_to_string(&public).unwrap()).unwrap();
    let index = falco_core::index::verify(&index, &String::from_utf8_lossy(&sig), &public).unwrap();
    let got: std::collections::BTreeMap<String, String> = index
        .files
        .into_iter()
        .map(|f| (f.file, f.sha256))
        .collect();
    assert_eq!(got, expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn racing_publishers_local() {
    racing_publishers(Backend::local()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn racing_publishers_garage() {
    racing_publishers(Backend::garage()).await;
}

/// Garage ignores create-only PUTs (this is why publishing compares before writing);
/// local storage honours them.
#[tokio::test(flavor = "multi_thread")]
async fn conditional_put_is_not_honoured_by_garage() {
    for (backend, honoured) in [(Backend::local(), true), (Backend::garage(), false)] {
        let s = backend.storage();
        assert!(
            s.put("x/y", Bytes::from_static(b"one"), true)
                .await
                .unwrap()
        );
        let created = s
            .put("x/y", Bytes::from_static(b"two"), true)
            .await
            .unwrap();
        assert_eq!(!created, honoured);
        let now = s.read("x/y").await.unwrap().unwrap();
        assert_eq!(&now[..], if honoured { b"one" } else { b"two" });
    }
}

/// gc reports first, deletes only with --yes.
#[tokio::test(flavor = "multi_thread")]
async fn gc_dry_run_then_delete_garage() {
    let backend = Backend::garage();
    let (private, _public, _keys) = keys();
    for version in ["1.0.0", "2.0.0", "3.0.0"] {
        let src = tempfile::tempdir().unwrap();
        write_driver(src.path(), version, "x86_64", KO, 1, 100);
        cli_ok(
            &backend,
            &[
                "publish",
                src.path().to_str().unwrap(),
                "--signing-key",
                private.to_str().unwrap(),
            ],
        );
    }
    let storage = backend.storage();
    let before = storage.list("driver/").await.unwrap().len();
    let report = cli_ok(&backend, &["gc", "--keep", "1"]);
    assert!(
        report.contains("would remove") && report.contains("dry run"),
        "{report}"
    );
    assert_eq!(storage.list("driver/").await.unwrap().len(), before);
    let plan: serde_json::Value = serde_json::from_str(&cli_ok(
        &backend,
        &["gc", "--keep", "1", "--format", "json"],
    ))
    .unwrap();
    assert_eq!(plan["keep"].as_array().unwrap().len(), 1);
    assert_eq!(plan["remove"].as_array().unwrap().len(), 2);
    let kept = plan["keep"][0]["version"].as_str().unwrap().to_owned();
    cli_ok(&backend, &["gc", "--keep", "1", "--yes"]);
    let left = storage.list("driver/").await.unwrap();
    assert!(!left.is_empty());
    assert!(
        left.iter()
            .all(|m| m.location.as_ref().starts_with(&format!("driver/{kept}/")))
    );
}

/// S3 stopped under load answers 503 with Retry-After, and recovers by itself.
#[tokio::test(flavor = "multi_thread")]
async fn s3_outage_under_load_garage() {
    let mut backend = Backend::garage();
    publish_one(&backend, 1, 5000).await;
    let server = Server::start(
        &backend,
        &[
            "--storage-retries",
            "0",
            "--storage-timeout",
            "2",
            "--stats-flush-interval",
            "1",
        ],
    );
    let url = server.url(&format!("/driver/{V_URL}/x86_64/{KO}"));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = std::sync::Arc::new(std::sync::Mutex::new(
        std::collections::BTreeMap::<u16, u64>::new(),
    ));
    let load = {
        let (url, stop, seen) = (url.clone(), stop.clone(), seen.clone());
        tokio::spawn(async move {
            let c = client();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let batch = futures::future::join_all((0..8).map(|_| c.get(&url).send())).await;
                for r in batch {
                    let r = r.expect("server answers during the outage");
                    let status = r.status().as_u16();
                    if status == 503 {
                        assert_eq!(r.headers()["retry-after"], "5");
                    }
                    // A body cut by the outage is fine; a complete one must be right.
                    if status == 200
                        && let Ok(body) = r.bytes().await
                    {
                        assert_eq!(body.len(), 5000);
                    }
                    *seen.lock().unwrap().entry(status).or_default() += 1;
                }
            }
        })
    };
    let count = |status: u16| seen.lock().unwrap().get(&status).copied().unwrap_or(0);
    wait_for(
        "downloads before the outage",
        Duration::from_secs(30),
        || async { (count(200) > 50).then_some(()) },
    )
    .await;
    backend.garage_mut().stop();
    wait_for("503 during the outage", Duration::from_secs(30), || async {
        (count(503) > 20).then_some(())
    })
    .await;
    backend.garage_mut().restart().unwrap();
    let ok_before = count(200);
    wait_for("recovery", Duration::from_secs(60), || async {
        (count(200) > ok_before + 50).then_some(())
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    load.await.unwrap();
    let statuses: Vec<u16> = seen.lock().unwrap().keys().copied().collect();
    assert_eq!(statuses, [200, 503], "only 200 and 503 are answered");
    // Every 200 is counted once the statistics flush again after the outage.
    server.terminate();
    assert_eq!(total_downloads(&backend).await, count(200));
}

/// Path traversal, absurd ranges and oversized headers get 4xx.
#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_get_4xx() {
    let backend = Backend::local();
    publish_one(&backend, 1, 100).await;
    // A file outside driver/ that traversal would reach.
    if let Backend::Local(dir) = &backend {
        std::fs::write(dir.path().join("secret"), "secret").unwrap();
    }
    let server = Server::start(&backend, &[]);
    let req = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    for path in [
        "/driver/../secret",
        "/driver/../../secret",
        "/driver/%2e%2e/secret",
        "/driver/8.0.0/..%2F..%2Fsecret",
        "/driver/8.0.0/x86_64/..%5C..%5Csecret",
        "/driver/8.0.0//x",
        "/driver/a/b/c/d",
        "/driver/8.0.0/x86_64/%00",
        "/driver/8.0.0/x86_64/%ff%fe",
        "/driver/",
        "/secret",
    ] {
        let status = raw_status(&server.addr, req(path).as_bytes());
        assert!((400..500).contains(&status), "{path}: {status}");
    }
    let ko = format!("/driver/{V_URL}/x86_64/{KO}");
    // RFC 9110: only a valid single range that selects nothing is 416.
    for range in [
        "bytes=100-",
        "bytes=99999999999999999999999999-",
        "bytes=-0",
    ] {
        let r = client()
            .get(server.url(&ko))
            .header("range", range)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE, "{range}");
        assert_eq!(r.headers()["content-range"], "bytes */100");
    }
    let big = "a".repeat(32 * 1024);
    let r = client()
        .get(server.url(&ko))
        .header("x-big", &big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    let huge = format!(
        "GET {ko} HTTP/1.1\r\nHost: x\r\nX-Huge: {}\r\n\r\n",
        "a".repeat(2 * 1024 * 1024)
    );
    let status = raw_status(&server.addr, huge.as_bytes());
    assert!((400..500).contains(&status), "huge header: {status}");
    let many: String = (0..500).map(|i| format!("X-H{i}: v\r\n")).collect();
    let status = raw_status(
        &server.addr,
        format!("GET {ko} HTTP/1.1\r\nHost: x\r\n{many}\r\n").as_bytes(),
    );
    assert!((400..500).contains(&status), "many headers: {status}");
    let r = client().post(server.url(&ko)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    // And the server is still fine.
    assert_eq!(get(&server.url(&ko)).await.status(), StatusCode::OK);
    assert_eq!(get(&server.url("/healthz")).await.status(), StatusCode::OK);
}

/// `--help` of every subcommand matches the committed snapshot
/// (`UPDATE_SNAPSHOTS=1 cargo test` rewrites it).
#[test]
fn help_matches_snapshot() {
    let mut text = String::new();
    for sub in [
        &[][..],
        &["serve"],
        &["publish"],
        &["keygen"],
        &["stats"],
        &["mirror"],
        &["gc"],
    ] {
        let out = std::process::Command::new(BIN)
            .args(sub)
            .arg("--help")
            .env_clear()
            .output()
            .unwrap();
        assert!(out.status.success());
        text.push_str(&format!("$ falco-driver-repo {} --help\n", sub.join(" ")));
        text.push_str(&String::from_utf8_lossy(&out.stdout));
        text.push('\n');
    }
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots/help.txt");
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &text).unwrap();
    }
    let expected =
        std::fs::read_to_string(&path).expect("snapshot exists (UPDATE_SNAPSHOTS=1 to create)");
    assert_eq!(
        text, expected,
        "--help changed; rerun with UPDATE_SNAPSHOTS=1 and review the diff"
    );
}

/// A CloudFront log fixture ingested twice is counted once.
async fn cloudfront_log_counted_once(backend: Backend) {
    use std::io::Write as _;
    let fixture = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/cloudfront.log"
    ))
    .unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&fixture).unwrap();
    let storage = backend.storage();
    storage
        .put(
            "logs/cf/E2ABC.2026-11-20-10.abcd1234.gz",
            Bytes::from(gz.finish().unwrap()),
            false,
        )
        .await
        .unwrap();
    let args = [
        "stats",
        "--format",
        "json",
        "--ingest-cloudfront",
        "logs/cf/",
    ];
    let first: serde_json::Value = serde_json::from_str(&cli_ok(&backend, &args)).unwrap();
    let second: serde_json::Value = serde_json::from_str(&cli_ok(&backend, &args)).unwrap();
    assert_eq!(first, second);
    assert_eq!(first["total_downloads"], 5);
    assert_eq!(first["distinct_sources"], 4);
    assert_eq!(first["by_day"][0]["key"], "2026-11-20");
    assert_eq!(first["by_day"][0]["downloads"], 3);
    assert_eq!(first["by_day"][1]["downloads"], 2);
    assert_eq!(first["by_version"][0]["key"], V);
    assert_eq!(first["by_client"][0]["key"], "falcoctl/0.11.0");
    // falcoctl/0.11.0 twice and Go's agent on a whole file: falcoctl; curl with a Range
    // (206 from byte 0) and wget: other.
    let classes: Vec<(String, u64)> = first["by_class"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["key"].as_str().unwrap().into(),
                l["downloads"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        classes,
        [("falcoctl".into(), 3), ("other".into(), 2)],
        "{first:#}"
    );
    assert_eq!(storage.list("stats/segments/logs/").await.unwrap().len(), 1);
    // The 404 line is a missing driver.
    let missing = missing_json(&backend);
    assert_eq!(missing["total_requests"], 1, "{missing:#}");
    assert_eq!(missing["missing"][0]["file"], "falco_nope_1.0_1.ko");
    assert_eq!(missing["missing"][0]["target"], "nope");
    assert_eq!(missing["missing"][0]["last_day"], "2026-11-20");
}

#[tokio::test(flavor = "multi_thread")]
async fn cloudfront_log_counted_once_local() {
    cloudfront_log_counted_once(Backend::local()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cloudfront_log_counted_once_garage() {
    cloudfront_log_counted_once(Backend::garage()).await;
}

/// Mirror a whole signed index from a served repository into Garage; a corrupted source
/// file fails the checksum and is not stored.
#[tokio::test(flavor = "multi_thread")]
async fn mirror_verifies_checksums_garage() {
    let source = Backend::local();
    let (private, public, _keys) = keys();
    let src = tempfile::tempdir().unwrap();
    let ko = write_driver(src.path(), V, "x86_64", KO, 1, 20_000);
    write_driver(src.path(), V, "x86_64", KO2, 2, 10_000);
    let key = private.to_str().unwrap();
    cli_ok(
        &source,
        &[
            "publish",
            src.path().to_str().unwrap(),
            "--signing-key",
            key,
        ],
    );
    let server = Server::start(&source, &[]);
    let from = server.url("/driver");

    let target = Backend::garage();
    let out = cli_ok(
        &target,
        &[
            "mirror",
            "--from",
            &from,
            "--driver-version",
            V,
            "--source-public-key",
            public.to_str().unwrap(),
            "--signing-key",
            key,
        ],
    );
    assert!(out.contains("copied 2, unchanged 0, verified 2"), "{out}");
    let storage = target.storage();
    assert_eq!(
        &storage
            .read(&format!("driver/{V}/x86_64/{KO}"))
            .await
            .unwrap()
            .unwrap()[..],
        &ko[..]
    );
    let index = storage
        .read(&format!("driver/{V}/x86_64/index.json"))
        .await
        .unwrap()
        .unwrap();
    let sig = storage
        .read(&format!("driver/{V}/x86_64/index.json.sig"))
        .await
        .unwrap()
        .unwrap();
    let public_key =
        falco_core::index::parse_public_key(&std::fs::read_to_string(&public).unwrap()).unwrap();
    assert_eq!(
        falco_core::index::verify(&index, &String::from_utf8_lossy(&sig), &public_key)
            .unwrap()
            .files
            .len(),
        2
    );
    let again = cli_ok(
        &target,
        &["mirror", "--from", &from, "--driver-version", V, KO],
    );
    assert!(
        again.contains("copied 0, unchanged 1, verified 1"),
        "{again}"
    );

    // Corrupt the source's copy of KO2 behind its checksum's back.
    source
        .storage()
        .put(
            &format!("driver/{V}/x86_64/{KO2}"),
            Bytes::from(vec![0u8; 10_000]),
            false,
        )
        .await
        .unwrap();
    let fresh = Backend::garage();
    let failed = cli(
        &fresh,
        &["mirror", "--from", &from, "--driver-version", V, KO2],
    );
    assert!(!failed.status.success());
    assert!(
        String::from_utf8_lossy(&failed.stderr).contains("sha256"),
        "{}",
        String::from_utf8_lossy(&failed.stderr)
    );
    assert!(fresh.storage().list("driver/").await.unwrap().is_empty());
}

/// Opens `n` connections that each send half a request line and then nothing.
fn half_requests(addr: &str, n: usize) -> Vec<std::net::TcpStream> {
    use std::io::Write as _;
    (0..n)
        .map(|i| {
            let mut s = std::net::TcpStream::connect(addr)
                .unwrap_or_else(|e| panic!("connect #{i} of {n}: {e}"));
            s.write_all(format!("GET /driver/{V_URL}/x86_64/falco_").as_bytes())
                .expect("write half a request line");
            s
        })
        .collect()
}

async fn metrics_text(server: &Server) -> String {
    // A fresh client: no pooled connection to wait behind.
    client()
        .get(server.url("/metrics"))
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics body")
}

/// Slowloris: 2,000 connections sending half a request head do not stop a normal GET, and
/// the header-read timeout closes them all.
#[tokio::test(flavor = "multi_thread")]
async fn slowloris_does_not_block_a_get_local() {
    const SOCKETS: usize = 2000;
    let limit = open_files_limit();
    assert!(
        limit >= SOCKETS as u64 + 300,
        "this test opens {SOCKETS} sockets: raise `ulimit -n` (now {limit}) to at least {}",
        SOCKETS + 300
    );
    let backend = Backend::local();
    let ko = publish_one(&backend, 3, 50_000).await;
    // A header-read timeout of 30 s (the default is 10): on a loaded CI machine opening 2,000
    // sockets has taken longer than 10 s, and the first ones were closed before the last
    // were open.
    let server = Server::start(&backend, &["--header-read-timeout", "30"]);
    let addr = server.addr.clone();
    let sockets = tokio::task::spawn_blocking(move || half_requests(&addr, SOCKETS))
        .await
        .unwrap();
    let all_open = &server;
    wait_for(
        "the half requests accepted",
        Duration::from_secs(90),
        || async move {
            (metric(
                &metrics_text(all_open).await,
                "driver_repo_connections_open",
            ) >= SOCKETS as f64)
                .then_some(())
        },
    )
    .await;
    let started = std::time::Instant::now();
    let r = client()
        .get(server.url(&format!("/driver/{V_URL}/x86_64/{KO}")))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .expect("a normal GET is answered while the half requests are open");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap(), ko);
    // A figure for the report, not an assertion.
    eprintln!(
        "GET with {SOCKETS} half-request connections open: {:?}",
        started.elapsed()
    );
    let closed = &server;
    wait_for(
        "the header-read timeout closing the half requests",
        Duration::from_secs(90),
        || async move {
            (metric(
                &metrics_text(closed).await,
                r#"driver_repo_connections_closed_total{reason="header_timeout"}"#,
            ) >= SOCKETS as f64)
                .then_some(())
        },
    )
    .await;
    // The server closed them: every socket reads end of file (or a reset).
    tokio::task::spawn_blocking(move || {
        use std::io::Read as _;
        for mut s in sockets {
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut buf = [0u8; 512];
            loop {
                match s.read(&mut buf) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
                    Err(e) => panic!("a half request is still open after the timeout: {e}"),
                }
            }
        }
    })
    .await
    .unwrap();
}

/// Beyond --max-connections new connections wait, the header timeout frees the slots taken
/// by half requests, and a connection that moves no byte is closed by the idle timeout.
#[tokio::test(flavor = "multi_thread")]
async fn connection_cap_and_idle_timeout_local() {
    let backend = Backend::local();
    let ko = publish_one(&backend, 4, 1000).await;
    let server = Server::start(
        &backend,
        &["--max-connections", "50", "--header-read-timeout", "1"],
    );
    let addr = server.addr.clone();
    let sockets = tokio::task::spawn_blocking(move || half_requests(&addr, 200))
        .await
        .unwrap();
    // Queued behind the 200 half requests, of which 50 at a time hold a slot for 1 s.
    let r = client()
        .get(server.url(&format!("/driver/{V_URL}/x86_64/{KO}")))
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .expect("the GET is served once the header timeout frees slots");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap(), ko);
    let m = metrics_text(&server).await;
    assert!(metric(&m, "driver_repo_connections_open") <= 50.0, "{m}");
    assert!(
        metric(
            &m,
            r#"driver_repo_connections_closed_total{reason="header_timeout"}"#
        ) >= 100.0,
        "{m}"
    );
    drop(sockets);

    let server = Server::start(
        &backend,
        &["--idle-timeout", "1", "--header-read-timeout", "600"],
    );
    let addr = server.addr.clone();
    let eof = tokio::task::spawn_blocking(move || {
        use std::io::Read as _;
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut buf = [0u8; 16];
        s.read(&mut buf)
    })
    .await
    .unwrap();
    assert!(
        matches!(eof, Ok(0)),
        "a silent connection is closed by the idle timeout: {eof:?}"
    );
    let m = metrics_text(&server).await;
    assert_eq!(
        metric(
            &m,
            r#"driver_repo_connections_closed_total{reason="idle_timeout"}"#
        ),
        1.0,
        "{m}"
    );
}

/// Publishes `file` of version `V`, arch x86_64.
fn publish_file(backend: &Backend, file: &str, seed: u64) {
    let (private, _public, _keys) = keys();
    let src = tempfile::tempdir().unwrap();
    write_driver(src.path(), V, "x86_64", file, seed, 100);
    cli_ok(
        backend,
        &[
            "publish",
            src.path().to_str().unwrap(),
            "--signing-key",
            private.to_str().unwrap(),
        ],
    );
}

/// 404s on driver names are counted by driver and distinct sources, from the negative cache
/// too, bounded by --stats-miss-capacity; `stats --missing` lists the most-requested ones
/// and leaves out what has been published since.
async fn missing_drivers_are_reported(backend: Backend) {
    const A: &str = "falco_ubuntu-generic_6.8.0-99-generic_101.ko";
    const B: &str = "falco_debian_6.1.0-99-amd64_1.o";
    const C: &str = "falco_amazonlinux2_5.10.99_1.ko";
    publish_one(&backend, 1, 100).await;
    let server = Server::start(
        &backend,
        &[
            "--trust-forwarded-for",
            "--negative-ttl",
            "3600",
            "--stats-miss-capacity",
            "2",
        ],
    );
    let c = client();
    let get_from = |file: &str, ip: &str| {
        c.get(server.url(&format!("/driver/{V_URL}/x86_64/{file}")))
            .header("x-forwarded-for", ip)
            .send()
    };
    // A: three sources, twice each (the second answer comes from the negative cache).
    for round in 0..2 {
        for ip in ["10.0.0.1", "10.0.0.2", "10.0.0.3"] {
            let r = get_from(A, ip).await.unwrap();
            assert_eq!(r.status(), StatusCode::NOT_FOUND, "round {round}");
        }
    }
    assert_eq!(get_from(B, "10.0.0.9").await.unwrap().status(), 404);
    // Beyond the cap of 2 distinct missing drivers: the overflow bucket.
    assert_eq!(get_from(C, "10.0.0.9").await.unwrap().status(), 404);
    // Not counted: HEAD, a name that is not a driver, an existing driver.
    let head = c
        .head(server.url(&format!("/driver/{V_URL}/x86_64/{A}")))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        get_from("nothing.ko", "10.0.0.9").await.unwrap().status(),
        404
    );
    assert_eq!(get_from(KO, "10.0.0.9").await.unwrap().status(), 200);
    let m = get(&server.url("/metrics")).await.text().await.unwrap();
    assert_eq!(
        metric(&m, "driver_repo_missing_driver_requests_total"),
        8.0,
        "{m}"
    );
    assert_eq!(
        metric(&m, "driver_repo_missing_driver_overflow_total"),
        1.0,
        "{m}"
    );
    assert!(
        metric(&m, "driver_repo_negative_cache_hits_total") >= 3.0,
        "{m}"
    );
    server.terminate();

    let report = missing_json(&backend);
    assert_eq!(report["total_requests"], 8, "{report:#}");
    assert_eq!(report["distinct_drivers"], 2);
    assert_eq!(report["other_requests"], 1);
    let first = &report["missing"][0];
    assert_eq!(first["file"], A);
    assert_eq!(
        (&first["version"], &first["arch"], &first["target"]),
        (&V.into(), &"x86_64".into(), &"ubuntu-generic".into())
    );
    assert_eq!(
        (&first["kernelrelease"], &first["kernelversion"]),
        (&"6.8.0-99-generic".into(), &"101".into())
    );
    assert_eq!(
        (&first["requests"], &first["sources"]),
        (&6.into(), &3.into())
    );
    assert_eq!(report["missing"][1]["file"], B);
    let table = cli_ok(&backend, &["stats", "--missing"]);
    assert!(
        table.contains("Most-requested missing drivers") && table.contains("6.8.0-99-generic"),
        "{table}"
    );
    // Downloads are a separate report.
    assert_eq!(total_downloads(&backend).await, 1);

    // Once B is published it is no longer missing.
    publish_file(&backend, B, 9);
    let report = missing_json(&backend);
    let files: Vec<&str> = report["missing"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["file"].as_str().unwrap())
        .collect();
    assert_eq!(files, [A]);
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_drivers_are_reported_local() {
    missing_drivers_are_reported(Backend::local()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_drivers_are_reported_garage() {
    missing_drivers_are_reported(Backend::garage()).await;
}

/// Distinct sources per day with a daily key: two replicas share the day's key (on Garage,
/// which ignores create-only writes), the key of a final day is deleted, and the counts of
/// that day stay right while its hashes no longer match the same addresses on a later day.
async fn source_keys_rotate(backend: Backend) {
    const DAY1: &str = "2026-03-01";
    const DAY4: &str = "2026-03-04";
    let day = |d: &'static str| [("FALCO_DRIVER_REPO_TEST_DAY", d)];
    publish_one(&backend, 1, 1000).await;
    let args = [
        "--trust-forwarded-for",
        "--stats-flush-interval",
        "1",
        "--stats-key-settle",
        "2",
    ];
    let a = Server::start_env(&backend, &args, &day(DAY1));
    let b = Server::start_env(&backend, &args, &day(DAY1));
    tokio::join!(
        download_many(&a, 150, |i| Some(format!("10.0.0.{}", i % 7))),
        download_many(&b, 250, |i| Some(format!("10.0.0.{}", i % 5 + 3))),
    );
    // `stats` run "on" a day (it deletes the keys of days final by then).
    let stats_on = |d: &'static str| {
        let out = cli_env(&backend, &["stats", "--format", "json"], &day(d));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    // Flushed while running, once the day's key has settled.
    let stats = &stats_on;
    wait_for(
        "400 downloads flushed",
        Duration::from_secs(60),
        || async move { (stats(DAY1)["total_downloads"] == 400).then_some(()) },
    )
    .await;
    a.terminate();
    b.terminate();
    let storage = backend.storage();
    let keys = |storage: &falco_driver_repo::storage::Storage| {
        let storage = storage.clone();
        async move {
            let mut keys: Vec<String> = storage
                .list("stats/source-keys/")
                .await
                .unwrap()
                .into_iter()
                .map(|m| m.location.to_string())
                .collect();
            keys.sort();
            keys
        }
    };
    // Today's key, and tomorrow's created ahead of time.
    assert_eq!(
        keys(&storage).await,
        [
            "stats/source-keys/2026-03-01",
            "stats/source-keys/2026-03-02"
        ]
    );
    let report = stats_on(DAY1);
    assert_eq!(report["total_downloads"], 400);
    // 10.0.0.0-6 and 10.0.0.3-7: 8 distinct addresses, one key for both replicas.
    assert_eq!(report["distinct_sources"], 8, "{report:#}");

    // Three days later the first day is final: its key is deleted when a server starts.
    let c = Server::start_env(&backend, &args, &day(DAY4));
    download_many(&c, 30, |i| Some(format!("10.0.0.{}", i % 3))).await;
    c.terminate();
    assert_eq!(
        keys(&storage).await,
        [
            "stats/source-keys/2026-03-02",
            "stats/source-keys/2026-03-04",
            "stats/source-keys/2026-03-05"
        ]
    );
    let report = stats_on(DAY4);
    assert_eq!(report["total_downloads"], 430);
    assert_eq!(report["by_day"][0]["key"], DAY1);
    assert_eq!(
        (
            &report["by_day"][0]["downloads"],
            &report["by_day"][0]["sources"]
        ),
        (&400.into(), &8.into())
    );
    assert_eq!(report["by_day"][1]["key"], DAY4);
    assert_eq!(report["by_day"][1]["sources"], 3);
    assert_eq!(report["distinct_sources"], 11);
    // `stats` deletes final keys too (day 2 on day 5).
    stats_on("2026-03-05");
    assert_eq!(
        keys(&storage).await,
        [
            "stats/source-keys/2026-03-04",
            "stats/source-keys/2026-03-05"
        ]
    );
    // The same addresses hash differently on day 1 and day 4.
    let rows = falco_driver_repo::stats::load_rows(&storage).await.unwrap();
    let sources = |d: &str| -> std::collections::BTreeSet<String> {
        rows.iter()
            .filter(|r| r.key.day == d)
            .flat_map(|r| r.sources.iter().cloned())
            .collect()
    };
    assert!(sources(DAY1).is_disjoint(&sources(DAY4)));
}

#[tokio::test(flavor = "multi_thread")]
async fn source_keys_rotate_local() {
    source_keys_rotate(Backend::local()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn source_keys_rotate_garage() {
    source_keys_rotate(Backend::garage()).await;
}

/// Who downloads: the real falcoctl (`driver install`, Go's default agent, no Range) is
/// counted as `falcoctl`, curl fetching a whole driver as the legacy loader script, this
/// project's loader by its agent, and a Go client sending a Range as `other`.
#[tokio::test(flavor = "multi_thread")]
async fn clients_are_classified_local() {
    let falcoctl = falcoctl_bin();
    let backend = Backend::local();
    let ko = publish_one(&backend, 8, 4000).await;
    let server = Server::start(&backend, &[]);
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("etc")).unwrap();
    std::fs::write(
        root.path().join("etc/os-release"),
        "NAME=\"Ubuntu\"\nID=ubuntu\nVERSION_ID=\"22.04\"\n",
    )
    .unwrap();
    let home = tempfile::tempdir().unwrap();
    let install = |kernelrelease: &str| {
        std::process::Command::new(&falcoctl)
            .args([
                "driver",
                "install",
                "--type",
                "kmod",
                "--download",
                "--compile=false",
            ])
            .arg("--host-root")
            .arg(root.path())
            .args(["--kernelrelease", kernelrelease])
            .args([
                "--kernelversion",
                "#110-Ubuntu SMP Tue Mar 5 00:00:00 UTC 2024",
            ])
            .args(["--repo", &server.url("/driver"), "--version", V])
            .env_clear()
            .env("HOME", home.path())
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run falcoctl")
    };
    // falcoctl then fails to load the module (it is random bytes): only the download matters.
    let out = install("5.15.0-100-generic");
    let downloaded = home.path().join(format!(".falco/{V}/x86_64/{KO}"));
    assert_eq!(
        std::fs::read(&downloaded).unwrap_or_else(|e| panic!(
            "falcoctl did not download {}: {e}\n{}{}",
            downloaded.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )),
        ko
    );
    // A kernel nobody built: a miss, as falcoctl asks for it.
    install("5.15.0-999-generic");

    let url = server.url(&format!("/driver/{V_URL}/x86_64/{KO}"));
    let dest = home.path().join("curl.ko");
    let status = std::process::Command::new("curl")
        .args(["-fsS", "--create-dirs", "-o"])
        .arg(&dest)
        .arg(&url)
        .status()
        .expect("run curl");
    assert!(status.success());
    assert_eq!(std::fs::read(&dest).unwrap(), ko);
    let agent = |ua: &str| {
        reqwest::Client::builder()
            .user_agent(ua.to_owned())
            .build()
            .unwrap()
    };
    let loader = agent("falco-driver-loader/0.1.0")
        .get(&url)
        .send()
        .await
        .unwrap();
    assert_eq!(loader.bytes().await.unwrap(), ko);
    let ranged = agent("Go-http-client/1.1")
        .get(&url)
        .header("range", "bytes=0-")
        .send()
        .await
        .unwrap();
    assert_eq!(ranged.status(), StatusCode::PARTIAL_CONTENT);
    ranged.bytes().await.unwrap();
    server.terminate();

    let report = stats_json(&backend);
    let lines = |group: &str| -> std::collections::BTreeMap<String, u64> {
        report[group]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                (
                    l["key"].as_str().unwrap().to_owned(),
                    l["downloads"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    assert_eq!(
        lines("by_class"),
        [
            ("falco-driver-loader".to_owned(), 1),
            ("falcoctl".to_owned(), 1),
            ("legacy-loader-script".to_owned(), 1),
            ("other".to_owned(), 1),
        ]
        .into(),
        "{report:#}"
    );
    let clients = lines("by_client");
    assert_eq!(clients.get("go-http-client/1.1"), Some(&2), "{clients:?}");
    assert_eq!(
        clients.get("falco-driver-loader/0.1.0"),
        Some(&1),
        "{clients:?}"
    );
    assert!(
        clients.keys().any(|k| k.starts_with("curl/")),
        "{clients:?}"
    );
    let missing = missing_json(&backend);
    assert_eq!(
        missing["missing"][0]["file"], "falco_ubuntu-generic_5.15.0-999-generic_110.ko",
        "{missing:#}"
    );
}
