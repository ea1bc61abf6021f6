//! The CRD reference (`docs/crd-reference.md`), generated from the same CRDs the API server gets,
//! so the documentation cannot say anything the schema does not enforce.
//!
//! One section per kind: group, scope, short names, printer columns, then one table row per
//! field with its type, default, validation (enums, ranges, patterns, CEL rules with their
//! messages) and description. Embedded Kubernetes types (`podTemplateSpec`, condition lists) are
//! one row each with a pointer to the Kubernetes reference, not thousands of rows.
//!
//! Regenerate with `make crds`; a test fails when the committed file drifts.

use std::fmt::Write as _;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};

/// Fields rendered as one row: the Kubernetes type they embed and where it is documented.
const EMBEDDED: [(&str, &str); 2] = [
    (
        "podTemplateSpec",
        "Kubernetes [PodTemplateSpec](https://kubernetes.io/docs/reference/kubernetes-api/workload-resources/pod-template-v1/#PodTemplateSpec)",
    ),
    (
        "conditions",
        "list of Kubernetes [Condition](https://kubernetes.io/docs/reference/kubernetes-api/common-definitions/object-meta/) (`type`, `status`, `reason`, `message`, `lastTransitionTime`, `observedGeneration`)",
    ),
];

/// Renders the reference of `crds` as one Markdown document.
pub fn markdown(crds: &[CustomResourceDefinition]) -> String {
    let mut out = String::from(
        "# CRD reference\n\n\
         <!-- Generated from the Rust types in crates/falco-api by `make crds`; do not edit. -->\n\n\
         Every rule below is enforced by the API server at `kubectl apply` time (OpenAPI schema and\n\
         CEL). What the schema cannot express is checked by the operators and reported as a `False`\n\
         condition (see [troubleshooting](troubleshooting.md)).\n\n",
    );
    for crd in crds {
        let names = &crd.spec.names;
        let version = crd.spec.versions.first();
        let _ = writeln!(
            out,
            "- [{}](#{}) (`{}/{}`)",
            names.kind,
            names.kind.to_lowercase(),
            crd.spec.group,
            version.map(|v| v.name.as_str()).unwrap_or_default()
        );
    }
    for crd in crds {
        kind_section(&mut out, crd);
    }
    out
}

fn kind_section(out: &mut String, crd: &CustomResourceDefinition) {
    let names = &crd.spec.names;
    let Some(version) = crd.spec.versions.first() else {
        return;
    };
    let _ = writeln!(out, "\n## {}\n", names.kind);
    let root = version
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref());
    if let Some(description) = root.and_then(|r| r.description.as_deref()) {
        let _ = writeln!(out, "{}\n", one_line(description));
    }
    let _ = writeln!(out, "| | |\n|---|---|");
    let _ = writeln!(
        out,
        "| API version | `{}/{}` |",
        crd.spec.group, version.name
    );
    let _ = writeln!(out, "| Scope | {} |", crd.spec.scope);
    let _ = writeln!(out, "| Plural | `{}` |", names.plural);
    if let Some(short) = names.short_names.as_ref().filter(|s| !s.is_empty()) {
        let _ = writeln!(out, "| Short names | {} |", code_list(short));
    }
    if let Some(categories) = names.categories.as_ref().filter(|c| !c.is_empty()) {
        let _ = writeln!(out, "| Categories | {} |", code_list(categories));
    }
    if let Some(columns) = version.additional_printer_columns.as_ref() {
        let columns: Vec<_> = columns.iter().map(|c| c.name.clone()).collect();
        let _ = writeln!(out, "| `kubectl get` columns | {} |", columns.join(", "));
    }
    let _ = writeln!(
        out,
        "\n| Field | Type | Default | Validation | Description |\n|---|---|---|---|---|"
    );
    if let Some(root) = root {
        for top in ["spec", "status"] {
            if let Some(schema) = root.properties.as_ref().and_then(|p| p.get(top)) {
                let required = root
                    .required
                    .as_ref()
                    .is_some_and(|r| r.iter().any(|f| f == top));
                rows(out, top, schema, required);
            }
        }
    }
}

