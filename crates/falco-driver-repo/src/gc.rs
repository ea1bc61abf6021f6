//! `gc --keep N`: removes the driver versions published longest ago, with a report first.

use serde::Serialize;

use crate::Result;
use crate::storage::Storage;

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

/// Lists the versions and decides which to keep: the `keep` with the newest objects.
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
    versions.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| b.1.version.cmp(&a.1.version)));
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

/// Deletes every object of the versions to remove.
pub async fn execute(storage: &Storage, plan: &Plan) -> Result<()> {
    for v in &plan.remove {
        for meta in storage.list(&format!("driver/{}/", v.version)).await? {
            storage.delete(meta.location.as_ref()).await?;
        }
        tracing::info!(version = %v.version, objects = v.objects, "removed driver version");
    }
    Ok(())
}
