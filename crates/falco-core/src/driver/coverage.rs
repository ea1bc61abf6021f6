//! Coverage before rollout: from the Nodes of a cluster and the indexes of the driver
//! repositories, which nodes would get a prebuilt kernel module and which would need to
//! compile one.
//!
//! A node's `status.nodeInfo` holds `osImage` (os-release's `PRETTY_NAME`), `kernelVersion`
//! (`uname -r`, despite the name) and `architecture`, but not `uname -v`, which most targets
//! need for the kernel version part of the file name (`#57~20.04.1-Ubuntu` → `57~20.04.1`,
//! `#1` → `1`) and Debian even for the kernel release (`Debian 6.1.76-1` → `6.1.76-1-amd64`).
//! So each node gets a [`Guess`] that says how exact it is:
//! - **exact**: bottlerocket, talos and minikube (from its `minikube.k8s.io/version` label)
//!   derive the kernel version from the OS version, so the whole file name is known;
//! - **release only**: the kernel version is unknown, so a repository entry with the same
//!   target and kernel release is a *likely* match (the version part usually is the build
//!   number, which the repository's entries list);
//! - **flavour only** (Debian): the release in the file name comes from `uname -v`, so only
//!   entries of the same Debian flavour and kernel series can be named;
//! - **none**: targets that never use the kernel module (COS; Oracle Linux UEK kernels).
//!
//! The loader's per-node status, once deployed, confirms what this guesses.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{Distro, DistroKind, DriverType, KernelRelease, OsRelease};
use crate::index::IndexEntry;

/// Label minikube puts on its nodes with its version (`v1.32.0`).
pub const MINIKUBE_VERSION_LABEL: &str = "minikube.k8s.io/version";

/// What coverage needs of one Node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeFacts {
    /// `metadata.name`.
    pub name: String,
    /// `status.nodeInfo.osImage`, e.g. `Ubuntu 22.04.3 LTS`.
    pub os_image: String,
    /// `status.nodeInfo.kernelVersion`: `uname -r`.
    pub kernel_release: String,
    /// `status.nodeInfo.architecture`: `amd64`, `arm64`.
    pub architecture: String,
    /// `metadata.labels[minikube.k8s.io/version]`, if any.
    pub minikube_version: Option<String>,
}

/// How much of the driver file name nodeInfo determines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Precision {
    /// Target, kernel release and kernel version.
    Exact,
    /// Target and kernel release; the kernel version comes from `uname -v`.
    ReleaseOnly,
    /// Target and kernel flavour; Debian's release and version come from `uname -v`.
    FlavourOnly,
}

/// The driver file a node most likely needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Guess {
    /// Target id, as the loader would detect it.
    pub target: String,
    /// Kernel release of the file name (exact unless [`Precision::FlavourOnly`]).
    pub kernel_release: String,
    /// Kernel version of the file name, when nodeInfo determines it.
    pub kernel_version: Option<String>,
    /// How exact this is.
    pub precision: Precision,
}

/// What a node would do with the chosen driver version.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case", tag = "verdict")]
pub enum Verdict {
    /// A repository lists the exact file.
    Prebuilt {
        /// Index of the first repository listing it.
        repo: usize,
        /// The file.
        file: String,
    },
    /// A repository lists a file for this target and kernel release (or Debian flavour and
    /// series); which one the node takes depends on `uname -v`.
    Likely {
        /// Index of the first repository listing candidates.
        repo: usize,
        /// Up to [`MAX_CANDIDATES`] candidate files, sorted.
        candidates: Vec<String>,
    },
    /// No repository lists a matching file: the node would compile (or fail without compile).
    Compile,
    /// The node never uses the kernel module, or its architecture has no drivers.
    NotApplicable {
        /// Why.
        reason: String,
    },
}

/// Most candidate files named per group.
pub const MAX_CANDIDATES: usize = 5;
/// Most node names listed per group (a 5,000-node report lists counts, not every node).
pub const MAX_SAMPLE_NODES: usize = 3;

