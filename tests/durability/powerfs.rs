//! A FUSE filesystem that forgets, on command, every write not yet made durable: a simulated
//! power cut for the tests.
//!
//! File contents live in memory. A write changes what readers see at once, but only an
//! `fsync`/`fdatasync` of that file makes it durable; [`Mounted::cut`] turns every file back
//! into its content at its last sync (a file never synced becomes empty). Directory changes
//! (create, rename, a `renameat2` exchange, unlink; an unlinked file stays usable through
//! the handles open on it) are kept as if the disk had journalled them: the cut models lost
//! data, the failure a missing fdatasync causes. `sync_file_range` never reaches a FUSE
//! filesystem, so sled's `flush()` alone makes nothing durable here, as on a real power loss.
//!
//! Files are opened with direct I/O: no kernel page cache can serve bytes the cut took back.

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

const S_IFMT: u32 = 0o170000;
const S_IFSOCK: u32 = 0o140000;
const BLOCK: u32 = 4096;

enum Kind {
    Dir(BTreeMap<OsString, u64>),
    File(Content),
    Socket,
}

struct Node {
    kind: Kind,
    perm: u16,
    mtime: SystemTime,
}

/// A file's bytes, with what is needed to take them back to the last sync: the length then,
/// and the bytes each later change overwrote (undone newest first).
#[derive(Default)]
struct Content {
    data: Vec<u8>,
    synced_len: usize,
    undo: Vec<(usize, Vec<u8>)>,
}

impl Content {
    fn write(&mut self, offset: usize, buf: &[u8]) {
        let end = offset + buf.len();
        let overlap_end = end.min(self.data.len());
        if offset < overlap_end {
            self.undo
                .push((offset, self.data[offset..overlap_end].to_vec()));
        }
        if self.data.len() < end {
            self.data.resize(end, 0);
        }
        self.data[offset..end].copy_from_slice(buf);
    }

    fn truncate(&mut self, len: usize) {
        if len < self.data.len() {
            self.undo.push((len, self.data[len..].to_vec()));
        }
        self.data.resize(len, 0);
    }

    fn sync(&mut self) {
        self.undo.clear();
        self.synced_len = self.data.len();
    }

    /// Back to the last sync; returns whether anything was lost.
    fn cut(&mut self) -> bool {
        let lost = !self.undo.is_empty() || self.data.len() != self.synced_len;
        for (offset, old) in self.undo.drain(..).rev() {
            let end = offset + old.len();
            if self.data.len() < end {
                self.data.resize(end, 0);
            }
            self.data[offset..end].copy_from_slice(&old);
        }
        self.data.resize(self.synced_len, 0);
        lost
    }
}

struct State {
    nodes: HashMap<u64, Node>,
    next_ino: u64,
    syncs: u64,
    /// Every node belongs to the owner of the mount point.
    owner: (u32, u32),
}

impl State {
    fn attr(&self, ino: u64) -> Option<FileAttr> {
        let node = self.nodes.get(&ino)?;
        let (kind, size) = match &node.kind {
            Kind::Dir(_) => (FileType::Directory, 0),
            Kind::File(c) => (FileType::RegularFile, c.data.len() as u64),
            Kind::Socket => (FileType::Socket, 0),
        };
        Some(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: node.mtime,
            mtime: node.mtime,
            ctime: node.mtime,
            crtime: node.mtime,
            kind,
            perm: node.perm,
            nlink: if kind == FileType::Directory { 2 } else { 1 },
            uid: self.owner.0,
            gid: self.owner.1,
            rdev: 0,
            blksize: BLOCK,
            flags: 0,
        })
    }

    fn dir(&mut self, ino: u64) -> Result<&mut BTreeMap<OsString, u64>, Errno> {
        match self.nodes.get_mut(&ino).map(|n| &mut n.kind) {
            Some(Kind::Dir(d)) => Ok(d),
            Some(_) => Err(Errno::ENOTDIR),
            None => Err(Errno::ENOENT),
        }
    }

    fn file(&mut self, ino: u64) -> Result<&mut Node, Errno> {
        match self.nodes.get_mut(&ino) {
            Some(n) if matches!(n.kind, Kind::File(_)) => Ok(n),
            Some(_) => Err(Errno::EISDIR),
            None => Err(Errno::ENOENT),
        }
    }

    fn add(&mut self, parent: u64, name: &OsStr, kind: Kind, mode: u32) -> Result<FileAttr, Errno> {
        if self.dir(parent)?.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.nodes.insert(
            ino,
            Node {
                kind,
                perm: (mode & 0o7777) as u16,
                mtime: SystemTime::now(),
            },
        );
        self.dir(parent)?.insert(name.to_owned(), ino);
        Ok(self.attr(ino).expect("just added"))
    }

    fn remove(&mut self, parent: u64, name: &OsStr, want_dir: bool) -> Result<(), Errno> {
        let ino = *self.dir(parent)?.get(name).ok_or(Errno::ENOENT)?;
        match &self.nodes[&ino].kind {
            Kind::Dir(_) if !want_dir => return Err(Errno::EISDIR),
            Kind::Dir(d) if !d.is_empty() => return Err(Errno::ENOTEMPTY),
            Kind::File(_) | Kind::Socket if want_dir => return Err(Errno::ENOTDIR),
            _ => {}
        }
        // The node stays: a process that has the file open goes on reading and syncing it,
        // as on a disk, until it closes it (nodes are never freed; tests are short).
        self.dir(parent)?.remove(name);
        Ok(())
    }
}

