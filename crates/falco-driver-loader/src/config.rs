//! falcoctl's config file (`driver:` section) and Falco's `engine.kind` override.
//!
//! `config` stores the chosen driver into the falcoctl config (other keys are kept) and, when
//! Falco's current `engine.kind` is a driver kind (or unknown), writes
//! `<falco-config-dir>/config.d/engine-kind-falcoctl.yaml` with `engine: {kind: <type>}`
//! (directory 0755, file 0644), as `falcoctl driver config` does. Both writes are atomic.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use falco_core::driver::DriverType;
use serde_yaml::{Mapping, Value};

use crate::cli::DriverSettings;
use crate::{Error, Result};

/// File name falcoctl writes into Falco's `config.d`.
pub const ENGINE_KIND_FILE: &str = "engine-kind-falcoctl.yaml";

/// The `driver:` section of a falcoctl config file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileDriverConfig {
    /// `driver.type`.
    pub types: Vec<String>,
    /// `driver.repos`.
    pub repos: Vec<String>,
    /// `driver.name`.
    pub name: Option<String>,
    /// `driver.version`.
    pub version: Option<String>,
    /// `driver.hostRoot` (any case, as viper).
    pub host_root: Option<String>,
}

fn read_yaml(path: &Path) -> Result<Option<Value>> {
    match fs::read_to_string(path) {
        Ok(text) if text.trim().is_empty() => Ok(None),
        Ok(text) => serde_yaml::from_str(&text)
            .map(Some)
            .map_err(|source| Error::ConfigParse {
                path: path.to_owned(),
                source,
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("read", path, e)),
    }
}

/// Looks a key up case-insensitively (viper lowercases keys).
fn get<'a>(map: &'a Mapping, key: &str) -> Option<&'a Value> {
    map.iter()
        .find(|(k, _)| k.as_str().is_some_and(|k| k.eq_ignore_ascii_case(key)))
        .map(|(_, v)| v)
}

fn strings(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Sequence(items)) => items
            .iter()
            .filter_map(|i| i.as_str().map(str::to_owned))
            .collect(),
        Some(Value::String(s)) => s
            .split([',', ';'])
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

/// Reads the `driver:` section of a falcoctl config; a missing file gives the empty section.
pub fn read_driver_config(path: &Path) -> Result<FileDriverConfig> {
    let Some(Value::Mapping(root)) = read_yaml(path)? else {
        return Ok(FileDriverConfig::default());
    };
    let Some(Value::Mapping(driver)) = get(&root, "driver") else {
        return Ok(FileDriverConfig::default());
    };
    let text = |key| get(driver, key).and_then(Value::as_str).map(str::to_owned);
    Ok(FileDriverConfig {
        types: strings(get(driver, "type")),
        repos: strings(get(driver, "repos")),
        name: text("name"),
        version: text("version"),
        host_root: text("hostroot"),
    })
}

/// Stores the driver choice into the falcoctl config, keeping its other keys.
pub fn store_driver_config(
    path: &Path,
    settings: &DriverSettings,
    chosen: DriverType,
) -> Result<()> {
    let mut root = match read_yaml(path)? {
        Some(Value::Mapping(m)) => m,
        _ => Mapping::new(),
    };
    let mut driver = Mapping::new();
    driver.insert("type".into(), Value::Sequence(vec![chosen.as_str().into()]));
    driver.insert("name".into(), settings.name.clone().into());
    driver.insert(
        "repos".into(),
        Value::Sequence(settings.repos.iter().cloned().map(Value::from).collect()),
    );
    driver.insert("version".into(), settings.version.clone().into());
    driver.insert(
        "hostroot".into(),
        settings.host_root.to_string_lossy().into_owned().into(),
    );
    root.retain(|k, _| !k.as_str().is_some_and(|k| k.eq_ignore_ascii_case("driver")));
    root.insert("driver".into(), Value::Mapping(driver));
    let text =
        serde_yaml::to_string(&Value::Mapping(root)).map_err(|source| Error::ConfigParse {
            path: path.to_owned(),
            source,
        })?;
    write_atomic(path, text.as_bytes(), 0o644)
}

/// What [`update_engine_kind`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineKindUpdate {
    /// The file was written.
    Written(PathBuf),
    /// Falco's configured engine is not a driver (e.g. `nodriver`, `replay`): left alone.
    Skipped(String),
}

