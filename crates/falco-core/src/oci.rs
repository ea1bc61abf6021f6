//! OCI image references (`registry/repository:tag@digest`), parsed by hand.
//!
//! The grammar is distribution's (`reference/regexp.go`) with Docker's normalisation of the
//! registry (`reference/normalize.go`). `oci-spec` parses the same grammar with a regular
//! expression whose Unicode classes compile to a multi-megabyte automaton on first use: about
//! 25 ms of CPU in every process that parses one reference, which was most of the time of a
//! one-shot `falco-artifact-operator pull`. This parser does no allocation beyond the result.
//! It is also stricter where registries are: tags are ASCII (`[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`).

use std::fmt;

/// Docker Hub's registry name, used when a reference names none.
pub const DOCKER_HUB: &str = "docker.io";
/// The tag of a reference that names neither a tag nor a digest.
pub const DEFAULT_TAG: &str = "latest";
/// Longest repository name accepted (as distribution).
pub const NAME_MAX: usize = 255;

/// A parsed reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageReference {
    /// Registry host with optional port, e.g. `ghcr.io` or `127.0.0.1:5000`.
    pub registry: String,
    /// Repository path, e.g. `falcosecurity/rules/falco-rules`.
    pub repository: String,
    /// Tag; [`DEFAULT_TAG`] when neither a tag nor a digest was given.
    pub tag: Option<String>,
    /// Digest, `algorithm:hex`.
    pub digest: Option<String>,
}

/// Why a reference was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReferenceError {
    /// The reference is empty.
    Empty,
    /// The registry part is not a host name with an optional port.
    Registry(String),
    /// A repository path component is not lower-case letters and digits with separators.
    Repository(String),
    /// The repository name is longer than [`NAME_MAX`].
    NameTooLong(usize),
    /// The tag is not 1–128 of `[A-Za-z0-9_.-]`, starting with no `.` or `-`.
    Tag(String),
    /// The digest is not `algorithm:hex` with the length of the algorithm.
    Digest(String),
}

impl fmt::Display for ReferenceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => write!(f, "the reference is empty"),
            Self::Registry(r) => write!(f, "invalid registry {r:?}: expected host[:port]"),
            Self::Repository(c) => write!(
                f,
                "invalid repository path component {c:?}: lower-case letters and digits, separated by '.', '_', '__' or dashes"
            ),
            Self::NameTooLong(n) => write!(
                f,
                "the repository name is {n} characters long (at most {NAME_MAX})"
            ),
            Self::Tag(t) => write!(
                f,
                "invalid tag {t:?}: 1 to 128 of letters, digits, '_', '.' and '-', not starting with '.' or '-'"
            ),
            Self::Digest(d) => write!(
                f,
                "invalid digest {d:?}: expected sha256:<64 hex>, sha384:<96 hex> or sha512:<128 hex>"
            ),
        }
    }
}

impl std::error::Error for ReferenceError {}

impl ImageReference {
    /// `registry/repository[:tag][@digest]`.
    pub fn whole(&self) -> String {
        let mut s = format!("{}/{}", self.registry, self.repository);
        if let Some(tag) = &self.tag {
            s.push(':');
            s.push_str(tag);
        }
        if let Some(digest) = &self.digest {
            s.push('@');
            s.push_str(digest);
        }
        s
    }
}

impl std::str::FromStr for ImageReference {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Self, ReferenceError> {
        parse(s)
    }
}

