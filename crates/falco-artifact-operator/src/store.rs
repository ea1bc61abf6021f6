//! The on-disk artifact store: priority naming, atomic writes and the manifest of owned files.
//!
//! See the crate documentation for the layout and the guarantees.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Error, Result, io_err};

/// The staging directory the store creates inside every directory it writes to; temporary files
/// live there, never next to the files Falco loads.
///
/// Falco loads every regular file of a `config_files` directory and every `*.yaml`/`*.yml` of a
/// `rules_files` directory, but neither looks into sub-directories, and its inotify watch on
/// the directory is not recursive: a file being written here is invisible to Falco, and the one
/// `rename` into the parent (same file system, so atomic) is the only event it sees.
pub const TEMP_DIR: &str = ".falco-artifact-tmp";
/// Suffix of every temporary file: not a name Falco loads, even outside [`TEMP_DIR`].
pub const TEMP_SUFFIX: &str = ".part";
/// Prefix of the temporary files earlier versions created next to the target (removed at open).
pub const LEGACY_TEMP_PREFIX: &str = ".falco-artifact-tmp.";
/// File name of the manifest inside the state directory.
pub const MANIFEST_FILE: &str = "manifest.json";
/// Name and priority under which the aggregated plugins configuration is written (as upstream).
pub const PLUGINS_CONFIG_NAME: &str = "plugins-config";
/// Priority of the aggregated plugins configuration.
pub const PLUGINS_CONFIG_PRIORITY: u8 = 99;
/// Highest priority accepted.
pub const MAX_PRIORITY: u8 = 99;

/// Where an artifact's content came from; decides the sub-priority and the file name suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Medium {
    /// An OCI artifact (sub-priority 01).
    Oci,
    /// A ConfigMap key (sub-priority 02).
    ConfigMap,
    /// Inline in the CR (sub-priority 03).
    Inline,
}

impl Medium {
    /// The two-digit sub-priority: OCI loads first, inline last.
    pub fn sub_priority(self) -> u8 {
        match self {
            Self::Oci => 1,
            Self::ConfigMap => 2,
            Self::Inline => 3,
        }
    }

    /// The suffix used in file names.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Oci => "oci",
            Self::ConfigMap => "configmap",
            Self::Inline => "inline",
        }
    }
}

/// What kind of file an artifact becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Kind {
    /// A rules file in the rules directory.
    Rulesfile,
    /// A config.d fragment.
    Config,
    /// A plugin shared object in the plugins directory.
    PluginBinary,
    /// The single aggregated plugins configuration in config.d.
    PluginsConfig,
}

/// The identity of one stored file. The priority is not part of it: changing it renames the file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ArtifactKey {
    /// The kind of file.
    pub kind: Kind,
    /// The CR name (or [`PLUGINS_CONFIG_NAME`]).
    pub name: String,
    /// The source medium.
    pub medium: Medium,
}

impl ArtifactKey {
    /// A key for `kind`, `name` and `medium`.
    pub fn new(kind: Kind, name: impl Into<String>, medium: Medium) -> Self {
        Self {
            kind,
            name: name.into(),
            medium,
        }
    }
}

/// The file name upstream uses for a rules or config file: `<PP>-<SS>-<name>-<medium>.yaml`.
pub fn priority_file_name(priority: u8, medium: Medium, name: &str) -> Result<String> {
    check_priority(priority)?;
    check_name(name)?;
    Ok(format!(
        "{priority:02}-{:02}-{name}-{}.yaml",
        medium.sub_priority(),
        medium.as_str()
    ))
}

fn check_priority(priority: u8) -> Result<()> {
    if priority > MAX_PRIORITY {
        return Err(Error::Invalid {
            what: "priority",
            reason: format!("{priority} is above {MAX_PRIORITY}"),
        });
    }
    Ok(())
}

/// Accepts Kubernetes object names (DNS subdomain characters); nothing that could leave a directory.
fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !name.contains("..");
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid {
            what: "artifact name",
            reason: format!("{name:?} is not a DNS subdomain name"),
        })
    }
}

