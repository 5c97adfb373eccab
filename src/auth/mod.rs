//! Who may connect (the chain of methods behind [`Auth::login`]) and what they may publish
//! and receive ([`Authorizer`]).
//! The built-in sources are Mosquitto's: a password file ([`passwd`]), client certificates
//! (the verified identity of a mutual-TLS listener with `identity_as_username`), anonymous
//! access per listener, and an ACL file ([`acl`]); beyond them JWT ([`jwt`]) and an HTTP hook
//! ([`hook`]). The methods form a chain (`[auth] chain`): each answers allow, deny or "nothing
//! to say" ([`Decision`]); the first decisive answer wins, and when none is decisive the
//! anonymous rules decide. A method that allows may grant more ([`Grant`]): the user name a
//! token names, the client's own ACL lists, superuser status, an expiry. The connection code
//! only sees [`Auth`].

pub mod acl;
pub mod grant;
pub mod hook;
pub mod jwt;
pub mod passwd;

pub use grant::{Decision, Grant, Rights};

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use parking_lot::Mutex;

use crate::config::{AuthMethod, Config, IdentitySource};
use acl::AclFile;
use passwd::PasswordFile;

/// Who a client is, for authorization.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Its client id.
    pub client_id: Arc<str>,
    /// Its user name, if it logged in with one (or its certificate or token named it).
    pub username: Option<Arc<str>>,
    /// Its own rights, if the method that let it in granted any.
    pub rights: Option<Arc<Rights>>,
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
    /// Where it connects from.
    pub peer: std::net::SocketAddr,
    /// The listener's name (`kind:port`).
    pub listener: Arc<str>,
    /// Protocol level: 3 (3.1), 4 (3.1.1) or 5.
    pub protocol_version: u8,
    /// The identity in its verified client certificate, if any.
    pub cert_identity: Option<String>,
}

/// Why a login is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Unknown user, wrong password, invalid token (v3 CONNACK 0x04, v5 0x86).
    BadCredentials,
    /// Not allowed to connect at all, e.g. anonymous where that is off (v3 0x05, v5 0x87).
    NotAuthorized,
    /// What decides could not be asked (the HTTP hook, `on_error = "unavailable"`): v3
    /// 0x03, v5 0x88.
    Unavailable,
}

/// Decides what a connected client may publish, subscribe to and receive. Called per message:
/// it must not block.
pub trait Authorizer: Send + Sync {
    /// Whether `who` may read or write `topic`.
    fn allows(&self, who: &Identity, topic: &str, access: Access) -> bool;
    /// Whether `who` may subscribe to `filter` at all (what it matches is checked per message).
    fn may_subscribe(&self, who: &Identity, filter: &str) -> bool;
    /// Whether `who`'s will may be published to `topic` now. A will was checked when its
    /// CONNECT was (and dropped if refused); only what can change since is checked again.
    fn allows_will(&self, who: &Identity, topic: &str) -> bool {
        self.allows(who, topic, Access::Write)
    }
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

impl Files {
    /// A verified certificate (with `certificate_login`) lets in; a user the password file
    /// knows is let in or refused by its password; anyone else is for the next method.
    fn decide(&self, login: &Login) -> Decision {
        if login.certified && self.certificate_login {
            return Decision::Allow(Grant::default());
        }
        let (Some(user), Some(file)) = (&login.username, &self.passwords) else {
            return Decision::Ignore;
        };
        let Some(hash) = file.get(user) else {
            return Decision::Ignore;
        };
        match login.password.as_deref().is_some_and(|pw| hash.verify(pw)) {
            true => Decision::Allow(Grant::default()),
            false => Decision::Deny(Verdict::BadCredentials),
        }
    }

