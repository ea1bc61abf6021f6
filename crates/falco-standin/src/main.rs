//! `falco-standin`: what the test node runs where Falco would run. **It is not Falco.**
//!
//! Falco needs a kernel driver and images from registries these machines cannot reach, so the
//! end-to-end tests run this in Falco's container instead, to see what Falco would see:
//!
//! - `falco-standin falco [args…]` prints that it is a stand-in, then every file Falco would
//!   load (`/etc/falco/falco.yaml`, `*.yaml`/`*.yml` in `config.d` and `rules.d`, `*.so` in
//!   the plugins folder) with its SHA-256 and size, and again whenever one appears, changes or
//!   goes, polling twice a second (`start-up files listed` ends the first listing). It answers `200 ok` on Falco's web server port (8765, or
//!   `FALCO_STANDIN_PORT`) so the pod's probes pass, and exits 0 on SIGTERM.
//! - `falco-standin pause` is the pod sandbox image: it waits for SIGTERM or SIGINT.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::signal::unix::{SignalKind, signal};

const BANNER: &str = "falco-standin: a stand-in for Falco in tests; it is NOT Falco";
const CONFIG: &str = "/etc/falco/falco.yaml";
const FOLDERS: [(&str, &[&str]); 3] = [
    ("/etc/falco/config.d", &["yaml", "yml"]),
    ("/etc/falco/rules.d", &["yaml", "yml"]),
    ("/usr/share/falco/plugins", &["so"]),
];

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("pause") => {
            wait_for_stop().await;
            std::process::ExitCode::SUCCESS
        }
        Some("falco") => falco(&args[1..]).await,
        Some("--help" | "-h") => {
            println!("usage: falco-standin falco [args…] | falco-standin pause\n{BANNER}");
            std::process::ExitCode::SUCCESS
        }
        _ => {
            eprintln!("usage: falco-standin falco [args…] | falco-standin pause\n{BANNER}");
            std::process::ExitCode::from(2)
        }
    }
}

async fn wait_for_stop() {
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers, wait forever: the runtime's SIGKILL still stops it.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

async fn falco(args: &[String]) -> std::process::ExitCode {
    println!("{BANNER}");
    println!("falco-standin: started with arguments {args:?}");
    let port: u16 = std::env::var("FALCO_STANDIN_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(8765);
    let listener = match tokio::net::TcpListener::bind(("0.0.0.0", port)).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("falco-standin: cannot listen on port {port}: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    println!("falco-standin: answering health checks on port {port}");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0_u8; 1024];
                let _ = stream.read(&mut buf).await;
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: close\r\n\r\nok\n",
                    )
                    .await;
            });
        }
    });
    let mut seen: BTreeMap<PathBuf, String> = BTreeMap::new();
    let mut first = true;
    let stop = wait_for_stop();
    tokio::pin!(stop);
    loop {
        let now = scan();
        for (path, summary) in &now {
            if seen.get(path) != Some(summary) {
                println!("falco-standin: would load {} {summary}", path.display());
            }
        }
        for path in seen.keys() {
            if !now.contains_key(path) {
                println!("falco-standin: would no longer load {}", path.display());
            }
        }
        seen = now;
        if std::mem::take(&mut first) {
            // What Falco would have read at start-up ends here.
            println!("falco-standin: start-up files listed");
        }
        tokio::select! {
            () = &mut stop => {
                println!("falco-standin: stopping on signal");
                return std::process::ExitCode::SUCCESS;
            }
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

/// Every file Falco would load now, with `sha256=<hex> size=<n>`.
fn scan() -> BTreeMap<PathBuf, String> {
    let mut files = BTreeMap::new();
    let mut add = |path: &Path| {
        if let Ok(data) = std::fs::read(path) {
            let summary = format!(
                "sha256={} size={}",
                hex::encode(Sha256::digest(&data)),
                data.len()
            );
            files.insert(path.to_owned(), summary);
        }
    };
    add(Path::new(CONFIG));
    for (folder, extensions) in FOLDERS {
        let Ok(entries) = std::fs::read_dir(folder) else {
            continue;
        };
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        paths.sort();
        for path in paths {
            let loads = path.is_file()
                && path
                    .extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| extensions.contains(&e));
            if loads {
                add(&path);
            }
        }
    }
    files
}
