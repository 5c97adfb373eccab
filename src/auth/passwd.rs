//! Mosquitto-compatible password files: one `user:hash` per line, where the hash is
//! `$6$salt$hash` (SHA-512 over password then salt) or `$7$iterations$salt$hash`
//! (PBKDF2-HMAC-SHA512), salt and hash in standard base64. Files made by `mosquitto_passwd`
//! work unchanged, and files written here (always `$7$`) work in Mosquitto 2.0.

use std::collections::HashMap;
use std::path::Path;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;

/// Iterations `tern passwd` uses for new hashes. Mosquitto 2.0's own default is 101; this is
/// what OWASP advises for PBKDF2-HMAC-SHA512 divided by 10, a balance with fleets that reconnect
/// all at once (each login costs one hash; about 20 ms of one core here).
pub const DEFAULT_ITERATIONS: u32 = 21_000;
/// Salt bytes for new hashes: Mosquitto 2.0 reads exactly 12 (2.1 writes 64 and still reads
/// 12); Tern reads any length.
const SALT_LEN: usize = 12;
/// PBKDF2 output bytes, as Mosquitto.
const HASH_LEN: usize = 64;
/// More than this and a file's hash would take seconds to check: refused at load.
const MAX_ITERATIONS: u32 = 10_000_000;

/// Why a password file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PasswdError {
    /// The file could not be read or written.
    #[error("password file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A line is not `user:hash` with a hash Tern can check.
    #[error("password file {path}, line {line}: {why}")]
    Line {
        /// The file.
        path: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong (never the hash itself).
        why: String,
    },
}

/// One stored password hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hash {
    /// `$6$`: SHA-512 over password then salt.
    Sha512 {
        /// Salt bytes.
        salt: Vec<u8>,
        /// Digest.
        hash: Vec<u8>,
    },
    /// `$7$`: PBKDF2-HMAC-SHA512.
    Pbkdf2 {
        /// Iterations.
        iterations: u32,
        /// Salt bytes.
        salt: Vec<u8>,
        /// Derived key.
        hash: Vec<u8>,
    },
}

impl Hash {
    /// A new `$7$` hash of `password` with a random salt.
    pub fn new(password: &[u8], iterations: u32) -> Hash {
        let salt: [u8; SALT_LEN] = rand::random();
        let mut hash = vec![0u8; HASH_LEN];
        pbkdf2::pbkdf2_hmac::<Sha512>(password, &salt, iterations, &mut hash);
        Hash::Pbkdf2 {
            iterations,
            salt: salt.to_vec(),
            hash,
        }
    }

    /// Parses the part after `user:`.
    pub fn parse(s: &str) -> Result<Hash, String> {
        let parts: Vec<&str> = s.split('$').collect();
        let b64 = |what: &str, v: &str| {
            B64.decode(v)
                .map_err(|_| format!("{what} is not standard base64"))
        };
        match parts.as_slice() {
            ["", "6", salt, hash] => Ok(Hash::Sha512 {
                salt: b64("salt", salt)?,
                hash: b64("hash", hash)?,
            }),
            ["", "7", iterations, salt, hash] => {
                let iterations: u32 = iterations
                    .parse()
                    .ok()
                    .filter(|i| (1..=MAX_ITERATIONS).contains(i))
                    .ok_or(format!("iterations must be 1 to {MAX_ITERATIONS}"))?;
                let hash = b64("hash", hash)?;
                if hash.is_empty() {
                    return Err("empty hash".into());
                }
                Ok(Hash::Pbkdf2 {
                    iterations,
                    salt: b64("salt", salt)?,
                    hash,
                })
            }
            _ => Err("hash must be $6$salt$hash or $7$iterations$salt$hash \
                      (mosquitto_passwd or tern passwd make them)"
                .into()),
        }
    }

    /// Whether `password` is the one hashed; compares in constant time.
    pub fn verify(&self, password: &[u8]) -> bool {
        let computed = match self {
            Hash::Sha512 { salt, .. } => {
                let mut d = Sha512::new();
                d.update(password);
                d.update(salt);
                d.finalize().to_vec()
            }
            Hash::Pbkdf2 {
                iterations,
                salt,
                hash,
            } => {
                let mut out = vec![0u8; hash.len()];
                pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, *iterations, &mut out);
                out
            }
        };
        let stored = match self {
            Hash::Sha512 { hash, .. } | Hash::Pbkdf2 { hash, .. } => hash,
        };
        computed.ct_eq(stored).into()
    }
}

impl std::fmt::Display for Hash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Hash::Sha512 { salt, hash } => {
                write!(f, "$6${}${}", B64.encode(salt), B64.encode(hash))
            }
            Hash::Pbkdf2 {
                iterations,
                salt,
                hash,
            } => write!(
                f,
                "$7${iterations}${}${}",
                B64.encode(salt),
                B64.encode(hash)
            ),
        }
    }
}

/// A password file's users, in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PasswordFile {
    users: Vec<(String, Hash)>,
    index: HashMap<String, usize>,
}

