//! One artifact, one pipeline: dereference → validate → build → apply → status.
//!
//! [`Artifact`] is the uniform view of a `Rulesfile`, `Plugin` or `Config`. [`build`] turns it
//! (plus the ConfigMaps it names, already dereferenced from the watch cache) into a [`Plan`]
//! without touching the network or the disk; [`crate::sync`] then fetches what the plan needs
//! from registries, writes through the [`crate::store::Store`] and reports the outcome in the
//! node's [`falco_api::NodeArtifacts`] record.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

use falco_api::common::{CONFIGMAP_CONFIG_KEY, CONFIGMAP_RULES_KEY, DEFAULT_REGISTRY};
use falco_api::{Config, OciArtifact, Plugin, Rulesfile, SignatureVerification};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::ResourceExt;

use crate::cosign::KeylessIdentity;
use crate::oci::ArtifactType;
use crate::store::{self, ArtifactKey, Kind, Medium};
use crate::{Error, Result};

/// Where Falco (not this sidecar) finds plugin libraries: the default `library_path` prefix.
pub const FALCO_PLUGINS_DIR: &str = "/usr/share/falco/plugins";

/// The three shared artifact kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ArtifactKind {
    /// `Rulesfile`.
    Rulesfile,
    /// `Plugin`.
    Plugin,
    /// `Config`.
    Config,
}

impl ArtifactKind {
    /// Every kind, in the order they are reconciled.
    pub const ALL: [Self; 3] = [Self::Rulesfile, Self::Plugin, Self::Config];

    /// The Kubernetes kind.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rulesfile => "Rulesfile",
            Self::Plugin => "Plugin",
            Self::Config => "Config",
        }
    }

    /// Whether a store key belongs to an artifact of this kind.
    pub fn owns(self, key: &ArtifactKey) -> bool {
        matches!(
            (self, key.kind),
            (Self::Rulesfile, Kind::Rulesfile)
                | (Self::Plugin, Kind::PluginBinary)
                | (Self::Config, Kind::Config)
        )
    }
}

/// The registry part of an OCI source, with the Secret still to read.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OciSource {
    /// Full reference: `host/repository:tag` or `host/repository@sha256:…`.
    pub reference: String,
    /// Registry `host[:port]`.
    pub host: String,
    /// The repository path after the host (`registry.name`'s path prefix included), for
    /// matching image-pull Secret keys.
    pub path: String,
    /// Whether the reference pins a digest.
    pub pinned: bool,
    /// Reach the registry over plain HTTP.
    pub plain_http: bool,
    /// Accept any certificate.
    pub insecure_skip_verify: bool,
    /// The Secret with `username`/`password`, read by name when pulling.
    pub secret: Option<String>,
    /// The cosign signature the CR asks for, if any.
    pub cosign: Option<CosignPolicy>,
}

/// The cosign signature an artifact must carry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CosignPolicy {
    /// A signature that verifies with this PEM public key.
    Key(String),
    /// A keyless signature by this signer, checked against the trusted root.
    Keyless(KeylessIdentity),
    /// The CR's `verify.cosign` sets both or neither (only possible where its CEL rule is not
    /// enforced): refused, never treated as "no verification".
    Ambiguous,
}

impl CosignPolicy {
    /// The policy a CR's `verify` asks for.
    pub fn of(verify: &SignatureVerification) -> Self {
        match (&verify.cosign.public_key, &verify.cosign.keyless) {
            (Some(pem), None) => Self::Key(pem.clone()),
            (None, Some(k)) => Self::Keyless(KeylessIdentity {
                identity: k.identity.clone(),
                issuer: k.issuer.clone(),
            }),
            _ => Self::Ambiguous,
        }
    }
}

