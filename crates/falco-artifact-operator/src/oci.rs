//! Pulling Falco rulesfile and plugin artifacts from OCI registries with `oci-client`.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::{
    OCI_IMAGE_INDEX_MEDIA_TYPE, OCI_IMAGE_MEDIA_TYPE, OciDescriptor, OciImageManifest, OciManifest,
};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use crate::archive::{self, ExtractedFile};
use crate::{Error, Result};

/// Config media type of a Falco rulesfile artifact.
pub const RULESFILE_CONFIG_MEDIA_TYPE: &str = "application/vnd.cncf.falco.rulesfile.config.v1+json";
/// Layer media type of a Falco rulesfile artifact.
pub const RULESFILE_LAYER_MEDIA_TYPE: &str = "application/vnd.cncf.falco.rulesfile.layer.v1+tar.gz";
/// Config media type of a Falco plugin artifact.
pub const PLUGIN_CONFIG_MEDIA_TYPE: &str = "application/vnd.cncf.falco.plugin.config.v1+json";
/// Layer media type of a Falco plugin artifact.
pub const PLUGIN_LAYER_MEDIA_TYPE: &str = "application/vnd.cncf.falco.plugin.layer.v1+tar.gz";
/// User agent sent to registries.
pub const USER_AGENT: &str = "falco-artifact-operator";
/// Layer media type of a cosign simple-signing payload.
pub const COSIGN_PAYLOAD_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// Layer annotation holding the base64 signature of the payload.
pub const COSIGN_SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// Layer annotation of a keyless signature: the signing certificate, PEM.
pub const COSIGN_CERTIFICATE_ANNOTATION: &str = "dev.sigstore.cosign/certificate";
/// Layer annotation of a keyless signature: the certificate's issuing chain, PEM.
pub const COSIGN_CHAIN_ANNOTATION: &str = "dev.sigstore.cosign/chain";
/// Layer annotation of a keyless signature: the transparency-log (Rekor) bundle, JSON.
pub const COSIGN_BUNDLE_ANNOTATION: &str = "dev.sigstore.cosign/bundle";
/// Largest signature payload accepted, in bytes.
const MAX_SIGNATURE_PAYLOAD_BYTES: u64 = 64 * 1024;

/// The kind of Falco artifact a CR expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArtifactType {
    /// A rules file (`Rulesfile` CR).
    Rulesfile,
    /// A plugin shared object (`Plugin` CR).
    Plugin,
}

impl ArtifactType {
    /// The config media type required for this kind.
    pub fn config_media_type(self) -> &'static str {
        match self {
            Self::Rulesfile => RULESFILE_CONFIG_MEDIA_TYPE,
            Self::Plugin => PLUGIN_CONFIG_MEDIA_TYPE,
        }
    }

    /// The layer media type required for this kind.
    pub fn layer_media_type(self) -> &'static str {
        match self {
            Self::Rulesfile => RULESFILE_LAYER_MEDIA_TYPE,
            Self::Plugin => PLUGIN_LAYER_MEDIA_TYPE,
        }
    }
}

/// Credentials for a registry.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub enum Auth {
    /// No credentials.
    #[default]
    Anonymous,
    /// HTTP basic credentials (also used for the registry's token exchange).
    Basic {
        /// User name.
        username: String,
        /// Password.
        password: String,
    },
    /// A bearer token sent as is.
    Bearer(String),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Anonymous => f.write_str("Anonymous"),
            Self::Basic { username, .. } => write!(f, "Basic({username}, ***)"),
            Self::Bearer(_) => f.write_str("Bearer(***)"),
        }
    }
}

impl Auth {
    fn to_registry_auth(&self) -> RegistryAuth {
        match self {
            Self::Anonymous => RegistryAuth::Anonymous,
            Self::Basic { username, password } => {
                RegistryAuth::Basic(username.clone(), password.clone())
            }
            Self::Bearer(token) => RegistryAuth::Bearer(token.clone()),
        }
    }
}

