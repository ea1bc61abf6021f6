//! Test harness: a real OCI registry (Debian's `docker-registry`) on loopback, fixtures pushed with
//! `oci-client`, and a small HTTP proxy that counts requests and can answer 429 first.
#![allow(dead_code)]

pub mod keyless;

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use oci_client::client::{
    Certificate, CertificateEncoding, ClientConfig, ClientProtocol, Config, ImageLayer,
};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use sha2::Digest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// Options of a test registry.
#[derive(Default)]
pub struct RegistryOptions {
    /// Require these basic credentials (bcrypt htpasswd).
    pub credentials: Option<(String, String)>,
    /// Serve HTTPS with a certificate from a generated CA.
    pub tls: bool,
}

/// A running `docker-registry`; killed and its directory removed on drop.
pub struct Registry {
    /// `127.0.0.1:<port>`.
    pub host: String,
    /// PEM of the CA that signed the server certificate, when TLS is on.
    pub ca_pem: Option<Vec<u8>>,
    /// Credentials required, if any.
    pub credentials: Option<(String, String)>,
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Registry {
    /// Starts a registry and waits until it accepts connections.
    pub fn start(options: RegistryOptions) -> Self {
        assert!(
            std::path::Path::new(REGISTRY_BIN).exists(),
            "{REGISTRY_BIN} missing: apt-get install docker-registry"
        );
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let host = format!("127.0.0.1:{port}");
        let mut config = format!(
            "version: 0.1\nlog: {{level: info}}\nstorage:\n  filesystem: {{rootdirectory: {}}}\n  delete: {{enabled: true}}\nhttp:\n  addr: {host}\n",
            dir.path().join("data").display()
        );
        let mut ca_pem = None;
        if options.tls {
            let (ca, cert, key) = tls_material();
            std::fs::write(dir.path().join("tls.crt"), cert).unwrap();
            std::fs::write(dir.path().join("tls.key"), key).unwrap();
            config.push_str(&format!(
                "  tls: {{certificate: {}, key: {}}}\n",
                dir.path().join("tls.crt").display(),
                dir.path().join("tls.key").display()
            ));
            ca_pem = Some(ca.into_bytes());
        }
        if let Some((user, pass)) = &options.credentials {
            let hash = bcrypt::hash(pass, 4).unwrap();
            std::fs::write(dir.path().join("htpasswd"), format!("{user}:{hash}\n")).unwrap();
            config.push_str(&format!(
                "auth:\n  htpasswd: {{realm: test, path: {}}}\n",
                dir.path().join("htpasswd").display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let log = dir.path().join("registry.log");
        let log_file = std::fs::File::create(&log).unwrap();
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .unwrap();
        let mut registry = Self {
            host,
            ca_pem,
            credentials: options.credentials,
            child,
            log,
            _dir: dir,
        };
        registry.wait_ready();
        registry
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if TcpStream::connect(&self.host).is_ok() {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "registry exited with {status}: {}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "registry did not listen on {} in time",
                self.host
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The registry's own log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn client(&self) -> Client {
        let (protocol, extra_root_certificates) = match &self.ca_pem {
            Some(pem) => (
                ClientProtocol::Https,
                vec![Certificate {
                    encoding: CertificateEncoding::Pem,
                    data: pem.clone(),
                }],
            ),
            None => (ClientProtocol::Http, vec![]),
        };
        Client::new(ClientConfig {
            protocol,
            extra_root_certificates,
            ..ClientConfig::default()
        })
    }

    /// Pushes an artifact with the given media types; returns the manifest digest.
    pub async fn push(
        &self,
        repo_tag: &str,
        config_media_type: &str,
        layer_media_type: &str,
        layer: Vec<u8>,
    ) -> String {
        let reference: Reference = format!("{}/{repo_tag}", self.host).parse().unwrap();
        let auth = match &self.credentials {
            Some((u, p)) => RegistryAuth::Basic(u.clone(), p.clone()),
            None => RegistryAuth::Anonymous,
        };
        let layers = [ImageLayer::new(layer, layer_media_type.to_owned(), None)];
        let config = Config::new(b"{}".to_vec(), config_media_type.to_owned(), None);
        let response = self
            .client()
            .push(&reference, &layers, config, &auth, None)
            .await
            .unwrap();
        let manifest_url = response.manifest_url;
        // The digest is the last path element of the manifest URL.
        let digest = self.manifest_digest(&reference, &auth).await;
        assert!(!manifest_url.is_empty());
        digest
    }

    /// Pushes `content` as a Falco rules artifact (one `falco_rules.yaml` in the layer);
    /// returns the manifest digest.
    pub async fn push_rules(&self, repo_tag: &str, content: &[u8]) -> String {
        self.push(
            repo_tag,
            falco_artifact_operator::oci::RULESFILE_CONFIG_MEDIA_TYPE,
            falco_artifact_operator::oci::RULESFILE_LAYER_MEDIA_TYPE,
            tar_gz("falco_rules.yaml", content),
        )
        .await
    }

    /// Pushes a cosign signature manifest for `digest` of `repo` (tag `sha256-<hex>.sig`):
    /// one simple-signing layer carrying `signature` (base64) in its annotation.
    pub async fn push_signature(
        &self,
        repo: &str,
        payload: Vec<u8>,
        signature: &str,
        digest: &str,
    ) {
        self.push_signature_with(repo, payload, signature, digest, &[])
            .await;
    }

    /// As [`Registry::push_signature`], with more layer annotations (a keyless signature's
    /// `dev.sigstore.cosign/certificate`, `…/chain` and `…/bundle`).
    pub async fn push_signature_with(
        &self,
        repo: &str,
        payload: Vec<u8>,
        signature: &str,
        digest: &str,
        extra: &[(&str, &str)],
    ) {
        let tag = format!("{}.sig", digest.replace(':', "-"));
        let reference: Reference = format!("{}/{repo}:{tag}", self.host).parse().unwrap();
        let auth = match &self.credentials {
            Some((u, p)) => RegistryAuth::Basic(u.clone(), p.clone()),
            None => RegistryAuth::Anonymous,
        };
        let mut annotations = std::collections::BTreeMap::from([(
            "dev.cosignproject.cosign/signature".to_owned(),
            signature.to_owned(),
        )]);
        annotations.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        // Blobs and manifest one by one: `Client::push` writes the manifest as OLPC canonical
        // JSON, with raw newlines inside strings, which the registry refuses for the PEM
        // annotations of keyless signatures; cosign writes plain JSON.
        let client = self.client();
        client
            .auth(&reference, &auth, oci_client::RegistryOperation::Push)
            .await
            .unwrap();
        let descriptor = |media_type: &str, data: &[u8]| {
            let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)));
            (
                serde_json::json!({"mediaType": media_type, "digest": digest, "size": data.len()}),
                digest,
            )
        };
        let (config, config_digest) = descriptor("application/vnd.oci.image.config.v1+json", b"{}");
        let (mut layer, layer_digest) =
            descriptor("application/vnd.dev.cosign.simplesigning.v1+json", &payload);
        layer["annotations"] = serde_json::json!(annotations);
        client
            .push_blob(&reference, b"{}".to_vec(), &config_digest)
            .await
            .unwrap();
        client
            .push_blob(&reference, payload, &layer_digest)
            .await
            .unwrap();
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config,
            "layers": [layer],
        });
        client
            .push_manifest_raw(
                &reference,
                serde_json::to_vec(&manifest).unwrap(),
                "application/vnd.oci.image.manifest.v1+json"
                    .parse()
                    .unwrap(),
            )
            .await
            .unwrap();
    }

