//! Pushes a file as a Falco rulesfile or plugin artifact (Falco's media types), for the demo and
//! manual tests without other tools:
//!
//! ```text
//! cargo run -p falco-artifact-operator --example push_artifact -- \
//!     127.0.0.1:5000/falco/rules:1 rulesfile falco_rules.yaml [--plain-http]
//! ```
//!
//! Credentials, if the registry needs them, come from `REGISTRY_USERNAME`/`REGISTRY_PASSWORD`.

use anyhow::{Context, bail};
use falco_artifact_operator::oci::{
    PLUGIN_CONFIG_MEDIA_TYPE, PLUGIN_LAYER_MEDIA_TYPE, RULESFILE_CONFIG_MEDIA_TYPE,
    RULESFILE_LAYER_MEDIA_TYPE,
};
use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let plain_http = args.iter().any(|a| a == "--plain-http");
    let positional: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let [reference, kind, file] = positional[..] else {
        bail!("usage: push_artifact <registry/repo:tag> <rulesfile|plugin> <file> [--plain-http]");
    };
    let (config_type, layer_type) = match kind.as_str() {
        "rulesfile" => (RULESFILE_CONFIG_MEDIA_TYPE, RULESFILE_LAYER_MEDIA_TYPE),
        "plugin" => (PLUGIN_CONFIG_MEDIA_TYPE, PLUGIN_LAYER_MEDIA_TYPE),
        other => bail!("unknown kind {other:?}: rulesfile or plugin"),
    };
    let data = std::fs::read(file).with_context(|| format!("reading {file}"))?;
    let name = std::path::Path::new(file)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("artifact");
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::default(),
    ));
    let mut header = tar::Header::new_gnu();
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    builder.append_data(&mut header, name, data.as_slice())?;
    let layer = builder.into_inner()?.finish()?;

    let reference: Reference = reference.parse().context("reference")?;
    let protocol = if plain_http {
        ClientProtocol::HttpsExcept(vec![reference.registry().to_owned()])
    } else {
        ClientProtocol::Https
    };
    let client = Client::new(ClientConfig {
        protocol,
        ..ClientConfig::default()
    });
    let auth = match (
        std::env::var("REGISTRY_USERNAME"),
        std::env::var("REGISTRY_PASSWORD"),
    ) {
        (Ok(u), Ok(p)) => RegistryAuth::Basic(u, p),
        _ => RegistryAuth::Anonymous,
    };
    let response = client
        .push(
            &reference,
            &[ImageLayer::new(layer, layer_type.to_owned(), None)],
            Config::new(b"{}".to_vec(), config_type.to_owned(), None),
            &auth,
            None,
        )
        .await
        .context("push")?;
    println!("{}", response.manifest_url);
    Ok(())
}
