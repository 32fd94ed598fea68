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
            other => {
                return Err(RuleError(format!("semver {other:?} must be \"final\", \"prerelease\" or \"any\"")));
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

    pub fn matches(&self, tag: &str) -> bool {
        if tag.is_empty() || tag.len() > MAX_TAG {
            return false;
        }
        match self {
            TagRule::Glob(pattern) => glob_match(pattern.as_bytes(), tag.as_bytes()),
            TagRule::Regex { regex, .. } => regex.is_match(tag),
            TagRule::Semver { kind, pre } => {
                let Ok(version) = semver::Version::parse(tag.strip_prefix('v').unwrap_or(tag)) else {
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
        }
    }
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
    fn pathological_globs_stay_fast() {
        let rule = TagRule::glob("*a*a*a*a*a*a*a*b").expect("glob");
        assert!(!rule.matches(&"a".repeat(128)));
    }
}
