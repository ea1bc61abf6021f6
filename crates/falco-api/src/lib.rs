//! Custom resource types of the Falco operators.
//!
//! Two API groups, field-compatible with the upstream Go operator v0.4.1, so a manifest written for
//! upstream applies unchanged:
//!
//! | group | kinds | reconciled by |
//! |---|---|---|
//! | `instance.falcosecurity.dev/v1alpha1` | [`Falco`], [`Component`] | `falco-operator` |
//! | `artifact.falcosecurity.dev/v1alpha1` | [`Rulesfile`], [`Plugin`], [`Config`] | `falco-artifact-operator` (sidecar) |
//!
//! Validation lives in the schema wherever the API server can enforce it (enums, ranges, required
//! fields, CEL rules), so bad input is refused at `kubectl apply` time with a message a person can act
//! on, rather than surfacing later as a failed reconcile. Where this crate is stricter than upstream,
//! the rule's doc comment says so.
//!
//! The CRD YAML in `deploy/crds/` is generated from these types by the binaries' `crd` subcommand
//! ([`instance_crds`], [`artifact_crds`], [`to_yaml`]) and a test fails when it drifts.

pub mod artifact;
pub mod common;
pub mod index;
pub mod instance;
pub mod reference;

pub use artifact::{
    Config, ConfigSpec, CosignVerification, KeylessVerification, NodeArtifact, NodeArtifacts,
    NodeArtifactsSpec, NodeArtifactsStatus, Plugin, PluginConfig, PluginSpec, Rulesfile,
    RulesfileSpec, SignatureVerification,
};
pub use common::{
    ArtifactStatus, ConfigMapRef, ImageSpec, OciArtifact, RegistryAuth, RegistryConfig, SecretRef,
    TlsConfig,
};
pub use instance::{
    Component, ComponentSpec, ComponentType, ComponentTypeSpec, DriverKind, DriverSpec,
    DriverSummary, FailingKernel, Falco, FalcoSpec, InstanceStatus, KeyRef, KeySelector,
    WorkloadType,
};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSON, JSONSchemaProps,
};
use kube::CustomResourceExt;

/// API group of [`Falco`] and [`Component`].
pub const INSTANCE_GROUP: &str = "instance.falcosecurity.dev";
/// API group of [`Rulesfile`], [`Plugin`] and [`Config`].
pub const ARTIFACT_GROUP: &str = "artifact.falcosecurity.dev";
/// The only served and stored version of both groups.
pub const VERSION: &str = "v1alpha1";

/// The CRDs reconciled by the instance operator, in a stable order.
pub fn instance_crds() -> Vec<CustomResourceDefinition> {
    vec![Falco::crd(), Component::crd()]
        .into_iter()
        .map(finish)
        .collect()
}

/// The CRDs reconciled by the artifact operator, in a stable order.
pub fn artifact_crds() -> Vec<CustomResourceDefinition> {
    let mut crds: Vec<CustomResourceDefinition> =
        vec![Rulesfile::crd(), Plugin::crd(), Config::crd()]
            .into_iter()
            .map(finish)
            .map(|mut crd| {
                // The default upstream declares on artifact status (one Programmed=Unknown/Pending
                // condition), which the derive cannot express.
                if let Some(status) = root_property(&mut crd, "status") {
                    status.default = Some(JSON(common::pending_artifact_status()));
                }
                crd
            })
            .collect();
    crds.push(finish(NodeArtifacts::crd()));
    crds
}

/// Metadata fields kept inside an embedded pod template, as controller-gen's
/// `generateEmbeddedObjectMeta` keeps them; the server-populated rest is pruned.
const EMBEDDED_METADATA_FIELDS: [&str; 5] =
    ["annotations", "finalizers", "labels", "name", "namespace"];

/// What the derive cannot express, applied to every CRD:
/// - a `spec` whose fields are all optional (all kinds but Component) is itself optional and defaults to
///   `{}`, as in upstream's CRDs, so a manifest without `spec` applies; kinds that cannot be valid
///   without content (Component) keep `spec` required;
/// - `spec.podTemplateSpec.metadata` keeps only the fields a template may set.
fn finish(mut crd: CustomResourceDefinition) -> CustomResourceDefinition {
    let mut spec_optional = false;
    if let Some(spec) = root_property(&mut crd, "spec") {
        spec_optional = spec.required.as_ref().is_none_or(Vec::is_empty)
            && spec
                .x_kubernetes_validations
                .as_ref()
                .is_none_or(Vec::is_empty);
        if spec_optional {
            spec.default = Some(JSON(serde_json::json!({})));
        }
        let metadata = spec
            .properties
            .as_mut()
            .and_then(|p| p.get_mut("podTemplateSpec"))
            .and_then(|t| t.properties.as_mut())
            .and_then(|p| p.get_mut("metadata"))
            .and_then(|m| m.properties.as_mut());
        if let Some(fields) = metadata {
            fields.retain(|name, _| EMBEDDED_METADATA_FIELDS.contains(&name.as_str()));
        }
    }
    if spec_optional {
        for version in &mut crd.spec.versions {
            let root = version
                .schema
                .as_mut()
                .and_then(|s| s.open_api_v3_schema.as_mut());
            if let Some(required) = root.and_then(|r| r.required.as_mut()) {
                required.retain(|r| r != "spec");
            }
        }
    }
    crd
}

fn root_property<'a>(
    crd: &'a mut CustomResourceDefinition,
    name: &str,
) -> Option<&'a mut JSONSchemaProps> {
    crd.spec
        .versions
        .first_mut()?
        .schema
        .as_mut()?
        .open_api_v3_schema
        .as_mut()?
        .properties
        .as_mut()?
        .get_mut(name)
}

/// Every CRD of the project, instance CRDs first.
pub fn all_crds() -> Vec<CustomResourceDefinition> {
    let mut crds = instance_crds();
    crds.extend(artifact_crds());
    crds
}

/// Renders CRDs as one multi-document YAML stream, as `kubectl apply -f` reads it.
pub fn to_yaml(crds: &[CustomResourceDefinition]) -> Result<String, serde_yaml::Error> {
    let mut out = String::new();
    for crd in crds {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(crd)?);
    }
    Ok(out)
}

/// File name of a CRD in `deploy/crds/`, as controller-gen names them: `<group>_<plural>.yaml`.
pub fn crd_file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}_{}.yaml", crd.spec.group, crd.spec.names.plural)
}

/// What a binary's `crd` subcommand does: with `output_dir`, writes one file per CRD named by
/// [`crd_file_name`] and returns the file names; without, returns the YAML stream to print.
pub fn render_crds(
    crds: &[CustomResourceDefinition],
    output_dir: Option<&std::path::Path>,
) -> std::io::Result<String> {
    let yaml = |crds: &[CustomResourceDefinition]| {
        to_yaml(crds).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    };
    let Some(dir) = output_dir else {
        return yaml(crds);
    };
    std::fs::create_dir_all(dir)?;
    let mut written = String::new();
    for crd in crds {
        let path = dir.join(crd_file_name(crd));
        std::fs::write(&path, yaml(std::slice::from_ref(crd))?)?;
        written.push_str(&format!("wrote {}\n", path.display()));
    }
    Ok(written)
}