/// Parses `s` (see the module documentation).
pub fn parse(s: &str) -> Result<ImageReference, ReferenceError> {
    if s.is_empty() {
        return Err(ReferenceError::Empty);
    }
    let (rest, digest) = match s.split_once('@') {
        Some((rest, digest)) => (rest, Some(check_digest(digest)?)),
        None => (s, None),
    };
    // A tag follows the last ':' after the last '/' (a ':' before it is a registry port).
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => {
            let at = last_slash + i;
            (&rest[..at], Some(check_tag(&rest[at + 1..])?))
        }
        None => (rest, None),
    };
    let (registry, repository) = split_registry(name);
    if !registry.is_empty() {
        check_registry(registry)?;
    }
    for component in repository.split('/') {
        check_component(component)?;
    }
    let registry = match registry {
        "" | "index.docker.io" => DOCKER_HUB,
        r => r,
    };
    let repository = if registry == DOCKER_HUB && !repository.contains('/') {
        format!("library/{repository}")
    } else {
        repository.to_owned()
    };
    if repository.len() > NAME_MAX {
        return Err(ReferenceError::NameTooLong(repository.len()));
    }
    let tag = match (tag, &digest) {
        (None, None) => Some(DEFAULT_TAG.to_owned()),
        (tag, _) => tag.map(str::to_owned),
    };
    Ok(ImageReference {
        registry: registry.to_owned(),
        repository,
        tag,
        digest: digest.map(str::to_owned),
    })
}

/// Docker's rule: the first component is a registry when it contains '.' or ':', is
/// `localhost`, or has an upper-case letter (repositories cannot). `""` when there is none.
fn split_registry(name: &str) -> (&str, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.bytes().any(|b| b.is_ascii_uppercase()) =>
        {
            (first, rest)
        }
        _ => ("", name),
    }
}

/// `host[:port]`: dot-separated labels of letters, digits and inner dashes.
fn check_registry(registry: &str) -> Result<(), ReferenceError> {
    let bad = || ReferenceError::Registry(registry.to_owned());
    let (host, port) = match registry.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (registry, None),
    };
    if let Some(port) = port
        && (port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(bad());
    }
    let label_ok = |l: &str| {
        let b = l.as_bytes();
        !b.is_empty()
            && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
            && b[0] != b'-'
            && b[b.len() - 1] != b'-'
    };
    if host.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(bad())
    }
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn check_component(c: &str) -> Result<(), ReferenceError> {
    let bad = || ReferenceError::Repository(c.to_owned());
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return Err(bad());
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: '.', '_', '__' or one or more '-'.
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = matches!(sep, "." | "_" | "__") || sep.bytes().all(|x| x == b'-');
        if !ok {
            return Err(bad());
        }
    }
    Ok(())
}

/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn check_tag(tag: &str) -> Result<&str, ReferenceError> {
    let b = tag.as_bytes();
    let word = |x: u8| x.is_ascii_alphanumeric() || x == b'_';
    let ok = !b.is_empty()
        && b.len() <= 128
        && word(b[0])
        && b.iter().all(|&x| word(x) || x == b'.' || x == b'-');
    if ok {
        Ok(tag)
    } else {
        Err(ReferenceError::Tag(tag.to_owned()))
    }
}

