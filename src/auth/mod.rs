//! Who may connect ([`Authenticator`]) and what they may publish and receive ([`Authorizer`]).
//! The built-in sources are Mosquitto's: a password file ([`passwd`]), client certificates
//! (the verified identity of a mutual-TLS listener with `identity_as_username`), anonymous
//! access per listener, and an ACL file ([`acl`]). Other sources (an HTTP hook, JWT) implement
//! the same traits; the connection code only sees [`Auth`].

pub mod acl;
pub mod passwd;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use parking_lot::Mutex;

use crate::config::{Config, IdentitySource};
use acl::AclFile;
use passwd::PasswordFile;

/// Who a client is, for authorization.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Its client id.
    pub client_id: Arc<str>,
    /// Its user name, if it logged in with one (or its certificate named it).
    pub username: Option<Arc<str>>,
}

/// What a client wants to do with a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Receive messages published to it.
    Read,
    /// Publish to it.
    Write,
}

/// One CONNECT's credentials.
#[derive(Debug, Clone)]
pub struct Login {
    /// Client id (after any assignment).
    pub client_id: Arc<str>,
    /// User name: from the CONNECT, or the verified certificate's identity.
    pub username: Option<String>,
    /// Password from the CONNECT.
    pub password: Option<Vec<u8>>,
    /// The user name comes from a verified client certificate.
    pub certified: bool,
    /// The listener lets clients without a user name in.
    pub allow_anonymous: bool,
}

/// What an [`Authenticator`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Let in.
    Allowed,
    /// Unknown user or wrong password (v3 CONNACK 0x04, v5 0x86).
    BadCredentials,
    /// Not allowed to connect at all, e.g. anonymous where that is off (v3 0x05, v5 0x87).
    NotAuthorized,
}

/// Decides whether a client may connect. May block (password hashing): the broker calls it
/// off the async threads.
pub trait Authenticator: Send + Sync {
    /// The decision for `login`.
    fn authenticate(&self, login: &Login) -> Verdict;

    /// Whether deciding `login` may block (hash a password, ask a server); if not, it is
    /// decided on the connection's own thread, without a hand-off.
    fn may_block(&self, _login: &Login) -> bool {
        true
    }
}

/// Decides what a connected client may publish, subscribe to and receive. Called per message:
/// it must not block.
pub trait Authorizer: Send + Sync {
    /// Whether `who` may read or write `topic`.
    fn allows(&self, who: &Identity, topic: &str, access: Access) -> bool;
    /// Whether `who` may subscribe to `filter` at all (what it matches is checked per message).
    fn may_subscribe(&self, who: &Identity, filter: &str) -> bool;
}

impl Authorizer for AclFile {
    fn allows(&self, who: &Identity, topic: &str, access: Access) -> bool {
        AclFile::allows(self, who, topic, access)
    }

    fn may_subscribe(&self, who: &Identity, filter: &str) -> bool {
        AclFile::may_subscribe(self, who, filter)
    }
}

/// The password file (if any) and certificate logins.
struct Files {
    passwords: Option<PasswordFile>,
    certificate_login: bool,
}

impl Authenticator for Files {
    fn authenticate(&self, login: &Login) -> Verdict {
        if login.certified && self.certificate_login {
            return Verdict::Allowed;
        }
        match (&login.username, &self.passwords) {
            (Some(user), Some(file)) => {
                let ok = match (file.get(user), &login.password) {
                    (Some(hash), Some(pw)) => hash.verify(pw),
                    _ => false,
                };
                match ok {
                    true => Verdict::Allowed,
                    false => Verdict::BadCredentials,
                }
            }
            // No password source: a user name proves nothing, so it counts as anonymous.
            _ if login.allow_anonymous => Verdict::Allowed,
            _ => Verdict::NotAuthorized,
        }
    }

    fn may_block(&self, login: &Login) -> bool {
        login.username.is_some()
            && self.passwords.is_some()
            && !(login.certified && self.certificate_login)
    }
}

