//! A FUSE filesystem that loses power: it keeps, for every file and directory, the image a
//! disk has made durable and the changes made since, and a simulated power cut throws the
//! changes away.
//!
//! The model (strict, as POSIX promises and no more):
//! - a file's data and size are durable once `fsync`/`fdatasync` of that file returns;
//! - a directory's entries (create, link, unlink, rename, mkdir, rmdir, socket) are durable
//!   once `fsync` of that directory returns, and not before: a file created and synced whose
//!   directory was never synced is gone after a cut;
//! - a file lives after a cut if a durable entry names it, with its durable data;
//! - permissions and times are not modelled (taken as durable at once).
//!
//! [`Cut::Strict`] drops every pending change. [`Cut::Reordered`] keeps, for each file on its
//! own, a random prefix of its pending writes and truncations, and tears the first write it
//! does not keep at 4 KiB page granularity (a random subset of its pages lands): a disk that
//! reorders writes between files and within a sync interval, as a real one may. Directory
//! entries stay strict in both.
//!
//! The whole filesystem lives in memory, shared with the test through [`PowerFs::state`], so
//! it outlives a mount: the test unmounts, cuts, and mounts again on the same state.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, BackgroundSession, Config, Errno, FileAttr, FileHandle, FileType, Filesystem,
    FopenFlags, Generation, INodeNo, LockOwner, MountOption, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs,
    ReplyWrite, Request, TimeOrNow, WriteFlags,
};

const TTL: Duration = Duration::from_secs(1);
const PAGE: u64 = 4096;
const PAGE_U32: u32 = 4096;
const ROOT: u64 = 1;

/// How a power cut treats what was not yet synced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cut {
    /// Every pending change is lost.
    Strict,
    /// Per file, a random prefix of pending changes survives, the next one torn by pages.
    Reordered,
}

#[derive(Clone, Debug)]
enum Change {
    Write { offset: u64, bytes: Vec<u8> },
    SetLen(u64),
}

impl Change {
    fn apply(&self, data: &mut Vec<u8>) {
        match self {
            Change::Write { offset, bytes } => {
                let start = usize::try_from(*offset).expect("offset fits");
                let end = start + bytes.len();
                if data.len() < end {
                    data.resize(end, 0);
                }
                data[start..end].copy_from_slice(bytes);
            }
            Change::SetLen(len) => data.resize(usize::try_from(*len).expect("len fits"), 0),
        }
    }
}

enum Content {
    File {
        data: Vec<u8>,
        durable: Vec<u8>,
        pending: Vec<Change>,
    },
    Dir {
        entries: BTreeMap<OsString, u64>,
        durable: BTreeMap<OsString, u64>,
    },
    Socket,
}

struct Node {
    mode: u16,
    nlink: u32,
    content: Content,
}

/// What the filesystem saw, for the test's report.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counters {
    pub writes: u64,
    pub file_syncs: u64,
    pub dir_syncs: u64,
    /// Bytes of pending writes thrown away by cuts.
    pub dropped_bytes: u64,
    /// Pending writes (whole or torn) that a reordered cut let through.
    pub kept_writes: u64,
    /// Directory entry changes thrown away by cuts.
    pub dropped_entries: u64,
}

pub struct State {
    nodes: HashMap<u64, Node>,
    next_ino: u64,
    rng: u64,
    pub counters: Counters,
}

impl State {
    pub fn new(seed: u64) -> State {
        let mut nodes = HashMap::new();
        nodes.insert(
            ROOT,
            Node {
                mode: 0o755,
                nlink: 2,
                content: Content::Dir {
                    entries: BTreeMap::new(),
                    durable: BTreeMap::new(),
                },
            },
        );
        State {
            nodes,
            next_ino: ROOT + 1,
            rng: seed | 1,
            counters: Counters::default(),
        }
    }

