//! Mosquitto-compatible ACL files:
//!
//! ```text
//! # lines before the first `user` apply to anonymous clients
//! topic read public/#
//! user alice
//! topic readwrite alice/#
//! topic deny alice/secret
//! # every client, %c = its client id, %u = its user name (whole levels only)
//! pattern write devices/%c/telemetry
//! ```
//!
//! `topic` and `pattern` take `read`, `write`, `readwrite` (the default when left out) or
//! `deny`, then a topic filter. A client may do what some rule that applies to it grants, unless
//! a `deny` rule that applies to it matches: deny wins. A `$` topic is matched only by filters
//! whose first level is not a wildcard, as in subscriptions.

use std::collections::HashMap;
use std::path::Path;

use super::{Access, Identity};
use crate::topic::matches;

/// Why an ACL file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum AclError {
    /// The file could not be read.
    #[error("ACL file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A line is not a rule Tern understands.
    #[error("ACL file {path}, line {line}: {why}")]
    Line {
        /// The file.
        path: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        why: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Grant {
    Read,
    Write,
    ReadWrite,
    Deny,
}

impl Grant {
    fn allows(self, access: Access) -> bool {
        matches!(
            (self, access),
            (Grant::ReadWrite, _) | (Grant::Read, Access::Read) | (Grant::Write, Access::Write)
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    grant: Grant,
    filter: String,
}

/// The rules of one ACL file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AclFile {
    anonymous: Vec<Rule>,
    users: HashMap<String, Vec<Rule>>,
    patterns: Vec<Rule>,
}

impl AclFile {
    /// Reads `path`; every bad line is an error naming the file and line.
    pub fn load(path: &Path) -> Result<AclFile, AclError> {
        let text = std::fs::read_to_string(path).map_err(|source| AclError::Io {
            path: path.display().to_string(),
            source,
        })?;
        AclFile::parse(&text, &path.display().to_string())
    }

    /// Parses the text of a file named `origin`.
    pub fn parse(text: &str, origin: &str) -> Result<AclFile, AclError> {
        let mut acl = AclFile::default();
        let mut user: Option<String> = None;
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |why: String| AclError::Line {
                path: origin.to_string(),
                line: i + 1,
                why,
            };
            let (keyword, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
            let rest = rest.trim();
            match keyword {
                "user" => {
                    if rest.is_empty() {
                        return Err(bad("`user` needs a user name".into()));
                    }
                    user = Some(rest.to_string());
                }
                "topic" | "pattern" => {
                    let rule = parse_rule(rest).map_err(bad)?;
                    if keyword == "pattern" {
                        acl.patterns.push(rule);
                    } else if let Some(u) = &user {
                        acl.users.entry(u.clone()).or_default().push(rule);
                    } else {
                        acl.anonymous.push(rule);
                    }
                }
                other => {
                    return Err(bad(format!(
                        "unknown keyword `{other}` (expected user, topic or pattern)"
                    )))
                }
            }
        }
        Ok(acl)
    }

    /// Whether `who` may read (receive) or write (publish to) `topic`.
    pub fn allows(&self, who: &Identity, topic: &str, access: Access) -> bool {
        let mut granted = false;
        for (rule, filter) in self.rules_for(who) {
            if !matches(&filter, topic) {
                continue;
            }
            if rule.grant == Grant::Deny {
                return false;
            }
            granted |= rule.grant.allows(access);
        }
        granted
    }

    /// Whether `who` may subscribe to `filter`: refused when a `deny` rule covers every topic
    /// it could match, or when no rule lets it read any of them. Wider filters are allowed;
    /// what they match is then checked per message.
    pub fn may_subscribe(&self, who: &Identity, filter: &str) -> bool {
        let mut readable = false;
        for (rule, f) in self.rules_for(who) {
            if rule.grant == Grant::Deny {
                if covers(&f, filter) {
                    return false;
                }
            } else if rule.grant.allows(Access::Read) && overlaps(&f, filter) {
                readable = true;
            }
        }
        readable
    }

    /// The rules that apply to `who`, patterns with `%c`/`%u` filled in (a pattern that needs
    /// a user name the client lacks, or a value that is not a plain level, does not apply).
    fn rules_for<'a>(
        &'a self,
        who: &'a Identity,
    ) -> impl Iterator<Item = (&'a Rule, std::borrow::Cow<'a, str>)> + 'a {
        let own = match &who.username {
            None => self.anonymous.as_slice(),
            Some(u) => self.users.get(&**u).map(Vec::as_slice).unwrap_or(&[]),
        };
        let own = own
            .iter()
            .map(|r| (r, std::borrow::Cow::Borrowed(r.filter.as_str())));
        let patterns = self.patterns.iter().filter_map(move |r| {
            substitute(&r.filter, who).map(|f| (r, std::borrow::Cow::Owned(f)))
        });
        own.chain(patterns)
    }
}

