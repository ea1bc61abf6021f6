//! Matching a Kubernetes `LabelSelector` against this node's labels.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::{Error, Result};

/// Whether `selector` selects an object with `labels`. No selector selects every node, as
/// upstream; an empty selector (`{}`) too, as Kubernetes defines it.
pub fn matches(
    selector: Option<&LabelSelector>,
    labels: &BTreeMap<String, String>,
) -> Result<bool> {
    let Some(selector) = selector else {
        return Ok(true);
    };
    for (key, value) in selector.match_labels.iter().flatten() {
        if labels.get(key) != Some(value) {
            return Ok(false);
        }
    }
    for expr in selector.match_expressions.iter().flatten() {
        let value = labels.get(&expr.key);
        let values = expr.values.as_deref().unwrap_or_default();
        let ok = match expr.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            other => {
                return Err(Error::Invalid {
                    what: "node selector",
                    reason: format!("unknown operator {other:?} (In, NotIn, Exists, DoesNotExist)"),
                });
            }
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn expr(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: Some(values.iter().map(|v| (*v).to_owned()).collect()),
        }
    }

    #[test]
    fn selector_semantics() {
        let node = labels(&[("pool", "gpu"), ("zone", "a")]);
        assert!(matches(None, &node).unwrap());
        assert!(matches(Some(&LabelSelector::default()), &node).unwrap());
        let by_labels = |pairs: &[(&str, &str)]| LabelSelector {
            match_labels: Some(labels(pairs)),
            ..LabelSelector::default()
        };
        assert!(matches(Some(&by_labels(&[("pool", "gpu")])), &node).unwrap());
        assert!(!matches(Some(&by_labels(&[("pool", "cpu")])), &node).unwrap());
        assert!(!matches(Some(&by_labels(&[("missing", "x")])), &node).unwrap());
        let by_expr = |e| LabelSelector {
            match_expressions: Some(vec![e]),
            ..LabelSelector::default()
        };
        assert!(matches(Some(&by_expr(expr("zone", "In", &["a", "b"]))), &node).unwrap());
        assert!(!matches(Some(&by_expr(expr("zone", "NotIn", &["a"]))), &node).unwrap());
        assert!(matches(Some(&by_expr(expr("x", "NotIn", &["a"]))), &node).unwrap());
        assert!(matches(Some(&by_expr(expr("pool", "Exists", &[]))), &node).unwrap());
        assert!(!matches(Some(&by_expr(expr("pool", "DoesNotExist", &[]))), &node).unwrap());
        assert!(matches(Some(&by_expr(expr("pool", "Gt", &[]))), &node).is_err());
    }
}
