//! JWT authentication (`[auth.jwt]`) against a real broker, with tokens made by a real JWT
//! library (jsonwebtoken's encoder) from OpenSSL-made keys (tests/broker/keys): every
//! algorithm family, `exp`/`nbf` with clock skew, expiry while connected (v5 DISCONNECT
//! 0xA0), issuer, audience, client id binding, claim ACLs on top of the ACL file, JWKS files
//! read again when they change, the token in the user name, and the chain with a password
//! file.

use std::path::{Path, PathBuf};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tern::auth::passwd::{Hash, PasswordFile};
use tern::config::{AuthMethod, JwtConfig, TokenIn};

use crate::harness::TestBroker;
use crate::support::{collect_until, sub_raw};
use crate::wire::{self, Connect, RawClient, V311, V5};

fn key_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/broker/keys")
        .join(name)
}

fn key_pem(name: &str) -> Vec<u8> {
    std::fs::read(key_file(name)).unwrap()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn token(alg: Algorithm, key: &EncodingKey, claims: &Value) -> String {
    encode(&Header::new(alg), claims, key).unwrap()
}

fn token_kid(alg: Algorithm, kid: &str, key: &EncodingKey, claims: &Value) -> String {
    let mut h = Header::new(alg);
    h.kid = Some(kid.to_string());
    encode(&h, claims, key).unwrap()
}

/// A login with `password` (a token) and a user name the token overrides.
fn with_password(level: u8, id: &str, password: &str) -> Connect {
    Connect::new(level, id)
        .username("whoever")
        .password(password.as_bytes())
}

async fn connack(addr: std::net::SocketAddr, level: u8, c: &Connect) -> u8 {
    RawClient::try_handshake(addr, level, c).await.1.reason
}

/// Each token of `cases` (its claims signed by `key`) as client `id`'s v5 password gets the
/// CONNACK reason its case says.
async fn expect_connacks(
    addr: std::net::SocketAddr,
    id: &str,
    alg: Algorithm,
    key: &EncodingKey,
    cases: &[(Value, u8)],
) {
    for (claims, want) in cases {
        let c = with_password(V5, id, &token(alg, key, claims));
        assert_eq!(connack(addr, V5, &c).await, *want, "{claims}");
    }
}

fn jwt(tweak: impl FnOnce(&mut JwtConfig)) -> JwtConfig {
    let mut j = JwtConfig::default();
    tweak(&mut j);
    j
}

async fn broker_with(j: JwtConfig, more: impl FnOnce(&mut tern::Config)) -> TestBroker {
    TestBroker::start_with(|c| {
        c.auth.jwt = Some(j);
        more(c);
    })
    .await
}

/// HS256/384/512 (secret file, bytes as they are), RS256/384/512 and PS256 (RSA public key),
/// ES256, ES384, EdDSA: a token signed with the right key lets a v5 and a v3.1.1 client in;
/// one signed with another key (or HMAC-signed with the public key's bytes) is refused as
/// bad credentials (0x86 / 0x04).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_algorithm_family() {
    let dir = tempfile::tempdir().unwrap();
    let secret = b"fleet-secret-\xff-with-newline\n".to_vec();
    let secret_path = dir.path().join("jwt.secret");
    std::fs::write(&secret_path, &secret).unwrap();
    let hs = EncodingKey::from_secret(&secret);
    let rsa = EncodingKey::from_rsa_pem(&key_pem("jwt-rsa.key")).unwrap();
    let rsa_other = EncodingKey::from_rsa_pem(&key_pem("jwt-rsa-other.key")).unwrap();
    let p256 = EncodingKey::from_ec_pem(&key_pem("jwt-p256.key")).unwrap();
    let p384 = EncodingKey::from_ec_pem(&key_pem("jwt-p384.key")).unwrap();
    let p256_other = EncodingKey::from_ec_pem(&key_pem("jwt-p256-other.key")).unwrap();
    let ed = EncodingKey::from_ed_pem(&key_pem("jwt-ed25519.key")).unwrap();
    // The secret without its trailing newline is another secret.
    let hs_trimmed = EncodingKey::from_secret(&secret[..secret.len() - 1]);
    // HMAC keyed with the public key's bytes: the classic algorithm-confusion attack.
    let confused = |pem: &str| EncodingKey::from_secret(&key_pem(pem));
    type Case = (
        JwtConfig,
        Vec<(Algorithm, EncodingKey)>,
        Vec<(Algorithm, EncodingKey)>,
    );
    let cases: Vec<Case> = vec![
        (
            jwt(|j| j.secret_file = Some(secret_path.clone())),
            vec![
                (Algorithm::HS256, hs.clone()),
                (Algorithm::HS384, hs.clone()),
                (Algorithm::HS512, hs.clone()),
            ],
            vec![(Algorithm::HS256, hs_trimmed)],
        ),
        (
            jwt(|j| j.public_key_file = Some(key_file("jwt-rsa.pub"))),
            vec![
                (Algorithm::RS256, rsa.clone()),
                (Algorithm::RS384, rsa.clone()),
                (Algorithm::RS512, rsa.clone()),
                (Algorithm::PS256, rsa.clone()),
            ],
            vec![
                (Algorithm::RS256, rsa_other),
                (Algorithm::HS256, confused("jwt-rsa.pub")),
            ],
        ),
        (
            jwt(|j| j.public_key_file = Some(key_file("jwt-p256.pub"))),
            vec![(Algorithm::ES256, p256.clone())],
            vec![
                (Algorithm::ES256, p256_other),
                (Algorithm::HS256, confused("jwt-p256.pub")),
            ],
        ),
        (
            jwt(|j| j.public_key_file = Some(key_file("jwt-p384.pub"))),
            vec![(Algorithm::ES384, p384)],
            vec![(Algorithm::ES256, p256)],
        ),
        (
            jwt(|j| j.public_key_file = Some(key_file("jwt-ed25519.pub"))),
            vec![(Algorithm::EdDSA, ed)],
            vec![(Algorithm::RS256, rsa)],
        ),
    ];
    let claims = json!({"sub": "device-1", "exp": now() + 600});
    for (config, good, bad) in cases {
        let b = broker_with(config, |_| {}).await;
        for (alg, key) in &good {
            let t = token(*alg, key, &claims);
            for level in [V5, V311] {
                let c = with_password(level, &format!("ok-{alg:?}-{level}"), &t);
                assert_eq!(connack(b.addr, level, &c).await, 0, "{alg:?} v{level}");
            }
        }
        for (alg, key) in &bad {
            let t = token(*alg, key, &claims);
            let c = with_password(V5, "bad", &t);
            assert_eq!(connack(b.addr, V5, &c).await, 0x86, "{alg:?} wrong key");
            let c = with_password(V311, "bad3", &t);
            assert_eq!(
                connack(b.addr, V311, &c).await,
                0x04,
                "{alg:?} wrong key v3"
            );
        }
        // No token at all, on a chain with nothing else to try: refused.
        assert_eq!(
            connack(b.addr, V5, &Connect::new(V5, "anon")).await,
            0x87,
            "anonymous"
        );
        b.stop().await;
    }
}

