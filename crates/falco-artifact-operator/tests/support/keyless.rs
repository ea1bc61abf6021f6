//! Keyless cosign fixtures, shared by the unit tests of `cosign.rs` and the integration tests:
//! a fake Fulcio (P-384 root → P-384 intermediate → P-256 leaf with the code-signing usage, a
//! SAN and the OIDC-issuer extensions) and a fake Rekor (P-256 key signing bundles), with the
//! `trusted_root.json` that trusts them. Only plain data comes out, so the file does not depend
//! on the crate under test.
#![allow(dead_code)]

use base64::Engine;
use p256::ecdsa::signature::Signer;
use p256::pkcs8::{DecodePrivateKey, EncodePublicKey};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, CustomExtension, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use sha2::Digest;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The OIDC issuer the fixtures' certificates record.
pub const ISSUER: &str = "https://issuer.example";
/// The email the fixtures' certificates are issued to.
pub const IDENTITY: &str = "signer@example.com";
/// 2024-01-01T00:00:00Z: the leaves' notBefore.
pub const NOT_BEFORE: i64 = 1_704_067_200;
/// Ten minutes later, as Fulcio's certificates.
pub const NOT_AFTER: i64 = NOT_BEFORE + 600;
/// When the fake log saw the signature.
pub const SIGNED_AT: i64 = NOT_BEFORE + 60;

/// What cosign puts on a keyless signature layer.
#[derive(Clone, Debug)]
pub struct Signed {
    /// The simple-signing payload.
    pub payload: Vec<u8>,
    /// Base64 DER ECDSA signature of the payload by the leaf key.
    pub signature: String,
    /// `dev.sigstore.cosign/certificate`: the leaf, PEM.
    pub certificate: String,
    /// `dev.sigstore.cosign/chain`: intermediate and root, PEM.
    pub chain: String,
    /// `dev.sigstore.cosign/bundle`: the Rekor bundle JSON.
    pub bundle: String,
}

/// A signing certificate and its key.
pub struct Leaf {
    /// The certificate, PEM.
    pub pem: String,
    key: p256::ecdsa::SigningKey,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Variant {
    Standard,
    NoCodeSigning,
    LegacyIssuer,
}

/// A certificate authority and a transparency log.
pub struct Fulcio {
    root: CertifiedIssuer<'static, KeyPair>,
    intermediate: CertifiedIssuer<'static, KeyPair>,
    rekor: p256::ecdsa::SigningKey,
}

fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, "sigstore.dev");
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

fn p256_pair() -> (KeyPair, p256::ecdsa::SigningKey) {
    let pair = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let key = p256::ecdsa::SigningKey::from_pkcs8_der(&pair.serialize_der()).unwrap();
    (pair, key)
}

/// A DER UTF8String (short or one-byte long form: the fixtures' strings are short).
fn der_utf8(s: &str) -> Vec<u8> {
    let mut out = vec![0x0c];
    match s.len() {
        n if n < 0x80 => out.push(n as u8),
        n => out.extend([0x81, u8::try_from(n).unwrap()]),
    }
    out.extend(s.as_bytes());
    out
}

fn at(unix: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(unix).unwrap()
}

impl Fulcio {
    /// A new root `name`, its intermediate `<name>-intermediate`, and a new log key; two
    /// instances made with the same name have the same subject names but different keys.
    pub fn new(name: &str) -> Self {
        let root_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        let root = CertifiedIssuer::self_signed(ca_params(name), root_key).unwrap();
        let intermediate_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        let intermediate = CertifiedIssuer::signed_by(
            ca_params(&format!("{name}-intermediate")),
            intermediate_key,
            &root,
        )
        .unwrap();
        Self {
            root,
            intermediate,
            rekor: p256_pair().1,
        }
    }

    fn rekor_spki(&self) -> Vec<u8> {
        self.rekor
            .verifying_key()
            .to_public_key_der()
            .unwrap()
            .as_bytes()
            .to_vec()
    }

    /// `trusted_root.json` trusting this root (only the root: the intermediate comes from the
    /// signature's chain annotation) and this log.
    pub fn trusted_root(&self) -> String {
        let spki = self.rekor_spki();
        serde_json::json!({
            "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
            "tlogs": [{
                "baseUrl": "https://rekor.example",
                "hashAlgorithm": "SHA2_256",
                "publicKey": {
                    "rawBytes": B64.encode(&spki),
                    "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                    "validFor": {"start": "2021-01-12T11:53:27.000Z"},
                },
                "logId": {"keyId": B64.encode(sha2::Sha256::digest(&spki))},
            }],
            "certificateAuthorities": [{
                "subject": {"organization": "sigstore.dev", "commonName": "sigstore"},
                "uri": "https://fulcio.example",
                "certChain": {"certificates": [{"rawBytes": B64.encode(self.root.der())}]},
                "validFor": {"start": "2022-04-13T20:06:15.000Z"},
            }],
            "ctlogs": [],
            "timestampAuthorities": [],
        })
        .to_string()
    }