/// The directories the store writes into.
#[derive(Debug, Clone)]
pub struct Dirs {
    /// Falco's rules directory (upstream `/etc/falco/rules.d`).
    pub rules: PathBuf,
    /// Falco's config.d directory (upstream `/etc/falco/config.d`).
    pub config: PathBuf,
    /// The plugins directory (upstream `/usr/share/falco/plugins`).
    pub plugins: PathBuf,
    /// A directory private to the sidecar holding the manifest.
    pub state: PathBuf,
}

/// One file recorded in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Identity.
    pub key: ArtifactKey,
    /// Priority the file is named with (0 for plugin binaries).
    pub priority: u8,
    /// Absolute path of the file.
    pub path: PathBuf,
    /// `sha256:<hex>` of the content written.
    pub sha256: String,
    /// The source's own digest (the OCI manifest digest), if any.
    pub source_digest: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Manifest {
    version: u32,
    /// Every path the store may have written and not yet removed.
    owned: BTreeSet<PathBuf>,
    entries: BTreeMap<String, Entry>,
}

/// What [`Store::put`] or [`Store::remove`] did, as upstream's store actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Nothing was stored and nothing was to do.
    None,
    /// A new file was written.
    Added,
    /// The content of an existing file was replaced.
    Updated,
    /// Same content and place.
    Unchanged,
    /// Only the priority changed: the file was renamed.
    PriorityChanged,
    /// The file was removed.
    Removed,
}

/// One plugin in the aggregated plugins configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginConfig {
    /// Plugin name as Falco knows it.
    pub name: String,
    /// Path of the shared object.
    pub library_path: String,
    /// Plugin-specific initialisation configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_config: Option<serde_yaml::Value>,
    /// Open parameters for source plugins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_params: Option<String>,
}

#[derive(Serialize)]
struct PluginsFile<'a> {
    load_plugins: Vec<&'a str>,
    plugins: Vec<&'a PluginConfig>,
}

/// One file to store with [`Store::put_many`].
#[derive(Debug, Clone, Copy)]
pub struct Put<'a> {
    /// Identity.
    pub key: &'a ArtifactKey,
    /// Priority the file is named with.
    pub priority: u8,
    /// Content.
    pub data: &'a [u8],
    /// File mode.
    pub mode: u32,
    /// The source's own digest, if any.
    pub source_digest: Option<&'a str>,
}

/// The artifact store of one sidecar.
#[derive(Debug)]
pub struct Store {
    dirs: Dirs,
    manifest: Manifest,
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The staging directory of `dir` (see [`TEMP_DIR`]).
pub fn staging_dir(dir: &Path) -> PathBuf {
    dir.join(TEMP_DIR)
}

/// Writes `data` to a new temporary file in the staging directory of `path`'s directory and
/// fsyncs it; returns its path. Nothing is visible at `path` yet.
fn stage(path: &Path, data: &[u8], mode: u32) -> Result<PathBuf> {
    let dir = path.parent().ok_or_else(|| Error::Invalid {
        what: "path",
        reason: format!("{} has no parent directory", path.display()),
    })?;
    let staging = staging_dir(dir);
    match fs::DirBuilder::new().mode(0o700).create(&staging) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io_err("create staging directory", &staging)(e)),
    }
    let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = staging.join(format!(
        "{}.{}.{file_name}{TEMP_SUFFIX}",
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(io_err("create temporary file", &tmp))?;
        file.write_all(data).map_err(io_err("write", &tmp))?;
        // The umask may have narrowed the mode given to open().
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(io_err("chmod", &tmp))?;
        file.sync_all().map_err(io_err("fsync", &tmp))
    })();
    match result {
        Ok(()) => Ok(tmp),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Renames a staged file over `path`; the temporary file is removed if that fails.
fn publish(tmp: &Path, path: &Path) -> Result<()> {
    fs::rename(tmp, path).map_err(|e| {
        let _ = fs::remove_file(tmp);
        io_err("rename into place", path)(e)
    })
}

/// Writes `data` to `path` atomically: temp file in the staging directory of the same
/// directory (same file system), fsync, rename, fsync dir.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    let tmp = stage(path, data, mode)?;
    publish(&tmp, path)?;
    sync_dir(path.parent().unwrap_or(Path::new("/")))
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync directory", dir))
}

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

