//! The checks and encodings every derived name goes through before it becomes a file name,
//! a cache path or a URL.
//!
//! The target id, kernel release and kernel version come from the host (`os-release`,
//! `uname -r`, `uname -v`) and the driver name and version from flags or the environment:
//! none of them may steer a path. [`check_segment`] refuses a value holding `/`, `..` or NUL
//! (a kernel version `#1/../../../../pwn SMP` on Ubuntu would otherwise put the driver at
//! `$HOME/pwn.ko`, as falcoctl does). [`path_escape`] percent-encodes a URL path segment so
//! that `#`, `?`, `%` or a space can never cut or reshape a request, and [`redact_url`] keeps
//! credentials in a repository URL out of logs and error messages.

use std::borrow::Cow;

use super::DriverError;

/// Refuses a derived name segment that could leave its directory: one holding `/`, `..` or
/// NUL. `field` names the value in the error (`kernel version`, `target`, …).
pub fn check_segment(field: &'static str, value: &str) -> Result<(), DriverError> {
    let bad = if value.contains('/') {
        Some("/")
    } else if value.contains("..") {
        Some("..")
    } else if value.contains('\0') {
        Some("NUL")
    } else {
        None
    };
    match bad {
        Some(what) => Err(DriverError::UnsafeName {
            field,
            value: value.to_owned(),
            what,
        }),
        None => Ok(()),
    }
}

/// Refuses a value used as a whole directory name (the driver version in the cache path):
/// [`check_segment`], and neither empty nor `.`.
pub fn check_dir_segment(field: &'static str, value: &str) -> Result<(), DriverError> {
    check_segment(field, value)?;
    if value.is_empty() || value == "." {
        return Err(DriverError::UnsafeName {
            field,
            value: value.to_owned(),
            what: if value.is_empty() { "nothing" } else { "." },
        });
    }
    Ok(())
}

/// Percent-encodes one URL path segment: everything but `A-Za-z0-9-._~` and the path-safe
/// `$&+=:@` is encoded as `%XX` (uppercase hex). This is Go's `url.PathEscape` minus `,` and
/// `;`, so the file names falcoctl puts in URLs unescaped (`…1~bpo12+1…`) stay byte-identical,
/// while `#`, `?`, `%`, `/`, spaces and control characters cannot cut or reshape a request.
pub fn path_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z'
            | b'a'..=b'z'
            | b'0'..=b'9'
            | b'-'
            | b'.'
            | b'_'
            | b'~'
            | b'$'
            | b'&'
            | b'+'
            | b'='
            | b':'
            | b'@' => out.push(char::from(b)),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A URL with its userinfo (`user:password@`) replaced by `***@`, for logs and errors.
/// A URL without credentials is returned unchanged.
pub fn redact_url(url: &str) -> Cow<'_, str> {
    let Some(scheme_end) = url.find("://") else {
        return Cow::Borrowed(url);
    };
    let authority_start = scheme_end + 3;
    let rest = &url[authority_start..];
    let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_len].rfind('@') {
        Some(at) => Cow::Owned(format!(
            "{}***{}",
            &url[..authority_start],
            &url[authority_start + at..]
        )),
        None => Cow::Borrowed(url),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traversal_and_nul_are_refused_with_the_field_named() {
        for (value, what) in [
            ("1/../../../../pwn", "/"),
            ("a..b", ".."),
            ("..", ".."),
            ("a\0b", "NUL"),
        ] {
            let err = check_segment("kernel version", value).unwrap_err();
            let line = err.to_string();
            assert!(line.contains("kernel version"), "{line}");
            assert!(line.contains(what), "{line}");
            assert!(!line.contains('\n'), "one line: {line}");
            assert!(matches!(err, DriverError::UnsafeName { .. }));
        }
        for ok in [
            "26~22.04.1",
            "6.5.3-1~bpo12+1-rt-amd64",
            "ubuntu-aws",
            "8.0.0+driver",
        ] {
            check_segment("x", ok).unwrap();
        }
        assert!(check_dir_segment("driver version", "").is_err());
        assert!(check_dir_segment("driver version", ".").is_err());
        check_dir_segment("driver version", "8.0.0+driver").unwrap();
    }

    #[test]
    fn path_segments_are_escaped_but_falcoctl_names_stay_identical() {
        assert_eq!(
            path_escape("falco_debian_6.5.3-1~bpo12+1-rt-amd64_1.ko"),
            "falco_debian_6.5.3-1~bpo12+1-rt-amd64_1.ko"
        );
        assert_eq!(
            path_escape("falco_ubuntu # comment_5.0.0_26.ko"),
            "falco_ubuntu%20%23%20comment_5.0.0_26.ko"
        );
        assert_eq!(path_escape("a?b%c/d;e,f"), "a%3Fb%25c%2Fd%3Be%2Cf");
        assert_eq!(path_escape("\u{e9}"), "%C3%A9");
    }

    #[test]
    fn credentials_are_redacted() {
        assert_eq!(
            redact_url("https://user:secret@repo.example.com/driver/1/x86_64/f.ko"),
            "https://***@repo.example.com/driver/1/x86_64/f.ko"
        );
        assert_eq!(redact_url("http://tok@h:8080"), "http://***@h:8080");
        // An @ in the path is not userinfo.
        assert_eq!(redact_url("https://h/driver/a@b"), "https://h/driver/a@b");
        assert!(matches!(
            redact_url("https://download.falco.org/driver"),
            Cow::Borrowed(_)
        ));
        assert_eq!(redact_url("not a url"), "not a url");
    }
}
