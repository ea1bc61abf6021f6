//! Which driver a node needs, and where it lives (drivers.md §2).
//!
//! Everything a driver loader, a driver repository or the operator must agree on, as pure
//! functions:
//! - [`KernelRelease`]: `uname -r` parsed as driverkit does;
//! - [`discover`] / [`Distro`]: the target id from `$HOST_ROOT/etc/os-release` and marker
//!   files, and the per-distribution kernel fix-ups (falcoctl's `pkg/driver/distro`);
//! - [`driver_filename`], [`driver_url`], [`cache_path`]: falcoctl's naming, so the same
//!   host resolves to the very URL falcoctl would fetch; [`DriverFileName`] parses a name
//!   back into its parts, for every repository-side reader;
//! - [`DriverType`] / [`Arch`] and the kernel support rules of each type.
//!
//! Reading files under a host root is the only I/O; no network, no Kubernetes.

pub mod coverage;
mod distro;
mod file_name;
mod hostfs;
mod kernel;
mod names;
pub mod status;
pub mod versions;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

pub use distro::{Distro, DistroKind, OsRelease, UNDETERMINED, discover, generic_kernel_version};
pub use file_name::{DriverFileName, MAX_SEGMENT_LEN, is_repository_segment};
pub use hostfs::{HOST_FILE_LIMIT, host_file_exists, read_host_file};
pub use kernel::KernelRelease;
pub use names::{check_dir_segment, check_segment, path_escape, redact_url};

/// Default driver repository of falcoctl.
pub const DEFAULT_REPO: &str = "https://download.falco.org/driver";
/// Default driver name.
pub const DEFAULT_NAME: &str = "falco";

/// Why a driver could not be named or a host could not be identified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DriverError {
    /// A distribution needs an os-release key (or file) that is missing.
    #[error("{distro}: missing {key} in os-release")]
    MissingOsReleaseKey {
        /// The os-release `ID` being initialised.
        distro: String,
        /// The key that is missing.
        key: &'static str,
    },
    /// Neither os-release nor a marker file identifies the distribution.
    #[error("could not determine the target distribution ({reason})")]
    UndeterminedTarget {
        /// What was tried last.
        reason: String,
    },
    /// A driver type name is not one of `modern_ebpf`, `kmod`.
    #[error("unsupported driver type specified: {0}")]
    UnknownDriverType(String),
    /// An architecture is not one of `x86_64`, `aarch64`.
    #[error("unsupported architecture: {0} (expected x86_64 or aarch64)")]
    UnknownArch(String),
    /// A value that becomes part of a file name, cache path or URL could leave its directory.
    #[error(
        "refusing {field} {value:?}: it contains {what}, which must not be in a driver file name or path"
    )]
    UnsafeName {
        /// Which value (`kernel version`, `target`, `driver version`, …).
        field: &'static str,
        /// The value as derived.
        value: String,
        /// What is wrong with it (`/`, `..`, `NUL`, …).
        what: &'static str,
    },
}

/// A kind of Falco driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DriverType {
    /// The modern eBPF probe, bundled in the Falco binary: no artifact to install.
    ModernEbpf,
    /// The kernel module (`.ko`).
    Kmod,
}

impl DriverType {
    /// The name used on the command line, in config files and in `engine.kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ModernEbpf => "modern_ebpf",
            Self::Kmod => "kmod",
        }
    }

    /// Whether the type needs a file on the node.
    pub fn has_artifact(self) -> bool {
        matches!(self, Self::Kmod)
    }

    /// File extension of the artifact, without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            Self::ModernEbpf => "",
            Self::Kmod => "ko",
        }
    }

    /// falcoctl's kernel-version rule for the kernel module: 3.10.0 on x86_64, 3.16.0 on
    /// aarch64. (The modern probe needs kernel features that only the running kernel can
    /// tell; see the loader.)
    pub fn kernel_supported(self, kr: &KernelRelease, arch: Arch) -> bool {
        match (self, arch) {
            (Self::Kmod, Arch::X86_64) => kr.at_least(3, 10, 0),
            (Self::Kmod, Arch::Aarch64) => kr.at_least(3, 16, 0),
            (Self::ModernEbpf, _) => true,
        }
    }
}