    async fn manifest_digest(&self, reference: &Reference, auth: &RegistryAuth) -> String {
        self.client()
            .fetch_manifest_digest(reference, auth)
            .await
            .unwrap()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CA PEM, server certificate PEM (for 127.0.0.1 and localhost), server key PEM.
fn tls_material() -> (String, String, String) {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap())
        .unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &*ca).unwrap();
    (ca.as_ref().pem(), cert.pem(), key.serialize_pem())
}

/// A gzip tar holding one regular file.
pub fn tar_gz(name: &str, data: &[u8]) -> Vec<u8> {
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::default(),
    ));
    let mut header = tar::Header::new_gnu();
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    builder.append_data(&mut header, name, data).unwrap();
    builder.into_inner().unwrap().finish().unwrap()
}

/// A gzip tar whose single entry escapes with `..` (written with raw header bytes).
pub fn traversal_tar_gz() -> Vec<u8> {
    let mut header = tar::Header::new_old();
    let path = b"../../escaped.yaml";
    header.as_old_mut().name[..path.len()].copy_from_slice(path);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(0o644);
    header.set_size(2);
    header.set_cksum();
    let mut raw = header.as_bytes().to_vec();
    raw.extend_from_slice(b"x\n");
    raw.resize(512 * 2 + 1024, 0);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&raw).unwrap();
    gz.finish().unwrap()
}