fn parse_rule(rest: &str) -> Result<Rule, String> {
    let (first, after) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    let (grant, filter) = match first {
        "read" => (Grant::Read, after.trim()),
        "write" => (Grant::Write, after.trim()),
        "readwrite" => (Grant::ReadWrite, after.trim()),
        "deny" => (Grant::Deny, after.trim()),
        _ => (Grant::ReadWrite, rest),
    };
    if filter.is_empty() {
        return Err("missing topic filter".into());
    }
    crate::topic::validate_topic_filter(filter, usize::MAX)
        .map_err(|e| format!("topic filter `{filter}`: {e}"))?;
    Ok(Rule {
        grant,
        filter: filter.to_string(),
    })
}

/// `pattern` substitution: a level that is exactly `%c` or `%u` becomes the client id or user
/// name. A value with `/`, `+` or `#` (or a missing user name) makes the rule not apply, so
/// no client can widen a pattern by its choice of name.
pub(crate) fn substitute(filter: &str, who: &Identity) -> Option<String> {
    if !filter.contains('%') {
        return Some(filter.to_string());
    }
    let plain = |v: &str| !v.is_empty() && !v.contains(['/', '+', '#']);
    let mut out = Vec::new();
    for level in filter.split('/') {
        match level {
            "%c" if plain(&who.client_id) => out.push(&*who.client_id),
            "%c" => return None,
            "%u" => match who.username.as_deref() {
                Some(u) if plain(u) => out.push(u),
                _ => return None,
            },
            other => out.push(other),
        }
    }
    Some(out.join("/"))
}