/// `exp` and `nbf` with the configured clock skew (30 s): outside it refused, inside it
/// accepted; a token without `exp` is accepted (its issuer chose so).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_and_not_before_at_connect() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    std::fs::write(&path, b"k").unwrap();
    let b = broker_with(jwt(|j| j.secret_file = Some(path)), |_| {}).await;
    let key = EncodingKey::from_secret(b"k");
    let t = now();
    let cases = [
        (json!({"sub": "d", "exp": t - 120}), 0x86),
        (json!({"sub": "d", "exp": t - 10}), 0),
        (json!({"sub": "d", "exp": t + 600, "nbf": t + 120}), 0x86),
        (json!({"sub": "d", "exp": t + 600, "nbf": t + 10}), 0),
        (json!({"sub": "d"}), 0),
        (json!({"exp": t + 600}), 0x86), // no user name claim
        (json!({"sub": "d", "exp": "soon"}), 0x86),
    ];
    expect_connacks(b.addr, "d", Algorithm::HS256, &key, &cases).await;
    b.stop().await;
}

/// A token that expires while the client is connected ends the connection: v5 with
/// DISCONNECT 0xA0 (Maximum connect time), v3.1.1 by closing it. A connection under the same
/// client id with a fresh token is not touched by the old one's expiry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_expiring_while_connected_disconnects() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    std::fs::write(&path, b"k").unwrap();
    let b = broker_with(
        jwt(|j| {
            j.secret_file = Some(path);
            j.clock_skew_secs = 0;
        }),
        |_| {},
    )
    .await;
    let key = EncodingKey::from_secret(b"k");
    let short = token(
        Algorithm::HS256,
        &key,
        &json!({"sub": "d", "exp": now() + 1}),
    );
    let long = token(
        Algorithm::HS256,
        &key,
        &json!({"sub": "d", "exp": now() + 600}),
    );
    let (mut v5, ack) = RawClient::handshake(b.addr, V5, &with_password(V5, "exp5", &short)).await;
    assert_eq!(ack.reason, 0);
    let (mut v3, ack) =
        RawClient::handshake(b.addr, V311, &with_password(V311, "exp3", &short)).await;
    assert_eq!(ack.reason, 0);
    // Taken over by a connection with a longer token: the old expiry must not end it.
    let (mut first, ack) =
        RawClient::handshake(b.addr, V5, &with_password(V5, "renewed", &short)).await;
    assert_eq!(ack.reason, 0);
    let (mut renewed, ack) =
        RawClient::handshake(b.addr, V5, &with_password(V5, "renewed", &long)).await;
    assert_eq!(ack.reason, 0);
    first.expect_disconnect(0x8E).await; // session taken over
    v5.expect_disconnect(0xA0).await;
    v3.expect_disconnect_or_close(V311, 0).await;
    renewed.ping().await;
    b.stop().await;
}