/// One row for `schema` at `path`, then its children.
fn rows(out: &mut String, path: &str, schema: &JSONSchemaProps, required: bool) {
    let field = path.rsplit('.').next().unwrap_or(path);
    let embedded = EMBEDDED
        .iter()
        .find(|(name, _)| *name == field.trim_end_matches("[]"));
    let kind = match embedded {
        Some((_, what)) => (*what).to_owned(),
        None => type_name(schema),
    };
    let mut validation = validations(schema);
    if required {
        validation.insert(0, "required".to_owned());
    }
    let default = schema
        .default
        .as_ref()
        .map(|d| format!("`{}`", d.0))
        .unwrap_or_default();
    let description = schema
        .description
        .as_deref()
        .map(one_line)
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "| `{path}` | {kind} | {} | {} | {} |",
        escape(&default),
        escape(&validation.join("; ")),
        escape(&description)
    );
    if embedded.is_some() {
        return;
    }
    if let Some(properties) = &schema.properties {
        for (name, child) in properties {
            let child_required = schema
                .required
                .as_ref()
                .is_some_and(|r| r.iter().any(|f| f == name));
            rows(out, &format!("{path}.{name}"), child, child_required);
        }
    }
    if let Some(items) = schema.items.as_ref() {
        let items = match items {
            JSONSchemaPropsOrArray::Schema(s) => Some(s.as_ref()),
            JSONSchemaPropsOrArray::Schemas(s) => s.first(),
        };
        if let Some(items) = items.filter(|i| i.properties.is_some()) {
            for (name, child) in items.properties.iter().flatten() {
                let child_required = items
                    .required
                    .as_ref()
                    .is_some_and(|r| r.iter().any(|f| f == name));
                rows(out, &format!("{path}[].{name}"), child, child_required);
            }
        }
    }
}

fn type_name(schema: &JSONSchemaProps) -> String {
    if schema.x_kubernetes_preserve_unknown_fields == Some(true) && schema.type_.is_none() {
        return "any YAML".to_owned();
    }
    if schema.x_kubernetes_int_or_string == Some(true) {
        return "integer or string".to_owned();
    }
    match schema.type_.as_deref() {
        Some("array") => {
            let item = match schema.items.as_ref() {
                Some(JSONSchemaPropsOrArray::Schema(s)) => type_name(s),
                _ => "any".to_owned(),
            };
            format!("list of {item}")
        }
        Some("object") if schema.properties.is_none() => match &schema.additional_properties {
            Some(JSONSchemaPropsOrBool::Schema(s)) => format!("map of {}", type_name(s)),
            _ if schema.x_kubernetes_preserve_unknown_fields == Some(true) => {
                "any YAML mapping".to_owned()
            }
            _ => "object".to_owned(),
        },
        Some(t) => match schema.format.as_deref() {
            Some(f) if t != "string" || f == "date-time" => format!("{t} ({f})"),
            _ => t.to_owned(),
        },
        None => "any".to_owned(),
    }
}

fn validations(schema: &JSONSchemaProps) -> Vec<String> {
    let mut v = Vec::new();
    if let Some(values) = &schema.enum_ {
        let values: Vec<String> = values.iter().map(|e| format!("`{}`", e.0)).collect();
        v.push(format!("one of {}", values.join(", ")));
    }
    match (schema.minimum, schema.maximum) {
        (Some(min), Some(max)) => v.push(format!("{min}–{max}")),
        (Some(min), None) => v.push(format!("≥ {min}")),
        (None, Some(max)) => v.push(format!("≤ {max}")),
        (None, None) => {}
    }
    if let Some(max) = schema.max_length {
        v.push(format!("at most {max} characters"));
    }
    if let Some(min) = schema.min_length.filter(|m| *m > 0) {
        v.push(format!("at least {min} characters"));
    }
    if let Some(pattern) = &schema.pattern {
        v.push(format!("matches `{pattern}`"));
    }
    for rule in schema.x_kubernetes_validations.iter().flatten() {
        match &rule.message {
            Some(message) => v.push(format!("{message} (CEL `{}`)", rule.rule)),
            None => v.push(format!("CEL `{}`", rule.rule)),
        }
    }
    v
}

fn code_list(items: &[String]) -> String {
    items
        .iter()
        .map(|i| format!("`{i}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Doc comments become one table cell: paragraphs joined, whitespace collapsed.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A `|` inside a cell would end it.
fn escape(cell: &str) -> String {
    cell.replace('|', "\\|")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_and_validation_rule_is_documented() {
        let crds = crate::all_crds();
        let doc = markdown(&crds);
        for crd in &crds {
            assert!(doc.contains(&format!("\n## {}\n", crd.spec.names.kind)));
        }
        // CEL messages reach the reader.
        assert!(doc.contains("plainHTTP and tls are mutually exclusive"));
        // The pod template is one row, not the whole core/v1 schema.
        assert!(doc.contains("| `spec.podTemplateSpec` | Kubernetes [PodTemplateSpec]"));
        assert!(!doc.contains("spec.podTemplateSpec.spec"));
    }

    #[test]
    fn pipes_in_cells_are_escaped() {
        assert_eq!(escape("a|b"), "a\\|b");
        assert_eq!(one_line("two\n\nparagraphs  here"), "two paragraphs here");
    }
}
