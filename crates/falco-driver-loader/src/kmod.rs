//! Kernel module side effects: unload, load, fallback and dkms compilation.
//!
//! Same commands as falcoctl's `kmod` type and driverkit's local dkms build, run through a
//! [`CommandRunner`] so tests can assert the exact sequence:
//! - cleanup: `lsmod`; while the module is listed, `rmmod <name>` up to N times, waiting in
//!   between; if dkms exists, `dkms status -m <name>` and `dkms remove -m <name> -v <v> --all`
//!   for every version listed;
//! - load: `chcon -t modules_object_t <path>` (errors ignored), `insmod <path>`;
//! - fallback when no artifact could be obtained: `modprobe <name>`;
//! - compile: for each usable `gcc*` beside `gcc`, `dkms build
//!   --directive=MAKE='<tmp>/falco-dkms-make' -m <name> -v <version> -k <release>
//!   [--kernelsourcedir <HOST_ROOT>/lib/modules/<release>/build]`, then the module is taken
//!   from `<dkms tree>/<name>/<version>/<release>/<arch>/module/`. A dkms tree or source root
//!   other than dkms' defaults (`/var/lib/dkms`, `/usr/src`) is passed as `--dkmstree` /
//!   `--sourcetree` to every dkms command, cleanup's included.
//!
//! Unlike falcoctl (driverkit's `dkms install`), the build is `dkms build`: the loader loads
//! the module itself from its cache, so nothing needs installing into the host's
//! `/lib/modules/<release>/updates/dkms` (which a driver-loader container should mount
//! read-only) and no `depmod` runs on the host. The module's file name comes from the
//! sources' `dkms.conf` (`BUILT_MODULE_NAME[0]`), not from the driver name: Debian's
//! `falcosecurity-scap-dkms` packages the driver as `scap` (`/usr/src/scap-<version>`,
//! module `scap.ko`), Falco's own packages as `falco`.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use falco_core::driver::Arch;

use crate::host::CommandRunner;
use crate::{Error, Result};

/// Tunables and paths of the kmod steps.
#[derive(Debug, Clone)]
pub struct KmodOptions {
    /// `rmmod` attempts while the module stays loaded.
    pub rmmod_attempts: u32,
    /// Wait between `rmmod` attempts.
    pub rmmod_wait: Duration,
    /// dkms' tree (`/var/lib/dkms`).
    pub dkms_root: PathBuf,
    /// Where driver sources live (`/usr/src`), as `<name>-<version>`.
    pub src_root: PathBuf,
    /// Where the make wrapper is written.
    pub tmp_dir: PathBuf,
}

impl Default for KmodOptions {
    fn default() -> Self {
        Self {
            rmmod_attempts: 10,
            rmmod_wait: Duration::from_secs(5),
            dkms_root: PathBuf::from(DEFAULT_DKMS_ROOT),
            src_root: PathBuf::from(crate::cli::DEFAULT_SRC_ROOT),
            tmp_dir: std::env::temp_dir(),
        }
    }
}

/// dkms' own default tree.
const DEFAULT_DKMS_ROOT: &str = "/var/lib/dkms";

impl KmodOptions {
    /// `--dkmstree`/`--sourcetree` for dkms when they are not dkms' defaults (so with the
    /// defaults the commands are exactly falcoctl's).
    fn dkms_tree_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        for (flag, dir, default) in [
            ("--dkmstree", &self.dkms_root, DEFAULT_DKMS_ROOT),
            ("--sourcetree", &self.src_root, crate::cli::DEFAULT_SRC_ROOT),
        ] {
            if dir != Path::new(default) {
                args.extend([flag.to_owned(), dir.to_string_lossy().into_owned()]);
            }
        }
        args
    }
}

fn is_loaded(runner: &dyn CommandRunner, name: &str) -> Result<bool> {
    let module = name.replace('-', "_");
    let out = runner.run("lsmod", &[])?;
    Ok(out
        .stdout
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .any(|m| m == module))
}