/// Retry policy for transient registry answers (429, 5xx, connection errors).
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts in total, the first one included.
    pub attempts: u32,
    /// Delay before the first retry; doubled on each further one, with ±50 % jitter.
    pub base_delay: Duration,
    /// Upper bound of one delay.
    pub max_delay: Duration,
    /// Longest `Retry-After` waited for inside one pull; a longer one ends the pull with
    /// [`Error::Unavailable`] carrying it, so the caller can come back later without blocking.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 5,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

/// Size limits for pulled content.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest manifest accepted, in bytes.
    pub max_manifest_bytes: u64,
    /// Largest (compressed) layer accepted, in bytes.
    pub max_layer_bytes: u64,
    /// Limits applied while extracting the layer.
    pub archive: archive::Limits,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_manifest_bytes: 4 * 1024 * 1024,
            max_layer_bytes: 64 * 1024 * 1024,
            archive: archive::Limits::default(),
        }
    }
}

/// How to reach one registry.
#[derive(Debug, Clone, Default)]
pub struct RegistryConfig {
    /// Credentials.
    pub auth: Auth,
    /// PEM bundle of extra CA certificates to trust.
    pub ca_pem: Option<Vec<u8>>,
    /// Registries (`host:port`) reached over plain HTTP; every other registry uses HTTPS.
    pub insecure_registries: Vec<String>,
    /// Accept any TLS certificate (the CR's `tls.insecureSkipVerify`); never the default.
    pub accept_invalid_certificates: bool,
    /// Size limits.
    pub limits: Limits,
    /// Retries on transient failures.
    pub retry: RetryPolicy,
}

/// An artifact that was downloaded and validated, ready for the store.
#[derive(Debug, Clone)]
pub struct PulledArtifact {
    /// The manifest digest the reference resolved to (the index digest for an index).
    pub digest: String,
    /// The single file of the layer.
    pub file: ExtractedFile,
}

/// The result of [`Puller::pull`].
#[derive(Debug, Clone)]
pub enum PullOutcome {
    /// The registry still serves the installed digest; nothing was downloaded.
    Unchanged {
        /// The installed digest.
        digest: String,
    },
    /// A new version was downloaded.
    Pulled(PulledArtifact),
}

/// One signature found next to an artifact: the simple-signing payload, its signature and,
/// for a keyless signature, the certificate material from the layer's annotations.
#[derive(Debug, Clone, Default)]
pub struct SignatureLayer {
    /// The payload bytes, exactly as signed.
    pub payload: Vec<u8>,
    /// The base64 signature from the layer annotation.
    pub signature: String,
    /// The signing certificate, PEM ([`COSIGN_CERTIFICATE_ANNOTATION`]).
    pub certificate: Option<String>,
    /// Intermediate and root certificates, PEM ([`COSIGN_CHAIN_ANNOTATION`]).
    pub chain: Option<String>,
    /// The Rekor bundle, JSON ([`COSIGN_BUNDLE_ANNOTATION`]).
    pub bundle: Option<String>,
}

/// Pulls Falco artifacts.
pub struct Puller {
    client: Client,
    /// A plain HTTP client for what `oci-client` does not expose: the `Retry-After` header.
    /// Built on first use (a throttled answer): loading the system's TLS roots costs tens of
    /// milliseconds that an unthrottled pull should not pay.
    probe: std::sync::OnceLock<Option<reqwest::Client>>,
    config: RegistryConfig,
}

impl std::fmt::Debug for Puller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Puller")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Tells apart the failures worth retrying.
fn is_transient(e: &OciDistributionError) -> bool {
    match e {
        OciDistributionError::ServerError { code, .. } => {
            matches!(code, 429 | 500 | 502 | 503 | 504)
        }
        OciDistributionError::RegistryError { envelope, .. } => envelope
            .errors
            .iter()
            .any(|e| e.code == OciErrorCode::Toomanyrequests),
        OciDistributionError::RequestError(e) => {
            (e.is_connect() || e.is_timeout() || e.is_request()) && !is_tls_refusal(e)
        }
        _ => false,
    }
}

