//! Pulls from a real OCI registry (Debian's `docker-registry`) on loopback.

mod support;

use std::time::Duration;

use falco_artifact_operator::Error;
use falco_artifact_operator::oci::{
    ArtifactType, Auth, PLUGIN_CONFIG_MEDIA_TYPE, PLUGIN_LAYER_MEDIA_TYPE, PullOutcome, Puller,
    RULESFILE_CONFIG_MEDIA_TYPE, RULESFILE_LAYER_MEDIA_TYPE, RegistryConfig, RetryPolicy,
};
use falco_artifact_operator::store::{ArtifactKey, Dirs, Kind, Medium, Store};
use support::{Proxy, Registry, RegistryOptions, tar_gz, traversal_tar_gz};

fn plain_puller(hosts: &[&str]) -> Puller {
    Puller::new(RegistryConfig {
        insecure_registries: hosts.iter().map(|h| (*h).to_owned()).collect(),
        retry: RetryPolicy {
            attempts: 3,
            base_delay: Duration::from_millis(50),
            max_delay: Duration::from_secs(5),
            max_retry_after: Duration::from_secs(5),
        },
        ..RegistryConfig::default()
    })
    .unwrap()
}

fn pulled(outcome: PullOutcome) -> falco_artifact_operator::oci::PulledArtifact {
    match outcome {
        PullOutcome::Pulled(p) => p,
        PullOutcome::Unchanged { digest } => panic!("expected a download, got unchanged {digest}"),
    }
}

fn store_in(root: &std::path::Path) -> Store {
    Store::open(Dirs {
        rules: root.join("rules.d"),
        config: root.join("config.d"),
        plugins: root.join("plugins"),
        state: root.join("state"),
    })
    .unwrap()
}

#[tokio::test]
async fn pull_by_tag_then_unchanged_costs_one_manifest_request() {
    let registry = Registry::start(RegistryOptions::default());
    let d1 = registry.push_rules("falco/rules:1", b"- rule: one\n").await;
    let proxy = Proxy::start(&registry.host, 0, 0).await;
    let puller = plain_puller(&[&proxy.host]);
    let reference = format!("{}/falco/rules:1", proxy.host);

    let first = pulled(
        puller
            .pull(&reference, ArtifactType::Rulesfile, None)
            .await
            .unwrap(),
    );
    assert_eq!(first.digest, d1);
    assert_eq!(first.file.data, b"- rule: one\n");
    let tmp = tempfile::tempdir().unwrap();
    let mut store = store_in(tmp.path());
    let key = ArtifactKey::new(Kind::Rulesfile, "rules", Medium::Oci);
    store
        .put(
            &key,
            50,
            &first.file.data,
            first.file.mode,
            Some(&first.digest),
        )
        .unwrap();
    assert!(
        proxy.seen().iter().any(|s| s.path.contains("/blobs/")),
        "{:?}",
        proxy.seen()
    );

    let before = proxy.seen().len();
    let again = puller
        .pull(
            &reference,
            ArtifactType::Rulesfile,
            store.installed_digest(&key),
        )
        .await
        .unwrap();
    assert!(
        matches!(again, PullOutcome::Unchanged { ref digest } if *digest == d1),
        "{again:?}"
    );
    let after: Vec<_> = proxy.seen().into_iter().skip(before).collect();
    // oci-client pings `/v2/` before calls to a registry that sends no auth challenge; that ping
    // is not a manifest request and carries no data.
    let (pings, api): (Vec<_>, Vec<_>) = after.iter().partition(|s| s.path == "/v2/");
    assert!(pings.len() <= 1, "{after:?}");
    let after = api;
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(after[0].method, "HEAD");
    assert!(after[0].path.contains("/manifests/"), "{after:?}");

    // The tag moves: the next pull notices and downloads the new content.
    let d2 = registry.push_rules("falco/rules:1", b"- rule: two\n").await;
    assert_ne!(d1, d2);
    let second = pulled(
        puller
            .pull(&reference, ArtifactType::Rulesfile, Some(&d1))
            .await
            .unwrap(),
    );
    assert_eq!(second.digest, d2);
    assert_eq!(second.file.data, b"- rule: two\n");
}

