//! Driver file names: `<name>_<target>_<kernelrelease>_<kernelversion>.<ext>`, parsed back
//! into their parts, and the characters a repository accepts in them.
//!
//! The name is built by [`super::driver_filename`] from the target and the fixed-up kernel
//! release and version. Parsing it back is ambiguous in general, since `_` separates the parts
//! and may also occur inside them:
//! - targets never contain `_` (they are os-release ids such as `ubuntu-aws`);
//! - kernel releases may (`4.18.0-553.100.1.el8_10.x86_64` on AlmaLinux 8.10), so by default
//!   the kernel version is what follows the *last* `_`, as upstream's publisher splits them;
//! - three targets build a kernel version that itself holds a `_`: minikube (`1_1.32.0`),
//!   bottlerocket (`1_1.19.2-aws`) and talos (`1_v1.6.4`), see
//!   [`super::Distro::fixup_kernel`]. For those the kernel version starts at the last `_1_`.
//!
//! Every repository (publish, serve, mirror, statistics, the index) parses names with
//! [`DriverFileName::parse`], so they all agree.

use std::fmt;

/// Longest accepted file name or path segment, in bytes (the usual file-system limit).
pub const MAX_SEGMENT_LEN: usize = 255;

/// Targets whose kernel version is `1_<something>`, so their file names carry one more `_`.
const UNDERSCORE_VERSION_TARGETS: [&str; 3] = ["minikube", "bottlerocket", "talos"];

/// The prefix every kernel version of [`UNDERSCORE_VERSION_TARGETS`] starts with.
const UNDERSCORE_VERSION_PREFIX: &str = "1_";

/// The parts of a driver file name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriverFileName {
    /// Driver name, usually `falco`.
    pub name: String,
    /// Target id, e.g. `ubuntu-generic`.
    pub target: String,
    /// Kernel release after the loader's fix-ups, e.g. `5.15.0-1049-gcp`.
    pub kernelrelease: String,
    /// Kernel version after the loader's fix-ups, e.g. `57~20.04.1` or `1_1.32.0`.
    pub kernelversion: String,
    /// `ko` (kernel module) or `o` (legacy eBPF probe).
    pub extension: &'static str,
}

impl DriverFileName {
    /// Parses a driver file name; `None` when it does not follow the naming scheme or holds a
    /// character no upstream name uses (see [`is_repository_segment`]).
    pub fn parse(file: &str) -> Option<Self> {
        if !is_repository_segment(file) {
            return None;
        }
        let (stem, extension) = if let Some(stem) = file.strip_suffix(".ko") {
            (stem, "ko")
        } else if let Some(stem) = file.strip_suffix(".o") {
            (stem, "o")
        } else {
            return None;
        };
        let (name, rest) = stem.split_once('_')?;
        let (target, rest) = rest.split_once('_')?;
        let (kernelrelease, kernelversion) = split_kernel(target, rest)?;
        if [name, target, kernelrelease, kernelversion]
            .iter()
            .any(|s| s.is_empty())
        {
            return None;
        }
        Some(Self {
            name: name.into(),
            target: target.into(),
            kernelrelease: kernelrelease.into(),
            kernelversion: kernelversion.into(),
            extension,
        })
    }
}

impl fmt::Display for DriverFileName {
    /// The file name again: parsing then printing gives the input back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `parse` admits only repository segments, which the name checks never refuse.
        let file = super::driver_filename(
            &self.name,
            &self.target,
            &self.kernelrelease,
            &self.kernelversion,
            self.extension,
        )
        .map_err(|_| fmt::Error)?;
        f.write_str(&file)
    }
}

/// Splits `<kernelrelease>_<kernelversion>` for a target.
fn split_kernel<'a>(target: &str, rest: &'a str) -> Option<(&'a str, &'a str)> {
    if UNDERSCORE_VERSION_TARGETS.contains(&target) {
        let marker = format!("_{UNDERSCORE_VERSION_PREFIX}");
        if let Some(at) = rest.rfind(&marker) {
            return Some((&rest[..at], &rest[at + 1..]));
        }
    }
    rest.rsplit_once('_')
}