/// One request seen by the proxy.
#[derive(Debug, Clone)]
pub struct Seen {
    /// HTTP method.
    pub method: String,
    /// Request path.
    pub path: String,
    /// Status answered.
    pub status: u16,
    /// The `Authorization` header sent, if any.
    pub authorization: Option<String>,
    /// When it was seen.
    pub at: Instant,
}

/// A loopback HTTP proxy in front of a registry: one request per connection, logs requests and
/// answers the first `fail_first` API requests (not the `/v2/` ping) itself with 429 and `Retry-After`.
pub struct Proxy {
    /// `127.0.0.1:<port>`.
    pub host: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Starts a proxy to `upstream`.
    pub async fn start(upstream: &str, fail_first: usize, retry_after_secs: u64) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let upstream: SocketAddr = upstream.parse().unwrap();
        let failures = Arc::new(Mutex::new(fail_first));
        let log = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((conn, _)) = listener.accept().await else {
                    return;
                };
                let log = log.clone();
                let failures = failures.clone();
                tokio::spawn(async move {
                    let _ = serve(conn, upstream, log, failures, retry_after_secs).await;
                });
            }
        });
        Self { host, seen, task }
    }

    /// Requests seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    mut conn: tokio::net::TcpStream,
    upstream: SocketAddr,
    log: Arc<Mutex<Vec<Seen>>>,
    failures: Arc<Mutex<usize>>,
    retry_after: u64,
) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if conn.read(&mut byte).await? == 0 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_owned();
    let mut parts = request_line.split(' ');
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();
    let authorization = text.split("\r\n").find_map(|l| {
        l.split_once(':')
            .filter(|(k, _)| k.eq_ignore_ascii_case("authorization"))
            .map(|(_, v)| v.trim().to_owned())
    });
    // oci-client's `GET /v2/` ping swallows errors, so only real API requests are failed.
    let fail = path != "/v2/" && {
        let mut left = failures.lock().unwrap();
        let fail = *left > 0;
        *left = left.saturating_sub(1);
        fail
    };
    if fail {
        log.lock().unwrap().push(Seen {
            method,
            path,
            status: 429,
            authorization,
            at: Instant::now(),
        });
        let answer = format!(
            "HTTP/1.1 429 Too Many Requests\r\nRetry-After: {retry_after}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        conn.write_all(answer.as_bytes()).await?;
        return conn.shutdown().await;
    }
    // Forward with `Connection: close` so that the registry ends the response with EOF.
    let mut forwarded = format!("{request_line}\r\n");
    for line in lines.filter(|l| !l.is_empty()) {
        if !line.to_ascii_lowercase().starts_with("connection:") {
            forwarded.push_str(line);
            forwarded.push_str("\r\n");
        }
    }
    forwarded.push_str("Connection: close\r\n\r\n");
    let mut up = tokio::net::TcpStream::connect(upstream).await?;
    up.write_all(forwarded.as_bytes()).await?;
    let mut response = Vec::new();
    up.read_to_end(&mut response).await?;
    let status = String::from_utf8_lossy(&response[..response.len().min(12)])
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    log.lock().unwrap().push(Seen {
        method,
        path,
        status,
        authorization,
        at: Instant::now(),
    });
    conn.write_all(&response).await?;
    conn.shutdown().await
}
