//! Target (distribution) detection and per-distribution kernel fix-ups, as falcoctl's
//! `pkg/driver/distro` (drivers.md §2.3).
//!
//! [`discover`] reads `$HOST_ROOT/etc/os-release` and the marker files and returns a
//! [`Distro`]; [`Distro::fixup_kernel`] turns `uname -r` / `uname -v` into the kernel
//! release and version used in the driver file name. Unlike falcoctl, which iterates a Go
//! map, the fallback markers are checked in a fixed order (minikube's `etc/VERSION` first,
//! as the legacy script lets it override everything, then `debian_version`,
//! `centos-release`, `redhat-release`).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::LazyLock;

use regex::Regex;

use super::{
    DriverError, DriverType, HOST_FILE_LIMIT, KernelRelease, host_file_exists, read_host_file,
};

/// Target id of a host whose distribution could not be determined.
pub const UNDETERMINED: &str = "undetermined";

fn re(pattern: &str) -> Regex {
    Regex::new(pattern).unwrap_or_else(|e| unreachable!("static pattern {pattern}: {e}"))
}

/// `#(\d+).*`: the digits after the first `#` (falcoctl's generic kernel version).
static GENERIC_KV: LazyLock<Regex> = LazyLock::new(|| re(r"#(\d+)"));
/// Ubuntu flavour from the release's full extraversion.
static UBUNTU_FLAVOR: LazyLock<Regex> = LazyLock::new(|| re(r"-([a-zA-Z]+)(-.*)?$"));
/// Debian: the real kernel release is embedded in `uname -v`.
static DEBIAN_KV: LazyLock<Regex> = LazyLock::new(|| re(r"\d+\.\d+\.\d+-\d+"));
/// Debian: the flavour and architecture suffix of `uname -r`.
static DEBIAN_KR_SUFFIX: LazyLock<Regex> = LazyLock::new(|| re(r"-?(rt-|cloud-|)(amd64|arm64)"));
/// Minikube: `x.y.z` inside `etc/VERSION`.
static MINIKUBE_VERSION: LazyLock<Regex> = LazyLock::new(|| re(r"(\d+(\.\d+){2})"));

/// The `KEY=value` pairs of an os-release file (quotes removed, keys as written).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OsRelease(BTreeMap<String, String>);

impl OsRelease {
    /// Parses os-release text as falcoctl does (it loads the file with the `gopkg.in/ini.v1`
    /// defaults): `KEY=value` (or `KEY:value`) lines of the unnamed section; lines starting
    /// with `#` or `;` are comments, and so is everything from the first `#` or `;` in a value
    /// (`ID=ubuntu # comment` is `ubuntu`); then one pair of surrounding single or double
    /// quotes is removed; a later key replaces an earlier one; a `[section]` line ends the
    /// keys that count. Unlike the ini library, a line without a delimiter is skipped instead
    /// of failing the whole file.
    pub fn parse(text: &str) -> Self {
        let mut map = BTreeMap::new();
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with(['#', ';']) {
                continue;
            }
            if line.starts_with('[') {
                break;
            }
            let Some(at) = line.find(['=', ':']).filter(|&at| at > 0) else {
                continue;
            };
            let key = line[..at].trim();
            let mut value = line[at + 1..].trim();
            if let Some(comment) = value.find(['#', ';']) {
                value = value[..comment].trim_end();
            }
            let value = ['"', '\'']
                .iter()
                .find_map(|q| {
                    (value.len() >= 2 && value.starts_with(*q) && value.ends_with(*q))
                        .then(|| &value[1..value.len() - 1])
                })
                .unwrap_or(value);
            map.insert(key.to_owned(), value.to_owned());
        }
        Self(map)
    }

    /// The value of a key, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    fn require(&self, distro: &str, key: &'static str) -> Result<String, DriverError> {
        self.get(key)
            .map(str::to_owned)
            .ok_or_else(|| DriverError::MissingOsReleaseKey {
                distro: distro.to_owned(),
                key,
            })
    }
}

