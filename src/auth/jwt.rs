//! JWT authentication (`[auth.jwt]`): a token in the CONNECT password (or user name) verified
//! with a shared secret (HS256/384/512), a public key (RS*, PS*, ES256/384, EdDSA) or a JWKS
//! file read again when it changes. `exp` and `nbf` are enforced with a leeway; `iss` and
//! `aud` when configured; a claim names the user; another may have to equal the client id.
//! Top-level `publish` and `subscribe` arrays become the client's own ACL lists.
//!
//! A password that is not shaped like a JWT is not this method's business (the next method
//! is asked); a JWT that fails verification is a refusal (bad credentials).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use parking_lot::Mutex;
use serde_json::{Map, Value};
use tracing::{debug, info, warn};

use super::grant::{Decision, Grant, Rights};
use super::{Login, Verdict};
use crate::config::{JwtConfig, TokenIn};

/// Why `[auth.jwt]` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    /// A key file could not be read.
    #[error("[auth.jwt] {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A key is not one Tern can use.
    #[error("[auth.jwt] {what}: {why}")]
    Key {
        /// The file or variable.
        what: String,
        /// Why.
        why: String,
    },
}

/// The key (or keys) tokens are checked against.
enum Keys {
    /// A secret or a public key, fixed until the rules are reloaded.
    Fixed(DecodingKey),
    /// A JWKS file, read again when its modification time or size changes.
    Jwks {
        path: PathBuf,
        current: Mutex<JwksState>,
    },
}

struct JwksState {
    stamp: Option<(SystemTime, u64)>,
    keys: Arc<Vec<(Option<String>, DecodingKey)>>,
}

/// The JWT method.
pub struct JwtAuth {
    keys: Keys,
    /// Per algorithm family (jsonwebtoken checks a token against one family at a time).
    validations: Vec<(AlgorithmFamily, Validation)>,
    /// Seconds of `exp` leeway.
    leeway: u64,
    username_claim: String,
    token_in: TokenIn,
    client_id_claim: Option<String>,
}

