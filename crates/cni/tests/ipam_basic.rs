//! The built-in IPAM: allocation, release, round-robin, exhaustion, GC, robustness.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::net::Ipv4Addr;

use podnet_api::cni::Pool;
use podnet_cni::ipam::{Ipam, Record};

fn pool(cidr: &str) -> Pool {
    Pool::new(cidr.parse().unwrap(), None, None, None).unwrap()
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

/// Whether two names are the same file (hard links).
fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (a, b) = (fs::metadata(a).unwrap(), fs::metadata(b).unwrap());
    (a.dev(), a.ino()) == (b.dev(), b.ino())
}

fn open() -> (tempfile::TempDir, Ipam) {
    let d = tempfile::tempdir().unwrap();
    let ipam = Ipam::open(d.path(), "podnet").unwrap();
    (d, ipam)
}

#[test]
fn host_local_layout() {
    let (d, ipam) = open();
    let p = pool("10.244.1.0/24");
    let a = ipam.allocate(&p, "c1", "eth0").unwrap();
    assert_eq!(a.ip, ip("10.244.1.2"), "first host after the gateway");
    assert_eq!(a.gateway, ip("10.244.1.1"));
    assert_eq!(a.address().to_string(), "10.244.1.2/24");
    let dir = d.path().join("podnet");
    assert_eq!(ipam.dir(), dir);
    assert_eq!(
        fs::read_to_string(dir.join("10.244.1.2")).unwrap(),
        "c1\r\neth0"
    );
    assert_eq!(
        fs::read_to_string(dir.join("last_reserved_ip.0")).unwrap(),
        "10.244.1.2"
    );
    assert!(dir.join("lock").exists());
    let names: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(names.is_empty(), "no temp files left: {names:?}");
}

#[test]
fn reallocate_same_attachment_returns_same_ip() {
    let (_d, ipam) = open();
    let p = pool("10.0.0.0/24");
    let a = ipam.allocate(&p, "c1", "eth0").unwrap();
    let b = ipam.allocate(&p, "c2", "eth0").unwrap();
    assert_ne!(a.ip, b.ip);
    assert_eq!(ipam.allocate(&p, "c1", "eth0").unwrap(), a);
    // a second interface of the same container gets its own address
    let c = ipam.allocate(&p, "c1", "net1").unwrap();
    assert_ne!(c.ip, a.ip);
    assert_eq!(ipam.list().unwrap().len(), 3);
    assert_eq!(ipam.find("c1", "eth0").unwrap(), Some(a.ip));
    assert_eq!(ipam.find("c1", "net1").unwrap(), Some(c.ip));
    assert_eq!(ipam.find("c9", "eth0").unwrap(), None);
}

#[test]
fn exhaust_a_29() {
    let (_d, ipam) = open();
    let p = pool("10.0.0.0/29"); // hosts .1-.6, gateway .1 → 5 addresses
    let mut got = Vec::new();
    for i in 0..5 {
        got.push(ipam.allocate(&p, &format!("c{i}"), "eth0").unwrap().ip);
    }
    got.sort();
    let want: Vec<_> = (2..=6).map(|h| Ipv4Addr::new(10, 0, 0, h)).collect();
    assert_eq!(got, want, "never network, broadcast or gateway");
    let e = ipam.allocate(&p, "c5", "eth0").unwrap_err();
    assert_eq!(e.code, 101);
    assert!(e.msg.contains("10.0.0.0/29"), "{}", e.msg);
    assert!(e.msg.contains("range 10.0.0.1-10.0.0.6"), "{}", e.msg);
    assert!(e.msg.contains("5 in use"), "{}", e.msg);
    assert!(e.msg.contains("larger subnet"), "{}", e.msg);
    // an existing attachment still gets its address when the pool is full
    assert_eq!(
        ipam.allocate(&p, "c3", "eth0").unwrap().ip,
        ipam.find("c3", "eth0").unwrap().unwrap()
    );
    // release frees one
    let freed = ipam.release("c2", "eth0").unwrap();
    assert_eq!(freed.len(), 1);
    assert_eq!(ipam.allocate(&p, "c5", "eth0").unwrap().ip, freed[0]);
}

#[test]
fn release_is_idempotent() {
    let (_d, ipam) = open();
    let p = pool("10.0.0.0/24");
    let a = ipam.allocate(&p, "c1", "eth0").unwrap();
    assert_eq!(ipam.release("c1", "eth0").unwrap(), vec![a.ip]);
    assert_eq!(ipam.release("c1", "eth0").unwrap(), Vec::<Ipv4Addr>::new());
    assert_eq!(
        ipam.release("never", "eth0").unwrap(),
        Vec::<Ipv4Addr>::new()
    );
    assert_eq!(ipam.find("c1", "eth0").unwrap(), None);
    assert!(ipam.list().unwrap().is_empty());
}

