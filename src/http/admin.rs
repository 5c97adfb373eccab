//! The admin API under `/api/v1/`: JSON over HTTP for operators and scripts. Off unless a
//! bearer token is configured; every request names it (`Authorization: Bearer …`, compared in
//! constant time), refused ones are 401 and counted. Lists are paged by cursor
//! (`?limit=&after=`, `{"clients": [...], "next": cursor|null}`); bad input is 400 naming the
//! field; a missing client, session or topic is 404. Nothing here waits on a client, except a
//! disconnect, which waits (boundedly) for the connection to hand its session back, so a
//! following request sees the result.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::{FromRequestParts, Path, RawQuery};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::RequestPartsExt;
use axum::Router;
use base64::Engine;
use bytes::Bytes;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{HttpError, Ops};
use crate::broker::{BrokerState, ClientInfo, RetainedDelete, SessionView, SubscriptionView};
use crate::config::HttpConfig;
use crate::protocol::{Publish, PublishProperties, QoS};
use crate::session::{Message, NEVER_EXPIRES};

/// Items per page unless `limit` says otherwise.
const DEFAULT_LIMIT: usize = 100;
/// Most items per page.
const MAX_LIMIT: usize = 1000;
/// How long a disconnect waits for the connection to hand its session back.
const DISCONNECT_WAIT: Duration = Duration::from_secs(5);
/// How long a publish or retained delete waits for the store (or the cluster) to have it.
const STORE_WAIT: Duration = Duration::from_secs(10);

/// The admin API's bearer token, kept as its SHA-256 so comparisons take the same time
/// whatever the length or content of what a request presents.
pub(super) struct Token([u8; 32]);

impl Token {
    /// The token from `admin_token_file` or `admin_token_env`, trimmed; `None` when neither
    /// is set (the API is off).
    pub(super) fn load(config: &HttpConfig) -> Result<Option<Token>, HttpError> {
        let (key, raw) = match (&config.admin_token_file, &config.admin_token_env) {
            (Some(file), _) => (
                "admin_token_file",
                std::fs::read_to_string(file).map_err(|e| HttpError::Token {
                    key: "admin_token_file",
                    message: format!("cannot read {}: {e}", file.display()),
                })?,
            ),
            (None, Some(var)) => (
                "admin_token_env",
                std::env::var(var).map_err(|_| HttpError::Token {
                    key: "admin_token_env",
                    message: format!("environment variable {var} is not set (or not UTF-8)"),
                })?,
            ),
            (None, None) => return Ok(None),
        };
        let token = raw.trim();
        if token.is_empty() {
            return Err(HttpError::Token {
                key,
                message: "the token is empty".into(),
            });
        }
        Ok(Some(Token(Sha256::digest(token.as_bytes()).into())))
    }

    fn admits(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        digest.ct_eq(&self.0).into()
    }
}

/// The routes under `/api/v1`.
pub(super) fn routes() -> Router<Arc<Ops>> {
    Router::new()
        .route("/clients", get(list_clients))
        .route("/clients/{id}", get(get_client).delete(disconnect_client))
        .route("/sessions", get(list_sessions))
        .route("/sessions/{id}", get(get_session).delete(end_session))
        .route("/subscriptions", get(list_subscriptions))
        .route("/retained", get(list_retained))
        .route(
            "/retained/{*topic}",
            get(get_retained).delete(delete_retained),
        )
        .route("/publish", post(publish))
        .route("/queues", get(queues))
        .route("/listeners", get(listeners))
        .route("/stats", get(stats))
        .route("/cluster", get(cluster))
        .fallback(unknown)
}

/// An answer other than success: `{"error": ..., "field": ...}`.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    error: String,
    field: Option<&'static str>,
}