/// Required issuer and audience, and a claim the client id must equal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuer_audience_and_client_id_binding() {
    let b = broker_with(
        jwt(|j| {
            j.public_key_file = Some(key_file("jwt-ed25519.pub"));
            j.issuer = Some("fleet-backend".into());
            j.audience = Some("tern".into());
            j.client_id_claim = Some("cid".into());
        }),
        |_| {},
    )
    .await;
    let key = EncodingKey::from_ed_pem(&key_pem("jwt-ed25519.key")).unwrap();
    let exp = now() + 600;
    let cases = [
        (
            json!({"sub": "d", "exp": exp, "iss": "fleet-backend", "aud": "tern", "cid": "dev-7"}),
            0,
        ),
        (
            json!({"sub": "d", "exp": exp, "iss": "fleet-backend", "aud": ["x", "tern"], "cid": "dev-7"}),
            0,
        ),
        (
            json!({"sub": "d", "exp": exp, "iss": "someone", "aud": "tern", "cid": "dev-7"}),
            0x86,
        ),
        (
            json!({"sub": "d", "exp": exp, "aud": "tern", "cid": "dev-7"}),
            0x86,
        ),
        (
            json!({"sub": "d", "exp": exp, "iss": "fleet-backend", "aud": "other", "cid": "dev-7"}),
            0x86,
        ),
        (
            json!({"sub": "d", "exp": exp, "iss": "fleet-backend", "cid": "dev-7"}),
            0x86,
        ),
        (
            json!({"sub": "d", "exp": exp, "iss": "fleet-backend", "aud": "tern", "cid": "dev-8"}),
            0x87,
        ),
        (
            json!({"sub": "d", "exp": exp, "iss": "fleet-backend", "aud": "tern"}),
            0x87,
        ),
    ];
    expect_connacks(b.addr, "dev-7", Algorithm::EdDSA, &key, &cases).await;
    b.stop().await;
}

