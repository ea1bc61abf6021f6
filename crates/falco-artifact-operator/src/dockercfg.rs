//! Registry credentials from image-pull Secrets (`kubernetes.io/dockerconfigjson` and the
//! legacy `kubernetes.io/dockercfg`), matched to a registry the way the kubelet's keyring does:
//!
//! - a key is a registry, optionally with a scheme, a port and a path
//!   (`ghcr.io`, `https://index.docker.io/v1/`, `registry.local:5000/team`, `*.azurecr.io`);
//! - it matches when the host has the same number of labels and each label matches (a label of
//!   the key may be a glob such as `*`), the ports are equal (none on both sides counts), and
//!   the key's path is a prefix of the repository path;
//! - the longest matching key wins (the most specific);
//! - `index.docker.io`, `registry-1.docker.io` and `docker.io` are one registry.
//!
//! An entry gives `auth` (base64 `user:password`) or `username` and `password`, or a
//! `registrytoken` (a bearer token). `identitytoken` (an OAuth refresh token) is refused with
//! a clear error: no exchange is implemented.

use std::collections::BTreeMap;

use base64::Engine;
use serde::Deserialize;

use crate::oci::Auth;

/// Secret type of `~/.docker/config.json` content (key `.dockerconfigjson`).
pub const DOCKER_CONFIG_JSON_TYPE: &str = "kubernetes.io/dockerconfigjson";
/// Key of [`DOCKER_CONFIG_JSON_TYPE`] Secrets.
pub const DOCKER_CONFIG_JSON_KEY: &str = ".dockerconfigjson";
/// Secret type of the legacy `~/.dockercfg` content (key `.dockercfg`).
pub const DOCKERCFG_TYPE: &str = "kubernetes.io/dockercfg";
/// Key of [`DOCKERCFG_TYPE`] Secrets.
pub const DOCKERCFG_KEY: &str = ".dockercfg";

#[derive(Debug, Default, Deserialize)]
struct Entry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    registrytoken: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ConfigJson {
    #[serde(default)]
    auths: BTreeMap<String, Entry>,
}

/// The credentials `content` holds for `host` and `path` (the repository path after the
/// host, e.g. `falco/rules`). `legacy` selects the `.dockercfg` layout (no `auths` wrapper).
/// `Ok(None)`: no key matches. `Err`: the content or the matching entry is unusable.
pub fn credentials(
    content: &[u8],
    legacy: bool,
    host: &str,
    path: &str,
) -> Result<Option<Auth>, String> {
    let auths: BTreeMap<String, Entry> = if legacy {
        serde_json::from_slice(content).map_err(|e| format!("not a .dockercfg document: {e}"))?
    } else {
        serde_json::from_slice::<ConfigJson>(content)
            .map_err(|e| format!("not a .dockerconfigjson document: {e}"))?
            .auths
    };
    let best = auths
        .iter()
        .filter(|(key, _)| matches(key, host, path))
        .max_by_key(|(key, _)| normalise(key).len());
    let Some((key, entry)) = best else {
        return Ok(None);
    };
    entry_auth(entry)
        .map(Some)
        .map_err(|e| format!("{key:?}: {e}"))
}

/// Registry keys present, for an error message.
pub fn keys(content: &[u8], legacy: bool) -> Vec<String> {
    if legacy {
        serde_json::from_slice::<BTreeMap<String, serde_json::Value>>(content)
            .map(|m| m.into_keys().collect())
            .unwrap_or_default()
    } else {
        serde_json::from_slice::<ConfigJson>(content)
            .map(|c| c.auths.into_keys().collect())
            .unwrap_or_default()
    }
}

fn entry_auth(entry: &Entry) -> Result<Auth, String> {
    let non_empty = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
    if let (Some(username), Some(password)) =
        (non_empty(&entry.username), non_empty(&entry.password))
    {
        return Ok(Auth::Basic { username, password });
    }
    if let Some(auth) = non_empty(&entry.auth) {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|e| format!("auth is not base64: {e}"))?;
        let decoded = String::from_utf8(decoded).map_err(|_| "auth is not UTF-8".to_owned())?;
        let (username, password) = decoded
            .split_once(':')
            .ok_or_else(|| "auth is not base64 of user:password".to_owned())?;
        return Ok(Auth::Basic {
            username: username.to_owned(),
            password: password.to_owned(),
        });
    }
    if let Some(token) = non_empty(&entry.registrytoken) {
        return Ok(Auth::Bearer(token));
    }
    if non_empty(&entry.identitytoken).is_some() {
        return Err("identitytoken (an OAuth refresh token) is not supported; use auth, username/password or registrytoken".into());
    }
    Err("has none of auth, username/password or registrytoken".into())
}

/// Docker Hub's names are one registry.
fn canonical_host(host: &str) -> &str {
    match host {
        "index.docker.io" | "registry-1.docker.io" => "docker.io",
        other => other,
    }
}