/// The mounted filesystem; unmounted when dropped.
pub struct Mounted {
    state: Arc<Mutex<State>>,
    _session: fuser::BackgroundSession,
}

/// What a cut took back.
#[derive(Debug, Default)]
pub struct Cut {
    /// Paths (relative to the mount point) of the files whose content went back to an
    /// earlier state.
    pub changed: Vec<String>,
}

impl Mounted {
    /// Mounts an empty filesystem on `at` (an existing empty directory). Needs root and
    /// `/dev/fuse`.
    pub fn mount(at: &Path) -> std::io::Result<Mounted> {
        let mut nodes = HashMap::new();
        nodes.insert(
            INodeNo::ROOT.0,
            Node {
                kind: Kind::Dir(BTreeMap::new()),
                perm: 0o755,
                mtime: SystemTime::now(),
            },
        );
        let state = Arc::new(Mutex::new(State {
            nodes,
            next_ino: INodeNo::ROOT.0 + 1,
            syncs: 0,
            owner: {
                use std::os::unix::fs::MetadataExt;
                let m = std::fs::metadata(at)?;
                (m.uid(), m.gid())
            },
        }));
        let mut config = fuser::Config::default();
        config.mount_options = vec![fuser::MountOption::FSName("powerfs".into())];
        let session = fuser::spawn_mount(PowerFs(state.clone()), at, &config)?;
        Ok(Mounted {
            state,
            _session: session,
        })
    }

    /// The power cut: every file back to its last synced content.
    pub fn cut(&self) -> Cut {
        let mut state = self.state.lock().unwrap();
        let mut cut = Cut::default();
        let mut dirs = vec![(INodeNo::ROOT.0, String::new())];
        while let Some((ino, path)) = dirs.pop() {
            let Some(Node {
                kind: Kind::Dir(children),
                ..
            }) = state.nodes.get(&ino)
            else {
                continue;
            };
            let children: Vec<(u64, String)> = children
                .iter()
                .map(|(name, i)| (*i, format!("{path}{}", name.to_string_lossy())))
                .collect();
            for (child, child_path) in children {
                match &mut state.nodes.get_mut(&child).expect("linked").kind {
                    Kind::File(c) => {
                        if c.cut() {
                            cut.changed.push(child_path);
                        }
                    }
                    Kind::Dir(_) => dirs.push((child, format!("{child_path}/"))),
                    Kind::Socket => {}
                }
            }
        }
        cut.changed.sort();
        cut
    }

    /// How many file syncs the filesystem has served.
    pub fn syncs(&self) -> u64 {
        self.state.lock().unwrap().syncs
    }
}

struct PowerFs(Arc<Mutex<State>>);

const TTL: Duration = Duration::ZERO;

fn reply_entry(r: Result<FileAttr, Errno>, reply: ReplyEntry) {
    match r {
        Ok(a) => reply.entry(&TTL, &a, Generation(0)),
        Err(e) => reply.error(e),
    }
}

fn reply_empty(r: Result<(), Errno>, reply: ReplyEmpty) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

impl PowerFs {
    fn state(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap()
    }
}