impl fmt::Display for DriverType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DriverType {
    type Err = DriverError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "modern_ebpf" => Ok(Self::ModernEbpf),
            "kmod" => Ok(Self::Kmod),
            other => Err(DriverError::UnknownDriverType(other.to_owned())),
        }
    }
}

/// A CPU architecture as named in repository paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Arch {
    /// `x86_64` (Go's `amd64`).
    X86_64,
    /// `aarch64` (Go's `arm64`).
    Aarch64,
}

impl Arch {
    /// The architecture this program was built for, if it is one drivers exist for.
    pub fn current() -> Result<Self, DriverError> {
        std::env::consts::ARCH.parse()
    }

    /// The directory name in repositories.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::X86_64 => "x86_64",
            Self::Aarch64 => "aarch64",
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Arch {
    type Err = DriverError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "x86_64" | "amd64" => Ok(Self::X86_64),
            "aarch64" | "arm64" => Ok(Self::Aarch64),
            other => Err(DriverError::UnknownArch(other.to_owned())),
        }
    }
}

/// `<name>_<target>_<kernelrelease>_<kernelversion>.<ext>` (falcoctl `toFilename`).
///
/// Every part is checked with [`check_segment`] first: a value holding `/`, `..` or NUL is
/// refused with [`DriverError::UnsafeName`] naming it (falcoctl would build the name anyway).
pub fn driver_filename(
    name: &str,
    target: &str,
    kernel_release: &str,
    kernel_version: &str,
    ext: &str,
) -> Result<String, DriverError> {
    check_segment("driver name", name)?;
    check_segment("target", target)?;
    check_segment("kernel release", kernel_release)?;
    check_segment("kernel version", kernel_version)?;
    check_segment("driver extension", ext)?;
    Ok(format!(
        "{name}_{target}_{kernel_release}_{kernel_version}.{ext}"
    ))
}

/// `<repo>/<query-escaped version>/<arch>/<path-escaped file>` (falcoctl `toURL`, with the
/// file name escaped too): the version is escaped as Go's `url.QueryEscape` (`+` becomes
/// `%2B`), the file name with [`path_escape`] (identical to falcoctl's for real names; a `#`
/// or `?` can no longer cut the request), the repository is used as given.
pub fn driver_url(repo: &str, version: &str, arch: Arch, file: &str) -> String {
    format!(
        "{repo}/{}/{arch}/{}",
        query_escape(version),
        path_escape(file)
    )
}

/// The directory of a version and arch in a repository, for `index.json` and friends.
pub fn repo_dir_url(repo: &str, version: &str, arch: Arch) -> String {
    format!("{repo}/{}/{arch}", query_escape(version))
}

/// falcoctl's local cache path: `<home>/.falco/<version>/<arch>/<file>`; the version and the
/// file name are checked ([`check_dir_segment`]) so the path stays under the cache.
pub fn cache_path(
    home: &Path,
    version: &str,
    arch: Arch,
    file: &str,
) -> Result<PathBuf, DriverError> {
    check_dir_segment("driver version", version)?;
    check_dir_segment("driver file name", file)?;
    Ok(home
        .join(".falco")
        .join(version)
        .join(arch.as_str())
        .join(file))
}