/// Unloads the module if loaded, then removes every dkms version of it.
pub fn cleanup(runner: &dyn CommandRunner, name: &str, opts: &KmodOptions) -> Result<()> {
    if is_loaded(runner, name)? {
        let mut unloaded = false;
        for attempt in 1..=opts.rmmod_attempts {
            tracing::info!(
                module = name,
                attempt,
                "kernel module is loaded; unloading it with rmmod"
            );
            if runner.run("rmmod", &[name])?.success {
                tracing::info!(module = name, "kernel module unloaded");
                unloaded = true;
                break;
            }
            if attempt < opts.rmmod_attempts {
                tracing::info!(
                    wait_s = opts.rmmod_wait.as_secs_f32(),
                    "rmmod failed; is a process still using the module (see lsmod)? waiting"
                );
                std::thread::sleep(opts.rmmod_wait);
            }
        }
        if !unloaded {
            tracing::warn!(
                module = name,
                "kernel module is still loaded; you could have incompatibility issues"
            );
        }
    } else {
        tracing::info!(module = name, "no kernel module loaded");
    }
    if runner.which("dkms").is_none() {
        tracing::info!("skipping dkms remove (dkms not found)");
        return Ok(());
    }
    let tree = opts.dkms_tree_args();
    let tree: Vec<&str> = tree.iter().map(String::as_str).collect();
    let status = runner.run("dkms", &[&["status"], &tree[..], &["-m", name]].concat())?;
    let mut versions: Vec<String> = Vec::new();
    for line in status.stdout.lines() {
        // As falcoctl: drop ',' and ':', '/' becomes ' ', second field.
        let line: String = line
            .chars()
            .filter(|c| !matches!(c, ',' | ':'))
            .map(|c| if c == '/' { ' ' } else { c })
            .collect();
        if let Some(v) = line.split(' ').nth(1).filter(|v| !v.is_empty())
            && !versions.iter().any(|known| known == v)
        {
            versions.push(v.to_owned());
        }
    }
    for version in versions {
        tracing::info!(module = name, version, "removing the dkms module");
        let args = [
            &["remove"],
            &tree[..],
            &["-m", name, "-v", &version, "--all"],
        ]
        .concat();
        let out = runner.run("dkms", &args)?;
        if !out.success {
            tracing::warn!(version, stderr = %out.stderr.trim(), "dkms remove failed");
        }
    }
    Ok(())
}

/// Loads a module file: `chcon` (errors ignored), then `insmod`.
pub fn load(runner: &dyn CommandRunner, path: &Path) -> Result<()> {
    let path = path.to_string_lossy();
    match runner.run("chcon", &["-t", "modules_object_t", &path]) {
        Ok(out) if !out.success => {
            tracing::debug!(stderr = %out.stderr.trim(), "chcon failed (ignored)")
        }
        Err(e) => tracing::debug!(error = %e, "chcon not run (ignored)"),
        Ok(_) => {}
    }
    let out = runner.run("insmod", &[&path])?;
    if out.success {
        tracing::info!(path = %path, "kernel module loaded");
        Ok(())
    } else {
        Err(Error::Load(format!("insmod {path}: {}", out.stderr.trim())))
    }
}

/// Last resort when neither download nor compile produced a module: `modprobe <name>`
/// (may load an older module already on the system).
pub fn modprobe_fallback(runner: &dyn CommandRunner, name: &str) -> Result<()> {
    tracing::info!(
        module = name,
        "trying to load a pre-existing system module with modprobe"
    );
    let out = runner.run("modprobe", &[name])?;
    if out.success {
        tracing::info!(module = name, "module found and loaded with modprobe");
        Ok(())
    } else {
        Err(Error::Load(format!(
            "modprobe {name}: {}; consider compiling your own driver or getting in touch with the Falco community",
            out.stderr.trim()
        )))
    }
}

/// What a dkms build needs to know.
#[derive(Debug, Clone)]
pub struct CompileRequest<'a> {
    /// Driver name.
    pub name: &'a str,
    /// Driver version.
    pub version: &'a str,
    /// Kernel release to build for (as given, not fixed up).
    pub kernel_release: &'a str,
    /// Architecture directory in dkms' tree.
    pub arch: Arch,
    /// Host root, for the kernel headers.
    pub host_root: &'a Path,
}

