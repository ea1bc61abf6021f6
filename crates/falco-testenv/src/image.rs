//! Container images without a container engine.
//!
//! The project's images (the same binaries, users, entrypoints and commands as the `Dockerfile`'s
//! stages) are assembled here from the static musl binaries `make images` builds, as OCI images
//! of two layers, and pushed to a registry:
//!
//! - a **base layer**, the same bytes in every image: the CA certificates of this machine
//!   (Debian's `ca-certificates` bundle), `/etc/passwd` and `/etc/group` with `root` and
//!   `nonroot` (65532), and `/tmp`;
//! - an **application layer** with the binary in `/usr/bin`.
//!
//! Layers are gzip tarballs with fixed times and owners, so the same binary gives the same
//! digest. The stand-ins the tests need for images that cannot be pulled here (Falco itself,
//! the pod sandbox "pause" image) are built the same way from `falco-standin`, and say in their
//! name and their output that they are stand-ins.

use std::path::{Path, PathBuf};

use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde_json::json;
use sha2::{Digest as _, Sha256};

use crate::Error;

const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// The CA bundle put into every image.
pub const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// The non-root user of the images (distroless' `nonroot`).
pub const NONROOT: u32 = 65532;

/// One image: what goes into its application layer and how it runs.
#[derive(Clone, Debug)]
pub struct ImageSpec {
    /// Repository below the registry host, e.g. `falco-operator`.
    pub repository: String,
    /// Files: (path in the image, contents, mode).
    pub files: Vec<(String, Vec<u8>, u32)>,
    /// `ENTRYPOINT`.
    pub entrypoint: Vec<String>,
    /// `CMD`.
    pub cmd: Vec<String>,
    /// `USER`, e.g. `65532:65532`; root when `None`.
    pub user: Option<String>,
    /// `ENV`, `NAME=value`.
    pub env: Vec<String>,
}

/// The project's binaries and the stand-ins, as images; `bins` holds the static musl builds.
///
/// | image | binary | user | entrypoint + cmd |
/// |---|---|---|---|
/// | `falco-operator` | falco-operator | 65532 | `falco-operator run` |
/// | `falco-artifact-operator` | falco-artifact-operator | 65532 | `falco-artifact-operator run` |
/// | `falco-driver-repo` | falco-driver-repo | 65532 | `falco-driver-repo serve` |
/// | `falco-driver-loader` | falco-driver-loader | root, `HOST_ROOT=/host` | `falco-driver-loader auto` |
/// | `falco-standin` | falco-standin | root | `falco-standin falco` (a stand-in, not Falco) |
/// | `falco-testenv-pause` | falco-standin | 65532 | `falco-standin pause` |
///
/// The loader image here carries no compiler: the `Dockerfile`'s loader stage adds Debian's
/// toolchain for the compile fallback, which an engine-free build cannot install. It does carry
/// the module tools the loader runs (`insmod`, `rmmod`, `lsmod`, `modprobe`, `modinfo`: Debian's
/// `kmod` with the shared libraries it links, taken from this machine), so a load fails in the
/// pod for the kernel's reason, not for a missing command.
pub fn project_images(bins: &Path) -> Result<Vec<ImageSpec>, Error> {
    let binary = |name: &str| -> Result<(String, Vec<u8>, u32), Error> {
        let path = bins.join(name);
        let data = std::fs::read(&path).map_err(|e| {
            Error::Image(format!(
                "reading {}: {e} (build the static binaries first: make images)",
                path.display()
            ))
        })?;
        Ok((format!("/usr/bin/{name}"), data, 0o755))
    };
    let nonroot = Some(format!("{NONROOT}:{NONROOT}"));
    let spec = |repository: &str, bin: &str, cmd: &[&str], user: &Option<String>, env: &[&str]| {
        Ok::<_, Error>(ImageSpec {
            repository: repository.to_owned(),
            files: vec![binary(bin)?],
            entrypoint: vec![format!("/usr/bin/{bin}")],
            cmd: cmd.iter().map(|s| (*s).to_owned()).collect(),
            user: user.clone(),
            env: env.iter().map(|s| (*s).to_owned()).collect(),
        })
    };
    Ok(vec![
        spec("falco-operator", "falco-operator", &["run"], &nonroot, &[])?,
        spec(
            "falco-artifact-operator",
            "falco-artifact-operator",
            &["run"],
            &nonroot,
            &[],
        )?,
        spec(
            "falco-driver-repo",
            "falco-driver-repo",
            &["serve"],
            &nonroot,
            &[],
        )?,
        ImageSpec {
            files: [binary("falco-driver-loader")?]
                .into_iter()
                .chain(module_tools()?)
                .collect(),
            ..spec(
                "falco-driver-loader",
                "falco-driver-loader",
                &["auto"],
                &None,
                &["HOST_ROOT=/host"],
            )?
        },
        ImageSpec {
            entrypoint: vec!["/usr/bin/falco-standin".to_owned(), "falco".to_owned()],
            ..spec("falco-standin", "falco-standin", &[], &None, &[])?
        },
        ImageSpec {
            entrypoint: vec!["/usr/bin/falco-standin".to_owned(), "pause".to_owned()],
            ..spec("falco-testenv-pause", "falco-standin", &[], &nonroot, &[])?
        },
    ])
}

