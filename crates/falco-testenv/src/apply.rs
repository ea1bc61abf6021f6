//! Applying YAML manifests (like `kubectl apply --server-side`) without kubectl: the demo and the
//! benchmarks must not depend on a kubectl matching the API server's version.

use std::path::Path;

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::{Discovery, Scope};
use kube::{Client, ResourceExt};
use serde::Deserialize;

use crate::Error;

/// Field manager used for applied manifests.
const FIELD_MANAGER: &str = "falco-testenv";

/// Reads every YAML document of `path` (a file, or the `.yaml`/`.yml` files of a directory in
/// name order).
pub fn read_manifests(path: &Path) -> Result<Vec<DynamicObject>, Error> {
    let io = |source| Error::Io {
        path: path.to_owned(),
        source,
    };
    let mut files = Vec::new();
    if path.is_dir() {
        for entry in std::fs::read_dir(path).map_err(io)? {
            let file = entry.map_err(io)?.path();
            if matches!(
                file.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml")
            ) {
                files.push(file);
            }
        }
        files.sort();
    } else {
        files.push(path.to_owned());
    }
    let mut objects = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).map_err(|source| Error::Io {
            path: file.clone(),
            source,
        })?;
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value = serde_yaml::Value::deserialize(doc)
                .map_err(|e| Error::Manifest(format!("{}: {e}", file.display())))?;
            if value.is_null() {
                continue;
            }
            let object: DynamicObject = serde_yaml::from_value(value)
                .map_err(|e| Error::Manifest(format!("{}: {e}", file.display())))?;
            objects.push(object);
        }
    }
    Ok(objects)
}

/// Server-side applies `objects`, namespaced ones into `namespace` unless they name their own.
/// Returns `kind/name` of each applied object.
pub async fn apply_manifests(
    client: &Client,
    namespace: &str,
    objects: &[DynamicObject],
) -> Result<Vec<String>, Error> {
    let discovery = Discovery::new(client.clone()).run().await?;
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut applied = Vec::new();
    for object in objects {
        let types = object.types.as_ref().ok_or_else(|| {
            Error::Manifest(format!("{} has no apiVersion/kind", object.name_any()))
        })?;
        let gvk = GroupVersionKind::try_from(types)
            .map_err(|e| Error::Manifest(format!("{}: {e}", object.name_any())))?;
        let (resource, caps) = discovery
            .resolve_gvk(&gvk)
            .ok_or_else(|| Error::Manifest(format!("the API server does not serve {gvk:?}")))?;
        let api: Api<DynamicObject> = match caps.scope {
            Scope::Namespaced => Api::namespaced_with(
                client.clone(),
                object.metadata.namespace.as_deref().unwrap_or(namespace),
                &resource,
            ),
            Scope::Cluster => Api::all_with(client.clone(), &resource),
        };
        let name = object.name_any();
        api.patch(&name, &params, &Patch::Apply(object)).await?;
        applied.push(format!("{}/{name}", resource.kind));
    }
    Ok(applied)
}
