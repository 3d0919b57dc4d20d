//! A value that must never be shown: a password, a key's password, a token.
//!
//! [`Secret`] has no `Display`, and its `Debug` prints `***`, so neither a log line, an error,
//! `/status` nor a panic message can carry it by accident; code that needs the bytes asks
//! [`Secret::expose`] by name. A value written `@/path` is read from that file (one trailing
//! newline dropped), so a secret need not sit in the environment or a config file.

use std::fmt;
use std::path::Path;

#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// A secret taken apart from a larger one (a URL's password, `USER:PASSWORD`).
    pub fn new(value: String) -> Secret {
        Secret(value)
    }

    /// `raw` as given, or the contents of the file it names when it starts with `@`. The error
    /// names the file, never a value.
    pub fn parse(raw: &str) -> Result<Secret, String> {
        match raw.strip_prefix('@') {
            Some(path) => Self::from_file(Path::new(path)),
            None => Ok(Secret(raw.to_string())),
        }
    }

    /// The contents of `path`, one trailing newline (`\n` or `\r\n`) dropped.
    pub fn from_file(path: &Path) -> Result<Secret, String> {
        let mut text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if text.ends_with('\n') {
            text.pop();
            if text.ends_with('\r') {
                text.pop();
            }
        }
        Ok(Secret(text))
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// `raw` as it may be shown: a URL's password (`scheme://USER:PASSWORD@host`) as `***`.
pub fn url_shown(raw: &str) -> String {
    let Some((scheme, rest)) = raw.split_once("://") else {
        return raw.to_string();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return raw.to_string();
    };
    let user = rest[..at].split(':').next().unwrap_or_default();
    let masked = if rest[..at].contains(':') {
        format!("{user}:***")
    } else {
        user.to_string()
    };
    format!("{scheme}://{masked}{}", &rest[at..])
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_shows_itself_and_reads_files() {
        let s = Secret::parse("hunter2").unwrap();
        assert_eq!(format!("{s:?}"), "***");
        assert_eq!(format!("{:?}", Some(&s)), "Some(***)");
        assert_eq!(s.expose(), "hunter2");
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        std::fs::write(&f, "from-file\r\n").unwrap();
        let s = Secret::parse(&format!("@{}", f.display())).unwrap();
        assert_eq!(s.expose(), "from-file");
        let e = Secret::parse("@/nonexistent/pw").unwrap_err();
        assert!(e.contains("/nonexistent/pw"), "{e}");
    }

    #[test]
    fn urls_are_shown_without_their_password() {
        for (raw, shown) in [
            (
                "https://key:s3cr@t@reg.example/x?a=b@c",
                "https://key:***@reg.example/x?a=b@c",
            ),
            (
                "postgres://u:pw@db:5432/cat",
                "postgres://u:***@db:5432/cat",
            ),
            ("https://token@reg.example", "https://token@reg.example"),
            ("https://reg.example/a@b", "https://reg.example/a@b"),
            ("not a url", "not a url"),
        ] {
            assert_eq!(url_shown(raw), shown, "{raw}");
        }
    }
}