impl ApiError {
    fn bad(field: &'static str, error: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            error: error.into(),
            field: Some(field),
        }
    }

    fn not_found(error: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            error: error.into(),
            field: None,
        }
    }

    fn status(status: StatusCode, error: impl Into<String>) -> ApiError {
        ApiError {
            status,
            error: error.into(),
            field: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.error });
        if let Some(field) = self.field {
            body["field"] = json!(field);
        }
        let mut response = reply(self.status, &body);
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"tern\""),
            );
        }
        response
    }
}

/// `body` as JSON, never cached (it describes this instant).
fn reply(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body.to_string(),
    )
        .into_response()
}

fn ok(body: Value) -> Result<Response, ApiError> {
    Ok(reply(StatusCode::OK, &body))
}

/// A request that passed the token check, with the broker to answer from.
struct Admin(Arc<BrokerState>);

impl FromRequestParts<Arc<Ops>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, ops: &Arc<Ops>) -> Result<Admin, ApiError> {
        let Some(token) = &ops.token else {
            return Err(ApiError::not_found("admin API is disabled"));
        };
        let presented = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, rest) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
            });
        if !presented.is_some_and(|p| token.admits(p)) {
            crate::metrics::admin_unauthorized();
            return Err(ApiError::status(
                StatusCode::UNAUTHORIZED,
                "missing or wrong bearer token",
            ));
        }
        match ops.state.get() {
            Some(state) => Ok(Admin(Arc::clone(state))),
            None => Err(ApiError::status(
                StatusCode::SERVICE_UNAVAILABLE,
                "starting: the store is being read back",
            )),
        }
    }
}

/// The client id or topic in a path, percent-decoded; a 400 naming it when it does not decode
/// to UTF-8.
struct Segment(String);

impl FromRequestParts<Arc<Ops>> for Segment {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &Arc<Ops>) -> Result<Segment, ApiError> {
        let field = if parts.uri.path().contains("/retained/") {
            "topic"
        } else {
            "id"
        };
        match parts.extract::<Path<String>>().await {
            Ok(Path(s)) => Ok(Segment(s)),
            Err(e) => Err(ApiError::bad(
                field,
                format!("not a percent-encoded UTF-8 string: {e}"),
            )),
        }
    }
}

async fn unknown(_: Admin) -> ApiError {
    ApiError::not_found("no such endpoint (see README, \"Admin API and status page\")")
}

/// A request's query parameters; each endpoint takes the ones it knows and refuses others.
struct Query(HashMap<String, String>);

impl Query {
    fn parse(raw: Option<String>, known: &[&'static str]) -> Result<Query, ApiError> {
        let mut params = HashMap::new();
        for (k, v) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
            let Some(field) = known.iter().find(|f| **f == k) else {
                return Err(ApiError::bad(
                    "query",
                    format!("unknown parameter {k:?}; this endpoint takes {known:?}"),
                ));
            };
            if params.insert(k.into_owned(), v.into_owned()).is_some() {
                return Err(ApiError::bad(field, "given more than once"));
            }
        }
        Ok(Query(params))
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// `limit`: 1 to 1000, default 100.
    fn limit(&self) -> Result<usize, ApiError> {
        match self.get("limit") {
            None => Ok(DEFAULT_LIMIT),
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_LIMIT).contains(n))
                .ok_or_else(|| ApiError::bad("limit", "an integer from 1 to 1000")),
        }
    }
}

/// The page of `items` (sorted by key) after `after`, and the cursor of the next page.
fn page<T>(
    mut items: Vec<T>,
    key: impl Fn(&T) -> String,
    after: Option<&str>,
    limit: usize,
) -> (Vec<T>, Option<String>) {
    items.sort_by_cached_key(|t| key(t));
    if let Some(after) = after {
        items.retain(|t| key(t).as_str() > after);
    }
    let next = (items.len() > limit).then(|| key(&items[limit - 1]));
    items.truncate(limit);
    (items, next)
}

/// Subscriptions per client id.
fn subscription_counts(state: &BrokerState) -> HashMap<Arc<str>, usize> {
    let mut counts = HashMap::new();
    for s in state.subscription_views() {
        *counts.entry(s.client_id).or_insert(0) += 1;
    }
    counts
}

