//! Durable state, below the broker: an ordered key-value [`Engine`] with one keyspace per kind
//! of record ([`Space`]), changed only in atomic batches of [`Op`]s, and the [`Committer`] that
//! groups the batches of many connections into one durable write (one `fdatasync` for many
//! acknowledgements).
//!
//! Two engines share one contract (and one test suite, `tests.rs`): [`MemoryEngine`] (nothing
//! survives the process; what persistence off means) and [`FjallEngine`] (fjall 3, an LSM tree in
//! safe Rust, chosen after measuring engines on our write pattern). Keys are laid out so that everything of one client is one
//! prefix ([`client_key`]); values are opaque here. The store knows nothing of MQTT.

mod committer;
mod fjall_engine;
mod memory;
#[cfg(test)]
mod tests;

use std::path::PathBuf;

pub use committer::{BatchPolicy, Committer, Ticket};
pub use fjall_engine::FjallEngine;
pub use memory::MemoryEngine;

/// The kinds of record, each its own keyspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Space {
    /// Schema version and other store-wide facts.
    Meta,
    /// Topic → retained message.
    Retained,
    /// Client id → persistent session.
    Sessions,
    /// Client id ‖ filter → subscription options.
    Subscriptions,
    /// Sequence → a message stored for persistent sessions, with its recipients.
    Queue,
    /// Sequence ‖ client id → that recipient has the message (acknowledged it).
    Acks,
    /// Client id ‖ packet id → outbound QoS 1/2 state.
    InflightOut,
    /// Client id ‖ packet id → inbound QoS 2 awaiting PUBREL.
    InflightIn,
}

impl Space {
    /// Every space, in a fixed order.
    pub const ALL: [Space; 8] = [
        Space::Meta,
        Space::Retained,
        Space::Sessions,
        Space::Subscriptions,
        Space::Queue,
        Space::Acks,
        Space::InflightOut,
        Space::InflightIn,
    ];

    /// The keyspace's name on disk (stable: part of the format).
    pub fn name(self) -> &'static str {
        match self {
            Space::Meta => "meta",
            Space::Retained => "retained",
            Space::Sessions => "sessions",
            Space::Subscriptions => "subs",
            Space::Queue => "queue",
            Space::Acks => "acks",
            Space::InflightOut => "inflight_out",
            Space::InflightIn => "inflight_in",
        }
    }
}

/// One change. A batch of them is applied all or nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Sets `key` to `value`.
    Put(Space, Vec<u8>, Vec<u8>),
    /// Removes `key` (absent is fine).
    Delete(Space, Vec<u8>),
    /// Removes every key starting with the prefix (a client's queue, say).
    DeletePrefix(Space, Vec<u8>),
}

/// How far a committed batch is guaranteed to have gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Synced to the disk (`fdatasync`): survives power loss.
    #[default]
    Fsync,
    /// Handed to the operating system: survives `kill -9` of Tern, not power loss.
    Process,
}

/// Why the store failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The engine reported an error.
    #[error("store {path}: {message}")]
    Engine {
        /// The store's directory.
        path: PathBuf,
        /// What the engine said.
        message: String,
    },
    /// The store was written by a format this version cannot read.
    #[error("store {path} has format version {found}; this Tern reads version {supported}")]
    Version {
        /// The store's directory.
        path: PathBuf,
        /// What it says.
        found: u32,
        /// What we read.
        supported: u32,
    },
    /// The store's files cannot be read as a store (damaged, or not a store at all).
    #[error("store {path} is damaged: {message}")]
    Damaged {
        /// The store's directory.
        path: PathBuf,
        /// What the engine said.
        message: String,
    },
    /// Another process holds the store.
    #[error("store {path} is in use by another process")]
    Locked {
        /// The store's directory.
        path: PathBuf,
    },
    /// The committer thread is gone (the broker is stopping).
    #[error("the store is closed")]
    Closed,
    /// Cluster mode: NATS JetStream did not take the write (unreachable, no quorum, timed out).
    #[error("the cluster did not store it: {0}")]
    Cluster(String),
}

/// The format version written into [`Space::Meta`]; bump it with a migration.
pub const FORMAT_VERSION: u32 = 1;

/// Key of the format version in [`Space::Meta`].
pub const VERSION_KEY: &[u8] = b"format_version";

/// An ordered key-value store of [`Space`]s, changed in atomic batches.
/// Shared: the storage thread applies batches while connections read stored messages.
pub trait Engine: Send + Sync + 'static {
    /// Applies `ops` in order, atomically, as durable as `durability` says before returning.
    /// Only the storage thread calls it, so batches never interleave.
    fn apply(&self, ops: &[Op], durability: Durability) -> Result<(), StoreError>;

    /// Calls `f` with each entry of `space` whose key starts with `prefix`, in key order, until it
    /// returns false. For recovery and for reading a queue back.
    fn scan(
        &self,
        space: Space,
        prefix: &[u8],
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StoreError>;

    /// The value of one key.
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// Bytes the store takes on disk; `None` for an engine without files.
    fn disk_space(&self) -> Option<u64> {
        None
    }
}

/// The key prefix of everything belonging to `client_id`: its length (u16, big-endian) then its
/// bytes, so no client's prefix is a prefix of another's.
pub fn client_key(client_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(2 + client_id.len());
    // Client ids are MQTT strings: at most 65,535 bytes.
    let len = u16::try_from(client_id.len()).unwrap_or(u16::MAX);
    key.extend_from_slice(&len.to_be_bytes());
    key.extend_from_slice(client_id.as_bytes());
    key
}

/// `client_key(client_id)` followed by `suffix` (a big-endian sequence or packet id, a filter).
pub fn client_key_with(client_id: &str, suffix: &[u8]) -> Vec<u8> {
    let mut key = client_key(client_id);
    key.extend_from_slice(suffix);
    key
}
