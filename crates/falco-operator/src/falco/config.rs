//! The base `falco.yaml` of the generated ConfigMap, and the `spec.config` overlay.
//!
//! The defaults are upstream's base configuration for Falco 0.44 (one variant per workload kind;
//! they differ only in `engine.kind`: `modern_ebpf` for a DaemonSet, `nodriver` for a Deployment).
//! Falco ≥ 0.41 has no `container_engines` key any more (container metadata comes from the
//! `container` plugin, delivered with a Plugin CR), so the "CRI + Docker" default of the seed is
//! realised by mounting the CRI and Docker runtime sockets into DaemonSet pods; a Deployment mounts
//! none (all container engines disabled).

use falco_api::{DriverKind, WorkloadType};
use serde_json::{Value, json};

use crate::{Error, Result};

/// Port of Falco's webserver (health and Prometheus metrics).
pub const WEBSERVER_PORT: i32 = 8765;

/// Falco's `engine.kind`, decided here and nowhere else:
///
/// | workload | `spec.driver.kind` | `engine.kind` in falco.yaml |
/// |---|---|---|
/// | Deployment | any (kmod/auto are refused) | `nodriver` |
/// | DaemonSet | absent, `modern_ebpf` | `modern_ebpf` |
/// | DaemonSet | `kmod` | `kmod` |
/// | DaemonSet | `auto` | `modern_ebpf`, overridden per node by the loader |
///
/// With a loader (`kmod`, `auto`) the loader also writes its per-node choice to
/// `/etc/falco/config.d/engine-kind-falcoctl.yaml`; Falco reads `config.d` after `falco.yaml`,
/// and that file sorts after every `Config` fragment (`<priority>-…` names start with a digit),
/// so the loader's choice is what Falco runs, and for `kmod` both say `kmod`. A `spec.config`
/// overlay cannot change `engine.kind` when a loader runs (it is set after the overlay).
pub fn engine_kind(workload: WorkloadType, driver: Option<DriverKind>) -> &'static str {
    match (workload, driver) {
        (WorkloadType::Deployment, _) => "nodriver",
        (WorkloadType::DaemonSet, Some(DriverKind::Kmod)) => "kmod",
        (WorkloadType::DaemonSet, _) => "modern_ebpf",
    }
}

/// The default `falco.yaml` for a workload kind, as a JSON value.
pub fn defaults(workload: WorkloadType) -> Value {
    let engine = engine_kind(workload, None);
    json!({
        "config_files": ["/etc/falco/config.d"],
        "watch_config_files": true,
        "rules_files": ["/etc/falco/rules.d"],
        "plugins": [],
        "load_plugins": [],
        "engine": {
            "kind": engine,
            "kmod": {"buf_size_preset": 4, "drop_failed_exit": false},
            "modern_ebpf": {"buf_size_preset": 4, "cpus_for_each_buffer": 2, "drop_failed_exit": false}
        },
        "time_format_iso_8601": false,
        "buffer_format_base64": false,
        "priority": "debug",
        "json_output": false,
        "json_include_output_property": true,
        "json_include_tags_property": true,
        "buffered_outputs": false,
        "rule_matching": "first",
        "outputs_queue": {"capacity": 0},
        "append_output": [{"suggested_output": true}],
        "stdout_output": {"enabled": true},
        "syslog_output": {"enabled": true},
        "file_output": {"enabled": false, "keep_alive": false, "filename": "./events.txt"},
        "http_output": {"enabled": false, "url": "", "user_agent": "falcosecurity/falco"},
        "program_output": {"enabled": false, "keep_alive": false, "program": "jq '{text: .output}' | curl -d @- -X POST https://hooks.slack.com/services/XXX"},
        "output_timeout": 2000,
        "webserver": {
            "enabled": true,
            "threadiness": 0,
            "listen_port": WEBSERVER_PORT,
            "k8s_healthz_endpoint": "/healthz",
            "prometheus_metrics_enabled": true,
            "ssl_enabled": false
        },
        "log_stderr": true,
        "log_syslog": true,
        "log_level": "info",
        "libs_logger": {"enabled": false, "severity": "debug"},
        "metrics": {
            "enabled": true,
            "interval": "1h",
            "output_rule": true,
            "rules_counters_enabled": true,
            "resource_utilization_enabled": true,
            "state_counters_enabled": true,
            "kernel_event_counters_enabled": true,
            "kernel_event_counters_per_cpu_enabled": false,
            "libbpf_stats_enabled": true,
            "plugins_metrics_enabled": true,
            "convert_memory_to_mb": true,
            "include_empty_values": false
        },
        "falco_libs": {"thread_table_size": 262_144, "snaplen": 80},
        "syscall_event_drops": {
            "threshold": 0.1,
            "actions": ["log", "alert"],
            "rate": 0.03333,
            "max_burst": 1,
            "simulate_drops": false
        },
        "syscall_event_timeouts": {"max_consecutives": 1000},
        "plugins_hostinfo": true
    })
}

/// Checks that `spec.config` can be merged: a mapping (or absent).
pub fn validate_overlay(overlay: Option<&Value>) -> Result<()> {
    match overlay {
        None | Some(Value::Null | Value::Object(_)) => Ok(()),
        Some(other) => Err(Error::ConfigNotAMapping {
            found: json_type(other),
        }),
    }
}

/// The rendered `falco.yaml`: the defaults with `overlay` deep-merged (mappings merge key by key,
/// lists and scalars replace, a `null` value removes the key).
pub fn render(workload: WorkloadType, overlay: Option<&Value>) -> Result<String> {
    render_with_driver(workload, None, overlay)
}

