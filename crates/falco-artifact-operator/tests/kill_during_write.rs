//! A writer SIGKILLed in the middle of a write leaves the previous version (or a complete newer
//! one), never half a file, and the store opens cleanly afterwards.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use falco_artifact_operator::store::{ArtifactKey, Dirs, Kind, Medium, Store, staging_dir};

const DIR_ENV: &str = "FALCO_ARTIFACT_KILL_TEST_DIR";
const SIZE: usize = 32 * 1024 * 1024;

fn dirs(root: &Path) -> Dirs {
    Dirs {
        rules: root.join("rules.d"),
        config: root.join("config.d"),
        plugins: root.join("plugins"),
        state: root.join("state"),
    }
}

fn key() -> ArtifactKey {
    ArtifactKey::new(Kind::Rulesfile, "big", Medium::Oci)
}

/// The child side: rewrites the file forever with versions 2, 3, … (each byte = version).
#[test]
fn child_writer() {
    let Ok(root) = std::env::var(DIR_ENV) else {
        return;
    };
    let mut store = Store::open(dirs(Path::new(&root))).unwrap();
    for version in (2u8..=255).cycle() {
        store
            .put(&key(), 50, &vec![version; SIZE], 0o644, None)
            .unwrap();
    }
}

#[test]
fn kill_during_write_keeps_a_whole_file() {
    let tmp = tempfile::tempdir().unwrap();
    let d = dirs(tmp.path());
    let path = {
        let mut store = Store::open(d.clone()).unwrap();
        store
            .put(&key(), 50, &vec![1u8; SIZE], 0o644, None)
            .unwrap();
        store.get(&key()).unwrap().path.clone()
    };
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_writer", "--nocapture", "--test-threads=1"])
        .env(DIR_ENV, tmp.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the child is in the middle of writing a temporary file, then kill it.
    let deadline = Instant::now() + Duration::from_secs(60);
    let in_progress = || {
        std::fs::read_dir(staging_dir(&d.rules))
            .unwrap()
            .filter_map(Result::ok)
            .any(|e| e.metadata().map(|m| m.len() > 0).unwrap_or(false))
    };
    while !in_progress() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the writer exited early"
        );
        assert!(
            Instant::now() < deadline,
            "the writer never started a write"
        );
        std::thread::yield_now();
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let data = std::fs::read(&path).unwrap();
    assert_eq!(data.len(), SIZE, "half a file");
    assert!(data.iter().all(|b| *b == data[0]), "mixed versions");
    // Reopening removes the debris and keeps the file.
    let store = Store::open(d.clone()).unwrap();
    assert_eq!(store.get(&key()).unwrap().path, path);
    let mut names: Vec<String> = std::fs::read_dir(&d.rules)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, [".falco-artifact-tmp", "50-01-big-oci.yaml"]);
    assert_eq!(std::fs::read_dir(staging_dir(&d.rules)).unwrap().count(), 0);
    assert_eq!(std::fs::read(&path).unwrap(), data);
}