    fn random(&mut self) -> u64 {
        // xorshift64*: reproducible from the seed the test prints.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// The power cut: what was not durable is gone (see [`Cut`]), and so is every node no
    /// durable entry reaches.
    pub fn cut(&mut self, cut: Cut) {
        let mut inos: Vec<u64> = self.nodes.keys().copied().collect();
        inos.sort_unstable();
        for ino in inos {
            let keep = match &self.nodes[&ino].content {
                Content::File { pending, .. } if cut == Cut::Reordered && !pending.is_empty() => {
                    let len = pending.len() as u64;
                    Some((self.random() % (len + 1), self.random()))
                }
                _ => None,
            };
            let node = self.nodes.get_mut(&ino).expect("node");
            match &mut node.content {
                Content::File {
                    data,
                    durable,
                    pending,
                } => {
                    if let Some((kept, mut pages)) = keep {
                        let kept = usize::try_from(kept).expect("count");
                        for change in &pending[..kept] {
                            change.apply(durable);
                        }
                        self.counters.kept_writes += kept as u64;
                        if let Some(Change::Write { offset, bytes }) = pending.get(kept) {
                            // A torn write: some of its pages land, others do not.
                            let end = offset + bytes.len() as u64;
                            let mut page_start = *offset;
                            while page_start < end {
                                let page_end = ((page_start / PAGE) + 1) * PAGE;
                                let page_end = page_end.min(end);
                                if pages & 1 == 1 {
                                    let from = usize::try_from(page_start - offset).expect("i");
                                    let to = usize::try_from(page_end - offset).expect("i");
                                    Change::Write {
                                        offset: page_start,
                                        bytes: bytes[from..to].to_vec(),
                                    }
                                    .apply(durable);
                                }
                                pages = pages.rotate_right(1);
                                page_start = page_end;
                            }
                        }
                    }
                    for change in pending.iter() {
                        if let Change::Write { bytes, .. } = change {
                            self.counters.dropped_bytes += bytes.len() as u64;
                        }
                    }
                    pending.clear();
                    data.clone_from(durable);
                }
                Content::Dir { entries, durable } => {
                    let changed = entries
                        .iter()
                        .filter(|(name, ino)| durable.get(*name) != Some(ino))
                        .count()
                        + durable
                            .keys()
                            .filter(|name| !entries.contains_key(*name))
                            .count();
                    self.counters.dropped_entries += changed as u64;
                    entries.clone_from(durable);
                }
                Content::Socket => {}
            }
        }
        // Keep what the durable tree reaches, with link counts recounted.
        let mut links: HashMap<u64, u32> = HashMap::from([(ROOT, 2)]);
        let mut seen = HashSet::from([ROOT]);
        let mut todo = vec![ROOT];
        while let Some(dir) = todo.pop() {
            if let Content::Dir { entries, .. } = &self.nodes[&dir].content {
                for child in entries.values() {
                    *links.entry(*child).or_default() += 1;
                    if seen.insert(*child) {
                        todo.push(*child);
                    }
                }
            }
        }
        self.nodes.retain(|ino, _| seen.contains(ino));
        for (ino, node) in &mut self.nodes {
            let is_dir = matches!(node.content, Content::Dir { .. });
            node.nlink = links[ino] + u32::from(is_dir && *ino != ROOT);
        }
    }

    /// Bytes held for files (current images), to tell the test how big the database grew.
    pub fn file_bytes(&self) -> u64 {
        self.nodes
            .values()
            .map(|node| match &node.content {
                Content::File { data, .. } => data.len() as u64,
                _ => 0,
            })
            .sum()
    }

    fn attr(&self, ino: u64) -> Option<FileAttr> {
        let node = self.nodes.get(&ino)?;
        let (kind, size) = match &node.content {
            Content::File { data, .. } => (FileType::RegularFile, data.len() as u64),
            Content::Dir { entries, .. } => (FileType::Directory, entries.len() as u64),
            Content::Socket => (FileType::Socket, 0),
        };
        let now = SystemTime::now();
        Some(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: now,
            mtime: now,
            ctime: now,
            crtime: now,
            kind,
            perm: node.mode,
            nlink: node.nlink,
            uid: 0,
            gid: 0,
            rdev: 0,
            flags: 0,
            blksize: PAGE_U32,
        })
    }

    fn entries(&mut self, dir: u64) -> Result<&mut BTreeMap<OsString, u64>, Errno> {
        match self.nodes.get_mut(&dir).map(|node| &mut node.content) {
            Some(Content::Dir { entries, .. }) => Ok(entries),
            Some(_) => Err(Errno::ENOTDIR),
            None => Err(Errno::ENOENT),
        }
    }

    fn child(&mut self, dir: u64, name: &OsStr) -> Result<u64, Errno> {
        self.entries(dir)?.get(name).copied().ok_or(Errno::ENOENT)
    }

    fn make(
        &mut self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        content: Content,
    ) -> Result<u64, Errno> {
        if self.entries(parent)?.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        let is_dir = matches!(content, Content::Dir { .. });
        self.nodes.insert(
            ino,
            Node {
                mode: u16::try_from(mode & 0o7777).expect("mode bits"),
                nlink: if is_dir { 2 } else { 1 },
                content,
            },
        );
        self.entries(parent)?.insert(name.to_owned(), ino);
        if is_dir {
            self.nodes.get_mut(&parent).expect("parent").nlink += 1;
        }
        Ok(ino)
    }