impl JwtAuth {
    /// The method `config` describes, keys read now.
    pub fn new(config: &JwtConfig) -> Result<JwtAuth, JwtError> {
        let (keys, families) = if let Some(path) = &config.secret_file {
            let secret = std::fs::read(path).map_err(|source| JwtError::Io {
                path: path.display().to_string(),
                source,
            })?;
            (
                secret_key(&secret, &path.display().to_string())?,
                vec![AlgorithmFamily::Hmac],
            )
        } else if let Some(var) = &config.secret_env {
            let secret = std::env::var_os(var).ok_or_else(|| JwtError::Key {
                what: format!("secret_env {var}"),
                why: "the environment variable is not set".into(),
            })?;
            let secret = secret.as_encoded_bytes().to_vec();
            (
                secret_key(&secret, &format!("secret_env {var}"))?,
                vec![AlgorithmFamily::Hmac],
            )
        } else if let Some(path) = &config.public_key_file {
            let pem = std::fs::read(path).map_err(|source| JwtError::Io {
                path: path.display().to_string(),
                source,
            })?;
            let key = public_key(&pem).ok_or_else(|| JwtError::Key {
                what: path.display().to_string(),
                why: "not a PEM RSA, EC (P-256, P-384) or Ed25519 public key".into(),
            })?;
            let family = key.family();
            (Keys::Fixed(key), vec![family])
        } else if let Some(path) = &config.jwks_file {
            let keys = read_jwks(path)?;
            (
                Keys::Jwks {
                    path: path.clone(),
                    current: Mutex::new(JwksState {
                        stamp: stamp(path),
                        keys: Arc::new(keys),
                    }),
                },
                vec![
                    AlgorithmFamily::Rsa,
                    AlgorithmFamily::Ec,
                    AlgorithmFamily::Ed,
                ],
            )
        } else {
            // Not reached: the configuration is validated to name exactly one source.
            return Err(JwtError::Key {
                what: "[auth.jwt]".into(),
                why: "no key source".into(),
            });
        };
        let algorithms: Vec<Algorithm> = match &config.algorithms {
            Some(names) => names.iter().filter_map(|n| n.parse().ok()).collect(),
            None => families
                .iter()
                .flat_map(|f| f.algorithms().iter().copied())
                .collect(),
        };
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = algorithms;
        validation.leeway = config.clock_skew_secs;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        // `exp` is enforced when present, as EMQX and Mosquitto's JWT plugins do; a backend
        // that wants every token to expire issues them so.
        validation.required_spec_claims.clear();
        if let Some(iss) = &config.issuer {
            validation.set_issuer(&[iss]);
            validation.required_spec_claims.insert("iss".into());
        }
        match &config.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                validation.required_spec_claims.insert("aud".into());
            }
            None => validation.validate_aud = false,
        }
        let mut validations = Vec::new();
        for f in [
            AlgorithmFamily::Hmac,
            AlgorithmFamily::Rsa,
            AlgorithmFamily::Ec,
            AlgorithmFamily::Ed,
        ] {
            let mut v = validation.clone();
            v.algorithms.retain(|a| a.family() == f);
            if !v.algorithms.is_empty() {
                validations.push((f, v));
            }
        }
        Ok(JwtAuth {
            keys,
            validations,
            leeway: config.clock_skew_secs,
            username_claim: config.username_claim.clone(),
            token_in: config.token_in,
            client_id_claim: config.client_id_claim.clone(),
        })
    }

    /// Whether `login` carries a valid token, and what it grants.
    pub fn decide(&self, login: &Login) -> Decision {
        let token = match self.token_in {
            TokenIn::Password => login
                .password
                .as_deref()
                .and_then(|p| std::str::from_utf8(p).ok()),
            TokenIn::Username => login.username.as_deref(),
        };
        let Some(token) = token else {
            return Decision::Ignore;
        };
        let Ok(header) = jsonwebtoken::decode_header(token) else {
            // Not a JWT: a password for another method.
            return Decision::Ignore;
        };
        let claims = match self.verify(token, &header) {
            Ok(c) => c,
            Err(e) => {
                info!(client_id = %crate::logged::clip(&login.client_id), error = %e, "JWT refused");
                return Decision::Deny(Verdict::BadCredentials);
            }
        };
        let username: Arc<str> = match claims.get(&self.username_claim) {
            Some(Value::String(s)) if !s.is_empty() => Arc::from(s.as_str()),
            _ => {
                info!(client_id = %crate::logged::clip(&login.client_id), claim = %self.username_claim, "JWT refused: no user name claim");
                return Decision::Deny(Verdict::BadCredentials);
            }
        };
        if let Some(claim) = &self.client_id_claim {
            let bound =
                matches!(claims.get(claim), Some(Value::String(s)) if **s == *login.client_id);
            if !bound {
                info!(client_id = %crate::logged::clip(&login.client_id), claim = %claim, "JWT refused: the client id is not the one the token names");
                return Decision::Deny(Verdict::NotAuthorized);
            }
        }
        let list = |name: &str| match claims.get(name) {
            Some(Value::Array(items)) => Some(
                items
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect::<Vec<_>>(),
            ),
            _ => None,
        };
        let rights = Rights::from_lists(
            false,
            list("publish"),
            list("subscribe"),
            &login.client_id,
            Some(&username),
        );
        // Past `exp` by more than the clock skew allowed at CONNECT, the connection ends.
        let expires_at = claims
            .get("exp")
            .and_then(Value::as_u64)
            .map(|e| e.saturating_add(self.leeway));
        Decision::Allow(Grant {
            username: Some(username),
            rights,
            expires_at,
        })
    }

    fn verify(
        &self,
        token: &str,
        header: &jsonwebtoken::Header,
    ) -> Result<Map<String, Value>, jsonwebtoken::errors::Error> {
        let family = header.alg.family();
        let Some((_, validation)) = self.validations.iter().find(|(f, _)| *f == family) else {
            return Err(jsonwebtoken::errors::ErrorKind::InvalidAlgorithm.into());
        };
        let decode = |key: &DecodingKey| {
            jsonwebtoken::decode::<Map<String, Value>>(token, key, validation).map(|d| d.claims)
        };
        match &self.keys {
            Keys::Fixed(key) => decode(key),
            Keys::Jwks { path, current } => {
                let keys = jwks_now(path, current);
                let mut last = jsonwebtoken::errors::ErrorKind::InvalidSignature.into();
                let candidates = keys.iter().filter(|(kid, key)| match (&header.kid, kid) {
                    (Some(want), Some(have)) => want == have,
                    (Some(_), None) => false,
                    (None, _) => key.family() == family,
                });
                for (_, key) in candidates {
                    match decode(key) {
                        Ok(c) => return Ok(c),
                        Err(e) => last = e,
                    }
                }
                Err(last)
            }
        }
    }
}

fn secret_key(secret: &[u8], what: &str) -> Result<Keys, JwtError> {
    if secret.is_empty() {
        return Err(JwtError::Key {
            what: what.to_string(),
            why: "the secret is empty".into(),
        });
    }
    Ok(Keys::Fixed(DecodingKey::from_secret(secret)))
}