fn client_json(state: &BrokerState, v: &SessionView, info: &ClientInfo, subs: usize) -> Value {
    let (queued, bytes) = v.mailbox.depth();
    json!({
        "client_id": &*v.client_id,
        "username": state.username(&v.client_id).as_deref(),
        "peer": info.peer().to_string(),
        "listener": state.listener_name(info.listener()),
        "protocol_version": info.version(),
        "keepalive_secs": info.keep_alive,
        "connected_at": info.connected_at,
        "session_expiry_interval": info.expiry_interval,
        "subscriptions": subs,
        "inflight": info.inflight(),
        "queued_messages": queued,
        "queued_bytes": bytes,
        "messages_in": info.messages_in(),
        "messages_out": info.messages_out(),
    })
}

fn subscription_json(s: &SubscriptionView) -> Value {
    json!({
        "client_id": &*s.client_id,
        "filter": s.filter,
        "qos": s.options.qos as u8,
        "no_local": s.options.no_local,
        "retain_as_published": s.options.retain_as_published,
        "retain_handling": s.options.retain_handling as u8,
        "identifier": s.identifier,
    })
}

/// `GET /clients`: connected clients, by client id.
async fn list_clients(Admin(state): Admin, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let q = Query::parse(q, &["limit", "after", "prefix", "username", "listener"])?;
    let limit = q.limit()?;
    let connected: Vec<(SessionView, Arc<ClientInfo>)> = state
        .session_views(None)
        .into_iter()
        .filter_map(|v| v.info.clone().map(|i| (v, i)))
        .filter(|(v, i)| {
            q.get("prefix").is_none_or(|p| v.client_id.starts_with(p))
                && q.get("listener")
                    .is_none_or(|l| state.listener_name(i.listener()) == l)
                && q.get("username")
                    .is_none_or(|u| state.username(&v.client_id).as_deref() == Some(u))
        })
        .collect();
    let (items, next) = page(
        connected,
        |(v, _)| v.client_id.to_string(),
        q.get("after"),
        limit,
    );
    let counts = subscription_counts(&state);
    let clients: Vec<Value> = items
        .iter()
        .map(|(v, i)| client_json(&state, v, i, counts.get(&v.client_id).copied().unwrap_or(0)))
        .collect();
    ok(json!({ "clients": clients, "next": next }))
}

/// `GET /clients/{id}`: one connected client, with its subscriptions.
async fn get_client(Admin(state): Admin, Segment(id): Segment) -> Result<Response, ApiError> {
    let not_connected = || ApiError::not_found(format!("client {id:?} is not connected"));
    let view = state
        .session_views(Some(&id))
        .pop()
        .ok_or_else(not_connected)?;
    let info = view.info.clone().ok_or_else(not_connected)?;
    let mut subs: Vec<SubscriptionView> = state
        .subscription_views()
        .into_iter()
        .filter(|s| *s.client_id == *id)
        .collect();
    subs.sort_by(|a, b| a.filter.cmp(&b.filter));
    let mut body = client_json(&state, &view, &info, subs.len());
    body["subscription_list"] = subs.iter().map(subscription_json).collect();
    ok(body)
}

/// `session=keep` (default) or `discard`.
fn discard(q: &Query) -> Result<bool, ApiError> {
    match q.get("session") {
        None | Some("keep") => Ok(false),
        Some("discard") => Ok(true),
        Some(_) => Err(ApiError::bad("session", "\"keep\" or \"discard\"")),
    }
}

/// `DELETE /clients/{id}`: disconnects it (v5: DISCONNECT 0x98 Administrative action);
/// `?session=discard` ends its session too. Answers once the connection is gone.
async fn disconnect_client(
    Admin(state): Admin,
    Segment(id): Segment,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let q = Query::parse(q, &["session"])?;
    let discard = discard(&q)?;
    if !state.disconnect_client(&id, discard) {
        return Err(ApiError::not_found(format!(
            "client {id:?} is not connected"
        )));
    }
    tracing::info!(client_id = %crate::logged::clip(&id), discard, "client disconnected by an operator");
    let gone = state.wait_disconnected(&id, DISCONNECT_WAIT).await;
    ok(json!({
        "client_id": id,
        "session": if discard { "discarded" } else { "kept" },
        "disconnected": gone,
    }))
}

