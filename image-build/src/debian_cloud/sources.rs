//! The Debian archives the cloud image is built from and keeps in its own apt sources: the
//! host apt's mirror for the suite, read from `/etc/apt/sources.list` and
//! `sources.list.d/*.{list,sources}` (one-line and deb822 formats), so a build works where only
//! that mirror is reachable. It reads configuration only; it fetches nothing.

use std::path::Path;

/// The archive used when neither the host nor `--mirror` names one for the suite.
pub const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";
/// The components the image uses.
const COMPONENTS: &str = "main";

/// One `deb` entry of the host's apt configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AptSource {
    pub uri: String,
    pub suites: Vec<String>,
}

/// The `deb` lines of a one-line `sources.list` (`deb [options] URI SUITE COMPONENT...`);
/// `deb-src` lines and comments are skipped.
pub fn parse_one_line(text: &str) -> Vec<AptSource> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut words = line.split_whitespace().peekable();
        if words.next() != Some("deb") {
            continue;
        }
        // `[arch=amd64 signed-by=...]`, possibly with spaces inside the brackets.
        if words.peek().is_some_and(|w| w.starts_with('[')) {
            for w in words.by_ref() {
                if w.ends_with(']') {
                    break;
                }
            }
        }
        if let (Some(uri), Some(suite)) = (words.next(), words.next()) {
            out.push(AptSource {
                uri: uri.trim_end_matches('/').to_string(),
                suites: vec![suite.to_string()],
            });
        }
    }
    out
}