/// What the loader knows about a distribution beyond its target id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DistroKind {
    /// Any distribution without special handling (also `undetermined`, `centos`, `rhel`).
    Generic,
    /// Ubuntu: target `ubuntu-<flavor>`, kernel version keeps `~` parts.
    Ubuntu,
    /// Debian: the real kernel release is taken from `uname -v`.
    Debian,
    /// Flatcar: the kernel release is the OS version.
    Flatcar {
        /// `VERSION_ID`, e.g. `3794.0.0`.
        version_id: String,
    },
    /// Minikube: kernel version `1_<x.y.z>`.
    Minikube {
        /// `x.y.z` from `etc/VERSION`.
        version: String,
    },
    /// Bottlerocket: kernel version `1_<VERSION_ID>-<variant prefix>`.
    Bottlerocket {
        /// `VERSION_ID`.
        version_id: String,
        /// `VARIANT_ID`.
        variant_id: String,
    },
    /// Talos: kernel version `1_<VERSION_ID>`.
    Talos {
        /// `VERSION_ID`.
        version_id: String,
    },
    /// Container-Optimized OS: never uses the kernel module.
    Cos {
        /// `BUILD_ID`, e.g. `17162.127.33`.
        build_id: String,
    },
    /// Oracle Linux: no kernel module on UEK kernels.
    Oracle,
}

/// A detected distribution: the target id used in driver file names plus its quirks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Distro {
    /// Target id, e.g. `ubuntu-aws`, `amazonlinux2`, `undetermined`.
    pub target_id: String,
    /// Quirks of the distribution.
    pub kind: DistroKind,
}

impl Distro {
    /// The distribution used when detection fails: target `undetermined`, generic rules.
    pub fn undetermined() -> Self {
        Self {
            target_id: UNDETERMINED.to_owned(),
            kind: DistroKind::Generic,
        }
    }

    /// Whether detection failed (only local compilation makes sense then).
    pub fn is_undetermined(&self) -> bool {
        self.target_id == UNDETERMINED
    }

    /// Builds the distribution for an os-release `ID` (lowercased), as falcoctl's `init`.
    ///
    /// `host_root` is needed by minikube (its version lives in `etc/VERSION`).
    pub fn from_os_release(
        id: &str,
        os: &OsRelease,
        kr: &KernelRelease,
        host_root: &Path,
    ) -> Result<Self, DriverError> {
        let generic = |target: &str, kind| Self {
            target_id: target.to_owned(),
            kind,
        };
        Ok(match id {
            "amzn" => {
                let target = match os.require(id, "VERSION_ID")?.as_str() {
                    "2" => "amazonlinux2",
                    "2022" => "amazonlinux2022",
                    "2023" => "amazonlinux2023",
                    _ => "amazonlinux",
                };
                generic(target, DistroKind::Generic)
            }
            "ubuntu" => {
                let flavor = UBUNTU_FLAVOR
                    .captures(&kr.full_extraversion)
                    .and_then(|c| c.get(1))
                    .map_or("generic", |m| m.as_str());
                generic(&format!("ubuntu-{flavor}"), DistroKind::Ubuntu)
            }
            "debian" => generic(id, DistroKind::Debian),
            "flatcar" => generic(
                id,
                DistroKind::Flatcar {
                    version_id: os.require(id, "VERSION_ID")?,
                },
            ),
            "minikube" => generic(
                id,
                DistroKind::Minikube {
                    version: minikube_version(host_root).ok_or_else(|| {
                        DriverError::MissingOsReleaseKey {
                            distro: id.to_owned(),
                            key: "etc/VERSION x.y.z",
                        }
                    })?,
                },
            ),
            "bottlerocket" => generic(
                id,
                DistroKind::Bottlerocket {
                    version_id: os.require(id, "VERSION_ID")?,
                    variant_id: os.require(id, "VARIANT_ID")?,
                },
            ),
            "talos" => generic(
                id,
                DistroKind::Talos {
                    version_id: os.require(id, "VERSION_ID")?,
                },
            ),
            "cos" => generic(
                id,
                DistroKind::Cos {
                    build_id: os.require(id, "BUILD_ID")?,
                },
            ),
            "ol" => generic(id, DistroKind::Oracle),
            _ => generic(id, DistroKind::Generic),
        })
    }

