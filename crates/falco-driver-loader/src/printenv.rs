//! `printenv`: falcoctl's `KEY="value"` lines, plus `DRIVER_FILENAME` and `DRIVER_URLS`.

use std::fmt::Write as _;

use falco_core::driver::redact_url;

use crate::Result;
use crate::resolve::Resolved;

/// The lines `printenv` prints, in falcoctl's order, then `DRIVER_FILENAME` and
/// `DRIVER_URLS` (one URL per repository, `;`-separated; both empty for a driver without
/// artifact). Values are quoted as Go's `%q`. Credentials in repository URLs are shown as
/// `***` (this output often ends up in container logs).
pub fn render(r: &Resolved) -> Result<String> {
    let s = &r.settings;
    let redacted = |urls: &[String]| -> Vec<String> {
        urls.iter().map(|u| redact_url(u).into_owned()).collect()
    };
    let pairs = [
        ("DRIVER", r.driver.as_str().to_owned()),
        ("DRIVERS_REPO", redacted(&s.repos).join(", ")),
        ("DRIVER_VERSION", s.version.clone()),
        ("DRIVER_NAME", s.name.clone()),
        ("HOST_ROOT", s.host_root.to_string_lossy().into_owned()),
        ("TARGET_ID", r.distro.target_id.clone()),
        ("ARCH", s.arch.as_str().to_owned()),
        ("KERNEL_RELEASE", r.kernel_release.to_string()),
        ("KERNEL_VERSION", r.kernel_version.clone()),
        ("FIXED_KERNEL_RELEASE", r.fixed_release.to_string()),
        ("FIXED_KERNEL_VERSION", r.fixed_version.clone()),
        ("DRIVER_FILENAME", r.filename()?.unwrap_or_default()),
        ("DRIVER_URLS", redacted(&r.urls()?).join(";")),
    ];
    let mut out = String::new();
    for (key, value) in pairs {
        let _ = writeln!(out, "{key}={}", go_quote(&value));
    }
    Ok(out)
}

/// Go's `strconv.Quote` for the characters a value can contain.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{07}' => out.push_str("\\a"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0b}' => out.push_str("\\v"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_like_go() {
        assert_eq!(go_quote("a b"), "\"a b\"");
        assert_eq!(go_quote("#1 \"x\"\\"), "\"#1 \\\"x\\\"\\\\\"");
        assert_eq!(go_quote("a\nb\u{1}"), "\"a\\nb\\x01\"");
        assert_eq!(go_quote("26~22.04.1"), "\"26~22.04.1\"");
    }
}