/// A PEM public key of whichever type it is.
fn public_key(pem: &[u8]) -> Option<DecodingKey> {
    DecodingKey::from_rsa_pem(pem)
        .or_else(|_| DecodingKey::from_ec_pem(pem))
        .or_else(|_| DecodingKey::from_ed_pem(pem))
        .ok()
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

fn read_jwks(path: &Path) -> Result<Vec<(Option<String>, DecodingKey)>, JwtError> {
    let text = std::fs::read(path).map_err(|source| JwtError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let set: JwkSet = serde_json::from_slice(&text).map_err(|e| JwtError::Key {
        what: path.display().to_string(),
        why: format!("not a JWKS document: {e}"),
    })?;
    let mut keys = Vec::new();
    for jwk in &set.keys {
        match DecodingKey::from_jwk(jwk) {
            Ok(k) => keys.push((jwk.common.key_id.clone(), k)),
            Err(e) => {
                warn!(file = %path.display(), kid = ?jwk.common.key_id, error = %e, "JWKS key skipped")
            }
        }
    }
    if keys.is_empty() {
        return Err(JwtError::Key {
            what: path.display().to_string(),
            why: "no usable key".into(),
        });
    }
    Ok(keys)
}

/// The JWKS keys in force: read again when the file changed since last looked at (a bad new
/// file keeps the keys in force, and says why).
fn jwks_now(path: &Path, current: &Mutex<JwksState>) -> Arc<Vec<(Option<String>, DecodingKey)>> {
    let now = stamp(path);
    let mut state = current.lock();
    if now.is_some() && now != state.stamp {
        state.stamp = now;
        match read_jwks(path) {
            Ok(keys) => {
                debug!(file = %path.display(), keys = keys.len(), "JWKS file read again");
                state.keys = Arc::new(keys);
            }
            Err(e) => {
                warn!(error = %e, "JWKS file changed but cannot be used; the keys in force stay")
            }
        }
    }
    Arc::clone(&state.keys)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use jsonwebtoken::jwk::Jwk;
    use jsonwebtoken::{EncodingKey, Header};

    fn key(name: &str) -> EncodingKey {
        let path = format!("{}/tests/broker/keys/{name}", env!("CARGO_MANIFEST_DIR"));
        let pem = std::fs::read(path).unwrap();
        EncodingKey::from_rsa_pem(&pem)
            .or_else(|_| EncodingKey::from_ec_pem(&pem))
            .unwrap()
    }

    fn jwk(k: &EncodingKey, alg: Algorithm, kid: &str) -> Jwk {
        let mut j = Jwk::from_encoding_key(k, alg).unwrap();
        j.common.key_id = Some(kid.into());
        j
    }

    fn login(token: &str) -> Login {
        Login {
            client_id: Arc::from("c"),
            username: None,
            password: Some(token.as_bytes().to_vec()),
            certified: false,
            allow_anonymous: false,
            peer: "127.0.0.1:1".parse().unwrap(),
            listener: Arc::from("tcp:1883"),
            protocol_version: 5,
            cert_identity: None,
        }
    }

    #[test]
    fn jwks_keys_change_with_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        let (rsa, ec) = (key("jwt-rsa.key"), key("jwt-p256.key"));
        let write = |keys: Vec<Jwk>| {
            std::fs::write(&path, serde_json::to_vec(&JwkSet { keys }).unwrap()).unwrap()
        };
        write(vec![jwk(&rsa, Algorithm::RS256, "r")]);
        let auth = JwtAuth::new(&JwtConfig {
            jwks_file: Some(path.clone()),
            ..JwtConfig::default()
        })
        .unwrap();
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some("e".into());
        let claims = serde_json::json!({"sub": "x"});
        let t = jsonwebtoken::encode(&h, &claims, &ec).unwrap();
        assert!(matches!(auth.decide(&login(&t)), Decision::Deny(_)));
        write(vec![
            jwk(&rsa, Algorithm::RS256, "r"),
            jwk(&ec, Algorithm::ES256, "e"),
        ]);
        let d = auth.decide(&login(&t));
        assert!(matches!(d, Decision::Allow(_)), "{d:?}");
        // A token without `kid` is tried against the keys of its algorithm's family.
        let t = jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, &ec).unwrap();
        assert!(matches!(auth.decide(&login(&t)), Decision::Allow(_)));
        // Not a JWT: for the next method.
        assert!(matches!(auth.decide(&login("secret")), Decision::Ignore));
    }
}