fn entry_id(key: &ArtifactKey) -> String {
    format!("{:?}/{}/{}", key.kind, key.medium.as_str(), key.name)
}

impl Store {
    /// Opens the store: creates the directories, loads the manifest, removes left-over temporary
    /// files and owned files that no entry refers to any more (an interrupted update).
    pub fn open(dirs: Dirs) -> Result<Self> {
        for dir in [&dirs.rules, &dirs.config, &dirs.plugins, &dirs.state] {
            fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
        }
        let manifest_path = dirs.state.join(MANIFEST_FILE);
        let manifest = match fs::read(&manifest_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::Manifest {
                path: manifest_path.clone(),
                reason: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Manifest {
                version: 1,
                ..Manifest::default()
            },
            Err(e) => return Err(io_err("read", &manifest_path)(e)),
        };
        let mut store = Self { dirs, manifest };
        store.remove_temp_files()?;
        let referenced: BTreeSet<PathBuf> = store
            .manifest
            .entries
            .values()
            .map(|e| e.path.clone())
            .collect();
        let orphans: Vec<PathBuf> = store
            .manifest
            .owned
            .difference(&referenced)
            .cloned()
            .collect();
        if !orphans.is_empty() {
            for path in &orphans {
                remove_if_exists(path)?;
            }
            for path in &orphans {
                store.manifest.owned.remove(path);
            }
            store.save()?;
        }
        Ok(store)
    }

    fn remove_temp_files(&self) -> Result<()> {
        for dir in [
            &self.dirs.rules,
            &self.dirs.config,
            &self.dirs.plugins,
            &self.dirs.state,
        ] {
            for item in fs::read_dir(dir).map_err(io_err("list", dir))? {
                let item = item.map_err(io_err("list", dir))?;
                if item
                    .file_name()
                    .to_string_lossy()
                    .starts_with(LEGACY_TEMP_PREFIX)
                {
                    remove_if_exists(&item.path())?;
                }
            }
            // The staging directory itself stays: removing and recreating it would be one more
            // event in the directory Falco watches.
            let staging = staging_dir(dir);
            match fs::read_dir(&staging) {
                Ok(items) => {
                    for item in items {
                        let item = item.map_err(io_err("list", &staging))?;
                        remove_if_exists(&item.path())?;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    // Created now, before Falco starts (the sidecar gates it), rather than at
                    // the first write, which would be one more event in a watched directory.
                    fs::DirBuilder::new()
                        .mode(0o700)
                        .create(&staging)
                        .map_err(io_err("create staging directory", &staging))?;
                }
                Err(e) => return Err(io_err("list", &staging)(e)),
            }
        }
        Ok(())
    }

    /// The directories of this store.
    pub fn dirs(&self) -> &Dirs {
        &self.dirs
    }

    /// All recorded entries.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.manifest.entries.values()
    }

    /// The entry for `key`, if stored.
    pub fn get(&self, key: &ArtifactKey) -> Option<&Entry> {
        self.manifest.entries.get(&entry_id(key))
    }

    /// The source digest installed for `key`, if its file is still on disk.
    pub fn installed_digest(&self, key: &ArtifactKey) -> Option<&str> {
        self.get(key)
            .filter(|e| e.path.is_file())
            .and_then(|e| e.source_digest.as_deref())
    }

    /// The path `key` is stored at with `priority`.
    pub fn path_for(&self, key: &ArtifactKey, priority: u8) -> Result<PathBuf> {
        match key.kind {
            Kind::Rulesfile => Ok(self
                .dirs
                .rules
                .join(priority_file_name(priority, key.medium, &key.name)?)),
            Kind::Config | Kind::PluginsConfig => Ok(self
                .dirs
                .config
                .join(priority_file_name(priority, key.medium, &key.name)?)),
            Kind::PluginBinary => {
                check_name(&key.name)?;
                Ok(self.dirs.plugins.join(format!("{}.so", key.name)))
            }
        }
    }

    fn save(&self) -> Result<()> {
        let path = self.dirs.state.join(MANIFEST_FILE);
        let bytes = serde_json::to_vec_pretty(&self.manifest).map_err(|e| Error::Manifest {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        write_atomic(&path, &bytes, 0o600)
    }

    fn owns(&self, path: &Path) -> bool {
        self.manifest.owned.contains(path)
    }

    /// Stores `data` for `key` under `priority` with file `mode`.
    ///
    /// Refuses to overwrite a file the store did not write. A priority change with the same
    /// content is a rename; the previous file (other priority) is removed after the new one is
    /// in place.
    pub fn put(
        &mut self,
        key: &ArtifactKey,
        priority: u8,
        data: &[u8],
        mode: u32,
        source_digest: Option<&str>,
    ) -> Result<Action> {
        self.put_many(&[Put {
            key,
            priority,
            data,
            mode,
            source_digest,
        }])
        .pop()
        .unwrap_or(Ok(Action::None))
    }

    /// Stores several files as one batch, one result per request in order.
    ///
    /// Every new content is first written and fsynced in the staging directories; only then are
    /// the files renamed into place, back to back, so the directories Falco watches change in
    /// one burst (Falco reloads once for a burst, see `docs/artifacts.md`) and never show a
    /// partial file. A request that fails does not stop the others.
    pub fn put_many(&mut self, requests: &[Put<'_>]) -> Vec<Result<Action>> {
        enum Step {
            Rename { from: PathBuf, action: Action },
            Publish { tmp: PathBuf, action: Action },
        }
        struct Pending {
            index: usize,
            step: Step,
            entry: Entry,
            old_path: Option<PathBuf>,
        }
        let mut results: Vec<Option<Result<Action>>> = (0..requests.len()).map(|_| None).collect();
        let mut pending: Vec<Pending> = Vec::new();
        let mut manifest_dirty = false;
        let mut ownership_added = false;
        let on_disk = |p: &Path| fs::read(p).ok().map(|b| sha256(&b));
        for (index, request) in requests.iter().enumerate() {
            let prepared = (|| -> Result<Option<Pending>> {
                let key = request.key;
                let path = self.path_for(key, request.priority)?;
                let digest = sha256(request.data);
                let old = self.get(key).cloned();
                if path.exists() && !self.owns(&path) {
                    return Err(Error::NotOwned(path));
                }
                let entry = Entry {
                    key: key.clone(),
                    priority: request.priority,
                    path: path.clone(),
                    sha256: digest.clone(),
                    source_digest: request.source_digest.map(str::to_owned),
                };
                if let Some(old) = &old
                    && old.path == path
                    && on_disk(&path).as_deref() == Some(digest.as_str())
                {
                    if old != &entry {
                        self.manifest.entries.insert(entry_id(key), entry);
                        manifest_dirty = true;
                    }
                    results[index] = Some(Ok(Action::Unchanged));
                    return Ok(None);
                }
                let step = match &old {
                    Some(old)
                        if old.path != path
                            && old.sha256 == digest
                            && on_disk(&old.path).as_deref() == Some(digest.as_str()) =>
                    {
                        Step::Rename {
                            from: old.path.clone(),
                            action: Action::PriorityChanged,
                        }
                    }
                    Some(_) => Step::Publish {
                        tmp: stage(&path, request.data, request.mode)?,
                        action: Action::Updated,
                    },
                    None => Step::Publish {
                        tmp: stage(&path, request.data, request.mode)?,
                        action: Action::Added,
                    },
                };
                if self.manifest.owned.insert(path.clone()) {
                    ownership_added = true;
                }
                Ok(Some(Pending {
                    index,
                    step,
                    entry,
                    old_path: old.map(|o| o.path).filter(|p| p != &path),
                }))
            })();
            match prepared {
                Ok(Some(p)) => pending.push(p),
                Ok(None) => {}
                Err(e) => results[index] = Some(Err(e)),
            }
        }
        // Record ownership before the files exist, so a crash cannot leave an unknown file.
        if ownership_added && let Err(e) = self.save() {
            let reason = e.to_string();
            for p in pending.drain(..) {
                if let Step::Publish { tmp, .. } = &p.step {
                    let _ = fs::remove_file(tmp);
                }
                results[p.index] = Some(Err(Error::Manifest {
                    path: self.dirs.state.join(MANIFEST_FILE),
                    reason: reason.clone(),
                }));
            }
        }
        // The burst: renames only, back to back.
        let mut touched: BTreeSet<PathBuf> = BTreeSet::new();
        let mut published = Vec::new();
        for p in pending {
            let path = p.entry.path.clone();
            let outcome = match &p.step {
                Step::Publish { tmp, action } => publish(tmp, &path).map(|()| *action),
                Step::Rename { from, action } => fs::rename(from, &path)
                    .map(|()| *action)
                    .map_err(io_err("rename for new priority", &path)),
            };
            match outcome {
                Ok(action) => {
                    touched.insert(path.parent().unwrap_or(Path::new("/")).to_owned());
                    published.push((p, action));
                }
                Err(e) => results[p.index] = Some(Err(e)),
            }
        }
        let mut done = Vec::new();
        for (p, action) in published {
            let mut result = Ok(action);
            if let Some(old_path) = &p.old_path {
                match remove_if_exists(old_path) {
                    Ok(()) => {
                        self.manifest.owned.remove(old_path);
                    }
                    Err(e) => result = Err(e),
                }
            }
            self.manifest
                .entries
                .insert(entry_id(&p.entry.key), p.entry);
            manifest_dirty = true;
            done.push(p.index);
            results[p.index] = Some(result);
        }
        for dir in &touched {
            if let Err(e) = sync_dir(dir) {
                tracing::warn!(error = %e, "fsync after a batch of writes");
            }
        }
        if manifest_dirty && let Err(e) = self.save() {
            let reason = e.to_string();
            for index in done {
                results[index] = Some(Err(Error::Manifest {
                    path: self.dirs.state.join(MANIFEST_FILE),
                    reason: reason.clone(),
                }));
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or(Ok(Action::None)))
            .collect()
    }

    /// Removes the file stored for `key`, if any.
    pub fn remove(&mut self, key: &ArtifactKey) -> Result<Action> {
        let Some(entry) = self.manifest.entries.get(&entry_id(key)).cloned() else {
            return Ok(Action::None);
        };
        remove_if_exists(&entry.path)?;
        self.manifest.entries.remove(&entry_id(key));
        self.manifest.owned.remove(&entry.path);
        self.save()?;
        Ok(Action::Removed)
    }

    /// Removes every stored file whose key `keep` rejects (after a restart: what this node no
    /// longer needs). Returns the keys removed.
    pub fn retain(
        &mut self,
        mut keep: impl FnMut(&ArtifactKey) -> bool,
    ) -> Result<Vec<ArtifactKey>> {
        let doomed: Vec<ArtifactKey> = self
            .manifest
            .entries
            .values()
            .map(|e| e.key.clone())
            .filter(|k| !keep(k))
            .collect();
        for key in &doomed {
            self.remove(key)?;
        }
        Ok(doomed)
    }

    /// Writes the aggregated plugins configuration (`load_plugins` + `plugins`), sorted by name,
    /// or removes it when `plugins` is empty.
    pub fn put_plugins_config(&mut self, plugins: &[PluginConfig]) -> Result<Action> {
        let key = ArtifactKey::new(Kind::PluginsConfig, PLUGINS_CONFIG_NAME, Medium::Inline);
        if plugins.is_empty() {
            return self.remove(&key);
        }
        let mut sorted: Vec<&PluginConfig> = plugins.iter().collect();
        sorted.sort_by(|a, b| a.name.cmp(&b.name));
        sorted.dedup_by(|a, b| a.name == b.name);
        let file = PluginsFile {
            load_plugins: sorted.iter().map(|p| p.name.as_str()).collect(),
            plugins: sorted,
        };
        let yaml = serde_yaml::to_string(&file)?;
        self.put(&key, PLUGINS_CONFIG_PRIORITY, yaml.as_bytes(), 0o600, None)
    }
}

fn remove_if_exists(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => sync_dir(path.parent().unwrap_or(Path::new("/"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("remove", path)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dirs(root: &Path) -> Dirs {
        Dirs {
            rules: root.join("rules.d"),
            config: root.join("config.d"),
            plugins: root.join("plugins"),
            state: root.join("state"),
        }
    }

    /// The entries of `dir` but its staging directory.
    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n != TEMP_DIR)
            .collect();
        v.sort();
        v
    }

    #[test]
    fn naming_matches_upstream() {
        assert_eq!(
            priority_file_name(50, Medium::Oci, "falco-rules").unwrap(),
            "50-01-falco-rules-oci.yaml"
        );
        assert_eq!(
            priority_file_name(7, Medium::ConfigMap, "x").unwrap(),
            "07-02-x-configmap.yaml"
        );
        assert_eq!(
            priority_file_name(0, Medium::Inline, "x").unwrap(),
            "00-03-x-inline.yaml"
        );
        assert_eq!(
            priority_file_name(PLUGINS_CONFIG_PRIORITY, Medium::Inline, PLUGINS_CONFIG_NAME)
                .unwrap(),
            "99-03-plugins-config-inline.yaml"
        );
        assert!(priority_file_name(100, Medium::Oci, "x").is_err());
        for bad in ["", "../x", "a/b", ".hidden", "UPPER", "a..b"] {
            assert!(priority_file_name(1, Medium::Oci, bad).is_err(), "{bad}");
        }
        // Lexical order is load order: OCI, ConfigMap, inline within one priority.
        let mut v = vec![
            priority_file_name(10, Medium::Inline, "a").unwrap(),
            priority_file_name(9, Medium::Inline, "z").unwrap(),
            priority_file_name(10, Medium::Oci, "z").unwrap(),
            priority_file_name(10, Medium::ConfigMap, "m").unwrap(),
        ];
        v.sort();
        assert_eq!(
            v,
            [
                "09-03-z-inline.yaml",
                "10-01-z-oci.yaml",
                "10-02-m-configmap.yaml",
                "10-03-a-inline.yaml"
            ]
        );
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp_file() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("f.yaml");
        write_atomic(&path, b"one", 0o600).unwrap();
        write_atomic(&path, b"two", 0o640).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o640
        );
        assert_eq!(names(tmp.path()), ["f.yaml"]);
        assert!(names(&staging_dir(tmp.path())).is_empty());
        // A failing write (missing directory) leaves nothing behind.
        assert!(write_atomic(&tmp.path().join("missing/f"), b"x", 0o600).is_err());
        assert_eq!(names(tmp.path()), ["f.yaml"]);
    }

    #[test]
    fn put_update_priority_change_and_remove() {
        let tmp = tempfile::tempdir().unwrap();
        let mut store = Store::open(dirs(tmp.path())).unwrap();
        let key = ArtifactKey::new(Kind::Rulesfile, "r", Medium::Inline);
        assert_eq!(
            store.put(&key, 10, b"a", 0o600, None).unwrap(),
            Action::Added
        );
        assert_eq!(
            store.put(&key, 10, b"a", 0o600, None).unwrap(),
            Action::Unchanged
        );
        assert_eq!(
            store.put(&key, 10, b"b", 0o600, None).unwrap(),
            Action::Updated
        );
        assert_eq!(
            store.put(&key, 20, b"b", 0o600, None).unwrap(),
            Action::PriorityChanged
        );
        assert_eq!(names(&tmp.path().join("rules.d")), ["20-03-r-inline.yaml"]);
        assert_eq!(
            store.put(&key, 30, b"c", 0o600, None).unwrap(),
            Action::Updated
        );
        assert_eq!(names(&tmp.path().join("rules.d")), ["30-03-r-inline.yaml"]);
        assert_eq!(
            fs::read(tmp.path().join("rules.d/30-03-r-inline.yaml")).unwrap(),
            b"c"
        );
        assert_eq!(store.remove(&key).unwrap(), Action::Removed);
        assert_eq!(store.remove(&key).unwrap(), Action::None);
        assert!(names(&tmp.path().join("rules.d")).is_empty());
    }

    #[test]
    fn foreign_files_are_never_touched() {
        let tmp = tempfile::tempdir().unwrap();
        let d = dirs(tmp.path());
        fs::create_dir_all(&d.rules).unwrap();
        let foreign = d.rules.join("10-01-r-oci.yaml");
        fs::write(&foreign, b"mine").unwrap();
        fs::write(d.rules.join("falco_rules.yaml"), b"packaged").unwrap();
        let mut store = Store::open(d.clone()).unwrap();
        let key = ArtifactKey::new(Kind::Rulesfile, "r", Medium::Oci);
        assert!(matches!(
            store.put(&key, 10, b"x", 0o644, None),
            Err(Error::NotOwned(_))
        ));
        assert_eq!(store.retain(|_| false).unwrap(), Vec::<ArtifactKey>::new());
        assert_eq!(fs::read(&foreign).unwrap(), b"mine");
        assert_eq!(names(&d.rules), ["10-01-r-oci.yaml", "falco_rules.yaml"]);
    }

    #[test]
    fn restart_knows_its_files_and_cleans_up() {
        let tmp = tempfile::tempdir().unwrap();
        let d = dirs(tmp.path());
        let a = ArtifactKey::new(Kind::Rulesfile, "a", Medium::Oci);
        let b = ArtifactKey::new(Kind::Config, "b", Medium::ConfigMap);
        {
            let mut store = Store::open(d.clone()).unwrap();
            store.put(&a, 10, b"a", 0o644, Some("sha256:aa")).unwrap();
            store.put(&b, 5, b"b", 0o600, None).unwrap();
        }
        // Debris of a killed write and an owned path no entry refers to (interrupted update).
        fs::write(
            d.rules.join(format!("{LEGACY_TEMP_PREFIX}1.2.x.yaml")),
            b"half",
        )
        .unwrap();
        fs::write(staging_dir(&d.rules).join("1.3.x.yaml.part"), b"half").unwrap();
        let mut store = Store::open(d.clone()).unwrap();
        assert_eq!(store.installed_digest(&a), Some("sha256:aa"));
        assert_eq!(names(&d.rules), ["10-01-a-oci.yaml"]);
        assert!(names(&staging_dir(&d.rules)).is_empty());
        // Priority changed while the sidecar was down: renamed, the old file does not linger.
        assert_eq!(
            store.put(&a, 60, b"a", 0o644, Some("sha256:aa")).unwrap(),
            Action::PriorityChanged
        );
        assert_eq!(names(&d.rules), ["60-01-a-oci.yaml"]);
        // This node no longer needs `b`.
        assert_eq!(store.retain(|k| k == &a).unwrap(), vec![b]);
        assert_eq!(names(&d.config), Vec::<String>::new());
    }

    /// What Falco would load from a rules directory: regular `*.yaml`/`*.yml` files of the
    /// directory itself (config.d: every regular file).
    fn falco_would_load(dir: &Path, rules: bool) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .filter(|n| !rules || n.ends_with(".yaml") || n.ends_with(".yml"))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_staged_file_is_invisible_to_falco_and_a_batch_lands_together() {
        let tmp = tempfile::tempdir().unwrap();
        let d = dirs(tmp.path());
        let mut store = Store::open(d.clone()).unwrap();
        // The staging directory exists from the start (no event in a watched directory later).
        assert!(staging_dir(&d.rules).is_dir());
        assert!(staging_dir(&d.config).is_dir());
        let staged = stage(&d.config.join("10-03-c-inline.yaml"), b"x: 1", 0o600).unwrap();
        assert_eq!(staged.parent().unwrap(), staging_dir(&d.config));
        assert!(!staged.to_string_lossy().ends_with(".yaml"));
        assert!(falco_would_load(&d.config, false).is_empty());
        fs::remove_file(staged).unwrap();

        let a = ArtifactKey::new(Kind::Rulesfile, "a", Medium::Inline);
        let b = ArtifactKey::new(Kind::Rulesfile, "b", Medium::ConfigMap);
        let c = ArtifactKey::new(Kind::Config, "c", Medium::Inline);
        let foreign = d.rules.join("10-01-f-oci.yaml");
        fs::write(&foreign, b"mine").unwrap();
        let f = ArtifactKey::new(Kind::Rulesfile, "f", Medium::Oci);
        let put = |key, data| Put {
            key,
            priority: 10,
            data,
            mode: 0o600,
            source_digest: None,
        };
        let results = store.put_many(&[
            put(&a, b"- list: a"),
            put(&b, b"- list: b"),
            put(&f, b"- list: f"),
            put(&c, b"x: 1"),
        ]);
        assert!(matches!(results[0], Ok(Action::Added)));
        assert!(matches!(results[1], Ok(Action::Added)));
        assert!(matches!(results[2], Err(Error::NotOwned(_))), "{results:?}");
        assert!(matches!(results[3], Ok(Action::Added)));
        assert_eq!(
            falco_would_load(&d.rules, true),
            [
                "10-01-f-oci.yaml",
                "10-02-b-configmap.yaml",
                "10-03-a-inline.yaml"
            ]
        );
        assert_eq!(fs::read(&foreign).unwrap(), b"mine");
        assert_eq!(falco_would_load(&d.config, false), ["10-03-c-inline.yaml"]);
        for dir in [&d.rules, &d.config] {
            assert!(names(&staging_dir(dir)).is_empty());
        }
        // The manifest knows the batch after a restart.
        drop(store);
        let store = Store::open(d.clone()).unwrap();
        assert!(store.get(&a).is_some() && store.get(&b).is_some() && store.get(&c).is_some());
        assert!(store.get(&f).is_none());
    }

    #[test]
    fn plugins_config_is_aggregated() {
        let tmp = tempfile::tempdir().unwrap();
        let mut store = Store::open(dirs(tmp.path())).unwrap();
        let plugin = |n: &str| PluginConfig {
            name: n.into(),
            library_path: format!("/usr/share/falco/plugins/{n}.so"),
            init_config: None,
            open_params: None,
        };
        let mut k8s = plugin("k8saudit");
        k8s.open_params = Some("http://:9765/k8s-audit".into());
        store.put_plugins_config(&[plugin("json"), k8s]).unwrap();
        let path = tmp.path().join("config.d/99-03-plugins-config-inline.yaml");
        let v: serde_yaml::Value = serde_yaml::from_slice(&fs::read(&path).unwrap()).unwrap();
        assert_eq!(
            v["load_plugins"],
            serde_yaml::to_value(["json", "k8saudit"]).unwrap()
        );
        assert_eq!(v["plugins"][1]["open_params"], "http://:9765/k8s-audit");
        assert_eq!(
            v["plugins"][0]["library_path"],
            "/usr/share/falco/plugins/json.so"
        );
        assert_eq!(store.put_plugins_config(&[]).unwrap(), Action::Removed);
        assert!(!path.exists());
        let bin = ArtifactKey::new(Kind::PluginBinary, "json", Medium::Oci);
        store.put(&bin, 0, b"\x7fELF", 0o755, None).unwrap();
        assert_eq!(names(&tmp.path().join("plugins")), ["json.so"]);
    }
}