fn session_json(v: &SessionView, subs: usize) -> Value {
    let (queued, bytes) = v.mailbox.depth();
    let (connected, interval, expires_in) = match (&v.parked, &v.info) {
        (Some(p), _) => {
            let now = SystemTime::now();
            let left = p
                .expires_at
                .map(|at| at.duration_since(now).map_or(0, |d| d.as_secs()));
            (false, p.expiry_interval, left)
        }
        // Connected: the countdown starts when the connection ends.
        (None, Some(i)) => (true, i.expiry_interval, Some(u64::from(i.expiry_interval))),
        (None, None) => (true, NEVER_EXPIRES, None),
    };
    let never = interval == NEVER_EXPIRES;
    json!({
        "client_id": &*v.client_id,
        "connected": connected,
        "subscriptions": subs,
        "queued_messages": queued,
        "queued_bytes": bytes,
        "expiry_interval_secs": (!never).then_some(interval),
        "expires_in_secs": if never { None } else { expires_in },
    })
}

/// `GET /sessions`: every session, connected or not, by client id.
async fn list_sessions(Admin(state): Admin, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let q = Query::parse(q, &["limit", "after", "prefix", "connected"])?;
    let limit = q.limit()?;
    let connected = match q.get("connected") {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(_) => return Err(ApiError::bad("connected", "true or false")),
    };
    let views: Vec<SessionView> = state
        .session_views(None)
        .into_iter()
        .filter(|v| q.get("prefix").is_none_or(|p| v.client_id.starts_with(p)))
        .filter(|v| connected.is_none_or(|c| c == v.parked.is_none()))
        .collect();
    let (items, next) = page(views, |v| v.client_id.to_string(), q.get("after"), limit);
    let counts = subscription_counts(&state);
    let sessions: Vec<Value> = items
        .iter()
        .map(|v| session_json(v, counts.get(&v.client_id).copied().unwrap_or(0)))
        .collect();
    ok(json!({ "sessions": sessions, "next": next }))
}

/// `GET /sessions/{id}`.
async fn get_session(Admin(state): Admin, Segment(id): Segment) -> Result<Response, ApiError> {
    let view = state
        .session_views(Some(&id))
        .pop()
        .ok_or_else(|| ApiError::not_found(format!("no session for client {id:?}")))?;
    let subs = state
        .subscription_views()
        .iter()
        .filter(|s| *s.client_id == *id)
        .count();
    ok(session_json(&view, subs))
}

/// `DELETE /sessions/{id}`: ends the session now (a connected client is disconnected with
/// 0x98 first); its pending will is published, as at expiry.
async fn end_session(Admin(state): Admin, Segment(id): Segment) -> Result<Response, ApiError> {
    let was_connected = state.disconnect_client(&id, true);
    let ended = if was_connected {
        state.wait_disconnected(&id, DISCONNECT_WAIT).await
    } else {
        state.end_parked_session(&id)
    };
    if !was_connected && !ended {
        return Err(ApiError::not_found(format!("no session for client {id:?}")));
    }
    ok(json!({ "client_id": id, "ended": ended, "was_connected": was_connected }))
}

