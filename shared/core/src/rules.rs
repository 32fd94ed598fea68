//! Tag rules: how a pushed image tag maps to an environment.
//!
//! Rules are matched against the whole tag, in the order written; the first match wins.

use std::fmt;

/// An invalid rule, as written in the config.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RuleError(pub String);

#[derive(Clone)]
pub enum TagRule {
    /// `*` matches any run of characters, `?` exactly one.
    Glob(String),
    /// Matched against the whole tag: the pattern is anchored for you.
    Regex { pattern: String, regex: regex::Regex },
    /// A semantic version, with or without a leading `v`.
    Semver { kind: SemverKind, pre: Option<String> },
    /// A semantic version in a range (`>=1.4, <2`), as Cargo reads one: a pre-release
    /// matches only a comparator that names a pre-release of the same `major.minor.patch`.
    SemverRange { range: String, req: semver::VersionReq },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SemverKind {
    /// `1.2.3`: no pre-release part.
    Final,
    /// `1.2.3-rc.1`: a pre-release, optionally with a required label (`pre = "rc"`).
    Prerelease,
    /// Any semantic version.
    Any,
}

/// Longest tag ECR accepts.
const MAX_TAG: usize = 128;

impl TagRule {
    pub fn glob(pattern: &str) -> Result<TagRule, RuleError> {
        if pattern.is_empty() || pattern.len() > MAX_TAG {
            return Err(RuleError(format!("glob {pattern:?} must be 1 to {MAX_TAG} characters")));
        }
        Ok(TagRule::Glob(pattern.to_string()))
    }

    pub fn regex(pattern: &str) -> Result<TagRule, RuleError> {
        let regex = regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
            .size_limit(1 << 20)
            .build()
            .map_err(|e| RuleError(format!("regex {pattern:?} does not compile: {e}")))?;
        Ok(TagRule::Regex { pattern: pattern.to_string(), regex })
    }

    pub fn semver(kind: &str, pre: Option<&str>) -> Result<TagRule, RuleError> {
        let kind = match kind {
            "final" => SemverKind::Final,
            "prerelease" => SemverKind::Prerelease,
            "any" => SemverKind::Any,
            range => {
                let req = semver::VersionReq::parse(range).map_err(|e| {
                    RuleError(format!(
                        "semver {range:?} must be \"final\", \"prerelease\", \"any\" or a range such as \">=1.4, <2\" ({e})"
                    ))
                })?;
                if pre.is_some() {
                    return Err(RuleError("`pre` only goes with `semver = \"prerelease\"`".into()));
                }
                return Ok(TagRule::SemverRange { range: range.to_string(), req });
            }
        };
        match pre {
            Some(_) if kind != SemverKind::Prerelease => {
                Err(RuleError("`pre` only goes with `semver = \"prerelease\"`".into()))
            }
            Some(label) if label.is_empty() || !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') => {
                Err(RuleError(format!("pre {label:?} must be a pre-release label such as \"rc\"")))
            }
            _ => Ok(TagRule::Semver { kind, pre: pre.map(str::to_string) }),
        }
    }

    /// Whether the rule reads tags as semantic versions (an environment ordered by version
    /// takes only such rules).
    pub fn is_semver(&self) -> bool {
        matches!(self, TagRule::Semver { .. } | TagRule::SemverRange { .. })
    }

    pub fn matches(&self, tag: &str) -> bool {
        if tag.is_empty() || tag.len() > MAX_TAG {
            return false;
        }
        match self {
            TagRule::Glob(pattern) => glob_match(pattern.as_bytes(), tag.as_bytes()),
            TagRule::Regex { regex, .. } => regex.is_match(tag),
            TagRule::SemverRange { req, .. } => version(tag).is_some_and(|v| req.matches(&v)),
            TagRule::Semver { kind, pre } => {
                let Some(version) = version(tag) else {
                    return false;
                };
                match kind {
                    SemverKind::Final => version.pre.is_empty(),
                    SemverKind::Any => true,
                    SemverKind::Prerelease if version.pre.is_empty() => false,
                    SemverKind::Prerelease => pre.as_deref().is_none_or(|label| {
                        let first = version.pre.as_str().split('.').next().unwrap_or_default();
                        first.strip_prefix(label).is_some_and(|rest| rest.chars().all(|c| c.is_ascii_digit()))
                    }),
                }
            }
        }
    }
}

