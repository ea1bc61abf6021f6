//! What the driver loader did on one node, as it reports it: written by the loader
//! (`--status-file`), read by the node's artifact sidecar and carried into that node's
//! `NodeArtifacts` record, aggregated by the instance operator into the Falco status.
//!
//! One type for all three, serialised as camelCase JSON; small (a few hundred bytes), so a
//! record stays small on a 5,000-node cluster.

use serde::{Deserialize, Serialize};

/// How the installed driver was checked before it was loaded.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub enum Verification {
    /// Against a repository index whose ed25519 signature matched the trusted key.
    Signature,
    /// Against a published `.sha256` file (or an unsigned index).
    Checksum,
    /// Not checked beyond completeness (a repository without checksums, a local build or a
    /// system module).
    #[default]
    None,
}

/// Where the loaded driver came from.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub enum DriverOrigin {
    /// Downloaded now from `repository`.
    Downloaded,
    /// A cached file from an earlier run (its checksum record matched).
    Cached,
    /// Built on the node with dkms.
    Compiled,
    /// A module already installed on the host (`modprobe`).
    System,
    /// Nothing needed (modern eBPF is bundled in Falco).
    Bundled,
}

/// Closed set of failure reasons (the `reason` of a failed status; the message says more).
pub mod reason {
    /// No repository has the driver for this kernel and compiling is off or failed.
    pub const NOT_FOUND: &str = "DriverNotFound";
    /// The download did not match its checksum or signature.
    pub const VERIFICATION_FAILED: &str = "VerificationFailed";
    /// `requireVerified` and nothing verifiable was found.
    pub const UNVERIFIED: &str = "DriverUnverified";
    /// A repository could not be reached or answered with an error.
    pub const REPOSITORY_UNAVAILABLE: &str = "RepositoryUnavailable";
    /// dkms could not build the module.
    pub const COMPILE_FAILED: &str = "CompileFailed";
    /// The kernel refused the module.
    pub const LOAD_FAILED: &str = "LoadFailed";
    /// The kernel supports none of the requested driver types.
    pub const NO_SUPPORTED_DRIVER: &str = "NoSupportedDriver";
    /// A setting is invalid (repository URL, trusted key, …).
    pub const INVALID_SETTINGS: &str = "InvalidSettings";
    /// Anything else (file system, host commands).
    pub const LOADER_ERROR: &str = "LoaderError";
}

/// What the loader did on one node.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct DriverStatus {
    /// The driver type chosen for this node (`kmod`, `modern_ebpf`); empty when none could be.
    #[serde(default)]
    pub kind: String,
    /// Driver version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Target id (distribution) detected, e.g. `ubuntu-generic`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Kernel release (`uname -r`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_release: Option<String>,
    /// Kernel version (`uname -v`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_version: Option<String>,
    /// Driver file name, e.g. `falco_ubuntu-generic_6.8.0-45-generic_48.ko`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Where the driver came from, when one was obtained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<DriverOrigin>,
    /// The repository that served it (base URL), or `compiled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    /// Lowercase hex sha256 of the installed file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// How it was verified.
    #[serde(default)]
    pub verification: Verification,
    /// Whether a driver is loaded (or none is needed) and Falco can start.
    #[serde(default)]
    pub loaded: bool,
    /// Failure reason, one of [`reason`], when `loaded` is false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What failed, for a person to act on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl DriverStatus {
    /// The longest `error` kept; longer messages are cut (the record must stay small).
    pub const MAX_ERROR: usize = 512;

    /// `error` cut to [`Self::MAX_ERROR`] bytes on a character boundary.
    pub fn with_error(mut self, reason: &str, error: &str) -> Self {
        let mut cut = error.len().min(Self::MAX_ERROR);
        while !error.is_char_boundary(cut) {
            cut -= 1;
        }
        let mut text = error[..cut].to_owned();
        if cut < error.len() {
            text.push('…');
        }
        self.loaded = false;
        self.reason = Some(reason.to_owned());
        self.error = Some(text);
        self
    }

    /// Parses a status file; `None` for anything that is not one (a half-written or foreign
    /// file is ignored rather than reported as garbage).
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        serde_json::from_slice(bytes).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_as_camel_case_and_cuts_long_errors() {
        let s = DriverStatus {
            kind: "kmod".into(),
            kernel_release: Some("6.1.0-47-amd64".into()),
            origin: Some(DriverOrigin::Downloaded),
            verification: Verification::Signature,
            loaded: true,
            ..DriverStatus::default()
        };
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["kernelRelease"], "6.1.0-47-amd64");
        assert_eq!(json["origin"], "downloaded");
        assert_eq!(json["verification"], "signature");
        assert_eq!(
            DriverStatus::parse(&serde_json::to_vec(&s).unwrap()),
            Some(s.clone())
        );
        assert_eq!(DriverStatus::parse(b"{not json"), None);
        let failed = s.with_error(reason::NOT_FOUND, &"é".repeat(600));
        assert!(!failed.loaded);
        assert!(failed.error.as_ref().unwrap().len() <= DriverStatus::MAX_ERROR + 3);
    }
}