    /// The kernel release and version used in the driver file name (falcoctl `FixupKernel`).
    pub fn fixup_kernel(&self, kr: &KernelRelease, kv: &str) -> (KernelRelease, String) {
        match &self.kind {
            DistroKind::Generic | DistroKind::Cos { .. } | DistroKind::Oracle => {
                (kr.clone(), generic_kernel_version(kv))
            }
            DistroKind::Ubuntu => {
                let kv = kv.trim_matches('#');
                let kv = kv.split(' ').next().unwrap_or_default();
                let kv = kv.strip_suffix("-Ubuntu").unwrap_or(kv);
                (kr.clone(), kv.to_owned())
            }
            DistroKind::Debian => {
                // The running kernel may be a newer build of the ABI named in `uname -r`; the
                // real release is in `uname -v`. The flavour and arch suffix (`-rt-amd64`,
                // `-cloud-arm64`, `-amd64`) of the release is kept when there is one; other
                // flavours (`-686-pae`, `-armmp`) have none, and the release is the real one
                // alone, as in falcoctl.
                let Some(real) = DEBIAN_KV.find(kv) else {
                    return (kr.clone(), generic_kernel_version(kv));
                };
                let mut fixed = real.as_str().to_owned();
                if let Some(c) = DEBIAN_KR_SUFFIX.captures(&kr.full_extraversion) {
                    fixed.push('-');
                    fixed.push_str(c.get(1).map_or("", |m| m.as_str()));
                    fixed.push_str(c.get(2).map_or("", |m| m.as_str()));
                }
                (KernelRelease::parse(&fixed), "1".to_owned())
            }
            DistroKind::Flatcar { version_id } => {
                (KernelRelease::parse(version_id), generic_kernel_version(kv))
            }
            DistroKind::Minikube { version } => (kr.clone(), format!("1_{version}")),
            DistroKind::Bottlerocket {
                version_id,
                variant_id,
            } => {
                let variant = variant_id.split('-').next().unwrap_or_default();
                (kr.clone(), format!("1_{version_id}-{variant}"))
            }
            DistroKind::Talos { version_id } => (kr.clone(), format!("1_{version_id}")),
        }
    }

    /// Whether the distribution allows a driver type on this kernel (COS never uses the
    /// kernel module; Oracle Linux not on UEK kernels).
    pub fn allows(&self, ty: DriverType, kr: &KernelRelease) -> bool {
        match (&self.kind, ty) {
            (DistroKind::Cos { .. }, DriverType::Kmod) => false,
            (DistroKind::Oracle, DriverType::Kmod) => !kr.to_string().contains("uek"),
            _ => true,
        }
    }
}

/// falcoctl's generic kernel version: the digits after the first `#`, or the input unchanged.
pub fn generic_kernel_version(kv: &str) -> String {
    GENERIC_KV
        .captures(kv)
        .and_then(|c| c.get(1))
        .map_or_else(|| kv.to_owned(), |m| m.as_str().to_owned())
}

fn minikube_version(host_root: &Path) -> Option<String> {
    let text = read_host_file(host_root, "etc/VERSION", HOST_FILE_LIMIT).ok()?;
    let text = String::from_utf8_lossy(&text);
    MINIKUBE_VERSION
        .captures(&text)
        .and_then(|c| c.get(1))
        .map(|m| m.as_str().to_owned())
}