/// Claim ACLs (`publish`, `subscribe` with `%c`/`%u`) apply on top of the ACL file: a topic
/// must pass both. Subscriptions wider than the claims are granted and filtered per message.
/// The user name claim is the user the ACL file knows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_acls_on_top_of_the_acl_file() {
    let dir = tempfile::tempdir().unwrap();
    let acl = dir.path().join("acl");
    std::fs::write(
        &acl,
        "pattern readwrite devices/%c/#\npattern readwrite users/%u/#\n\nuser ops\ntopic readwrite #\n",
    )
    .unwrap();
    let secret = dir.path().join("s");
    std::fs::write(&secret, b"k").unwrap();
    let b = broker_with(jwt(|j| j.secret_file = Some(secret)), |c| {
        c.auth.acl_file = Some(acl)
    })
    .await;
    let key = EncodingKey::from_secret(b"k");
    let exp = now() + 600;
    let d1 = token(
        Algorithm::HS256,
        &key,
        &json!({
            "sub": "dev-user", "exp": exp,
            "publish": ["devices/%c/up", "users/%u/out", "nowhere/%c"],
            "subscribe": ["devices/%c/down/#"],
        }),
    );
    let ops = token(Algorithm::HS256, &key, &json!({"sub": "ops", "exp": exp}));
    let (mut dev, ack) = RawClient::handshake(b.addr, V5, &with_password(V5, "d1", &d1)).await;
    assert_eq!(ack.reason, 0);
    let (mut op, ack) = RawClient::handshake(b.addr, V5, &with_password(V5, "ops-1", &ops)).await;
    assert_eq!(ack.reason, 0);
    op.subscribe(V5, "#", 1).await;
    // ops subscribes to everything: an allowed publish has a subscriber (reason 0).
    for (i, (topic, want)) in [
        ("devices/d1/up", 0),
        ("users/dev-user/out", 0),  // %u is the claim's user name
        ("nowhere/d1", 0x87),       // the claims allow, the ACL file does not
        ("devices/d1/other", 0x87), // the ACL file allows, the claims do not
        ("devices/d2/up", 0x87),
    ]
    .into_iter()
    .enumerate()
    {
        let pkid = 10 + i as u16;
        dev.send(&wire::publish(V5, topic, 1, pkid, b"x")).await;
        let (got, reason) = wire::parse_ack(&dev.recv_expect(wire::PUBACK).await);
        assert_eq!((got, reason), (pkid, want), "{topic}");
    }
    let codes = sub_raw(
        &mut dev,
        V5,
        &[
            ("devices/d1/#", 1),
            ("devices/d2/#", 1),
            ("users/dev-user/#", 1),
        ],
        &[],
    )
    .await;
    assert_eq!(codes, [1, 0x87, 0x87]);
    for t in [
        "devices/d1/up",
        "devices/d1/down/x",
        "devices/d1/down/fence",
    ] {
        op.send(&wire::publish(V5, t, 0, 0, t.as_bytes())).await;
    }
    let got = collect_until(&mut dev, V5, b"devices/d1/down/fence").await;
    let topics: Vec<&str> = got.iter().map(|r| r.topic.as_str()).collect();
    assert_eq!(topics, ["devices/d1/down/x"]);
    b.stop().await;
}

