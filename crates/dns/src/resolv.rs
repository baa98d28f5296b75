//! The upstream resolvers of a `resolv.conf` (`nameserver` lines, port 53), the default
//! upstream of names outside the cluster zone.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

/// The nameservers of resolv.conf text, in order (link-local scopes dropped).
pub fn nameservers(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next()? == "nameserver").then_some(())?;
            let addr = words.next()?;
            let addr = addr.split('%').next()?;
            addr.parse::<IpAddr>()
                .ok()
                .map(|ip| SocketAddr::new(ip, 53))
        })
        .collect()
}

/// The nameservers of a resolv.conf file.
pub fn read(path: &Path) -> std::io::Result<Vec<SocketAddr>> {
    Ok(nameservers(&std::fs::read_to_string(path)?))
}

#[cfg(test)]
mod tests {
    #[test]
    fn nameserver_lines() {
        let t = "# c\nsearch a b\nnameserver 10.0.0.2\nnameserver fe80::1%eth0\noptions ndots:5\nnameserver bogus\n";
        let got: Vec<String> = super::nameservers(t)
            .iter()
            .map(|a| a.to_string())
            .collect();
        assert_eq!(got, ["10.0.0.2:53", "[fe80::1]:53"]);
    }
}