    /// Whether deciding `login` hashes a password: then it runs off the async threads.
    fn may_block(&self, login: &Login) -> bool {
        login.username.is_some()
            && self.passwords.is_some()
            && !(login.certified && self.certificate_login)
    }
}

/// One link of the chain.
enum Method {
    File(Arc<Files>),
    Jwt(Box<jwt::JwtAuth>),
    Http(Arc<hook::HttpHook>),
}

/// The ACL file, the client's own rights and the ACL hook, in that order of layers: a
/// superuser passes; otherwise every layer that exists must allow.
struct Layers {
    file: Option<AclFile>,
    hook: Option<Arc<hook::HttpHook>>,
}

impl Authorizer for Layers {
    fn allows(&self, who: &Identity, topic: &str, access: Access) -> bool {
        if let Some(r) = &who.rights {
            if r.superuser {
                return true;
            }
            if !r.allows(topic, access) {
                return false;
            }
        }
        if let Some(f) = &self.file {
            if !f.allows(who, topic, access) {
                return false;
            }
        }
        match (&self.hook, access) {
            // Asked before the PUBLISH is handled (`Auth::acl_questions`); a miss refuses.
            (Some(h), Access::Write) => h.cached(who, hook::Action::Publish, topic) == Some(true),
            // Deliveries are not asked about (as in EMQX): what a client receives is decided
            // when it subscribes.
            _ => true,
        }
    }

    /// As [`Layers::allows`], except that the ACL hook's answer at CONNECT stands unless a
    /// newer one refuses: a will is published when the client is gone, with no packet to ask
    /// the hook before.
    fn allows_will(&self, who: &Identity, topic: &str) -> bool {
        if who.rights.as_ref().is_some_and(|r| r.superuser) {
            return true;
        }
        if who
            .rights
            .as_ref()
            .is_some_and(|r| !r.allows(topic, Access::Write))
        {
            return false;
        }
        if self
            .file
            .as_ref()
            .is_some_and(|f| !f.allows(who, topic, Access::Write))
        {
            return false;
        }
        self.hook
            .as_ref()
            .is_none_or(|h| h.cached(who, hook::Action::Publish, topic) != Some(false))
    }

