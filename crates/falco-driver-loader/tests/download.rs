//! Downloads from a real HTTP server on 127.0.0.1, through the built binary.

mod common;

use std::time::Duration;

use common::*;
use falco_core::index;

const MIB: usize = 1 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_repository_404_then_second_200() {
    let repo = Repo::start().await;
    let body = driver_bytes(300_000);
    repo.serve_driver("/b", &body);
    let sb = Sandbox::new();
    let (ok, _, err) = run(sb.loader(
        &[repo.url("/a"), repo.url("/b")],
        &["install", "--compile=false"],
    ))
    .await;
    assert!(ok, "{err}");
    assert_eq!(
        repo.hits(&Repo::driver_path("/a")).len(),
        1,
        "first repository tried"
    );
    assert_eq!(repo.hits(&Repo::driver_path("/b")).len(), 1);
    assert_installed(&sb.cached(), &body);
    assert_eq!(
        sb.cache_entries(),
        [FILE.to_owned(), format!("{FILE}.sha256")]
    );
    // The (dry-run) kernel commands: cleanup, then load of the installed file.
    let cached = sb.cached();
    assert!(err.contains("would run command=lsmod"), "{err}");
    assert!(
        err.contains(&format!("command=insmod {}", cached.display())),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried_until_success() {
    let repo = Repo::start().await;
    let body = driver_bytes(100_000);
    repo.serve_driver("/r", &body);
    let path = Repo::driver_path("/r");
    repo.route(
        &path,
        vec![
            Reply::Status(503),
            Reply::Status(500),
            Reply::Body(body.clone()),
        ],
    );
    let sb = Sandbox::new();
    let (ok, _, err) = run(sb.loader(&[repo.url("/r")], &["install", "--compile=false"])).await;
    assert!(ok, "{err}");
    assert_eq!(repo.hits(&path).len(), 3);
    assert_installed(&sb.cached(), &body);
    assert!(err.contains("HTTP 503"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_requests_waits_for_retry_after() {
    let repo = Repo::start().await;
    let body = driver_bytes(100_000);
    repo.serve_driver("/r", &body);
    let path = Repo::driver_path("/r");
    repo.route(&path, vec![Reply::TooMany(2), Reply::Body(body.clone())]);
    let sb = Sandbox::new();
    let (ok, _, err) = run(sb.loader(&[repo.url("/r")], &["install", "--compile=false"])).await;
    assert!(ok, "{err}");
    let hits = repo.hits(&path);
    assert_eq!(hits.len(), 2);
    let waited = hits[1] - hits[0];
    // The default backoff is 500 ms: only Retry-After explains a wait of 2 s.
    assert!(waited >= Duration::from_secs(2), "waited {waited:?}");
    assert_installed(&sb.cached(), &body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checksum_mismatch_is_refused_and_not_cached() {
    let repo = Repo::start().await;
    let body = driver_bytes(200_000);
    repo.serve_driver("/r", &body);
    let mut tampered = body.clone();
    tampered[1000] ^= 0xff;
    repo.route(&Repo::driver_path("/r"), vec![Reply::Body(tampered)]);
    let sb = Sandbox::new();
    let (ok, _, err) = run(sb.loader(&[repo.url("/r")], &["install", "--compile=false"])).await;
    assert!(!ok);
    assert!(err.contains("sha256 mismatch"), "{err}");
    assert!(!sb.cached().exists());
    assert!(sb.cache_entries().is_empty(), "{:?}", sb.cache_entries());
    // Nothing was loaded: no insmod (the fallback modprobe is the only load attempt).
    assert!(!err.contains("command=insmod"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_body_is_refused_and_not_cached() {
    let repo = Repo::start().await;
    let body = driver_bytes(2 * MIB);
    repo.serve_driver("/r", &body);
    let path = Repo::driver_path("/r");
    repo.route(&path, vec![Reply::Truncated(body.clone(), MIB)]);
    let sb = Sandbox::new();
    let (ok, _, err) = run(sb.loader(
        &[repo.url("/r")],
        &["install", "--compile=false", "--http-retries", "1"],
    ))
    .await;
    assert!(!ok);
    assert!(err.contains("truncated body"), "{err}");
    assert_eq!(repo.hits(&path).len(), 2, "one retry");
    assert!(!sb.cached().exists());
    assert!(sb.cache_entries().is_empty(), "{:?}", sb.cache_entries());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_during_download_leaves_nothing_and_the_rerun_installs() {
    let repo = Repo::start().await;
    let body = driver_bytes(8 * MIB);
    repo.serve_driver("/r", &body);
    let path = Repo::driver_path("/r");
    repo.route(
        &path,
        vec![
            Reply::Stall(body.clone(), 3 * MIB),
            Reply::Body(body.clone()),
        ],
    );
    let sb = Sandbox::new();
    let mut child = sb
        .loader(&[repo.url("/r")], &["install", "--compile=false"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until part of the body is on disk in the temporary file.
    let dir = sb.cache_dir();
    wait_for(
        "a partial download on disk",
        Duration::from_secs(30),
        || {
            repo.stalled()
                && std::fs::read_dir(&dir).is_ok_and(|rd| {
                    rd.flatten().any(|e| {
                        e.file_name().to_string_lossy().ends_with(".part")
                            && e.metadata().is_ok_and(|m| m.len() > 0)
                    })
                })
        },
    )
    .await;
    child.start_kill().unwrap(); // SIGKILL
    let status = child.wait().await.unwrap();
    assert!(!status.success());
    assert!(
        !sb.cached().exists(),
        "a partial file reached the final path"
    );
    assert!(
        sb.cache_entries().iter().all(|n| n.ends_with(".part")),
        "{:?}",
        sb.cache_entries()
    );

    let (ok, _, err) = run(sb.loader(&[repo.url("/r")], &["install", "--compile=false"])).await;
    assert!(ok, "{err}");
    assert_installed(&sb.cached(), &body);
    assert_eq!(
        sb.cache_entries(),
        [FILE.to_owned(), format!("{FILE}.sha256")],
        "the leftover was removed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_cache_is_downloaded_again_and_a_good_one_reused() {
    let repo = Repo::start().await;
    let body = driver_bytes(500_000);
    repo.serve_driver("/r", &body);
    let path = Repo::driver_path("/r");
    let sb = Sandbox::new();
    let (ok, _, err) = run(sb.loader(&[repo.url("/r")], &["install", "--compile=false"])).await;
    assert!(ok, "{err}");
    assert_eq!(repo.hits(&path).len(), 1);

    // An intact cache is reused without downloading.
    let (ok, _, err) = run(sb.loader(&[repo.url("/r")], &["install", "--compile=false"])).await;
    assert!(ok, "{err}");
    assert_eq!(repo.hits(&path).len(), 1, "cache reused");

    // Flip one byte: the rerun notices, discards and downloads again.
    let mut corrupted = body.clone();
    corrupted[12345] ^= 1;
    std::fs::write(sb.cached(), &corrupted).unwrap();
    let (ok, _, err) = run(sb.loader(&[repo.url("/r")], &["install", "--compile=false"])).await;
    assert!(ok, "{err}");
    assert!(err.contains("does not match its checksum record"), "{err}");
    assert_eq!(repo.hits(&path).len(), 2, "downloaded again");
    assert_installed(&sb.cached(), &body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_verified_refuses_a_driver_without_checksum() {
    let repo = Repo::start().await;
    let body = driver_bytes(50_000);
    let path = Repo::driver_path("/r");
    repo.route(&path, vec![Reply::Body(body.clone())]); // no .sha256, no index
    // A missing key on S3 without list permission is a 403: still "no checksum".
    repo.route(&format!("{path}.sha256"), vec![Reply::Status(403)]);
    let sb = Sandbox::new();
    let (ok, _, err) = run(sb.loader(
        &[repo.url("/r")],
        &["install", "--compile=false", "--require-verified"],
    ))
    .await;
    assert!(!ok);
    assert!(err.contains("--require-verified"), "{err}");
    assert!(err.contains("publishes no checksum"), "{err}");
    assert!(repo.hits(&path).is_empty(), "not even downloaded");
    assert!(!sb.cached().exists());
    assert!(
        !err.contains("command=modprobe"),
        "no unverifiable fallback: {err}"
    );

    // Without the flag the same driver is accepted (completeness checked only).
    let (ok, _, err) = run(sb.loader(&[repo.url("/r")], &["install", "--compile=false"])).await;
    assert!(ok, "{err}");
    assert_installed(&sb.cached(), &body);

    // And a cached unverified driver is not reused under --require-verified.
    let (ok, _, err) = run(sb.loader(
        &[repo.url("/r")],
        &["install", "--compile=false", "--require-verified"],
    ))
    .await;
    assert!(!ok, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_index_is_checked_with_the_trusted_key() {
    let repo = Repo::start().await;
    let body = driver_bytes(64_000);
    let path = Repo::driver_path("/r");
    repo.route(&path, vec![Reply::Body(body.clone())]);
    let key = index::signing_key_from_seed([9; 32]);
    let idx = index::DriverIndex::new(
        VERSION,
        "x86_64",
        vec![index::IndexEntry {
            file: FILE.into(),
            size: body.len() as u64,
            sha256: index::sha256_hex(&body),
            target: "ubuntu-aws".into(),
            kernelrelease: KR.into(),
            kernelversion: "26~22.04.1".into(),
        }],
    )
    .with_freshness(1, u64::MAX);
    let bytes = idx.to_bytes();
    let dir = format!("/r/{ESCAPED}/x86_64");
    repo.route(
        &format!("{dir}/index.json"),
        vec![Reply::Body(bytes.clone())],
    );
    repo.route(
        &format!("{dir}/index.json.sig"),
        vec![Reply::Body(index::sign(&bytes, &key).into_bytes())],
    );
    let sb = Sandbox::new();
    let key_file = sb.dir.path().join("trusted.pub");
    std::fs::write(&key_file, index::encode_public_key(&key.verifying_key())).unwrap();
    let key_arg = key_file.to_string_lossy().into_owned();
    let (ok, _, err) = run(sb.loader(
        &[repo.url("/r")],
        &[
            "install",
            "--compile=false",
            "--require-verified",
            "--trusted-key",
            &key_arg,
        ],
    ))
    .await;
    assert!(ok, "{err}");
    assert!(err.contains("signed index"), "{err}");
    assert_installed(&sb.cached(), &body);

    // An index signed by another key is refused, and the cache is not trusted either.
    let other = index::signing_key_from_seed([10; 32]);
    std::fs::write(&key_file, index::encode_public_key(&other.verifying_key())).unwrap();
    let (ok, _, err) = run(sb.loader(
        &[repo.url("/r")],
        &[
            "install",
            "--compile=false",
            "--require-verified",
            "--trusted-key",
            &key_arg,
        ],
    ))
    .await;
    assert!(!ok);
    assert!(err.contains("does not verify"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_request_has_a_timeout() {
    let repo = Repo::start().await;
    let body = driver_bytes(MIB);
    repo.serve_driver("/r", &body);
    let path = Repo::driver_path("/r");
    repo.route(&path, vec![Reply::Stall(body.clone(), 1000)]);
    let sb = Sandbox::new();
    let started = std::time::Instant::now();
    let (ok, _, err) = run(sb.loader(
        &[repo.url("/r")],
        &[
            "install",
            "--compile=false",
            "--http-timeout",
            "300ms",
            "--http-retries",
            "1",
        ],
    ))
    .await;
    assert!(!ok);
    assert_eq!(
        repo.hits(&path).len(),
        2,
        "timed out, retried once, timed out"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert!(!sb.cached().exists());
    assert!(sb.cache_entries().is_empty(), "{:?}", sb.cache_entries());
    assert!(err.contains("timed out"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_come_from_the_environment() {
    // The test server acts as the proxy: the repository host does not exist.
    let proxy = Repo::start().await;
    let body = driver_bytes(30_000);
    proxy.serve_driver("/r", &body);
    let sb = Sandbox::new();
    let mut cmd = sb.loader(
        &["http://falco-driver-repo.invalid/r".to_owned()],
        &["install", "--compile=false"],
    );
    cmd.env("HTTP_PROXY", &proxy.base);
    let (ok, _, err) = run(cmd).await;
    assert!(ok, "{err}");
    assert_eq!(proxy.hits(&Repo::driver_path("/r")).len(), 1);
    assert_installed(&sb.cached(), &body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_redirects_are_followed() {
    let repo = Repo::start().await;
    let body = driver_bytes(40_000);
    repo.serve_driver("/moved", &body);
    let from = Repo::driver_path("/r");
    let to = Repo::driver_path("/moved");
    repo.route(&from, vec![Reply::Redirect(to.clone())]);
    repo.route(
        &format!("{from}.sha256"),
        vec![Reply::Redirect(format!("{to}.sha256"))],
    );
    let sb = Sandbox::new();
    let (ok, _, err) = run(sb.loader(&[repo.url("/r")], &["install", "--compile=false"])).await;
    assert!(ok, "{err}");
    assert_eq!(repo.hits(&from).len(), 1);
    assert_eq!(repo.hits(&to).len(), 1);
    assert!(
        err.contains("sha256 file"),
        "verified through the redirect: {err}"
    );
    assert_installed(&sb.cached(), &body);
}
