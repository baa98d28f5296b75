//! What podnet needs of the machine, checked before anything is made: the privileges, the
//! kernel features (each probed for real, by creating and deleting a test object in a
//! throw-away network namespace that disappears with the probe), and writable state
//! directories. Each missing piece is one [`Missing`] line: what is missing, which podnet
//! feature needs it, and what provides it.
//!
//! The CNI plugin runs no probe (it is exec'd per pod and must start fast); it names a
//! missing kernel feature the same way when an operation fails ([`explain`]).

use std::fmt;
use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use crate::Netlink;
use crate::nftnl::{
    self, BaseChain, Batch, ChainKind, Expr, Family, Hook, SetSpec, SetValue, types,
};
use crate::vxlan::{VxlanSettings, VxlanSpec};

/// A kernel feature podnet uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feature {
    /// veth pairs (every pod's link to its node).
    Veth,
    /// Linux bridges (`cni0`, the lab's underlay switch).
    Bridge,
    /// VXLAN devices (the vxlan backend).
    Vxlan,
    /// TUN devices (the udp backend).
    Tun,
    /// nf_tables with NAT chains, `numgen` and maps (the service proxy, masquerade).
    Nftables,
}

impl Feature {
    fn name(self) -> &'static str {
        match self {
            Feature::Veth => "veth pairs",
            Feature::Bridge => "Linux bridges",
            Feature::Vxlan => "VXLAN devices",
            Feature::Tun => "TUN devices (/dev/net/tun)",
            Feature::Nftables => "nftables NAT chains with numgen maps",
        }
    }

    /// What provides it.
    fn remedy(self) -> &'static str {
        match self {
            Feature::Veth => "a kernel with CONFIG_VETH (`modprobe veth`)",
            Feature::Bridge => "a kernel with CONFIG_BRIDGE (`modprobe bridge`)",
            Feature::Vxlan => "a kernel with CONFIG_VXLAN (`modprobe vxlan`)",
            Feature::Tun => {
                "a kernel with CONFIG_TUN (`modprobe tun`) and the device node /dev/net/tun (`mknod /dev/net/tun c 10 200`)"
            }
            Feature::Nftables => {
                "a kernel with CONFIG_NF_TABLES, CONFIG_NFT_NAT, CONFIG_NFT_NUMGEN and CONFIG_NFT_MASQ (`modprobe nf_tables nft_nat nft_numgen`)"
            }
        }
    }
}

/// One thing missing: what, which podnet feature needs it, what provides it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    pub what: String,
    pub needed_by: String,
    pub remedy: String,
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} needs it; {}",
            self.what, self.needed_by, self.remedy
        )
    }
}

impl Missing {
    fn feature(feature: Feature, needed_by: &str, why: &io::Error) -> Missing {
        Missing {
            what: format!("{} are not available: {why}", feature.name()),
            needed_by: needed_by.to_string(),
            remedy: format!("install {}", feature.remedy()),
        }
    }
}

/// Capability numbers (linux/capability.h).
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;

/// Whether this process has the capabilities to make namespaces and network objects.
pub fn privileges(needed_by: &str) -> Option<Missing> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let effective = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    let has = |cap: u32| effective & (1 << cap) != 0;
    if has(CAP_NET_ADMIN) && has(CAP_SYS_ADMIN) {
        return None;
    }
    Some(Missing {
        what: "root privileges (CAP_NET_ADMIN and CAP_SYS_ADMIN)".into(),
        needed_by: needed_by.to_string(),
        remedy: "run it as root (sudo)".into(),
    })
}

/// Whether `dir` can be created and written (a file made and removed in it).
pub fn writable_dir(dir: &Path, needed_by: &str) -> Option<Missing> {
    let probe = dir.join(format!(".podnet-preflight-{}", std::process::id()));
    let result = std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(&probe, b""))
        .and_then(|()| std::fs::remove_file(&probe));
    result.err().map(|e| Missing {
        what: format!("a writable {}: {e}", dir.display()),
        needed_by: needed_by.to_string(),
        remedy: format!(
            "make {} writable for root (a read-only /run or /var?)",
            dir.display()
        ),
    })
}

/// Whether `program` is an executable file.
pub fn executable(program: &Path, needed_by: &str, package: &str) -> Option<Missing> {
    use std::os::unix::fs::PermissionsExt;
    let ok = std::fs::metadata(program)
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    (!ok).then(|| Missing {
        what: format!("the program {}", program.display()),
        needed_by: needed_by.to_string(),
        remedy: format!("`apt-get install -y {package}`"),
    })
}

/// Probes `features` (each with the podnet feature that needs it) in a network namespace
/// of its own, made for the probe and gone after it; the machine's own namespace is not
/// touched. Returns what is missing.
pub fn probe(features: &[(Feature, &str)]) -> Vec<Missing> {
    let features: Vec<(Feature, String)> = features
        .iter()
        .map(|(f, by)| (*f, by.to_string()))
        .collect();
    let joined = std::thread::spawn(move || -> Vec<Missing> {
        // The namespace belongs to this thread alone and goes when it ends.
        if let Err(e) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET) {
            let e = io::Error::from(e);
            return vec![Missing {
                what: format!("a network namespace for the probe: {e}"),
                needed_by: "podnet".into(),
                remedy: "run it as root, with network namespaces enabled (CONFIG_NET_NS)".into(),
            }];
        }
        features
            .iter()
            .filter_map(|(f, by)| probe_one(*f).err().map(|e| Missing::feature(*f, by, &e)))
            .collect()
    })
    .join();
    joined.unwrap_or_else(|_| {
        vec![Missing {
            what: "the kernel feature probe (it panicked)".into(),
            needed_by: "podnet".into(),
            remedy: "report it as a bug".into(),
        }]
    })
}

