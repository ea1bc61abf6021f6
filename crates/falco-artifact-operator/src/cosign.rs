//! Cosign signature verification: key pairs, and keyless signatures against an offline trust root.
//!
//! Cosign stores the signature of an artifact with digest `sha256:<hex>` as an OCI manifest at
//! the tag `sha256-<hex>.sig` of the same repository. Each layer of that manifest is a
//! *simple-signing* payload (`application/vnd.dev.cosign.simplesigning.v1+json`) whose
//! annotation `dev.cosignproject.cosign/signature` holds the base64 ASN.1 signature of the
//! payload bytes. Whatever the policy, a signature counts only if its payload's
//! `critical.image.docker-manifest-digest` is the artifact's digest, so a valid signature of
//! another artifact copied next to this one is refused. One accepted layer is enough.
//!
//! **Key pair** ([`verify`]): the signature verifies with the configured ECDSA P-256 public key.
//!
//! **Keyless** ([`verify_keyless`]): the layer also carries the signer's short-lived certificate
//! (`dev.sigstore.cosign/certificate`, PEM), its issuing chain (`dev.sigstore.cosign/chain`) and
//! the transparency-log receipt (`dev.sigstore.cosign/bundle`). Everything is checked offline
//! against a Sigstore `trusted_root.json` ([`TrustedRoot`], the file `cosign verify
//! --trusted-root` reads); nothing is fetched (no TUF, no Rekor lookup). A layer is accepted
//! only when:
//!
//! 1. a subject alternative name of the certificate (email or URI) is exactly the expected
//!    identity, and its Fulcio OIDC-issuer extension (`1.3.6.1.4.1.57264.1.8`, or the legacy
//!    `…1.1`) is exactly the expected issuer;
//! 2. the certificate allows code signing (extended key usage);
//! 3. the payload signature verifies with the certificate's key (ECDSA P-256 or P-384) and the
//!    payload names the artifact's digest;
//! 4. the bundle's signed entry timestamp verifies with the key of the trusted root's log whose
//!    key id is the bundle's `logID`, over the canonical JSON of the entry; the entry is a
//!    `hashedrekord` of this very signature, certificate and payload hash; and its
//!    `integratedTime` lies within the certificate's validity: the log saw the signature while
//!    the short-lived certificate was valid, which is what makes an expired certificate
//!    acceptable afterwards;
//! 5. the certificate chains, through CA certificates of the annotation if needed, to a
//!    certificate authority of the trusted root that was valid at `integratedTime`; every
//!    certificate signature (ECDSA with SHA-256 or SHA-384, P-256 or P-384 keys) is checked.
//!
//! A refusal names the check that failed, per layer.

use base64::Engine;
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::signature::hazmat::PrehashVerifier;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::DecodePublicKey;
use serde::{Deserialize, Serialize};
use sha2::Digest;
use x509_cert::Certificate;
use x509_cert::der::asn1::{ObjectIdentifier, Utf8StringRef};
use x509_cert::der::{Decode, Encode, Reader};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{BasicConstraints, ExtendedKeyUsage, SubjectAltName};

use crate::oci::SignatureLayer;
use crate::{Error, Result};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Fulcio's OIDC issuer extension: a DER UTF8String.
const OID_FULCIO_ISSUER: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.57264.1.8");
/// Fulcio's legacy OIDC issuer extension: the raw issuer bytes.
const OID_FULCIO_ISSUER_LEGACY: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.4.1.57264.1.1");
/// Extended key usage `id-kp-codeSigning`.
const OID_CODE_SIGNING: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.3");
const OID_ECDSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const OID_ECDSA_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
/// Longest chain walked from a leaf to an anchor.
const MAX_CHAIN_DEPTH: usize = 6;

/// A public key signatures are checked against.
#[derive(Debug, Clone)]
pub struct PublicKey {
    key: VerifyingKey,
}

impl PublicKey {
    /// Parses a PEM `PUBLIC KEY` (SPKI) holding an ECDSA P-256 key.
    pub fn from_pem(pem: &str) -> Result<Self> {
        VerifyingKey::from_public_key_pem(pem.trim())
            .map(|key| Self { key })
            .map_err(|e| Error::Invalid {
                what: "cosign public key",
                reason: format!("not a PEM ECDSA P-256 public key: {e}"),
            })
    }
}

/// Who a keyless signature must come from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeylessIdentity {
    /// A subject alternative name of the signing certificate, exactly: an email or a URI.
    pub identity: String,
    /// The OIDC issuer Fulcio recorded in the certificate, exactly.
    pub issuer: String,
}

#[derive(Deserialize)]
struct Payload {
    critical: Critical,
}

#[derive(Deserialize)]
struct Critical {
    image: Image,
}

#[derive(Deserialize)]
struct Image {
    #[serde(rename = "docker-manifest-digest")]
    docker_manifest_digest: String,
}

/// Accepts when at least one of `signatures` verifies with `key` and names `digest`.
pub fn verify(
    key: &PublicKey,
    reference: &str,
    digest: &str,
    signatures: &[SignatureLayer],
) -> Result<()> {
    first_accepted(reference, signatures, |layer| {
        verify_with_key(key, digest, layer)
    })
}

/// Accepts when at least one of `signatures` is a keyless signature of `digest` by `expected`,
/// checked against `root` (see the module docs). Without a trusted root nothing is accepted.
pub fn verify_keyless(
    expected: &KeylessIdentity,
    root: Option<&TrustedRoot>,
    reference: &str,
    digest: &str,
    signatures: &[SignatureLayer],
) -> Result<()> {
    let Some(root) = root else {
        return Err(no_trusted_root(reference));
    };
    first_accepted(reference, signatures, |layer| {
        verify_keyless_one(expected, root, digest, layer)
    })
}