/// `GET /subscriptions?filter=&client=`: by client id, then filter.
async fn list_subscriptions(
    Admin(state): Admin,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let q = Query::parse(q, &["limit", "after", "filter", "client"])?;
    let limit = q.limit()?;
    let subs: Vec<SubscriptionView> = state
        .subscription_views()
        .into_iter()
        .filter(|s| q.get("filter").is_none_or(|f| s.filter == f))
        .filter(|s| q.get("client").is_none_or(|c| *s.client_id == *c))
        .collect();
    // Neither a client id nor a filter can hold U+0000 [MQTT-1.5.4-2]: the pair is unambiguous.
    let key = |s: &SubscriptionView| format!("{}\u{0}{}", s.client_id, s.filter);
    let (items, next) = page(subs, key, q.get("after"), limit);
    let subscriptions: Vec<Value> = items.iter().map(subscription_json).collect();
    ok(json!({ "subscriptions": subscriptions, "next": next }))
}

fn retained_json(m: &Message) -> Value {
    let p = &m.publish;
    let (payload, encoding) = match std::str::from_utf8(&p.payload) {
        Ok(text) => (text.to_owned(), "text"),
        Err(_) => (
            base64::engine::general_purpose::STANDARD.encode(&p.payload),
            "base64",
        ),
    };
    let props = &p.properties;
    json!({
        "topic": p.topic,
        "qos": p.qos as u8,
        "bytes": p.payload.len(),
        "payload": payload,
        "payload_encoding": encoding,
        "properties": {
            "content_type": props.content_type,
            "response_topic": props.response_topic,
            "payload_format_indicator": props.payload_format_indicator,
            "message_expiry_interval": props.message_expiry_interval,
            "user_properties": props.user_properties,
        },
    })
}

/// `GET /retained?filter=`: retained messages matching the filter (default `#`), by topic.
async fn list_retained(Admin(state): Admin, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let q = Query::parse(q, &["limit", "after", "filter"])?;
    let limit = q.limit()?;
    let filter = q.get("filter").unwrap_or("#");
    let levels = state.config().limits.max_topic_levels;
    crate::topic::validate_topic_filter(filter, levels)
        .map_err(|e| ApiError::bad("filter", format!("not a valid topic filter: {e}")))?;
    if filter.starts_with("$share/") || filter.starts_with("$queue/") {
        return Err(ApiError::bad(
            "filter",
            "a plain topic filter (no $share/ or $queue/)",
        ));
    }
    let (messages, next) = state.retained_page(filter, q.get("after"), limit);
    let retained: Vec<Value> = messages.iter().map(|m| retained_json(m)).collect();
    ok(json!({ "retained": retained, "next": next }))
}

/// `GET /retained/{topic}`.
async fn get_retained(Admin(state): Admin, Segment(topic): Segment) -> Result<Response, ApiError> {
    let levels = state.config().limits.max_topic_levels;
    crate::topic::validate_topic_name(&topic, levels)
        .map_err(|e| ApiError::bad("topic", format!("not a valid topic name: {e}")))?;
    let (mut found, _) = state.retained_page(&topic, None, 1);
    match found.pop() {
        Some(m) => ok(retained_json(&m)),
        None => Err(ApiError::not_found(format!(
            "no retained message for topic {topic:?}"
        ))),
    }
}

/// `DELETE /retained/{topic}`: without telling subscribers.
async fn delete_retained(
    Admin(state): Admin,
    Segment(topic): Segment,
) -> Result<Response, ApiError> {
    match state.delete_retained(&topic) {
        RetainedDelete::NotFound => Err(ApiError::not_found(format!(
            "no retained message for topic {topic:?}"
        ))),
        RetainedDelete::Deleted(ticket) => {
            if let Some(ticket) = ticket {
                stored(ticket).await?;
            }
            tracing::info!(topic = %crate::logged::clip(&topic), "retained message deleted by an operator");
            ok(json!({ "topic": topic, "deleted": true }))
        }
    }
}

/// Waits for the store (or the cluster) to have a write: 503 if it fails or takes too long.
async fn stored(ticket: crate::store::Ticket) -> Result<(), ApiError> {
    match tokio::time::timeout(STORE_WAIT, ticket.wait()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(ApiError::status(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not stored: {e}"),
        )),
        Err(_) => Err(ApiError::status(
            StatusCode::SERVICE_UNAVAILABLE,
            "not stored within 10 s",
        )),
    }
}

