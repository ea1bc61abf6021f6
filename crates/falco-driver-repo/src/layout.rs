//! Keys, URL paths and driver file names of the repository layout.

use percent_encoding::percent_decode_str;

/// Longest accepted path segment, in bytes.
const MAX_SEGMENT: usize = 255;

/// What a served object is; a closed set, used as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjectKind {
    /// A `.ko` or `.o` driver.
    Driver,
    /// `index.json` or `index.json.sig`.
    Index,
    /// A `.sha256` file.
    Checksum,
    /// Anything else under `driver/`.
    Other,
}

impl ObjectKind {
    /// The metric label value.
    pub fn label(self) -> &'static str {
        match self {
            Self::Driver => "driver",
            Self::Index => "index",
            Self::Checksum => "checksum",
            Self::Other => "other",
        }
    }

    /// Classifies a file name.
    pub fn of(file: &str) -> Self {
        if file == falco_core::index::INDEX_FILE || file == falco_core::index::SIGNATURE_FILE {
            Self::Index
        } else if file.ends_with(falco_core::index::SHA256_SUFFIX) {
            Self::Checksum
        } else if file.ends_with(".ko") || file.ends_with(".o") {
            Self::Driver
        } else {
            Self::Other
        }
    }
}

/// A validated request for an object under `driver/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriverPath {
    /// Driver version, unescaped.
    pub version: String,
    /// Architecture; `x86_64` for the legacy flat layout.
    pub arch: String,
    /// File name.
    pub file: String,
    /// Storage key (`driver/<version>[/<arch>]/<file>`).
    pub key: String,
}

/// Parses the part of a URL path after `/driver/`; `None` when it is not a valid object path.
///
/// Accepts `<version>/<arch>/<file>` and the legacy `<version>/<file>`.
pub fn parse_url_path(rest: &str) -> Option<DriverPath> {
    let segments = rest
        .split('/')
        .map(|s| {
            percent_decode_str(s)
                .decode_utf8()
                .ok()
                .map(|s| s.into_owned())
        })
        .collect::<Option<Vec<_>>>()?;
    if !segments.iter().all(|s| valid_segment(s)) {
        return None;
    }
    match segments.as_slice() {
        [version, arch, file] => Some(DriverPath {
            key: format!("driver/{version}/{arch}/{file}"),
            version: version.clone(),
            arch: arch.clone(),
            file: file.clone(),
        }),
        [version, file] => Some(DriverPath {
            key: format!("driver/{version}/{file}"),
            version: version.clone(),
            arch: "x86_64".into(),
            file: file.clone(),
        }),
        _ => None,
    }
}

/// Whether a path segment is safe to use in a storage key.
pub fn valid_segment(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_SEGMENT
        && s != "."
        && s != ".."
        && s.chars().all(|c| {
            !c.is_control()
                && !matches!(
                    c,
                    '/' | '\\'
                        | '%'
                        | '#'
                        | '?'
                        | '*'
                        | '<'
                        | '>'
                        | '|'
                        | '"'
                        | '{'
                        | '}'
                        | '^'
                        | '['
                        | ']'
                        | '`'
                        | '~'
                )
        })
}

/// The parts of a driver file name `<name>_<target>_<kernelrelease>_<kernelversion>.{ko,o}`.
///
/// Targets contain no `_`; kernel releases may, so like upstream's publisher (dbg-go) the
/// kernel release extends to the last `_` and the kernel version is what follows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriverName {
    /// Driver name, usually `falco`.
    pub name: String,
    /// Target id, e.g. `ubuntu-generic`.
    pub target: String,
    /// Kernel release.
    pub kernelrelease: String,
    /// Kernel version.
    pub kernelversion: String,
    /// `ko` (kernel module) or `o` (legacy eBPF probe).
    pub extension: &'static str,
}

/// Parses a driver file name; `None` when it does not follow the naming scheme.
pub fn parse_driver_name(file: &str) -> Option<DriverName> {
    let (stem, extension) = if let Some(stem) = file.strip_suffix(".ko") {
        (stem, "ko")
    } else if let Some(stem) = file.strip_suffix(".o") {
        (stem, "o")
    } else {
        return None;
    };
    let (name, rest) = stem.split_once('_')?;
    let (target, rest) = rest.split_once('_')?;
    let (kernelrelease, kernelversion) = rest.rsplit_once('_')?;
    if [name, target, kernelrelease, kernelversion]
        .iter()
        .any(|s| s.is_empty())
    {
        return None;
    }
    Some(DriverName {
        name: name.into(),
        target: target.into(),
        kernelrelease: kernelrelease.into(),
        kernelversion: kernelversion.into(),
        extension,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_paths_map_to_keys_and_unescape_the_version() {
        let p = parse_url_path("8.0.0%2Bdriver/x86_64/falco_ubuntu-generic_5.0.0_26.ko").unwrap();
        assert_eq!(
            p.key,
            "driver/8.0.0+driver/x86_64/falco_ubuntu-generic_5.0.0_26.ko"
        );
        assert_eq!(p.version, "8.0.0+driver");
        let legacy = parse_url_path("2aa88dcf/falco_debian_4.19.0_1.ko").unwrap();
        assert_eq!(legacy.key, "driver/2aa88dcf/falco_debian_4.19.0_1.ko");
        assert_eq!(legacy.arch, "x86_64");
    }

    #[test]
    fn traversal_and_odd_paths_are_rejected() {
        for bad in [
            "../x/y",
            "a/../b",
            "a/%2e%2e/b",
            "a/%2E%2E/b",
            "a//b",
            "a/b/c/d",
            "a",
            "a/b%2Fc/d",
            "a/b%5Cc",
            "a/b%00",
            "a/%ff",
            "./a",
        ] {
            assert!(parse_url_path(bad).is_none(), "{bad} accepted");
        }
    }

    #[test]
    fn driver_names_split_like_upstream() {
        let n = parse_driver_name("falco_almalinux_4.18.0-553.100.1.el8_10.aarch64_1.ko").unwrap();
        assert_eq!(n.target, "almalinux");
        assert_eq!(n.kernelrelease, "4.18.0-553.100.1.el8_10.aarch64");
        assert_eq!(n.kernelversion, "1");
        assert_eq!(
            parse_driver_name("falco_ubuntu-generic_5.0.0_26.o")
                .unwrap()
                .extension,
            "o"
        );
        assert!(parse_driver_name("falco_x.ko").is_none());
        assert!(parse_driver_name("index.json").is_none());
    }
}