/// The os-release fields an `osImage` implies: (`ID`, `VERSION_ID`, `VARIANT_ID`).
fn os_release_of(os_image: &str) -> (String, Option<String>, Option<String>) {
    let image = os_image.trim();
    let lower = image.to_ascii_lowercase();
    let word = |i: usize| image.split_whitespace().nth(i).map(str::to_owned);
    let version_in_parens = || {
        let start = image.find('(')? + 1;
        let end = image[start..].find(')')? + start;
        Some(image[start..end].trim().to_owned())
    };
    let id = |s: &str| s.to_owned();
    if lower.starts_with("ubuntu") {
        (id("ubuntu"), word(1), None)
    } else if lower.starts_with("debian") {
        (id("debian"), None, None)
    } else if lower.starts_with("amazon linux") {
        let version = word(2).map(|v| v.split('.').next().unwrap_or_default().to_owned());
        (id("amzn"), version, None)
    } else if lower.starts_with("bottlerocket") {
        // `Bottlerocket OS 1.19.2 (aws-k8s-1.28)`
        (id("bottlerocket"), word(2), version_in_parens())
    } else if lower.starts_with("talos") {
        // `Talos (v1.6.4)`
        (id("talos"), version_in_parens(), None)
    } else if lower.starts_with("flatcar") {
        // `Flatcar Container Linux by Kinvolk 3794.0.0 (Oklo)`
        let version = image
            .split_whitespace()
            .find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()));
        (id("flatcar"), version.map(str::to_owned), None)
    } else if lower.starts_with("container-optimized os") {
        (id("cos"), Some(String::new()), None)
    } else if lower.starts_with("centos") {
        (id("centos"), None, None)
    } else if lower.starts_with("red hat enterprise linux coreos") {
        (id("rhcos"), None, None)
    } else if lower.starts_with("red hat") {
        (id("rhel"), None, None)
    } else if lower.starts_with("rocky") {
        (id("rocky"), None, None)
    } else if lower.starts_with("almalinux") {
        (id("almalinux"), None, None)
    } else if lower.starts_with("oracle linux") {
        (id("ol"), None, None)
    } else if lower.starts_with("fedora coreos") {
        (id("fedora"), None, None)
    } else if lower.starts_with("opensuse leap") {
        (id("opensuse-leap"), None, None)
    } else if lower.starts_with("suse linux enterprise") {
        (id("sles"), None, None)
    } else if lower.starts_with("arch linux") {
        (id("arch"), None, None)
    } else {
        // Unknown: os-release's ID is usually the first word, lowercased.
        (
            image
                .split_whitespace()
                .next()
                .unwrap_or("undetermined")
                .to_ascii_lowercase(),
            None,
            None,
        )
    }
}

/// Guesses the driver file a node needs, or why it needs none.
pub fn guess(node: &NodeFacts) -> Result<Guess, String> {
    let kr = KernelRelease::parse(&node.kernel_release);
    let (mut id, version_id, variant_id) = os_release_of(&node.os_image);
    let minikube = node
        .minikube_version
        .as_deref()
        .and_then(|v| v.trim_start_matches('v').split('-').next())
        .map(str::to_owned);
    if minikube.is_some() {
        id = "minikube".to_owned();
    }
    let mut os = String::new();
    for (key, value) in [("VERSION_ID", &version_id), ("VARIANT_ID", &variant_id)] {
        if let Some(v) = value {
            os.push_str(&format!("{key}={v}\nBUILD_ID={v}\n"));
        }
    }
    let os = OsRelease::parse(&os);
    let distro = match (&minikube, id.as_str()) {
        (Some(version), _) => Distro {
            target_id: "minikube".to_owned(),
            kind: DistroKind::Minikube {
                version: version.clone(),
            },
        },
        (None, "cos") => {
            return Err("Container-Optimized OS never uses the kernel module".to_owned());
        }
        (None, _) => Distro::from_os_release(&id, &os, &kr, std::path::Path::new("/nonexistent"))
            .map_err(|e| e.to_string())?,
    };
    if !distro.allows(DriverType::Kmod, &kr) {
        return Err(format!(
            "{} does not use the kernel module on kernel {}",
            distro.target_id, node.kernel_release
        ));
    }
    let (fixed, kv) = distro.fixup_kernel(&kr, "");
    let (kernel_version, precision) = match distro.kind {
        DistroKind::Minikube { .. }
        | DistroKind::Bottlerocket { .. }
        | DistroKind::Talos { .. } => (Some(kv), Precision::Exact),
        DistroKind::Debian => (None, Precision::FlavourOnly),
        _ => (None, Precision::ReleaseOnly),
    };
    Ok(Guess {
        target: distro.target_id,
        kernel_release: fixed.to_string(),
        kernel_version,
        precision,
    })
}