/// `POST /publish`: `{"topic", "payload", "payload_encoding": "text"|"base64", "qos",
/// "retain", "properties": {...}}`. Published as by a client that may publish anywhere
/// (except `$SYS`); QoS 1/2 answers once the message is as durable as a client's PUBACK
/// would promise.
async fn publish(Admin(state): Admin, body: Bytes) -> Result<Response, ApiError> {
    let body: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad("body", format!("not JSON: {e}")))?;
    let publish = parse_publish(&state, &body)?;
    if let Some(remote) = state.remote() {
        remote
            .fits(&publish.topic, publish.payload.len())
            .map_err(|e| ApiError::bad("payload", format!("{e:?}")))?;
    }
    let (topic, qos) = (publish.topic.clone(), publish.qos);
    let msg = Arc::new(Message::new(publish, None, std::time::Instant::now()));
    let published = state.publish(msg, None);
    if let Some(ticket) = published.durable {
        stored(ticket).await?;
    }
    let o = published.outcome;
    ok(json!({
        "topic": topic,
        "qos": qos as u8,
        "delivered": o.delivered,
        "queued": o.queued,
        "forwarded_to_cluster": o.forwarded,
    }))
}

fn parse_publish(state: &BrokerState, body: &Value) -> Result<Publish, ApiError> {
    let obj = body
        .as_object()
        .ok_or_else(|| ApiError::bad("body", "a JSON object"))?;
    const KNOWN: [&str; 6] = [
        "topic",
        "payload",
        "payload_encoding",
        "qos",
        "retain",
        "properties",
    ];
    if let Some(k) = obj.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(ApiError::bad("body", format!("unknown field {k:?}")));
    }
    let topic = obj
        .get("topic")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad("topic", "a topic name (string) is required"))?;
    let levels = state.config().limits.max_topic_levels;
    crate::topic::validate_topic_name(topic, levels)
        .map_err(|e| ApiError::bad("topic", format!("not a valid topic name: {e}")))?;
    if topic.starts_with("$SYS") {
        return Err(ApiError::bad("topic", "$SYS topics are the broker's own"));
    }
    let text = str_field(obj, "payload")?.unwrap_or("");
    let payload = match str_field(obj, "payload_encoding")?.unwrap_or("text") {
        "text" => Bytes::copy_from_slice(text.as_bytes()),
        "base64" => Bytes::from(
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|e| ApiError::bad("payload", format!("not base64: {e}")))?,
        ),
        _ => return Err(ApiError::bad("payload_encoding", "\"text\" or \"base64\"")),
    };
    let max = state.config().limits.max_packet_size as usize;
    if payload.len() + topic.len() + 16 > max {
        return Err(ApiError::bad(
            "payload",
            format!("larger than limits.max_packet_size ({max} bytes)"),
        ));
    }
    let qos = match obj.get("qos").map(Value::as_u64) {
        None => QoS::AtMostOnce,
        Some(Some(0)) => QoS::AtMostOnce,
        Some(Some(1)) => QoS::AtLeastOnce,
        Some(Some(2)) => QoS::ExactlyOnce,
        Some(_) => return Err(ApiError::bad("qos", "0, 1 or 2")),
    };
    let retain = match obj.get("retain") {
        None => false,
        Some(v) => v
            .as_bool()
            .ok_or_else(|| ApiError::bad("retain", "true or false"))?,
    };
    let properties = match obj.get("properties") {
        None | Some(Value::Null) => PublishProperties::default(),
        Some(Value::Object(p)) => parse_properties(p)?,
        Some(_) => return Err(ApiError::bad("properties", "an object")),
    };
    Ok(Publish {
        dup: false,
        qos,
        retain,
        topic: topic.to_owned(),
        pkid: 0,
        payload,
        properties: properties.into(),
    })
}

fn str_field<'a>(
    obj: &'a Map<String, Value>,
    key: &'static str,
) -> Result<Option<&'a str>, ApiError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ApiError::bad(key, "a string")),
    }
}

