//! The built-in IPAM: host-local's on-disk layout, so it is familiar to operators.
//!
//! `<dataDir>/<network>/` holds one file per allocated address, named by the address and
//! containing `"<containerID>\r\n<ifname>"`, plus `last_reserved_ip.0` (the last address handed
//! out, for round-robin) and `lock`. Every operation holds an exclusive `flock` on `lock` for
//! its whole duration, so concurrent plugin processes (and threads) are serialised and no
//! reader sees a write half done. Files are written in place (earlier versions wrote `.tmp-*`
//! files and renamed them; leftovers are removed, never parsed as records), then the
//! directory is fsynced once (after the lock is released, before the allocation is reported); a
//! record left empty by a crash counts as in use.
//! Beside each record, `attachment-<containerID>@<ifname>` is a second name (a hard link) of
//! the same file, created first, so ADD finds an earlier allocation of the same attachment
//! in the directory listing it makes anyway (the record is the address-named entry with the
//! same inode number) without reading every record; DEL and GC still read them all, so
//! nothing depends on the index alone. (Earlier versions wrote the index as a file of its
//! own holding the address; such an index is still understood.)

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::os::unix::fs::DirEntryExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use podnet_api::cni::env::{validate_container_id, validate_ifname};
use podnet_api::cni::{CniError, Pool};
use podnet_api::ipnet::Ipv4Net;

/// Where allocations live when the config sets no `ipam.dataDir`.
pub const DEFAULT_DATA_DIR: &str = podnet_api::cni::DEFAULT_DATA_DIR;
const LOCK_FILE: &str = "lock";
const LAST_RESERVED_FILE: &str = "last_reserved_ip.0";
const TMP_PREFIX: &str = ".tmp-";
const INDEX_PREFIX: &str = "attachment-";

pub type Result<T> = std::result::Result<T, CniError>;

/// An address handed out for one attachment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allocation {
    pub ip: Ipv4Addr,
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
}

impl Allocation {
    /// The address with the subnet's prefix length, e.g. `10.244.1.5/24`.
    pub fn address(&self) -> Ipv4Net {
        Ipv4Net::new(self.ip, self.subnet.prefix_len()).unwrap_or(self.subnet)
    }
}

/// One allocation on disk. A record whose file could not be parsed has an empty
/// `container_id`; one written by old host-local versions has an empty `ifname`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Record {
    pub ip: Ipv4Addr,
    pub container_id: String,
    pub ifname: String,
}

impl Record {
    fn belongs_to(&self, container_id: &str, ifname: &str) -> bool {
        self.container_id == container_id && (self.ifname == ifname || self.ifname.is_empty())
    }
}

/// What a directory listing tells without reading files.
#[derive(Default)]
struct Names {
    /// Addresses that may not be handed out: records, and anything else named like one.
    taken: HashSet<Ipv4Addr>,
    /// Addresses whose name is a regular file (a record), with its inode number.
    records: Vec<(Ipv4Addr, u64)>,
    tmp: Vec<String>,
    /// Container ID, ifname and inode number of each index entry.
    indexed: Vec<(String, String, u64)>,
}

struct Scan {
    records: Vec<Record>,
    names: Names,
}

/// The index entry of an attachment: `attachment-<containerID>@<ifname>`, another name of
/// its record, so ADD finds an earlier allocation without reading every record. A container
/// ID cannot contain `@`, so the name splits unambiguously.
fn index_name(container_id: &str, ifname: &str) -> String {
    format!("{INDEX_PREFIX}{container_id}@{ifname}")
}

/// The allocation store of one network.
#[derive(Debug, Clone)]
pub struct Ipam {
    dir: PathBuf,
}

fn io_err(what: &str, path: &Path, e: io::Error) -> CniError {
    CniError::io(format!("IPAM: {what} {}: {e}", path.display()))
}