/// Whether a path segment (driver version, arch, file name) is one a repository stores and
/// serves: 1 to [`MAX_SEGMENT_LEN`] bytes of `A-Z a-z 0-9 . _ + ~ -`, and not `.` or `..`.
///
/// That is every character upstream's names use (kernel releases as driverkit parses them,
/// Ubuntu's `57~20.04.1`, Debian's `1~bpo12+1`, versions such as `8.0.0+driver`), and nothing
/// that a file system, a shell, an S3 key or a URL treats specially.
pub fn is_repository_segment(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_SEGMENT_LEN
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'~' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// File name, target, kernel release, kernel version.
    const VECTORS: &[(&str, &str, &str, &str)] = &[
        (
            "falco_ubuntu-generic_5.0.0_26.ko",
            "ubuntu-generic",
            "5.0.0",
            "26",
        ),
        // Ubuntu HWE and cloud kernels: `~` in the kernel version (a public falcoctl log).
        (
            "falco_ubuntu-gcp_5.15.0-1049-gcp_57~20.04.1.ko",
            "ubuntu-gcp",
            "5.15.0-1049-gcp",
            "57~20.04.1",
        ),
        (
            "falco_debian_6.5.3-1~bpo12+1-rt-amd64_1.ko",
            "debian",
            "6.5.3-1~bpo12+1-rt-amd64",
            "1",
        ),
        // A kernel release with `_`: the version is after the last one.
        (
            "falco_almalinux_4.18.0-553.100.1.el8_10.aarch64_1.ko",
            "almalinux",
            "4.18.0-553.100.1.el8_10.aarch64",
            "1",
        ),
        // Kernel versions with `_`.
        (
            "falco_minikube_5.10.57_1_1.32.0.ko",
            "minikube",
            "5.10.57",
            "1_1.32.0",
        ),
        (
            "falco_bottlerocket_5.10.165-143.735.amzn2.x86_64_1_1.19.2-aws.ko",
            "bottlerocket",
            "5.10.165-143.735.amzn2.x86_64",
            "1_1.19.2-aws",
        ),
        (
            "falco_talos_6.1.0-talos_1_v1.6.4.ko",
            "talos",
            "6.1.0-talos",
            "1_v1.6.4",
        ),
        // A minikube name whose kernel version is not `1_…` still splits at the last `_`.
        ("falco_minikube_5.10.57_7.ko", "minikube", "5.10.57", "7"),
        (
            "falco_debian_6.1.0-18-amd64_1.o",
            "debian",
            "6.1.0-18-amd64",
            "1",
        ),
    ];

    #[test]
    fn names_split_into_their_parts_and_print_back() {
        for &(file, target, kr, kv) in VECTORS {
            let n = DriverFileName::parse(file).unwrap_or_else(|| panic!("{file} refused"));
            assert_eq!(n.name, "falco", "{file}");
            assert_eq!(n.target, target, "target of {file}");
            assert_eq!(n.kernelrelease, kr, "kernel release of {file}");
            assert_eq!(n.kernelversion, kv, "kernel version of {file}");
            assert_eq!(n.to_string(), file, "round trip of {file}");
        }
        assert_eq!(
            DriverFileName::parse("falco_debian_6.1.0-18-amd64_1.o")
                .unwrap()
                .extension,
            "o"
        );
    }

    #[test]
    fn names_built_by_the_fixups_parse_back_to_them() {
        use crate::driver::{KernelRelease, OsRelease};
        for (id, os, kr) in [
            (
                "bottlerocket",
                "VERSION_ID=1.19.2\nVARIANT_ID=aws-k8s-1.28\n",
                "5.10.165",
            ),
            ("talos", "VERSION_ID=v1.6.4\n", "6.1.0-talos"),
        ] {
            let os = OsRelease::parse(os);
            let kr = KernelRelease::parse(kr);
            let distro = crate::driver::Distro::from_os_release(
                id,
                &os,
                &kr,
                std::path::Path::new("/nonexistent"),
            )
            .unwrap();
            let (fkr, fkv) = distro.fixup_kernel(&kr, "#1 SMP");
            let file =
                crate::driver::driver_filename("falco", id, &fkr.to_string(), &fkv, "ko").unwrap();
            let n = DriverFileName::parse(&file).unwrap();
            assert_eq!(
                (n.kernelrelease, n.kernelversion),
                (fkr.to_string(), fkv),
                "{file}"
            );
        }
    }

    #[test]
    fn what_is_not_a_driver_name_is_refused() {
        for bad in [
            "falco_x.ko",
            "falco_ubuntu_5.0.0.ko",
            "index.json",
            "falco__5.0.0_1.ko",
            "falco_ubuntu-generic_5.0.0_.ko",
            "falco_ubuntu generic_5.0.0_1.ko",
            "falco_ubuntu_5.0.0_1#x.ko",
            "falco_ubuntu_5.0.0_1/../x.ko",
            "falco_ubuntu_5.0.0_1%7E.ko",
        ] {
            assert!(DriverFileName::parse(bad).is_none(), "{bad} accepted");
        }
    }

    #[test]
    fn repository_segments_allow_upstream_characters_only() {
        for good in [
            "8.0.0+driver",
            "2aa88dcf6243982697811df4c1b484bcbe9488a2",
            "x86_64",
            "falco_ubuntu-gcp_5.15.0-1049-gcp_57~20.04.1.ko",
            "index.json.sig",
        ] {
            assert!(is_repository_segment(good), "{good} refused");
        }
        let long = "a".repeat(MAX_SEGMENT_LEN + 1);
        for bad in [
            "", ".", "..", "a/b", "a\\b", "a\0b", "a b", "a#b", "a?b", "a%2Fb", "a*b", "é", "a\nb",
            &long,
        ] {
            assert!(!is_repository_segment(bad), "{bad:?} accepted");
        }
    }
}
