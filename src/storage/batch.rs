//! [`Batch`]: writes to several trees that land together or not at all (one sled
//! transaction), so no crash or error leaves half a record behind.

use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional as _};

use super::{StorageError, StorageResult};

/// Writes collected with `Tree::batch_insert` and `Tree::batch_remove`, applied by
/// [`super::Storage::apply`].
#[derive(Default)]
pub(crate) struct Batch {
    trees: Vec<sled::Tree>,
    /// (index into `trees`, key, new value or `None` to remove)
    writes: Vec<(usize, Vec<u8>, Option<Vec<u8>>)>,
}

impl Batch {
    pub(crate) fn new() -> Batch {
        Batch::default()
    }

    pub(super) fn push(&mut self, tree: &sled::Tree, key: Vec<u8>, value: Option<Vec<u8>>) {
        let index = match self.trees.iter().position(|t| t.name() == tree.name()) {
            Some(index) => index,
            None => {
                self.trees.push(tree.clone());
                self.trees.len() - 1
            }
        };
        self.writes.push((index, key, value));
    }

    /// The writes of the batch in the tree named `name`, in order: each key and its new
    /// value (`None`: removed).
    pub(super) fn writes_of(&self, name: &sled::IVec) -> Vec<(&[u8], Option<&[u8]>)> {
        let Some(index) = self.trees.iter().position(|tree| tree.name() == name) else {
            return Vec::new();
        };
        self.writes
            .iter()
            .filter(|(tree, _, _)| *tree == index)
            .map(|(_, key, value)| (key.as_slice(), value.as_deref()))
            .collect()
    }

    /// How many writes the batch holds.
    pub(crate) fn len(&self) -> usize {
        self.writes.len()
    }

    pub(super) fn apply(self) -> StorageResult<()> {
        if self.writes.is_empty() {
            return Ok(());
        }
        let trees: Vec<&sled::Tree> = self.trees.iter().collect();
        let result: Result<(), TransactionError<()>> = trees.as_slice().transaction(|views| {
            for (index, key, value) in &self.writes {
                match value {
                    Some(value) => views[*index].insert(key.as_slice(), value.as_slice())?,
                    None => views[*index].remove(key.as_slice())?,
                };
            }
            Ok::<(), ConflictableTransactionError<()>>(())
        });
        result.map_err(|err| match err {
            TransactionError::Storage(err) => StorageError::Sled(err),
            TransactionError::Abort(()) => StorageError::Corrupt("transaction aborted".to_owned()),
        })
    }
}