impl OciSource {
    fn new(oci: &OciArtifact, cosign: Option<CosignPolicy>) -> Self {
        let registry = oci.registry.clone().unwrap_or_default();
        // As upstream: `registry.name` may carry a repository path prefix
        // (`myreg.azurecr.io/falco`); the reference is `<name>/<repository>` and the host, which
        // credentials and transport settings are for, is the part before the first `/`.
        let name = registry
            .name
            .map(|n| n.trim_end_matches('/').to_owned())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| DEFAULT_REGISTRY.to_owned());
        let host = name.split('/').next().unwrap_or(&name).to_owned();
        let path = match name.split_once('/') {
            Some((_, prefix)) => format!("{prefix}/{}", oci.image.repository),
            None => oci.image.repository.clone(),
        };
        let pinned = oci.image.is_digest();
        let separator = if pinned { '@' } else { ':' };
        Self {
            reference: format!(
                "{name}/{}{separator}{}",
                oci.image.repository, oci.image.tag
            ),
            host,
            path,
            pinned,
            plain_http: registry.plain_http.unwrap_or(false),
            insecure_skip_verify: registry.tls.is_some_and(|t| t.insecure_skip_verify),
            secret: registry.auth.map(|a| a.secret_ref.name),
            cosign,
        }
    }
}