    /// `dev.sigstore.cosign/chain`: intermediate then root.
    pub fn chain_pem(&self) -> String {
        format!("{}{}", self.intermediate.pem(), self.root.pem())
    }

    /// A leaf for `identity` (email, or URI if it has `://`) from `issuer`, valid
    /// `not_before..not_after` (unix seconds).
    pub fn leaf(&self, identity: &str, issuer: &str, not_before: i64, not_after: i64) -> Leaf {
        self.make_leaf(identity, issuer, not_before, not_after, Variant::Standard)
    }

    /// As [`Fulcio::leaf`], without the code-signing extended key usage.
    pub fn leaf_without_code_signing(
        &self,
        identity: &str,
        issuer: &str,
        not_before: i64,
        not_after: i64,
    ) -> Leaf {
        self.make_leaf(
            identity,
            issuer,
            not_before,
            not_after,
            Variant::NoCodeSigning,
        )
    }

    /// As [`Fulcio::leaf`], with only the legacy issuer extension (`1.3.6.1.4.1.57264.1.1`),
    /// as Fulcio issued before 2023.
    pub fn leaf_with_legacy_issuer(
        &self,
        identity: &str,
        issuer: &str,
        not_before: i64,
        not_after: i64,
    ) -> Leaf {
        self.make_leaf(
            identity,
            issuer,
            not_before,
            not_after,
            Variant::LegacyIssuer,
        )
    }

    fn make_leaf(
        &self,
        identity: &str,
        issuer: &str,
        not_before: i64,
        not_after: i64,
        variant: Variant,
    ) -> Leaf {
        let (pair, key) = p256_pair();
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.is_ca = IsCa::ExplicitNoCa;
        params.not_before = at(not_before);
        params.not_after = at(not_after);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = if variant != Variant::NoCodeSigning {
            vec![ExtendedKeyUsagePurpose::CodeSigning]
        } else {
            vec![ExtendedKeyUsagePurpose::ServerAuth]
        };
        let name = identity.to_owned().try_into().unwrap();
        params.subject_alt_names = vec![if identity.contains("://") {
            SanType::URI(name)
        } else {
            SanType::Rfc822Name(name)
        }];
        params.custom_extensions = vec![CustomExtension::from_oid_content(
            &[1, 3, 6, 1, 4, 1, 57264, 1, 1],
            issuer.as_bytes().to_vec(),
        )];
        if variant != Variant::LegacyIssuer {
            params
                .custom_extensions
                .push(CustomExtension::from_oid_content(
                    &[1, 3, 6, 1, 4, 1, 57264, 1, 8],
                    der_utf8(issuer),
                ));
        }
        let certificate = params.signed_by(&pair, &self.intermediate).unwrap();
        Leaf {
            pem: certificate.pem(),
            key,
        }
    }

    /// Signs `payload` with `leaf` and logs it at `integrated_time`, as `cosign sign` does.
    pub fn sign(&self, leaf: &Leaf, payload: &[u8], integrated_time: i64) -> Signed {
        let signature: p256::ecdsa::Signature = leaf.key.sign(payload);
        let signature = B64.encode(signature.to_der().as_bytes());
        Signed {
            payload: payload.to_vec(),
            bundle: self.bundle(&signature, &leaf.pem, payload, integrated_time),
            signature,
            certificate: leaf.pem.clone(),
            chain: self.chain_pem(),
        }
    }

    /// A bundle of this log for a `hashedrekord` entry of `signature` (base64) by
    /// `certificate` (PEM) over `payload`.
    pub fn bundle(
        &self,
        signature: &str,
        certificate: &str,
        payload: &[u8],
        integrated_time: i64,
    ) -> String {
        let body = serde_json::json!({
            "apiVersion": "0.0.1",
            "kind": "hashedrekord",
            "spec": {
                "data": {"hash": {"algorithm": "sha256",
                                  "value": hex::encode(sha2::Sha256::digest(payload))}},
                "signature": {"content": signature,
                              "publicKey": {"content": B64.encode(certificate)}},
            },
        });
        let log_id = hex::encode(sha2::Sha256::digest(self.rekor_spki()));
        let body = B64.encode(body.to_string());
        // Keys sorted, no whitespace: the canonical form Rekor signs.
        let canonical = format!(
            r#"{{"body":"{body}","integratedTime":{integrated_time},"logID":"{log_id}","logIndex":42}}"#
        );
        let set: p256::ecdsa::Signature = self.rekor.sign(canonical.as_bytes());
        serde_json::json!({
            "SignedEntryTimestamp": B64.encode(set.to_der().as_bytes()),
            "Payload": {
                "body": body,
                "integratedTime": integrated_time,
                "logIndex": 42,
                "logID": log_id,
            },
        })
        .to_string()
    }
}