/// gcc executables usable for the build: `gcc*` beside `which gcc` that answer
/// `-print-search-dirs` with an `install:` line (driverkit's rule).
fn compilers(runner: &dyn CommandRunner) -> Result<Vec<PathBuf>> {
    let Some(gcc) = runner.which("gcc") else {
        return Ok(Vec::new());
    };
    let dir = gcc.parent().unwrap_or(Path::new("/usr/bin"));
    let mut candidates: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(|e| Error::io("list", dir, e))?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("gcc"))
        .map(|e| e.path())
        .filter(|p| {
            p.metadata()
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
        .collect();
    candidates.sort();
    let mut usable = Vec::new();
    for candidate in candidates {
        let out = runner.run(&candidate.to_string_lossy(), &["-print-search-dirs"])?;
        if out.success && out.stdout.contains("install:") {
            usable.push(candidate);
        }
    }
    Ok(usable)
}

/// Builds the module with dkms; returns the path of the built module.
pub fn compile(
    runner: &dyn CommandRunner,
    opts: &KmodOptions,
    req: &CompileRequest<'_>,
) -> Result<PathBuf> {
    let src = opts.src_root.join(format!("{}-{}", req.name, req.version));
    if !src.is_dir() {
        return Err(Error::Compile(format!(
            "driver sources not found at {}{}",
            src.display(),
            other_sources_hint(&opts.src_root)
        )));
    }
    let module = built_module_name(&src, req.name);
    if runner.which("dkms").is_none() {
        return Err(Error::Compile("dkms not found".to_owned()));
    }
    let headers = req
        .host_root
        .join("lib/modules")
        .join(req.kernel_release)
        .join("build");
    let source_dir = (req.host_root != Path::new("/") && headers.is_dir())
        .then(|| headers.to_string_lossy().into_owned());
    // The driver's Makefile defaults KERNELDIR to the *running* kernel's headers; the make
    // wrapper names the release being built for (it differs with --kernelrelease).
    let kernel_dir = source_dir
        .clone()
        .unwrap_or_else(|| format!("/lib/modules/{}/build", req.kernel_release));
    // dkms refuses a tree that does not exist ("No write access to DKMS tree").
    fs::create_dir_all(&opts.dkms_root).map_err(|e| Error::io("create", &opts.dkms_root, e))?;
    let compilers = compilers(runner)?;
    let attempts: Vec<Option<PathBuf>> = if compilers.is_empty() {
        vec![None]
    } else {
        compilers.into_iter().map(Some).collect()
    };
    let wrapper = opts.tmp_dir.join(format!("{}-dkms-make", req.name));
    for gcc in attempts {
        let mut args: Vec<String> = vec!["build".into()];
        args.extend(opts.dkms_tree_args());
        if let Some(gcc) = &gcc {
            let script = format!(
                "#!/usr/bin/env bash\nmake CC={} KERNELDIR={kernel_dir} \"$@\"\n",
                gcc.display()
            );
            fs::write(&wrapper, script).map_err(|e| Error::io("write", &wrapper, e))?;
            fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755))
                .map_err(|e| Error::io("chmod", &wrapper, e))?;
            args.push(format!("--directive=MAKE='{}'", wrapper.display()));
        }
        args.extend(
            ["-m", req.name, "-v", req.version, "-k", req.kernel_release]
                .iter()
                .map(|s| (*s).to_owned()),
        );
        if let Some(dir) = &source_dir {
            args.extend(["--kernelsourcedir".to_owned(), dir.clone()]);
        }
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        tracing::info!(compiler = ?gcc, "compiling the kernel module with dkms");
        let out = runner.run("dkms", &argv)?;
        if out.success {
            if let Some(built) = built_module(opts, req, &module) {
                return Ok(built);
            }
            tracing::warn!(module, "dkms succeeded but no module was found in its tree");
        } else {
            let log = opts
                .dkms_root
                .join(req.name)
                .join(req.version)
                .join("build/make.log");
            tracing::warn!(
                stderr = %out.stderr.trim(),
                make_log = %fs::read_to_string(&log).unwrap_or_default(),
                "dkms build failed"
            );
        }
    }
    Err(Error::Compile(format!(
        "dkms could not build {} {} for {}",
        req.name, req.version, req.kernel_release
    )))
}

/// Largest `dkms.conf` read.
const DKMS_CONF_LIMIT: u64 = 64 * 1024;

/// The module file name the sources build: `BUILT_MODULE_NAME[0]` of their `dkms.conf` (with
/// `$PACKAGE_NAME` expanded), else the driver name.
fn built_module_name(src: &Path, name: &str) -> String {
    use std::io::Read as _;
    let mut text = String::new();
    let read = fs::File::open(src.join("dkms.conf"))
        .and_then(|f| f.take(DKMS_CONF_LIMIT).read_to_string(&mut text));
    if read.is_err() {
        return name.to_owned();
    }
    let value = |key: &str| {
        text.lines().find_map(|line| {
            let value = line.trim().strip_prefix(key)?.strip_prefix('=')?;
            Some(value.trim().trim_matches(['"', '\'']).to_owned())
        })
    };
    let package = value("PACKAGE_NAME").unwrap_or_else(|| name.to_owned());
    value("BUILT_MODULE_NAME[0]")
        .map(|m| {
            m.replace("${PACKAGE_NAME}", &package)
                .replace("$PACKAGE_NAME", &package)
        })
        .filter(|m| !m.is_empty() && !m.contains(['/', '$']) && m != "..")
        .unwrap_or_else(|| name.to_owned())
}