/// The refusal of a keyless policy when no trusted root is configured.
pub fn no_trusted_root(reference: &str) -> Error {
    Error::SignatureInvalid {
        reference: reference.to_owned(),
        detail: "keyless verification needs Sigstore's trust material offline: pass \
                 --cosign-trusted-root <trusted_root.json>"
            .to_owned(),
    }
}

fn first_accepted(
    reference: &str,
    signatures: &[SignatureLayer],
    check: impl Fn(&SignatureLayer) -> Result<(), String>,
) -> Result<()> {
    let mut refusals = Vec::new();
    for (index, layer) in signatures.iter().enumerate() {
        match check(layer) {
            Ok(()) => return Ok(()),
            Err(why) => refusals.push(format!("signature {index}: {why}")),
        }
    }
    Err(Error::SignatureInvalid {
        reference: reference.to_owned(),
        detail: if refusals.is_empty() {
            "no signature".to_owned()
        } else {
            refusals.join("; ")
        },
    })
}

fn verify_with_key(key: &PublicKey, digest: &str, layer: &SignatureLayer) -> Result<(), String> {
    let raw = B64
        .decode(layer.signature.trim())
        .map_err(|e| format!("not base64: {e}"))?;
    let signature = Signature::from_der(&raw)
        .or_else(|_| Signature::from_slice(&raw))
        .map_err(|e| format!("not an ECDSA signature: {e}"))?;
    key.key
        .verify(&layer.payload, &signature)
        .map_err(|_| "does not verify with the public key".to_owned())?;
    check_payload_digest(digest, &layer.payload)
}

fn check_payload_digest(digest: &str, payload: &[u8]) -> Result<(), String> {
    let payload: Payload = serde_json::from_slice(payload)
        .map_err(|e| format!("payload is not simple-signing JSON: {e}"))?;
    if payload.critical.image.docker_manifest_digest != digest {
        return Err(format!(
            "signed digest {} is not the artifact's {digest}",
            payload.critical.image.docker_manifest_digest
        ));
    }
    Ok(())
}

fn verify_keyless_one(
    expected: &KeylessIdentity,
    root: &TrustedRoot,
    digest: &str,
    layer: &SignatureLayer,
) -> Result<(), String> {
    let certificate = layer.certificate.as_deref().ok_or(
        "no certificate (annotation dev.sigstore.cosign/certificate): not a keyless signature",
    )?;
    let bundle = layer
        .bundle
        .as_deref()
        .ok_or("no transparency-log bundle; keyless signatures need one offline")?;
    let leaf = Cert::from_pem(certificate).map_err(|e| format!("certificate: {e}"))?;
    check_identity(&leaf, expected)?;
    check_code_signing(&leaf)?;
    let key = EcKey::of_certificate(&leaf.x509).map_err(|e| format!("certificate key: {e}"))?;
    let signature = B64
        .decode(layer.signature.trim())
        .map_err(|e| format!("signature is not base64: {e}"))?;
    if !key.verifies(key.natural_hash(), &layer.payload, &signature) {
        return Err("does not verify with the certificate's key".to_owned());
    }
    check_payload_digest(digest, &layer.payload)?;
    let signed_at = check_bundle(root, bundle, &leaf, &signature, &layer.payload)?;
    let pool = match layer.chain.as_deref() {
        Some(pem) => Cert::chain_from_pem(pem).map_err(|e| format!("certificate chain: {e}"))?,
        None => Vec::new(),
    };
    root.chains(&leaf, &pool, signed_at)
}

fn check_identity(leaf: &Cert, expected: &KeylessIdentity) -> Result<(), String> {
    let names = leaf
        .x509
        .tbs_certificate
        .get::<SubjectAltName>()
        .map_err(|e| format!("certificate subject alternative names: {e}"))?
        .map(|(_, san)| san.0)
        .unwrap_or_default();
    let identities: Vec<String> = names
        .into_iter()
        .filter_map(|name| match name {
            GeneralName::Rfc822Name(s) | GeneralName::UniformResourceIdentifier(s) => {
                Some(s.to_string())
            }
            _ => None,
        })
        .collect();
    if !identities.contains(&expected.identity) {
        return Err(if identities.is_empty() {
            format!(
                "certificate has no email or URI identity, expected {}",
                expected.identity
            )
        } else {
            format!(
                "certificate identity {} is not {}",
                identities.join(", "),
                expected.identity
            )
        });
    }
    let issuer = fulcio_issuer(leaf)?.ok_or("certificate has no Fulcio OIDC issuer extension")?;
    if issuer != expected.issuer {
        return Err(format!(
            "certificate issuer {issuer} is not {}",
            expected.issuer
        ));
    }
    Ok(())
}

/// The OIDC issuer Fulcio recorded: the UTF8String extension, else the legacy raw one.
fn fulcio_issuer(cert: &Cert) -> Result<Option<String>, String> {
    let extensions = cert
        .x509
        .tbs_certificate
        .extensions
        .as_deref()
        .unwrap_or_default();
    if let Some(ext) = extensions.iter().find(|e| e.extn_id == OID_FULCIO_ISSUER) {
        return Utf8StringRef::from_der(ext.extn_value.as_bytes())
            .map(|s| Some(s.as_str().to_owned()))
            .map_err(|e| format!("Fulcio issuer extension is not a UTF8String: {e}"));
    }
    if let Some(ext) = extensions
        .iter()
        .find(|e| e.extn_id == OID_FULCIO_ISSUER_LEGACY)
    {
        return String::from_utf8(ext.extn_value.as_bytes().to_vec())
            .map(Some)
            .map_err(|_| "legacy Fulcio issuer extension is not UTF-8".to_owned());
    }
    Ok(None)
}

