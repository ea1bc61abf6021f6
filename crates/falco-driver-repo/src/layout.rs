//! Keys, URL paths and driver file names of the repository layout.

use falco_core::driver::is_repository_segment;
use percent_encoding::percent_decode_str;

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
    if !segments.iter().all(|s| is_repository_segment(s)) {
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
    fn upstream_names_with_tilde_and_plus_are_served_escaped_or_not() {
        let file = "falco_ubuntu-gcp_5.15.0-1049-gcp_57~20.04.1.ko";
        let key = format!("driver/8.0.0+driver/x86_64/{file}");
        for path in [
            format!("8.0.0%2Bdriver/x86_64/{file}"),
            format!("8.0.0+driver/x86_64/{file}"),
            "8.0.0%2Bdriver/x86_64/falco_ubuntu-gcp_5.15.0-1049-gcp_57%7E20.04.1.ko".to_owned(),
            "8.0.0%2bdriver/x86_64/falco_ubuntu-gcp_5.15.0-1049-gcp_57%7e20.04.1.ko".to_owned(),
        ] {
            let p = parse_url_path(&path).unwrap_or_else(|| panic!("{path} refused"));
            assert_eq!(p.key, key, "{path}");
            assert_eq!(p.file, file);
        }
    }
}