/// The key without scheme and trailing `/`; Docker Hub's `…/v1/` path dropped.
fn normalise(key: &str) -> String {
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let key = key.trim_end_matches('/');
    match key.split_once('/') {
        Some((host, "v1" | "v2")) if canonical_host(host) == "docker.io" => host.to_owned(),
        _ => key.to_owned(),
    }
}

fn matches(key: &str, host: &str, path: &str) -> bool {
    let key = normalise(key);
    let (key_hostport, key_path) = key.split_once('/').unwrap_or((key.as_str(), ""));
    let split_port = |hp: &str| -> (String, String) {
        match hp.rsplit_once(':') {
            Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => (h.to_owned(), p.to_owned()),
            _ => (hp.to_owned(), String::new()),
        }
    };
    let (key_host, key_port) = split_port(key_hostport);
    let (host, port) = split_port(host);
    if key_port != port {
        return false;
    }
    let key_host = canonical_host(&key_host).to_ascii_lowercase();
    let host = canonical_host(&host).to_ascii_lowercase();
    let key_labels: Vec<&str> = key_host.split('.').collect();
    let labels: Vec<&str> = host.split('.').collect();
    if key_labels.len() != labels.len() || !key_labels.iter().zip(&labels).all(|(k, l)| glob(k, l))
    {
        return false;
    }
    let path = path.trim_matches('/');
    key_path.is_empty() || path == key_path || path.starts_with(&format!("{key_path}/"))
}

/// `*` matches any run of characters within one label, `?` one character.
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    fn go(p: &[char], t: &[char]) -> bool {
        match p.split_first() {
            None => t.is_empty(),
            Some(('*', rest)) => (0..=t.len()).any(|i| go(rest, &t[i..])),
            Some(('?', rest)) => !t.is_empty() && go(rest, &t[1..]),
            Some((c, rest)) => t.first() == Some(c) && go(rest, &t[1..]),
        }
    }
    go(&p, &t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(u: &str, p: &str) -> Option<Auth> {
        Some(Auth::Basic {
            username: u.into(),
            password: p.into(),
        })
    }

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn config_json_matches_by_host_port_path_and_specificity() {
        let doc = serde_json::json!({"auths": {
            "ghcr.io": {"auth": b64("any:1")},
            "https://ghcr.io/falcosecurity/": {"username": "fs", "password": "2"},
            "registry.local:5000": {"auth": b64("local:3")},
            "*.azurecr.io": {"auth": b64("azure:4")},
            "https://index.docker.io/v1/": {"auth": b64("hub:5")},
            "tokens.example": {"registrytoken": "tok"},
            "oauth.example": {"identitytoken": "refresh"},
        }})
        .to_string();
        let c = |host: &str, path: &str| credentials(doc.as_bytes(), false, host, path);
        assert_eq!(c("ghcr.io", "other/rules"), Ok(basic("any", "1")));
        assert_eq!(c("ghcr.io", "falcosecurity/rules"), Ok(basic("fs", "2")));
        // A path prefix matches whole components only.
        assert_eq!(c("ghcr.io", "falcosecurityx/rules"), Ok(basic("any", "1")));
        assert_eq!(c("registry.local:5000", "a"), Ok(basic("local", "3")));
        assert_eq!(c("registry.local", "a"), Ok(None), "ports must be equal");
        assert_eq!(c("registry.local:5001", "a"), Ok(None));
        assert_eq!(
            c("myreg.azurecr.io", "falco/rules"),
            Ok(basic("azure", "4"))
        );
        assert_eq!(c("a.myreg.azurecr.io", "x"), Ok(None), "one label per *");
        assert_eq!(c("docker.io", "falcosecurity/x"), Ok(basic("hub", "5")));
        assert_eq!(c("registry-1.docker.io", "x"), Ok(basic("hub", "5")));
        assert_eq!(
            c("tokens.example", "x"),
            Ok(Some(Auth::Bearer("tok".into())))
        );
        assert!(
            c("oauth.example", "x")
                .unwrap_err()
                .contains("identitytoken")
        );
        assert_eq!(c("quay.io", "x"), Ok(None));
    }

    #[test]
    fn legacy_dockercfg_and_bad_documents() {
        let doc =
            serde_json::json!({"http://127.0.0.1:5000/team": {"auth": b64("t:6")}}).to_string();
        assert_eq!(
            credentials(doc.as_bytes(), true, "127.0.0.1:5000", "team/rules"),
            Ok(basic("t", "6"))
        );
        assert_eq!(
            credentials(doc.as_bytes(), true, "127.0.0.1:5000", "other/rules"),
            Ok(None)
        );
        assert_eq!(keys(doc.as_bytes(), true), ["http://127.0.0.1:5000/team"]);
        assert!(credentials(b"{", false, "h", "p").is_err());
        let bad = serde_json::json!({"auths": {"h": {"auth": "!!"}}}).to_string();
        assert!(
            credentials(bad.as_bytes(), false, "h", "p")
                .unwrap_err()
                .contains("base64")
        );
        let empty = serde_json::json!({"auths": {"h": {}}}).to_string();
        assert!(credentials(empty.as_bytes(), false, "h", "p").is_err());
    }
}