#[test]
fn round_robin_does_not_reuse_just_released() {
    let (_d, ipam) = open();
    let p = pool("10.0.0.0/24");
    let a = ipam.allocate(&p, "c1", "eth0").unwrap();
    ipam.release("c1", "eth0").unwrap();
    let b = ipam.allocate(&p, "c2", "eth0").unwrap();
    assert_ne!(a.ip, b.ip);
    assert_eq!(b.ip, ip("10.0.0.3"));
    // wraps around at the end of the range
    let p = Pool::new(
        "10.0.0.0/24".parse().unwrap(),
        Some(ip("10.0.0.10")),
        Some(ip("10.0.0.12")),
        None,
    )
    .unwrap();
    let (_d, ipam) = open();
    let x: Vec<_> = (0..3)
        .map(|i| ipam.allocate(&p, &format!("x{i}"), "eth0").unwrap().ip)
        .collect();
    assert_eq!(x, vec![ip("10.0.0.10"), ip("10.0.0.11"), ip("10.0.0.12")]);
    ipam.release("x0", "eth0").unwrap();
    ipam.release("x1", "eth0").unwrap();
    assert_eq!(ipam.allocate(&p, "y", "eth0").unwrap().ip, ip("10.0.0.10"));
    assert_eq!(ipam.allocate(&p, "z", "eth0").unwrap().ip, ip("10.0.0.11"));
}

#[test]
fn gc_releases_everything_not_valid() {
    let (d, ipam) = open();
    let p = pool("10.0.0.0/24");
    for c in ["a", "b", "c"] {
        ipam.allocate(&p, c, "eth0").unwrap();
    }
    ipam.allocate(&p, "a", "net1").unwrap();
    // a stale temp file from a crashed writer
    fs::write(d.path().join("podnet/.tmp-10.0.0.99-1-0"), "half").unwrap();
    let valid = vec![
        ("a".to_string(), "eth0".to_string()),
        ("c".to_string(), "eth0".to_string()),
    ];
    let released = ipam.gc(&valid).unwrap();
    let mut who: Vec<_> = released
        .iter()
        .map(|r| (r.container_id.as_str(), r.ifname.as_str()))
        .collect();
    who.sort();
    assert_eq!(who, vec![("a", "net1"), ("b", "eth0")]);
    let left: Vec<_> = ipam
        .list()
        .unwrap()
        .into_iter()
        .map(|r| r.container_id)
        .collect();
    assert_eq!(left, vec!["a", "c"]);
    assert!(!d.path().join("podnet/.tmp-10.0.0.99-1-0").exists());
    assert!(ipam.gc(&valid).unwrap().is_empty());
    assert_eq!(ipam.gc(&[]).unwrap().len(), 2);
}

#[test]
fn the_hint_is_rewritten_in_place_to_its_new_length() {
    let (d, ipam) = open();
    let hint = d.path().join("podnet").join("last_reserved_ip.0");
    fs::write(&hint, "10.0.0.254").unwrap();
    let p = pool("10.0.0.0/24");
    let a = ipam.allocate(&p, "c1", "eth0").unwrap();
    assert_eq!(a.ip, ip("10.0.0.2"), "wraps around after the hint");
    assert_eq!(
        fs::read_to_string(&hint).unwrap(),
        "10.0.0.2",
        "no tail of the old hint"
    );
    let b = ipam.allocate(&p, "c2", "eth0").unwrap();
    assert_eq!(fs::read_to_string(&hint).unwrap(), b.ip.to_string());
}

#[test]
fn tolerates_junk_and_half_written_files() {
    let (d, ipam) = open();
    let dir = d.path().join("podnet");
    fs::write(dir.join("README"), "junk").unwrap();
    fs::write(dir.join("10.0.0.300"), "not an ip").unwrap();
    fs::write(dir.join("last_reserved_ip.0"), "garbage").unwrap();
    fs::create_dir(dir.join("10.0.0.5")).unwrap(); // a directory named like an address
    fs::write(dir.join(".tmp-10.0.0.2-123-0"), "c9\r\n").unwrap(); // half-written temp
    fs::write(dir.join("10.0.0.3"), "").unwrap(); // empty record: in use, owner unknown
    fs::write(dir.join("10.0.0.4"), "legacy-id\n").unwrap(); // old host-local: id only
    let p = pool("10.0.0.0/24");
    let a = ipam.allocate(&p, "c1", "eth0").unwrap();
    assert_eq!(a.ip, ip("10.0.0.2"), "temp names are not records");
    let b = ipam.allocate(&p, "c2", "eth0").unwrap();
    assert_eq!(
        b.ip,
        ip("10.0.0.6"),
        "skips .3 and .4 (records) and .5 (not a file)"
    );
    let list = ipam.list().unwrap();
    assert_eq!(list.len(), 4);
    assert!(list.contains(&Record {
        ip: ip("10.0.0.3"),
        container_id: String::new(),
        ifname: String::new()
    }));
    assert_eq!(
        ipam.find("legacy-id", "eth0").unwrap(),
        Some(ip("10.0.0.4"))
    );
    assert_eq!(
        ipam.release("legacy-id", "eth0").unwrap(),
        vec![ip("10.0.0.4")]
    );
    assert!(dir.join("README").exists());
}