/// Debian's `kmod` under the names the loader runs, with its dynamic loader and libraries as
/// `ldd` resolves them on this machine (`apt-get install kmod`).
fn module_tools() -> Result<Vec<(String, Vec<u8>, u32)>, Error> {
    const KMOD: &str = "/usr/bin/kmod";
    let read = |path: &str| {
        std::fs::read(path)
            .map_err(|e| Error::Image(format!("reading {path}: {e} (apt-get install kmod)")))
    };
    let kmod = read(KMOD)?;
    let mut files: Vec<(String, Vec<u8>, u32)> =
        ["kmod", "insmod", "rmmod", "lsmod", "modprobe", "modinfo"]
            .iter()
            .map(|name| (format!("/usr/sbin/{name}"), kmod.clone(), 0o755))
            .collect();
    let ldd = std::process::Command::new("ldd")
        .arg(KMOD)
        .output()
        .map_err(|e| Error::Image(format!("running ldd {KMOD}: {e}")))?;
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)` or `/lib64/ld-linux-x86-64.so.2 (0x…)`.
        let path = line
            .split("=>")
            .last()
            .and_then(|rest| rest.split_whitespace().next())
            .filter(|p| p.starts_with('/'));
        if let Some(path) = path {
            files.push((path.to_owned(), read(path)?, 0o755));
        }
    }
    Ok(files)
}

/// Builds `spec` and pushes it to `host/<repository>:tag` over plain HTTP (a loopback
/// registry). Returns the image reference.
pub async fn push_image(host: &str, tag: &str, spec: &ImageSpec) -> Result<String, Error> {
    let base = base_layer()?;
    let app = layer(&spec.files)?;
    let env = [
        vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned()],
        spec.env.clone(),
    ]
    .concat();
    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Entrypoint": spec.entrypoint,
            "Cmd": spec.cmd,
            "User": spec.user.clone().unwrap_or_default(),
            "Env": env,
            "Labels": { "org.opencontainers.image.source": "falco-testenv (engine-free build)" },
        },
        "rootfs": { "type": "layers", "diff_ids": [base.diff_id, app.diff_id] },
        "history": [
            { "created_by": "falco-testenv: base layer (CA certificates, users, /tmp)" },
            { "created_by": format!("falco-testenv: {}", spec.repository) },
        ],
    });
    let reference = format!("{host}/{}:{tag}", spec.repository);
    let parsed: Reference = reference
        .parse()
        .map_err(|e| Error::Image(format!("invalid reference {reference}: {e}")))?;
    let client = Client::new(ClientConfig {
        protocol: ClientProtocol::Http,
        ..ClientConfig::default()
    });
    let layers = [
        ImageLayer::new(base.gzip, LAYER_MEDIA_TYPE.to_owned(), None),
        ImageLayer::new(app.gzip, LAYER_MEDIA_TYPE.to_owned(), None),
    ];
    let config = Config::new(
        serde_json::to_vec(&config).map_err(|e| Error::Image(e.to_string()))?,
        CONFIG_MEDIA_TYPE.to_owned(),
        None,
    );
    client
        .push(&parsed, &layers, config, &RegistryAuth::Anonymous, None)
        .await
        .map_err(|e| Error::Image(format!("pushing {reference}: {e}")))?;
    Ok(reference)
}

/// Pushes every image of [`project_images`] and returns (repository, reference) pairs.
pub async fn push_project_images(
    host: &str,
    tag: &str,
    bins: &Path,
) -> Result<Vec<(String, String)>, Error> {
    let mut pushed = Vec::new();
    for spec in project_images(bins)? {
        let reference = push_image(host, tag, &spec).await?;
        pushed.push((spec.repository, reference));
    }
    Ok(pushed)
}

/// Reads `host/<repository>:tag` back as a runtime would (manifest, config, every layer, each
/// checked against its digest) and returns the compressed size of its layers.
pub async fn pulled_size(host: &str, repository: &str, tag: &str) -> Result<u64, Error> {
    let reference: Reference = format!("{host}/{repository}:{tag}")
        .parse()
        .map_err(|e| Error::Image(format!("invalid reference: {e}")))?;
    let client = Client::new(ClientConfig {
        protocol: ClientProtocol::Http,
        ..ClientConfig::default()
    });
    let image = client
        .pull(&reference, &RegistryAuth::Anonymous, vec![LAYER_MEDIA_TYPE])
        .await
        .map_err(|e| Error::Image(format!("pulling {reference}: {e}")))?;
    let config: serde_json::Value = serde_json::from_slice(&image.config.data)
        .map_err(|e| Error::Image(format!("{reference}: config: {e}")))?;
    let diff_ids = config["rootfs"]["diff_ids"].as_array().map_or(0, Vec::len);
    if diff_ids != image.layers.len() {
        return Err(Error::Image(format!(
            "{reference}: {} layers but {diff_ids} diff_ids",
            image.layers.len()
        )));
    }
    Ok(image.layers.iter().map(|l| l.data.len() as u64).sum())
}

/// Where `make images` leaves the static musl binaries: `$FALCO_IMAGE_BINS`, else
/// `<target dir>/x86_64-unknown-linux-musl/debug` of this workspace.
pub fn image_bins_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("FALCO_IMAGE_BINS") {
        return PathBuf::from(dir);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("x86_64-unknown-linux-musl/debug")
}

struct Layer {
    gzip: Vec<u8>,
    diff_id: String,
}

fn base_layer() -> Result<Layer, Error> {
    let ca = std::fs::read(CA_BUNDLE).map_err(|e| {
        Error::Image(format!(
            "reading {CA_BUNDLE}: {e} (apt-get install ca-certificates)"
        ))
    })?;
    let passwd = format!(
        "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:{NONROOT}:{NONROOT}:nonroot:/home/nonroot:/sbin/nologin\n"
    );
    let group = format!("root:x:0:\nnonroot:x:{NONROOT}:\n");
    layer(&[
        (CA_BUNDLE.to_owned(), ca, 0o644),
        ("/etc/passwd".to_owned(), passwd.into_bytes(), 0o644),
        ("/etc/group".to_owned(), group.into_bytes(), 0o644),
        ("/tmp/".to_owned(), Vec::new(), 0o1777),
        ("/home/nonroot/".to_owned(), Vec::new(), 0o755),
    ])
}

/// A layer of `files` (a path ending in `/` is a directory), parents created, fixed metadata.
fn layer(files: &[(String, Vec<u8>, u32)]) -> Result<Layer, Error> {
    let io = |e: std::io::Error| Error::Image(format!("building a layer: {e}"));
    let mut tar = tar::Builder::new(Vec::new());
    let mut dirs = std::collections::BTreeSet::new();
    for (path, _, _) in files {
        let rel = path.trim_start_matches('/');
        let mut parent = Path::new(rel.trim_end_matches('/')).parent();
        while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
            dirs.insert(p.to_owned());
            parent = p.parent();
        }
    }
    let header = |kind, mode, size| {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        h
    };
    for dir in &dirs {
        let mut h = header(tar::EntryType::Directory, 0o755, 0);
        tar.append_data(&mut h, dir, std::io::empty()).map_err(io)?;
    }
    for (path, data, mode) in files {
        let rel = path.trim_start_matches('/');
        if let Some(dir) = rel.strip_suffix('/') {
            let mut h = header(tar::EntryType::Directory, *mode, 0);
            tar.append_data(&mut h, dir, std::io::empty()).map_err(io)?;
        } else {
            let mut h = header(tar::EntryType::Regular, *mode, data.len() as u64);
            tar.append_data(&mut h, rel, data.as_slice()).map_err(io)?;
        }
    }
    let raw = tar.into_inner().map_err(io)?;
    let diff_id = format!("sha256:{}", hex::encode(Sha256::digest(&raw)));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &raw).map_err(io)?;
    Ok(Layer {
        gzip: gz.finish().map_err(io)?,
        diff_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_are_reproducible_and_carry_their_parents() {
        let files = vec![("/usr/bin/x".to_owned(), b"binary".to_vec(), 0o755)];
        let (a, b) = (layer(&files).unwrap(), layer(&files).unwrap());
        assert_eq!(a.diff_id, b.diff_id);
        assert_eq!(a.gzip, b.gzip);
        let raw = {
            let mut out = Vec::new();
            std::io::Read::read_to_end(
                &mut flate2::read::GzDecoder::new(a.gzip.as_slice()),
                &mut out,
            )
            .unwrap();
            out
        };
        let mut archive = tar::Archive::new(raw.as_slice());
        let names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(names, ["usr", "usr/bin", "usr/bin/x"]);
    }
}
