//! A tiny TCP/UDP echo server and client: what the demo and tests run inside
//! pods, since lab containers run the host's binaries.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

use clap::Subcommand;

#[derive(Subcommand)]
pub enum ProbeCmd {
    /// Answers each TCP connection (or UDP datagram) with
    /// "<hostname> got: <what it received>".
    Serve {
        #[arg(long)]
        tcp: Option<SocketAddr>,
        #[arg(long)]
        udp: Option<SocketAddr>,
        /// Stop after this many requests (0: run until killed).
        #[arg(long, default_value_t = 0)]
        count: u64,
    },
    /// Sends DATA over TCP or UDP and prints the reply. HOST:PORT may be a name, resolved
    /// as any program in the pod resolves it (its /etc/resolv.conf and search path).
    Send {
        #[arg(long, value_name = "HOST:PORT")]
        tcp: Option<String>,
        #[arg(long, value_name = "HOST:PORT")]
        udp: Option<String>,
        #[arg(long, default_value = "hello")]
        data: String,
        /// Seconds to wait for the connection and reply.
        #[arg(long, default_value_t = 3)]
        timeout: u64,
    },
}

pub fn run(cmd: ProbeCmd) -> i32 {
    let result = match cmd {
        ProbeCmd::Serve { tcp, udp, count } => serve(tcp, udp, count),
        ProbeCmd::Send {
            tcp,
            udp,
            data,
            timeout,
        } => send(tcp, udp, &data, Duration::from_secs(timeout)),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("podnet probe: {e}");
            1
        }
    }
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "?".into())
}

fn serve(tcp: Option<SocketAddr>, udp: Option<SocketAddr>, count: u64) -> std::io::Result<()> {
    let name = hostname();
    let tcp = tcp.map(TcpListener::bind).transpose()?;
    let udp = udp.map(UdpSocket::bind).transpose()?;
    if let Some(sock) = &udp {
        let name = name.clone();
        let sock = sock.try_clone()?;
        std::thread::spawn(move || serve_udp(sock, &name, count));
    }
    println!("serving");
    let _ = std::io::stdout().flush();
    match tcp {
        Some(listener) => serve_tcp(listener, &name, count),
        None => loop {
            std::thread::park();
        },
    }
}

fn serve_tcp(listener: TcpListener, name: &str, count: u64) -> std::io::Result<()> {
    let mut served = 0u64;
    for conn in listener.incoming() {
        let mut conn = conn?;
        let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
        let mut buf = [0u8; 4096];
        let n = conn.read(&mut buf).unwrap_or(0);
        let peer = conn.peer_addr().map(|a| a.to_string()).unwrap_or_default();
        let reply = format!(
            "{name} got: {} (from {peer})",
            String::from_utf8_lossy(&buf[..n])
        );
        let _ = conn.write_all(reply.as_bytes());
        served += 1;
        if count != 0 && served >= count {
            break;
        }
    }
    Ok(())
}

fn serve_udp(sock: UdpSocket, name: &str, count: u64) {
    let mut served = 0u64;
    let mut buf = [0u8; 4096];
    while let Ok((n, peer)) = sock.recv_from(&mut buf) {
        let reply = format!(
            "{name} got: {} (from {peer})",
            String::from_utf8_lossy(&buf[..n])
        );
        let _ = sock.send_to(reply.as_bytes(), peer);
        served += 1;
        if count != 0 && served >= count {
            std::process::exit(0);
        }
    }
}

/// The first IPv4 address of HOST:PORT (getaddrinfo: the pod's resolver).
fn resolve(target: &str) -> std::io::Result<SocketAddr> {
    use std::net::ToSocketAddrs;
    let addrs: Vec<SocketAddr> = target.to_socket_addrs()?.collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{target}: no address"),
            )
        })
}

fn send(
    tcp: Option<String>,
    udp: Option<String>,
    data: &str,
    timeout: Duration,
) -> std::io::Result<()> {
    let tcp = tcp.as_deref().map(resolve).transpose()?;
    let udp = udp.as_deref().map(resolve).transpose()?;
    let reply = match (tcp, udp) {
        (Some(addr), _) => {
            let mut conn = TcpStream::connect_timeout(&addr, timeout)?;
            conn.set_read_timeout(Some(timeout))?;
            conn.write_all(data.as_bytes())?;
            conn.shutdown(std::net::Shutdown::Write)?;
            let mut reply = String::new();
            conn.read_to_string(&mut reply)?;
            reply
        }
        (None, Some(addr)) => {
            let sock = UdpSocket::bind("0.0.0.0:0")?;
            sock.set_read_timeout(Some(timeout))?;
            sock.send_to(data.as_bytes(), addr)?;
            let mut buf = [0u8; 4096];
            let (n, _) = sock.recv_from(&mut buf)?;
            String::from_utf8_lossy(&buf[..n]).into_owned()
        }
        (None, None) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "give --tcp ADDR or --udp ADDR",
            ));
        }
    };
    println!("{reply}");
    Ok(())
}
