//! A real OCI registry (Debian's `docker-registry`) on loopback, and a pusher of Falco artifacts,
//! for the demo: `falco-testenv registry --dir DIR --push rulesfile:demo/rules:1.0:rules.yaml`.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use crate::Error;

/// Where Debian's `docker-registry` package installs the registry.
pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// A running plain-HTTP registry on `127.0.0.1`; killed on drop. Its data lives in the
/// directory given to [`Registry::start`].
pub struct Registry {
    host: String,
    child: Child,
    log: PathBuf,
}

impl Registry {
    /// Starts a registry storing under `dir` and waits until it accepts connections.
    pub fn start(dir: &Path) -> Result<Self, Error> {
        if !Path::new(REGISTRY_BIN).exists() {
            return Err(Error::Registry(format!(
                "{REGISTRY_BIN} is missing: apt-get install docker-registry"
            )));
        }
        let io = |what: &str, e: std::io::Error| Error::Registry(format!("{what}: {e}"));
        std::fs::create_dir_all(dir).map_err(|e| io("creating the registry directory", e))?;
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| io("finding a free port", e))?
            .port();
        let host = format!("127.0.0.1:{port}");
        let config = format!(
            "version: 0.1\nlog: {{level: warn}}\nstorage:\n  filesystem: {{rootdirectory: {}}}\nhttp:\n  addr: {host}\n",
            dir.join("data").display()
        );
        let config_path = dir.join("config.yml");
        std::fs::write(&config_path, config).map_err(|e| io("writing config.yml", e))?;
        let log = dir.join("registry.log");
        let log_file = std::fs::File::create(&log).map_err(|e| io("creating registry.log", e))?;
        let stderr = log_file
            .try_clone()
            .map_err(|e| io("opening registry.log", e))?;
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(stderr)
            .spawn()
            .map_err(|e| io("starting docker-registry", e))?;
        let mut registry = Self { host, child, log };
        registry.wait_ready()?;
        Ok(registry)
    }

    fn wait_ready(&mut self) -> Result<(), Error> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(&self.host).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                return Err(Error::Registry(format!(
                    "docker-registry exited with {status}: {log}"
                )));
            }
            if Instant::now() > deadline {
                return Err(Error::Registry(format!(
                    "docker-registry did not listen on {} within 30 s",
                    self.host
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// The registry's process ID (for a guard that must stop it if this process dies).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `127.0.0.1:<port>`.
    pub fn host(&self) -> &str {
        &self.host
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The kind of Falco artifact, which decides the media types (Falco's, as falcoctl pushes them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ArtifactKind {
    /// A rules file: `application/vnd.cncf.falco.rulesfile.*`.
    Rulesfile,
    /// A plugin shared library: `application/vnd.cncf.falco.plugin.*`.
    Plugin,
}

impl ArtifactKind {
    fn media_types(self) -> (&'static str, &'static str) {
        match self {
            Self::Rulesfile => (
                "application/vnd.cncf.falco.rulesfile.config.v1+json",
                "application/vnd.cncf.falco.rulesfile.layer.v1+tar.gz",
            ),
            Self::Plugin => (
                "application/vnd.cncf.falco.plugin.config.v1+json",
                "application/vnd.cncf.falco.plugin.layer.v1+tar.gz",
            ),
        }
    }
}

/// Pushes `file` as a Falco artifact to `host/repository:tag` over plain HTTP (a loopback
/// registry) and returns the manifest URL the registry answered.
pub async fn push_artifact(
    host: &str,
    repository: &str,
    tag: &str,
    kind: ArtifactKind,
    file: &Path,
) -> Result<String, Error> {
    let data = std::fs::read(file)
        .map_err(|e| Error::Registry(format!("reading {}: {e}", file.display())))?;
    let name = file
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::Registry(format!("{} has no file name", file.display())))?;
    let (config_type, layer_type) = kind.media_types();
    let layer = ImageLayer::new(tar_gz(name, &data)?, layer_type.to_owned(), None);
    let config = Config::new(
        serde_json::to_vec(&serde_json::json!({ "name": repository, "version": tag }))
            .unwrap_or_default(),
        config_type.to_owned(),
        None,
    );
    let reference: Reference = format!("{host}/{repository}:{tag}")
        .parse()
        .map_err(|e| Error::Registry(format!("invalid reference: {e}")))?;
    let client = Client::new(ClientConfig {
        protocol: ClientProtocol::Http,
        ..ClientConfig::default()
    });
    let response = client
        .push(&reference, &[layer], config, &RegistryAuth::Anonymous, None)
        .await
        .map_err(|e| Error::Registry(format!("pushing {reference}: {e}")))?;
    Ok(response.manifest_url)
}

/// A gzip tar holding one regular file, as Falco artifacts carry it.
fn tar_gz(name: &str, data: &[u8]) -> Result<Vec<u8>, Error> {
    let io = |e: std::io::Error| Error::Registry(format!("building the artifact layer: {e}"));
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::default(),
    ));
    let mut header = tar::Header::new_gnu();
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    builder.append_data(&mut header, name, data).map_err(io)?;
    builder.into_inner().map_err(io)?.finish().map_err(io)
}