/// The files of one repository, for one driver version and arch, from its index.
#[derive(Debug, Clone, Default)]
pub struct RepoFiles {
    /// Entries of `index.json`; empty when the repository has no index for that version/arch.
    pub entries: Vec<IndexEntry>,
}

/// Debian's flavour and series of a release: (`6.1`, `-cloud-amd64`) for `6.1.0-18-cloud-amd64`
/// and for `6.1.76-1-cloud-amd64` alike.
fn debian_series(release: &str) -> Option<(String, String)> {
    let kr = KernelRelease::parse(release);
    let series = format!("{}.{}", kr.version, kr.patch_level);
    let flavour = [
        "-rt-amd64",
        "-cloud-amd64",
        "-amd64",
        "-rt-arm64",
        "-cloud-arm64",
        "-arm64",
    ]
    .into_iter()
    .find(|suffix| release.ends_with(suffix))?;
    Some((series, flavour.to_owned()))
}

/// The verdict for one guess against the repositories in order (`None` = a repository has no
/// index for this version and arch; it is skipped).
pub fn verdict(guess: &Guess, repos: &[RepoFiles]) -> Verdict {
    for (i, repo) in repos.iter().enumerate() {
        let ko = |e: &&IndexEntry| e.file.ends_with(".ko") && e.target == guess.target;
        if let Some(kv) = &guess.kernel_version
            && let Some(e) = repo
                .entries
                .iter()
                .filter(ko)
                .find(|e| e.kernelrelease == guess.kernel_release && &e.kernelversion == kv)
        {
            return Verdict::Prebuilt {
                repo: i,
                file: e.file.clone(),
            };
        }
        let mut candidates: Vec<String> = match guess.precision {
            Precision::Exact => Vec::new(),
            Precision::ReleaseOnly => repo
                .entries
                .iter()
                .filter(ko)
                .filter(|e| e.kernelrelease == guess.kernel_release)
                .map(|e| e.file.clone())
                .collect(),
            Precision::FlavourOnly => {
                let want = debian_series(&guess.kernel_release);
                repo.entries
                    .iter()
                    .filter(ko)
                    .filter(|e| want.is_some() && debian_series(&e.kernelrelease) == want)
                    .map(|e| e.file.clone())
                    .collect()
            }
        };
        if !candidates.is_empty() {
            candidates.sort();
            candidates.truncate(MAX_CANDIDATES);
            return Verdict::Likely {
                repo: i,
                candidates,
            };
        }
    }
    Verdict::Compile
}

/// One group of the report: nodes that share target, kernel, arch and verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Group {
    /// Architecture directory (`x86_64`, `aarch64`) or the node's own value when unsupported.
    pub arch: String,
    /// Target id (empty when not applicable).
    pub target: String,
    /// Kernel release as the file name would have it (Debian: `uname -r`).
    pub kernel_release: String,
    /// Kernel version, when nodeInfo determines it.
    pub kernel_version: Option<String>,
    /// How exact the guess is (absent when not applicable).
    pub precision: Option<Precision>,
    /// What the nodes would do.
    #[serde(flatten)]
    pub verdict: Verdict,
    /// Nodes in the group.
    pub nodes: usize,
    /// Up to [`MAX_SAMPLE_NODES`] of their names.
    pub sample_nodes: Vec<String>,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Driver version checked.
    pub driver_version: String,
    /// Repositories, in order (the verdicts' `repo` indexes into this).
    pub repos: Vec<String>,
    /// Nodes checked.
    pub nodes: usize,
    /// Nodes with an exact prebuilt file.
    pub prebuilt: usize,
    /// Nodes with a likely prebuilt file (kernel version unknown from nodeInfo).
    pub likely: usize,
    /// Nodes that would compile.
    pub compile: usize,
    /// Nodes that never use the kernel module.
    pub not_applicable: usize,
    /// Groups, most nodes first.
    pub groups: Vec<Group>,
    /// What the report could not check (e.g. a repository without an index), for the caller
    /// to fill in.
    pub warnings: Vec<String>,
}