    fn may_subscribe(&self, who: &Identity, filter: &str) -> bool {
        if let Some(r) = &who.rights {
            if r.superuser {
                return true;
            }
            if !r.may_subscribe(filter) {
                return false;
            }
        }
        if let Some(f) = &self.file {
            if !f.may_subscribe(who, filter) {
                return false;
            }
        }
        match &self.hook {
            Some(h) => h.cached(who, hook::Action::Subscribe, filter) == Some(true),
            None => true,
        }
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
    /// `[auth.jwt]`.
    #[error("{0}")]
    Jwt(#[from] jwt::JwtError),
    /// `[auth.http]`.
    #[error("{0}")]
    Hook(String),
}

/// The rules in force: swapped whole by a reload.
struct Rules {
    methods: Vec<Method>,
    /// Some method checks user names (password file, JWT, HTTP hook): a user name nothing
    /// vouched for is then refused rather than taken as anonymous.
    checks_names: bool,
    authorizer: Option<Arc<dyn Authorizer>>,
    acl_hook: Option<Arc<hook::HttpHook>>,
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
    /// Whether the rules in force have an authorizer, and an ACL hook: every PUBLISH asks,
    /// and without either (the default) the answer costs no load of `rules` (which cost
    /// about 4% of a QoS 1 message's CPU). Set after `rules` under `reloading`, so a check
    /// sees the old rules or the new ones.
    authorizes: AtomicBool,
    hooks_acl: AtomicBool,
    reloading: Mutex<()>,
    /// Hash checks running at once: at most the number of cores, so a burst of logins cannot
    /// take every thread from message flow.
    hashing: tokio::sync::Semaphore,
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl Auth {
    /// The rules `config` names, files read now.
    pub fn new(config: &Config) -> Result<Auth, AuthError> {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Ok(Auth::with_rules(
            Rules::load(config)?,
            tokio::sync::Semaphore::new(cores),
        ))
    }

    fn with_rules(rules: Rules, hashing: tokio::sync::Semaphore) -> Auth {
        Auth {
            authorizes: AtomicBool::new(rules.authorizer.is_some()),
            hooks_acl: AtomicBool::new(rules.acl_hook.is_some()),
            reloading: Mutex::new(()),
            rules: ArcSwap::from_pointee(rules),
            hashing,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Everyone in, everything allowed: for state built without a configuration's files.
    pub fn permissive() -> Auth {
        let rules = Rules {
            methods: vec![Method::File(Arc::new(Files {
                passwords: None,
                certificate_login: true,
            }))],
            checks_names: false,
            authorizer: None,
            acl_hook: None,
        };
        Auth::with_rules(rules, tokio::sync::Semaphore::new(2))
    }

    /// Reads the files again (SIGHUP). On error the running rules stay.
    pub fn reload(&self, config: &Config) -> Result<(), AuthError> {
        let rules = Rules::load(config)?;
        let _one_at_a_time = self.reloading.lock();
        let (authorizes, hooks_acl) = (rules.authorizer.is_some(), rules.acl_hook.is_some());
        self.rules.store(Arc::new(rules));
        self.authorizes.store(authorizes, Ordering::Release);
        self.hooks_acl.store(hooks_acl, Ordering::Release);
        Ok(())
    }

    /// The authorizer in force, `None` when everything is allowed (no ACL file, no method
    /// that grants rights, no ACL hook).
    pub fn authorizer(&self) -> Option<Arc<dyn Authorizer>> {
        if !self.authorizes.load(Ordering::Acquire) {
            return None;
        }
        self.rules.load().authorizer.clone()
    }

    /// The ACL hook, if one is configured: what it has not answered yet must be asked
    /// (`HttpHook::ask_acl`) before a PUBLISH or SUBSCRIBE is checked, or the check refuses.
    pub fn acl_hook(&self) -> Option<Arc<hook::HttpHook>> {
        if !self.hooks_acl.load(Ordering::Acquire) {
            return None;
        }
        self.rules.load().acl_hook.clone()
    }

    /// Checks `login` from `peer` through the chain. A refusal is answered only after a delay
    /// that grows with the recent failures from the same address; other addresses are not
    /// slowed.
    pub async fn login(&self, login: Login, peer: IpAddr) -> Result<Grant, Verdict> {
        let rules = self.rules.load_full();
        let mut outcome = None;
        for method in &rules.methods {
            let decision = match method {
                Method::File(f) if f.may_block(&login) => {
                    self.decide_off_thread(Arc::clone(f), login.clone()).await
                }
                Method::File(f) => f.decide(&login),
                Method::Jwt(j) => j.decide(&login),
                Method::Http(h) => h.authenticate(&login).await,
            };
            match decision {
                Decision::Ignore => continue,
                Decision::Allow(g) => outcome = Some(Ok(g)),
                Decision::Deny(v) => outcome = Some(Err(v)),
            }
            break;
        }
        let outcome = outcome.unwrap_or_else(|| rules.undecided(&login));
        match &outcome {
            Ok(_) => {
                let mut failures = self.failures.lock();
                if !failures.is_empty() {
                    failures.remove(&peer);
                }
            }
            // The hook being down is not the client's failure: not slowed, not remembered.
            Err(Verdict::Unavailable) => {}
            Err(_) => tokio::time::sleep(self.note_failure(peer)).await,
        }
        outcome
    }

    /// Runs a password check on tokio's blocking threads, a few at a time.
    async fn decide_off_thread(&self, files: Arc<Files>, login: Login) -> Decision {
        match self.hashing.acquire().await {
            Ok(_permit) => tokio::task::spawn_blocking(move || files.decide(&login))
                .await
                .unwrap_or(Decision::Deny(Verdict::NotAuthorized)),
            Err(_) => Decision::Deny(Verdict::NotAuthorized),
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
        let checks_names = passwords.is_some() || a.jwt.is_some() || a.http.is_some();
        let files = Arc::new(Files {
            passwords,
            certificate_login: a.certificate_login,
        });
        let hook = a
            .http
            .as_ref()
            .map(hook::HttpHook::new)
            .transpose()
            .map_err(AuthError::Hook)?
            .map(Arc::new);
        let mut methods = Vec::new();
        for m in a.methods() {
            match m {
                AuthMethod::File => methods.push(Method::File(Arc::clone(&files))),
                AuthMethod::Jwt => {
                    if let Some(j) = &a.jwt {
                        methods.push(Method::Jwt(Box::new(jwt::JwtAuth::new(j)?)));
                    }
                }
                AuthMethod::Http => {
                    if let Some(h) = &hook {
                        methods.push(Method::Http(Arc::clone(h)));
                    }
                }
            }
        }
        let acl_hook = hook.filter(|h| h.asks_acl());
        // Without an ACL file, a method that may grant rights or an ACL hook, everything is
        // allowed and no check runs at all.
        let layered = acl.is_some() || a.jwt.is_some() || a.http.is_some();
        let authorizer = layered.then(|| {
            Arc::new(Layers {
                file: acl,
                hook: acl_hook.clone(),
            }) as Arc<dyn Authorizer>
        });
        Ok(Rules {
            methods,
            checks_names,
            authorizer,
            acl_hook,
        })
    }

    /// No method was decisive: a client without a user name (or with one, where nothing
    /// checks user names) gets in where anonymous access is allowed; a user name nothing
    /// vouched for is refused as bad credentials.
    fn undecided(&self, login: &Login) -> Result<Grant, Verdict> {
        if login.username.is_none() || !self.checks_names {
            match login.allow_anonymous {
                true => Ok(Grant::default()),
                false => Err(Verdict::NotAuthorized),
            }
        } else {
            Err(Verdict::BadCredentials)
        }
    }
}

/// Whether `config` names any way to authenticate: then anonymous access is off unless a
/// listener (or `[auth]`) turns it on.
pub fn authentication_configured(config: &Config) -> bool {
    config.auth.password_file.is_some()
        || config.auth.jwt.is_some()
        || config.auth.http.is_some()
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
            peer: "127.0.0.1:1".parse().unwrap(),
            listener: Arc::from("tcp:1883"),
            protocol_version: 4,
            cert_identity: None,
        }
    }

    /// The chain of a file-only configuration, run synchronously.
    fn check(files: Files, l: &Login) -> Result<(), Verdict> {
        let checks_names = files.passwords.is_some();
        let rules = Rules {
            methods: vec![Method::File(Arc::new(files))],
            checks_names,
            authorizer: None,
            acl_hook: None,
        };
        let Method::File(f) = &rules.methods[0] else {
            unreachable!()
        };
        match f.decide(l) {
            Decision::Allow(_) => Ok(()),
            Decision::Deny(v) => Err(v),
            Decision::Ignore => rules.undecided(l).map(|_| ()),
        }
    }

    #[test]
    fn password_file_decides_for_named_users() {
        let files = || {
            let mut file = PasswordFile::default();
            file.set("alice", passwd::Hash::new(b"right", 10));
            Files {
                passwords: Some(file),
                certificate_login: true,
            }
        };
        assert_eq!(
            check(files(), &login(Some("alice"), Some(b"right"), false)),
            Ok(())
        );
        assert_eq!(
            check(files(), &login(Some("alice"), Some(b"wrong"), true)),
            Err(Verdict::BadCredentials)
        );
        assert_eq!(
            check(files(), &login(Some("alice"), None, true)),
            Err(Verdict::BadCredentials)
        );
        assert_eq!(
            check(files(), &login(Some("bob"), Some(b"x"), true)),
            Err(Verdict::BadCredentials)
        );
        assert_eq!(
            check(files(), &login(None, None, false)),
            Err(Verdict::NotAuthorized)
        );
        assert_eq!(check(files(), &login(None, None, true)), Ok(()));
        let mut cert = login(Some("device-1"), None, false);
        cert.certified = true;
        assert_eq!(check(files(), &cert), Ok(()));
        let strict = Files {
            passwords: None,
            certificate_login: false,
        };
        assert_eq!(check(strict, &cert), Err(Verdict::NotAuthorized));
        // No password source: a user name proves nothing and counts as anonymous.
        let open = Files {
            passwords: None,
            certificate_login: true,
        };
        assert_eq!(check(open, &login(Some("x"), Some(b"y"), true)), Ok(()));
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
