//! Checks that a rules file is one Falco can load before it is written: Falco stops on a bad
//! rules file, on every node at once, so a broken file must never reach a node.
//!
//! Checked: the content is YAML; it is empty or a list; every item is a mapping; a `rule`,
//! `macro` or `list` item has its name and the keys Falco requires for a new definition (`rule`:
//! `condition`, `output`, `desc`, `priority`; `macro`: `condition`; `list`: `items`), unless it
//! only changes an existing one (`append: true`, `override`, or a rule that only sets
//! `enabled`); `required_engine_version` is a scalar and `required_plugin_versions` a list.
//! Other top-level items are left to Falco (it warns about unknown items, it does not stop).
//! Whether conditions compile is Falco's own check, done in its dry run before a reload.

use serde_yaml::Value;

/// Why a rules file was refused, with the 1-based line and column of the offending place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Line (1-based).
    pub line: usize,
    /// Column (1-based).
    pub column: usize,
    /// What is wrong.
    pub reason: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "line {} column {}: {}",
            self.line, self.column, self.reason
        )
    }
}

/// Checks `data` as a Falco rules document.
pub fn check(data: &[u8]) -> Result<(), Refusal> {
    let value: Value = serde_yaml::from_slice(data).map_err(|e| {
        let (line, column) = e.location().map_or((1, 1), |l| (l.line(), l.column()));
        Refusal {
            line,
            column,
            reason: format!("not YAML: {e}"),
        }
    })?;
    let items = match value {
        Value::Null => return Ok(()),
        Value::Sequence(items) => items,
        other => {
            return Err(Refusal {
                line: 1,
                column: 1,
                reason: format!(
                    "a rules file is a list of rule, macro and list items, not a {}",
                    kind(&other)
                ),
            });
        }
    };
    let starts = item_starts(data);
    for (index, item) in items.iter().enumerate() {
        let (line, column) = starts.get(index).copied().unwrap_or((1, 1));
        check_item(index, item).map_err(|reason| Refusal {
            line,
            column,
            reason,
        })?;
    }
    Ok(())
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Sequence(_) => "list",
        Value::Mapping(_) => "mapping",
        Value::Tagged(_) => "tagged value",
    }
}

fn check_item(index: usize, item: &Value) -> Result<(), String> {
    let item_no = index + 1;
    let Value::Mapping(map) = item else {
        return Err(format!("item {item_no} is a {}, not a mapping", kind(item)));
    };
    let has = |k: &str| map.get(k).is_some_and(|v| !v.is_null());
    let changes_existing =
        map.get("append").and_then(Value::as_bool) == Some(true) || has("override");
    let require = |what: &str, name: &Value, keys: &[&str]| -> Result<(), String> {
        let name = match name {
            Value::String(s) if !s.is_empty() => s.clone(),
            other => {
                return Err(format!(
                    "item {item_no}: the {what} name must be a non-empty string, not a {}",
                    kind(other)
                ));
            }
        };
        let missing: Vec<&str> = keys.iter().copied().filter(|k| !has(k)).collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "item {item_no}: {what} {name:?} lacks {} (required for a new {what}; use append or override to change an existing one)",
                missing.join(", ")
            ))
        }
    };
    if let Some(name) = map.get("rule") {
        let only_enabled = map
            .keys()
            .all(|k| matches!(k.as_str(), Some("rule" | "enabled")));
        let keys: &[&str] = if changes_existing || only_enabled {
            &[]
        } else {
            &["condition", "output", "desc", "priority"]
        };
        return require("rule", name, keys);
    }
    if let Some(name) = map.get("macro") {
        return require(
            "macro",
            name,
            if changes_existing {
                &[]
            } else {
                &["condition"]
            },
        );
    }
    if let Some(name) = map.get("list") {
        require("list", name, &["items"])?;
        return match map.get("items") {
            Some(Value::Sequence(_)) => Ok(()),
            Some(other) => Err(format!(
                "item {item_no}: list items must be a list, not a {}",
                kind(other)
            )),
            None => Ok(()),
        };
    }
    if let Some(v) = map.get("required_engine_version")
        && !matches!(v, Value::String(_) | Value::Number(_))
    {
        return Err(format!(
            "item {item_no}: required_engine_version must be a version, not a {}",
            kind(v)
        ));
    }
    if let Some(v) = map.get("required_plugin_versions")
        && !matches!(v, Value::Sequence(_))
    {
        return Err(format!(
            "item {item_no}: required_plugin_versions must be a list, not a {}",
            kind(v)
        ));
    }
    Ok(())
}

/// Line and column of each top-level block-sequence entry (`- ` at column 1), in order; flow
/// style documents give none (their items are reported at line 1).
fn item_starts(data: &[u8]) -> Vec<(usize, usize)> {
    String::from_utf8_lossy(data)
        .lines()
        .enumerate()
        .filter(|(_, l)| *l == "-" || l.starts_with("- ") || l.starts_with("-\t"))
        .map(|(i, _)| (i + 1, 1))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_documents_pass() {
        for doc in [
            "",
            "# only a comment\n",
            "- required_engine_version: 0.50.0\n- required_plugin_versions:\n    - name: k8saudit\n      version: 0.7.0\n",
            "- list: l\n  items: [a]\n- macro: m\n  condition: evt.num > 0\n- rule: r\n  desc: d\n  condition: m\n  output: o\n  priority: WARNING\n",
            "- rule: r\n  enabled: false\n",
            "- rule: r\n  condition: and x\n  override:\n    condition: append\n",
            "- macro: m\n  condition: or y\n  append: true\n",
        ] {
            assert_eq!(check(doc.as_bytes()), Ok(()), "{doc}");
        }
    }

    #[test]
    fn bad_documents_are_refused_with_line_and_column() {
        let cases = [
            ("- list: a\n  items: [a\n- rule: x\n", 0, "not YAML"),
            ("rule: x\n", 1, "not a mapping"),
            (
                "- list: l\n  items: [a]\n- just a string\n",
                3,
                "item 2 is a string",
            ),
            (
                "- list: l\n  items: [a]\n\n- rule: r\n  desc: d\n  condition: c\n",
                4,
                "rule \"r\" lacks output, priority",
            ),
            ("- macro: m\n", 1, "macro \"m\" lacks condition"),
            ("- list: l\n  items: a\n", 1, "list items must be a list"),
            ("- rule: 3\n  enabled: true\n", 1, "non-empty string"),
            ("- required_plugin_versions: x\n", 1, "must be a list"),
        ];
        for (doc, line, what) in cases {
            let refusal = check(doc.as_bytes()).unwrap_err();
            assert!(refusal.reason.contains(what), "{doc}: {refusal}");
            if line > 0 {
                assert_eq!(refusal.line, line, "{doc}: {refusal}");
                assert_eq!(refusal.column, 1);
            } else {
                assert!(refusal.line >= 2, "{doc}: {refusal}");
            }
        }
    }
}
