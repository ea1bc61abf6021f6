//! The build step's output in one shape for both controllers: a list of [`Child`] objects in apply
//! order, each stamped with the SHA-256 of its own content ([`APPLIED_HASH_ANNOTATION`]).
//!
//! The hash is what makes a no-op reconcile free: the apply step compares it with the hash on the
//! cached child and sends nothing when they are equal (see [`crate::apply`]).

use falco_api::WorkloadType;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::Resource;
use kube::api::ApiResource;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::component::ComponentChildren;
use crate::falco::{FalcoChildren, Workload};
use crate::{Error, Result};

/// Annotation holding the SHA-256 (hex) of the child as this operator last applied it, computed
/// over the object without this annotation.
pub const APPLIED_HASH_ANNOTATION: &str = "instance.falcosecurity.dev/applied-hash";

/// The kinds of children, in apply order: identity and permissions first (pods reference the
/// ServiceAccount at creation), then configuration and Service, the workload last (a pod must never
/// start without its permissions or its `falco.yaml`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChildKind {
    /// `v1/ServiceAccount`.
    ServiceAccount,
    /// `rbac.authorization.k8s.io/v1/Role`.
    Role,
    /// `rbac.authorization.k8s.io/v1/RoleBinding`.
    RoleBinding,
    /// `rbac.authorization.k8s.io/v1/ClusterRole` (cluster-scoped).
    ClusterRole,
    /// `rbac.authorization.k8s.io/v1/ClusterRoleBinding` (cluster-scoped).
    ClusterRoleBinding,
    /// `v1/ConfigMap`.
    ConfigMap,
    /// `v1/Service`.
    Service,
    /// `apps/v1/DaemonSet`.
    DaemonSet,
    /// `apps/v1/Deployment`.
    Deployment,
}

impl ChildKind {
    /// Every kind, in apply order.
    pub const ALL: [Self; 9] = [
        Self::ServiceAccount,
        Self::Role,
        Self::RoleBinding,
        Self::ClusterRole,
        Self::ClusterRoleBinding,
        Self::ConfigMap,
        Self::Service,
        Self::DaemonSet,
        Self::Deployment,
    ];

    /// The Kubernetes kind name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ServiceAccount => "ServiceAccount",
            Self::Role => "Role",
            Self::RoleBinding => "RoleBinding",
            Self::ClusterRole => "ClusterRole",
            Self::ClusterRoleBinding => "ClusterRoleBinding",
            Self::ConfigMap => "ConfigMap",
            Self::Service => "Service",
            Self::DaemonSet => "DaemonSet",
            Self::Deployment => "Deployment",
        }
    }

    /// Whether objects of this kind live outside namespaces.
    pub fn is_cluster_scoped(self) -> bool {
        matches!(self, Self::ClusterRole | Self::ClusterRoleBinding)
    }

    /// The API resource, for dynamic requests.
    pub fn api_resource(self) -> ApiResource {
        match self {
            Self::ServiceAccount => ApiResource::erase::<ServiceAccount>(&()),
            Self::Role => ApiResource::erase::<Role>(&()),
            Self::RoleBinding => ApiResource::erase::<RoleBinding>(&()),
            Self::ClusterRole => ApiResource::erase::<ClusterRole>(&()),
            Self::ClusterRoleBinding => ApiResource::erase::<ClusterRoleBinding>(&()),
            Self::ConfigMap => ApiResource::erase::<ConfigMap>(&()),
            Self::Service => ApiResource::erase::<Service>(&()),
            Self::DaemonSet => ApiResource::erase::<DaemonSet>(&()),
            Self::Deployment => ApiResource::erase::<Deployment>(&()),
        }
    }

    /// The workload kind of a `spec.type`.
    pub fn of_workload(kind: WorkloadType) -> Self {
        match kind {
            WorkloadType::DaemonSet => Self::DaemonSet,
            WorkloadType::Deployment => Self::Deployment,
        }
    }
}

/// One child ready for Server-Side Apply.
#[derive(Clone, Debug, PartialEq)]
pub struct Child {
    /// Its kind.
    pub kind: ChildKind,
    /// Its namespace (`None` for cluster-scoped kinds).
    pub namespace: Option<String>,
    /// Its name.
    pub name: String,
    /// The object to apply, [`APPLIED_HASH_ANNOTATION`] included.
    pub object: Value,
    /// The value of [`APPLIED_HASH_ANNOTATION`].
    pub hash: String,
}