fn to_io(e: crate::KernelError) -> io::Error {
    io::Error::other(e.to_string())
}

/// Creates and deletes one test object of `feature` in the calling thread's namespace.
fn probe_one(feature: Feature) -> io::Result<()> {
    match feature {
        Feature::Veth => {
            let mut nl = Netlink::current().map_err(to_io)?;
            nl.create_veth("pnprobe0", "pnprobe1", None, None)
                .map_err(to_io)?;
            nl.delete_link_by_name("pnprobe0")
                .map_err(to_io)
                .map(|_| ())
        }
        Feature::Bridge => {
            let mut nl = Netlink::current().map_err(to_io)?;
            nl.ensure_bridge("pnprobebr", None).map_err(to_io)?;
            nl.delete_link_by_name("pnprobebr")
                .map_err(to_io)
                .map(|_| ())
        }
        Feature::Vxlan => {
            let mut nl = Netlink::current().map_err(to_io)?;
            let spec = VxlanSpec {
                name: "pnprobevx".into(),
                settings: VxlanSettings {
                    vni: 1,
                    port: 8472,
                    local: Some(Ipv4Addr::new(192, 0, 2, 1)),
                    underlay: None,
                    learning: false,
                },
                mac: None,
                mtu: None,
            };
            nl.create_vxlan(&spec).map_err(to_io)?;
            nl.delete_link_by_name("pnprobevx")
                .map_err(to_io)
                .map(|_| ())
        }
        Feature::Tun => probe_tun(),
        Feature::Nftables => nftnl::apply(None, &nftables_probe()).map_err(to_io),
    }
}

/// A table with a NAT chain whose rule DNATs through `numgen random mod 1 map @m`, then
/// its deletion, in one transaction: the kernel checks every expression, commits nothing.
fn nftables_probe() -> Batch {
    let table = "podnet-preflight";
    let mut b = Batch::for_family(Family::Ip);
    b.add_table(table, None);
    let map = SetSpec {
        name: "m".into(),
        key_type: types::INTEGER,
        key_len: 4,
        value: SetValue::Data {
            kind: types::concat(&[types::IPV4_ADDR, types::INET_SERVICE]),
            len: 8,
        },
        timeout_ms: None,
        userdata: Vec::new(),
        flags: 0,
    };
    b.add_set(table, &map);
    let hook = BaseChain {
        kind: ChainKind::Nat,
        hook: Hook::Prerouting,
        priority: -100,
        accept: true,
    };
    b.add_chain(table, "c", Some(hook));
    b.add_rule(
        table,
        "c",
        &[
            Expr::NumgenRandom {
                modulus: 1,
                offset: 0,
            },
            Expr::Lookup {
                set: nftnl::SetRef::Named("m".into()),
                dreg: Some(nftnl::REG_1),
                invert: false,
            },
            Expr::Dnat {
                addr: nftnl::REG_1,
                port: nftnl::REG32_01,
            },
            Expr::Masquerade { fully_random: true },
        ],
    );
    b.delete_table(table);
    b
}

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;

/// Opens /dev/net/tun and creates a TUN device on it (gone when the fd is closed).
fn probe_tun() -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .map_err(|e| io::Error::new(e.kind(), format!("open /dev/net/tun: {e}")))?;
    #[repr(C)]
    struct IfReq {
        name: [u8; libc::IFNAMSIZ],
        flags: libc::c_short,
        _pad: [u8; 22],
    }
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: 0x0001 | 0x1000, // IFF_TUN | IFF_NO_PI
        _pad: [0; 22],
    };
    req.name[..9].copy_from_slice(b"pnprobetn");
    // SAFETY: TUNSETIFF reads and writes an ifreq, which `req` is laid out as.
    if unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF as _, &mut req) } < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("create a TUN device: {e}"),
        ));
    }
    Ok(())
}

/// A kernel operation's failure said as a missing feature, when that is what it means:
/// the kernel answers "operation not supported" for a link kind it has no driver for,
/// and "no such file or directory" for an nftables expression or chain type it lacks.
pub fn explain(feature: Feature, error: &io::Error, needed_by: &str) -> Option<Missing> {
    let missing = matches!(
        error.raw_os_error(),
        Some(libc::EOPNOTSUPP) | Some(libc::EAFNOSUPPORT) | Some(libc::EPROTONOSUPPORT)
    ) || (feature == Feature::Nftables && error.raw_os_error() == Some(libc::ENOENT));
    missing.then(|| Missing::feature(feature, needed_by, error))
}

/// The directory named network namespaces are mounted in.
pub fn netns_dir() -> PathBuf {
    PathBuf::from("/run/netns")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_piece_says_what_who_and_how() {
        let m = Missing::feature(
            Feature::Vxlan,
            "the vxlan backend",
            &io::Error::from_raw_os_error(libc::EOPNOTSUPP),
        );
        let line = m.to_string();
        assert!(
            line.starts_with("VXLAN devices are not available"),
            "{line}"
        );
        assert!(line.contains("the vxlan backend needs it"), "{line}");
        assert!(line.contains("CONFIG_VXLAN"), "{line}");
        assert!(!line.contains('\n'));
    }

    #[test]
    fn unsupported_operations_are_explained_and_others_are_not() {
        let nope = io::Error::from_raw_os_error(libc::EOPNOTSUPP);
        assert!(explain(Feature::Veth, &nope, "pods").is_some());
        let busy = io::Error::from_raw_os_error(libc::EEXIST);
        assert!(explain(Feature::Veth, &busy, "pods").is_none());
    }
}
