//! The durable engine: fjall 3, one keyspace per [`Space`], each batch one atomic fjall
//! `WriteBatch` across keyspaces. With [`Durability::Fsync`] the batch's journal is
//! `fdatasync`ed before `apply` returns; with [`Durability::Process`] it is written to the
//! operating system, which keeps it across `kill -9` of Tern (not across power loss).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

use super::{Durability, Engine, Op, Space, StoreError, FORMAT_VERSION, VERSION_KEY};

/// Largest in-memory table per keyspace before it is flushed to disk (fjall's default is
/// 64 MiB, eight keyspaces could hold 512 MiB): what bounds the store's memory, with its block
/// cache (32 MiB).
const MEMTABLE_BYTES: u64 = 8 * 1024 * 1024;

/// A fjall database in a directory of its own.
pub struct FjallEngine {
    path: PathBuf,
    db: Database,
    /// In [`Space::ALL`] order.
    spaces: Vec<Keyspace>,
}

impl FjallEngine {
    /// Opens (or creates) the store in `path`. A store of another format version is refused,
    /// not rewritten.
    pub fn open(path: &Path) -> Result<FjallEngine, StoreError> {
        let err = |e| open_error(path, e);
        let db = Database::builder(path).open().map_err(err)?;
        let spaces = Space::ALL
            .iter()
            .map(|s| {
                db.keyspace(s.name(), || {
                    KeyspaceCreateOptions::default().max_memtable_size(MEMTABLE_BYTES)
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(err)?;
        let engine = FjallEngine {
            path: path.to_path_buf(),
            db,
            spaces,
        };
        match engine.get(Space::Meta, VERSION_KEY)? {
            None => engine.apply(
                &[Op::Put(
                    Space::Meta,
                    VERSION_KEY.to_vec(),
                    FORMAT_VERSION.to_be_bytes().to_vec(),
                )],
                Durability::Fsync,
            )?,
            Some(v) => {
                let found = <[u8; 4]>::try_from(v.as_slice()).map_or(0, u32::from_be_bytes);
                if found != FORMAT_VERSION {
                    return Err(StoreError::Version {
                        path: engine.path.clone(),
                        found,
                        supported: FORMAT_VERSION,
                    });
                }
            }
        }
        Ok(engine)
    }

    fn space(&self, space: Space) -> &Keyspace {
        // `spaces` was built from `Space::ALL`, whose order `index` follows.
        &self.spaces[space.index()]
    }
}

impl Space {
    fn index(self) -> usize {
        self as usize
    }
}

/// Sorts an error at open: the store in use elsewhere, the environment (permissions, a full or
/// read-only disk: nothing wrong with the store), or damage to the store itself.
fn open_error(path: &Path, e: fjall::Error) -> StoreError {
    use std::io::ErrorKind;
    let io_kind = match &e {
        fjall::Error::Io(io) | fjall::Error::Storage(fjall::LsmError::Io(io)) => Some(io.kind()),
        _ => None,
    };
    let path = path.to_path_buf();
    let message = e.to_string();
    match (e, io_kind) {
        (fjall::Error::Locked, _) => StoreError::Locked { path },
        (
            _,
            Some(
                ErrorKind::PermissionDenied
                | ErrorKind::StorageFull
                | ErrorKind::ReadOnlyFilesystem
                | ErrorKind::QuotaExceeded
                | ErrorKind::OutOfMemory
                | ErrorKind::ResourceBusy
                | ErrorKind::WouldBlock,
            ),
        ) => StoreError::Engine { path, message },
        _ => StoreError::Damaged { path, message },
    }
}

fn engine_error(path: &Path) -> impl Fn(fjall::Error) -> StoreError + '_ {
    move |e| StoreError::Engine {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

impl Engine for FjallEngine {
    fn apply(&self, ops: &[Op], durability: Durability) -> Result<(), StoreError> {
        let err = engine_error(&self.path);
        let mode = match durability {
            Durability::Fsync => PersistMode::SyncData,
            Durability::Process => PersistMode::Buffer,
        };
        let mut batch = self.db.batch().durability(Some(mode));
        // Fast path, the usual batch: no prefix deletes and no key written twice, so the ops
        // go in as they are (one fjall batch has one sequence number: a key may appear once).
        if !ops.iter().any(|op| matches!(op, Op::DeletePrefix(..))) {
            let mut seen = std::collections::HashSet::with_capacity(ops.len());
            let unique = ops.iter().all(|op| match op {
                Op::Put(space, key, _) | Op::Delete(space, key) => seen.insert((*space, key)),
                Op::DeletePrefix(..) => false,
            });
            if unique {
                for op in ops {
                    match op {
                        Op::Put(space, key, value) => {
                            batch.insert(self.space(*space), key.as_slice(), value.as_slice())
                        }
                        Op::Delete(space, key) => batch.remove(self.space(*space), key.as_slice()),
                        Op::DeletePrefix(..) => {}
                    }
                }
                return batch.commit().map_err(&err);
            }
        }
        // The batch's net effect, in order: later ops win, and a prefix delete also covers keys
        // put earlier in the same batch (fjall's batch cannot be read back before commit).
        let mut net: BTreeMap<(Space, Vec<u8>), Option<&[u8]>> = BTreeMap::new();
        for op in ops {
            match op {
                Op::Put(space, key, value) => {
                    net.insert((*space, key.clone()), Some(value));
                }
                Op::Delete(space, key) => {
                    net.insert((*space, key.clone()), None);
                }
                Op::DeletePrefix(space, prefix) => {
                    for v in net
                        .range_mut((*space, prefix.clone())..)
                        .take_while(|((s, k), _)| s == space && k.starts_with(prefix))
                        .map(|(_, v)| v)
                    {
                        *v = None;
                    }
                    for guard in self.space(*space).prefix(prefix) {
                        let key = guard.key().map_err(&err)?;
                        net.insert((*space, key.to_vec()), None);
                    }
                }
            }
        }
        for ((space, key), value) in net {
            match value {
                Some(v) => batch.insert(self.space(space), key, v),
                None => batch.remove(self.space(space), key),
            }
        }
        batch.commit().map_err(&err)
    }

    fn scan(
        &self,
        space: Space,
        prefix: &[u8],
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StoreError> {
        let err = engine_error(&self.path);
        for guard in self.space(space).prefix(prefix) {
            let (k, v) = guard.into_inner().map_err(&err)?;
            if !f(&k, &v) {
                break;
            }
        }
        Ok(())
    }

    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let v = self
            .space(space)
            .get(key)
            .map_err(engine_error(&self.path))?;
        Ok(v.map(|v| v.to_vec()))
    }

    fn disk_space(&self) -> Option<u64> {
        self.db.disk_space().ok()
    }
}