impl Child {
    /// Serialises `obj` and stamps it with its hash.
    pub fn new<K: Resource<DynamicType = ()> + Serialize>(
        kind: ChildKind,
        obj: &K,
    ) -> Result<Self> {
        let mut object = serde_json::to_value(obj).map_err(Error::Serialize)?;
        let meta = obj.meta();
        let hash = content_hash(&object);
        let annotations = object
            .pointer_mut("/metadata")
            .and_then(Value::as_object_mut)
            .ok_or(Error::Serialize(serde::ser::Error::custom("no metadata")))?
            .entry("annotations")
            .or_insert_with(|| Value::Object(serde_json::Map::new()));
        if let Value::Object(map) = annotations {
            map.insert(
                APPLIED_HASH_ANNOTATION.to_owned(),
                Value::String(hash.clone()),
            );
        }
        Ok(Self {
            kind,
            namespace: meta.namespace.clone(),
            name: meta.name.clone().unwrap_or_default(),
            object,
            hash,
        })
    }
}

/// SHA-256 (hex) of a JSON value, as serialised (serde_json writes object keys sorted, so equal
/// values hash equally).
pub fn content_hash(value: &Value) -> String {
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    hex::encode(Sha256::digest(bytes))
}

/// What one CR wants: its children in apply order, the workload they end with, and the version
/// for the status.
#[derive(Clone, Debug, PartialEq)]
pub struct Desired {
    /// Children in apply order.
    pub children: Vec<Child>,
    /// The workload kind (availability and `status.resourceType`).
    pub workload: WorkloadType,
    /// The resolved version (`status.version`).
    pub version: String,
}

impl Desired {
    /// Whether a child of `kind` is wanted.
    pub fn wants(&self, kind: ChildKind) -> bool {
        self.children.iter().any(|c| c.kind == kind)
    }
}

impl FalcoChildren {
    /// The children in apply order.
    pub fn into_children(self) -> Result<Vec<Child>> {
        // Destructured without `..`: a new child kind is a compile error here until it is applied.
        let Self {
            service_account,
            role,
            role_binding,
            cluster_role,
            cluster_role_binding,
            service,
            config_map,
            workload,
        } = self;
        Ok(vec![
            Child::new(ChildKind::ServiceAccount, &service_account)?,
            Child::new(ChildKind::Role, &role)?,
            Child::new(ChildKind::RoleBinding, &role_binding)?,
            Child::new(ChildKind::ClusterRole, &cluster_role)?,
            Child::new(ChildKind::ClusterRoleBinding, &cluster_role_binding)?,
            Child::new(ChildKind::ConfigMap, &config_map)?,
            Child::new(ChildKind::Service, &service)?,
            match &workload {
                Workload::DaemonSet(ds) => Child::new(ChildKind::DaemonSet, ds)?,
                Workload::Deployment(d) => Child::new(ChildKind::Deployment, d)?,
            },
        ])
    }
}

impl ComponentChildren {
    /// The children in apply order.
    pub fn into_children(self) -> Result<Vec<Child>> {
        let Self {
            service_account,
            role,
            cluster_role,
            service,
            deployment,
        } = self;
        let mut out = vec![Child::new(ChildKind::ServiceAccount, &service_account)?];
        if let Some((role, binding)) = &role {
            out.push(Child::new(ChildKind::Role, role)?);
            out.push(Child::new(ChildKind::RoleBinding, binding)?);
        }
        if let Some((role, binding)) = &cluster_role {
            out.push(Child::new(ChildKind::ClusterRole, role)?);
            out.push(Child::new(ChildKind::ClusterRoleBinding, binding)?);
        }
        out.push(Child::new(ChildKind::Service, &service)?);
        out.push(Child::new(ChildKind::Deployment, &deployment)?);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn cm(data: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some("falco".to_owned()),
                namespace: Some("ns".to_owned()),
                ..ObjectMeta::default()
            },
            data: Some([("falco.yaml".to_owned(), data.to_owned())].into()),
            ..ConfigMap::default()
        }
    }

    #[test]
    fn the_hash_follows_the_content_and_is_stamped_on_the_object() {
        let a = Child::new(ChildKind::ConfigMap, &cm("a: 1")).unwrap();
        let again = Child::new(ChildKind::ConfigMap, &cm("a: 1")).unwrap();
        let b = Child::new(ChildKind::ConfigMap, &cm("a: 2")).unwrap();
        assert_eq!(a.hash, again.hash);
        assert_ne!(a.hash, b.hash);
        assert_eq!(a.hash.len(), 64);
        assert_eq!(
            a.object["metadata"]["annotations"][APPLIED_HASH_ANNOTATION],
            a.hash
        );
        assert_eq!(
            (a.namespace.as_deref(), a.name.as_str()),
            (Some("ns"), "falco")
        );
    }

    #[test]
    fn apply_order_puts_the_workload_last_and_rbac_first() {
        let order: Vec<_> = ChildKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(order.first(), Some(&"ServiceAccount"));
        assert_eq!(&order[7..], ["DaemonSet", "Deployment"]);
        assert!(ChildKind::ClusterRole.is_cluster_scoped());
        assert!(!ChildKind::Role.is_cluster_scoped());
    }
}