/// [`render`] for an instance whose pods run the driver loader for `driver` (`kmod`, `auto`):
/// `engine.kind` is [`engine_kind`]'s, whatever the overlay says. With `None` (no loader) the
/// overlay may set `engine.kind`, as without `spec.driver`.
pub fn render_with_driver(
    workload: WorkloadType,
    driver: Option<DriverKind>,
    overlay: Option<&Value>,
) -> Result<String> {
    validate_overlay(overlay)?;
    let mut config = defaults(workload);
    if let Some(overlay) = overlay {
        deep_merge(&mut config, overlay);
    }
    if let Some(kind) = driver.filter(|k| k.needs_loader()) {
        let engine = config
            .as_object_mut()
            .map(|c| c.entry("engine").or_insert_with(|| json!({})));
        if let Some(engine) = engine {
            if !engine.is_object() {
                *engine = json!({});
            }
            engine["kind"] = json!(engine_kind(workload, Some(kind)));
        }
    }
    serde_yaml::to_string(&config).map_err(Error::RenderConfig)
}

fn deep_merge(base: &mut Value, overlay: &Value) {
    match (base, overlay) {
        (Value::Object(base), Value::Object(overlay)) => {
            for (key, value) in overlay {
                if value.is_null() {
                    base.remove(key);
                } else if let Some(existing) = base.get_mut(key) {
                    deep_merge(existing, value);
                } else {
                    base.insert(key.clone(), value.clone());
                }
            }
        }
        (base, overlay) => *base = overlay.clone(),
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Value {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn engines_differ_by_workload_and_nothing_else() {
        let mut ds = defaults(WorkloadType::DaemonSet);
        let mut dep = defaults(WorkloadType::Deployment);
        assert_eq!(ds["engine"]["kind"], "modern_ebpf");
        assert_eq!(dep["engine"]["kind"], "nodriver");
        ds["engine"]["kind"] = Value::Null;
        dep["engine"]["kind"] = Value::Null;
        assert_eq!(ds, dep);
    }

    #[test]
    fn defaults_match_the_seed() {
        let c = parse(&render(WorkloadType::DaemonSet, None).unwrap());
        assert_eq!(c["stdout_output"]["enabled"], true);
        assert_eq!(c["syslog_output"]["enabled"], true);
        assert_eq!(c["webserver"]["enabled"], true);
        assert_eq!(c["webserver"]["listen_port"], 8765);
        assert_eq!(c["webserver"]["prometheus_metrics_enabled"], true);
        assert_eq!(c["metrics"]["enabled"], true);
        assert_eq!(c["config_files"], json!(["/etc/falco/config.d"]));
        assert_eq!(c["rules_files"], json!(["/etc/falco/rules.d"]));
        assert!(
            c.get("container_engines").is_none(),
            "removed in Falco 0.41+"
        );
        assert!(c.get("grpc").is_none());
    }

    #[test]
    fn overlay_deep_merges_replaces_lists_and_deletes_on_null() {
        let overlay = json!({
            "webserver": {"listen_port": 9000},
            "rules_files": ["/a", "/b"],
            "syslog_output": null,
            "new_key": {"x": 1}
        });
        let c = parse(&render(WorkloadType::Deployment, Some(&overlay)).unwrap());
        assert_eq!(c["webserver"]["listen_port"], 9000);
        assert_eq!(c["webserver"]["enabled"], true, "siblings kept");
        assert_eq!(c["rules_files"], json!(["/a", "/b"]));
        assert!(c.get("syslog_output").is_none());
        assert_eq!(c["new_key"]["x"], 1);
        assert_eq!(c["engine"]["kind"], "nodriver");
    }

    #[test]
    fn engine_kind_follows_the_driver_and_wins_over_the_overlay() {
        use DriverKind::*;
        assert_eq!(engine_kind(WorkloadType::DaemonSet, None), "modern_ebpf");
        assert_eq!(
            engine_kind(WorkloadType::DaemonSet, Some(ModernEbpf)),
            "modern_ebpf"
        );
        assert_eq!(engine_kind(WorkloadType::DaemonSet, Some(Kmod)), "kmod");
        assert_eq!(
            engine_kind(WorkloadType::DaemonSet, Some(Auto)),
            "modern_ebpf"
        );
        assert_eq!(
            engine_kind(WorkloadType::Deployment, Some(Kmod)),
            "nodriver"
        );
        let overlay = json!({"engine": {"kind": "nodriver", "kmod": {"buf_size_preset": 6}}});
        let c = parse(
            &render_with_driver(WorkloadType::DaemonSet, Some(Kmod), Some(&overlay)).unwrap(),
        );
        assert_eq!(c["engine"]["kind"], "kmod");
        assert_eq!(
            c["engine"]["kmod"]["buf_size_preset"], 6,
            "the rest of the overlay stays"
        );
        // Without a loader the overlay decides, as before spec.driver existed.
        let c = parse(
            &render_with_driver(WorkloadType::DaemonSet, Some(ModernEbpf), Some(&overlay)).unwrap(),
        );
        assert_eq!(c["engine"]["kind"], "nodriver");
        assert_eq!(
            render_with_driver(WorkloadType::DaemonSet, None, None).unwrap(),
            render(WorkloadType::DaemonSet, None).unwrap()
        );
    }

    #[test]
    fn a_non_mapping_overlay_is_refused() {
        let err = render(WorkloadType::DaemonSet, Some(&json!(["a"]))).unwrap_err();
        assert!(
            matches!(err, Error::ConfigNotAMapping { found: "a list" }),
            "{err}"
        );
    }
}
