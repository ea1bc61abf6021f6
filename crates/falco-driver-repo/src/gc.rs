//! `gc --keep N`: removes the oldest driver versions, with a report first, and renews the
//! signed indexes of the versions it keeps.
//!
//! Versions are ordered by version, not by when they were last written: `8.0.0+driver` is
//! newer than `7.10.0+driver`, which is newer than `7.9.0+driver`, however recently an old
//! version was re-published or mirrored. Versions that are not semantic versions (the
//! commit-hash names of old drivers) are older than every semantic version and are ordered
//! by name among themselves.

use std::cmp::Ordering;

use serde::Serialize;

use crate::Result;
use crate::publish::{Signer, rebuild_index};
use crate::storage::Storage;

/// Orders driver versions, oldest first: semantic versions (build metadata such as `+driver`
/// only breaks ties) after every name that is not one.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    match (semver::Version::parse(a), semver::Version::parse(b)) {
        (Ok(x), Ok(y)) => x.cmp_precedence(&y).then_with(|| a.cmp(b)),
        (Ok(_), Err(_)) => Ordering::Greater,
        (Err(_), Ok(_)) => Ordering::Less,
        (Err(_), Err(_)) => a.cmp(b),
    }
}

/// One driver version and what it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VersionUsage {
    /// Driver version.
    pub version: String,
    /// Objects under `driver/<version>/`.
    pub objects: u64,
    /// Bytes under `driver/<version>/`.
    pub bytes: u64,
    /// Most recent modification, RFC 3339.
    pub last_modified: String,
}

/// What `gc` keeps and removes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// Versions kept, newest first.
    pub keep: Vec<VersionUsage>,
    /// Versions removed, newest first.
    pub remove: Vec<VersionUsage>,
}

/// Lists the versions and decides which to keep: the `keep` highest versions.
pub async fn plan(storage: &Storage, keep: usize) -> Result<Plan> {
    let mut versions = Vec::new();
    for dir in storage.list_dirs("driver/").await? {
        let version = dir
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        let objects = storage.list(&format!("driver/{version}/")).await?;
        let newest = objects.iter().map(|m| m.last_modified).max();
        versions.push((
            newest,
            VersionUsage {
                version,
                objects: objects.len() as u64,
                bytes: objects.iter().map(|m| m.size).sum(),
                last_modified: newest.map(|t| t.to_rfc3339()).unwrap_or_default(),
            },
        ));
    }
    versions.sort_by(|a, b| compare_versions(&b.1.version, &a.1.version));
    let mut all: Vec<VersionUsage> = versions.into_iter().map(|(_, v)| v).collect();
    let remove = all.split_off(keep.min(all.len()));
    Ok(Plan { keep: all, remove })
}

/// Renders the plan for a person.
pub fn render(plan: &Plan, dry_run: bool) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let verb = if dry_run { "would remove" } else { "removing" };
    for (what, list) in [("keep", &plan.keep), (verb, &plan.remove)] {
        for v in list {
            let _ = writeln!(
                out,
                "{what:<12}  {:<24}  {:>6} objects  {:>12} bytes  {}",
                v.version, v.objects, v.bytes, v.last_modified
            );
        }
    }
    if dry_run && !plan.remove.is_empty() {
        out.push_str("dry run: nothing deleted; run again with --yes to delete\n");
    }
    out
}

/// Deletes every object of the versions to remove, then, with a signer, rewrites the index of
/// every arch of every kept version (serial + 1, expiry renewed), so that a repository only
/// maintained by a periodic `gc` keeps serving valid indexes. Returns the indexes written.
pub async fn execute(storage: &Storage, plan: &Plan, signer: Option<&Signer>) -> Result<usize> {
    for v in &plan.remove {
        for meta in storage.list(&format!("driver/{}/", v.version)).await? {
            storage.delete(meta.location.as_ref()).await?;
        }
        tracing::info!(version = %v.version, objects = v.objects, "removed driver version");
    }
    let mut written = 0;
    if let Some(signer) = signer {
        for v in &plan.keep {
            for dir in storage.list_dirs(&format!("driver/{}/", v.version)).await? {
                let arch = dir
                    .trim_end_matches('/')
                    .rsplit('/')
                    .next()
                    .unwrap_or_default();
                if arch.is_empty() {
                    continue;
                }
                if rebuild_index(storage, &v.version, arch, signer).await? {
                    written += 1;
                }
            }
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_ordered_by_version() {
        let mut v = vec![
            "7.10.0+driver",
            "8.0.0+driver",
            "a259b4bf49c3330d9ad6c3eed9eb1a31954259a6",
            "7.9.0+driver",
            "8.0.0-rc1+driver",
            "2.0.0",
            "10.0.0",
        ];
        v.sort_by(|a, b| compare_versions(a, b));
        assert_eq!(
            v,
            [
                "a259b4bf49c3330d9ad6c3eed9eb1a31954259a6",
                "2.0.0",
                "7.9.0+driver",
                "7.10.0+driver",
                "8.0.0-rc1+driver",
                "8.0.0+driver",
                "10.0.0",
            ]
        );
    }
}
