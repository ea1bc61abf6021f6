//! The seam between the loader and the host: commands and kernel information.
//!
//! [`CommandRunner`] runs `lsmod`, `rmmod`, `insmod`, `modprobe`, `dkms`, …; [`RealRunner`]
//! is the default, [`DryRunRunner`] only logs (`--dry-run`), and [`ScriptedRunner`] records
//! the calls and answers from a script (tests).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use falco_core::driver::KernelRelease;

use crate::{Error, Result};

/// What a command printed and whether it succeeded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandOutput {
    /// Exit status 0.
    pub success: bool,
    /// Standard output, lossily decoded.
    pub stdout: String,
    /// Standard error, lossily decoded.
    pub stderr: String,
}

impl CommandOutput {
    /// A successful output with the given stdout.
    pub fn ok(stdout: &str) -> Self {
        Self {
            success: true,
            stdout: stdout.to_owned(),
            stderr: String::new(),
        }
    }

    /// A failed output with the given stderr.
    pub fn failed(stderr: &str) -> Self {
        Self {
            success: false,
            stdout: String::new(),
            stderr: stderr.to_owned(),
        }
    }
}

/// Runs host commands. Implementations must be usable from one thread at a time.
pub trait CommandRunner {
    /// Runs `program args…` to completion.
    fn run(&self, program: &str, args: &[&str]) -> Result<CommandOutput>;
    /// Finds an executable on `PATH`.
    fn which(&self, program: &str) -> Option<PathBuf>;
}

/// Runs commands for real with [`std::process::Command`].
#[derive(Debug, Default, Clone, Copy)]
pub struct RealRunner;

impl CommandRunner for RealRunner {
    fn run(&self, program: &str, args: &[&str]) -> Result<CommandOutput> {
        tracing::debug!(command = %shell_line(program, args), "running");
        let out = Command::new(program)
            .args(args)
            .output()
            .map_err(|source| Error::Command {
                program: program.to_owned(),
                source,
            })?;
        Ok(CommandOutput {
            success: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    fn which(&self, program: &str) -> Option<PathBuf> {
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path)
            .map(|dir| dir.join(program))
            .find(|candidate| is_executable(candidate))
    }
}

/// Logs each command instead of running it. Every command "succeeds" with empty output except
/// the last-resort `modprobe`, which is reported as failed so that a dry run tells whether a
/// driver would really have been obtained; no optional tool (dkms, gcc) is found.
#[derive(Debug, Default, Clone, Copy)]
pub struct DryRunRunner;

impl CommandRunner for DryRunRunner {
    fn run(&self, program: &str, args: &[&str]) -> Result<CommandOutput> {
        tracing::info!(command = %shell_line(program, args), "dry run: would run");
        if program == "modprobe" {
            return Ok(CommandOutput::failed(
                "dry run: no pre-existing module assumed",
            ));
        }
        Ok(CommandOutput::ok(""))
    }

    fn which(&self, _program: &str) -> Option<PathBuf> {
        None
    }
}

/// Records every command and answers from a script: the first rule whose prefix matches the
/// command line (`program arg…` joined by spaces) and still has answers left is used; its
/// last answer repeats. Unmatched commands succeed with empty output.
#[derive(Debug, Default)]
pub struct ScriptedRunner {
    calls: Mutex<Vec<String>>,
    rules: Mutex<Vec<(String, Vec<CommandOutput>)>>,
    tools: Vec<(String, PathBuf)>,
}

impl ScriptedRunner {
    /// A runner where every command succeeds silently and no tool is on `PATH`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Answers commands starting with `prefix` with `outputs` in turn (the last repeats).
    pub fn on(self, prefix: &str, outputs: Vec<CommandOutput>) -> Self {
        if let Ok(mut rules) = self.rules.lock() {
            rules.push((prefix.to_owned(), outputs));
        }
        self
    }

    /// Makes `which(program)` return `path`.
    pub fn with_tool(mut self, program: &str, path: impl Into<PathBuf>) -> Self {
        self.tools.push((program.to_owned(), path.into()));
        self
    }

    /// The command lines run so far.
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }
}

impl CommandRunner for ScriptedRunner {
    fn run(&self, program: &str, args: &[&str]) -> Result<CommandOutput> {
        let line = shell_line(program, args);
        if let Ok(mut calls) = self.calls.lock() {
            calls.push(line.clone());
        }
        let Ok(mut rules) = self.rules.lock() else {
            return Ok(CommandOutput::ok(""));
        };
        for (prefix, outputs) in rules.iter_mut() {
            if line.starts_with(prefix.as_str()) {
                return Ok(if outputs.len() > 1 {
                    outputs.remove(0)
                } else {
                    outputs.first().cloned().unwrap_or_default()
                });
            }
        }
        Ok(CommandOutput::ok(""))
    }

    fn which(&self, program: &str) -> Option<PathBuf> {
        self.tools
            .iter()
            .find(|(name, _)| name == program)
            .map(|(_, path)| path.clone())
    }
}

/// `program arg…` joined by single spaces (for logs and command assertions).
pub fn shell_line(program: &str, args: &[&str]) -> String {
    std::iter::once(program)
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ")
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The running kernel's release and version (`uname -r`, `uname -v`), read from procfs.
pub fn running_kernel() -> Result<(String, String)> {
    let read = |what, path: &str| {
        std::fs::read_to_string(path)
            .map(|s| s.trim_end_matches('\n').to_owned())
            .map_err(|source| Error::KernelInfo { what, source })
    };
    Ok((
        read("release", "/proc/sys/kernel/osrelease")?,
        read("version", "/proc/sys/kernel/version")?,
    ))
}

/// Whether the running kernel can run the modern eBPF probe.
///
/// falcoctl loads test programs with cilium/ebpf; without `unsafe` syscalls this checks the
/// two kernel features the probe needs: BTF (`/sys/kernel/btf/vmlinux`) and BPF ring buffers
/// and `tp_btf` programs, which arrived in 5.8.
pub fn modern_ebpf_supported(running_release: &str) -> bool {
    Path::new("/sys/kernel/btf/vmlinux").exists()
        && KernelRelease::parse(running_release).at_least(5, 8, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripted_runner_answers_in_turn_and_records() {
        let runner = ScriptedRunner::new().on(
            "rmmod",
            vec![CommandOutput::failed("busy"), CommandOutput::ok("")],
        );
        assert!(!runner.run("rmmod", &["falco"]).unwrap().success);
        assert!(runner.run("rmmod", &["falco"]).unwrap().success);
        assert!(runner.run("rmmod", &["falco"]).unwrap().success);
        assert!(runner.run("insmod", &["/x.ko"]).unwrap().success);
        assert_eq!(
            runner.calls(),
            ["rmmod falco", "rmmod falco", "rmmod falco", "insmod /x.ko"]
        );
    }

    #[test]
    fn real_runner_reports_exit_status_and_spawn_errors() {
        let out = RealRunner.run("sh", &["-c", "echo hi; exit 3"]).unwrap();
        assert!(!out.success);
        assert_eq!(out.stdout, "hi\n");
        assert!(matches!(
            RealRunner.run("/nonexistent/prog", &[]),
            Err(Error::Command { .. })
        ));
        assert!(RealRunner.which("sh").is_some());
        assert!(RealRunner.which("surely-not-a-program-xyz").is_none());
    }
}
