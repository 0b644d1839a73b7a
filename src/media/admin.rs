//! Operating the content repository: usage per user, purging old remote media, deleting a
//! user's media, listing the content a backup copies. Plain functions over the storage and
//! the files, so the `hearth media` commands (run by the server when it runs, through its
//! control socket, or on the database directly) and the running service (evicting the
//! cache, the admin API) share them.

use super::MediaRecord;
use super::files::MediaFiles;
use crate::storage::{Storage, StorageResult};

/// One user's uploads: how many, and their bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Usage {
    pub(crate) user: String,
    pub(crate) count: u64,
    pub(crate) bytes: u64,
}

/// What a purge or deletion removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Removed {
    pub(crate) count: u64,
    pub(crate) bytes: u64,
}

/// The SHA-256 of every content file a media record holds (ours and cached remote media):
/// what a backup copies. Upload IDs still waiting for content have none.
pub(crate) fn content_hashes(
    storage: &Storage,
) -> StorageResult<std::collections::BTreeSet<String>> {
    let mut hashes = std::collections::BTreeSet::new();
    for entry in storage.mediaid_record.iter() {
        let (_, record) = entry?;
        if !record.sha256.is_empty() {
            hashes.insert(record.sha256);
        }
    }
    Ok(hashes)
}

/// `(count, bytes)` of `user`'s uploads.
pub(crate) fn user_usage(storage: &Storage, user: &str) -> StorageResult<(u64, u64)> {
    let prefix = crate::storage::pair_prefix(user);
    let mut usage = (0, 0);
    for entry in storage.usermedia_size.scan_prefix(&prefix) {
        let (_, size) = entry?;
        if size > 0 {
            usage.0 += 1;
            usage.1 += size;
        }
    }
    Ok(usage)
}

/// Every local user's uploads, by user.
pub(crate) fn usage_per_user(storage: &Storage) -> StorageResult<Vec<Usage>> {
    let mut all: Vec<Usage> = Vec::new();
    for entry in storage.usermedia_size.iter() {
        let ((user, _), size) = entry?;
        if size == 0 {
            continue;
        }
        match all.last_mut() {
            Some(last) if last.user == user => {
                last.count += 1;
                last.bytes += size;
            }
            _ => all.push(Usage {
                user,
                count: 1,
                bytes: size,
            }),
        }
    }
    Ok(all)
}

/// Bytes of other servers' media held in the cache.
pub(crate) fn remote_bytes(storage: &Storage, our_server: &str) -> StorageResult<u64> {
    let mut total = 0;
    for entry in storage.mediaid_record.iter() {
        let ((server, _), record) = entry?;
        if server != our_server {
            total += record.size;
        }
    }
    Ok(total)
}

/// Removes one record, and the content (with its thumbnails) if no other record holds it.
/// Returns the record's size.
pub(crate) async fn remove_record(
    storage: &Storage,
    files: &MediaFiles,
    server: &str,
    media_id: &str,
) -> StorageResult<u64> {
    let key = (server.to_owned(), media_id.to_owned());
    let Some(record) = storage.mediaid_record.get(&key)? else {
        return Ok(0);
    };
    storage.mediaid_record.remove(&key)?;
    if let Some(user) = &record.uploader {
        storage
            .usermedia_size
            .remove(&(user.clone(), media_id.to_owned()))?;
    }
    release_content(storage, files, &record).await?;
    Ok(record.size)
}

/// Counts one reference to `record`'s content less, removing the file with the last.
async fn release_content(
    storage: &Storage,
    files: &MediaFiles,
    record: &MediaRecord,
) -> StorageResult<()> {
    if record.sha256.is_empty() {
        return Ok(());
    }
    let left = storage.sha256_refs.update(&record.sha256, |count| {
        count
            .map(|count| count.saturating_sub(1))
            .filter(|&c| c > 0)
    })?;
    if left.is_none() {
        files.remove_content(&record.sha256).await;
    }
    Ok(())
}

/// Removes other servers' media last used before `before_ms` (ms since the epoch).
pub(crate) async fn purge_remote_before(
    storage: &Storage,
    files: &MediaFiles,
    our_server: &str,
    before_ms: u64,
) -> StorageResult<Removed> {
    let mut old = Vec::new();
    for entry in storage.mediaid_record.iter() {
        let ((server, media_id), record) = entry?;
        let used = record.last_access_ms.max(record.created_ms);
        if server != our_server && used < before_ms {
            old.push((server, media_id));
        }
    }
    let mut removed = Removed::default();
    for (server, media_id) in old {
        removed.bytes += remove_record(storage, files, &server, &media_id).await?;
        removed.count += 1;
    }
    storage.flush().await?;
    Ok(removed)
}

/// `user`'s uploads (and upload IDs still unused), newest first: media ID and record.
pub(crate) fn user_media(
    storage: &Storage,
    our_server: &str,
    user: &str,
) -> StorageResult<Vec<(String, MediaRecord)>> {
    let prefix = crate::storage::pair_prefix(user);
    let mut found = Vec::new();
    for key in storage.usermedia_size.scan_prefix_keys(&prefix) {
        let (_, media_id) = key?;
        let record_key = (our_server.to_owned(), media_id.clone());
        if let Some(record) = storage.mediaid_record.get(&record_key)? {
            found.push((media_id, record));
        }
    }
    found.sort_by_key(|(_, record)| std::cmp::Reverse(record.created_ms));
    Ok(found)
}