/// v5 properties a publisher may set.
fn parse_properties(p: &Map<String, Value>) -> Result<PublishProperties, ApiError> {
    const KNOWN: [&str; 6] = [
        "content_type",
        "response_topic",
        "correlation_data",
        "message_expiry_interval",
        "payload_format_indicator",
        "user_properties",
    ];
    if let Some(k) = p.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(ApiError::bad(
            "properties",
            format!("unknown property {k:?}"),
        ));
    }
    let mut props = PublishProperties {
        content_type: str_field(p, "content_type")?.map(str::to_owned),
        response_topic: str_field(p, "response_topic")?.map(str::to_owned),
        correlation_data: str_field(p, "correlation_data")?
            .map(|s| Bytes::copy_from_slice(s.as_bytes())),
        ..PublishProperties::default()
    };
    if let Some(t) = &props.response_topic {
        crate::topic::validate_topic_name(t, usize::MAX).map_err(|e| {
            ApiError::bad(
                "properties.response_topic",
                format!("not a topic name: {e}"),
            )
        })?;
    }
    if let Some(v) = p.get("message_expiry_interval").filter(|v| !v.is_null()) {
        props.message_expiry_interval = Some(
            v.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| {
                    ApiError::bad(
                        "properties.message_expiry_interval",
                        "seconds, 0 to 4294967295",
                    )
                })?,
        );
    }
    if let Some(v) = p.get("payload_format_indicator").filter(|v| !v.is_null()) {
        props.payload_format_indicator = Some(match v.as_u64() {
            Some(0) => 0,
            Some(1) => 1,
            _ => {
                return Err(ApiError::bad(
                    "properties.payload_format_indicator",
                    "0 or 1",
                ))
            }
        });
    }
    match p.get("user_properties") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            for (k, v) in m {
                let v = v
                    .as_str()
                    .ok_or_else(|| ApiError::bad("properties.user_properties", "string values"))?;
                props.user_properties.push((k.clone(), v.to_owned()));
            }
        }
        Some(Value::Array(pairs)) => {
            for pair in pairs {
                match pair.as_array().map(Vec::as_slice) {
                    Some([Value::String(k), Value::String(v)]) => {
                        props.user_properties.push((k.clone(), v.clone()))
                    }
                    _ => {
                        return Err(ApiError::bad(
                            "properties.user_properties",
                            "an object of strings, or an array of [name, value] pairs",
                        ))
                    }
                }
            }
        }
        Some(_) => {
            return Err(ApiError::bad(
                "properties.user_properties",
                "an object of strings, or an array of [name, value] pairs",
            ))
        }
    }
    Ok(props)
}

/// `GET /queues`: every declared queue and shared group with its backlog, biggest first.
async fn queues(Admin(state): Admin) -> Result<Response, ApiError> {
    let mut all: Vec<(&str, crate::metrics::Backlog)> = state
        .queue_figures()
        .into_iter()
        .map(|b| ("queue", b))
        .chain(state.group_figures().into_iter().map(|b| ("group", b)))
        .collect();
    all.sort_by(|a, b| {
        (b.1.messages + b.1.inflight)
            .cmp(&(a.1.messages + a.1.inflight))
            .then_with(|| a.1.name.cmp(&b.1.name))
    });
    let config = state.config();
    // A declared queue's series carry no filter (its name says it); operators want to see it.
    let declared = |name: &str| {
        config
            .queues
            .iter()
            .find(|q| q.name == name)
            .map(|q| q.filter.clone())
    };
    let queues: Vec<Value> = all
        .iter()
        .map(|(kind, b)| {
            let filter = match *kind {
                "queue" => declared(&b.name).unwrap_or_default(),
                _ => b.filter.clone(),
            };
            let dropped: Map<String, Value> = b
                .dropped
                .iter()
                .map(|(r, n)| ((*r).to_owned(), json!(n)))
                .collect();
            json!({
                "name": b.name,
                "kind": kind,
                "filter": filter,
                "backlog": b.messages + b.inflight,
                "messages": b.messages,
                "inflight": b.inflight,
                "bytes": b.bytes,
                "produced": b.produced,
                "consumed": b.consumed,
                "dropped": dropped,
            })
        })
        .collect();
    ok(json!({ "queues": queues }))
}

