//! Cosign key-pair signature verification (ECDSA P-256, cosign's default key type).
//!
//! Cosign stores the signature of an artifact with digest `sha256:<hex>` as an OCI manifest at
//! the tag `sha256-<hex>.sig` of the same repository. Each layer of that manifest is a
//! *simple-signing* payload (`application/vnd.dev.cosign.simplesigning.v1+json`) whose
//! annotation `dev.cosignproject.cosign/signature` holds the base64 ASN.1 signature of the
//! payload bytes. A signature is accepted when it verifies with the public key **and** the
//! payload's `critical.image.docker-manifest-digest` is the artifact's digest, so a valid
//! signature of another artifact copied next to this one is refused.
//!
//! Keyless verification (Fulcio certificates, Rekor transparency log) is not implemented.

use base64::Engine;
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::DecodePublicKey;
use serde::Deserialize;

use crate::oci::SignatureLayer;
use crate::{Error, Result};

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
    let mut refusals = Vec::new();
    for (index, layer) in signatures.iter().enumerate() {
        match verify_one(key, digest, layer) {
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

fn verify_one(key: &PublicKey, digest: &str, layer: &SignatureLayer) -> Result<(), String> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(layer.signature.trim())
        .map_err(|e| format!("not base64: {e}"))?;
    let signature = Signature::from_der(&raw)
        .or_else(|_| Signature::from_slice(&raw))
        .map_err(|e| format!("not an ECDSA signature: {e}"))?;
    key.key
        .verify(&layer.payload, &signature)
        .map_err(|_| "does not verify with the public key".to_owned())?;
    let payload: Payload = serde_json::from_slice(&layer.payload)
        .map_err(|e| format!("payload is not simple-signing JSON: {e}"))?;
    if payload.critical.image.docker_manifest_digest != digest {
        return Err(format!(
            "signed digest {} is not the artifact's {digest}",
            payload.critical.image.docker_manifest_digest
        ));
    }
    Ok(())
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
mod tests {
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
            signature: base64::engine::general_purpose::STANDARD.encode(sig.to_der().as_bytes()),
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
}