/// Writes `engine.kind` into `<dir>/config.d/engine-kind-falcoctl.yaml` unless Falco's
/// `falco.yaml` selects a non-driver engine.
pub fn update_engine_kind(falco_config_dir: &Path, kind: DriverType) -> Result<EngineKindUpdate> {
    let falco_yaml = falco_config_dir.join("falco.yaml");
    let current = read_yaml(&falco_yaml)?.and_then(|v| {
        v.get("engine")
            .and_then(|e| e.get("kind"))
            .and_then(Value::as_str)
            .map(str::to_owned)
    });
    if let Some(current) = current
        && !matches!(current.as_str(), "kmod" | "ebpf" | "modern_ebpf")
    {
        return Ok(EngineKindUpdate::Skipped(current));
    }
    let dir = falco_config_dir.join("config.d");
    fs::create_dir_all(&dir).map_err(|e| Error::io("create", &dir, e))?;
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))
        .map_err(|e| Error::io("chmod", &dir, e))?;
    let path = dir.join(ENGINE_KIND_FILE);
    write_atomic(
        &path,
        format!("engine:\n  kind: {kind}\n").as_bytes(),
        0o644,
    )?;
    Ok(EngineKindUpdate::Written(path))
}

/// Writes a small file atomically: temp file in the same directory, fsync, rename, fsync dir.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    write_replace(path, bytes, mode)?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Like [`write_atomic`] without the directory fsync, for callers that fsync the directory
/// once after several renames.
pub(crate) fn write_replace(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .map_err(|e| Error::io("create temp file in", dir, e))?;
    tmp.write_all(bytes)
        .map_err(|e| Error::io("write", tmp.path().to_owned(), e))?;
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io("chmod", tmp.path().to_owned(), e))?;
    tmp.as_file()
        .sync_data()
        .map_err(|e| Error::io("fsync", tmp.path().to_owned(), e))?;
    tmp.persist(path)
        .map_err(|e| Error::io("rename to", path, e.error))?;
    Ok(())
}

/// fsyncs a directory so a rename in it survives a crash.
pub fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("fsync", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use falco_core::driver::Arch;

    fn settings() -> DriverSettings {
        DriverSettings {
            types: vec![DriverType::ModernEbpf, DriverType::Kmod],
            version: "8.0.0+driver".into(),
            repos: vec!["https://a".into(), "https://b".into()],
            name: "falco".into(),
            host_root: "/host".into(),
            kernel_release: None,
            kernel_version: None,
            arch: Arch::X86_64,
        }
    }

    #[test]
    fn driver_config_round_trips_and_keeps_other_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("falcoctl.yaml");
        fs::write(
            &path,
            "artifact:\n  follow: {every: 6h}\ndriver:\n  type: [kmod]\n  hostRoot: /x\n",
        )
        .unwrap();
        let before = read_driver_config(&path).unwrap();
        assert_eq!(before.types, ["kmod"]);
        assert_eq!(before.host_root.as_deref(), Some("/x"));
        store_driver_config(&path, &settings(), DriverType::ModernEbpf).unwrap();
        let after = read_driver_config(&path).unwrap();
        assert_eq!(
            after,
            FileDriverConfig {
                types: vec!["modern_ebpf".into()],
                repos: vec!["https://a".into(), "https://b".into()],
                name: Some("falco".into()),
                version: Some("8.0.0+driver".into()),
                host_root: Some("/host".into()),
            }
        );
        assert!(fs::read_to_string(&path).unwrap().contains("follow"));
        assert_eq!(
            read_driver_config(&dir.path().join("missing.yaml")).unwrap(),
            FileDriverConfig::default()
        );
    }

    #[test]
    fn engine_kind_is_written_unless_falco_uses_another_engine() {
        let dir = tempfile::tempdir().unwrap();
        let written = update_engine_kind(dir.path(), DriverType::Kmod).unwrap();
        let path = dir.path().join("config.d").join(ENGINE_KIND_FILE);
        assert_eq!(written, EngineKindUpdate::Written(path.clone()));
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "engine:\n  kind: kmod\n"
        );
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o644
        );

        fs::write(
            dir.path().join("falco.yaml"),
            "engine:\n  kind: modern_ebpf\n",
        )
        .unwrap();
        update_engine_kind(dir.path(), DriverType::ModernEbpf).unwrap();
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "engine:\n  kind: modern_ebpf\n"
        );

        fs::write(dir.path().join("falco.yaml"), "engine:\n  kind: nodriver\n").unwrap();
        assert_eq!(
            update_engine_kind(dir.path(), DriverType::Kmod).unwrap(),
            EngineKindUpdate::Skipped("nodriver".into())
        );
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "engine:\n  kind: modern_ebpf\n"
        );
    }
}