/// Detects the distribution of the host mounted at `host_root` (falcoctl `Discover`).
///
/// Returns [`DriverError::UndeterminedTarget`] when neither os-release nor a marker file
/// identifies it; callers then continue with [`Distro::undetermined`], as falcoctl does.
pub fn discover(host_root: &Path, kr: &KernelRelease) -> Result<Distro, DriverError> {
    let os_release_failure = match read_host_file(host_root, "etc/os-release", HOST_FILE_LIMIT) {
        Ok(text) => {
            let os = OsRelease::parse(&String::from_utf8_lossy(&text));
            match os.get("ID") {
                Some(id) => {
                    let mut id = id.to_lowercase();
                    if minikube_version(host_root).is_some() {
                        id = "minikube".to_owned();
                    }
                    match Distro::from_os_release(&id, &os, kr, host_root) {
                        Ok(distro) => return Ok(distro),
                        Err(e) => e.to_string(),
                    }
                }
                None => "etc/os-release has no ID".to_owned(),
            }
        }
        Err(e) => format!("cannot read etc/os-release: {e}"),
    };
    let empty = OsRelease::default();
    for (marker, id) in [
        ("etc/VERSION", "minikube"),
        ("etc/debian_version", "debian"),
        ("etc/centos-release", "centos"),
        ("etc/redhat-release", "rhel"),
    ] {
        if !host_file_exists(host_root, marker) {
            continue;
        }
        if let Ok(distro) = Distro::from_os_release(id, &empty, kr, host_root) {
            return Ok(distro);
        }
    }
    Err(DriverError::UndeterminedTarget {
        reason: os_release_failure,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::driver_filename;
    use std::fs;

    struct Host(tempfile::TempDir);

    impl Host {
        fn new(files: &[(&str, &str)]) -> Self {
            let dir = tempfile::tempdir().unwrap();
            for (path, content) in files {
                let path = dir.path().join(path);
                fs::create_dir_all(path.parent().unwrap()).unwrap();
                fs::write(path, content).unwrap();
            }
            Self(dir)
        }
        fn os_release(content: &str) -> Self {
            Self::new(&[("etc/os-release", content)])
        }
        fn discover(&self, kr: &str) -> Result<Distro, DriverError> {
            discover(self.0.path(), &KernelRelease::parse(kr))
        }
    }

    /// Target, fixed release, fixed version and the derived file name for one host.
    fn resolve(host: &Host, kr: &str, kv: &str) -> (String, String, String, String) {
        let distro = host.discover(kr).unwrap();
        let (fkr, fkv) = distro.fixup_kernel(&KernelRelease::parse(kr), kv);
        let file =
            driver_filename("falco", &distro.target_id, &fkr.to_string(), &fkv, "ko").unwrap();
        (distro.target_id, fkr.to_string(), fkv, file)
    }

    fn check(host: &Host, kr: &str, kv: &str, want: (&str, &str, &str, Option<&str>)) {
        let (target, fkr, fkv, file) = resolve(host, kr, kv);
        assert_eq!(target, want.0, "target for {kr} / {kv}");
        assert_eq!(fkr, want.1, "kernel release for {kr} / {kv}");
        assert_eq!(fkv, want.2, "kernel version for {kr} / {kv}");
        if let Some(name) = want.3 {
            assert_eq!(file, name, "file name for {kr} / {kv}");
        }
    }

    #[test]
    fn ubuntu_vectors() {
        let h = Host::os_release("ID=ubuntu\n");
        let aws = "5.0.0-1028-aws-5.0";
        check(
            &h,
            aws,
            "#26~22.04.1-Ubuntu SMP Mon Apr 24 01:58:15 UTC 2023",
            (
                "ubuntu-aws",
                aws,
                "26~22.04.1",
                Some("falco_ubuntu-aws_5.0.0-1028-aws-5.0_26~22.04.1.ko"),
            ),
        );
        let file = Some("falco_ubuntu-aws_5.0.0-1028-aws-5.0_26.ko");
        check(&h, aws, "#26", ("ubuntu-aws", aws, "26", file));
        check(&h, aws, "#26-Ubuntu", ("ubuntu-aws", aws, "26", file));
        check(
            &h,
            "5.0.0",
            "#26",
            (
                "ubuntu-generic",
                "5.0.0",
                "26",
                Some("falco_ubuntu-generic_5.0.0_26.ko"),
            ),
        );
        check(
            &h,
            "6.5.0-9-lowlatency",
            "#9.1",
            (
                "ubuntu-lowlatency",
                "6.5.0-9-lowlatency",
                "9.1",
                Some("falco_ubuntu-lowlatency_6.5.0-9-lowlatency_9.1.ko"),
            ),
        );
        check(
            &h,
            "6.5.0-1008-gcp",
            "#8",
            (
                "ubuntu-gcp",
                "6.5.0-1008-gcp",
                "8",
                Some("falco_ubuntu-gcp_6.5.0-1008-gcp_8.ko"),
            ),
        );
        check(
            &h,
            "6.5.0-1008-aws",
            "#8~22.04.1",
            (
                "ubuntu-aws",
                "6.5.0-1008-aws",
                "8~22.04.1",
                Some("falco_ubuntu-aws_6.5.0-1008-aws_8~22.04.1.ko"),
            ),
        );
    }

    #[test]
    fn debian_vectors() {
        let h = Host::os_release("ID=debian\n");
        check(
            &h,
            "5.10.0-0.deb10.22-rt-amd64",
            "#1 SMP PREEMPT_DYNAMIC Debian 5.10.178-3",
            (
                "debian",
                "5.10.178-3-rt-amd64",
                "1",
                Some("falco_debian_5.10.178-3-rt-amd64_1.ko"),
            ),
        );
        check(
            &h,
            "6.1.0-13-amd64",
            "#1 SMP PREEMPT_DYNAMIC Debian 6.1.55-1 (2023-09-29)",
            (
                "debian",
                "6.1.55-1-amd64",
                "1",
                Some("falco_debian_6.1.55-1-amd64_1.ko"),
            ),
        );
        check(
            &h,
            "5.10.0-0.deb10.22-amd64",
            "#1 SMP PREEMPT_DYNAMIC",
            (
                "debian",
                "5.10.0-0.deb10.22-amd64",
                "1",
                Some("falco_debian_5.10.0-0.deb10.22-amd64_1.ko"),
            ),
        );
        check(
            &h,
            "5.10.0-0",
            "#39 SMP PREEMPT_DYNAMIC",
            (
                "debian",
                "5.10.0-0",
                "39",
                Some("falco_debian_5.10.0-0_39.ko"),
            ),
        );
        check(
            &h,
            "6.5.3-1~bpo12+1-rt-amd64",
            "#1 SMP PREEMPT_DYNAMIC",
            (
                "debian",
                "6.5.3-1~bpo12+1-rt-amd64",
                "1",
                Some("falco_debian_6.5.3-1~bpo12+1-rt-amd64_1.ko"),
            ),
        );
        check(
            &h,
            "6.5.3-1~bpo12+1-rt-amd64",
            "malformed",
            ("debian", "6.5.3-1~bpo12+1-rt-amd64", "malformed", None),
        );
    }

    /// falcoctl's Debian fix-up on the flavours without an amd64/arm64 suffix: the real
    /// release from `uname -v` alone.
    #[test]
    fn debian_non_amd64_flavours() {
        let h = Host::os_release("ID=debian\n");
        check(
            &h,
            "6.1.0-18-686-pae",
            "#1 SMP PREEMPT_DYNAMIC Debian 6.1.76-1 (2024-02-01)",
            (
                "debian",
                "6.1.76-1",
                "1",
                Some("falco_debian_6.1.76-1_1.ko"),
            ),
        );
        check(
            &h,
            "6.1.0-18-armmp-lpae",
            "#1 SMP Debian 6.1.76-1 (2024-02-01)",
            ("debian", "6.1.76-1", "1", None),
        );
        check(
            &h,
            "6.1.0-18-cloud-arm64",
            "#1 SMP Debian 6.1.76-1 (2024-02-01)",
            ("debian", "6.1.76-1-cloud-arm64", "1", None),
        );
        // No real release in `uname -v`: the generic rule.
        check(
            &h,
            "6.1.0-18-686-pae",
            "#7 SMP",
            ("debian", "6.1.0-18-686-pae", "7", None),
        );
    }

    /// `gopkg.in/ini.v1` with its defaults, as falcoctl loads os-release.
    #[test]
    fn os_release_follows_the_ini_library() {
        let os = OsRelease::parse(concat!(
            "\u{feff}NAME=\"Ubuntu\"\n",
            "ID=ubuntu # comment\n",
            "VERSION_ID=\"22.04\" ; trailing\n",
            "  ; a comment line\n",
            "VARIANT_ID:aws\n",
            "BUILD_ID=a#b\n",
            "QUOTED=\"x # y\"\n",
            "ID_LIKE=debian\n",
            "ID_LIKE=later\n",
            "=novalue\n",
            "[section]\n",
            "BUILD_ID=ignored\n",
        ));
        assert_eq!(os.get("NAME"), Some("Ubuntu"));
        assert_eq!(os.get("ID"), Some("ubuntu"));
        assert_eq!(os.get("VERSION_ID"), Some("22.04"));
        assert_eq!(os.get("VARIANT_ID"), Some("aws"));
        assert_eq!(os.get("BUILD_ID"), Some("a"));
        // The comment is cut before the quotes are looked at, as the library does.
        assert_eq!(os.get("QUOTED"), Some("\"x"));
        assert_eq!(os.get("ID_LIKE"), Some("later"));
        assert_eq!(os.get(""), None);
        // Through discovery the target is falcoctl's `ubuntu-generic`, not `ubuntu # comment`.
        let h = Host::os_release("ID=ubuntu # comment\n");
        check(
            &h,
            "5.0.0",
            "#26",
            (
                "ubuntu-generic",
                "5.0.0",
                "26",
                Some("falco_ubuntu-generic_5.0.0_26.ko"),
            ),
        );
    }

    #[test]
    fn os_release_is_read_inside_the_host_root_and_bounded() {
        // An absolute link to the container's own os-release resolves inside the host root.
        let h = Host::new(&[("usr/lib/os-release", "ID=flatcar\nVERSION_ID=1.2.3\n")]);
        fs::create_dir_all(h.0.path().join("etc")).unwrap();
        std::os::unix::fs::symlink("/usr/lib/os-release", h.0.path().join("etc/os-release"))
            .unwrap();
        assert_eq!(h.discover("6.1.0").unwrap().target_id, "flatcar");
        // A link out of the root that does not exist inside it: undetermined.
        let h = Host::new(&[("etc/debian_version", "12\n")]);
        fs::remove_file(h.0.path().join("etc/debian_version")).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", h.0.path().join("etc/os-release")).unwrap();
        assert!(h.discover("6.1.0").is_err());
        // A 50 MB os-release is not read whole: refused with a clear reason.
        let big = format!("ID=ubuntu\n{}", "#".repeat(HOST_FILE_LIMIT as usize));
        let err = Host::os_release(&big).discover("6.1.0").unwrap_err();
        assert!(err.to_string().contains("larger than 65536 bytes"), "{err}");
    }

    #[test]
    fn flatcar_vectors() {
        let h = Host::os_release("ID=flatcar\nVERSION_ID=3794.0.0\n");
        check(
            &h,
            "6.1.62-flatcar",
            "#1 SMP PREEMPT_DYNAMIC Mon Nov 20 22:57:52 -00 2023",
            (
                "flatcar",
                "3794.0.0",
                "1",
                Some("falco_flatcar_3794.0.0_1.ko"),
            ),
        );
        check(
            &h,
            "6.1.62-flatcar",
            "#27 SMP PREEMPT_DYNAMIC Mon Nov 20 22:57:52 -00 2023",
            (
                "flatcar",
                "3794.0.0",
                "27",
                Some("falco_flatcar_3794.0.0_27.ko"),
            ),
        );
        let h = Host::os_release("ID=flatcar\nVERSION_ID=3185.0.0\n");
        let distro = h.discover("").unwrap();
        assert_eq!(distro.target_id, "flatcar");
        let (fkr, _) = distro.fixup_kernel(&KernelRelease::parse(""), "");
        assert_eq!(fkr.to_string(), "3185.0.0");
    }

    #[test]
    fn bottlerocket_vectors() {
        let kr = "5.10.165-143.735.amzn2.x86_64";
        let h = Host::os_release("ID=bottlerocket\nVERSION_ID=1.11.0\nVARIANT_ID=aws-k8s-1.15\n");
        check(
            &h,
            kr,
            "#1 SMP",
            (
                "bottlerocket",
                kr,
                "1_1.11.0-aws",
                Some("falco_bottlerocket_5.10.165-143.735.amzn2.x86_64_1_1.11.0-aws.ko"),
            ),
        );
        let h = Host::os_release("ID=bottlerocket\nVERSION_ID=1.17.0\nVARIANT_ID=aws\n");
        check(
            &h,
            kr,
            "anything",
            ("bottlerocket", kr, "1_1.17.0-aws", None),
        );
        for missing in [
            "ID=bottlerocket\nVARIANT_ID=aws\n",
            "ID=bottlerocket\nVERSION_ID=1.17.0\n",
        ] {
            let os = OsRelease::parse(missing);
            let err = Distro::from_os_release(
                "bottlerocket",
                &os,
                &KernelRelease::parse(kr),
                Path::new("/nonexistent"),
            );
            assert!(matches!(err, Err(DriverError::MissingOsReleaseKey { .. })));
            // Through discovery the host becomes undetermined.
            assert!(Host::os_release(missing).discover(kr).is_err());
        }
    }

    #[test]
    fn talos_vectors() {
        for (version, want) in [("1.11.0", "1_1.11.0"), ("1.17.0", "1_1.17.0")] {
            let h = Host::os_release(&format!("ID=talos\nVERSION_ID={version}\n"));
            check(
                &h,
                "6.1.0-talos",
                "#1",
                ("talos", "6.1.0-talos", want, None),
            );
        }
    }

    #[test]
    fn minikube_vectors() {
        let h = Host::new(&[
            ("etc/os-release", "NAME=Buildroot\nID=buildroot\n"),
            ("etc/VERSION", "v1.26.0-1655407986-14197\n"),
        ]);
        check(
            &h,
            "5.10.57",
            "#1 SMP",
            ("minikube", "5.10.57", "1_1.26.0", None),
        );
    }

    #[test]
    fn amazon_linux_vectors() {
        for (version, target) in [
            ("", "amazonlinux"),
            ("2", "amazonlinux2"),
            ("2022", "amazonlinux2022"),
            ("2023", "amazonlinux2023"),
        ] {
            let h = Host::os_release(&format!("ID=amzn\nVERSION_ID=\"{version}\"\n"));
            assert_eq!(h.discover("5.10.0").unwrap().target_id, target);
        }
        let os = OsRelease::parse("ID=amzn\n");
        assert!(
            Distro::from_os_release("amzn", &os, &KernelRelease::default(), Path::new("/"))
                .is_err()
        );
    }

    #[test]
    fn cos_vectors() {
        let h = Host::os_release("ID=cos\nBUILD_ID=17162.127.33\n");
        let distro = h.discover("5.15.0").unwrap();
        assert_eq!(distro.target_id, "cos");
        assert_eq!(
            distro.kind,
            DistroKind::Cos {
                build_id: "17162.127.33".into()
            }
        );
        let kr = KernelRelease::parse("5.15.0");
        assert!(!distro.allows(DriverType::Kmod, &kr));
        assert!(distro.allows(DriverType::ModernEbpf, &kr));
        assert!(Host::os_release("ID=cos\n").discover("5.15.0").is_err());
    }

    #[test]
    fn generic_vectors() {
        let h = Host::os_release("ID=photon\n");
        check(
            &h,
            "4.19.283-3.ph3",
            "#1-photon SMP Fri Jun 16 02:25:27 UTC 2023",
            ("photon", "4.19.283-3.ph3", "1", None),
        );
        let h = Host::os_release("ID=arch\n");
        check(
            &h,
            "6.7.2-arch1-2",
            "#1 SMP PREEMPT_DYNAMIC Wed, 31 Jan 2024 09:22:15 +0000",
            ("arch", "6.7.2-arch1-2", "1", None),
        );
        check(
            &h,
            "6.7.2-arch1-2",
            "#231asfa #rf3f",
            ("arch", "6.7.2-arch1-2", "231", None),
        );
        check(
            &h,
            "6.7.2-arch1-2",
            "#231asfa234",
            ("arch", "6.7.2-arch1-2", "231", None),
        );
    }

    #[test]
    fn discover_vectors() {
        // No os-release at all: undetermined, with an error.
        let h = Host::new(&[]);
        assert!(matches!(
            h.discover("5.10.0"),
            Err(DriverError::UndeterminedTarget { .. })
        ));
        // os-release without ID.
        assert!(Host::os_release("NAME=foo\n").discover("5.10.0").is_err());
        // Unknown and known ids; ID is lowercased.
        for (id, target) in [("foo", "foo"), ("centos", "centos"), ("CentOS", "centos")] {
            let d = Host::os_release(&format!("ID={id}\n"))
                .discover("5.10.0")
                .unwrap();
            assert_eq!(d.target_id, target);
            assert_eq!(d.kind, DistroKind::Generic);
        }
        // talos without VERSION_ID falls back to a generic, undetermined target.
        assert!(Host::os_release("ID=talos\n").discover("5.10.0").is_err());
        // Oracle Linux, and no kmod on UEK.
        let uek = "5.10.0-2047.510.5.5.el7uek.x86_64";
        let d = Host::os_release("ID=ol\n").discover(uek).unwrap();
        assert_eq!(d.target_id, "ol");
        assert!(!d.allows(DriverType::Kmod, &KernelRelease::parse(uek)));
        assert!(d.allows(
            DriverType::Kmod,
            &KernelRelease::parse("5.10.0-1.el8.x86_64")
        ));
        // Marker files without os-release.
        let d = Host::new(&[("etc/centos-release", "CentOS Linux release 7\n")])
            .discover("5.10.0")
            .unwrap();
        assert_eq!(d.target_id, "centos");
        let d = Host::new(&[("etc/VERSION", "v1.26.0-1655407986-14197\n")])
            .discover("5.10.0")
            .unwrap();
        assert_eq!(
            d.kind,
            DistroKind::Minikube {
                version: "1.26.0".into()
            }
        );
        let d = Host::new(&[("etc/debian_version", "12.1\n")])
            .discover("5.10.0")
            .unwrap();
        assert_eq!(
            (d.target_id.as_str(), d.kind),
            ("debian", DistroKind::Debian)
        );
        let d = Host::new(&[("etc/redhat-release", "Red Hat\n")])
            .discover("5.10.0")
            .unwrap();
        assert_eq!(d.target_id, "rhel");
        // A VERSION file without x.y.z is not minikube.
        assert!(
            Host::new(&[("etc/VERSION", "nope\n")])
                .discover("5.10.0")
                .is_err()
        );
    }

    #[test]
    fn os_release_values_may_be_quoted() {
        let os = OsRelease::parse("# comment\nID=\"ubuntu\"\nVERSION_ID='22.04'\nBROKEN\n\n");
        assert_eq!(os.get("ID"), Some("ubuntu"));
        assert_eq!(os.get("VERSION_ID"), Some("22.04"));
        assert_eq!(os.get("BROKEN"), None);
    }
}