fn check_code_signing(leaf: &Cert) -> Result<(), String> {
    let usages = leaf
        .x509
        .tbs_certificate
        .get::<ExtendedKeyUsage>()
        .map_err(|e| format!("certificate extended key usage: {e}"))?;
    if usages.is_some_and(|(_, eku)| eku.0.contains(&OID_CODE_SIGNING)) {
        Ok(())
    } else {
        Err("certificate is not for code signing (extended key usage)".to_owned())
    }
}

/// cosign's `dev.sigstore.cosign/bundle`: a Rekor entry and the log's promise to include it.
#[derive(Deserialize)]
struct Bundle {
    #[serde(rename = "SignedEntryTimestamp")]
    signed_entry_timestamp: String,
    #[serde(rename = "Payload")]
    payload: BundlePayload,
}

/// Serialized in field order, which is the sorted key order: the canonical JSON Rekor signs.
#[derive(Deserialize, Serialize)]
struct BundlePayload {
    body: String,
    #[serde(rename = "integratedTime")]
    integrated_time: i64,
    #[serde(rename = "logID")]
    log_id: String,
    #[serde(rename = "logIndex")]
    log_index: i64,
}

#[derive(Deserialize)]
struct RekorEntry {
    kind: String,
    spec: RekorSpec,
}

#[derive(Deserialize)]
struct RekorSpec {
    signature: RekorSignature,
    data: RekorData,
}

#[derive(Deserialize)]
struct RekorSignature {
    content: String,
    #[serde(rename = "publicKey")]
    public_key: RekorContent,
}

#[derive(Deserialize)]
struct RekorContent {
    content: String,
}

#[derive(Deserialize)]
struct RekorData {
    hash: RekorHash,
}

#[derive(Deserialize)]
struct RekorHash {
    algorithm: String,
    value: String,
}

/// Checks the bundle of a layer; returns its `integratedTime`.
fn check_bundle(
    root: &TrustedRoot,
    bundle: &str,
    leaf: &Cert,
    signature: &[u8],
    payload: &[u8],
) -> Result<i64, String> {
    let bundle: Bundle = serde_json::from_str(bundle)
        .map_err(|e| format!("transparency-log bundle is not of the expected JSON shape: {e}"))?;
    let entry = &bundle.payload;
    let log_id = hex::decode(&entry.log_id)
        .map_err(|_| format!("bundle logID {} is not hex", entry.log_id))?;
    let log = root
        .logs
        .iter()
        .find(|l| l.key_id == log_id)
        .ok_or_else(|| {
            format!(
                "transparency log {} is not in the trusted root",
                entry.log_id
            )
        })?;
    let signed_at = entry.integrated_time;
    if !log.valid.contains(signed_at) {
        return Err(format!(
            "the trusted root's key of log {} is not valid at integratedTime {signed_at}",
            entry.log_id
        ));
    }
    let canonical = serde_json::to_vec(entry).map_err(|e| e.to_string())?;
    let set = B64
        .decode(bundle.signed_entry_timestamp.trim())
        .map_err(|e| format!("SignedEntryTimestamp is not base64: {e}"))?;
    if !log.key.verifies(log.key.natural_hash(), &canonical, &set) {
        return Err(format!(
            "transparency-log SignedEntryTimestamp does not verify with the key of log {}",
            entry.log_id
        ));
    }
    let (not_before, not_after) = leaf.validity();
    if signed_at < not_before || signed_at > not_after {
        return Err(format!(
            "integratedTime {signed_at} is outside the certificate's validity \
             {not_before}..{not_after} (unix seconds): the certificate had expired when logged"
        ));
    }
    let body = B64
        .decode(entry.body.trim())
        .map_err(|e| format!("transparency-log entry body is not base64: {e}"))?;
    let logged: RekorEntry = serde_json::from_slice(&body)
        .map_err(|e| format!("transparency-log entry is not a hashedrekord: {e}"))?;
    if logged.kind != "hashedrekord" {
        return Err(format!(
            "transparency-log entry is a {}, not a hashedrekord",
            logged.kind
        ));
    }
    let logged_signature = B64
        .decode(logged.spec.signature.content.trim())
        .map_err(|e| format!("transparency-log entry signature is not base64: {e}"))?;
    if logged_signature != signature {
        return Err("transparency-log entry is for another signature".to_owned());
    }
    let logged_certificate = B64
        .decode(logged.spec.signature.public_key.content.trim())
        .map_err(|e| format!("transparency-log entry certificate is not base64: {e}"))?;
    let logged_certificate = Cert::from_pem(&String::from_utf8_lossy(&logged_certificate))
        .map_err(|e| format!("transparency-log entry certificate: {e}"))?;
    if logged_certificate.der != leaf.der {
        return Err("transparency-log entry is for another certificate".to_owned());
    }
    let hash = &logged.spec.data.hash;
    if hash.algorithm != "sha256"
        || !hash
            .value
            .eq_ignore_ascii_case(&hex::encode(sha2::Sha256::digest(payload)))
    {
        return Err("transparency-log entry is for another payload (hash)".to_owned());
    }
    Ok(signed_at)
}

