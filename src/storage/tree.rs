//! A sled tree with a typed key and value.

use std::marker::PhantomData;

use super::StorageResult;
use super::codec::{KeyCodec, ValueCodec};

pub struct Tree<K, V> {
    tree: sled::Tree,
    _types: PhantomData<(K, V)>,
}

impl<K: KeyCodec, V: ValueCodec> Tree<K, V> {
    pub(super) fn open(db: &sled::Db, name: &str) -> StorageResult<Self> {
        Ok(Tree {
            tree: db.open_tree(name)?,
            _types: PhantomData,
        })
    }

    pub fn get(&self, key: &K) -> StorageResult<Option<V::Value>> {
        self.tree
            .get(key.encode())?
            .map(|bytes| V::decode(&bytes))
            .transpose()
    }

    pub fn contains_key(&self, key: &K) -> StorageResult<bool> {
        Ok(self.tree.contains_key(key.encode())?)
    }

    pub fn insert(&self, key: &K, value: &V::Value) -> StorageResult<()> {
        self.tree.insert(key.encode(), V::encode(value)?)?;
        Ok(())
    }

    /// Inserts only when the key is absent; returns whether it did. Atomic, so two writers
    /// cannot both create the same record.
    pub fn insert_new(&self, key: &K, value: &V::Value) -> StorageResult<bool> {
        let swapped =
            self.tree
                .compare_and_swap(key.encode(), None::<&[u8]>, Some(V::encode(value)?))?;
        Ok(swapped.is_ok())
    }

    pub fn remove(&self, key: &K) -> StorageResult<()> {
        self.tree.remove(key.encode())?;
        Ok(())
    }

    /// Every entry in key order. Streams: nothing is collected here.
    pub fn iter(&self) -> impl Iterator<Item = StorageResult<(K, V::Value)>> + '_ {
        self.tree.iter().map(|entry| {
            let (key, value) = entry?;
            Ok((K::decode(&key)?, V::decode(&value)?))
        })
    }
}