/// Whether a request failed because the server's certificate was not trusted: not transient.
fn is_tls_refusal(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(e);
    while let Some(err) = current {
        let text = err.to_string().to_ascii_lowercase();
        if text.contains("certificate") || text.contains("unknownissuer") {
            return true;
        }
        current = err.source();
    }
    false
}

/// The URL of a rate-limited (429) or unavailable (503) answer, where `Retry-After` may be read.
fn throttled_url(e: &OciDistributionError) -> Option<&str> {
    match e {
        OciDistributionError::ServerError {
            code: 429 | 503,
            url,
            ..
        } => Some(url),
        OciDistributionError::RegistryError { url, .. } if is_transient(e) => Some(url),
        _ => None,
    }
}

/// Parses a `Retry-After` value: delta-seconds or an HTTP date.
pub fn parse_retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

fn classify(reference: &str, e: OciDistributionError) -> Error {
    let text = e.to_string();
    let reference = reference.to_owned();
    match &e {
        OciDistributionError::RequestError(re) if is_tls_refusal(re) => Error::Tls {
            reference,
            detail: {
                let mut chain = Vec::new();
                let mut current: Option<&(dyn std::error::Error + 'static)> = Some(re);
                while let Some(err) = current {
                    chain.push(err.to_string());
                    current = err.source();
                }
                chain.join(": ")
            },
        },
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_) => Error::Auth {
            reference,
            detail: text,
        },
        OciDistributionError::ServerError {
            code: 401 | 403, ..
        } => Error::Auth {
            reference,
            detail: text,
        },
        OciDistributionError::ServerError { code: 404, .. }
        | OciDistributionError::ImageManifestNotFoundError(_) => Error::NotFound {
            reference,
            detail: text,
        },
        OciDistributionError::RegistryError { envelope, .. }
            if envelope
                .errors
                .iter()
                .any(|c| matches!(c.code, OciErrorCode::Unauthorized | OciErrorCode::Denied)) =>
        {
            Error::Auth {
                reference,
                detail: text,
            }
        }
        OciDistributionError::RegistryError { envelope, .. }
            if envelope.errors.iter().any(|c| {
                matches!(
                    c.code,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::BlobUnknown
                        | OciErrorCode::NotFound
                )
            }) =>
        {
            Error::NotFound {
                reference,
                detail: text,
            }
        }
        _ if is_transient(&e) => Error::Unavailable {
            reference,
            detail: text,
            retry_after: None,
        },
        _ => Error::Registry {
            reference,
            source: e,
        },
    }
}

/// Jitter in [0.5, 1.5) without a random number generator dependency.
fn jitter() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    0.5 + f64::from(nanos % 1000) / 1000.0
}

/// Where distributions keep their trust store as one PEM bundle (Debian, Ubuntu, Alpine and
/// distroless; RHEL and Fedora).
const SYSTEM_CA_BUNDLES: [&str; 2] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
];

/// The certificates (DER) of the system trust store's PEM bundle: `SSL_CERT_FILE`, or the
/// distribution's bundle. `None` when `SSL_CERT_DIR` is set (the TLS library then loads that
/// directory and the file). Decoded here because the TLS library's PEM reader uses a
/// constant-time base64 decoder, right for keys and slow for 150 public certificates.
fn system_ca_bundle() -> Option<Vec<Vec<u8>>> {
    if std::env::var_os("SSL_CERT_DIR").is_some() {
        return None;
    }
    let pem = match std::env::var_os("SSL_CERT_FILE") {
        Some(file) => std::fs::read_to_string(file).ok()?,
        None => SYSTEM_CA_BUNDLES
            .iter()
            .find_map(|path| std::fs::read_to_string(path).ok())?,
    };
    let certs = pem_certificates(&pem)?;
    (!certs.is_empty()).then_some(certs)
}