/// The subject and end of validity of the first certificate in a PEM file.
fn certificate(path: &std::path::Path) -> Result<(String, u64), String> {
    use rustls_pki_types::pem::PemObject;
    let der = rustls_pki_types::CertificateDer::pem_file_iter(path)
        .map_err(|e| e.to_string())?
        .next()
        .ok_or("no CERTIFICATE in it")?
        .map_err(|e| e.to_string())?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(|e| e.to_string())?;
    let not_after = cert.validity().not_after.timestamp();
    Ok((
        cert.subject().to_string(),
        u64::try_from(not_after).unwrap_or(0),
    ))
}

/// `GET /listeners`: each MQTT listener with its clients and, for TLS, its certificate's
/// subject and expiry (read from the file now, so a renewal shows).
async fn listeners(Admin(state): Admin) -> Result<Response, ApiError> {
    let mut per_listener: HashMap<u16, usize> = HashMap::new();
    for v in state.session_views(None) {
        if let Some(i) = v.info {
            *per_listener.entry(i.listener()).or_insert(0) += 1;
        }
    }
    let listeners: Vec<Value> = state
        .listeners()
        .iter()
        .map(|l| {
            let tls = l.cert.as_ref().map(|path| match certificate(path) {
                Ok((subject, not_after)) => json!({
                    "certificate": path.display().to_string(),
                    "subject": subject,
                    "not_after": not_after,
                }),
                Err(e) => json!({
                    "certificate": path.display().to_string(),
                    "error": e,
                }),
            });
            json!({
                "name": &*l.name,
                "kind": l.kind.as_str(),
                "address": l.address.to_string(),
                "connections": per_listener.get(&l.index).copied().unwrap_or(0),
                "tls": tls,
            })
        })
        .collect();
    ok(json!({ "listeners": listeners }))
}

/// `GET /stats`: what `$SYS` publishes, as one object.
async fn stats(Admin(state): Admin) -> Result<Response, ApiError> {
    let s = state.snapshot();
    let t = crate::metrics::totals();
    let dropped: Map<String, Value> = crate::metrics::dropped_by_reason()
        .into_iter()
        .map(|(r, n)| (r.to_owned(), json!(n)))
        .collect();
    ok(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_secs": s.uptime_secs as u64,
        "connected_clients": state.connected_clients(),
        "sessions": s.sessions_online + s.sessions_offline,
        "sessions_offline": s.sessions_offline,
        "subscriptions": s.subscriptions,
        "retained_messages": s.retained,
        "retained_bytes": s.retained_bytes,
        "messages_received": t.publish_in,
        "messages_sent": t.publish_out,
        "packets_received": t.packets_in,
        "packets_sent": t.packets_out,
        "bytes_received": t.bytes_in,
        "bytes_sent": t.bytes_out,
        "queued_messages": s.queued,
        "inflight_messages": s.inflight,
        "dropped": dropped,
    }))
}

/// `GET /cluster`: `{"enabled": false}` on a single node; in cluster mode whether this node
/// can write to JetStream, and the cluster as `tern cluster status` prints it.
async fn cluster(Admin(state): Admin) -> Result<Response, ApiError> {
    let Some(remote) = state.remote() else {
        return ok(json!({ "enabled": false }));
    };
    let config = state.config().cluster.clone();
    let status = match crate::cluster::status(&config).await {
        Ok(text) => json!(text),
        Err(e) => json!(format!("cannot ask NATS: {e}")),
    };
    ok(json!({
        "enabled": true,
        "name": config.name,
        "healthy": remote.healthy(),
        "status": status,
    }))
}
