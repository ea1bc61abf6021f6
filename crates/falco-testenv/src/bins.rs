//! Finding (and building on first use) the kube-apiserver and etcd binaries.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Error;

/// Environment variable naming a directory that holds `etcd` and `kube-apiserver`.
pub const BIN_DIR_ENV: &str = "FALCO_TESTENV_BIN";

/// Paths of the control-plane binaries, and the directory holding the rest (controller manager,
/// scheduler, and the node's kubelet, containerd, its shim and the CNI plugin).
#[derive(Clone, Debug)]
pub struct Binaries {
    /// The etcd server.
    pub etcd: PathBuf,
    /// The Kubernetes API server.
    pub kube_apiserver: PathBuf,
    /// The directory `hack/build-testenv.sh` fills.
    pub dir: PathBuf,
}

impl Binaries {
    fn in_dir(dir: &Path) -> Option<Self> {
        let bins = Self {
            etcd: dir.join("etcd"),
            kube_apiserver: dir.join("kube-apiserver"),
            dir: dir.to_owned(),
        };
        (bins.etcd.is_file() && bins.kube_apiserver.is_file()).then_some(bins)
    }

    /// The binary `name` of the same directory (`kube-scheduler`, `kubelet`, `containerd`, …),
    /// or an error saying how to get it.
    pub fn other(&self, name: &str) -> Result<PathBuf, Error> {
        let path = self.dir.join(name);
        if path.is_file() {
            Ok(path)
        } else {
            Err(Error::Binaries(format!(
                "{} has no {name}: run hack/build-testenv.sh (it builds the controller manager, \
                 scheduler, kubelet and containerd beside the API server)",
                self.dir.display()
            )))
        }
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
    let (script, dir) = run_build_script("build-testenv.sh", BIN_DIR_ENV)?;
    Binaries::in_dir(&dir).ok_or_else(|| {
        Error::Binaries(format!(
            "{script} reported {} but the binaries are not there",
            dir.display()
        ))
    })
}

/// Environment variable naming the `helm` binary.
pub const HELM_ENV: &str = "FALCO_HELM_BIN";

/// Finds `helm` (for the chart tests): `$FALCO_HELM_BIN` when set, otherwise by running
/// `hack/build-helm.sh` (the per-machine cache, or a build from the Go module proxy).
pub fn locate_helm() -> Result<PathBuf, Error> {
    if let Some(path) = std::env::var_os(HELM_ENV) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(Error::Binaries(format!(
                "{HELM_ENV}={} is not a file; run hack/build-helm.sh",
                path.display()
            )))
        };
    }
    let (script, dir) = run_build_script("build-helm.sh", HELM_ENV)?;
    let helm = dir.join("helm");
    if helm.is_file() {
        Ok(helm)
    } else {
        Err(Error::Binaries(format!(
            "{script} reported {} but helm is not there",
            dir.display()
        )))
    }
}

/// Runs `hack/<name>` (which builds once per machine and prints its bin directory on its last
/// line) and returns the script's path for messages and the directory.
fn run_build_script(name: &str, env: &str) -> Result<(String, PathBuf), Error> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../hack")
        .join(name);
    let shown = script.display().to_string();
    if !script.is_file() {
        return Err(Error::Binaries(format!(
            "neither {env} is set nor {shown} exists; set {env}"
        )));
    }
    let output = Command::new("bash")
        .arg(&script)
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| Error::Binaries(format!("cannot run {shown}: {e}")))?;
    if !output.status.success() {
        return Err(Error::Binaries(format!(
            "{shown} failed ({}); see the lines above",
            output.status
        )));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let dir = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
    Ok((shown, dir))
}