/// The stanzas of a deb822 `.sources` file whose `Types` include `deb` and that are not
/// `Enabled: no`, one entry per URI.
pub fn parse_deb822(text: &str) -> Vec<AptSource> {
    let mut out = Vec::new();
    let mut stanza: Vec<(String, String)> = Vec::new();
    let mut flush = |stanza: &mut Vec<(String, String)>| {
        let field = |name: &str| {
            stanza
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        };
        let is_deb = field("Types").is_some_and(|t| t.split_whitespace().any(|t| t == "deb"));
        let enabled = field("Enabled").is_none_or(|e| !e.trim().eq_ignore_ascii_case("no"));
        if is_deb && enabled {
            let suites: Vec<String> = field("Suites")
                .unwrap_or("")
                .split_whitespace()
                .map(str::to_string)
                .collect();
            for uri in field("URIs").unwrap_or("").split_whitespace() {
                out.push(AptSource {
                    uri: uri.trim_end_matches('/').to_string(),
                    suites: suites.clone(),
                });
            }
        }
        stanza.clear();
    };
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        if line.trim().is_empty() {
            flush(&mut stanza);
        } else if line.starts_with([' ', '\t']) {
            // A continuation (a multi-line Signed-By key): part of the field before.
            if let Some((_, v)) = stanza.last_mut() {
                v.push('\n');
                v.push_str(line.trim());
            }
        } else if let Some((k, v)) = line.split_once(':') {
            stanza.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    flush(&mut stanza);
    out
}

/// Every `deb` entry apt on this host is configured with (`etc_apt` is normally `/etc/apt`), in
/// apt's order: `sources.list`, then `sources.list.d` by file name.
pub fn host_sources(etc_apt: &Path) -> Vec<AptSource> {
    let mut out = std::fs::read_to_string(etc_apt.join("sources.list"))
        .map(|t| parse_one_line(&t))
        .unwrap_or_default();
    let mut files: Vec<_> = std::fs::read_dir(etc_apt.join("sources.list.d"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    for path in files {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        match path.extension().and_then(|e| e.to_str()) {
            Some("list") => out.extend(parse_one_line(&text)),
            Some("sources") => out.extend(parse_deb822(&text)),
            _ => {}
        }
    }
    out
}

/// The one-line `deb` entries the image is built from and keeps: `suite` from `mirror` (or the
/// host's archive for it, or [`DEFAULT_MIRROR`]); `suite-updates` and `suite-security` where the
/// host has them (updates from the same archive as `suite` when `mirror` is given).
pub fn image_sources(host: &[AptSource], suite: &str, mirror: Option<&str>) -> Vec<String> {
    let host_uri = |s: &str| {
        host.iter()
            .find(|src| src.suites.iter().any(|x| x == s))
            .map(|src| src.uri.clone())
    };
    let main = mirror
        .map(|m| m.trim_end_matches('/').to_string())
        .or_else(|| host_uri(suite))
        .unwrap_or_else(|| DEFAULT_MIRROR.to_string());
    let mut lines = vec![format!("deb {main} {suite} {COMPONENTS}")];
    let updates = format!("{suite}-updates");
    if let Some(uri) = host_uri(&updates) {
        let uri = if mirror.is_some() { main.clone() } else { uri };
        lines.push(format!("deb {uri} {updates} {COMPONENTS}"));
    }
    let security = format!("{suite}-security");
    if let Some(uri) = host_uri(&security) {
        lines.push(format!("deb {uri} {security} {COMPONENTS}"));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEB822: &str = "Types: deb\n\
        # http://snapshot.debian.org/archive/debian/20250520T000000Z\n\
        URIs: http://deb.debian.org/debian\n\
        Suites: bookworm bookworm-updates\n\
        Components: main\n\
        Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\
        \n\
        Types: deb\n\
        URIs: http://deb.debian.org/debian-security/\n\
        Suites: bookworm-security\n\
        Components: main\n\
        \n\
        Types: deb-src\n\
        URIs: http://src.example/debian\n\
        Suites: bookworm\n\
        \n\
        Types: deb\n\
        Enabled: no\n\
        URIs: http://off.example/debian\n\
        Suites: bookworm\n";

    #[test]
    fn deb822_stanzas_give_their_uris_and_suites_skipping_sources_and_disabled() {
        let got = parse_deb822(DEB822);
        assert_eq!(
            got,
            vec![
                AptSource {
                    uri: "http://deb.debian.org/debian".into(),
                    suites: vec!["bookworm".into(), "bookworm-updates".into()],
                },
                AptSource {
                    uri: "http://deb.debian.org/debian-security".into(),
                    suites: vec!["bookworm-security".into()],
                },
            ]
        );
    }

    #[test]
    fn deb822_continuation_lines_stay_in_their_field() {
        let text = "Types: deb\nURIs: http://m/debian\nSigned-By:\n -----BEGIN PGP\n .\n -----END\nSuites: bookworm\n";
        assert_eq!(
            parse_deb822(text),
            vec![AptSource {
                uri: "http://m/debian".into(),
                suites: vec!["bookworm".into()]
            }]
        );
    }

    #[test]
    fn one_line_entries_skip_options_comments_and_deb_src() {
        let text = "# deb http://commented/debian bookworm main\n\
            deb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian/ bookworm main contrib\n\
            deb-src http://mirror.example/debian bookworm main\n\
            deb [ trusted=yes ] http://sec.example/debian-security bookworm-security main\n";
        assert_eq!(
            parse_one_line(text),
            vec![
                AptSource {
                    uri: "http://mirror.example/debian".into(),
                    suites: vec!["bookworm".into()]
                },
                AptSource {
                    uri: "http://sec.example/debian-security".into(),
                    suites: vec!["bookworm-security".into()]
                },
            ]
        );
    }

    #[test]
    fn the_image_uses_the_host_mirror_for_each_suite_it_has() {
        let host = parse_deb822(DEB822);
        assert_eq!(
            image_sources(&host, "bookworm", None),
            vec![
                "deb http://deb.debian.org/debian bookworm main",
                "deb http://deb.debian.org/debian bookworm-updates main",
                "deb http://deb.debian.org/debian-security bookworm-security main",
            ]
        );
    }

    #[test]
    fn an_explicit_mirror_replaces_the_main_archive_and_updates_only() {
        let host = parse_deb822(DEB822);
        assert_eq!(
            image_sources(&host, "bookworm", Some("http://local/debian/")),
            vec![
                "deb http://local/debian bookworm main",
                "deb http://local/debian bookworm-updates main",
                "deb http://deb.debian.org/debian-security bookworm-security main",
            ]
        );
    }

    #[test]
    fn a_host_without_the_suite_gets_the_default_archive_alone() {
        let host = parse_one_line("deb http://other/ubuntu jammy main\n");
        assert_eq!(
            image_sources(&host, "bookworm", None),
            vec![format!("deb {DEFAULT_MIRROR} bookworm main")]
        );
    }

    #[test]
    fn host_sources_reads_list_and_sources_files_and_ignores_others() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sources.list.d")).unwrap();
        std::fs::write(
            dir.path().join("sources.list"),
            "deb http://a/debian bookworm main\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("sources.list.d/debian.sources"), DEB822).unwrap();
        std::fs::write(
            dir.path().join("sources.list.d/x.list.disabled"),
            "deb http://off/debian bookworm main\n",
        )
        .unwrap();
        let uris: Vec<_> = host_sources(dir.path())
            .into_iter()
            .map(|s| s.uri)
            .collect();
        assert_eq!(
            uris,
            [
                "http://a/debian",
                "http://deb.debian.org/debian",
                "http://deb.debian.org/debian-security"
            ]
        );
    }
}
