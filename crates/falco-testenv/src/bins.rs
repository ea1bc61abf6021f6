//! Finding (and building on first use) the kube-apiserver and etcd binaries.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Error;

/// Environment variable naming a directory that holds `etcd` and `kube-apiserver`.
pub const BIN_DIR_ENV: &str = "FALCO_TESTENV_BIN";

/// Paths of the control-plane binaries.
#[derive(Clone, Debug)]
pub struct Binaries {
    /// The etcd server.
    pub etcd: PathBuf,
    /// The Kubernetes API server.
    pub kube_apiserver: PathBuf,
}

impl Binaries {
    fn in_dir(dir: &Path) -> Option<Self> {
        let bins = Self {
            etcd: dir.join("etcd"),
            kube_apiserver: dir.join("kube-apiserver"),
        };
        (bins.etcd.is_file() && bins.kube_apiserver.is_file()).then_some(bins)
    }
}

/// Finds the binaries: in `$FALCO_TESTENV_BIN` when set, otherwise by running
/// `hack/build-testenv.sh`, which returns the per-machine cache at once when it is warm and builds
/// from the Go module proxy when it is cold. Fails with a message that names what is missing.
pub fn locate_binaries() -> Result<Binaries, Error> {
    if let Some(dir) = std::env::var_os(BIN_DIR_ENV) {
        let dir = PathBuf::from(dir);
        return Binaries::in_dir(&dir).ok_or_else(|| {
            Error::Binaries(format!(
                "{BIN_DIR_ENV}={} does not contain both etcd and kube-apiserver; run hack/build-testenv.sh",
                dir.display()
            ))
        });
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../hack/build-testenv.sh");
    if !script.is_file() {
        return Err(Error::Binaries(format!(
            "neither {BIN_DIR_ENV} is set nor {} exists; set {BIN_DIR_ENV} to a directory with etcd and kube-apiserver",
            script.display()
        )));
    }
    let output = Command::new("bash")
        .arg(&script)
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| Error::Binaries(format!("cannot run {}: {e}", script.display())))?;
    if !output.status.success() {
        return Err(Error::Binaries(format!(
            "{} failed ({}); see the lines above",
            script.display(),
            output.status
        )));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let dir = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
    Binaries::in_dir(&dir).ok_or_else(|| {
        Error::Binaries(format!(
            "{} reported {} but the binaries are not there",
            script.display(),
            dir.display()
        ))
    })
}
