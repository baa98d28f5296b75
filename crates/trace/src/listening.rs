//! What listens in a network namespace: the TCP sockets in LISTEN state and the bound UDP
//! sockets, from `/proc/<pid>/net/{tcp,udp}` of a process in that namespace (the kernel
//! shows a process the sockets of its own network namespace there).

use std::net::Ipv4Addr;
use std::path::Path;

use crate::world::Listener;

/// The listeners seen by process `pid`; none when its files cannot be read.
pub fn listeners(pid: i32) -> Vec<Listener> {
    let dir = Path::new("/proc").join(pid.to_string()).join("net");
    let mut out = Vec::new();
    for (file, proto, listen_state) in [("tcp", 6u8, Some("0A")), ("udp", 17, None)] {
        let Ok(text) = std::fs::read_to_string(dir.join(file)) else {
            continue;
        };
        out.extend(parse(&text, proto, listen_state));
    }
    out.sort_by_key(|l| (l.proto, l.port));
    out.dedup();
    out
}

/// The sockets of one `/proc/net/{tcp,udp}` table: `local_address` is `HEXIP:HEXPORT`
/// (the address in host byte order), `st` the state.
pub fn parse(text: &str, proto: u8, state: Option<&str>) -> Vec<Listener> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let local = fields.nth(1)?;
            let st = fields.nth(1)?;
            if state.is_some_and(|s| s != st) {
                return None;
            }
            let (ip, port) = local.split_once(':')?;
            let ip = u32::from_str_radix(ip, 16).ok()?;
            Some(Listener {
                proto,
                addr: Ipv4Addr::from(ip.to_ne_bytes()),
                port: u16::from_str_radix(port, 16).ok()?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listening_socket_is_read_with_its_address_and_port() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0
   1: 0100007F:0050 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0000000000000000 20 4 30 10 -1
";
        assert_eq!(
            parse(table, 6, Some("0A")),
            vec![Listener {
                proto: 6,
                addr: Ipv4Addr::UNSPECIFIED,
                port: 8080
            }]
        );
        let udp = parse(table, 17, None);
        assert_eq!(udp[1].addr, Ipv4Addr::new(127, 0, 0, 1));
        assert_eq!(udp[1].port, 80);
    }
}