/// Whether every topic filter `inner` matches is matched by `outer`.
fn covers(outer: &str, inner: &str) -> bool {
    if inner.starts_with(['+', '#']) && !outer.starts_with(['+', '#']) {
        // `inner` reaches every non-`$` first level; only a wildcard covers that.
        return false;
    }
    if outer.starts_with(['+', '#']) && inner.starts_with('$') {
        return false;
    }
    let mut o = outer.split('/');
    let mut i = inner.split('/');
    loop {
        match (o.next(), i.next()) {
            (Some("#"), _) => return true,
            (_, Some("#")) => return false,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b && b != "+" => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Whether some topic matches both filters.
pub(crate) fn overlaps(a: &str, b: &str) -> bool {
    let dollar = |f: &str| f.starts_with('$');
    let wild = |f: &str| f.starts_with(['+', '#']);
    if (dollar(a) && wild(b)) || (dollar(b) && wild(a)) {
        return false;
    }
    let mut x = a.split('/');
    let mut y = b.split('/');
    loop {
        match (x.next(), y.next()) {
            (Some("#"), _) | (_, Some("#")) => return true,
            (Some("+"), Some(_)) | (Some(_), Some("+")) => {}
            (Some(p), Some(q)) if p == q => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn who(client_id: &str, username: Option<&str>) -> Identity {
        Identity {
            client_id: Arc::from(client_id),
            username: username.map(Arc::from),
            rights: None,
        }
    }

    const FILE: &str = "\
# anonymous
topic read public/#

user alice
topic readwrite alice/#
topic deny alice/secret
topic write shared/in
topic read $SYS/#

user bob with space
topic bob/#

pattern readwrite devices/%c/#
pattern read users/%u/inbox
";

    #[test]
    fn rules_apply_to_their_users_and_deny_wins() {
        let acl = AclFile::parse(FILE, "acl").unwrap();
        let anon = who("c1", None);
        let alice = who("c2", Some("alice"));
        let bob = who("c3", Some("bob with space"));
        assert!(acl.allows(&anon, "public/news", Access::Read));
        assert!(!acl.allows(&anon, "public/news", Access::Write));
        assert!(!acl.allows(&alice, "public/news", Access::Read));
        assert!(acl.allows(&alice, "alice/x/y", Access::Write));
        assert!(!acl.allows(&alice, "alice/secret", Access::Read));
        assert!(acl.allows(&alice, "shared/in", Access::Write));
        assert!(!acl.allows(&alice, "shared/in", Access::Read));
        assert!(acl.allows(&alice, "$SYS/broker/uptime", Access::Read));
        assert!(acl.allows(&bob, "bob/1", Access::Write));
        assert!(!acl.allows(&who("c4", Some("mallory")), "bob/1", Access::Read));
    }

    #[test]
    fn patterns_substitute_whole_levels_only() {
        let acl = AclFile::parse(FILE, "acl").unwrap();
        let dev = who("dev-7", Some("alice"));
        assert!(acl.allows(&dev, "devices/dev-7/telemetry", Access::Write));
        assert!(!acl.allows(&dev, "devices/dev-8/telemetry", Access::Write));
        assert!(acl.allows(&dev, "users/alice/inbox", Access::Read));
        // No user name: %u rules do not apply. Wildcards in a name do not widen a rule.
        assert!(!acl.allows(&who("x", None), "users//inbox", Access::Read));
        assert!(!acl.allows(&who("+", None), "devices/a/t", Access::Read));
        assert!(!acl.allows(&who("a/b", None), "devices/a/b/t", Access::Read));
        let partial = AclFile::parse("pattern read a/x%c\n", "acl").unwrap();
        assert!(!partial.allows(&who("1", None), "a/x1", Access::Read));
    }

    #[test]
    fn dollar_topics_need_dollar_rules() {
        let acl = AclFile::parse("topic read #\ntopic read +/b\n", "acl").unwrap();
        let anon = who("c", None);
        assert!(acl.allows(&anon, "a/b", Access::Read));
        assert!(!acl.allows(&anon, "$SYS/b", Access::Read));
        assert!(!acl.may_subscribe(&anon, "$SYS/#"));
    }

    #[test]
    fn subscriptions_refused_only_when_nothing_could_be_read() {
        let acl = AclFile::parse(FILE, "acl").unwrap();
        let alice = who("c2", Some("alice"));
        assert!(acl.may_subscribe(&alice, "#"));
        assert!(acl.may_subscribe(&alice, "alice/+"));
        assert!(!acl.may_subscribe(&alice, "alice/secret"));
        assert!(!acl.may_subscribe(&alice, "shared/in"), "write-only");
        assert!(!acl.may_subscribe(&alice, "other/#"));
        assert!(
            acl.may_subscribe(&alice, "+/secret"),
            "alice/secret denied, others not"
        );
        let anon = who("c1", None);
        assert!(acl.may_subscribe(&anon, "public/+/x"));
        assert!(!acl.may_subscribe(&anon, "private/#"));
    }

    #[test]
    fn filter_relations() {
        assert!(covers("a/#", "a"));
        assert!(covers("a/#", "a/+/c"));
        assert!(covers("+/+", "a/b"));
        assert!(!covers("a/+", "a/#"));
        assert!(!covers("a/b", "a/+"));
        assert!(!covers("#", "$SYS/x"));
        assert!(overlaps("a/+", "+/b"));
        assert!(overlaps("a/#", "a"));
        assert!(!overlaps("a/b", "a/c"));
        assert!(!overlaps("a/b/c", "a/b"));
        assert!(!overlaps("#", "$SYS/#"));
        assert!(matches("a/#", "a"));
        assert!(!matches("a/+", "a"));
    }

    #[test]
    fn bad_lines_name_file_and_line() {
        for (text, want) in [
            ("topic read\n", "line 1"),
            ("\nuser\n", "line 2"),
            ("topic read a/#/b\n", "line 1"),
            ("topics read a\n", "unknown keyword"),
        ] {
            let err = AclFile::parse(text, "acl.txt").unwrap_err().to_string();
            assert!(
                err.contains("acl.txt") && err.contains(want),
                "{text}: {err}"
            );
        }
    }
}