/// Removes everything `user` uploaded (and their unused upload IDs).
pub(crate) async fn delete_user_media(
    storage: &Storage,
    files: &MediaFiles,
    our_server: &str,
    user: &str,
) -> StorageResult<Removed> {
    let prefix = crate::storage::pair_prefix(user);
    let ids: Vec<String> = storage
        .usermedia_size
        .scan_prefix_keys(&prefix)
        .map(|key| key.map(|(_, media_id)| media_id))
        .collect::<StorageResult<_>>()?;
    let mut removed = Removed::default();
    for media_id in ids {
        removed.bytes += remove_record(storage, files, our_server, &media_id).await?;
        removed.count += 1;
    }
    storage.flush().await?;
    Ok(removed)
}

/// The least recently used of other servers' media, oldest first, until `excess` bytes are
/// named: what to evict from a cache `excess` bytes over its cap.
pub(crate) fn least_recently_used(
    storage: &Storage,
    our_server: &str,
    excess: u64,
) -> StorageResult<Vec<(String, String)>> {
    let mut remote = Vec::new();
    for entry in storage.mediaid_record.iter() {
        let ((server, media_id), record) = entry?;
        if server != our_server {
            remote.push((record.last_access_ms, record.size, server, media_id));
        }
    }
    remote.sort_unstable();
    let mut named = 0;
    Ok(remote
        .into_iter()
        .take_while(|(_, size, _, _)| {
            let more = named < excess;
            named += size;
            more
        })
        .map(|(_, _, server, media_id)| (server, media_id))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt as _;

    /// Stores `bytes` as a file and a record of `server`'s, last used at `used`.
    async fn store(
        storage: &Storage,
        files: &MediaFiles,
        server: &str,
        media_id: &str,
        bytes: &[u8],
        used: u64,
    ) {
        let mut incoming = files.incoming(1 << 20).await.expect("incoming");
        incoming.write_all(bytes).await.expect("write");
        let stored = incoming.finish().await.expect("finish");
        storage
            .sha256_refs
            .update(&stored.sha256, |count| Some(count.unwrap_or(0) + 1))
            .expect("refs");
        let record = MediaRecord {
            sha256: stored.sha256,
            size: stored.size,
            content_type: None,
            filename: None,
            uploader: (server == "us").then(|| "@alice:us".to_owned()),
            created_ms: used,
            pending_until_ms: None,
            last_access_ms: used,
        };
        let key = (server.to_owned(), media_id.to_owned());
        storage
            .mediaid_record
            .insert(&key, &record)
            .expect("record");
        if let Some(user) = &record.uploader {
            storage
                .usermedia_size
                .insert(&(user.clone(), media_id.to_owned()), &record.size)
                .expect("usage");
        }
    }

    #[actix_web::test]
    async fn the_least_recently_used_remote_media_go_first_and_ours_never() {
        let (dir, storage) = crate::storage::testing::temporary();
        let files = MediaFiles::open(dir.path());
        store(&storage, &files, "us", "mine", &[0; 100], 1).await;
        store(&storage, &files, "there", "old", &[1; 100], 10).await;
        store(&storage, &files, "there", "recent", &[2; 100], 30).await;
        store(&storage, &files, "else", "middle", &[3; 100], 20).await;
        assert_eq!(remote_bytes(&storage, "us").expect("bytes"), 300);
        let victims = least_recently_used(&storage, "us", 150).expect("lru");
        assert_eq!(
            victims,
            vec![
                ("there".to_owned(), "old".to_owned()),
                ("else".to_owned(), "middle".to_owned())
            ]
        );
        let purged = purge_remote_before(&storage, &files, "us", 25)
            .await
            .expect("purge");
        assert_eq!(
            purged,
            Removed {
                count: 2,
                bytes: 200
            }
        );
        assert_eq!(remote_bytes(&storage, "us").expect("bytes"), 100);
        assert_eq!(user_usage(&storage, "@alice:us").expect("usage"), (1, 100));
    }

    #[actix_web::test]
    async fn shared_content_stays_until_its_last_record_goes() {
        let (dir, storage) = crate::storage::testing::temporary();
        let files = MediaFiles::open(dir.path());
        store(&storage, &files, "us", "first", b"same", 1).await;
        store(&storage, &files, "there", "copy", b"same", 1).await;
        let record = storage
            .mediaid_record
            .get(&("us".to_owned(), "first".to_owned()))
            .expect("get")
            .expect("record");
        let path = files.content_path(&record.sha256);
        let removed = delete_user_media(&storage, &files, "us", "@alice:us")
            .await
            .expect("delete");
        assert_eq!(removed, Removed { count: 1, bytes: 4 });
        assert!(path.exists(), "the other server's copy still holds it");
        remove_record(&storage, &files, "there", "copy")
            .await
            .expect("remove");
        assert!(!path.exists());
        assert_eq!(usage_per_user(&storage).expect("usage"), vec![]);
    }
}