/// ` (found …: select them with --name and --version)` when other dkms sources are present.
fn other_sources_hint(src_root: &Path) -> String {
    let mut found: Vec<String> = fs::read_dir(src_root)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join("dkms.conf").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    if found.is_empty() {
        return String::new();
    }
    found.sort();
    format!(
        " (driver sources present: {}; select one with --name and --version)",
        found.join(", ")
    )
}

fn built_module(opts: &KmodOptions, req: &CompileRequest<'_>, module: &str) -> Option<PathBuf> {
    let dir = opts
        .dkms_root
        .join(req.name)
        .join(req.version)
        .join(req.kernel_release)
        .join(req.arch.as_str())
        .join("module");
    ["ko", "ko.gz", "ko.xz", "ko.zst"]
        .iter()
        .map(|ext| dir.join(format!("{module}.{ext}")))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::{CommandOutput, ScriptedRunner};

    fn fast() -> KmodOptions {
        KmodOptions {
            rmmod_attempts: 3,
            rmmod_wait: Duration::ZERO,
            ..KmodOptions::default()
        }
    }

    #[test]
    fn cleanup_unloads_with_retries_and_removes_dkms_versions() {
        let runner = ScriptedRunner::new()
            .on("lsmod", vec![CommandOutput::ok("Module Size Used\nfalco 1000 0\nxt 1 0\n")])
            .on("rmmod", vec![CommandOutput::failed("busy"), CommandOutput::ok("")])
            .on(
                "dkms status",
                vec![CommandOutput::ok(
                    "falco/7.0.0+driver, 6.1.0, x86_64: installed\nfalco, 6.0.0, 5.4.0, x86_64: added\nfalco/7.0.0+driver, 6.2.0, x86_64: installed\n",
                )],
            )
            .with_tool("dkms", "/usr/sbin/dkms");
        cleanup(&runner, "falco", &fast()).unwrap();
        assert_eq!(
            runner.calls(),
            [
                "lsmod",
                "rmmod falco",
                "rmmod falco",
                "dkms status -m falco",
                "dkms remove -m falco -v 7.0.0+driver --all",
                "dkms remove -m falco -v 6.0.0 --all",
            ]
        );
    }

    #[test]
    fn cleanup_gives_up_after_the_attempts_and_skips_missing_dkms() {
        let runner = ScriptedRunner::new()
            .on("lsmod", vec![CommandOutput::ok("my_driver 1 1\n")])
            .on("rmmod", vec![CommandOutput::failed("busy")]);
        cleanup(&runner, "my-driver", &fast()).unwrap();
        assert_eq!(
            runner.calls(),
            [
                "lsmod",
                "rmmod my-driver",
                "rmmod my-driver",
                "rmmod my-driver"
            ]
        );
    }

    #[test]
    fn load_ignores_chcon_and_reports_insmod() {
        let runner = ScriptedRunner::new().on("chcon", vec![CommandOutput::failed("no selinux")]);
        load(&runner, Path::new("/c/f.ko")).unwrap();
        assert_eq!(
            runner.calls(),
            ["chcon -t modules_object_t /c/f.ko", "insmod /c/f.ko"]
        );
        let runner = ScriptedRunner::new().on(
            "insmod",
            vec![CommandOutput::failed("Invalid module format")],
        );
        let err = load(&runner, Path::new("/c/f.ko")).unwrap_err();
        assert!(err.to_string().contains("Invalid module format"));
    }

    #[test]
    fn compile_tries_each_gcc_then_takes_the_module_from_dkms() {
        let root = tempfile::tempdir().unwrap();
        let p = |s: &str| root.path().join(s);
        fs::create_dir_all(p("src/falco-8.0.0")).unwrap();
        fs::create_dir_all(p("bin")).unwrap();
        for gcc in ["gcc", "gcc-12", "gcc-ar"] {
            fs::write(p(&format!("bin/{gcc}")), "").unwrap();
            fs::set_permissions(p(&format!("bin/{gcc}")), fs::Permissions::from_mode(0o755))
                .unwrap();
        }
        fs::create_dir_all(p("host/lib/modules/6.1.0-13-amd64/build")).unwrap();
        let module_dir = p("dkms/falco/8.0.0/6.1.0-13-amd64/x86_64/module");
        fs::create_dir_all(&module_dir).unwrap();
        fs::write(module_dir.join("falco.ko"), b"ko").unwrap();
        let opts = KmodOptions {
            dkms_root: p("dkms"),
            src_root: p("src"),
            tmp_dir: p(""),
            ..fast()
        };
        let bin = p("bin");
        let gcc = |n: &str| format!("{}/{n}", bin.display());
        let runner = ScriptedRunner::new()
            .with_tool("dkms", "/usr/sbin/dkms")
            .with_tool("gcc", p("bin/gcc"))
            .on(&gcc("gcc-ar"), vec![CommandOutput::failed("")])
            .on(
                &gcc("gcc"),
                vec![CommandOutput::ok(
                    "install: /usr/lib/gcc/x86_64-linux-gnu/12/\n",
                )],
            )
            .on(
                "dkms build",
                vec![CommandOutput::failed("build error"), CommandOutput::ok("")],
            );
        let host = p("host");
        let req = CompileRequest {
            name: "falco",
            version: "8.0.0",
            kernel_release: "6.1.0-13-amd64",
            arch: Arch::X86_64,
            host_root: &host,
        };
        let built = compile(&runner, &opts, &req).unwrap();
        assert_eq!(built, module_dir.join("falco.ko"));
        let wrapper = p("falco-dkms-make");
        let ksrc = p("host/lib/modules/6.1.0-13-amd64/build");
        let dkms = format!(
            "dkms build --dkmstree {} --sourcetree {} --directive=MAKE='{}' -m falco -v 8.0.0 -k 6.1.0-13-amd64 --kernelsourcedir {}",
            p("dkms").display(),
            p("src").display(),
            wrapper.display(),
            ksrc.display()
        );
        assert_eq!(
            runner.calls(),
            [
                format!("{} -print-search-dirs", gcc("gcc")),
                format!("{} -print-search-dirs", gcc("gcc-12")),
                format!("{} -print-search-dirs", gcc("gcc-ar")),
                dkms.clone(),
                dkms,
            ]
        );
        assert!(
            fs::read_to_string(&wrapper)
                .unwrap()
                .contains(&format!("make CC={}", gcc("gcc-12")))
        );
    }

    #[test]
    fn compile_needs_sources_and_dkms() {
        let root = tempfile::tempdir().unwrap();
        let opts = KmodOptions {
            src_root: root.path().to_owned(),
            ..fast()
        };
        let req = CompileRequest {
            name: "falco",
            version: "8.0.0",
            kernel_release: "6.1.0",
            arch: Arch::X86_64,
            host_root: Path::new("/"),
        };
        let runner = ScriptedRunner::new();
        assert!(
            compile(&runner, &opts, &req)
                .unwrap_err()
                .to_string()
                .contains("sources not found")
        );
        fs::create_dir(root.path().join("scap-0.1.1")).unwrap();
        fs::write(
            root.path().join("scap-0.1.1/dkms.conf"),
            "PACKAGE_NAME=scap\n",
        )
        .unwrap();
        let err = compile(&runner, &opts, &req).unwrap_err().to_string();
        assert!(
            err.contains(
                "driver sources present: scap-0.1.1; select one with --name and --version"
            ),
            "{err}"
        );
        fs::create_dir(root.path().join("falco-8.0.0")).unwrap();
        assert!(
            compile(&runner, &opts, &req)
                .unwrap_err()
                .to_string()
                .contains("dkms not found")
        );
        assert!(runner.calls().is_empty());
    }

    #[test]
    fn the_module_name_comes_from_dkms_conf() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            built_module_name(dir.path(), "falco"),
            "falco",
            "no dkms.conf"
        );
        for (conf, want) in [
            (
                "PACKAGE_NAME=\"scap\"\nBUILT_MODULE_NAME[0]=\"scap\"\n",
                "scap",
            ),
            (
                "PACKAGE_NAME=\"falco\"\nBUILT_MODULE_NAME[0]=\"${PACKAGE_NAME}\"\n",
                "falco",
            ),
            (
                "PACKAGE_NAME=mine\nBUILT_MODULE_NAME[0]='$PACKAGE_NAME'\n",
                "mine",
            ),
            ("BUILT_MODULE_NAME[0]=\"../evil\"\n", "falco"),
            ("BUILT_MODULE_NAME[0]=\"$OTHER\"\n", "falco"),
        ] {
            fs::write(dir.path().join("dkms.conf"), conf).unwrap();
            assert_eq!(built_module_name(dir.path(), "falco"), want, "{conf}");
        }
    }
}
