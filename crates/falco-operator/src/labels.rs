//! The labels and annotations the operator writes: a closed, documented set.
//!
//! | key | value | on | purpose |
//! |---|---|---|---|
//! | `app.kubernetes.io/name` | CR name | every child, pods | selector (as upstream) |
//! | `app.kubernetes.io/instance` | CR name | every child, pods | selector (as upstream) |
//! | `app.kubernetes.io/component` | `falco` or the component type | every child | what runs |
//! | `app.kubernetes.io/managed-by` | `falco-operator` | every child | orphan sweep, watches |
//! | `instance.falcosecurity.dev/owner-kind` | `Falco` or `Component` | every child | owner lookup |
//! | `instance.falcosecurity.dev/owner-namespace` | CR namespace | every child | owner lookup |
//! | `instance.falcosecurity.dev/owner-name` | CR name | every child | owner lookup |
//! | annotation `instance.falcosecurity.dev/config-checksum` | SHA-256 of the ConfigMap data | Falco pod template | pods roll on config change |
//!
//! The owner labels are how cluster-scoped children (which cannot carry an ownerReference) are
//! mapped back to their CR ([`owner_from_labels`]); names are never parsed. The CR's own labels
//! are copied onto every child too (as upstream), except keys matching `--excluded-labels`; the
//! operator's labels always win over them.

use std::collections::BTreeMap;

/// `app.kubernetes.io/name`: the CR name (selector label).
pub const NAME: &str = "app.kubernetes.io/name";
/// `app.kubernetes.io/instance`: the CR name (selector label).
pub const INSTANCE: &str = "app.kubernetes.io/instance";
/// `app.kubernetes.io/component`: `falco` or the component type.
pub const COMPONENT: &str = "app.kubernetes.io/component";
/// `app.kubernetes.io/managed-by`: always [`MANAGED_BY_VALUE`].
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// The value of [`MANAGED_BY`].
pub const MANAGED_BY_VALUE: &str = "falco-operator";
/// Kind of the owning CR.
pub const OWNER_KIND: &str = "instance.falcosecurity.dev/owner-kind";
/// Namespace of the owning CR.
pub const OWNER_NAMESPACE: &str = "instance.falcosecurity.dev/owner-namespace";
/// Name of the owning CR.
pub const OWNER_NAME: &str = "instance.falcosecurity.dev/owner-name";
/// Pod-template annotation holding the SHA-256 of the generated ConfigMap's data.
pub const CONFIG_CHECKSUM_ANNOTATION: &str = "instance.falcosecurity.dev/config-checksum";

/// The selector of a CR's pods and Service: `app.kubernetes.io/{name,instance}=<cr>`.
pub fn selector(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (NAME.to_owned(), name.to_owned()),
        (INSTANCE.to_owned(), name.to_owned()),
    ])
}

/// The operator's labels on every child of a CR: the selector, component, managed-by and owner.
pub fn managed(
    owner_kind: &str,
    namespace: &str,
    name: &str,
    component: &str,
) -> BTreeMap<String, String> {
    let mut labels = selector(name);
    labels.extend([
        (COMPONENT.to_owned(), component.to_owned()),
        (MANAGED_BY.to_owned(), MANAGED_BY_VALUE.to_owned()),
        (OWNER_KIND.to_owned(), owner_kind.to_owned()),
        (OWNER_NAMESPACE.to_owned(), namespace.to_owned()),
        (OWNER_NAME.to_owned(), name.to_owned()),
    ]);
    labels
}

/// A label selector string matching every child of one CR (for the orphan sweep and cleanup).
pub fn owner_selector(owner_kind: &str, namespace: &str, name: &str) -> String {
    format!(
        "{MANAGED_BY}={MANAGED_BY_VALUE},{OWNER_KIND}={owner_kind},{OWNER_NAMESPACE}={namespace},{OWNER_NAME}={name}"
    )
}

/// The owning CR of a child, from its labels: `(kind, namespace, name)`, or `None` when the
/// object is not managed by this operator.
pub fn owner_from_labels(labels: &BTreeMap<String, String>) -> Option<(&str, &str, &str)> {
    if labels.get(MANAGED_BY).map(String::as_str) != Some(MANAGED_BY_VALUE) {
        return None;
    }
    Some((
        labels.get(OWNER_KIND)?.as_str(),
        labels.get(OWNER_NAMESPACE)?.as_str(),
        labels.get(OWNER_NAME)?.as_str(),
    ))
}

/// The CR's labels minus the keys matching one of `excluded` (globs where `*` matches any run of
/// characters, `/` included).
pub fn filter(labels: &BTreeMap<String, String>, excluded: &[String]) -> BTreeMap<String, String> {
    labels
        .iter()
        .filter(|(key, _)| !excluded.iter().any(|pattern| glob_match(pattern, key)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// `*`-only glob matching (no other metacharacters), iterative with backtracking to the last star.
fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// Layers label maps: later layers win.
pub(crate) fn layered<'a>(
    layers: impl IntoIterator<Item = &'a BTreeMap<String, String>>,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for layer in layers {
        out.extend(layer.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_star_matches_any_run_including_slashes() {
        assert!(glob_match("*", "a/b"));
        assert!(glob_match("example.com/*", "example.com/team"));
        assert!(glob_match("*/team", "a.b/c/team"));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(!glob_match("a*b", "aXXc"));
        assert!(!glob_match("team", "team2"));
        assert!(glob_match("team", "team"));
    }

    #[test]
    fn filter_drops_excluded_keys_only() {
        let labels = BTreeMap::from([
            ("keep".to_owned(), "1".to_owned()),
            ("argocd.argoproj.io/instance".to_owned(), "x".to_owned()),
        ]);
        let out = filter(&labels, &["argocd.argoproj.io/*".to_owned()]);
        assert_eq!(out, BTreeMap::from([("keep".to_owned(), "1".to_owned())]));
    }

    #[test]
    fn owner_round_trips_through_labels() {
        let labels = managed("Falco", "ns-a", "falco", "falco");
        assert_eq!(owner_from_labels(&labels), Some(("Falco", "ns-a", "falco")));
        let mut foreign = labels.clone();
        foreign.remove(MANAGED_BY);
        assert_eq!(owner_from_labels(&foreign), None);
        assert_eq!(
            owner_selector("Falco", "ns-a", "falco"),
            "app.kubernetes.io/managed-by=falco-operator,instance.falcosecurity.dev/owner-kind=Falco,\
             instance.falcosecurity.dev/owner-namespace=ns-a,instance.falcosecurity.dev/owner-name=falco"
        );
    }
}
