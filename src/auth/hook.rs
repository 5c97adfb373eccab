//! The HTTP authentication and authorization hook (`[auth.http]`). For each CONNECT, Tern
//! POSTs JSON (`clientid`, `username`, `password`, `peer`, `listener`, `protocol_version`,
//! `cert_identity`) to `url`; a 200 answer `{"result": "allow"}` lets the client in (with
//! `is_superuser`, `publish` and `subscribe` lists if given), `"deny"` refuses it, `"ignore"`
//! passes to the next method; any other status or body is a refusal. With `acl_url`, each
//! (client, action, topic) is asked once per `cache_ttl_secs`.
//!
//! Requests go through one pooled HTTP/1.1 client, at most `max_concurrent` at once, each
//! bounded by `timeout_ms` (queueing included): a slow hook slows only the clients waiting
//! on it. A timeout, a refused connection or a 5xx is `on_error` (deny: 0x87, unavailable:
//! 0x88); every request is counted in `tern_auth_hook_requests_total{hook, result}`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Request, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use parking_lot::Mutex;
use serde::Deserialize;
use tokio::sync::Semaphore;
use tracing::{info, warn};

use super::grant::{Decision, Grant, Rights};
use super::{Identity, Login, Verdict};
use crate::config::{HttpHookConfig, OnError};
use crate::logged::clip;
use crate::metrics;

/// Largest answer body read, in bytes.
const MAX_BODY: usize = 64 * 1024;

/// What an ACL question is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// PUBLISH to a topic.
    Publish,
    /// SUBSCRIBE to a filter.
    Subscribe,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::Publish => "publish",
            Action::Subscribe => "subscribe",
        }
    }
}

/// Client id, user name, action, topic: a later login under the same client id as another
/// user never reads the first one's answers.
type CacheKey = (Arc<str>, Option<Arc<str>>, Action, Box<str>);

/// The hook's client, limits and ACL answers.
pub struct HttpHook {
    client: Client<HttpConnector, Full<Bytes>>,
    url: Uri,
    acl_url: Option<Uri>,
    timeout: Duration,
    on_error: OnError,
    permits: Semaphore,
    ttl: Duration,
    max_entries: usize,
    cache: Mutex<HashMap<CacheKey, (bool, Instant)>>,
}

/// Why a request got no usable answer.
enum Failure {
    /// No answer in time.
    Timeout,
    /// Connection refused or broken, or a 5xx: the hook is down.
    Down(String),
    /// An answer, but not one that allows: another status or an unreadable body.
    Refused(String),
}

/// The auth hook's answer body.
#[derive(Deserialize)]
struct AuthAnswer {
    result: String,
    #[serde(default)]
    is_superuser: bool,
    publish: Option<Vec<String>>,
    subscribe: Option<Vec<String>>,
}

/// The ACL hook's answer body.
#[derive(Deserialize)]
struct AclAnswer {
    result: String,
}