impl fmt::Debug for TagRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for TagRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TagRule::Glob(p) => write!(f, "glob {p:?}"),
            TagRule::Regex { pattern, .. } => write!(f, "regex {pattern:?}"),
            TagRule::Semver { kind, pre: Some(label) } => write!(f, "semver {kind:?} ({label})"),
            TagRule::Semver { kind, pre: None } => write!(f, "semver {kind:?}"),
            TagRule::SemverRange { range, .. } => write!(f, "semver {range:?}"),
        }
    }
}

/// The semantic version a tag names, with or without a leading `v`.
pub fn version(tag: &str) -> Option<semver::Version> {
    semver::Version::parse(tag.strip_prefix('v').unwrap_or(tag)).ok()
}

/// A key whose byte order is `tag`'s semantic-version order (semver.org §11; build metadata
/// ignored), so the ledger can compare versions in a conditional write. `None`: not a version.
pub fn version_key(tag: &str) -> Option<String> {
    let v = version(tag)?;
    let mut key = format!("{:020}.{:020}.{:020}", v.major, v.minor, v.patch);
    if v.pre.is_empty() {
        // A release sorts after every pre-release of its version: '~' is above every identifier character.
        key.push('~');
    }
    for id in v.pre.split('.').filter(|_| !v.pre.is_empty()) {
        // '!' sorts below every identifier character, so a shorter list of identifiers sorts first;
        // numeric identifiers ('0' + length + digits) sort numerically and below alphanumeric ones ('1').
        key.push('!');
        if id.bytes().all(|b| b.is_ascii_digit()) {
            key.push_str(&format!("0{:03}{id}", id.len()));
        } else {
            key.push_str(&format!("1{id}"));
        }
    }
    Some(key)
}

/// The key that orders a push of version key `version` (see [`version_key`]) made at
/// `pushed_at`: by version, then by push time, so a later build of one version is newer. The
/// space sorts below every byte of a version key, so a longer pre-release still sorts higher.
pub fn order_key(version: &str, pushed_at: chrono::DateTime<chrono::Utc>) -> String {
    format!("{version} {:015}", pushed_at.timestamp_millis().max(0))
}