/// Builds the report. `files(arch)` gives the repositories' files for an arch directory, in
/// repository order; it is called once per arch present.
pub fn report(
    driver_version: &str,
    repos: &[String],
    nodes: &[NodeFacts],
    mut files: impl FnMut(super::Arch) -> Vec<RepoFiles>,
) -> Report {
    let mut by_arch: BTreeMap<super::Arch, Vec<RepoFiles>> = BTreeMap::new();
    let mut groups: BTreeMap<(String, String, String, Option<String>), Group> = BTreeMap::new();
    for node in nodes {
        let arch = node.architecture.parse::<super::Arch>();
        let (arch_name, outcome) = match arch {
            Ok(arch) => {
                let repo_files = by_arch.entry(arch).or_insert_with(|| files(arch));
                let outcome = guess(node).map(|g| {
                    let v = verdict(&g, repo_files);
                    (g, v)
                });
                (arch.as_str().to_owned(), outcome)
            }
            Err(e) => (node.architecture.clone(), Err(e.to_string())),
        };
        let (key, group) = match outcome {
            Ok((g, verdict)) => (
                (
                    arch_name.clone(),
                    g.target.clone(),
                    g.kernel_release.clone(),
                    g.kernel_version.clone(),
                ),
                Group {
                    arch: arch_name,
                    target: g.target,
                    kernel_release: g.kernel_release,
                    kernel_version: g.kernel_version,
                    precision: Some(g.precision),
                    verdict,
                    nodes: 0,
                    sample_nodes: Vec::new(),
                },
            ),
            Err(reason) => (
                (arch_name.clone(), String::new(), reason.clone(), None),
                Group {
                    arch: arch_name,
                    target: String::new(),
                    kernel_release: node.kernel_release.clone(),
                    kernel_version: None,
                    precision: None,
                    verdict: Verdict::NotApplicable { reason },
                    nodes: 0,
                    sample_nodes: Vec::new(),
                },
            ),
        };
        let group = groups.entry(key).or_insert(group);
        group.nodes += 1;
        if group.sample_nodes.len() < MAX_SAMPLE_NODES {
            group.sample_nodes.push(node.name.clone());
        }
    }
    let mut groups: Vec<Group> = groups.into_values().collect();
    groups.sort_by(|a, b| {
        b.nodes
            .cmp(&a.nodes)
            .then_with(|| a.verdict.cmp(&b.verdict))
    });
    let count = |f: fn(&Verdict) -> bool| -> usize {
        groups
            .iter()
            .filter(|g| f(&g.verdict))
            .map(|g| g.nodes)
            .sum()
    };
    Report {
        driver_version: driver_version.to_owned(),
        repos: repos.to_vec(),
        nodes: nodes.len(),
        prebuilt: count(|v| matches!(v, Verdict::Prebuilt { .. })),
        likely: count(|v| matches!(v, Verdict::Likely { .. })),
        compile: count(|v| matches!(v, Verdict::Compile)),
        not_applicable: count(|v| matches!(v, Verdict::NotApplicable { .. })),
        groups,
        warnings: Vec::new(),
    }
}

