//! A sled tree with a typed key and value.

use std::marker::PhantomData;

use super::codec::{KeyCodec, ValueCodec};
use super::gate::Gate;
use super::{Batch, StorageResult};

pub struct Tree<K, V> {
    tree: sled::Tree,
    /// Taken shared around each write, so a backup can hold writes still (see [`Gate`]).
    gate: Gate,
    _types: PhantomData<(K, V)>,
}

impl<K: KeyCodec, V: ValueCodec> Tree<K, V> {
    pub(super) fn open(db: &sled::Db, gate: &Gate, name: &str) -> StorageResult<Self> {
        Ok(Tree {
            tree: db.open_tree(name)?,
            gate: gate.clone(),
            _types: PhantomData,
        })
    }

    /// How many entries the tree holds, and the bytes of their keys and values.
    pub(super) fn footprint(&self) -> StorageResult<(u64, u64)> {
        let mut footprint = (0, 0);
        for entry in self.tree.iter() {
            let (key, value) = entry?;
            footprint.0 += 1;
            footprint.1 += (key.len() + value.len()) as u64;
        }
        Ok(footprint)
    }

    /// The tree's name in the database.
    pub(super) fn name(&self) -> sled::IVec {
        self.tree.name()
    }

    /// The stored bytes at an encoded key.
    pub(super) fn tree_get(&self, key: &[u8]) -> StorageResult<Option<sled::IVec>> {
        Ok(self.tree.get(key)?)
    }

    pub fn get(&self, key: &K) -> StorageResult<Option<V::Value>> {
        self.tree
            .get(key.encode())?
            .map(|bytes| V::decode(&bytes))
            .transpose()
    }

    pub(crate) fn contains_key(&self, key: &K) -> StorageResult<bool> {
        Ok(self.tree.contains_key(key.encode())?)
    }

    pub(crate) fn insert(&self, key: &K, value: &V::Value) -> StorageResult<()> {
        let value = V::encode(value)?;
        let _writing = self.gate.pass();
        self.tree.insert(key.encode(), value)?;
        Ok(())
    }

    /// Inserts only when the key is absent; returns whether it did. Atomic, so two writers
    /// cannot both create the same record.
    pub(crate) fn insert_new(&self, key: &K, value: &V::Value) -> StorageResult<bool> {
        let value = V::encode(value)?;
        let _writing = self.gate.pass();
        let swapped = self
            .tree
            .compare_and_swap(key.encode(), None::<&[u8]>, Some(value))?;
        Ok(swapped.is_ok())
    }

    pub(crate) fn remove(&self, key: &K) -> StorageResult<()> {
        let _writing = self.gate.pass();
        self.tree.remove(key.encode())?;
        Ok(())
    }

    /// Changes one value in place, atomically: `change` sees the current value (or `None`)
    /// and returns the new one (`None` removes it). It may run more than once under
    /// contention, so it must not have side effects. Returns the value written.
    pub(crate) fn update(
        &self,
        key: &K,
        mut change: impl FnMut(Option<V::Value>) -> Option<V::Value>,
    ) -> StorageResult<Option<V::Value>> {
        let mut failure = None;
        let _writing = self.gate.pass();
        let written = self.tree.update_and_fetch(key.encode(), |old| {
            let old = match old.map(V::decode).transpose() {
                Ok(old) => old,
                Err(err) => {
                    failure = Some(err);
                    return old.map(<[u8]>::to_vec);
                }
            };
            match change(old).map(|new| V::encode(&new)).transpose() {
                Ok(new) => new,
                Err(err) => {
                    failure = Some(err);
                    None
                }
            }
        })?;
        if let Some(err) = failure {
            return Err(err);
        }
        written.map(|bytes| V::decode(&bytes)).transpose()
    }

    /// Adds an insert to `batch`, applied with the batch's other writes or not at all.
    pub(crate) fn batch_insert(
        &self,
        batch: &mut Batch,
        key: &K,
        value: &V::Value,
    ) -> StorageResult<()> {
        batch.push(&self.tree, key.encode(), Some(V::encode(value)?));
        Ok(())
    }

    /// Adds a removal to `batch`.
    pub(crate) fn batch_remove(&self, batch: &mut Batch, key: &K) {
        batch.push(&self.tree, key.encode(), None);
    }

    /// The entries whose encoded key starts with `prefix`, in key order.
    pub(crate) fn scan_prefix(
        &self,
        prefix: &[u8],
    ) -> impl Iterator<Item = StorageResult<(K, V::Value)>> + '_ {
        self.tree.scan_prefix(prefix).map(|entry| {
            let (key, value) = entry?;
            Ok((K::decode(&key)?, V::decode(&value)?))
        })
    }

    /// The keys (only: values are not decoded) whose encoding starts with `prefix`, in key
    /// order: for counting or removing entries on a hot path, such as each `/sync`.
    pub(crate) fn scan_prefix_keys(
        &self,
        prefix: &[u8],
    ) -> impl Iterator<Item = StorageResult<K>> + '_ {
        self.tree.scan_prefix(prefix).map(|entry| {
            let (key, _) = entry?;
            K::decode(&key)
        })
    }

    /// The entries from `from` to `to` (both included), in key order or, with `.rev()`,
    /// backwards; none when `to` comes before `from`. Streams: nothing is collected here.
    pub(crate) fn range(
        &self,
        from: &K,
        to: &K,
    ) -> impl DoubleEndedIterator<Item = StorageResult<(K, V::Value)>> + '_ {
        let (from, to) = (from.encode(), to.encode());
        // A backwards span is empty (sled's ranges must not run backwards).
        let empty = from > to;
        let to = if empty { from.clone() } else { to };
        self.tree
            .range(from..=to)
            .filter(move |_| !empty)
            .map(|entry| {
                let (key, value) = entry?;
                Ok((K::decode(&key)?, V::decode(&value)?))
            })
    }

    /// Every entry in key order. Streams: nothing is collected here.
    pub fn iter(&self) -> impl Iterator<Item = StorageResult<(K, V::Value)>> + '_ {
        self.tree.iter().map(|entry| {
            let (key, value) = entry?;
            Ok((K::decode(&key)?, V::decode(&value)?))
        })
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn ranges_run_both_ways_and_backwards_spans_are_empty() {
        let (_dir, storage) = crate::storage::testing::temporary();
        for position in [1u64, 5, 9] {
            storage
                .stream_room
                .insert(&position, &format!("!r{position}:x"))
                .expect("insert");
        }
        let keys = |from: u64, to: u64, reverse: bool| -> Vec<u64> {
            let range = storage.stream_room.range(&from, &to);
            let entries: Vec<_> = if reverse {
                range.rev().collect()
            } else {
                range.collect()
            };
            entries
                .into_iter()
                .map(|entry| entry.expect("entry").0)
                .collect()
        };
        assert_eq!(keys(1, 9, false), vec![1, 5, 9]);
        assert_eq!(keys(2, 9, true), vec![9, 5]);
        assert_eq!(keys(9, 1, false), Vec::<u64>::new());
        assert_eq!(keys(6, 5, true), Vec::<u64>::new());
    }
}