/// Iterative glob match with single-star backtracking: linear in practice, no recursion.
pub(crate) fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_match_whole_tags() {
        let glob = |p| TagRule::glob(p).expect("glob");
        let regex = |p| TagRule::regex(p).expect("regex");
        let semver = |k, pre| TagRule::semver(k, pre).expect("semver");
        let cases: Vec<(TagRule, &str, bool)> = vec![
            (glob("staging-*"), "staging-1a2b3c4d", true),
            (glob("staging-*"), "prod-1a2b3c4d", false),
            (glob("staging-*"), "xstaging-1", false),
            (glob("latest"), "latest", true),
            (glob("latest"), "latest2", false),
            (glob("v?.*"), "v1.2", true),
            (glob("v?.*"), "v10.2", false),
            (glob("*-*-*"), "a-b-c", true),
            (glob("*-*-*"), "a-b", false),
            (regex("prod-[0-9a-f]{8}"), "prod-1a2b3c4d", true),
            (regex("prod-[0-9a-f]{8}"), "prod-1a2b3c4d-hotfix", false),
            (regex("prod-[0-9a-f]{8}"), "xprod-1a2b3c4d", false),
            (regex("v[0-9]+|build-[0-9]+"), "build-7", true),
            (regex("v[0-9]+|build-[0-9]+"), "v12x", false),
            (semver("final", None), "v1.2.3", true),
            (semver("final", None), "1.2.3", true),
            (semver("final", None), "v1.2.3-rc.1", false),
            (semver("final", None), "v1.2", false),
            (semver("final", None), "latest", false),
            (semver("prerelease", Some("rc")), "v0.1.0-rc.1", true),
            (semver("prerelease", Some("rc")), "v0.1.0-rc1", true),
            (semver("prerelease", Some("rc")), "v0.1.0-beta.1", false),
            (semver("prerelease", Some("rc")), "v0.1.0", false),
            (semver("prerelease", None), "v0.1.0-beta.1", true),
            (semver("any", None), "2.0.0-alpha", true),
            (semver("any", None), "v123", false),
        ];
        for (rule, tag, expected) in cases {
            assert_eq!(rule.matches(tag), expected, "{rule} on {tag:?}");
        }
    }

    #[test]
    fn empty_and_oversized_tags_never_match() {
        let any = TagRule::glob("*").expect("glob");
        assert!(!any.matches(""));
        assert!(!any.matches(&"a".repeat(129)));
        assert!(any.matches(&"a".repeat(128)));
    }

    #[test]
    fn bad_rules_are_refused() {
        assert!(TagRule::regex("(").is_err());
        assert!(TagRule::glob("").is_err());
        assert!(TagRule::semver("newest", None).is_err());
        assert!(TagRule::semver("final", Some("rc")).is_err());
        assert!(TagRule::semver("prerelease", Some("r c")).is_err());
    }

    #[test]
    fn ranges_take_versions_in_them_only() {
        let range = TagRule::semver(">=1.4, <2", None).expect("range");
        let cases = [("v1.4.0", true), ("1.9.12", true), ("v2.0.0", false), ("v1.3.9", false), ("v1.5.0-rc.1", false)];
        for (tag, expected) in cases {
            assert_eq!(range.matches(tag), expected, "{range} on {tag:?}");
        }
        assert!(range.is_semver());
        assert!(!TagRule::glob("v*").expect("glob").is_semver());
        assert!(TagRule::semver(">=1.4", Some("rc")).is_err(), "pre goes with prerelease only");
        assert!(TagRule::semver(">=1.4,, <", None).is_err());
    }

    #[test]
    fn version_keys_sort_as_semver_orders_versions() {
        // semver.org §11's own example, then numeric fields past one digit.
        let ordered = [
            "1.0.0-alpha",
            "1.0.0-alpha.1",
            "1.0.0-alpha.beta",
            "1.0.0-beta",
            "1.0.0-beta.2",
            "1.0.0-beta.11",
            "1.0.0-rc.1",
            "v1.0.0",
            "1.0.1-0",
            "1.0.1-a-b",
            "1.0.1",
            "1.2.4",
            "1.3.0+build.7",
            "1.10.0",
            "2.0.0",
        ];
        let keys: Vec<String> = ordered.iter().map(|t| version_key(t).expect(t)).collect();
        for (i, pair) in keys.windows(2).enumerate() {
            assert!(pair[0] < pair[1], "{} sorts before {}", ordered[i], ordered[i + 1]);
        }
        // Against the semver crate's precedence, every pair both ways.
        for a in ordered {
            for b in ordered {
                let by_crate = version(a).expect(a).cmp_precedence(&version(b).expect(b));
                assert_eq!(version_key(a).cmp(&version_key(b)), by_crate, "{a} vs {b}");
            }
        }
        assert_eq!(version_key("latest"), None);
        assert_eq!(version_key("1.3.0+a"), version_key("v1.3.0+b"), "build metadata does not order");
    }

    #[test]
    fn order_keys_go_by_version_then_push_time() {
        use chrono::TimeZone;
        let at = |secs: i64| chrono::Utc.timestamp_opt(1_800_000_000 + secs, 0).single().expect("time");
        let key = |tag: &str, secs: i64| order_key(&version_key(tag).expect(tag), at(secs));
        // Each pair: the first is older, whichever was pushed first.
        let pairs = [
            (key("1.0.0-alpha", 9), key("1.0.0-alpha.1", 0)), // a longer pre-release, pushed earlier
            (key("1.0.0-alpha.1", 0), key("1.0.0-alpha.1", 1)), // the same version, rebuilt later
            (key("1.0.0-rc.1", 9), key("1.0.0", 0)),
            (key("1.2.4", 9), key("1.3.0", 0)),
            (key("1.2.4", 0), key("1.2.4+build.2", 1)),
        ];
        for (older, newer) in pairs {
            assert!(older < newer, "{older} before {newer}");
        }
        let bare = version_key("1.2.4").expect("version");
        assert!(bare < key("1.2.4", 0), "a head written before push time ordered admits the same version");
        assert!(key("1.2.3", 9) < bare && bare < key("1.2.5", 0), "and orders other versions as before");
    }

    #[test]
    fn pathological_globs_stay_fast() {
        let rule = TagRule::glob("*a*a*a*a*a*a*a*b").expect("glob");
        assert!(!rule.matches(&"a".repeat(128)));
    }
}