/// Go's `url.QueryEscape`: everything but `A-Za-z0-9-_.~` is percent-encoded in uppercase
/// hex, and a space becomes `+`.
pub fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(b));
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_escape_only_the_version() {
        assert_eq!(query_escape("10.2.0+driver"), "10.2.0%2Bdriver");
        assert_eq!(query_escape("a b/c"), "a+b%2Fc");
        assert_eq!(
            driver_url(
                DEFAULT_REPO,
                "8.0.0+driver",
                Arch::X86_64,
                "falco_ubuntu-generic_5.0.0_26.ko"
            ),
            "https://download.falco.org/driver/8.0.0%2Bdriver/x86_64/falco_ubuntu-generic_5.0.0_26.ko"
        );
        // Real file names are left as falcoctl leaves them (`~`, `+`), but a `#` or a space
        // cannot cut the request.
        assert_eq!(
            driver_url(
                "http://r",
                "1",
                Arch::Aarch64,
                "falco_debian_6.5.3-1~bpo12+1-rt-arm64_1.ko"
            ),
            "http://r/1/aarch64/falco_debian_6.5.3-1~bpo12+1-rt-arm64_1.ko"
        );
        assert_eq!(
            driver_url(
                "http://r",
                "1",
                Arch::X86_64,
                "falco_ubuntu # c_5.0.0_26.ko"
            ),
            "http://r/1/x86_64/falco_ubuntu%20%23%20c_5.0.0_26.ko"
        );
        assert_eq!(
            repo_dir_url("http://r", "1+d", Arch::X86_64),
            "http://r/1%2Bd/x86_64"
        );
    }

    #[test]
    fn cache_paths_keep_the_raw_version() {
        assert_eq!(
            cache_path(Path::new("/root"), "8.0.0+driver", Arch::X86_64, "f.ko").unwrap(),
            PathBuf::from("/root/.falco/8.0.0+driver/x86_64/f.ko")
        );
        for (version, file) in [
            ("../..", "f.ko"),
            ("1", "../f.ko"),
            ("a/b", "f.ko"),
            ("", "f"),
        ] {
            assert!(
                matches!(
                    cache_path(Path::new("/root"), version, Arch::X86_64, file),
                    Err(DriverError::UnsafeName { .. })
                ),
                "{version} {file}"
            );
        }
    }

    #[test]
    fn derived_names_with_traversal_are_refused() {
        // Ubuntu keeps `uname -v` up to the first space: `#1/../../../../pwn SMP`.
        let err = driver_filename(
            "falco",
            "ubuntu-generic",
            "5.0.0",
            "1/../../../../pwn",
            "ko",
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "refusing kernel version \"1/../../../../pwn\": it contains /, which must not be in a driver file name or path"
        );
        for (name, target, kr, kv) in [
            ("fal/co", "t", "5.0.0", "1"),
            ("falco", "..", "5.0.0", "1"),
            ("falco", "t", "5.0.0\0", "1"),
            ("falco", "t", "5..0", "1"),
        ] {
            assert!(
                driver_filename(name, target, kr, kv, "ko").is_err(),
                "{name} {target} {kr} {kv}"
            );
        }
        assert_eq!(
            driver_filename(
                "falco",
                "ubuntu-aws",
                "5.0.0-1028-aws-5.0",
                "26~22.04.1",
                "ko"
            )
            .unwrap(),
            "falco_ubuntu-aws_5.0.0-1028-aws-5.0_26~22.04.1.ko"
        );
    }

    #[test]
    fn types_and_arches_parse() {
        assert_eq!("kmod".parse::<DriverType>().unwrap(), DriverType::Kmod);
        assert_eq!(
            "modern_ebpf".parse::<DriverType>().unwrap(),
            DriverType::ModernEbpf
        );
        assert_eq!(
            "ebpf".parse::<DriverType>().unwrap_err().to_string(),
            "unsupported driver type specified: ebpf"
        );
        assert_eq!("amd64".parse::<Arch>().unwrap(), Arch::X86_64);
        assert_eq!("aarch64".parse::<Arch>().unwrap(), Arch::Aarch64);
        assert!("s390x".parse::<Arch>().is_err());
    }

    #[test]
    fn kmod_kernel_support_follows_falcoctl() {
        let old = KernelRelease::parse("3.10.0-957.el7.x86_64");
        assert!(DriverType::Kmod.kernel_supported(&old, Arch::X86_64));
        assert!(!DriverType::Kmod.kernel_supported(&old, Arch::Aarch64));
        assert!(!DriverType::Kmod.kernel_supported(&KernelRelease::parse("2.6.32"), Arch::X86_64));
        assert!(!DriverType::Kmod.kernel_supported(&KernelRelease::default(), Arch::X86_64));
    }
}