impl Ipam {
    /// Opens (creating it when needed) the store of `network` under `data_dir`.
    pub fn open(data_dir: &Path, network: &str) -> Result<Ipam> {
        if network.is_empty() || network == "." || network == ".." || network.contains(['/', '\0'])
        {
            return Err(CniError::invalid_config(format!(
                "network name {network:?} cannot name an IPAM directory: use letters, digits, '_', '.' and '-'"
            )));
        }
        let dir = data_dir.join(network);
        // One mkdir when the directory exists (every ADD but the first).
        match fs::create_dir(&dir) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Ok(()) => {}
            Err(_) => {
                fs::create_dir_all(&dir).map_err(|e| io_err("creating directory", &dir, e))?
            }
        }
        Ok(Ipam { dir })
    }

    /// The network's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn lock(&self) -> Result<Flock<File>> {
        let path = self.dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| io_err("opening lock file", &path, e))?;
        loop {
            match Flock::lock(file, FlockArg::LockExclusive) {
                Ok(l) => return Ok(l),
                Err((f, Errno::EINTR)) => file = f,
                Err((_, e)) => {
                    return Err(io_err(
                        "locking",
                        &path,
                        io::Error::from_raw_os_error(e as i32),
                    ));
                }
            }
        }
    }

    /// Hands out an address of `pool` to (`container_id`, `ifname`). An existing record of the
    /// same attachment is returned as is (a repeated ADD neither leaks nor duplicates);
    /// otherwise the next free address after the last one handed out, round-robin within the
    /// range. Code 101 when the range is full. A new record is durable when this returns.
    ///
    /// The directory fsync that makes it so runs after the lock is released: other allocators
    /// see the record at once (they list the directory), so they never pick its address; a
    /// crash before the fsync completes may lose the record, but then the ADD that made it
    /// never succeeded. On ext4 with a journal the fsync commits the record's inode with its
    /// directory entry; without one (`journal_task` is `<none>` in `/sys/fs/ext4/<dev>/`) it
    /// writes the directory's blocks and inode only, not the new inode (not fixed: syncing the
    /// record itself costs two more disk writes per ADD).
    ///
    /// It runs on the calling thread. Overlapping it with the pod's wiring cost more than it
    /// hid, measured A/B over 60 pods on this 2-core VM: on a thread of its own, 0.25-0.3 ms
    /// more CPU per ADD (thread start and exit, and TLB shootdowns, which are IPIs, for every
    /// unmap of a process with two threads) for a wall time no better; as Linux AIO
    /// (`IOCB_CMD_FSYNC`, run by a kernel worker), 40 ms, because tearing down an AIO context,
    /// by `io_destroy` or at exit, waits for two RCU grace periods.
    pub fn allocate(&self, pool: &Pool, container_id: &str, ifname: &str) -> Result<Allocation> {
        self.allocate_ip(pool, container_id, ifname, None)
    }

    /// [`Ipam::allocate`], of exactly `requested` when it is given (CNI_ARGS `IP=`, the `ips`
    /// capability), as host-local reserves a requested address: it must be one the range
    /// hands out (in the range, not the gateway) and free. Taken by another attachment:
    /// code 103 naming it. The same attachment asking again for the address it has gets it
    /// again; asking for another one is refused (DEL it first), never silently ignored.
    pub fn allocate_ip(
        &self,
        pool: &Pool,
        container_id: &str,
        ifname: &str,
        requested: Option<Ipv4Addr>,
    ) -> Result<Allocation> {
        let (allocation, new) = self.allocate_locked(pool, container_id, ifname, requested)?;
        if new && let Err(e) = sync_dir(&self.dir) {
            // Not reported, so not kept: the address goes back to the pool.
            let _ = self.release(container_id, ifname);
            return Err(e);
        }
        Ok(allocation)
    }

    /// Allocates under the lock, writing without any fsync; returns whether it wrote a new
    /// record (which then needs the directory fsync).
    fn allocate_locked(
        &self,
        pool: &Pool,
        container_id: &str,
        ifname: &str,
        requested: Option<Ipv4Addr>,
    ) -> Result<(Allocation, bool)> {
        validate_container_id(container_id)?;
        validate_ifname(ifname)?;
        if let Some(ip) = requested {
            check_requested(pool, ip)?;
        }
        let _lock = self.lock()?;
        let names = self.names()?;
        self.remove_tmp(&names.tmp);
        let alloc = |ip| Allocation {
            ip,
            subnet: pool.subnet,
            gateway: pool.gateway,
        };
        if let Some(ip) = self.indexed(container_id, ifname, &names)?
            && pool.subnet.contains(&ip)
        {
            return match requested {
                Some(want) if want != ip => Err(CniError::address_in_use(format!(
                    "requested IP {want} cannot be given to container {container_id} interface {ifname}: \
                     it already has {ip}; delete the attachment (CNI DEL) before asking for another address"
                ))),
                _ => Ok((alloc(ip), false)),
            };
        }
        if let Some(ip) = requested {
            if names.taken.contains(&ip) {
                let holder = match self.read_record(ip)? {
                    Some(r) if !r.container_id.is_empty() => {
                        format!("container {} interface {}", r.container_id, r.ifname)
                    }
                    _ => "an attachment whose record cannot be read".to_string(),
                };
                return Err(CniError::address_in_use(format!(
                    "requested IP {ip} is already allocated in {} (to {holder}): ask for a free address, or none",
                    pool.subnet
                )));
            }
            self.record_new(container_id, ifname, ip)?;
            return Ok((alloc(ip), true));
        }
        let used = &names.taken;
        let start = u32::from(pool.range_start);
        let end = u32::from(pool.range_end);
        if start > end {
            return Err(CniError::internal(format!(
                "IPAM: range {}-{} is empty",
                pool.range_start, pool.range_end
            )));
        }
        let n = u64::from(end - start) + 1;
        let (last_reserved, hint_len) = self.last_reserved();
        let first_offset = match last_reserved {
            Some(last) if (start..=end).contains(&u32::from(last)) => {
                (u64::from(u32::from(last) - start) + 1) % n
            }
            _ => 0,
        };
        for k in 0..n {
            // n ≤ 2^32 and the offset < n, so the sum fits and the result fits in u32
            let off = (first_offset + k) % n;
            let ip = Ipv4Addr::from(start + off as u32);
            if !pool.is_allocatable(ip) || used.contains(&ip) {
                continue;
            }
            self.record_new(container_id, ifname, ip)?;
            // A hint, written before the fsync so that one covers it too.
            self.write_hint(&ip.to_string(), hint_len)?;
            return Ok((alloc(ip), true));
        }
        let in_use = used.iter().filter(|ip| pool.is_allocatable(**ip)).count();
        Err(CniError::pool_exhausted(format!(
            "no free address in {} (range {}-{}, {in_use} in use): free addresses by deleting pods, or give the network a larger subnet",
            pool.subnet, pool.range_start, pool.range_end
        )))
    }

    /// Writes the record of `ip` for (`container_id`, `ifname`), which the caller checked is
    /// free under the lock. The index first, then the record as a second name of the same
    /// file: a record on disk always has its index, so a missing index means this attachment
    /// has no address. A link allocates no inode, unlike a file of its own (ext4 scans past
    /// every inode deleted in the last minutes for a new one: 50-80 us per file when pods
    /// come and go quickly).
    fn record_new(&self, container_id: &str, ifname: &str, ip: Ipv4Addr) -> Result<()> {
        let index = index_name(container_id, ifname);
        self.write_new(&index, format!("{container_id}\r\n{ifname}").as_bytes())?;
        self.link_new(&index, &ip.to_string())
    }

    /// Releases the addresses of (`container_id`, `ifname`); nothing to release is fine.
    pub fn release(&self, container_id: &str, ifname: &str) -> Result<Vec<Ipv4Addr>> {
        let _lock = self.lock()?;
        let records = self.scan()?.records;
        let mine: Vec<Record> = records
            .into_iter()
            .filter(|r| r.belongs_to(container_id, ifname))
            .collect();
        self.remove(&mine)?;
        self.remove_index(container_id, ifname)?;
        Ok(mine.into_iter().map(|r| r.ip).collect())
    }

    /// The address of (`container_id`, `ifname`), if it has one.
    pub fn find(&self, container_id: &str, ifname: &str) -> Result<Option<Ipv4Addr>> {
        let _lock = self.lock()?;
        let records = self.scan()?.records;
        Ok(records
            .into_iter()
            .find(|r| r.belongs_to(container_id, ifname))
            .map(|r| r.ip))
    }

    /// Every allocation, sorted by address.
    pub fn list(&self) -> Result<Vec<Record>> {
        let _lock = self.lock()?;
        Ok(self.scan()?.records)
    }

    /// Releases every allocation whose (container ID, ifname) is not in `valid` (GC), and
    /// removes temporary files left by crashed writers. Returns what it released.
    pub fn gc(&self, valid: &[(String, String)]) -> Result<Vec<Record>> {
        let _lock = self.lock()?;
        let scan = self.scan()?;
        self.remove_tmp(&scan.names.tmp);
        let records = scan.records;
        let pairs: HashSet<(&str, &str)> = valid
            .iter()
            .map(|(c, i)| (c.as_str(), i.as_str()))
            .collect();
        let ids: HashSet<&str> = valid.iter().map(|(c, _)| c.as_str()).collect();
        let stale: Vec<Record> = records
            .into_iter()
            .filter(|r| {
                let keep = if r.ifname.is_empty() {
                    ids.contains(r.container_id.as_str())
                } else {
                    pairs.contains(&(r.container_id.as_str(), r.ifname.as_str()))
                };
                !keep
            })
            .collect();
        self.remove(&stale)?;
        for (container_id, ifname, _) in &scan.names.indexed {
            if !pairs.contains(&(container_id.as_str(), ifname.as_str())) {
                self.remove_index(container_id, ifname)?;
            }
        }
        Ok(stale)
    }

    fn remove(&self, records: &[Record]) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        for r in records {
            let path = self.dir.join(r.ip.to_string());
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("removing", &path, e)),
            }
        }
        // Not synced: a release lost in a crash leaves the address reserved
        // for a container that is gone, which GC reclaims; never a duplicate.
        Ok(())
    }

    /// The last address handed out, if the hint names one, and the hint's length in bytes
    /// (`None`: no readable hint).
    fn last_reserved(&self) -> (Option<Ipv4Addr>, Option<u64>) {
        match fs::read_to_string(self.dir.join(LAST_RESERVED_FILE)) {
            Ok(text) => (text.trim().parse().ok(), Some(text.len() as u64)),
            Err(_) => (None, None),
        }
    }

    /// Overwrites the hint in place, cut to `text`'s length when `old_len` differs: no new
    /// inode, and no truncation to zero, after which ext4 flushes the file on close (its
    /// `auto_da_alloc` safeguard). A crash half-way leaves a hint that names no address, or
    /// another one: either way only where the next search starts.
    fn write_hint(&self, text: &str, old_len: Option<u64>) -> Result<()> {
        let path = self.dir.join(LAST_RESERVED_FILE);
        let len = text.len() as u64;
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .and_then(|mut f| {
                f.write_all(text.as_bytes())?;
                if old_len == Some(len) {
                    Ok(())
                } else {
                    f.set_len(len)
                }
            })
            .map_err(|e| io_err("writing", &path, e))
    }

    /// Lists the directory without reading any file: the addresses taken (by records, or by
    /// anything else named like an address), leftover temporary files, and indexed
    /// attachments.
    fn names(&self) -> Result<Names> {
        let rd = fs::read_dir(&self.dir).map_err(|e| io_err("reading", &self.dir, e))?;
        let mut names = Names::default();
        for entry in rd {
            let entry = entry.map_err(|e| io_err("reading", &self.dir, e))?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if name.starts_with(TMP_PREFIX) {
                names.tmp.push(name);
            } else if let Some(key) = name.strip_prefix(INDEX_PREFIX) {
                if let Some((c, i)) = key.split_once('@') {
                    names
                        .indexed
                        .push((c.to_string(), i.to_string(), entry.ino()));
                }
            } else if let Ok(ip) = name.parse::<Ipv4Addr>() {
                if entry.file_type().map(|t| t.is_file()).unwrap_or(false) {
                    names.records.push((ip, entry.ino()));
                }
                names.taken.insert(ip);
            }
        }
        Ok(names)
    }

    /// The address the index gives (`container_id`, `ifname`), if its record is there and
    /// still says so.
    fn indexed(&self, container_id: &str, ifname: &str, names: &Names) -> Result<Option<Ipv4Addr>> {
        let Some((_, _, ino)) = names
            .indexed
            .iter()
            .find(|(c, i, _)| c == container_id && i == ifname)
        else {
            return Ok(None);
        };
        let ip = match names.records.iter().find(|(_, record)| record == ino) {
            Some((ip, _)) => Some(*ip),
            None => self.legacy_index(container_id, ifname)?,
        };
        let Some(ip) = ip.filter(|ip| names.records.iter().any(|(r, _)| r == ip)) else {
            return Ok(None);
        };
        let record = self.read_record(ip)?;
        Ok(record
            .filter(|r| r.belongs_to(container_id, ifname))
            .map(|r| r.ip))
    }

    /// The address an index written by an earlier version holds (a file of its own). An index
    /// of today whose record is gone holds the record's text: no address.
    fn legacy_index(&self, container_id: &str, ifname: &str) -> Result<Option<Ipv4Addr>> {
        let path = self.dir.join(index_name(container_id, ifname));
        match fs::read_to_string(&path) {
            Ok(text) => Ok(text.trim().parse::<Ipv4Addr>().ok()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("reading", &path, e)),
        }
    }

    fn remove_index(&self, container_id: &str, ifname: &str) -> Result<()> {
        let path = self.dir.join(index_name(container_id, ifname));
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("removing", &path, e)),
            _ => Ok(()),
        }
    }

    fn remove_tmp(&self, tmp: &[String]) {
        for t in tmp {
            let _ = fs::remove_file(self.dir.join(t));
        }
    }

    fn read_record(&self, ip: Ipv4Addr) -> Result<Option<Record>> {
        let path = self.dir.join(ip.to_string());
        let content = match fs::read(&path) {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("reading", &path, e)),
        };
        let text = String::from_utf8_lossy(&content);
        let mut lines = text.trim().splitn(2, '\n');
        let container_id = lines.next().unwrap_or_default().trim().to_string();
        let ifname = lines.next().unwrap_or_default().trim().to_string();
        Ok(Some(Record {
            ip,
            container_id,
            ifname,
        }))
    }

    /// Every record, read (sorted by address), with the directory listing.
    fn scan(&self) -> Result<Scan> {
        let names = self.names()?;
        let mut records = Vec::with_capacity(names.records.len());
        for (ip, _) in &names.records {
            records.extend(self.read_record(*ip)?);
        }
        records.sort();
        Ok(Scan { records, names })
    }

    /// Creates `name` with `content` (`O_EXCL`), replacing an older file of that name by
    /// unlinking it first. No temporary file and rename, and no truncation of a file in place:
    /// ext4 flushes a file replaced either way to disk when it is closed (its `auto_da_alloc`
    /// safeguard), I/O this path need not wait for. Every reader holds the lock, so none sees
    /// a write half done, and a crash half-way leaves what the readers already tolerate (an
    /// empty record counts as in use until GC frees it, so an address is never handed out
    /// twice; an unreadable index or hint counts as absent). Not synced: the caller fsyncs the
    /// directory once after all its writes ([`Ipam::allocate`]); file data is never fsynced.
    fn write_new(&self, name: &str, content: &[u8]) -> Result<()> {
        let target = self.dir.join(name);
        let create = || {
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&target)
        };
        let file = match create() {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                fs::remove_file(&target).and_then(|()| create())
            }
            other => other,
        };
        file.and_then(|mut f| f.write_all(content))
            .map_err(|e| io_err("writing", &target, e))
    }

    /// Gives the file `existing` the further name `name`, which no entry has (the caller
    /// listed the directory under the lock).
    fn link_new(&self, existing: &str, name: &str) -> Result<()> {
        let target = self.dir.join(name);
        fs::hard_link(self.dir.join(existing), &target).map_err(|e| {
            CniError::io(format!(
                "IPAM: linking {}: {e} (the IPAM records need a filesystem with hard links: \
                 point ipam.dataDir at one, e.g. the default {DEFAULT_DATA_DIR})",
                target.display()
            ))
        })
    }
}

/// Refuses a requested address the pool does not hand out, saying why (code 7: the request
/// does not fit the network's configuration).
fn check_requested(pool: &Pool, ip: Ipv4Addr) -> Result<()> {
    let why = if !pool.subnet.contains(&ip) {
        format!("is outside the subnet {}", pool.subnet)
    } else if ip == pool.subnet.network() || ip == pool.subnet.broadcast() {
        format!("is the network or broadcast address of {}", pool.subnet)
    } else if ip == pool.gateway {
        format!("is the gateway of {}", pool.subnet)
    } else if ip < pool.range_start || ip > pool.range_end {
        format!(
            "is outside the range {}-{} of {} that addresses are handed out from",
            pool.range_start, pool.range_end, pool.subnet
        )
    } else {
        return Ok(());
    };
    Err(CniError::invalid_config(format!(
        "requested IP {ip} {why}: ask for an address between {} and {} other than the gateway {}, or none",
        pool.range_start, pool.range_end, pool.gateway
    )))
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err("syncing", dir, e))
}