/// `sha256:<64 hex>`, `sha384:<96 hex>` or `sha512:<128 hex>`.
fn check_digest(digest: &str) -> Result<&str, ReferenceError> {
    let ok = match digest.split_once(':') {
        Some((algorithm, hex)) => {
            let len = match algorithm {
                "sha256" => 64,
                "sha384" => 96,
                "sha512" => 128,
                _ => 0,
            };
            len > 0 && hex.len() == len && hex.bytes().all(|x| x.is_ascii_hexdigit())
        }
        None => false,
    };
    if ok {
        Ok(digest)
    } else {
        Err(ReferenceError::Digest(digest.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn parts(s: &str) -> (String, String, Option<String>, Option<String>) {
        let r = parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        (r.registry, r.repository, r.tag, r.digest)
    }

    fn some(s: &str) -> Option<String> {
        Some(s.to_owned())
    }

    #[test]
    fn registries_repositories_tags_and_digests() {
        assert_eq!(
            parts("ghcr.io/falcosecurity/rules/falco-rules:4"),
            (
                "ghcr.io".into(),
                "falcosecurity/rules/falco-rules".into(),
                some("4"),
                None
            )
        );
        assert_eq!(
            parts("127.0.0.1:5000/bench/rules:1"),
            (
                "127.0.0.1:5000".into(),
                "bench/rules".into(),
                some("1"),
                None
            )
        );
        assert_eq!(
            parts("localhost/rules"),
            ("localhost".into(), "rules".into(), some("latest"), None)
        );
        assert_eq!(
            parts("registry:5000/rules"),
            ("registry:5000".into(), "rules".into(), some("latest"), None)
        );
        assert_eq!(
            parts(&format!("ghcr.io/a/b@{SHA}")),
            ("ghcr.io".into(), "a/b".into(), None, some(SHA))
        );
        assert_eq!(
            parts(&format!("ghcr.io/a/b:v1.2_rc-3@{SHA}")),
            ("ghcr.io".into(), "a/b".into(), some("v1.2_rc-3"), some(SHA))
        );
        assert_eq!(
            parts("Registry/a"),
            ("Registry".into(), "a".into(), some("latest"), None)
        );
    }

    #[test]
    fn docker_hub_is_normalised() {
        assert_eq!(
            parts("falco"),
            (
                "docker.io".into(),
                "library/falco".into(),
                some("latest"),
                None
            )
        );
        assert_eq!(
            parts("falcosecurity/falco:0.42.0"),
            (
                "docker.io".into(),
                "falcosecurity/falco".into(),
                some("0.42.0"),
                None
            )
        );
        assert_eq!(
            parts("index.docker.io/falco"),
            (
                "docker.io".into(),
                "library/falco".into(),
                some("latest"),
                None
            )
        );
    }

    #[test]
    fn separators_follow_the_grammar() {
        for ok in ["a.b/c", "a_b", "a__b", "a---b", "a-b.c_d"] {
            assert!(parse(&format!("r.io/{ok}")).is_ok(), "{ok}");
        }
        for bad in [
            "a..b", "a___b", "-a", "a-", "a_-b", "A", "a b", "a//b", "", "a/",
        ] {
            assert!(
                matches!(
                    parse(&format!("r.io/{bad}")),
                    Err(ReferenceError::Repository(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn bad_references_say_which_part_is_wrong() {
        assert_eq!(parse(""), Err(ReferenceError::Empty));
        assert!(matches!(parse("r.io/a:"), Err(ReferenceError::Tag(_))));
        assert!(matches!(parse("r.io/a:.x"), Err(ReferenceError::Tag(_))));
        assert!(matches!(parse("r.io/a:tag!"), Err(ReferenceError::Tag(_))));
        assert!(matches!(
            parse(&format!("r.io/a:{}", "x".repeat(129))),
            Err(ReferenceError::Tag(_))
        ));
        assert!(parse(&format!("r.io/a:{}", "x".repeat(128))).is_ok());
        assert!(matches!(parse("r.io/a:tägg"), Err(ReferenceError::Tag(_))));
        assert!(matches!(
            parse("r.io/a@sha256:abc"),
            Err(ReferenceError::Digest(_))
        ));
        assert!(matches!(
            parse("r.io/a@md5:0123456789abcdef0123456789abcdef"),
            Err(ReferenceError::Digest(_))
        ));
        assert!(matches!(parse("r.io/a@"), Err(ReferenceError::Digest(_))));
        assert!(matches!(
            parse("r.io:x/a"),
            Err(ReferenceError::Registry(_))
        ));
        assert!(matches!(parse("r.io:/a"), Err(ReferenceError::Registry(_))));
        assert!(matches!(parse("-r.io/a"), Err(ReferenceError::Registry(_))));
        assert!(matches!(parse("r..io/a"), Err(ReferenceError::Registry(_))));
        let long = format!("r.io/{}", "a/".repeat(128) + "a");
        assert!(matches!(
            parse(&long),
            Err(ReferenceError::NameTooLong(257))
        ));
        let e = parse("r.io/A/b").unwrap_err().to_string();
        assert!(e.contains("\"A\""), "{e}");
    }

    #[test]
    fn whole_round_trips() {
        for s in [
            "ghcr.io/falcosecurity/rules/falco-rules:4",
            "127.0.0.1:5000/bench/rules:1",
            &format!("ghcr.io/a/b:1@{SHA}"),
            &format!("ghcr.io/a/b@{SHA}"),
        ] {
            assert_eq!(parse(s).unwrap().whole(), s);
        }
        assert_eq!(
            parse("falco").unwrap().whole(),
            "docker.io/library/falco:latest"
        );
    }
}