#[tokio::test]
async fn pull_pinned_by_digest() {
    let registry = Registry::start(RegistryOptions::default());
    let d1 = registry.push_rules("falco/rules:1", b"- rule: one\n").await;
    registry.push_rules("falco/rules:1", b"- rule: two\n").await;
    let puller = plain_puller(&[&registry.host]);
    let reference = format!("{}/falco/rules@{d1}", registry.host);
    let got = pulled(
        puller
            .pull(&reference, ArtifactType::Rulesfile, None)
            .await
            .unwrap(),
    );
    assert_eq!(got.digest, d1);
    assert_eq!(got.file.data, b"- rule: one\n");
    // Installed already: no request at all is needed.
    let again = puller
        .pull(&reference, ArtifactType::Rulesfile, Some(&d1))
        .await
        .unwrap();
    assert!(matches!(again, PullOutcome::Unchanged { .. }));
}

#[tokio::test]
async fn wrong_media_type_is_refused() {
    let registry = Registry::start(RegistryOptions::default());
    registry
        .push(
            "falco/plugin:1",
            PLUGIN_CONFIG_MEDIA_TYPE,
            PLUGIN_LAYER_MEDIA_TYPE,
            tar_gz("libjson.so", b"\x7fELF"),
        )
        .await;
    registry
        .push(
            "falco/odd:1",
            RULESFILE_CONFIG_MEDIA_TYPE,
            "application/vnd.oci.image.layer.v1.tar+gzip",
            tar_gz("r.yaml", b"x"),
        )
        .await;
    let puller = plain_puller(&[&registry.host]);
    let err = puller
        .pull(
            &format!("{}/falco/plugin:1", registry.host),
            ArtifactType::Rulesfile,
            None,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::WrongMediaType { what: "config", .. }),
        "{err}"
    );
    assert!(err.to_string().contains(PLUGIN_CONFIG_MEDIA_TYPE), "{err}");
    let err = puller
        .pull(
            &format!("{}/falco/odd:1", registry.host),
            ArtifactType::Rulesfile,
            None,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::WrongMediaType { what: "layer", .. }),
        "{err}"
    );
    // The right type for the right kind works.
    let ok = pulled(
        puller
            .pull(
                &format!("{}/falco/plugin:1", registry.host),
                ArtifactType::Plugin,
                None,
            )
            .await
            .unwrap(),
    );
    assert_eq!(ok.file.data, b"\x7fELF");
}

#[tokio::test]
async fn auth_failure_is_reported_and_basic_auth_works() {
    let registry = Registry::start(RegistryOptions {
        credentials: Some(("falco".into(), "s3cret".into())),
        tls: false,
    });
    registry.push_rules("falco/rules:1", b"- rule: one\n").await;
    let reference = format!("{}/falco/rules:1", registry.host);
    let with = |auth| {
        Puller::new(RegistryConfig {
            auth,
            insecure_registries: vec![registry.host.clone()],
            ..RegistryConfig::default()
        })
        .unwrap()
    };
    let err = with(Auth::Anonymous)
        .pull(&reference, ArtifactType::Rulesfile, None)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Auth { .. }), "{err:?}");
    let err = with(Auth::Basic {
        username: "falco".into(),
        password: "wrong".into(),
    })
    .pull(&reference, ArtifactType::Rulesfile, None)
    .await
    .unwrap_err();
    assert!(matches!(err, Error::Auth { .. }), "{err:?}");
    assert!(err.to_string().contains("authentication failed"), "{err}");
    let ok = with(Auth::Basic {
        username: "falco".into(),
        password: "s3cret".into(),
    })
    .pull(&reference, ArtifactType::Rulesfile, None)
    .await
    .unwrap();
    assert_eq!(pulled(ok).file.data, b"- rule: one\n");
}

