//! Safe extraction of Falco artifact archives (gzip-compressed tar), entirely in memory.
//!
//! Nothing is written to disk here: the caller gets the validated file content and writes it
//! through the [`crate::store`]. Path traversal, absolute paths, links, device files, FIFOs,
//! unknown entry types, more regular files than expected and oversized entries are refused.

use std::io::Read;
use std::path::{Component, Path};

use crate::{Error, Result};

/// Limits applied while extracting.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Maximum number of regular files (Falco artifacts hold exactly one).
    pub max_files: usize,
    /// Maximum number of entries of any kind (directories included).
    pub max_entries: usize,
    /// Maximum size of one regular file, in bytes.
    pub max_file_bytes: u64,
    /// Maximum number of decompressed bytes read from the archive, headers included.
    pub max_total_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_files: 1,
            max_entries: 16,
            max_file_bytes: 64 * 1024 * 1024,
            max_total_bytes: 65 * 1024 * 1024,
        }
    }
}

/// One regular file taken from an archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtractedFile {
    /// The path inside the archive (informational: the store names files itself).
    pub path: String,
    /// Permission bits from the tar header.
    pub mode: u32,
    /// The content.
    pub data: Vec<u8>,
}

fn refuse(reason: impl Into<String>) -> Error {
    Error::Archive(reason.into())
}

/// Extracts the regular files of a gzip-compressed tar held in memory, enforcing `limits`.
///
/// Returns the files in archive order; an archive without a regular file is an error.
pub fn extract_tar_gz(compressed: &[u8], limits: &Limits) -> Result<Vec<ExtractedFile>> {
    let decoder = flate2::read::GzDecoder::new(compressed);
    // One byte over the limit tells a too-large stream apart from one exactly at the limit.
    let mut archive = tar::Archive::new(decoder.take(limits.max_total_bytes.saturating_add(1)));
    let mut files = Vec::new();
    let entries = archive
        .entries()
        .map_err(|e| refuse(format!("not a tar archive: {e}")))?;
    for (index, entry) in entries.enumerate() {
        if index >= limits.max_entries {
            return Err(refuse(format!("more than {} entries", limits.max_entries)));
        }
        let mut entry = entry.map_err(|e| refuse(format!("corrupt or truncated archive: {e}")))?;
        let raw_path = entry.path_bytes().into_owned();
        let path = String::from_utf8(raw_path).map_err(|_| refuse("entry path is not UTF-8"))?;
        check_path(&path)?;
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            continue;
        }
        if kind.is_symlink() || kind.is_hard_link() {
            return Err(refuse(format!("link entry {path:?}")));
        }
        if kind.is_character_special() || kind.is_block_special() || kind.is_fifo() {
            return Err(refuse(format!("device or FIFO entry {path:?}")));
        }
        if !(kind.is_file() || kind == tar::EntryType::Continuous) {
            return Err(refuse(format!(
                "entry {path:?} of unsupported type {kind:?}"
            )));
        }
        if files.len() >= limits.max_files {
            return Err(refuse(format!(
                "more than {} regular file(s) in the archive",
                limits.max_files
            )));
        }
        let size = entry.size();
        if size > limits.max_file_bytes {
            return Err(refuse(format!(
                "entry {path:?} is {size} bytes, limit {}",
                limits.max_file_bytes
            )));
        }
        let mode = entry
            .header()
            .mode()
            .map_err(|e| refuse(format!("bad mode: {e}")))?
            & 0o777;
        let mut data = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        entry
            .by_ref()
            .take(limits.max_file_bytes.saturating_add(1))
            .read_to_end(&mut data)
            .map_err(|e| refuse(format!("reading {path:?}: {e}")))?;
        if data.len() as u64 != size {
            return Err(refuse(format!("entry {path:?} is truncated")));
        }
        files.push(ExtractedFile { path, mode, data });
    }
    // Drain to the end so that a decompression bomb after the last entry is noticed as well.
    let mut rest = archive.into_inner();
    let mut sink = [0u8; 8192];
    loop {
        let n = rest
            .read(&mut sink)
            .map_err(|e| refuse(format!("corrupt gzip stream: {e}")))?;
        if n == 0 {
            break;
        }
    }
    if rest.limit() == 0 {
        return Err(refuse(format!(
            "more than {} decompressed bytes",
            limits.max_total_bytes
        )));
    }
    if files.is_empty() {
        return Err(refuse("no regular file in the archive"));
    }
    Ok(files)
}

