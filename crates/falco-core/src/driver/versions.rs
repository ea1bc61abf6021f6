//! Which driver version each Falco release is built against.
//!
//! A Falco binary speaks to a driver of one API major version; the loader must fetch the very
//! driver version the release was built with (the `DRIVER_VERSION` it bakes into its falcoctl
//! config), so the operator derives `spec.driver.version` from the Falco version it runs.
//!
//! Every pair below was read from the release tag's `cmake/modules/driver.cmake`
//! (`set(DRIVER_VERSION "…")`) in <https://github.com/falcosecurity/falco>, e.g.
//! <https://github.com/falcosecurity/falco/blob/0.44.1/cmake/modules/driver.cmake>. Releases
//! before 0.37.0 shipped the shell `falco-driver-loader`, not falcoctl, and are not listed:
//! give `spec.driver.version` explicitly for them.

/// `(Falco version, driver version)`, oldest first.
pub const FALCO_DRIVER_VERSIONS: &[(&str, &str)] = &[
    ("0.37.0", "7.0.0+driver"),
    ("0.37.1", "7.0.0+driver"),
    ("0.38.0", "7.2.0+driver"),
    ("0.38.1", "7.2.0+driver"),
    ("0.38.2", "7.2.1+driver"),
    ("0.39.0", "7.3.0+driver"),
    ("0.39.1", "7.3.0+driver"),
    ("0.39.2", "7.3.0+driver"),
    ("0.40.0", "8.0.0+driver"),
    ("0.41.0", "8.1.0+driver"),
    ("0.41.1", "8.1.0+driver"),
    ("0.41.2", "8.1.0+driver"),
    ("0.41.3", "8.1.0+driver"),
    ("0.42.0", "9.0.0+driver"),
    ("0.42.1", "9.0.0+driver"),
    ("0.43.0", "9.1.0+driver"),
    ("0.43.1", "9.1.0+driver"),
    ("0.44.0", "10.2.0+driver"),
    ("0.44.1", "10.2.0+driver"),
];

/// The driver version Falco `falco_version` was built with. Image tag decorations are
/// accepted: a leading `v` and a `-debian`/`-distroless`-style suffix (`0.44.1-debian`).
pub fn driver_version_for(falco_version: &str) -> Option<&'static str> {
    let bare = falco_version.strip_prefix('v').unwrap_or(falco_version);
    let bare = bare.split_once('-').map_or(bare, |(v, _)| v);
    FALCO_DRIVER_VERSIONS
        .iter()
        .find(|(falco, _)| *falco == bare)
        .map(|(_, driver)| *driver)
}

/// The Falco versions the table knows, newest first (for error messages).
pub fn known_falco_versions() -> impl Iterator<Item = &'static str> {
    FALCO_DRIVER_VERSIONS.iter().rev().map(|(falco, _)| *falco)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The releases the operator and its docs name. Adding a Falco release to the operator
    /// without its driver version fails here.
    const MUST_KNOW: [&str; 9] = [
        "0.44.1", "0.44.0", "0.43.1", "0.43.0", "0.42.1", "0.42.0", "0.41.3", "0.40.0", "0.39.2",
    ];

    #[test]
    fn every_known_falco_release_has_a_driver_version() {
        for falco in MUST_KNOW {
            assert!(
                driver_version_for(falco).is_some(),
                "Falco {falco} has no driver version in FALCO_DRIVER_VERSIONS"
            );
        }
        assert_eq!(driver_version_for("0.44.1"), Some("10.2.0+driver"));
        assert_eq!(driver_version_for("0.38.2"), Some("7.2.1+driver"));
        assert_eq!(driver_version_for("0.44.1-debian"), Some("10.2.0+driver"));
        assert_eq!(driver_version_for("v0.43.0"), Some("9.1.0+driver"));
        assert_eq!(driver_version_for("0.99.0"), None);
        assert_eq!(driver_version_for("latest"), None);
    }

    #[test]
    fn table_is_sorted_unique_and_well_formed() {
        let key = |v: &str| -> (u64, u64, u64) {
            let mut p = v.split('.').map(|n| n.parse::<u64>().expect("number"));
            (p.next().unwrap(), p.next().unwrap(), p.next().unwrap())
        };
        for pair in FALCO_DRIVER_VERSIONS.windows(2) {
            assert!(key(pair[0].0) < key(pair[1].0), "{pair:?}");
            assert!(
                key(pair[0].1.trim_end_matches("+driver"))
                    <= key(pair[1].1.trim_end_matches("+driver")),
                "{pair:?}"
            );
        }
        assert!(
            FALCO_DRIVER_VERSIONS
                .iter()
                .all(|(_, d)| d.ends_with("+driver"))
        );
    }
}
