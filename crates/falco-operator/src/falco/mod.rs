//! The Falco controller's pure steps: [`validate`] and [`build()`] (a `Falco` CR to its children).

pub mod build;
pub mod config;

pub use build::{
    DRIVER_LOADER_CONTAINER, DriverPlan, FalcoChildren, Workload, build, driver_loader,
    driver_plan, resolve_version, validate,
};

/// Default Falco image repository.
pub const FALCO_IMAGE_REPOSITORY: &str = "docker.io/falcosecurity/falco";
/// Built-in Falco version (image tag) when neither the pod template nor `spec.version` sets one.
pub const DEFAULT_FALCO_VERSION: &str = "0.44.1";
/// Name of the Falco container (a reserved name users can target in `podTemplateSpec`).
pub const FALCO_CONTAINER: &str = "falco";
/// Name of the artifact-operator sidecar (a reserved name users can target in `podTemplateSpec`).
pub const ARTIFACT_OPERATOR_CONTAINER: &str = "artifact-operator";
/// Port of the artifact operator's `/healthz` and `/readyz`.
pub const ARTIFACT_OPERATOR_PROBE_PORT: i32 = 8081;
/// Key of `falco.yaml` in the generated ConfigMap.
pub const CONFIG_KEY: &str = "falco.yaml";