#[tokio::test]
async fn tls_with_custom_ca() {
    let registry = Registry::start(RegistryOptions {
        credentials: None,
        tls: true,
    });
    registry.push_rules("falco/rules:1", b"- rule: tls\n").await;
    let reference = format!("{}/falco/rules:1", registry.host);
    let trusted = Puller::new(RegistryConfig {
        ca_pem: registry.ca_pem.clone(),
        ..RegistryConfig::default()
    })
    .unwrap();
    let got = pulled(
        trusted
            .pull(&reference, ArtifactType::Rulesfile, None)
            .await
            .unwrap(),
    );
    assert_eq!(got.file.data, b"- rule: tls\n");
    // Without the CA the certificate is not trusted.
    let untrusted = Puller::new(RegistryConfig {
        retry: RetryPolicy {
            attempts: 1,
            ..RetryPolicy::default()
        },
        ..RegistryConfig::default()
    })
    .unwrap();
    let err = untrusted
        .pull(&reference, ArtifactType::Rulesfile, None)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Tls { .. }), "{err:?}");
    assert_eq!(err.reason(), "TLSVerificationFailed");
}

#[tokio::test]
async fn traversal_archive_is_refused_and_nothing_written() {
    let registry = Registry::start(RegistryOptions::default());
    registry
        .push(
            "falco/evil:1",
            RULESFILE_CONFIG_MEDIA_TYPE,
            RULESFILE_LAYER_MEDIA_TYPE,
            traversal_tar_gz(),
        )
        .await;
    let tmp = tempfile::tempdir().unwrap();
    let store = store_in(tmp.path());
    let puller = plain_puller(&[&registry.host]);
    let err = puller
        .pull(
            &format!("{}/falco/evil:1", registry.host),
            ArtifactType::Rulesfile,
            None,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Archive(ref m) if m.contains("path traversal")),
        "{err}"
    );
    // Nothing but the (empty) staging directory.
    let rules = &store.dirs().rules;
    let names: Vec<_> = std::fs::read_dir(rules)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, [falco_artifact_operator::store::TEMP_DIR]);
    let staging = falco_artifact_operator::store::staging_dir(rules);
    assert_eq!(std::fs::read_dir(staging).unwrap().count(), 0);
    assert!(!tmp.path().join("escaped.yaml").exists());
}

#[tokio::test]
async fn too_many_requests_then_success_honours_retry_after() {
    let registry = Registry::start(RegistryOptions::default());
    registry.push_rules("falco/rules:1", b"- rule: one\n").await;
    // oci-client falls back from a failed manifest HEAD to a GET by itself, and the puller
    // then asks once more to read `Retry-After`: all three answer 429 with `Retry-After: 1`.
    let proxy = Proxy::start(&registry.host, 3, 1).await;
    let puller = plain_puller(&[&proxy.host]);
    let got = pulled(
        puller
            .pull(
                &format!("{}/falco/rules:1", proxy.host),
                ArtifactType::Rulesfile,
                None,
            )
            .await
            .unwrap(),
    );
    assert_eq!(got.file.data, b"- rule: one\n");
    let seen: Vec<_> = proxy
        .seen()
        .into_iter()
        .filter(|s| s.path != "/v2/")
        .collect();
    assert_eq!(
        (seen[0].status, seen[1].status, seen[2].status),
        (429, 429, 429),
        "{seen:?}"
    );
    assert!(seen[3..].iter().all(|s| s.status == 200), "{seen:?}");
    assert_eq!(
        (seen[3].method.as_str(), &seen[3].path),
        ("HEAD", &seen[0].path),
        "the same request is retried: {seen:?}"
    );
    // The backoff alone would wait about 50 ms; the registry asked for a second.
    assert!(
        seen[3].at.duration_since(seen[2].at) >= Duration::from_millis(950),
        "Retry-After not honoured: {seen:?}"
    );
}

#[tokio::test]
async fn a_long_retry_after_ends_the_pull_and_is_reported() {
    let registry = Registry::start(RegistryOptions::default());
    registry.push_rules("falco/rules:1", b"- rule: one\n").await;
    let proxy = Proxy::start(&registry.host, 100, 3600).await;
    let puller = plain_puller(&[&proxy.host]);
    let err = puller
        .pull(
            &format!("{}/falco/rules:1", proxy.host),
            ArtifactType::Rulesfile,
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(
        err.retry_after(),
        Some(Duration::from_secs(3600)),
        "{err:?}"
    );
    assert_eq!(err.reason(), "RegistryUnavailable");
}
