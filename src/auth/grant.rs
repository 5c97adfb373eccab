//! What a login is let in with, beyond "yes": the user name a token names, the client's own
//! ACL lists (JWT claims, the HTTP hook's answer), superuser status, and when a token expires.

use std::sync::Arc;

use super::acl::{overlaps, substitute};
use super::{Access, Identity};
use crate::topic::matches;

/// What one method decided about a CONNECT.
#[derive(Debug, Clone)]
pub enum Decision {
    /// Let in, with what the method grants.
    Allow(Grant),
    /// Refused; the next methods are not asked.
    Deny(super::Verdict),
    /// Nothing to say (a user the password file does not know, a password that is not a
    /// token): the next method is asked.
    Ignore,
}

/// What a client is let in with.
#[derive(Debug, Clone, Default)]
pub struct Grant {
    /// The user name the method names (a token's claim); `None`: the CONNECT's.
    pub username: Option<Arc<str>>,
    /// The client's own rights, if the method gives any.
    pub rights: Option<Arc<Rights>>,
    /// When the credentials stop being valid, in Unix seconds (a token's `exp`): the
    /// connection is closed then (v5 DISCONNECT 0xA0 Maximum connect time).
    pub expires_at: Option<u64>,
}

/// A client's own rights: applied on top of the ACL file (a topic must pass both where both
/// exist), except that a superuser passes every check.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rights {
    /// Skips the ACL file, the client's lists and the ACL hook.
    pub superuser: bool,
    /// Filters the client may publish to; `None`: no list (only the ACL file decides).
    pub publish: Option<Vec<String>>,
    /// Filters the client may subscribe to and receive from; `None`: no list.
    pub subscribe: Option<Vec<String>>,
}

impl Rights {
    /// Rights from lists as a token or hook gave them: `%c` and `%u` levels filled in for
    /// `client_id` and `username` (an entry whose value is not a plain level is dropped, as
    /// in ACL file patterns), invalid filters dropped. `None` when there is nothing to apply.
    pub fn from_lists(
        superuser: bool,
        publish: Option<Vec<String>>,
        subscribe: Option<Vec<String>>,
        client_id: &Arc<str>,
        username: Option<&Arc<str>>,
    ) -> Option<Arc<Rights>> {
        if !superuser && publish.is_none() && subscribe.is_none() {
            return None;
        }
        let who = Identity {
            client_id: Arc::clone(client_id),
            username: username.cloned(),
            rights: None,
        };
        let fill = |list: Option<Vec<String>>| {
            list.map(|l| {
                l.iter()
                    .filter(|f| crate::topic::validate_topic_filter(f, usize::MAX).is_ok())
                    .filter_map(|f| substitute(f, &who))
                    .collect()
            })
        };
        Some(Arc::new(Rights {
            superuser,
            publish: fill(publish),
            subscribe: fill(subscribe),
        }))
    }

    /// Whether the client's lists let it read or write `topic` (true where there is no list).
    pub fn allows(&self, topic: &str, access: Access) -> bool {
        let list = match access {
            Access::Write => &self.publish,
            Access::Read => &self.subscribe,
        };
        list.as_ref()
            .is_none_or(|l| l.iter().any(|f| matches(f, topic)))
    }

    /// Whether the client's lists let it subscribe to `filter`: some listed filter overlaps
    /// it (what it matches is then checked per message, as with the ACL file).
    pub fn may_subscribe(&self, filter: &str) -> bool {
        self.subscribe
            .as_ref()
            .is_none_or(|l| l.iter().any(|f| overlaps(f, filter)))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_filled_in_and_checked() {
        let r = Rights::from_lists(
            false,
            Some(vec!["devices/%c/up".into(), "bad/#/x".into()]),
            Some(vec!["devices/%c/down/#".into(), "users/%u/+".into()]),
            &Arc::from("d1"),
            Some(&Arc::from("alice")),
        )
        .unwrap();
        assert_eq!(r.publish.as_deref().unwrap(), ["devices/d1/up"]);
        assert!(r.allows("devices/d1/up", Access::Write));
        assert!(!r.allows("devices/d2/up", Access::Write));
        assert!(r.allows("devices/d1/down/x", Access::Read));
        assert!(r.allows("users/alice/inbox", Access::Read));
        assert!(!r.allows("users/bob/inbox", Access::Read));
        assert!(r.may_subscribe("devices/#"));
        assert!(!r.may_subscribe("other/#"));
        assert!(Rights::from_lists(false, None, None, &Arc::from("c"), None).is_none());
        // No user name: a `%u` entry does not apply.
        let anon = Rights::from_lists(
            false,
            None,
            Some(vec!["users/%u/#".into()]),
            &Arc::from("c"),
            None,
        )
        .unwrap();
        assert!(!anon.allows("users/x/y", Access::Read));
        assert!(anon.allows("anything", Access::Write));
    }
}