#[test]
fn rejects_bad_inputs() {
    let d = tempfile::tempdir().unwrap();
    for bad in ["", "..", "a/b"] {
        assert_eq!(Ipam::open(d.path(), bad).unwrap_err().code, 7);
    }
    let ipam = Ipam::open(d.path(), "n").unwrap();
    let p = pool("10.0.0.0/24");
    assert_eq!(ipam.allocate(&p, "bad\nid", "eth0").unwrap_err().code, 4);
    assert_eq!(ipam.allocate(&p, "c1", "").unwrap_err().code, 4);
    // an unwritable directory is an I/O failure, not a panic
    let e = Ipam::open(std::path::Path::new("/proc/podnet-no-such"), "n").unwrap_err();
    assert_eq!(e.code, 5);
    assert!(e.msg.contains("/proc/podnet-no-such"), "{}", e.msg);
}

#[test]
fn records_survive_reopen() {
    let (d, ipam) = open();
    let p = pool("10.0.0.0/24");
    let a = ipam.allocate(&p, "c1", "eth0").unwrap();
    drop(ipam);
    let ipam = Ipam::open(d.path(), "podnet").unwrap();
    assert_eq!(ipam.allocate(&p, "c1", "eth0").unwrap(), a);
    assert_eq!(ipam.allocate(&p, "c2", "eth0").unwrap().ip, ip("10.0.0.3"));
}

#[test]
fn the_attachment_index_is_kept_with_the_records_and_never_trusted_blindly() {
    let (d, ipam) = open();
    let dir = d.path().join("podnet");
    let p = pool("10.244.1.0/24");
    let a = ipam.allocate(&p, "c1", "eth0").unwrap();
    let index = dir.join("attachment-c1@eth0");
    assert!(
        same_file(&index, &dir.join(a.ip.to_string())),
        "the index is another name of the record"
    );
    assert_eq!(fs::read_to_string(&index).unwrap(), "c1\r\neth0");

    // An index that points at another attachment's record is ignored, as a
    // link of the record or as a file holding its address (earlier versions).
    let b = ipam.allocate(&p, "c2", "eth0").unwrap();
    let b_record = dir.join(b.ip.to_string());
    fs::write(dir.join("attachment-c3@eth0"), b.ip.to_string()).unwrap();
    fs::hard_link(&b_record, dir.join("attachment-c5@eth0")).unwrap();
    let c = ipam.allocate(&p, "c3", "eth0").unwrap();
    let c5 = ipam.allocate(&p, "c5", "eth0").unwrap();
    assert!(
        c.ip != b.ip && c5.ip != b.ip && c.ip != c5.ip,
        "never the same address twice"
    );
    assert!(
        same_file(&dir.join("attachment-c3@eth0"), &dir.join(c.ip.to_string())),
        "the index is rewritten"
    );
    assert_eq!(fs::read_to_string(&b_record).unwrap(), "c2\r\neth0");

    // A crash after the index but before the record, or an index of an
    // earlier version whose record is gone: the re-ADD allocates and the
    // index follows the record.
    fs::write(dir.join("attachment-c4@eth0"), "c4\r\neth0").unwrap();
    fs::write(dir.join("attachment-c6@eth0"), "10.244.1.77").unwrap();
    for id in ["c4", "c6"] {
        let got = ipam.allocate(&p, id, "eth0").unwrap();
        let record = dir.join(got.ip.to_string());
        assert_eq!(
            fs::read_to_string(&record).unwrap(),
            format!("{id}\r\neth0")
        );
        assert!(same_file(
            &dir.join(format!("attachment-{id}@eth0")),
            &record
        ));
    }

    // An index written by an earlier version (a file holding the address)
    // still finds its record.
    fs::write(dir.join("10.244.1.50"), "c7\r\neth0").unwrap();
    fs::write(dir.join("attachment-c7@eth0"), "10.244.1.50").unwrap();
    assert_eq!(
        ipam.allocate(&p, "c7", "eth0").unwrap().ip,
        ip("10.244.1.50")
    );

    assert_eq!(ipam.release("c1", "eth0").unwrap(), vec![a.ip]);
    assert!(!index.exists(), "release removes the index entry");
    ipam.gc(&[("c2".into(), "eth0".into())]).unwrap();
    assert_eq!(ipam.list().unwrap().len(), 1, "only c2's record is left");
    let left: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("attachment-"))
        .collect();
    assert_eq!(left, vec!["attachment-c2@eth0".to_string()]);
}
