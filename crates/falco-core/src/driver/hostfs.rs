//! Reading files of the host mounted at the host root, without ever leaving it.
//!
//! The host root (`/host` in a container) holds the host's own symlinks: `etc/os-release` is
//! usually `../usr/lib/os-release`, and may be an absolute link. Followed naively from the
//! container, an absolute link points into the *container's* filesystem (`/etc/os-release`
//! of the loader image) and the wrong distribution is detected; a hostile link points
//! anywhere. Files are therefore opened with `openat2(RESOLVE_IN_ROOT)`: every `..` and every
//! symlink, absolute or relative, is resolved as if the host root were `/`. Where the kernel
//! lacks `openat2` (before Linux 5.6, or a seccomp filter answering `ENOSYS`/`EPERM`) the same
//! resolution is done one component at a time with `O_NOFOLLOW` opens and `readlinkat`.
//!
//! Reads are bounded ([`HOST_FILE_LIMIT`]): a larger file is refused, not read whole, and
//! only regular files are read (a FIFO at `etc/os-release` cannot block the loader).

use std::ffi::OsStr;
use std::io::{self, Read as _};
use std::os::unix::ffi::OsStrExt as _;
use std::path::Path;

use rustix::fd::OwnedFd;
use rustix::fs::{FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// Largest host file read (os-release, marker files): 64 KiB.
pub const HOST_FILE_LIMIT: u64 = 64 * 1024;

/// Most symlinks followed while resolving one path (as the kernel's own limit).
const MAX_LINKS: usize = 40;

fn open_root(root: &Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Opens `rel` inside `root` with `flags` (plus `O_CLOEXEC`), resolving symlinks and `..`
/// as if `root` were `/`.
fn open_in_root(root: &Path, rel: &str, flags: OFlags) -> io::Result<OwnedFd> {
    let root_fd = open_root(root)?;
    match rustix::fs::openat2(
        &root_fd,
        rel,
        flags | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    ) {
        Err(Errno::NOSYS | Errno::PERM) => walk_in_root(&root_fd, rel, flags),
        // The kernel asks for a retry when a rename raced with the lookup.
        Err(Errno::AGAIN) => walk_in_root(&root_fd, rel, flags),
        other => Ok(other?),
    }
}

/// The fallback of [`open_in_root`]: one component at a time, never following a link with
/// the kernel's help (`O_NOFOLLOW`), links read with `readlinkat` and resolved against the
/// root (absolute) or the current directory (relative), `..` never above the root.
pub(crate) fn walk_in_root(root: &OwnedFd, rel: &str, flags: OFlags) -> io::Result<OwnedFd> {
    let mut pending: Vec<Vec<u8>> = components(rel.as_bytes());
    let mut dirs: Vec<OwnedFd> = Vec::new();
    let mut links = 0;
    while let Some(name) = pending.pop() {
        match name.as_slice() {
            b"" | b"." => continue,
            b".." => {
                dirs.pop();
                continue;
            }
            _ => {}
        }
        let name = OsStr::from_bytes(&name);
        let cur = dirs.last().unwrap_or(root);
        let fd = rustix::fs::openat(
            cur,
            name,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let kind = FileType::from_raw_mode(rustix::fs::fstat(&fd)?.st_mode);
        if kind == FileType::Symlink {
            links += 1;
            if links > MAX_LINKS {
                return Err(Errno::LOOP.into());
            }
            let target = rustix::fs::readlinkat(cur, name, Vec::new())?;
            let target = target.as_bytes();
            if target.starts_with(b"/") {
                dirs.clear();
            }
            pending.extend(components(target));
            continue;
        }
        if pending.is_empty() {
            // The last component, known not to be a link: open it for real, still refusing
            // a link swapped in meanwhile.
            return Ok(rustix::fs::openat(
                cur,
                name,
                flags | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?);
        }
        if kind != FileType::Directory {
            return Err(Errno::NOTDIR.into());
        }
        dirs.push(fd);
    }
    // The path named the root itself (or a directory reached through `..`).
    Err(Errno::ISDIR.into())
}

/// Path components in reverse order (a stack: the first component is popped first).
fn components(path: &[u8]) -> Vec<Vec<u8>> {
    path.split(|&b| b == b'/')
        .rev()
        .map(<[u8]>::to_vec)
        .collect()
}

/// Reads a regular file of the host, `rel` resolved inside `root`, refusing anything larger
/// than `limit` bytes.
pub fn read_host_file(root: &Path, rel: &str, limit: u64) -> io::Result<Vec<u8>> {
    let fd = open_in_root(
        root,
        rel,
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY,
    )?;
    read_bounded(fd, limit)
}

fn read_bounded(fd: OwnedFd, limit: u64) -> io::Result<Vec<u8>> {
    let stat = rustix::fs::fstat(&fd)?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file; refused",
        ));
    }
    let mut out = Vec::new();
    std::fs::File::from(fd)
        .take(limit + 1)
        .read_to_end(&mut out)?;
    if out.len() as u64 > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {limit} bytes; refused"),
        ));
    }
    Ok(out)
}

