//! Deterministic names for what the plugin creates, so a re-ADD, DEL or GC
//! finds them again from (container ID, ifname) alone.

/// Prefix of host-side veth names: recognisably podnet's.
pub const HOST_VETH_PREFIX: &str = "pnv";

/// The host end of the veth for an attachment: `pnv` + 8 hex digits (11
/// bytes, under the kernel's 15-byte limit).
pub fn host_veth_name(container_id: &str, ifname: &str) -> String {
    format!(
        "{HOST_VETH_PREFIX}{:08x}",
        fnv1a(container_id, ifname) as u32
    )
}

/// Whether `name` looks like a host veth this plugin made.
pub fn is_host_veth_name(name: &str) -> bool {
    name.len() == HOST_VETH_PREFIX.len() + 8
        && name.starts_with(HOST_VETH_PREFIX)
        && name[HOST_VETH_PREFIX.len()..]
            .chars()
            .all(|c| c.is_ascii_hexdigit())
}

/// Prefix of tombstones: links a DEL has taken out of service (down, off
/// the bridge, renamed) whose deletion is still under way.
pub const TOMBSTONE_PREFIX: &str = "pnd";

/// The tombstone name of link `index`: unique in its namespace for as long as
/// the link exists (the kernel gives no two live links the same index), so it
/// never collides with another tombstone or with a name an ADD wants.
pub fn tombstone_name(index: u32) -> String {
    format!("{TOMBSTONE_PREFIX}{index:08x}")
}

/// Whether `name` is a tombstone this plugin made.
pub fn is_tombstone_name(name: &str) -> bool {
    name.len() == TOMBSTONE_PREFIX.len() + 8
        && name.starts_with(TOMBSTONE_PREFIX)
        && name[TOMBSTONE_PREFIX.len()..]
            .chars()
            .all(|c| c.is_ascii_hexdigit())
}

fn fnv1a(container_id: &str, ifname: &str) -> u64 {
    let mut hash: u64 = 0xcbf29ce484222325;
    for byte in container_id.bytes().chain([0u8]).chain(ifname.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x100000001b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_stable_short_and_distinct() {
        let a = host_veth_name("abc", "eth0");
        assert_eq!(a, host_veth_name("abc", "eth0"));
        assert_ne!(a, host_veth_name("abc", "eth1"));
        assert_ne!(a, host_veth_name("abd", "eth0"));
        assert!(a.len() <= 15);
        assert!(is_host_veth_name(&a));
        assert!(!is_host_veth_name("veth1234"));
        assert!(!is_host_veth_name("pnvzzzzzzzz"));
        let t = tombstone_name(42);
        assert_eq!(t, "pnd0000002a");
        assert!(is_tombstone_name(&t));
        assert!(!is_host_veth_name(&t));
        assert!(!is_tombstone_name(&a));
    }
}
