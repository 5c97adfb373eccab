//! `[auth]` beyond the Mosquitto files: the order of the authentication methods
//! (`chain`), JWT (`[auth.jwt]`) and the HTTP hook (`[auth.http]`).

use std::path::PathBuf;

use serde::Deserialize;

/// One way of authenticating a CONNECT, as `[auth] chain` names it.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// The password file and verified client certificates.
    File,
    /// A JSON Web Token in the password (or user name).
    Jwt,
    /// The HTTP authentication hook.
    Http,
}

/// Where a CONNECT carries its token.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TokenIn {
    /// The password field.
    #[default]
    Password,
    /// The user name field.
    Username,
}

/// `[auth.jwt]`: verify a JSON Web Token.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct JwtConfig {
    /// HS256/384/512: the shared secret, the file's bytes as they are.
    pub secret_file: Option<PathBuf>,
    /// HS256/384/512: the shared secret, from this environment variable.
    pub secret_env: Option<String>,
    /// RS*, PS*, ES256/384, EdDSA: a public key (PEM, `PUBLIC KEY` or `RSA PUBLIC KEY`).
    pub public_key_file: Option<PathBuf>,
    /// A JWKS file (`{"keys": [...]}`), read again when it changes.
    pub jwks_file: Option<PathBuf>,
    /// Algorithms accepted; default: every one the key type allows.
    pub algorithms: Option<Vec<String>>,
    /// Leeway on `exp` and `nbf`, in seconds.
    pub clock_skew_secs: u64,
    /// The claim that names the user.
    pub username_claim: String,
    /// Where the token is.
    pub token_in: TokenIn,
    /// Required `iss`.
    pub issuer: Option<String>,
    /// Required `aud` (one of the token's audiences).
    pub audience: Option<String>,
    /// A claim the client id must equal.
    pub client_id_claim: Option<String>,
}

impl Default for JwtConfig {
    fn default() -> Self {
        JwtConfig {
            secret_file: None,
            secret_env: None,
            public_key_file: None,
            jwks_file: None,
            algorithms: None,
            clock_skew_secs: 30,
            username_claim: "sub".to_string(),
            token_in: TokenIn::Password,
            issuer: None,
            audience: None,
            client_id_claim: None,
        }
    }
}

/// Algorithm names `[auth.jwt] algorithms` accepts.
pub const JWT_ALGORITHMS: &[&str] = &[
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256",
    "ES384", "EdDSA",
];

impl JwtConfig {
    /// The first key with a value it does not allow, and what is allowed.
    pub(super) fn problem(&self) -> Option<(&'static str, &'static str)> {
        let sources = [
            self.secret_file.is_some(),
            self.secret_env.is_some(),
            self.public_key_file.is_some(),
            self.jwks_file.is_some(),
        ];
        if sources.iter().filter(|s| **s).count() != 1 {
            return Some((
                "auth.jwt.secret_file",
                "exactly one of secret_file, secret_env, public_key_file and jwks_file",
            ));
        }
        if self.secret_env.as_deref() == Some("") {
            return Some(("auth.jwt.secret_env", "the name of an environment variable"));
        }
        if let Some(algs) = &self.algorithms {
            if algs.is_empty() || !algs.iter().all(|a| JWT_ALGORITHMS.contains(&a.as_str())) {
                return Some((
                    "auth.jwt.algorithms",
                    "a non-empty list of \"HS256\", \"HS384\", \"HS512\", \"RS256\", \"RS384\", \
                     \"RS512\", \"PS256\", \"PS384\", \"PS512\", \"ES256\", \"ES384\", \"EdDSA\"",
                ));
            }
        }
        if self.clock_skew_secs > 3_600 {
            return Some(("auth.jwt.clock_skew_secs", "0 to 3600 seconds"));
        }
        if self.username_claim.is_empty() {
            return Some(("auth.jwt.username_claim", "a claim name (default \"sub\")"));
        }
        if self.client_id_claim.as_deref() == Some("") {
            return Some(("auth.jwt.client_id_claim", "a claim name, or leave it out"));
        }
        None
    }
}

/// What a failed hook request (timeout, refused connection, 5xx) makes of a CONNECT.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// CONNACK 0x87 Not authorized (v3.1.1: 0x05).
    #[default]
    Deny,
    /// CONNACK 0x88 Server unavailable (v3.1.1: 0x03).
    Unavailable,
}

/// `[auth.http]`: ask an HTTP service who may connect (and, with `acl_url`, what they may do).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpHookConfig {
    /// Where CONNECTs are POSTed (`http://host:port/path`).
    pub url: String,
    /// Where (client, action, topic) questions are POSTed; none: no ACL hook.
    pub acl_url: Option<String>,
    /// Per request, in milliseconds.
    pub timeout_ms: u64,
    /// How long an ACL answer is kept, in seconds (0: not kept; every check asks).
    pub cache_ttl_secs: u64,
    /// ACL answers kept at most.
    pub cache_max_entries: usize,
    /// Requests in flight at once; more wait their turn.
    pub max_concurrent: usize,
    /// What a failed request makes of a CONNECT.
    pub on_error: OnError,
}

impl Default for HttpHookConfig {
    fn default() -> Self {
        HttpHookConfig {
            url: String::new(),
            acl_url: None,
            timeout_ms: 2_000,
            cache_ttl_secs: 60,
            cache_max_entries: 100_000,
            max_concurrent: 64,
            on_error: OnError::Deny,
        }
    }
}

/// Whether `url` is a plain `http://host[:port]/...` URL the hook client can use.
pub fn valid_hook_url(url: &str) -> bool {
    url.parse::<hyper::Uri>()
        .is_ok_and(|u| u.scheme_str() == Some("http") && u.host().is_some_and(|h| !h.is_empty()))
}

impl HttpHookConfig {
    /// The first key with a value it does not allow, and what is allowed.
    pub(super) fn problem(&self) -> Option<(&'static str, &'static str)> {
        const URL: &str = "an http:// URL with a host, e.g. \"http://127.0.0.1:8080/mqtt/auth\" \
                           (https is not supported: keep the hook on loopback or a private network)";
        if !valid_hook_url(&self.url) {
            return Some(("auth.http.url", URL));
        }
        if self.acl_url.as_deref().is_some_and(|u| !valid_hook_url(u)) {
            return Some(("auth.http.acl_url", URL));
        }
        if !(1..=60_000).contains(&self.timeout_ms) {
            return Some(("auth.http.timeout_ms", "1 to 60000 milliseconds"));
        }
        if self.cache_ttl_secs > 86_400 {
            return Some(("auth.http.cache_ttl_secs", "0 to 86400 seconds"));
        }
        if !(1..=10_000_000).contains(&self.cache_max_entries) {
            return Some(("auth.http.cache_max_entries", "1 to 10000000"));
        }
        if !(1..=4_096).contains(&self.max_concurrent) {
            return Some(("auth.http.max_concurrent", "1 to 4096"));
        }
        None
    }
}
