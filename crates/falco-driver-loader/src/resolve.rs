//! From settings to "this host needs this file": kernel, target, preferred driver, names.

use std::path::{Path, PathBuf};

use falco_core::driver::{
    self, Distro, DriverType, KernelRelease, check_dir_segment, check_segment, discover,
    driver_filename, driver_url,
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
        Err(e) => {
            tracing::warn!(reason = %e, "target undetermined");
            (Distro::undetermined(), Some(e))
        }
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
    // Every name derived from the host or the settings is checked once, here, before any
    // file name, cache path or URL is built from it (printenv included).
    check_dir_segment("driver version", &settings.version).map_err(Error::UnsafeName)?;
    // The release as given also names dkms' tree (`lib/modules/<release>/build`).
    check_segment("kernel release", &kernel_release_raw).map_err(Error::UnsafeName)?;
    driver_filename(
        &settings.name,
        &distro.target_id,
        &fixed_release.to_string(),
        &fixed_version,
        DriverType::Kmod.extension(),
    )
    .map_err(Error::UnsafeName)?;
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
    /// The artifact file name of a type (`falco_<target>_<kr>_<kv>.ko`); refused when a part
    /// holds `/`, `..` or NUL.
    pub fn filename_for(&self, ty: DriverType) -> Result<String> {
        driver_filename(
            &self.settings.name,
            &self.distro.target_id,
            &self.fixed_release.to_string(),
            &self.fixed_version,
            ty.extension(),
        )
        .map_err(Error::UnsafeName)
    }

    /// The artifact file name of the chosen driver, if it has one.
    pub fn filename(&self) -> Result<Option<String>> {
        if !self.driver.has_artifact() {
            return Ok(None);
        }
        self.filename_for(self.driver).map(Some)
    }

    /// One URL per repository, in order, for the chosen driver (every path segment escaped).
    pub fn urls(&self) -> Result<Vec<String>> {
        let Some(file) = self.filename()? else {
            return Ok(Vec::new());
        };
        Ok(self
            .settings
            .repos
            .iter()
            .map(|repo| driver_url(repo, &self.settings.version, self.settings.arch, &file))
            .collect())
    }

    /// falcoctl's cache path under `home`; refused when it would leave the cache.
    pub fn cache_path(&self, home: &Path, file: &str) -> Result<PathBuf> {
        driver::cache_path(home, &self.settings.version, self.settings.arch, file)
            .map_err(Error::UnsafeName)
    }

    /// The cache directory of the chosen version and arch (`<home>/.falco/<version>/<arch>`).
    pub fn cache_dir(&self, home: &Path) -> Result<PathBuf> {
        check_dir_segment("driver version", &self.settings.version).map_err(Error::UnsafeName)?;
        Ok(home
            .join(".falco")
            .join(&self.settings.version)
            .join(self.settings.arch.as_str()))
    }
}