/// The DER bytes of every `CERTIFICATE` block of `pem`; `None` when one does not decode.
fn pem_certificates(pem: &str) -> Option<Vec<Vec<u8>>> {
    use base64::Engine as _;
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut certs = Vec::new();
    let mut rest = pem;
    while let Some(start) = rest.find(BEGIN) {
        let body = &rest[start + BEGIN.len()..];
        let end = body.find(END)?;
        let b64: String = body[..end].split_ascii_whitespace().collect();
        certs.push(base64::engine::general_purpose::STANDARD.decode(b64).ok()?);
        rest = &body[end + END.len()..];
    }
    Some(certs)
}

impl Puller {
    /// A puller for registries configured by `config`.
    pub fn new(config: RegistryConfig) -> Result<Self> {
        let mut extra_root_certificates = Vec::new();
        if let Some(pem) = &config.ca_pem {
            if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
                return Err(Error::ClientConfig(
                    "the CA bundle holds no PEM certificate".into(),
                ));
            }
            extra_root_certificates.push(Certificate {
                encoding: CertificateEncoding::Pem,
                data: pem.clone(),
            });
        }
        let protocol = if config.insecure_registries.is_empty() {
            ClientProtocol::Https
        } else {
            ClientProtocol::HttpsExcept(config.insecure_registries.clone())
        };
        let client_config = |tls_certs_only: Vec<Certificate>| ClientConfig {
            protocol: protocol.clone(),
            accept_invalid_certificates: config.accept_invalid_certificates,
            tls_certs_only,
            extra_root_certificates: extra_root_certificates.clone(),
            user_agent: USER_AGENT,
            connect_timeout: Some(Duration::from_secs(10)),
            read_timeout: Some(Duration::from_secs(60)),
            max_concurrent_download: 1,
            ..ClientConfig::default()
        };
        // The system bundle when there is one (one file read); otherwise, or when a
        // certificate in it is refused, the TLS library's own loading (every file of the
        // certificate directory, about 9 ms at each process start).
        let bundled = system_ca_bundle().and_then(|ders| {
            let certs = ders
                .into_iter()
                .map(|data| Certificate {
                    encoding: CertificateEncoding::Der,
                    data,
                })
                .collect();
            Client::try_from(client_config(certs))
                .inspect_err(|e| {
                    tracing::debug!(error = %e, "the system CA bundle was refused; loading the trust store")
                })
                .ok()
        });
        let client = match bundled {
            Some(client) => client,
            None => Client::try_from(client_config(Vec::new()))
                .map_err(|e| Error::ClientConfig(format!("the registry client: {e}")))?,
        };
        Ok(Self {
            client,
            probe: std::sync::OnceLock::new(),
            config,
        })
    }

    fn probe_client(&self) -> Option<&reqwest::Client> {
        self.probe
            .get_or_init(|| {
                let mut builder = reqwest::Client::builder()
                    .user_agent(USER_AGENT)
                    .connect_timeout(Duration::from_secs(10))
                    .timeout(Duration::from_secs(30))
                    .danger_accept_invalid_certs(self.config.accept_invalid_certificates);
                if let Some(pem) = &self.config.ca_pem {
                    builder =
                        builder.tls_certs_merge(reqwest::Certificate::from_pem_bundle(pem).ok()?);
                }
                builder.build().ok()
            })
            .as_ref()
    }

    /// Reads `Retry-After` for a throttled answer. `oci-client` does not expose response
    /// headers, so the same URL is asked once more with a `HEAD` carrying the same credentials;
    /// a registry that is still throttling answers it with the header. Returns `None` when the
    /// probe is not throttled or carries no usable header (plain backoff applies then).
    async fn retry_after(&self, e: &OciDistributionError) -> Option<Duration> {
        let url = throttled_url(e)?;
        let mut request = self.probe_client()?.head(url);
        request = match &self.config.auth {
            Auth::Anonymous => request,
            Auth::Basic { username, password } => request.basic_auth(username, Some(password)),
            Auth::Bearer(token) => request.bearer_auth(token),
        };
        let response = request.send().await.ok()?;
        if !matches!(response.status().as_u16(), 429 | 503) {
            return None;
        }
        let value = response.headers().get(reqwest::header::RETRY_AFTER)?;
        parse_retry_after(value.to_str().ok()?, std::time::SystemTime::now())
    }

    async fn retry<T, F, Fut>(&self, reference: &str, mut call: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = std::result::Result<T, OciDistributionError>>,
    {
        let policy = self.config.retry;
        let mut delay = policy.base_delay;
        let mut attempt = 1;
        loop {
            match call().await {
                Ok(v) => return Ok(v),
                Err(e) if attempt < policy.attempts && is_transient(&e) => {
                    let mut wait = delay.mul_f64(jitter()).min(policy.max_delay);
                    if let Some(asked) = self.retry_after(&e).await {
                        if asked > policy.max_retry_after {
                            return Err(Error::Unavailable {
                                reference: reference.to_owned(),
                                detail: e.to_string(),
                                retry_after: Some(asked),
                            });
                        }
                        wait = wait.max(asked);
                    }
                    tracing::warn!(%reference, attempt, error = %e, ?wait, "transient registry failure, retrying");
                    tokio::time::sleep(wait).await;
                    delay = (delay * 2).min(policy.max_delay);
                    attempt += 1;
                }
                Err(e) => return Err(classify(reference, e)),
            }
        }
    }

    /// Pulls `reference` (`registry/repo:tag` or `registry/repo@sha256:…`) as an artifact of
    /// type `kind`.
    ///
    /// When `installed_digest` is what the registry serves, this costs one manifest `HEAD`
    /// (none for a digest-pinned reference) and downloads nothing.
    pub async fn pull(
        &self,
        reference: &str,
        kind: ArtifactType,
        installed_digest: Option<&str>,
    ) -> Result<PullOutcome> {
        let parsed = parse_reference(reference)?;
        let auth = self.config.auth.to_registry_auth();
        let digest = match parsed.digest() {
            Some(pinned) => pinned.to_owned(),
            None => {
                self.retry(reference, || {
                    self.client.fetch_manifest_digest(&parsed, &auth)
                })
                .await?
            }
        };
        if installed_digest == Some(digest.as_str()) {
            return Ok(PullOutcome::Unchanged { digest });
        }
        // Everything below is addressed by digest, so a tag moving meanwhile cannot mix versions.
        let pinned = parsed.clone_with_digest(digest.clone());
        let manifest = self.image_manifest(reference, &pinned, &auth).await?;
        check_media_type(
            reference,
            "config",
            &manifest.config.media_type,
            kind.config_media_type(),
        )?;
        let layer = manifest
            .layers
            .first()
            .ok_or_else(|| Error::Archive("the manifest has no layers".into()))?;
        check_media_type(
            reference,
            "layer",
            &layer.media_type,
            kind.layer_media_type(),
        )?;
        let blob = self.blob(reference, &pinned, layer).await?;
        let mut files = archive::extract_tar_gz(&blob, &self.config.limits.archive)?;
        let file = files.swap_remove(0);
        Ok(PullOutcome::Pulled(PulledArtifact { digest, file }))
    }

    /// The cosign signatures stored for `digest` of `reference`'s repository, at the tag
    /// `sha256-<hex>.sig`. [`Error::SignatureMissing`] when there is none.
    pub async fn signatures(&self, reference: &str, digest: &str) -> Result<Vec<SignatureLayer>> {
        let parsed = parse_reference(reference)?;
        let tag = format!("{}.sig", digest.replace(':', "-"));
        let sig_ref = Reference::with_tag(
            parsed.registry().to_owned(),
            parsed.repository().to_owned(),
            tag.clone(),
        );
        let auth = self.config.auth.to_registry_auth();
        let missing = |detail: String| Error::SignatureMissing {
            reference: reference.to_owned(),
            detail,
        };
        let manifest = match self.image_manifest(reference, &sig_ref, &auth).await {
            Ok(m) => m,
            Err(Error::NotFound { .. }) => {
                return Err(missing(format!("no signature manifest at tag {tag}")));
            }
            Err(e) => return Err(e),
        };
        let mut found = Vec::new();
        for layer in &manifest.layers {
            if layer.media_type != COSIGN_PAYLOAD_MEDIA_TYPE {
                continue;
            }
            let annotation = |name: &str| {
                layer
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(name))
                    .cloned()
            };
            let Some(signature) = annotation(COSIGN_SIGNATURE_ANNOTATION) else {
                continue;
            };
            if u64::try_from(layer.size).unwrap_or(u64::MAX) > MAX_SIGNATURE_PAYLOAD_BYTES {
                continue;
            }
            let payload = self.blob(reference, &sig_ref, layer).await?;
            found.push(SignatureLayer {
                payload,
                signature,
                certificate: annotation(COSIGN_CERTIFICATE_ANNOTATION),
                chain: annotation(COSIGN_CHAIN_ANNOTATION),
                bundle: annotation(COSIGN_BUNDLE_ANNOTATION),
            });
        }
        if found.is_empty() {
            return Err(missing(format!(
                "the manifest at tag {tag} holds no {COSIGN_PAYLOAD_MEDIA_TYPE} layer with a signature"
            )));
        }
        Ok(found)
    }

    async fn manifest_bytes(
        &self,
        reference: &str,
        image: &Reference,
        auth: &RegistryAuth,
    ) -> Result<OciManifest> {
        let accepted = [OCI_IMAGE_MEDIA_TYPE, OCI_IMAGE_INDEX_MEDIA_TYPE];
        let (bytes, _digest) = self
            .retry(reference, || {
                self.client.pull_manifest_raw(image, auth, &accepted)
            })
            .await?;
        let limit = self.config.limits.max_manifest_bytes;
        if bytes.len() as u64 > limit {
            return Err(Error::TooLarge {
                reference: reference.into(),
                what: "manifest",
                size: bytes.len() as u64,
                limit,
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| Error::Registry {
            reference: reference.into(),
            source: OciDistributionError::ManifestParsingError(e.to_string()),
        })
    }

    async fn image_manifest(
        &self,
        reference: &str,
        image: &Reference,
        auth: &RegistryAuth,
    ) -> Result<OciImageManifest> {
        match self.manifest_bytes(reference, image, auth).await? {
            OciManifest::Image(m) => Ok(m),
            OciManifest::ImageIndex(index) => {
                // As upstream: the platform of the sidecar itself.
                let digest = oci_client::client::current_platform_resolver(&index.manifests)
                    .ok_or_else(|| Error::NotFound {
                        reference: reference.into(),
                        detail: "no manifest for this node's platform in the index".into(),
                    })?;
                match self
                    .manifest_bytes(reference, &image.clone_with_digest(digest), auth)
                    .await?
                {
                    OciManifest::Image(m) => Ok(m),
                    OciManifest::ImageIndex(_) => Err(Error::WrongMediaType {
                        reference: reference.into(),
                        what: "manifest",
                        found: OCI_IMAGE_INDEX_MEDIA_TYPE.into(),
                        expected: OCI_IMAGE_MEDIA_TYPE.into(),
                    }),
                }
            }
        }
    }

    async fn blob(
        &self,
        reference: &str,
        image: &Reference,
        layer: &OciDescriptor,
    ) -> Result<Vec<u8>> {
        let limit = self.config.limits.max_layer_bytes;
        let size = u64::try_from(layer.size).unwrap_or(u64::MAX);
        if size > limit {
            return Err(Error::TooLarge {
                reference: reference.into(),
                what: "layer",
                size,
                limit,
            });
        }
        self.retry(reference, || async {
            let mut out = LimitedWriter {
                data: Vec::with_capacity(usize::try_from(size).unwrap_or(0)),
                limit: size,
            };
            self.client.pull_blob(image, layer, &mut out).await?;
            Ok(out.data)
        })
        .await
    }
}

fn check_media_type(
    reference: &str,
    what: &'static str,
    found: &str,
    expected: &str,
) -> Result<()> {
    if found == expected {
        Ok(())
    } else {
        Err(Error::WrongMediaType {
            reference: reference.into(),
            what,
            found: found.into(),
            expected: expected.into(),
        })
    }
}

/// Collects a blob in memory and fails as soon as it grows past the size announced by the manifest.
struct LimitedWriter {
    data: Vec<u8>,
    limit: u64,
}

impl tokio::io::AsyncWrite for LimitedWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if (self.data.len() + buf.len()) as u64 > self.limit {
            return Poll::Ready(Err(std::io::Error::other(format!(
                "blob larger than its {} announced bytes",
                self.limit
            ))));
        }
        self.data.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Parses `reference` without `oci-spec`'s regular expression (see [`falco_core::oci`]).
pub fn parse_reference(reference: &str) -> Result<Reference> {
    let r = falco_core::oci::parse(reference).map_err(|e| Error::Invalid {
        what: "OCI reference",
        reason: format!("{reference:?}: {e}"),
    })?;
    Ok(match (r.tag, r.digest) {
        (Some(tag), Some(digest)) => {
            Reference::with_tag_and_digest(r.registry, r.repository, tag, digest)
        }
        (None, Some(digest)) => Reference::with_digest(r.registry, r.repository, digest),
        (tag, None) => Reference::with_tag(
            r.registry,
            r.repository,
            tag.unwrap_or_else(|| falco_core::oci::DEFAULT_TAG.to_owned()),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_bundles_decode_to_der() {
        let pem = "junk\n-----BEGIN CERTIFICATE-----\nAAEC\nAw==\n-----END CERTIFICATE-----\n\
                   # comment\n-----BEGIN CERTIFICATE-----\n/w==\n-----END CERTIFICATE-----\n";
        assert_eq!(
            pem_certificates(pem),
            Some(vec![vec![0, 1, 2, 3], vec![255]])
        );
        assert_eq!(pem_certificates("no certificates"), Some(vec![]));
        assert_eq!(
            pem_certificates("-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----"),
            None
        );
        assert_eq!(pem_certificates("-----BEGIN CERTIFICATE-----\nAAEC"), None);
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after(&httpdate::fmt_http_date(now + Duration::from_secs(30)), now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after(&httpdate::fmt_http_date(now), now + Duration::from_secs(5)),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn transient_errors_are_retried_and_others_classified() {
        let e = |code| OciDistributionError::ServerError {
            code,
            url: "u".into(),
            message: String::new(),
        };
        assert!(is_transient(&e(429)));
        assert!(matches!(classify("r", e(503)), Error::Unavailable { .. }));
        assert!(is_transient(&e(503)));
        assert!(!is_transient(&e(404)));
        assert!(matches!(classify("r", e(401)), Error::Auth { .. }));
        assert!(matches!(classify("r", e(404)), Error::NotFound { .. }));
        assert!(matches!(classify("r", e(400)), Error::Registry { .. }));
        assert!(
            format!(
                "{:?}",
                Auth::Basic {
                    username: "u".into(),
                    password: "secret".into()
                }
            )
            .contains("***")
        );
    }
}