    fn unlink_entry(&mut self, parent: u64, name: &OsStr, want_dir: bool) -> Result<(), Errno> {
        let ino = self.child(parent, name)?;
        let node = self.nodes.get(&ino).ok_or(Errno::ENOENT)?;
        match (&node.content, want_dir) {
            (Content::Dir { entries, .. }, true) if !entries.is_empty() => {
                return Err(Errno::ENOTEMPTY);
            }
            (Content::Dir { .. }, false) => return Err(Errno::EISDIR),
            (Content::Dir { .. }, true) => {
                self.nodes.get_mut(&parent).expect("parent").nlink -= 1;
            }
            (_, true) => return Err(Errno::ENOTDIR),
            (_, false) => {}
        }
        self.entries(parent)?.remove(name);
        let node = self.nodes.get_mut(&ino).expect("node");
        node.nlink = node.nlink.saturating_sub(if want_dir { 2 } else { 1 });
        // The node stays (open handles, and a cut may bring its durable entry back).
        Ok(())
    }

    fn write(&mut self, ino: u64, offset: u64, bytes: &[u8]) -> Result<(), Errno> {
        match self.nodes.get_mut(&ino).map(|node| &mut node.content) {
            Some(Content::File { data, pending, .. }) => {
                let change = Change::Write {
                    offset,
                    bytes: bytes.to_vec(),
                };
                change.apply(data);
                pending.push(change);
                self.counters.writes += 1;
                Ok(())
            }
            Some(_) => Err(Errno::EISDIR),
            None => Err(Errno::ENOENT),
        }
    }

    fn set_len(&mut self, ino: u64, len: u64) -> Result<(), Errno> {
        match self.nodes.get_mut(&ino).map(|node| &mut node.content) {
            Some(Content::File { data, pending, .. }) => {
                let change = Change::SetLen(len);
                change.apply(data);
                pending.push(change);
                Ok(())
            }
            Some(_) => Err(Errno::EISDIR),
            None => Err(Errno::ENOENT),
        }
    }

    fn sync(&mut self, ino: u64) -> Result<(), Errno> {
        match self.nodes.get_mut(&ino).map(|node| &mut node.content) {
            Some(Content::File {
                durable, pending, ..
            }) => {
                for change in pending.drain(..) {
                    change.apply(durable);
                }
                self.counters.file_syncs += 1;
                Ok(())
            }
            Some(Content::Dir { entries, durable }) => {
                durable.clone_from(entries);
                self.counters.dir_syncs += 1;
                Ok(())
            }
            Some(Content::Socket) => Ok(()),
            None => Err(Errno::ENOENT),
        }
    }
}

/// The FUSE side: every operation takes the shared state's lock.
pub struct PowerFs {
    pub state: Arc<Mutex<State>>,
}

impl PowerFs {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

/// Mounts `state` at `mountpoint`; dropping the session unmounts it.
pub fn mount(state: &Arc<Mutex<State>>, mountpoint: &Path) -> std::io::Result<BackgroundSession> {
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName("powercut".to_owned()),
        MountOption::NoAtime,
    ];
    fuser::spawn_mount(
        PowerFs {
            state: state.clone(),
        },
        mountpoint,
        &config,
    )
}

fn reply_entry(state: &State, ino: u64, reply: ReplyEntry) {
    match state.attr(ino) {
        Some(attr) => reply.entry(&TTL, &attr, Generation(0)),
        None => reply.error(Errno::ENOENT),
    }
}

fn done(result: Result<(), Errno>, reply: ReplyEmpty) {
    match result {
        Ok(()) => reply.ok(),
        Err(err) => reply.error(err),
    }
}

