//! From settings to "this host needs this file": kernel, target, preferred driver, names.

use std::path::{Path, PathBuf};

use falco_core::driver::{
    self, Distro, DriverType, KernelRelease, discover, driver_filename, driver_url,
};

use crate::cli::DriverSettings;
use crate::{Error, Result};

/// Everything falcoctl's pre-run computes, plus the names derived from it.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The settings it was resolved from.
    pub settings: DriverSettings,
    /// Detected distribution (`undetermined` when detection failed).
    pub distro: Distro,
    /// Why detection failed, when it did.
    pub undetermined: Option<driver::DriverError>,
    /// Kernel release (override or running kernel), parsed.
    pub kernel_release: KernelRelease,
    /// The release as given, for logs and dkms.
    pub kernel_release_raw: String,
    /// Kernel version (override or running kernel), raw.
    pub kernel_version: String,
    /// Kernel release after the distribution's fix-ups.
    pub fixed_release: KernelRelease,
    /// Kernel version after the distribution's fix-ups.
    pub fixed_version: String,
    /// The first requested type the host supports.
    pub driver: DriverType,
}

/// What the running kernel is and can do; injected so tests do not depend on the machine.
#[derive(Debug, Clone)]
pub struct KernelFacts {
    /// `uname -r` of the running kernel.
    pub release: String,
    /// `uname -v` of the running kernel.
    pub version: String,
    /// Whether the running kernel can run the modern eBPF probe.
    pub modern_ebpf: bool,
}

impl KernelFacts {
    /// The facts of the machine this runs on.
    pub fn running() -> Result<Self> {
        let (release, version) = crate::host::running_kernel()?;
        let modern_ebpf = crate::host::modern_ebpf_supported(&release);
        Ok(Self {
            release,
            version,
            modern_ebpf,
        })
    }
}

/// Resolves the host: kernel, distribution, fix-ups and preferred driver.
pub fn resolve(settings: DriverSettings, facts: &KernelFacts) -> Result<Resolved> {
    let kernel_release_raw = settings
        .kernel_release
        .clone()
        .unwrap_or_else(|| facts.release.clone());
    let kernel_version = settings
        .kernel_version
        .clone()
        .unwrap_or_else(|| facts.version.clone());
    let kernel_release = KernelRelease::parse(&kernel_release_raw);
    if !kernel_release.is_valid() {
        tracing::warn!(
            release = %kernel_release_raw,
            "kernel release does not parse; falcoctl would use an empty release too"
        );
    }
    let (distro, undetermined) = match discover(&settings.host_root, &kernel_release) {
        Ok(d) => (d, None),
        Err(e) => (Distro::undetermined(), Some(e)),
    };
    let (fixed_release, fixed_version) = distro.fixup_kernel(&kernel_release, &kernel_version);
    let driver = settings
        .types
        .iter()
        .copied()
        .find(|&ty| {
            distro.allows(ty, &kernel_release)
                && match ty {
                    DriverType::Kmod => ty.kernel_supported(&kernel_release, settings.arch),
                    DriverType::ModernEbpf => facts.modern_ebpf,
                }
        })
        .ok_or_else(|| Error::NoSupportedDriver(distro.target_id.clone()))?;
    Ok(Resolved {
        settings,
        distro,
        undetermined,
        kernel_release,
        kernel_release_raw,
        kernel_version,
        fixed_release,
        fixed_version,
        driver,
    })
}

impl Resolved {
    /// The artifact file name of a type (`falco_<target>_<kr>_<kv>.ko`).
    pub fn filename_for(&self, ty: DriverType) -> String {
        driver_filename(
            &self.settings.name,
            &self.distro.target_id,
            &self.fixed_release.to_string(),
            &self.fixed_version,
            ty.extension(),
        )
    }

    /// The artifact file name of the chosen driver, if it has one.
    pub fn filename(&self) -> Option<String> {
        self.driver
            .has_artifact()
            .then(|| self.filename_for(self.driver))
    }

    /// One URL per repository, in order, for the chosen driver.
    pub fn urls(&self) -> Vec<String> {
        let Some(file) = self.filename() else {
            return Vec::new();
        };
        self.settings
            .repos
            .iter()
            .map(|repo| driver_url(repo, &self.settings.version, self.settings.arch, &file))
            .collect()
    }

    /// falcoctl's cache path under `home`.
    pub fn cache_path(&self, home: &Path, file: &str) -> PathBuf {
        driver::cache_path(home, &self.settings.version, self.settings.arch, file)
    }
}