impl PasswordFile {
    /// Reads `path`; every bad line is an error naming the file and line.
    pub fn load(path: &Path) -> Result<PasswordFile, PasswdError> {
        let text = std::fs::read_to_string(path).map_err(|source| PasswdError::Io {
            path: path.display().to_string(),
            source,
        })?;
        PasswordFile::parse(&text, &path.display().to_string())
    }

    /// Parses the text of a file named `origin`. Blank lines and lines starting with `#` are
    /// skipped, as Mosquitto does.
    pub fn parse(text: &str, origin: &str) -> Result<PasswordFile, PasswdError> {
        let mut file = PasswordFile::default();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim_end_matches('\r');
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |why: String| PasswdError::Line {
                path: origin.to_string(),
                line: i + 1,
                why,
            };
            let Some((user, hash)) = line.split_once(':') else {
                return Err(bad("expected user:hash".into()));
            };
            if user.is_empty() {
                return Err(bad("empty user name".into()));
            }
            let hash = Hash::parse(hash).map_err(|why| bad(format!("user {user}: {why}")))?;
            file.set(user, hash);
        }
        Ok(file)
    }

    /// The stored hash of `user`.
    pub fn get(&self, user: &str) -> Option<&Hash> {
        self.index.get(user).map(|&i| &self.users[i].1)
    }

    /// Adds `user` or replaces its hash.
    pub fn set(&mut self, user: &str, hash: Hash) {
        match self.index.get(user) {
            Some(&i) => self.users[i].1 = hash,
            None => {
                self.index.insert(user.to_string(), self.users.len());
                self.users.push((user.to_string(), hash));
            }
        }
    }

    /// Removes `user`; whether it was there.
    pub fn remove(&mut self, user: &str) -> bool {
        let Some(i) = self.index.remove(user) else {
            return false;
        };
        self.users.remove(i);
        for j in self.index.values_mut() {
            if *j > i {
                *j -= 1;
            }
        }
        true
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether it has no users.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// The file's text: `user:hash` lines.
    pub fn render(&self) -> String {
        self.users
            .iter()
            .map(|(u, h)| format!("{u}:{h}\n"))
            .collect()
    }

    /// Writes the file (mode 0600 when created), replacing it atomically.
    pub fn save(&self, path: &Path) -> Result<(), PasswdError> {
        let io = |source| PasswdError::Io {
            path: path.display().to_string(),
            source,
        };
        let tmp = path.with_extension("tmp-tern-passwd");
        {
            use std::io::Write;
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create(true).truncate(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                opts.mode(0o600);
            }
            let mut f = opts.open(&tmp).map_err(io)?;
            f.write_all(self.render().as_bytes()).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, path).map_err(io)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// `mosquitto_passwd -b f alice secret` (Mosquitto 2.0.11) wrote this line.
    const MOSQUITTO_7: &str = "alice:$7$101$bMBPHFhMuN+48hka$KtMjhbSL/Ihmug/zGekY7M5WwsoemG6r7hKja4DEi5igTCtdQRwaxXZ1iFtlxyKS2IUxXrPAMz7wXw+PfzL1ug==";

    #[test]
    fn reads_and_checks_a_mosquitto_hash() {
        let f = PasswordFile::parse(MOSQUITTO_7, "f").unwrap();
        let h = f.get("alice").unwrap();
        assert!(h.verify(b"secret"));
        assert!(!h.verify(b"Secret"));
        assert!(!h.verify(b""));
    }

    #[test]
    fn sha512_hashes_are_password_then_salt() {
        let salt = b"0123456789ab".to_vec();
        let mut d = Sha512::new();
        d.update(b"pw");
        d.update(&salt);
        let line = format!("bob:$6${}${}", B64.encode(&salt), B64.encode(d.finalize()));
        let f = PasswordFile::parse(&line, "f").unwrap();
        assert!(f.get("bob").unwrap().verify(b"pw"));
        assert!(!f.get("bob").unwrap().verify(b"pw2"));
    }

    #[test]
    fn written_hashes_read_back() {
        let mut f = PasswordFile::default();
        f.set("carol", Hash::new(b"p4ss", 1000));
        f.set("dave", Hash::new(b"x", 1000));
        f.set("carol", Hash::new(b"new", 1000));
        let mut again = PasswordFile::parse(&f.render(), "f").unwrap();
        assert_eq!(again, f);
        assert!(again.get("carol").unwrap().verify(b"new"));
        assert!(again.remove("carol"));
        assert!(!again.clone().remove("carol"));
        assert!(again.get("dave").unwrap().verify(b"x"));
        assert_eq!(again.len(), 1);
    }

    #[test]
    fn bad_lines_name_file_and_line() {
        for (text, want) in [
            ("# c\n\nalice\n", "line 3"),
            ("alice:plain\n", "line 1"),
            ("a:$7$0$AAAA$AAAA\n", "iterations"),
            ("a:$6$%%%$AAAA\n", "base64"),
            (":$6$AAAA$AAAA\n", "empty user"),
        ] {
            let err = PasswordFile::parse(text, "pw.txt").unwrap_err().to_string();
            assert!(
                err.contains("pw.txt") && err.contains(want),
                "{text}: {err}"
            );
        }
    }
}