/// Whether `rel` exists inside `root` (resolved as [`read_host_file`] does).
pub fn host_file_exists(root: &Path, rel: &str) -> bool {
    open_in_root(root, rel, OFlags::PATH).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A host root with an absolute and a relative link to its os-release, and a "container"
    /// file outside the root that a naive resolution would read.
    fn host() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("host");
        std::fs::create_dir_all(root.join("usr/lib")).unwrap();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("usr/lib/os-release"), "ID=host\n").unwrap();
        std::fs::write(dir.path().join("outside"), "ID=container\n").unwrap();
        (dir, root)
    }

    fn read_both_ways(root: &Path, rel: &str) -> Vec<io::Result<Vec<u8>>> {
        let via_openat2 = read_host_file(root, rel, HOST_FILE_LIMIT);
        let root_fd = open_root(root).unwrap();
        let via_walk = walk_in_root(&root_fd, rel, OFlags::RDONLY | OFlags::NONBLOCK)
            .and_then(|fd| read_bounded(fd, HOST_FILE_LIMIT));
        vec![via_openat2, via_walk]
    }

    #[test]
    fn links_resolve_inside_the_root() {
        let (dir, root) = host();
        // Absolute link: the host's /usr/lib/os-release, not the container's.
        symlink("/usr/lib/os-release", root.join("etc/os-release")).unwrap();
        // Relative link climbing above the root stays at the root.
        let outside = dir.path().join("outside");
        symlink("../../../../../usr/lib/os-release", root.join("etc/rel")).unwrap();
        // A link to an absolute path outside the root resolves inside it (and is missing).
        symlink(&outside, root.join("etc/escape")).unwrap();
        // A `..` path cannot climb out either.
        for result in read_both_ways(&root, "etc/os-release") {
            assert_eq!(result.unwrap(), b"ID=host\n");
        }
        for result in read_both_ways(&root, "etc/rel") {
            assert_eq!(result.unwrap(), b"ID=host\n");
        }
        for result in read_both_ways(&root, "etc/escape") {
            assert_eq!(result.unwrap_err().kind(), io::ErrorKind::NotFound);
        }
        for result in read_both_ways(&root, "../../../outside") {
            assert_eq!(result.unwrap_err().kind(), io::ErrorKind::NotFound);
        }
        assert!(host_file_exists(&root, "etc/os-release"));
        assert!(!host_file_exists(&root, "etc/escape"));
    }

    #[test]
    fn reads_are_bounded_and_regular_files_only() {
        let (_dir, root) = host();
        let big = vec![b'#'; HOST_FILE_LIMIT as usize + 1];
        std::fs::write(root.join("etc/os-release"), &big).unwrap();
        for result in read_both_ways(&root, "etc/os-release") {
            let err = result.unwrap_err();
            assert!(err.to_string().contains("larger than 65536 bytes"), "{err}");
        }
        std::fs::write(
            root.join("etc/os-release"),
            &big[..HOST_FILE_LIMIT as usize],
        )
        .unwrap();
        assert_eq!(
            read_host_file(&root, "etc/os-release", HOST_FILE_LIMIT)
                .unwrap()
                .len() as u64,
            HOST_FILE_LIMIT
        );
        // A directory is not read.
        for result in read_both_ways(&root, "etc") {
            assert!(result.is_err());
        }
        // Link loops end.
        symlink("loop", root.join("etc/loop")).unwrap();
        for result in read_both_ways(&root, "etc/loop") {
            assert!(result.is_err());
        }
    }
}