/// Why the authentication or ACL files could not be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The password file.
    #[error("{0}")]
    Passwd(#[from] passwd::PasswdError),
    /// The ACL file.
    #[error("{0}")]
    Acl(#[from] acl::AclError),
}

/// The rules in force: swapped whole by a reload.
struct Rules {
    authenticator: Arc<dyn Authenticator>,
    authorizer: Option<Arc<dyn Authorizer>>,
}

/// Failed logins from one address within [`FAILURE_MEMORY`] slow down its next refusals.
const FAILURE_MEMORY: Duration = Duration::from_secs(60);
/// First delay before a refusal CONNACK, doubled per recent failure up to [`MAX_DELAY`].
const FIRST_DELAY: Duration = Duration::from_millis(100);
const MAX_DELAY: Duration = Duration::from_secs(5);
/// Addresses remembered at most; past it the oldest half is forgotten.
const MAX_TRACKED: usize = 10_000;

/// The broker's authentication and authorization: the current rules, password checks bounded
/// to a few at a time off the async threads, and slowed refusals per address.
pub struct Auth {
    rules: ArcSwap<Rules>,
    /// Hash checks running at once: at most the number of cores, so a burst of logins cannot
    /// take every thread from message flow.
    hashing: tokio::sync::Semaphore,
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl Auth {
    /// The rules `config` names, files read now.
    pub fn new(config: &Config) -> Result<Auth, AuthError> {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Ok(Auth {
            rules: ArcSwap::from_pointee(Rules::load(config)?),
            hashing: tokio::sync::Semaphore::new(cores),
            failures: Mutex::new(HashMap::new()),
        })
    }

    /// Everyone in, everything allowed: for state built without a configuration's files.
    pub fn permissive() -> Auth {
        Auth {
            rules: ArcSwap::from_pointee(Rules {
                authenticator: Arc::new(Files {
                    passwords: None,
                    certificate_login: true,
                }),
                authorizer: None,
            }),
            hashing: tokio::sync::Semaphore::new(2),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Reads the files again (SIGHUP). On error the running rules stay.
    pub fn reload(&self, config: &Config) -> Result<(), AuthError> {
        self.rules.store(Arc::new(Rules::load(config)?));
        Ok(())
    }

    /// The authorizer in force, `None` when everything is allowed (no ACL file).
    pub fn authorizer(&self) -> Option<Arc<dyn Authorizer>> {
        self.rules.load().authorizer.clone()
    }

    /// Checks `login` from `peer`. A refusal is answered only after a delay that grows with
    /// the recent failures from the same address; other addresses are not slowed.
    pub async fn login(&self, login: Login, peer: IpAddr) -> Verdict {
        let authenticator = Arc::clone(&self.rules.load().authenticator);
        let verdict = if !authenticator.may_block(&login) {
            authenticator.authenticate(&login)
        } else {
            self.decide_off_thread(authenticator, login).await
        };
        match verdict {
            Verdict::Allowed => {
                let mut failures = self.failures.lock();
                if !failures.is_empty() {
                    failures.remove(&peer);
                }
            }
            _ => tokio::time::sleep(self.note_failure(peer)).await,
        }
        verdict
    }

    /// Runs a blocking decision on tokio's blocking threads, a few at a time.
    async fn decide_off_thread(
        &self,
        authenticator: Arc<dyn Authenticator>,
        login: Login,
    ) -> Verdict {
        match self.hashing.acquire().await {
            Ok(_permit) => tokio::task::spawn_blocking(move || authenticator.authenticate(&login))
                .await
                .unwrap_or(Verdict::NotAuthorized),
            Err(_) => Verdict::NotAuthorized,
        }
    }

    /// Records a failure from `peer`; the delay before its refusal.
    fn note_failure(&self, peer: IpAddr) -> Duration {
        let now = Instant::now();
        let mut failures = self.failures.lock();
        if failures.len() >= MAX_TRACKED {
            failures.retain(|_, (_, last)| now.duration_since(*last) < FAILURE_MEMORY);
            if failures.len() >= MAX_TRACKED {
                failures.clear();
            }
        }
        let entry = failures.entry(peer).or_insert((0, now));
        if now.duration_since(entry.1) >= FAILURE_MEMORY {
            entry.0 = 0;
        }
        entry.0 = entry.0.saturating_add(1);
        entry.1 = now;
        let doublings = (entry.0 - 1).min(16);
        (FIRST_DELAY * 2u32.pow(doublings)).min(MAX_DELAY)
    }
}

impl Rules {
    fn load(config: &Config) -> Result<Rules, AuthError> {
        let a = &config.auth;
        let passwords = a
            .password_file
            .as_deref()
            .map(PasswordFile::load)
            .transpose()?;
        let acl = a.acl_file.as_deref().map(AclFile::load).transpose()?;
        Ok(Rules {
            authenticator: Arc::new(Files {
                passwords,
                certificate_login: a.certificate_login,
            }),
            authorizer: acl.map(|a| Arc::new(a) as Arc<dyn Authorizer>),
        })
    }
}

/// Whether `config` names any way to authenticate: then anonymous access is off unless a
/// listener (or `[auth]`) turns it on.
pub fn authentication_configured(config: &Config) -> bool {
    config.auth.password_file.is_some()
        || config
            .listeners
            .iter()
            .any(|l| l.identity_as_username != IdentitySource::None)
}

/// Whether a listener whose own setting is `listener` lets anonymous clients in.
pub fn allow_anonymous(config: &Config, listener: Option<bool>) -> bool {
    listener
        .or(config.auth.allow_anonymous)
        .unwrap_or_else(|| !authentication_configured(config))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn login(user: Option<&str>, pw: Option<&[u8]>, anonymous: bool) -> Login {
        Login {
            client_id: Arc::from("c"),
            username: user.map(str::to_string),
            password: pw.map(<[u8]>::to_vec),
            certified: false,
            allow_anonymous: anonymous,
        }
    }

    #[test]
    fn password_file_decides_for_named_users() {
        let mut file = PasswordFile::default();
        file.set("alice", passwd::Hash::new(b"right", 10));
        let files = Files {
            passwords: Some(file),
            certificate_login: true,
        };
        let check = |l: &Login| files.authenticate(l);
        assert_eq!(
            check(&login(Some("alice"), Some(b"right"), false)),
            Verdict::Allowed
        );
        assert_eq!(
            check(&login(Some("alice"), Some(b"wrong"), true)),
            Verdict::BadCredentials
        );
        assert_eq!(
            check(&login(Some("alice"), None, true)),
            Verdict::BadCredentials
        );
        assert_eq!(
            check(&login(Some("bob"), Some(b"x"), true)),
            Verdict::BadCredentials
        );
        assert_eq!(check(&login(None, None, false)), Verdict::NotAuthorized);
        assert_eq!(check(&login(None, None, true)), Verdict::Allowed);
        let mut cert = login(Some("device-1"), None, false);
        cert.certified = true;
        assert_eq!(check(&cert), Verdict::Allowed);
        let strict = Files {
            passwords: None,
            certificate_login: false,
        };
        assert_eq!(strict.authenticate(&cert), Verdict::NotAuthorized);
    }

    #[test]
    fn failures_slow_down_one_address_only() {
        let auth = Auth::new(&Config::default()).unwrap();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let delays: Vec<Duration> = (0..8).map(|_| auth.note_failure(a)).collect();
        assert_eq!(delays[0], FIRST_DELAY);
        assert!(delays.windows(2).all(|w| w[1] >= w[0]));
        assert_eq!(*delays.last().unwrap(), MAX_DELAY);
        assert_eq!(auth.note_failure(b), FIRST_DELAY);
    }

    #[test]
    fn anonymous_default_follows_configured_sources() {
        let mut c = Config::default();
        assert!(allow_anonymous(&c, None));
        c.auth.password_file = Some("p".into());
        assert!(!allow_anonymous(&c, None));
        assert!(allow_anonymous(&c, Some(true)));
        c.auth.allow_anonymous = Some(true);
        assert!(allow_anonymous(&c, None));
        assert!(!allow_anonymous(&c, Some(false)));
    }
}