impl HttpHook {
    /// A hook for `config` (validated: the URLs parse).
    pub fn new(config: &HttpHookConfig) -> Result<HttpHook, String> {
        let parse = |u: &str| {
            u.parse::<Uri>()
                .map_err(|e| format!("[auth.http] url {u}: {e}"))
        };
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_millis(config.timeout_ms)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(config.max_concurrent)
            .build(connector);
        Ok(HttpHook {
            client,
            url: parse(&config.url)?,
            acl_url: config.acl_url.as_deref().map(parse).transpose()?,
            timeout: Duration::from_millis(config.timeout_ms),
            on_error: config.on_error,
            permits: Semaphore::new(config.max_concurrent),
            ttl: Duration::from_secs(config.cache_ttl_secs.max(1)),
            max_entries: config.cache_max_entries,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// Whether an ACL URL is configured.
    pub fn asks_acl(&self) -> bool {
        self.acl_url.is_some()
    }

    /// Asks the hook about `login`.
    pub async fn authenticate(&self, login: &Login) -> Decision {
        let body = serde_json::json!({
            "clientid": &*login.client_id,
            "username": login.username,
            "password": login.password.as_deref().map(String::from_utf8_lossy),
            "peer": login.peer.to_string(),
            "listener": &*login.listener,
            "protocol_version": login.protocol_version,
            "cert_identity": login.cert_identity,
        });
        let client_id = clip(&login.client_id).to_string();
        let answer = match self.post(&self.url, &body).await {
            Ok(a) => a,
            Err(f) => return self.failed(&client_id, "auth", f),
        };
        let answer: AuthAnswer = match serde_json::from_slice(&answer) {
            Ok(a) => a,
            Err(e) => {
                return self.failed(
                    &client_id,
                    "auth",
                    Failure::Refused(format!("unreadable answer: {e}")),
                )
            }
        };
        match answer.result.as_str() {
            "allow" => {
                metrics::auth_hook_request("auth", "allow");
                let username = login.username.as_deref().map(Arc::from);
                Decision::Allow(Grant {
                    username: None,
                    rights: Rights::from_lists(
                        answer.is_superuser,
                        answer.publish,
                        answer.subscribe,
                        &login.client_id,
                        username.as_ref(),
                    ),
                    expires_at: None,
                })
            }
            "ignore" => {
                metrics::auth_hook_request("auth", "ignore");
                Decision::Ignore
            }
            "deny" => {
                metrics::auth_hook_request("auth", "deny");
                info!(client_id = %client_id, "the HTTP hook refused the login");
                Decision::Deny(Verdict::NotAuthorized)
            }
            other => self.failed(
                &client_id,
                "auth",
                Failure::Refused(format!("result {:?}", clip(other))),
            ),
        }
    }

    /// Counts and logs a failed request; what it makes of the question.
    fn failed(&self, client_id: &str, hook: &'static str, f: Failure) -> Decision {
        let (result, why, down) = match f {
            Failure::Timeout => ("timeout", "no answer in time".to_string(), true),
            Failure::Down(why) => ("error", why, true),
            Failure::Refused(why) => ("refused", why, false),
        };
        metrics::auth_hook_request(hook, result);
        warn!(client_id = %client_id, hook, result, why = %why, "HTTP hook request failed; refused");
        match (down, self.on_error) {
            (true, OnError::Unavailable) => Decision::Deny(Verdict::Unavailable),
            _ => Decision::Deny(Verdict::NotAuthorized),
        }
    }

    /// The cached answer about `who` doing `action` on `topic`, if still fresh.
    pub fn cached(&self, who: &Identity, action: Action, topic: &str) -> Option<bool> {
        let key: CacheKey = (
            Arc::clone(&who.client_id),
            who.username.clone(),
            action,
            Box::from(topic),
        );
        let cache = self.cache.lock();
        cache
            .get(&key)
            .filter(|(_, at)| at.elapsed() < self.ttl)
            .map(|(ok, _)| *ok)
    }

    /// Asks the ACL hook about each `(action, topic)` the cache lacks, and caches the answers
    /// (a failed request is not cached: the check it was for refuses, the next one asks again).
    pub async fn ask_acl(&self, who: &Identity, questions: &[(Action, String)]) {
        let Some(url) = &self.acl_url else { return };
        for (action, topic) in questions {
            if self.cached(who, *action, topic).is_some() {
                continue;
            }
            let body = serde_json::json!({
                "clientid": &*who.client_id,
                "username": who.username.as_deref(),
                "action": action.as_str(),
                "topic": topic,
            });
            let client_id = clip(&who.client_id).to_string();
            let allowed = match self.post(url, &body).await {
                Ok(answer) => match serde_json::from_slice::<AclAnswer>(&answer) {
                    Ok(a) if a.result == "allow" => true,
                    Ok(_) => false,
                    Err(e) => {
                        self.failed(
                            &client_id,
                            "acl",
                            Failure::Refused(format!("unreadable answer: {e}")),
                        );
                        continue;
                    }
                },
                Err(f) => {
                    self.failed(&client_id, "acl", f);
                    continue;
                }
            };
            metrics::auth_hook_request("acl", if allowed { "allow" } else { "deny" });
            self.remember(who, *action, topic, allowed);
        }
    }

    fn remember(&self, who: &Identity, action: Action, topic: &str, allowed: bool) {
        let now = Instant::now();
        let mut cache = self.cache.lock();
        if cache.len() >= self.max_entries {
            cache.retain(|_, (_, at)| now.duration_since(*at) < self.ttl);
            if cache.len() >= self.max_entries {
                cache.clear();
            }
        }
        cache.insert(
            (
                Arc::clone(&who.client_id),
                who.username.clone(),
                action,
                Box::from(topic),
            ),
            (allowed, now),
        );
    }

    /// POSTs `body` to `url`; the 200 answer's body. Waiting for a permit counts against the
    /// timeout.
    async fn post(&self, url: &Uri, body: &serde_json::Value) -> Result<Bytes, Failure> {
        let request = async {
            let _permit = self
                .permits
                .acquire()
                .await
                .map_err(|e| Failure::Down(e.to_string()))?;
            let req = Request::post(url.clone())
                .header(hyper::header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(body.to_string())))
                .map_err(|e| Failure::Down(e.to_string()))?;
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| Failure::Down(format!("{e:?}")))?;
            let status = resp.status();
            if status.is_server_error() {
                return Err(Failure::Down(format!("status {status}")));
            }
            if status != StatusCode::OK {
                return Err(Failure::Refused(format!("status {status}")));
            }
            Limited::new(resp.into_body(), MAX_BODY)
                .collect()
                .await
                .map(|b| b.to_bytes())
                .map_err(|e| Failure::Refused(format!("body: {e}")))
        };
        match tokio::time::timeout(self.timeout, request).await {
            Ok(r) => r,
            Err(_) => Err(Failure::Timeout),
        }
    }
}