impl Filesystem for PowerFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let mut state = self.state();
        match state.child(parent.0, name) {
            Ok(ino) => reply_entry(&state, ino, reply),
            Err(err) => reply.error(err),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.state().attr(ino.0) {
            Some(attr) => reply.attr(&TTL, &attr),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut state = self.state();
        if let Some(len) = size
            && let Err(err) = state.set_len(ino.0, len)
        {
            return reply.error(err);
        }
        if let Some(mode) = mode
            && let Some(node) = state.nodes.get_mut(&ino.0)
        {
            node.mode = u16::try_from(mode & 0o7777).expect("mode bits");
        }
        match state.attr(ino.0) {
            Some(attr) => reply.attr(&TTL, &attr),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn mknod(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        let mut state = self.state();
        let content = match mode & libc::S_IFMT {
            libc::S_IFSOCK => Content::Socket,
            libc::S_IFREG => Content::File {
                data: Vec::new(),
                durable: Vec::new(),
                pending: Vec::new(),
            },
            _ => return reply.error(Errno::ENOSYS),
        };
        match state.make(parent.0, name, mode & !umask, content) {
            Ok(ino) => reply_entry(&state, ino, reply),
            Err(err) => reply.error(err),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let mut state = self.state();
        let content = Content::Dir {
            entries: BTreeMap::new(),
            durable: BTreeMap::new(),
        };
        match state.make(parent.0, name, mode & !umask, content) {
            Ok(ino) => reply_entry(&state, ino, reply),
            Err(err) => reply.error(err),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        done(self.state().unlink_entry(parent.0, name, false), reply);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        done(self.state().unlink_entry(parent.0, name, true), reply);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let mut state = self.state();
        let result = (|| {
            if !flags.is_empty() {
                return Err(Errno::EINVAL);
            }
            let ino = state.child(parent.0, name)?;
            if let Ok(existing) = state.child(newparent.0, newname) {
                if existing == ino {
                    return Ok(());
                }
                let is_dir = matches!(state.nodes[&existing].content, Content::Dir { .. });
                state.unlink_entry(newparent.0, newname, is_dir)?;
            }
            state.entries(parent.0)?.remove(name);
            state.entries(newparent.0)?.insert(newname.to_owned(), ino);
            if matches!(state.nodes[&ino].content, Content::Dir { .. }) && parent != newparent {
                state.nodes.get_mut(&parent.0).expect("dir").nlink -= 1;
                state.nodes.get_mut(&newparent.0).expect("dir").nlink += 1;
            }
            Ok(())
        })();
        done(result, reply);
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let mut state = self.state();
        let result = (|| {
            if matches!(
                state.nodes.get(&ino.0).map(|node| &node.content),
                Some(Content::Dir { .. })
            ) {
                return Err(Errno::EPERM);
            }
            let entries = state.entries(newparent.0)?;
            if entries.contains_key(newname) {
                return Err(Errno::EEXIST);
            }
            entries.insert(newname.to_owned(), ino.0);
            state.nodes.get_mut(&ino.0).ok_or(Errno::ENOENT)?.nlink += 1;
            Ok(())
        })();
        match result {
            Ok(()) => reply_entry(&state, ino.0, reply),
            Err(err) => reply.error(err),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.state().nodes.contains_key(&ino.0) {
            true => reply.opened(FileHandle(0), FopenFlags::empty()),
            false => reply.error(Errno::ENOENT),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let mut state = self.state();
        let content = Content::File {
            data: Vec::new(),
            durable: Vec::new(),
            pending: Vec::new(),
        };
        match state.make(parent.0, name, mode & !umask, content) {
            Ok(ino) => {
                let attr = state.attr(ino).expect("made");
                reply.created(
                    &TTL,
                    &attr,
                    Generation(0),
                    FileHandle(0),
                    FopenFlags::empty(),
                );
            }
            Err(err) => reply.error(err),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let state = self.state();
        match state.nodes.get(&ino.0).map(|node| &node.content) {
            Some(Content::File { data, .. }) => {
                let start = usize::try_from(offset)
                    .unwrap_or(usize::MAX)
                    .min(data.len());
                let end = start.saturating_add(size as usize).min(data.len());
                reply.data(&data[start..end]);
            }
            Some(_) => reply.error(Errno::EISDIR),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.state().write(ino.0, offset, data) {
            Ok(()) => reply.written(u32::try_from(data.len()).expect("write size")),
            Err(err) => reply.error(err),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        done(self.state().sync(ino.0), reply);
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.state().nodes.contains_key(&ino.0) {
            true => reply.opened(FileHandle(0), FopenFlags::empty()),
            false => reply.error(Errno::ENOENT),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let mut state = self.state();
        let listed: Vec<(u64, OsString)> = match state.entries(ino.0) {
            Ok(entries) => entries
                .iter()
                .map(|(name, child)| (*child, name.clone()))
                .collect(),
            Err(err) => return reply.error(err),
        };
        let mut all = vec![(ino.0, OsString::from(".")), (ino.0, OsString::from(".."))];
        all.extend(listed);
        for (index, (child, name)) in all
            .into_iter()
            .enumerate()
            .skip(usize::try_from(offset).unwrap_or(usize::MAX))
        {
            let kind = match state.nodes.get(&child).map(|node| &node.content) {
                Some(Content::Dir { .. }) => FileType::Directory,
                Some(Content::Socket) => FileType::Socket,
                _ => FileType::RegularFile,
            };
            if reply.add(INodeNo(child), index as u64 + 1, kind, &name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        done(self.state().sync(ino.0), reply);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        reply.statfs(
            1 << 24,
            1 << 23,
            1 << 23,
            1 << 20,
            1 << 19,
            PAGE_U32,
            255,
            PAGE_U32,
        );
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let mut state = self.state();
        let result = (|| {
            if mode != 0 {
                return Err(Errno::EOPNOTSUPP);
            }
            let size = state.attr(ino.0).ok_or(Errno::ENOENT)?.size;
            if offset + length > size {
                state.set_len(ino.0, offset + length)?;
            }
            Ok(())
        })();
        done(result, reply);
    }
}