/// A JWKS file: tokens are checked against the key their `kid` names; the file is read again
/// when it changes (a key added later works without a restart); a broken rewrite keeps the
/// keys in force.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_file_is_read_again_when_it_changes() {
    use jsonwebtoken::jwk::{Jwk, JwkSet};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    let rsa = EncodingKey::from_rsa_pem(&key_pem("jwt-rsa.key")).unwrap();
    let ec = EncodingKey::from_ec_pem(&key_pem("jwt-p256.key")).unwrap();
    let jwk = |key: &EncodingKey, alg, kid: &str| {
        let mut j = Jwk::from_encoding_key(key, alg).unwrap();
        j.common.key_id = Some(kid.to_string());
        j
    };
    let write = |keys: Vec<Jwk>| {
        std::fs::write(&path, serde_json::to_vec(&JwkSet { keys }).unwrap()).unwrap()
    };
    write(vec![jwk(&rsa, Algorithm::RS256, "rsa-1")]);
    let b = broker_with(jwt(|j| j.jwks_file = Some(path.clone())), |_| {}).await;
    let claims = json!({"sub": "d", "exp": now() + 600});
    let by_rsa = token_kid(Algorithm::RS256, "rsa-1", &rsa, &claims);
    let by_ec = token_kid(Algorithm::ES256, "ec-1", &ec, &claims);
    let rsa_as_ec = token_kid(Algorithm::RS256, "ec-1", &rsa, &claims);
    assert_eq!(
        connack(b.addr, V5, &with_password(V5, "a", &by_rsa)).await,
        0
    );
    assert_eq!(
        connack(b.addr, V5, &with_password(V5, "b", &by_ec)).await,
        0x86
    );
    write(vec![
        jwk(&rsa, Algorithm::RS256, "rsa-1"),
        jwk(&ec, Algorithm::ES256, "ec-1"),
    ]);
    assert_eq!(
        connack(b.addr, V5, &with_password(V5, "c", &by_ec)).await,
        0
    );
    assert_eq!(
        connack(b.addr, V5, &with_password(V5, "d", &by_rsa)).await,
        0
    );
    assert_eq!(
        connack(b.addr, V5, &with_password(V5, "e", &rsa_as_ec)).await,
        0x86
    );
    std::fs::write(&path, b"{ not json").unwrap();
    assert_eq!(
        connack(b.addr, V5, &with_password(V5, "f", &by_ec)).await,
        0
    );
    b.stop().await;
}

/// `token_in = "username"`: the token is the user name (v3.1.1 without a password).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_in_the_user_name() {
    let b = broker_with(
        jwt(|j| {
            j.public_key_file = Some(key_file("jwt-p256.pub"));
            j.token_in = TokenIn::Username;
        }),
        |_| {},
    )
    .await;
    let key = EncodingKey::from_ec_pem(&key_pem("jwt-p256.key")).unwrap();
    let t = token(
        Algorithm::ES256,
        &key,
        &json!({"sub": "d", "exp": now() + 600}),
    );
    let c = Connect::new(V311, "u").username(&t);
    assert_eq!(connack(b.addr, V311, &c).await, 0);
    let c = Connect::new(V311, "u2").username("plain-name");
    assert_eq!(connack(b.addr, V311, &c).await, 0x04);
    b.stop().await;
}

/// The chain with a password file: the first decisive answer wins. A user the file knows is
/// decided by the file (a token as its password is a wrong password); a user it does not
/// know goes on to JWT; `chain = ["jwt", "file"]` asks JWT first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chain_order_with_the_password_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut pw = PasswordFile::default();
    pw.set("alice", Hash::new(b"alice-pw", 100));
    let pw_path = dir.path().join("passwd");
    pw.save(&pw_path).unwrap();
    let secret = dir.path().join("s");
    std::fs::write(&secret, b"k").unwrap();
    let key = EncodingKey::from_secret(b"k");
    let alice_token = token(
        Algorithm::HS256,
        &key,
        &json!({"sub": "alice", "exp": now() + 600}),
    );
    let login = |id: &str, user: Option<&str>, pass: Option<&str>| {
        let mut c = Connect::new(V5, id);
        if let Some(u) = user {
            c = c.username(u);
        }
        if let Some(p) = pass {
            c = c.password(p.as_bytes());
        }
        c
    };
    for (chain, token_for_alice) in [
        (None, 0x86),
        (Some(vec![AuthMethod::Jwt, AuthMethod::File]), 0),
    ] {
        let (pw_path, secret) = (pw_path.clone(), secret.clone());
        let b = broker_with(jwt(|j| j.secret_file = Some(secret)), |c| {
            c.auth.password_file = Some(pw_path);
            c.auth.chain = chain.clone();
        })
        .await;
        let cases = [
            (login("1", Some("alice"), Some("alice-pw")), 0),
            (
                login("2", Some("alice"), Some(&alice_token)),
                token_for_alice,
            ),
            (login("3", Some("device"), Some(&alice_token)), 0),
            (login("4", Some("device"), Some("not-a-token")), 0x86),
            (login("5", None, None), 0x87),
        ];
        for (i, (c, want)) in cases.iter().enumerate() {
            assert_eq!(
                connack(b.addr, V5, c).await,
                *want,
                "case {} chain {chain:?}",
                i + 1
            );
        }
        b.stop().await;
    }
}