/// The report as a table for a person.
pub fn render_table(report: &Report) -> String {
    let mut out = format!(
        "driver version {}: {} nodes: {} prebuilt, {} likely prebuilt, {} would compile, {} not applicable\n",
        report.driver_version,
        report.nodes,
        report.prebuilt,
        report.likely,
        report.compile,
        report.not_applicable
    );
    for (i, repo) in report.repos.iter().enumerate() {
        out.push_str(&format!("repository #{i}: {repo}\n"));
    }
    for warning in &report.warnings {
        out.push_str(&format!("warning: {warning}\n"));
    }
    out.push_str(&format!(
        "\n{:>6}  {:<8} {:<20} {:<40} {:<12} {}\n",
        "NODES", "ARCH", "TARGET", "KERNEL", "VERDICT", "DETAIL"
    ));
    for g in &report.groups {
        let kernel = match &g.kernel_version {
            Some(kv) => format!("{} {kv}", g.kernel_release),
            None => g.kernel_release.clone(),
        };
        let (verdict, detail) = match &g.verdict {
            Verdict::Prebuilt { repo, file } => ("prebuilt", format!("#{repo} {file}")),
            Verdict::Likely { repo, candidates } => (
                "likely",
                format!(
                    "#{repo} {} (uname -v decides{})",
                    candidates.join(" "),
                    if g.precision == Some(Precision::FlavourOnly) {
                        "; Debian names files after the package version in uname -v"
                    } else {
                        ""
                    }
                ),
            ),
            Verdict::Compile => ("compile", "no repository lists this kernel".to_owned()),
            Verdict::NotApplicable { reason } => ("n/a", reason.clone()),
        };
        out.push_str(&format!(
            "{:>6}  {:<8} {:<20} {:<40} {:<12} {detail} [{}]\n",
            g.nodes,
            g.arch,
            g.target,
            kernel,
            verdict,
            g.sample_nodes.join(", ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::Arch;

    fn node(name: &str, os: &str, kr: &str) -> NodeFacts {
        NodeFacts {
            name: name.into(),
            os_image: os.into(),
            kernel_release: kr.into(),
            architecture: "amd64".into(),
            minikube_version: None,
        }
    }

    fn entry(file: &str) -> IndexEntry {
        let n = crate::driver::DriverFileName::parse(file).unwrap();
        IndexEntry {
            file: file.into(),
            size: 1,
            sha256: "0".repeat(64),
            target: n.target,
            kernelrelease: n.kernelrelease,
            kernelversion: n.kernelversion,
        }
    }

    #[test]
    fn os_images_map_to_targets_and_precision() {
        let cases = [
            (
                "Ubuntu 22.04.3 LTS",
                "5.15.0-1049-gcp",
                "ubuntu-gcp",
                "5.15.0-1049-gcp",
                None,
                Precision::ReleaseOnly,
            ),
            (
                "Amazon Linux 2",
                "5.10.205-195.807.amzn2.x86_64",
                "amazonlinux2",
                "5.10.205-195.807.amzn2.x86_64",
                None,
                Precision::ReleaseOnly,
            ),
            (
                "Amazon Linux 2023.3.20240117",
                "6.1.72-96.166.amzn2023.x86_64",
                "amazonlinux2023",
                "6.1.72-96.166.amzn2023.x86_64",
                None,
                Precision::ReleaseOnly,
            ),
            (
                "Bottlerocket OS 1.19.2 (aws-k8s-1.28)",
                "5.15.148",
                "bottlerocket",
                "5.15.148",
                Some("1_1.19.2-aws"),
                Precision::Exact,
            ),
            (
                "Talos (v1.6.4)",
                "6.1.74-talos",
                "talos",
                "6.1.74-talos",
                Some("1_v1.6.4"),
                Precision::Exact,
            ),
            (
                "Flatcar Container Linux by Kinvolk 3794.0.0 (Oklo)",
                "6.1.62-flatcar",
                "flatcar",
                "3794.0.0",
                None,
                Precision::ReleaseOnly,
            ),
            (
                "Debian GNU/Linux 12 (bookworm)",
                "6.1.0-18-cloud-amd64",
                "debian",
                "6.1.0-18-cloud-amd64",
                None,
                Precision::FlavourOnly,
            ),
            (
                "CentOS Linux 7 (Core)",
                "3.10.0-1160.el7.x86_64",
                "centos",
                "3.10.0-1160.el7.x86_64",
                None,
                Precision::ReleaseOnly,
            ),
            (
                "Rocky Linux 9.3 (Blue Onyx)",
                "5.14.0-362.el9.x86_64",
                "rocky",
                "5.14.0-362.el9.x86_64",
                None,
                Precision::ReleaseOnly,
            ),
        ];
        for (os, kr, target, fkr, kv, precision) in cases {
            let g = guess(&node("n", os, kr)).unwrap_or_else(|e| panic!("{os}: {e}"));
            assert_eq!(g.target, target, "{os}");
            assert_eq!(g.kernel_release, fkr, "{os}");
            assert_eq!(g.kernel_version.as_deref(), kv, "{os}");
            assert_eq!(g.precision, precision, "{os}");
        }
        let mut mk = node("m", "Buildroot 2023.02.9", "5.10.207");
        mk.minikube_version = Some("v1.32.0".into());
        let g = guess(&mk).unwrap();
        assert_eq!(
            (g.target.as_str(), g.kernel_version.as_deref()),
            ("minikube", Some("1_1.32.0"))
        );
        assert!(guess(&node("c", "Container-Optimized OS from Google", "5.15.0")).is_err());
        let uek = guess(&node(
            "o",
            "Oracle Linux Server 8.9",
            "5.15.0-200.131.27.el8uek.x86_64",
        ));
        assert!(uek.unwrap_err().contains("does not use the kernel module"));
    }

    #[test]
    fn verdicts_follow_precision_and_repository_order() {
        let first = RepoFiles {
            entries: vec![entry("falco_bottlerocket_5.15.148_1_1.19.2-aws.ko")],
        };
        let second = RepoFiles {
            entries: vec![
                entry("falco_ubuntu-gcp_5.15.0-1049-gcp_57~20.04.1.ko"),
                entry("falco_ubuntu-gcp_5.15.0-1049-gcp_58.ko"),
                entry("falco_debian_6.1.76-1-cloud-amd64_1.ko"),
                entry("falco_debian_6.1.76-1-amd64_1.ko"),
                entry("falco_bottlerocket_5.15.148_1_1.19.2-aws.ko"),
            ],
        };
        let repos = [first, second];
        let v = |os: &str, kr: &str| verdict(&guess(&node("n", os, kr)).unwrap(), &repos);
        assert_eq!(
            v("Bottlerocket OS 1.19.2 (aws-k8s-1.28)", "5.15.148"),
            Verdict::Prebuilt {
                repo: 0,
                file: "falco_bottlerocket_5.15.148_1_1.19.2-aws.ko".into()
            }
        );
        assert_eq!(
            v("Bottlerocket OS 1.20.0 (aws-k8s-1.29)", "5.15.148"),
            Verdict::Compile
        );
        assert_eq!(
            v("Ubuntu 20.04.6 LTS", "5.15.0-1049-gcp"),
            Verdict::Likely {
                repo: 1,
                candidates: vec![
                    "falco_ubuntu-gcp_5.15.0-1049-gcp_57~20.04.1.ko".into(),
                    "falco_ubuntu-gcp_5.15.0-1049-gcp_58.ko".into()
                ]
            }
        );
        assert_eq!(
            v("Debian GNU/Linux 12 (bookworm)", "6.1.0-18-cloud-amd64"),
            Verdict::Likely {
                repo: 1,
                candidates: vec!["falco_debian_6.1.76-1-cloud-amd64_1.ko".into()]
            }
        );
        assert_eq!(v("Ubuntu 22.04 LTS", "6.5.0-1008-gcp"), Verdict::Compile);
    }

    #[test]
    fn reports_group_nodes_and_call_the_index_once_per_arch() {
        let mut nodes: Vec<NodeFacts> = (0..5000)
            .map(|i| {
                node(
                    &format!("n{i}"),
                    "Ubuntu 22.04.3 LTS",
                    if i % 2 == 0 {
                        "5.15.0-1049-gcp"
                    } else {
                        "6.5.0-1008-gcp"
                    },
                )
            })
            .collect();
        nodes.push(NodeFacts {
            architecture: "s390x".into(),
            ..node("z", "Ubuntu 22.04.3 LTS", "5.15.0-1049-gcp")
        });
        nodes.push(node("c", "Container-Optimized OS from Google", "5.15.0"));
        let mut calls = Vec::new();
        let repos = vec!["http://r".to_owned()];
        let r = report("8.0.0+driver", &repos, &nodes, |arch| {
            calls.push(arch);
            vec![RepoFiles {
                entries: vec![entry("falco_ubuntu-gcp_5.15.0-1049-gcp_57~20.04.1.ko")],
            }]
        });
        assert_eq!(calls, [Arch::X86_64]);
        assert_eq!(
            (r.nodes, r.likely, r.compile, r.not_applicable),
            (5002, 2500, 2500, 2)
        );
        assert_eq!(r.groups.len(), 4);
        assert!(
            r.groups
                .iter()
                .all(|g| g.sample_nodes.len() <= MAX_SAMPLE_NODES)
        );
        let table = render_table(&r);
        assert!(
            table.contains(
                "5002 nodes: 0 prebuilt, 2500 likely prebuilt, 2500 would compile, 2 not applicable"
            ),
            "{table}"
        );
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["groups"][0]["nodes"], 2500);
        assert!(json["groups"][0]["verdict"].is_string());
    }
}
