//! The engine for persistence off (and for tests): ordered maps in memory, same contract as the
//! durable engine, nothing survives the process.

use std::collections::BTreeMap;

use parking_lot::RwLock;

use super::{Durability, Engine, Op, Space, StoreError};

/// One space's records, in key order.
type Records = BTreeMap<Vec<u8>, Vec<u8>>;

/// Every space as an ordered map.
#[derive(Debug, Default)]
pub struct MemoryEngine {
    spaces: RwLock<BTreeMap<Space, Records>>,
}

impl MemoryEngine {
    /// An empty store.
    pub fn new() -> MemoryEngine {
        MemoryEngine::default()
    }
}

impl Engine for MemoryEngine {
    fn apply(&self, ops: &[Op], _durability: Durability) -> Result<(), StoreError> {
        let mut spaces = self.spaces.write();
        for op in ops {
            match op {
                Op::Put(space, key, value) => {
                    spaces
                        .entry(*space)
                        .or_default()
                        .insert(key.clone(), value.clone());
                }
                Op::Delete(space, key) => {
                    if let Some(map) = spaces.get_mut(space) {
                        map.remove(key);
                    }
                }
                Op::DeletePrefix(space, prefix) => {
                    if let Some(map) = spaces.get_mut(space) {
                        map.retain(|k, _| !k.starts_with(prefix));
                    }
                }
            }
        }
        Ok(())
    }

    fn scan(
        &self,
        space: Space,
        prefix: &[u8],
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StoreError> {
        let spaces = self.spaces.read();
        let Some(map) = spaces.get(&space) else {
            return Ok(());
        };
        for (k, v) in map.range(prefix.to_vec()..) {
            if !k.starts_with(prefix) || !f(k, v) {
                break;
            }
        }
        Ok(())
    }

    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .spaces
            .read()
            .get(&space)
            .and_then(|m| m.get(key).cloned()))
    }
}