/// A configuration naming a JWT key file that does not exist, or two key sources, is refused
/// at start with the key named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_jwt_configuration_is_refused() {
    let mut c = tern::Config::default();
    c.auth.jwt = Some(jwt(|j| {
        j.secret_file = Some("/nonexistent/s".into());
        j.public_key_file = Some(key_file("jwt-rsa.pub"));
    }));
    let e = c.validate("test.toml").unwrap_err().to_string();
    assert!(e.contains("auth.jwt.secret_file"), "{e}");
    c.auth.jwt = Some(jwt(|j| j.algorithms = Some(vec!["none".into()])));
    c.auth.jwt.as_mut().unwrap().secret_env = Some("X".into());
    let e = c.validate("test.toml").unwrap_err().to_string();
    assert!(e.contains("auth.jwt.algorithms"), "{e}");
    c.auth.jwt = Some(jwt(|j| j.secret_file = Some("/nonexistent/s".into())));
    c.listener.port = 0;
    c.http.enabled = false;
    let started = tern::Broker::start(c).await;
    let e = started.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("/nonexistent/s"), "{e}");
}

/// SIGHUP reads the JWT key again: a rotated secret takes over for new logins, and a key file
/// that went missing keeps the running rules (logged).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_rotated_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("jwt.secret");
    std::fs::write(&secret, b"first").unwrap();
    let extra = format!("[auth.jwt]\nsecret_file = \"{}\"\n", secret.display());
    let b = crate::child::ChildBroker::start_with(dir.path(), false, "fsync", &extra);
    let claims = json!({"sub": "d", "exp": now() + 600});
    let first = token(
        Algorithm::HS256,
        &EncodingKey::from_secret(b"first"),
        &claims,
    );
    let second = token(
        Algorithm::HS256,
        &EncodingKey::from_secret(b"second"),
        &claims,
    );
    assert_eq!(
        connack(b.addr, V5, &with_password(V5, "a", &first)).await,
        0
    );
    std::fs::write(&secret, b"second").unwrap();
    b.hup();
    b.wait_log("authentication rules ([auth.jwt], [auth.http]) reloaded", 1);
    assert_eq!(
        connack(b.addr, V5, &with_password(V5, "b", &second)).await,
        0
    );
    assert_eq!(
        connack(b.addr, V5, &with_password(V5, "c", &first)).await,
        0x86
    );
    std::fs::remove_file(&secret).unwrap();
    b.hup();
    let logged = b.wait_log("not reloaded", 1);
    assert!(logged.contains("jwt.secret"), "{logged}");
    assert_eq!(
        connack(b.addr, V5, &with_password(V5, "d", &second)).await,
        0
    );
    b.terminate();
}

/// A dormant connection (quiet, parked out of the runtime) is woken when its token expires and
/// ends the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dormant_connection_with_an_expiring_token() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    std::fs::write(&path, b"k").unwrap();
    let b = broker_with(
        jwt(|j| {
            j.secret_file = Some(path);
            j.clock_skew_secs = 0;
        }),
        |c| c.limits.dormant_after_ms = 50,
    )
    .await;
    let key = EncodingKey::from_secret(b"k");
    let t = token(
        Algorithm::HS256,
        &key,
        &json!({"sub": "d", "exp": now() + 2}),
    );
    let (mut c, ack) = RawClient::handshake(b.addr, V5, &with_password(V5, "sleepy", &t)).await;
    assert_eq!(ack.reason, 0);
    b.wait_dormant(1).await;
    c.expect_disconnect(0xA0).await;
    b.wait_dormant(0).await;
    b.stop().await;
}