/// Refuses absolute paths and any `..` component.
fn check_path(path: &str) -> Result<()> {
    if path.is_empty() {
        return Err(refuse("empty entry path"));
    }
    for component in Path::new(path).components() {
        match component {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => return Err(refuse(format!("path traversal in {path:?}"))),
            Component::RootDir | Component::Prefix(_) => {
                return Err(refuse(format!("absolute path {path:?}")));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Builds a gzip tar by hand so that malicious headers can be crafted freely.
    fn tar_gz(entries: &[(&str, tar::EntryType, &[u8], Option<&str>)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (path, kind, data, link) in entries {
            let mut header = tar::Header::new_old();
            // Write the raw name bytes so `..` and absolute paths survive.
            let name = &mut header.as_old_mut().name;
            name[..path.len()].copy_from_slice(path.as_bytes());
            header.set_entry_type(*kind);
            header.set_mode(0o644);
            header.set_size(data.len() as u64);
            if let Some(link) = link {
                header.set_link_name(link).unwrap();
            }
            header.set_cksum();
            out.extend_from_slice(header.as_bytes());
            out.extend_from_slice(data);
            out.resize(out.len().div_ceil(512) * 512, 0);
        }
        out.extend_from_slice(&[0u8; 1024]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&out).unwrap();
        gz.finish().unwrap()
    }

    fn err(bytes: &[u8]) -> String {
        extract_tar_gz(bytes, &Limits::default())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn one_regular_file_is_extracted() {
        let bytes = tar_gz(&[
            ("rules/", tar::EntryType::Directory, b"", None),
            (
                "rules/falco_rules.yaml",
                tar::EntryType::Regular,
                b"- rule: x\n",
                None,
            ),
        ]);
        let files = extract_tar_gz(&bytes, &Limits::default()).unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].path, "rules/falco_rules.yaml");
        assert_eq!(files[0].data, b"- rule: x\n");
        assert_eq!(files[0].mode, 0o644);
    }

    #[test]
    fn traversal_and_absolute_paths_are_refused() {
        let e = err(&tar_gz(&[(
            "../../etc/passwd",
            tar::EntryType::Regular,
            b"x",
            None,
        )]));
        assert!(e.contains("path traversal"), "{e}");
        let e = err(&tar_gz(&[(
            "a/../../b",
            tar::EntryType::Regular,
            b"x",
            None,
        )]));
        assert!(e.contains("path traversal"), "{e}");
        let e = err(&tar_gz(&[(
            "/etc/passwd",
            tar::EntryType::Regular,
            b"x",
            None,
        )]));
        assert!(e.contains("absolute path"), "{e}");
    }

    #[test]
    fn links_and_devices_are_refused() {
        let e = err(&tar_gz(&[(
            "l",
            tar::EntryType::Symlink,
            b"",
            Some("/etc/shadow"),
        )]));
        assert!(e.contains("link entry"), "{e}");
        let e = err(&tar_gz(&[("h", tar::EntryType::Link, b"", Some("x"))]));
        assert!(e.contains("link entry"), "{e}");
        let e = err(&tar_gz(&[("d", tar::EntryType::Char, b"", None)]));
        assert!(e.contains("device"), "{e}");
        let e = err(&tar_gz(&[("b", tar::EntryType::Block, b"", None)]));
        assert!(e.contains("device"), "{e}");
        let e = err(&tar_gz(&[("f", tar::EntryType::Fifo, b"", None)]));
        assert!(e.contains("FIFO"), "{e}");
    }

    #[test]
    fn too_many_files_and_entries_are_refused() {
        let e = err(&tar_gz(&[
            ("a.yaml", tar::EntryType::Regular, b"a", None),
            ("b.yaml", tar::EntryType::Regular, b"b", None),
        ]));
        assert!(e.contains("more than 1 regular file"), "{e}");
        let dirs: Vec<String> = (0..20).map(|i| format!("d{i}/")).collect();
        let entries: Vec<_> = dirs
            .iter()
            .map(|d| (d.as_str(), tar::EntryType::Directory, &b""[..], None))
            .collect();
        let e = err(&tar_gz(&entries));
        assert!(e.contains("more than 16 entries"), "{e}");
    }

    #[test]
    fn oversized_entries_and_bombs_are_refused() {
        let big = vec![b'a'; 4096];
        let limits = Limits {
            max_file_bytes: 1024,
            ..Limits::default()
        };
        let e = extract_tar_gz(
            &tar_gz(&[("r.yaml", tar::EntryType::Regular, &big, None)]),
            &limits,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("4096 bytes, limit 1024"), "{e}");
        let limits = Limits {
            max_total_bytes: 2048,
            ..Limits::default()
        };
        let e = extract_tar_gz(
            &tar_gz(&[("r.yaml", tar::EntryType::Regular, &big, None)]),
            &limits,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("decompressed") || e.contains("truncated"), "{e}");
    }

    #[test]
    fn empty_and_garbage_archives_are_refused() {
        let e = err(&tar_gz(&[("d/", tar::EntryType::Directory, b"", None)]));
        assert!(e.contains("no regular file"), "{e}");
        assert!(extract_tar_gz(b"not gzip at all", &Limits::default()).is_err());
    }
}