/// The uniform view of one shared artifact CR.
#[derive(Debug, Clone, PartialEq)]
pub struct Artifact {
    /// Which CR kind.
    pub kind: ArtifactKind,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.generation`.
    pub generation: i64,
    /// Load order (Plugin: 50, as upstream).
    pub priority: i32,
    /// Node selector.
    pub selector: Option<LabelSelector>,
    /// OCI source.
    pub oci: Option<OciSource>,
    /// Inline YAML source (`inlineRules` or `config`).
    pub inline: Option<serde_json::Value>,
    /// ConfigMap source.
    pub config_map: Option<String>,
    /// Plugin entry (Plugin only).
    pub plugin: Option<falco_api::PluginConfig>,
}

impl From<&Rulesfile> for Artifact {
    fn from(r: &Rulesfile) -> Self {
        let key = r.spec.verify.as_ref().map(CosignPolicy::of);
        Self {
            kind: ArtifactKind::Rulesfile,
            name: r.name_any(),
            generation: r.metadata.generation.unwrap_or(0),
            priority: r.spec.priority,
            selector: r.spec.selector.clone(),
            oci: r.spec.oci_artifact.as_ref().map(|o| OciSource::new(o, key)),
            inline: r.spec.inline_rules.clone(),
            config_map: r.spec.config_map_ref.as_ref().map(|c| c.name.clone()),
            plugin: None,
        }
    }
}

impl From<&Plugin> for Artifact {
    fn from(p: &Plugin) -> Self {
        let key = p.spec.verify.as_ref().map(CosignPolicy::of);
        Self {
            kind: ArtifactKind::Plugin,
            name: p.name_any(),
            generation: p.metadata.generation.unwrap_or(0),
            priority: falco_api::artifact::DEFAULT_PRIORITY,
            selector: p.spec.selector.clone(),
            oci: p.spec.oci_artifact.as_ref().map(|o| OciSource::new(o, key)),
            inline: None,
            config_map: None,
            plugin: Some(p.spec.config.clone().unwrap_or_default()),
        }
    }
}

impl From<&Config> for Artifact {
    fn from(c: &Config) -> Self {
        Self {
            kind: ArtifactKind::Config,
            name: c.name_any(),
            generation: c.metadata.generation.unwrap_or(0),
            priority: c.spec.priority,
            selector: c.spec.selector.clone(),
            oci: None,
            inline: c.spec.config.clone(),
            config_map: c.spec.config_map_ref.as_ref().map(|r| r.name.clone()),
            plugin: None,
        }
    }
}

/// A file whose content is known without the network.
#[derive(Debug, Clone)]
pub struct PlannedFile {
    /// Store key.
    pub key: ArtifactKey,
    /// Content.
    pub data: Vec<u8>,
}

/// What one artifact needs on disk: the build step's output.
#[derive(Debug)]
pub struct Plan {
    /// Priority of every file (validated, 0–99).
    pub priority: u8,
    /// Inline and ConfigMap files, content known.
    pub files: Vec<PlannedFile>,
    /// The OCI file to pull, with its store key.
    pub oci: Option<(ArtifactKey, OciSource, ArtifactType)>,
    /// Every key this artifact owns with its current spec; other keys of it are removed.
    pub keys: Vec<ArtifactKey>,
    /// The plugin's entry in the aggregated plugins configuration.
    pub plugin_entry: Option<store::PluginConfig>,
    /// Sources that could not be dereferenced or validated (their previous files stay).
    pub errors: Vec<Error>,
}

/// A stable hash of everything a plan depends on (the spec and the ConfigMap it reads), to
/// skip unchanged artifacts without touching the disk.
pub fn input_hash(artifact: &Artifact, config_map: Option<&ConfigMap>) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    artifact.kind.hash(&mut h);
    artifact.priority.hash(&mut h);
    artifact.oci.hash(&mut h);
    artifact
        .inline
        .as_ref()
        .map(ToString::to_string)
        .hash(&mut h);
    artifact.config_map.hash(&mut h);
    serde_json::to_string(&artifact.plugin)
        .unwrap_or_default()
        .hash(&mut h);
    config_map
        .map(|c| c.metadata.resource_version.clone())
        .hash(&mut h);
    h.finish()
}

fn yaml_of(value: &serde_json::Value, what: &'static str) -> Result<Vec<u8>> {
    serde_yaml::to_string(value)
        .map(String::into_bytes)
        .map_err(|e| Error::Invalid {
            what,
            reason: e.to_string(),
        })
}

/// A rules file is checked before it is written ([`crate::rules`]); other kinds pass.
pub fn checked(kind: Kind, medium: Medium, data: Vec<u8>) -> Result<Vec<u8>> {
    if kind != Kind::Rulesfile {
        return Ok(data);
    }
    crate::rules::check(&data).map_err(|refusal| Error::InvalidRules {
        medium: medium.as_str(),
        refusal,
    })?;
    Ok(data)
}

fn config_map_data(name: &str, config_map: Option<&ConfigMap>, key: &str) -> Result<Vec<u8>> {
    let reference = |detail: String, missing_key| Error::Reference {
        kind: "ConfigMap",
        name: name.to_owned(),
        detail,
        missing_key,
    };
    let Some(cm) = config_map else {
        return Err(reference(
            "not found in the artifact's namespace".into(),
            false,
        ));
    };
    cm.data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|v| v.clone().into_bytes())
        .ok_or_else(|| reference(format!("has no key {key:?}"), true))
}

/// The build step: pure, no client. `config_map` is the dereferenced ConfigMap the artifact
/// names (if it names one and it exists).
pub fn build(artifact: &Artifact, config_map: Option<&ConfigMap>) -> Plan {
    let mut errors = Vec::new();
    let priority = match u8::try_from(artifact.priority) {
        Ok(p) if p <= store::MAX_PRIORITY => p,
        _ => {
            errors.push(Error::Invalid {
                what: "priority",
                reason: format!("{} is not within 0–99", artifact.priority),
            });
            store::MAX_PRIORITY.min(50)
        }
    };
    let name = artifact.name.as_str();
    let (kind, inline_what, cm_key) = match artifact.kind {
        ArtifactKind::Rulesfile => (Kind::Rulesfile, "inlineRules", CONFIGMAP_RULES_KEY),
        ArtifactKind::Config => (Kind::Config, "config", CONFIGMAP_CONFIG_KEY),
        ArtifactKind::Plugin => (Kind::PluginBinary, "", ""),
    };
    let mut files = Vec::new();
    let mut keys = Vec::new();
    if let Some(value) = &artifact.inline {
        let key = ArtifactKey::new(kind, name, Medium::Inline);
        keys.push(key.clone());
        match yaml_of(value, inline_what).and_then(|d| checked(kind, Medium::Inline, d)) {
            Ok(data) => files.push(PlannedFile { key, data }),
            Err(e) => errors.push(e),
        }
    }
    if let Some(cm_name) = &artifact.config_map {
        let key = ArtifactKey::new(kind, name, Medium::ConfigMap);
        keys.push(key.clone());
        match config_map_data(cm_name, config_map, cm_key)
            .and_then(|d| checked(kind, Medium::ConfigMap, d))
        {
            Ok(data) => files.push(PlannedFile { key, data }),
            Err(e) => errors.push(e),
        }
    }
    let oci = artifact.oci.as_ref().map(|source| {
        let key = ArtifactKey::new(kind, name, Medium::Oci);
        keys.push(key.clone());
        let artifact_type = if artifact.kind == ArtifactKind::Plugin {
            ArtifactType::Plugin
        } else {
            ArtifactType::Rulesfile
        };
        (key, source.clone(), artifact_type)
    });
    if keys.is_empty() && artifact.kind != ArtifactKind::Plugin {
        errors.push(Error::Invalid {
            what: "spec",
            reason: match artifact.kind {
                ArtifactKind::Rulesfile => {
                    "no source: set ociArtifact, inlineRules or configMapRef"
                }
                _ => "no source: set config or configMapRef",
            }
            .to_owned(),
        });
    }
    let plugin_entry = artifact.plugin.as_ref().and_then(|config| {
        let init_config = match config
            .init_config
            .as_ref()
            .map(serde_yaml::to_value)
            .transpose()
        {
            Ok(v) => v,
            Err(e) => {
                errors.push(Error::Invalid {
                    what: "initConfig",
                    reason: e.to_string(),
                });
                return None;
            }
        };
        Some(store::PluginConfig {
            name: config.name.clone().unwrap_or_else(|| name.to_owned()),
            library_path: config
                .library_path
                .clone()
                .unwrap_or_else(|| format!("{FALCO_PLUGINS_DIR}/{name}.so")),
            init_config,
            open_params: config.open_params.clone(),
        })
    });
    Plan {
        priority,
        files,
        oci,
        keys,
        plugin_entry,
        errors,
    }
}

/// Selected artifacts by kind and name.
pub type Selected = BTreeMap<(ArtifactKind, String), Artifact>;

#[cfg(test)]
mod tests {
    use super::*;
    use falco_api::{ConfigMapRef, ImageSpec, RegistryConfig, RulesfileSpec};

    fn rulesfile(spec: RulesfileSpec) -> Artifact {
        let mut r = Rulesfile::new("rules", spec);
        r.metadata.generation = Some(3);
        Artifact::from(&r)
    }

    fn spec() -> RulesfileSpec {
        RulesfileSpec {
            verify: None,
            oci_artifact: None,
            inline_rules: None,
            config_map_ref: None,
            priority: 50,
            selector: None,
        }
    }

    #[test]
    fn a_registry_name_with_a_path_prefixes_the_repository_as_upstream() {
        let source = |name: Option<&str>, repository: &str| {
            OciSource::new(
                &OciArtifact {
                    image: ImageSpec {
                        repository: repository.into(),
                        tag: "1".into(),
                    },
                    registry: Some(RegistryConfig {
                        name: name.map(str::to_owned),
                        ..RegistryConfig::default()
                    }),
                },
                None,
            )
        };
        let s = source(Some("myreg.azurecr.io/falco"), "rules");
        assert_eq!(s.reference, "myreg.azurecr.io/falco/rules:1");
        assert_eq!(s.host, "myreg.azurecr.io");
        assert_eq!(s.path, "falco/rules");
        let s = source(Some("127.0.0.1:5000/team/sub"), "team__x/rules");
        assert_eq!(s.reference, "127.0.0.1:5000/team/sub/team__x/rules:1");
        assert_eq!(s.host, "127.0.0.1:5000");
        let s = source(None, "falcosecurity/rules/falco-rules");
        assert_eq!(s.reference, "ghcr.io/falcosecurity/rules/falco-rules:1");
        assert_eq!(s.host, "ghcr.io");
    }

    #[test]
    fn a_broken_rules_file_is_refused_before_it_is_planned() {
        let mut s = spec();
        s.config_map_ref = Some(ConfigMapRef { name: "cm".into() });
        s.inline_rules = Some(serde_json::json!([{"macro": "m"}]));
        let artifact = rulesfile(s);
        let cm = ConfigMap {
            data: Some(
                [(
                    "rules.yaml".to_owned(),
                    "- list: l\n  items: [a\n".to_owned(),
                )]
                .into(),
            ),
            ..ConfigMap::default()
        };
        let plan = build(&artifact, Some(&cm));
        assert!(plan.files.is_empty(), "nothing to write");
        let reasons: Vec<_> = plan.errors.iter().map(Error::reason).collect();
        assert_eq!(reasons, ["InvalidRulesfile", "InvalidRulesfile"]);
        let messages: Vec<String> = plan.errors.iter().map(ToString::to_string).collect();
        assert!(
            messages[0].contains("inline rules") && messages[0].contains("line 1 column 1"),
            "{messages:?}"
        );
        assert!(
            messages[1].contains("configmap rules") && messages[1].contains("not YAML"),
            "{messages:?}"
        );
    }

    #[test]
    fn every_source_becomes_a_file_or_an_error() {
        let mut s = spec();
        s.inline_rules = Some(serde_json::json!([{"macro": "r", "condition": "evt.num > 0"}]));
        s.config_map_ref = Some(ConfigMapRef { name: "cm".into() });
        s.oci_artifact = Some(OciArtifact {
            image: ImageSpec {
                repository: "falcosecurity/rules/falco-rules".into(),
                tag: "4".into(),
            },
            registry: Some(RegistryConfig {
                name: Some("127.0.0.1:5000".into()),
                plain_http: Some(true),
                ..RegistryConfig::default()
            }),
        });
        let artifact = rulesfile(s);
        let plan = build(&artifact, None);
        assert_eq!(plan.priority, 50);
        assert_eq!(plan.keys.len(), 3);
        assert_eq!(plan.files.len(), 1);
        assert!(String::from_utf8_lossy(&plan.files[0].data).contains("macro: r"));
        assert_eq!(plan.errors.len(), 1);
        assert_eq!(plan.errors[0].reason(), "ConfigMapNotFound");
        let (_, source, _) = plan.oci.unwrap();
        assert_eq!(
            source.reference,
            "127.0.0.1:5000/falcosecurity/rules/falco-rules:4"
        );
        assert!(source.plain_http);

        let mut cm = ConfigMap {
            data: Some([("other".to_owned(), "x".to_owned())].into()),
            ..ConfigMap::default()
        };
        assert_eq!(
            build(&artifact, Some(&cm)).errors[0].reason(),
            "ConfigMapKeyMissing"
        );
        cm.data = Some(
            [(
                "rules.yaml".to_owned(),
                "- rule: cm\n  enabled: false\n".to_owned(),
            )]
            .into(),
        );
        let plan = build(&artifact, Some(&cm));
        assert!(plan.errors.is_empty());
        assert_eq!(plan.files.len(), 2);
        assert_ne!(
            input_hash(&artifact, Some(&cm)),
            input_hash(&artifact, None)
        );
    }

    #[test]
    fn no_source_and_digest_pins() {
        let plan = build(&rulesfile(spec()), None);
        assert_eq!(plan.errors[0].reason(), "InvalidSpec");
        let mut s = spec();
        s.oci_artifact = Some(OciArtifact {
            image: ImageSpec {
                repository: "r".into(),
                tag: format!("sha256:{}", "a".repeat(64)),
            },
            registry: None,
        });
        let source = rulesfile(s).oci.unwrap();
        assert!(source.pinned);
        assert_eq!(
            source.reference,
            format!("ghcr.io/r@sha256:{}", "a".repeat(64))
        );
    }

    #[test]
    fn plugin_entry_defaults_as_upstream() {
        let plugin = Plugin::new(
            "json",
            falco_api::PluginSpec {
                verify: None,
                oci_artifact: None,
                config: None,
                selector: None,
            },
        );
        let plan = build(&Artifact::from(&plugin), None);
        let entry = plan.plugin_entry.unwrap();
        assert_eq!(entry.name, "json");
        assert_eq!(entry.library_path, "/usr/share/falco/plugins/json.so");
        assert!(plan.errors.is_empty());
        assert!(plan.keys.is_empty());
    }
}
