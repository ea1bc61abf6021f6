//! Which driver a node needs, and where it lives (drivers.md §2).
//!
//! Everything a driver loader, a driver repository or the operator must agree on, as pure
//! functions:
//! - [`KernelRelease`]: `uname -r` parsed as driverkit does;
//! - [`discover`] / [`Distro`]: the target id from `$HOST_ROOT/etc/os-release` and marker
//!   files, and the per-distribution kernel fix-ups (falcoctl's `pkg/driver/distro`);
//! - [`driver_filename`], [`driver_url`], [`cache_path`]: falcoctl's naming, so the same
//!   host resolves to the very URL falcoctl would fetch;
//! - [`DriverType`] / [`Arch`] and the kernel support rules of each type.
//!
//! Reading files under a host root is the only I/O; no network, no Kubernetes.

mod distro;
mod kernel;
pub mod status;
pub mod versions;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

pub use distro::{Distro, DistroKind, OsRelease, UNDETERMINED, discover, generic_kernel_version};
pub use kernel::KernelRelease;

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
pub fn driver_filename(
    name: &str,
    target: &str,
    kernel_release: &str,
    kernel_version: &str,
    ext: &str,
) -> String {
    format!("{name}_{target}_{kernel_release}_{kernel_version}.{ext}")
}

/// `<repo>/<query-escaped version>/<arch>/<file>` (falcoctl `toURL`): only the version is
/// escaped (`+` becomes `%2B`), the repository is used as given.
pub fn driver_url(repo: &str, version: &str, arch: Arch, file: &str) -> String {
    format!("{repo}/{}/{arch}/{file}", query_escape(version))
}

/// The directory of a version and arch in a repository, for `index.json` and friends.
pub fn repo_dir_url(repo: &str, version: &str, arch: Arch) -> String {
    format!("{repo}/{}/{arch}", query_escape(version))
}

/// falcoctl's local cache path: `<home>/.falco/<version>/<arch>/<file>`.
pub fn cache_path(home: &Path, version: &str, arch: Arch, file: &str) -> PathBuf {
    home.join(".falco")
        .join(version)
        .join(arch.as_str())
        .join(file)
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
        // The file name is not escaped, as in falcoctl.
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
            repo_dir_url("http://r", "1+d", Arch::X86_64),
            "http://r/1%2Bd/x86_64"
        );
    }

    #[test]
    fn cache_paths_keep_the_raw_version() {
        assert_eq!(
            cache_path(Path::new("/root"), "8.0.0+driver", Arch::X86_64, "f.ko"),
            PathBuf::from("/root/.falco/8.0.0+driver/x86_64/f.ko")
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