/// Sigstore's trust material, from a `trusted_root.json`
/// (`application/vnd.dev.sigstore.trustedroot+json;version=0.1`): the Fulcio certificate
/// authorities and the Rekor log keys. Certificate-transparency logs and timestamp authorities
/// are not used.
#[derive(Clone)]
pub struct TrustedRoot {
    authorities: Vec<Authority>,
    logs: Vec<Log>,
}

#[derive(Clone)]
struct Authority {
    certificates: Vec<Cert>,
    valid: Window,
}

#[derive(Clone)]
struct Log {
    key_id: Vec<u8>,
    key: EcKey,
    valid: Window,
}

/// A validity window in unix seconds; open ends are unbounded.
#[derive(Clone, Copy, Debug, Default)]
struct Window {
    start: Option<i64>,
    end: Option<i64>,
}

impl Window {
    fn contains(self, at: i64) -> bool {
        self.start.is_none_or(|s| s <= at) && self.end.is_none_or(|e| at <= e)
    }
}

impl std::fmt::Debug for TrustedRoot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustedRoot")
            .field("authorities", &self.authorities.len())
            .field(
                "logs",
                &self
                    .logs
                    .iter()
                    .map(|l| hex::encode(&l.key_id))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RootFile {
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    tlogs: Vec<RootLog>,
    #[serde(default)]
    certificate_authorities: Vec<RootAuthority>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RootLog {
    public_key: RootKey,
    #[serde(default)]
    log_id: Option<RootLogId>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RootKey {
    #[serde(default)]
    raw_bytes: Option<String>,
    #[serde(default)]
    valid_for: Option<ValidFor>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RootLogId {
    key_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RootAuthority {
    cert_chain: RootChain,
    #[serde(default)]
    valid_for: Option<ValidFor>,
}

#[derive(Deserialize)]
struct RootChain {
    #[serde(default)]
    certificates: Vec<RootCertificate>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RootCertificate {
    raw_bytes: String,
}

#[derive(Deserialize)]
struct ValidFor {
    #[serde(default)]
    start: Option<String>,
    #[serde(default)]
    end: Option<String>,
}

impl ValidFor {
    fn window(this: Option<&Self>) -> Result<Window, String> {
        let parse = |t: Option<&String>| {
            t.map(|t| {
                parse_rfc3339(t).ok_or_else(|| format!("validFor time {t:?} is not RFC 3339"))
            })
            .transpose()
        };
        Ok(match this {
            None => Window::default(),
            Some(v) => Window {
                start: parse(v.start.as_ref())?,
                end: parse(v.end.as_ref())?,
            },
        })
    }
}

impl TrustedRoot {
    /// Parses a Sigstore `trusted_root.json`. Logs whose key is not ECDSA P-256/P-384 (e.g.
    /// Ed25519) are skipped; at least one certificate authority and one usable log are needed.
    pub fn from_json(json: &[u8]) -> Result<Self> {
        Self::parse(json).map_err(|reason| Error::Invalid {
            what: "cosign trusted root",
            reason,
        })
    }

    fn parse(json: &[u8]) -> Result<Self, String> {
        let file: RootFile = serde_json::from_slice(json)
            .map_err(|e| format!("not a Sigstore trusted_root.json: {e}"))?;
        if let Some(media_type) = &file.media_type
            && !media_type.contains("dev.sigstore.trustedroot")
        {
            return Err(format!(
                "media type {media_type} is not a Sigstore trusted root"
            ));
        }
        let mut authorities = Vec::new();
        for (i, ca) in file.certificate_authorities.iter().enumerate() {
            let certificates = ca
                .cert_chain
                .certificates
                .iter()
                .map(|c| {
                    let der = B64
                        .decode(c.raw_bytes.trim())
                        .map_err(|e| format!("not base64: {e}"))?;
                    Cert::from_der(der)
                })
                .collect::<Result<Vec<_>, String>>()
                .map_err(|e| format!("certificateAuthorities[{i}]: {e}"))?;
            let valid = ValidFor::window(ca.valid_for.as_ref())
                .map_err(|e| format!("certificateAuthorities[{i}]: {e}"))?;
            if !certificates.is_empty() {
                authorities.push(Authority {
                    certificates,
                    valid,
                });
            }
        }
        let mut logs = Vec::new();
        for (i, tlog) in file.tlogs.iter().enumerate() {
            let Some(raw) = &tlog.public_key.raw_bytes else {
                continue;
            };
            let der = B64
                .decode(raw.trim())
                .map_err(|e| format!("tlogs[{i}].publicKey.rawBytes is not base64: {e}"))?;
            let Ok(key) = EcKey::from_spki_der(&der) else {
                tracing::debug!(
                    index = i,
                    "trusted root: skipping a log whose key is not ECDSA"
                );
                continue;
            };
            let key_id = match &tlog.log_id {
                Some(id) => B64
                    .decode(id.key_id.trim())
                    .map_err(|e| format!("tlogs[{i}].logId.keyId is not base64: {e}"))?,
                None => sha2::Sha256::digest(&der).to_vec(),
            };
            let valid = ValidFor::window(tlog.public_key.valid_for.as_ref())
                .map_err(|e| format!("tlogs[{i}].publicKey: {e}"))?;
            logs.push(Log { key_id, key, valid });
        }
        if authorities.is_empty() {
            return Err("no certificateAuthorities with certificates".to_owned());
        }
        if logs.is_empty() {
            return Err("no tlogs with an ECDSA P-256 or P-384 key".to_owned());
        }
        Ok(Self { authorities, logs })
    }

    /// Whether `leaf` chains, through CA certificates of `pool`, to a certificate of an
    /// authority valid at `at` (unix seconds).
    fn chains(&self, leaf: &Cert, pool: &[Cert], at: i64) -> Result<(), String> {
        let anchors: Vec<&Cert> = self
            .authorities
            .iter()
            .filter(|a| a.valid.contains(at))
            .flat_map(|a| &a.certificates)
            .collect();
        if anchors.is_empty() {
            return Err(format!(
                "no certificate authority of the trusted root is valid at integratedTime {at}"
            ));
        }
        let mut current = leaf;
        for _ in 0..MAX_CHAIN_DEPTH {
            if anchors.iter().any(|anchor| current.signed_by(anchor)) {
                return Ok(());
            }
            let Some(next) = pool.iter().find(|c| {
                c.der != current.der && c.is_ca() && c.valid_at(at) && current.signed_by(c)
            }) else {
                break;
            };
            current = next;
        }
        Err(
            "certificate chain does not lead to a certificate authority of the trusted root"
                .to_owned(),
        )
    }
}

/// The hash of a signature.
#[derive(Clone, Copy, Debug)]
enum HashAlg {
    Sha256,
    Sha384,
}

impl HashAlg {
    fn of_signature_algorithm(oid: ObjectIdentifier) -> Option<Self> {
        match oid {
            OID_ECDSA_SHA256 => Some(Self::Sha256),
            OID_ECDSA_SHA384 => Some(Self::Sha384),
            _ => None,
        }
    }

    fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            Self::Sha256 => sha2::Sha256::digest(data).to_vec(),
            Self::Sha384 => sha2::Sha384::digest(data).to_vec(),
        }
    }
}

/// An ECDSA public key: of a certificate, a certificate authority or a log.
#[derive(Clone, Debug)]
enum EcKey {
    P256(VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
}

impl EcKey {
    fn from_spki_der(der: &[u8]) -> Result<Self, String> {
        if let Ok(key) = VerifyingKey::from_public_key_der(der) {
            return Ok(Self::P256(key));
        }
        p384::ecdsa::VerifyingKey::from_public_key_der(der)
            .map(Self::P384)
            .map_err(|_| "not an ECDSA P-256 or P-384 public key".to_owned())
    }

    fn of_certificate(cert: &Certificate) -> Result<Self, String> {
        let spki = cert
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .map_err(|e| e.to_string())?;
        Self::from_spki_der(&spki)
    }

    /// The hash the curve is used with: SHA-256 for P-256, SHA-384 for P-384.
    fn natural_hash(&self) -> HashAlg {
        match self {
            Self::P256(_) => HashAlg::Sha256,
            Self::P384(_) => HashAlg::Sha384,
        }
    }

    /// Whether `signature` (ASN.1 DER, or fixed-size `r‖s`) signs `message` hashed with `hash`.
    fn verifies(&self, hash: HashAlg, message: &[u8], signature: &[u8]) -> bool {
        let prehash = hash.digest(message);
        match self {
            Self::P256(key) => Signature::from_der(signature)
                .or_else(|_| Signature::from_slice(signature))
                .is_ok_and(|s| key.verify_prehash(&prehash, &s).is_ok()),
            Self::P384(key) => p384::ecdsa::Signature::from_der(signature)
                .or_else(|_| p384::ecdsa::Signature::from_slice(signature))
                .is_ok_and(|s| key.verify_prehash(&prehash, &s).is_ok()),
        }
    }
}

/// A certificate with the exact DER it was read from (signatures cover the original bytes).
#[derive(Clone, Debug)]
struct Cert {
    der: Vec<u8>,
    x509: Certificate,
}

impl Cert {
    fn from_der(der: Vec<u8>) -> Result<Self, String> {
        let x509 =
            Certificate::from_der(&der).map_err(|e| format!("not an X.509 certificate: {e}"))?;
        Ok(Self { der, x509 })
    }

    /// The first certificate of a PEM text.
    fn from_pem(pem: &str) -> Result<Self, String> {
        Self::chain_from_pem(pem)?
            .into_iter()
            .next()
            .ok_or_else(|| "no PEM CERTIFICATE".to_owned())
    }

    /// Every certificate of a PEM text, in order.
    fn chain_from_pem(pem: &str) -> Result<Vec<Self>, String> {
        const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
        const END: &str = "-----END CERTIFICATE-----";
        let mut certificates = Vec::new();
        let mut rest = pem;
        while let Some(start) = rest.find(BEGIN) {
            let block = &rest[start..];
            let end = block
                .find(END)
                .ok_or_else(|| "unterminated PEM CERTIFICATE".to_owned())?
                + END.len();
            let (_, der) = x509_cert::der::pem::decode_vec(&block.as_bytes()[..end])
                .map_err(|e| format!("bad PEM: {e}"))?;
            certificates.push(Self::from_der(der)?);
            rest = &block[end..];
        }
        Ok(certificates)
    }

    /// The `tbsCertificate` bytes exactly as encoded, which the issuer signed.
    fn tbs(&self) -> Option<&[u8]> {
        let mut reader = x509_cert::der::SliceReader::new(&self.der).ok()?;
        x509_cert::der::Header::decode(&mut reader).ok()?;
        reader.tlv_bytes().ok()
    }

    /// `notBefore` and `notAfter` in unix seconds.
    fn validity(&self) -> (i64, i64) {
        let seconds = |t: x509_cert::time::Time| {
            i64::try_from(t.to_unix_duration().as_secs()).unwrap_or(i64::MAX)
        };
        let validity = &self.x509.tbs_certificate.validity;
        (seconds(validity.not_before), seconds(validity.not_after))
    }

    fn valid_at(&self, at: i64) -> bool {
        let (not_before, not_after) = self.validity();
        not_before <= at && at <= not_after
    }

    fn is_ca(&self) -> bool {
        matches!(
            self.x509.tbs_certificate.get::<BasicConstraints>(),
            Ok(Some((_, BasicConstraints { ca: true, .. })))
        )
    }

    /// Whether `issuer` issued this certificate: names match and the signature verifies.
    fn signed_by(&self, issuer: &Cert) -> bool {
        if self.x509.tbs_certificate.issuer != issuer.x509.tbs_certificate.subject {
            return false;
        }
        let Some(hash) = HashAlg::of_signature_algorithm(self.x509.signature_algorithm.oid) else {
            return false;
        };
        let (Ok(key), Some(signature), Some(tbs)) = (
            EcKey::of_certificate(&issuer.x509),
            self.x509.signature.as_bytes(),
            self.tbs(),
        ) else {
            return false;
        };
        key.verifies(hash, tbs, signature)
    }
}

/// Unix seconds of an RFC 3339 time (`2021-03-07T03:20:29.000Z`, or with a `±hh:mm` offset).
fn parse_rfc3339(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let field = |range: std::ops::Range<usize>| -> Option<u16> {
        let s = text.get(range)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    let date = x509_cert::der::DateTime::new(
        field(0..4)?,
        u8::try_from(field(5..7)?).ok()?,
        u8::try_from(field(8..10)?).ok()?,
        u8::try_from(field(11..13)?).ok()?,
        u8::try_from(field(14..16)?).ok()?,
        u8::try_from(field(17..19)?).ok()?,
    )
    .ok()?;
    let mut rest = text.get(19..)?;
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        rest = &fraction[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let r = rest.as_bytes();
            if r.len() != 6 || r[3] != b':' {
                return None;
            }
            let hours: i64 = rest.get(1..3)?.parse().ok()?;
            let minutes: i64 = rest.get(4..6)?.parse().ok()?;
            sign * (hours * 3600 + minutes * 60)
        }
    };
    let seconds = i64::try_from(date.unix_duration().as_secs()).ok()?;
    Some(seconds - offset)
}

/// The simple-signing payload cosign signs for `docker_reference` at `digest`.
pub fn simple_signing_payload(docker_reference: &str, digest: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "critical": {
            "identity": {"docker-reference": docker_reference},
            "image": {"docker-manifest-digest": digest},
            "type": "cosign container image signature",
        },
        "optional": null,
    }))
    .unwrap_or_default()
}

#[cfg(test)]
#[path = "../tests/support/keyless.rs"]
mod keyless_fixture;

#[cfg(test)]
mod tests {
    use super::keyless_fixture::{
        Fulcio, IDENTITY, ISSUER, NOT_AFTER, NOT_BEFORE, SIGNED_AT, Signed,
    };
    use super::*;
    use p256::ecdsa::SigningKey;
    use p256::ecdsa::signature::Signer;
    use p256::pkcs8::EncodePublicKey;

    fn key_pair(seed: u8) -> (SigningKey, PublicKey) {
        let signing = SigningKey::from_slice(&[seed; 32]).unwrap();
        let pem = signing
            .verifying_key()
            .to_public_key_pem(p256::pkcs8::LineEnding::LF)
            .unwrap();
        (signing, PublicKey::from_pem(&pem).unwrap())
    }

    fn sign(key: &SigningKey, payload: &[u8]) -> SignatureLayer {
        let sig: Signature = key.sign(payload);
        SignatureLayer {
            payload: payload.to_vec(),
            signature: B64.encode(sig.to_der().as_bytes()),
            ..SignatureLayer::default()
        }
    }

    #[test]
    fn accepts_a_signature_of_this_digest_only() {
        let (signing, public) = key_pair(7);
        let digest = "sha256:aa";
        let good = sign(&signing, &simple_signing_payload("r/x", digest));
        verify(&public, "r/x:1", digest, std::slice::from_ref(&good)).unwrap();
        // A valid signature of another digest is refused.
        let other = sign(&signing, &simple_signing_payload("r/x", "sha256:bb"));
        let err = verify(&public, "r/x:1", digest, &[other]).unwrap_err();
        assert!(err.to_string().contains("is not the artifact's"), "{err}");
        // Another key, or a tampered payload, is refused.
        let (_, stranger) = key_pair(9);
        assert!(matches!(
            verify(&stranger, "r/x:1", digest, std::slice::from_ref(&good)),
            Err(Error::SignatureInvalid { .. })
        ));
        let mut tampered = good.clone();
        tampered.payload.push(b' ');
        assert!(verify(&public, "r/x:1", digest, &[tampered.clone(), good]).is_ok());
        assert!(verify(&public, "r/x:1", digest, &[tampered]).is_err());
        assert!(
            PublicKey::from_pem("-----BEGIN PUBLIC KEY-----\nxx\n-----END PUBLIC KEY-----")
                .is_err()
        );
    }

    const DIGEST: &str = "sha256:aa";

    fn expected() -> KeylessIdentity {
        KeylessIdentity {
            identity: IDENTITY.to_owned(),
            issuer: ISSUER.to_owned(),
        }
    }

    fn layer(signed: &Signed) -> SignatureLayer {
        SignatureLayer {
            payload: signed.payload.clone(),
            signature: signed.signature.clone(),
            certificate: Some(signed.certificate.clone()),
            chain: Some(signed.chain.clone()),
            bundle: Some(signed.bundle.clone()),
        }
    }

    fn payload() -> Vec<u8> {
        simple_signing_payload("r/x", DIGEST)
    }

    /// The refusal of `layer` under `expected` and `fulcio`'s trusted root.
    fn refusal(fulcio: &Fulcio, expected: &KeylessIdentity, layer: SignatureLayer) -> String {
        let root = TrustedRoot::from_json(fulcio.trusted_root().as_bytes()).unwrap();
        let err = verify_keyless(expected, Some(&root), "r/x:1", DIGEST, &[layer]).unwrap_err();
        assert!(matches!(err, Error::SignatureInvalid { .. }), "{err}");
        err.to_string()
    }

    fn assert_refused(fulcio: &Fulcio, layer: SignatureLayer, because: &str) {
        let err = refusal(fulcio, &expected(), layer);
        assert!(err.contains(because), "expected {because:?} in: {err}");
    }

    #[test]
    fn keyless_signature_with_a_logged_certificate_of_the_trusted_root_is_accepted() {
        let fulcio = Fulcio::new("sigstore");
        let leaf = fulcio.leaf(IDENTITY, ISSUER, NOT_BEFORE, NOT_AFTER);
        let signed = fulcio.sign(&leaf, &payload(), SIGNED_AT);
        let root = TrustedRoot::from_json(fulcio.trusted_root().as_bytes()).unwrap();
        verify_keyless(&expected(), Some(&root), "r/x:1", DIGEST, &[layer(&signed)]).unwrap();
        // The certificate expired long ago: the log's timestamp is what counts.
        assert!(leaf_expired_now(&signed));
        // A URI identity (CI workload) is matched the same way.
        let uri = "https://github.com/o/r/.github/workflows/release.yml@refs/heads/main";
        let ci = fulcio.sign(
            &fulcio.leaf(uri, ISSUER, NOT_BEFORE, NOT_AFTER),
            &payload(),
            SIGNED_AT,
        );
        let by_uri = KeylessIdentity {
            identity: uri.to_owned(),
            issuer: ISSUER.to_owned(),
        };
        verify_keyless(&by_uri, Some(&root), "r/x:1", DIGEST, &[layer(&ci)]).unwrap();
        // A key-pair layer next to it does not matter; one accepted layer is enough.
        let plain = SignatureLayer {
            payload: payload(),
            signature: signed.signature.clone(),
            ..SignatureLayer::default()
        };
        verify_keyless(
            &expected(),
            Some(&root),
            "r/x:1",
            DIGEST,
            &[plain, layer(&signed)],
        )
        .unwrap();
    }

    fn leaf_expired_now(signed: &Signed) -> bool {
        let leaf = Cert::from_pem(&signed.certificate).unwrap();
        let now = i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs(),
        )
        .unwrap();
        !leaf.valid_at(now)
    }

    #[test]
    fn keyless_wrong_identity_or_issuer_is_refused() {
        let fulcio = Fulcio::new("sigstore");
        let signed = fulcio.sign(
            &fulcio.leaf(IDENTITY, ISSUER, NOT_BEFORE, NOT_AFTER),
            &payload(),
            SIGNED_AT,
        );
        let other = KeylessIdentity {
            identity: "mallory@example.com".to_owned(),
            ..expected()
        };
        let err = refusal(&fulcio, &other, layer(&signed));
        assert!(
            err.contains("certificate identity signer@example.com is not mallory@example.com"),
            "{err}"
        );
        let other = KeylessIdentity {
            issuer: "https://accounts.example".to_owned(),
            ..expected()
        };
        let err = refusal(&fulcio, &other, layer(&signed));
        assert!(
            err.contains(
                "certificate issuer https://issuer.example is not https://accounts.example"
            ),
            "{err}"
        );
    }

    #[test]
    fn keyless_issuer_falls_back_to_the_legacy_extension() {
        let fulcio = Fulcio::new("sigstore");
        let leaf = fulcio.leaf_with_legacy_issuer(IDENTITY, ISSUER, NOT_BEFORE, NOT_AFTER);
        let signed = fulcio.sign(&leaf, &payload(), SIGNED_AT);
        let root = TrustedRoot::from_json(fulcio.trusted_root().as_bytes()).unwrap();
        verify_keyless(&expected(), Some(&root), "r/x:1", DIGEST, &[layer(&signed)]).unwrap();
        let other = KeylessIdentity {
            issuer: "https://accounts.example".to_owned(),
            ..expected()
        };
        let err = refusal(&fulcio, &other, layer(&signed));
        assert!(
            err.contains("certificate issuer https://issuer.example is not"),
            "{err}"
        );
    }

    #[test]
    fn keyless_certificate_of_an_untrusted_root_is_refused() {
        let fulcio = Fulcio::new("sigstore");
        let rogue = Fulcio::new("sigstore");
        let mut signed = rogue.sign(
            &rogue.leaf(IDENTITY, ISSUER, NOT_BEFORE, NOT_AFTER),
            &payload(),
            SIGNED_AT,
        );
        // Logged by the trusted log, so that only the chain is wrong; same subject names too.
        signed.bundle = fulcio.bundle(
            &signed.signature,
            &signed.certificate,
            &signed.payload,
            SIGNED_AT,
        );
        assert_refused(
            &fulcio,
            layer(&signed),
            "certificate chain does not lead to a certificate authority of the trusted root",
        );
        // Nor does a trusted intermediate smuggled in the chain annotation help a rogue leaf.
        let mut smuggled = layer(&signed);
        smuggled.chain = Some(fulcio.chain_pem());
        assert_refused(
            &fulcio,
            smuggled,
            "does not lead to a certificate authority",
        );
    }

    #[test]
    fn keyless_certificate_expired_when_logged_is_refused() {
        let fulcio = Fulcio::new("sigstore");
        let signed = fulcio.sign(
            &fulcio.leaf(IDENTITY, ISSUER, NOT_BEFORE, NOT_AFTER),
            &payload(),
            NOT_AFTER + 1,
        );
        assert_refused(
            &fulcio,
            layer(&signed),
            "is outside the certificate's validity",
        );
    }

    #[test]
    fn keyless_bundle_must_be_signed_by_the_log_and_be_about_this_signature() {
        let fulcio = Fulcio::new("sigstore");
        let leaf = fulcio.leaf(IDENTITY, ISSUER, NOT_BEFORE, NOT_AFTER);
        let signed = fulcio.sign(&leaf, &payload(), SIGNED_AT);

        // Tampered entry: another log index under the same SignedEntryTimestamp.
        let mut bundle: serde_json::Value = serde_json::from_str(&signed.bundle).unwrap();
        bundle["Payload"]["logIndex"] = serde_json::json!(7);
        let mut tampered = layer(&signed);
        tampered.bundle = Some(bundle.to_string());
        assert_refused(
            &fulcio,
            tampered,
            "SignedEntryTimestamp does not verify with the key of log",
        );

        // A genuine bundle, of another signature by the same certificate.
        let another = fulcio.sign(&leaf, &simple_signing_payload("r/y", DIGEST), SIGNED_AT);
        let mut swapped = layer(&signed);
        swapped.bundle = Some(another.bundle.clone());
        assert_refused(
            &fulcio,
            swapped,
            "transparency-log entry is for another signature",
        );

        // A log the trusted root does not know.
        let stranger = Fulcio::new("sigstore");
        let mut unknown = layer(&signed);
        unknown.bundle = Some(stranger.bundle(
            &signed.signature,
            &signed.certificate,
            &signed.payload,
            SIGNED_AT,
        ));
        assert_refused(&fulcio, unknown, "is not in the trusted root");

        // No bundle at all.
        let mut bare = layer(&signed);
        bare.bundle = None;
        assert_refused(
            &fulcio,
            bare,
            "no transparency-log bundle; keyless signatures need one offline",
        );
    }

    #[test]
    fn keyless_payload_must_name_the_digest_and_verify() {
        let fulcio = Fulcio::new("sigstore");
        let leaf = fulcio.leaf(IDENTITY, ISSUER, NOT_BEFORE, NOT_AFTER);
        let other = fulcio.sign(
            &leaf,
            &simple_signing_payload("r/x", "sha256:bb"),
            SIGNED_AT,
        );
        assert_refused(
            &fulcio,
            layer(&other),
            "signed digest sha256:bb is not the artifact's sha256:aa",
        );
        let mut tampered = layer(&fulcio.sign(&leaf, &payload(), SIGNED_AT));
        tampered.payload.push(b' ');
        assert_refused(
            &fulcio,
            tampered,
            "does not verify with the certificate's key",
        );
    }

    #[test]
    fn keyless_certificate_needs_code_signing_usage() {
        let fulcio = Fulcio::new("sigstore");
        let leaf = fulcio.leaf_without_code_signing(IDENTITY, ISSUER, NOT_BEFORE, NOT_AFTER);
        let signed = fulcio.sign(&leaf, &payload(), SIGNED_AT);
        assert_refused(
            &fulcio,
            layer(&signed),
            "certificate is not for code signing",
        );
    }

    #[test]
    fn keyless_without_a_trusted_root_tells_which_flag_to_pass() {
        let fulcio = Fulcio::new("sigstore");
        let signed = fulcio.sign(
            &fulcio.leaf(IDENTITY, ISSUER, NOT_BEFORE, NOT_AFTER),
            &payload(),
            SIGNED_AT,
        );
        let err =
            verify_keyless(&expected(), None, "r/x:1", DIGEST, &[layer(&signed)]).unwrap_err();
        assert!(matches!(err, Error::SignatureInvalid { .. }));
        assert!(err.to_string().contains("--cosign-trusted-root"), "{err}");
    }

    #[test]
    fn trusted_root_is_read_and_checked() {
        let fulcio = Fulcio::new("sigstore");
        let root = TrustedRoot::from_json(fulcio.trusted_root().as_bytes()).unwrap();
        assert_eq!(root.authorities.len(), 1);
        assert_eq!(root.logs.len(), 1);
        // An authority valid only before the signature does not anchor it.
        let mut json: serde_json::Value = serde_json::from_str(&fulcio.trusted_root()).unwrap();
        json["certificateAuthorities"][0]["validFor"]["end"] =
            serde_json::json!("2023-12-31T23:59:59.999Z");
        let root = TrustedRoot::from_json(json.to_string().as_bytes()).unwrap();
        let signed = fulcio.sign(
            &fulcio.leaf(IDENTITY, ISSUER, NOT_BEFORE, NOT_AFTER),
            &payload(),
            SIGNED_AT,
        );
        let err = verify_keyless(&expected(), Some(&root), "r/x:1", DIGEST, &[layer(&signed)])
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("no certificate authority of the trusted root is valid"),
            "{err}"
        );
        for bad in ["{}", "not json", r#"{"mediaType": "application/json"}"#] {
            assert!(TrustedRoot::from_json(bad.as_bytes()).is_err(), "{bad}");
        }
        assert_eq!(parse_rfc3339("2024-01-01T00:00:00Z"), Some(NOT_BEFORE));
        assert_eq!(
            parse_rfc3339("2024-01-01T01:00:00.123+01:00"),
            Some(NOT_BEFORE)
        );
        assert_eq!(parse_rfc3339("2024-01-01"), None);
    }
}