impl Filesystem for PowerFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let mut s = self.state();
        let ino = match s.dir(parent.0) {
            Ok(d) => d.get(name).copied(),
            Err(e) => return reply.error(e),
        };
        match ino.and_then(|i| s.attr(i)) {
            Some(a) => reply.entry(&TTL, &a, Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.state().attr(ino.0) {
            Some(a) => reply.attr(&TTL, &a),
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
        let mut s = self.state();
        let Some(node) = s.nodes.get_mut(&ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        if let Some(m) = mode {
            node.perm = (m & 0o7777) as u16;
        }
        if let Some(len) = size {
            match &mut node.kind {
                Kind::File(c) => c.truncate(len as usize),
                _ => return reply.error(Errno::EISDIR),
            }
            node.mtime = SystemTime::now();
        }
        reply.attr(&TTL, &s.attr(ino.0).expect("present"));
    }

    fn mknod(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        // Unix sockets only (the admin socket); anything else is not needed here.
        if mode & S_IFMT != S_IFSOCK {
            return reply.error(Errno::EPERM);
        }
        reply_entry(self.state().add(parent.0, name, Kind::Socket, mode), reply);
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let added = self
            .state()
            .add(parent.0, name, Kind::Dir(BTreeMap::new()), mode);
        reply_entry(added, reply);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(self.state().remove(parent.0, name, false), reply);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(self.state().remove(parent.0, name, true), reply);
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
        let mut s = self.state();
        if flags.contains(RenameFlags::RENAME_EXCHANGE) {
            // Both names must exist; each then names the other's node, in one step.
            let a = s.dir(parent.0).map(|d| d.get(name).copied());
            let b = s.dir(newparent.0).map(|d| d.get(newname).copied());
            return match (a, b) {
                (Ok(Some(a)), Ok(Some(b))) => {
                    s.dir(parent.0).expect("checked").insert(name.to_owned(), b);
                    s.dir(newparent.0)
                        .expect("checked")
                        .insert(newname.to_owned(), a);
                    reply.ok()
                }
                (Err(e), _) | (_, Err(e)) => reply.error(e),
                _ => reply.error(Errno::ENOENT),
            };
        }
        if flags.contains(RenameFlags::RENAME_NOREPLACE)
            && s.dir(newparent.0).is_ok_and(|d| d.contains_key(newname))
        {
            return reply.error(Errno::EEXIST);
        }
        let moved = match s.dir(parent.0).map(|d| d.remove(name)) {
            Ok(Some(ino)) => ino,
            Ok(None) => return reply.error(Errno::ENOENT),
            Err(e) => return reply.error(e),
        };
        match s.dir(newparent.0) {
            Ok(d) => {
                // A replaced node stays for whoever has it open (see `remove`).
                d.insert(newname.to_owned(), moved);
                reply.ok()
            }
            Err(e) => {
                s.dir(parent.0)
                    .expect("checked")
                    .insert(name.to_owned(), moved);
                reply.error(e)
            }
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.state().file(ino.0) {
            Ok(_) => reply.opened(FileHandle(0), FopenFlags::FOPEN_DIRECT_IO),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        match self
            .state()
            .add(parent.0, name, Kind::File(Content::default()), mode)
        {
            Ok(a) => reply.created(
                &TTL,
                &a,
                Generation(0),
                FileHandle(0),
                FopenFlags::FOPEN_DIRECT_IO,
            ),
            Err(e) => reply.error(e),
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
        let mut s = self.state();
        match s.file(ino.0).map(|n| &n.kind) {
            Ok(Kind::File(c)) => {
                let start = (offset as usize).min(c.data.len());
                let end = (start + size as usize).min(c.data.len());
                reply.data(&c.data[start..end])
            }
            Ok(_) => reply.error(Errno::EISDIR),
            Err(e) => reply.error(e),
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
        let mut s = self.state();
        match s.file(ino.0) {
            Ok(node) => {
                if let Kind::File(c) = &mut node.kind {
                    c.write(offset as usize, data);
                }
                node.mtime = SystemTime::now();
                reply.written(data.len() as u32)
            }
            Err(e) => reply.error(e),
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
        // close(2): not a sync.
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
        let mut s = self.state();
        s.syncs += 1;
        match s.file(ino.0) {
            Ok(node) => {
                if let Kind::File(c) = &mut node.kind {
                    c.sync();
                }
                reply.ok()
            }
            Err(e) => reply.error(e),
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
        let mut s = self.state();
        let entries: Vec<(u64, OsString)> = match s.dir(ino.0) {
            Ok(d) => d.iter().map(|(n, i)| (*i, n.clone())).collect(),
            Err(e) => return reply.error(e),
        };
        let all = [(ino.0, OsString::from(".")), (ino.0, OsString::from(".."))]
            .into_iter()
            .chain(entries);
        for (i, (child, name)) in all.enumerate().skip(offset as usize) {
            let kind = s.attr(child).map_or(FileType::RegularFile, |a| a.kind);
            if reply.add(INodeNo(child), i as u64 + 1, kind, &name) {
                break;
            }
        }
        reply.ok()
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Directory changes are kept anyway (see the module comment).
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        // 64 GiB, nearly all free: the service's free-disk checks pass.
        let blocks = (64u64 << 30) / u64::from(BLOCK);
        reply.statfs(
            blocks,
            blocks - 1,
            blocks - 1,
            1 << 20,
            1 << 20,
            BLOCK,
            255,
            BLOCK,
        );
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }
}

#[cfg(test)]
mod tests {
    use super::Content;

    #[test]
    fn a_cut_restores_the_synced_bytes_through_overwrites_and_truncations() {
        let mut c = Content::default();
        c.write(0, b"hello world");
        c.sync();
        c.write(6, b"WORLD and more");
        c.truncate(3);
        c.write(0, b"xyzxyzxyz");
        assert!(c.cut());
        assert_eq!(c.data, b"hello world");
        assert!(!c.cut(), "nothing left to lose");
        c.write(20, b"gap");
        assert!(c.cut());
        assert_eq!(c.data, b"hello world");
    }

    #[test]
    fn a_file_never_synced_is_empty_after_a_cut() {
        let mut c = Content::default();
        c.write(0, b"conf");
        assert!(c.cut());
        assert!(c.data.is_empty());
    }
}
