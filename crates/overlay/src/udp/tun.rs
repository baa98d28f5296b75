//! The TUN device: opened with a `virtio_net_hdr` in front of every packet and with TCP
//! segmentation offload, so the kernel hands the forwarder whole 64 KB TCP super-packets
//! (one read instead of forty-odd) and takes coalesced ones back.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const TUNGETIFF: libc::c_ulong = 0x8004_54d2;
const IFF_TUN: libc::c_short = 0x0001;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;
const TUN_F_CSUM: libc::c_uint = 0x01;
const TUN_F_TSO4: libc::c_uint = 0x02;

/// Length of the `virtio_net_hdr` before each packet (the tun default).
pub const VNET_HDR_LEN: usize = 10;
pub const VIRTIO_NET_HDR_F_NEEDS_CSUM: u8 = 1;
pub const VIRTIO_NET_HDR_GSO_NONE: u8 = 0;
pub const VIRTIO_NET_HDR_GSO_TCPV4: u8 = 1;
/// Set on top of a GSO type when the packet carries ECN's CWR.
pub const VIRTIO_NET_HDR_GSO_ECN: u8 = 0x80;

/// The `virtio_net_hdr` fields (host byte order: the tun default on a little-endian host).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl VnetHdr {
    pub fn parse(bytes: &[u8]) -> VnetHdr {
        let u16_at = |i: usize| u16::from_ne_bytes([bytes[i], bytes[i + 1]]);
        VnetHdr {
            flags: bytes[0],
            gso_type: bytes[1],
            hdr_len: u16_at(2),
            gso_size: u16_at(4),
            csum_start: u16_at(6),
            csum_offset: u16_at(8),
        }
    }

    pub fn write(&self, out: &mut [u8]) {
        out[0] = self.flags;
        out[1] = self.gso_type;
        out[2..4].copy_from_slice(&self.hdr_len.to_ne_bytes());
        out[4..6].copy_from_slice(&self.gso_size.to_ne_bytes());
        out[6..8].copy_from_slice(&self.csum_start.to_ne_bytes());
        out[8..10].copy_from_slice(&self.csum_offset.to_ne_bytes());
    }
}

/// An open TUN queue. Not persistent: the device disappears when the last fd closes, so
/// a crashed agent leaves nothing behind.
#[derive(Debug)]
pub struct Tun {
    fd: OwnedFd,
    name: String,
}

#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

impl Tun {
    /// Creates (or attaches to) TUN device `name` in the calling thread's network
    /// namespace, non-blocking, with the vnet header and TSO4 + checksum offload.
    pub fn open(name: &str) -> io::Result<Tun> {
        if name.is_empty() || name.len() >= libc::IFNAMSIZ {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("device name {name:?} must be 1 to 15 bytes"),
            ));
        }
        // SAFETY: a plain open of a path; the result is checked.
        let raw = unsafe {
            libc::open(
                c"/dev/net/tun".as_ptr(),
                libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(with_context(
                io::Error::last_os_error(),
                "open /dev/net/tun (is the tun module loaded?)",
            ));
        }
        // SAFETY: `raw` is a fresh fd we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            flags: IFF_TUN | IFF_NO_PI | IFF_VNET_HDR,
            _pad: [0; 22],
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        // SAFETY: TUNSETIFF reads and writes an ifreq, which `req` is laid out as.
        if unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF as _, &mut req) } < 0 {
            let err = io::Error::last_os_error();
            let hint = if err.raw_os_error() == Some(libc::EBUSY) {
                format!(
                    "create TUN device {name}: another process holds a device of that name; stop it or delete the device"
                )
            } else {
                format!("create TUN device {name}")
            };
            return Err(with_context(err, &hint));
        }
        let offloads = TUN_F_CSUM | TUN_F_TSO4;
        // SAFETY: TUNSETOFFLOAD takes its argument by value.
        if unsafe {
            libc::ioctl(
                fd.as_raw_fd(),
                TUNSETOFFLOAD as _,
                offloads as libc::c_ulong,
            )
        } < 0
        {
            return Err(with_context(
                io::Error::last_os_error(),
                &format!("enable checksum and TSO offload on TUN device {name}"),
            ));
        }
        Ok(Tun {
            fd,
            name: name.to_string(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether this fd still drives a device: false once the device was deleted (by hand,
    /// say), after which reads and writes fail with EBADFD.
    pub fn attached(&self) -> bool {
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            flags: 0,
            _pad: [0; 22],
        };
        // SAFETY: TUNGETIFF fills an ifreq.
        unsafe { libc::ioctl(self.fd.as_raw_fd(), TUNGETIFF as _, &mut req) == 0 }
    }
}

impl AsRawFd for Tun {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

fn with_context(err: io::Error, action: &str) -> io::Error {
    io::Error::new(err.kind(), format!("{action}: {err}"))
}
