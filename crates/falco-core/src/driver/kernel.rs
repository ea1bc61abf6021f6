//! Kernel release parsing, as driverkit's `kernelrelease.FromString`.
//!
//! A release such as `4.15.0-1057-aws` splits into a *full version* (`4.15.0`), its numeric
//! parts, and a *full extraversion* (`-1057-aws`) whose first token is the *extraversion*
//! (`1057-aws`). Printing a parsed release gives the input back. A release that does not
//! match the pattern parses to empty fields and prints as the empty string: that is what
//! falcoctl does too (a real case gave the URL `…/falco_tencentos__1.o`), and the loader
//! warns about it.

use std::fmt;
use std::sync::LazyLock;

use regex::Regex;

/// The release pattern. Alternations are tried left to right, as in Go's `regexp`.
static RELEASE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"^(?P<fullversion>(?P<version>0|[1-9]\d*)\.?(?P<patchlevel>0|[1-9]\d*)?[.+]?",
        r"(?P<sublevel>0|[1-9]\d*)?)",
        r"(?P<fullextraversion>[-.+](?P<extraversion>(?:[a-zA-Z0-9]+-)*[a-zA-Z0-9]+)?",
        r"[-.+~_a-zA-Z0-9]*)?$",
    ))
    .unwrap_or_else(|e| unreachable!("static kernel release pattern: {e}"))
});

/// A parsed kernel release (`uname -r`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelRelease {
    /// The numeric prefix as written, e.g. `4.19+105` or `6.4`.
    pub full_version: String,
    /// First number (major).
    pub version: u64,
    /// Second number (minor), 0 when absent.
    pub patch_level: u64,
    /// Third number (patch), 0 when absent.
    pub sub_level: u64,
    /// First token after the version, e.g. `1057-aws` or `957`.
    pub extraversion: String,
    /// Everything after the version, separator included, e.g. `-957.12.2.el7.aarch64`.
    pub full_extraversion: String,
}

impl KernelRelease {
    /// Parses a release; a release that does not match gives empty fields (see module doc).
    pub fn parse(release: &str) -> Self {
        let Some(caps) = RELEASE.captures(release) else {
            return Self::default();
        };
        let text = |name: &str| caps.name(name).map_or("", |m| m.as_str()).to_owned();
        let number = |name: &str| {
            caps.name(name)
                .and_then(|m| m.as_str().parse().ok())
                .unwrap_or(0)
        };
        Self {
            full_version: text("fullversion"),
            version: number("version"),
            patch_level: number("patchlevel"),
            sub_level: number("sublevel"),
            extraversion: text("extraversion"),
            full_extraversion: text("fullextraversion"),
        }
    }

    /// Whether the release matched the pattern at all.
    pub fn is_valid(&self) -> bool {
        !self.full_version.is_empty()
    }

    /// `major.minor.patch`, missing parts as 0.
    pub fn semver(&self) -> (u64, u64, u64) {
        (self.version, self.patch_level, self.sub_level)
    }

    /// Whether this release is at least `major.minor.patch`.
    pub fn at_least(&self, major: u64, minor: u64, patch: u64) -> bool {
        self.semver() >= (major, minor, patch)
    }
}

impl fmt::Display for KernelRelease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.full_version, self.full_extraversion)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Input, full version, (major, minor, patch), extraversion, full extraversion.
    type Vector = (
        &'static str,
        &'static str,
        (u64, u64, u64),
        &'static str,
        &'static str,
    );

    /// drivers.md §2.6 B: input, full version, (major, minor, patch) when given, extraversion,
    /// full extraversion.
    #[test]
    fn driverkit_vectors() {
        let vectors: &[Vector] = &[
            ("5.5.2-arch1-1", "5.5.2", (5, 5, 2), "arch1-1", "-arch1-1"),
            ("7", "7", (7, 0, 0), "", ""),
            ("6.4-rc1", "6.4", (6, 4, 0), "rc1", "-rc1"),
            (
                "4.15.0-1057-aws",
                "4.15.0",
                (4, 15, 0),
                "1057-aws",
                "-1057-aws",
            ),
            (
                "3.10.0-957.12.2.el7.aarch64",
                "3.10.0",
                (3, 10, 0),
                "957",
                "-957.12.2.el7.aarch64",
            ),
            (
                "2.6.32-754.el6.x86_64",
                "2.6.32",
                (2, 6, 32),
                "754",
                "-754.el6.x86_64",
            ),
            (
                "4.14.171-136.231.amzn2.x86_64",
                "4.14.171",
                (4, 14, 171),
                "136",
                "-136.231.amzn2.x86_64",
            ),
            (
                "5.19.3.arch1-1",
                "5.19.3",
                (5, 19, 3),
                "arch1-1",
                ".arch1-1",
            ),
            (
                "4.19.118-2+deb10u1~bpo9+1-amd64",
                "4.19.118",
                (4, 19, 118),
                "2",
                "-2+deb10u1~bpo9+1-amd64",
            ),
            (
                "4.19+105+deb10u4~bpo9+1",
                "4.19+105",
                (4, 19, 105),
                "deb10u4",
                "+deb10u4~bpo9+1",
            ),
            (
                "5.4.119-19.0009.28",
                "5.4.119",
                (5, 4, 119),
                "19",
                "-19.0009.28",
            ),
            ("5.15.146+", "5.15.146", (5, 15, 146), "", "+"),
        ];
        for &(input, full, semver, extra, full_extra) in vectors {
            let kr = KernelRelease::parse(input);
            assert_eq!(kr.full_version, full, "full version of {input}");
            assert_eq!(kr.semver(), semver, "semver of {input}");
            assert_eq!(kr.extraversion, extra, "extraversion of {input}");
            assert_eq!(
                kr.full_extraversion, full_extra,
                "full extraversion of {input}"
            );
            assert_eq!(kr.to_string(), input, "round trip of {input}");
            assert!(kr.is_valid());
        }
    }

    #[test]
    fn a_release_that_does_not_match_is_empty() {
        for input in ["", "tencentos", "v5.10", "5.10.0 extra"] {
            let kr = KernelRelease::parse(input);
            assert_eq!(kr, KernelRelease::default(), "{input}");
            assert_eq!(kr.to_string(), "");
            assert!(!kr.is_valid());
        }
    }

    #[test]
    fn comparisons_use_major_minor_patch() {
        let kr = KernelRelease::parse("3.10.0-957.el7.x86_64");
        assert!(kr.at_least(3, 10, 0));
        assert!(!kr.at_least(3, 16, 0));
        assert!(KernelRelease::parse("6.1.0-13-amd64").at_least(5, 8, 0));
    }
}
