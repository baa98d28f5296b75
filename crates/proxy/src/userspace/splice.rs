//! Moving a proxied TCP connection's bytes without copying them through user space:
//! `splice(2)` from one socket into a pipe and from the pipe into the other socket, one
//! thread per direction (the sockets are blocking). Where splice is refused (EINVAL, an
//! unusual socket), it falls back to read/write.

use std::io::{self, Read as _, Write as _};
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd as _, OwnedFd};
use std::thread;

/// Bytes moved per read/write call when splice is refused.
const CHUNK: usize = 64 * 1024;

/// The capacity asked for each connection's pipes. With a pipe's default 64 KiB (16
/// pages) a bulk transfer costs one splice pair and one wakeup per 64 KiB at most; a
/// larger pipe moves what the socket has queued in one call. Measured with
/// `benches/userspace.rs` (one iperf3 stream): 64 KiB 4.4-4.9 Gbit/s, 256 KiB 5.1-5.5,
/// 1 MiB 5.2-5.7. 256 KiB keeps most of the gain while bounding what a connection whose
/// reader is slow can hold in its two pipes (pages in flight only, not the capacity).
const PIPE_SIZE: usize = 256 * 1024;

/// Proxies `client` ⇄ `backend` until both directions are done, on two threads; returns at
/// once. A half-close is passed on (`shutdown(Write)` on the other side); an error on
/// either side closes both.
pub fn proxy_pair(client: TcpStream, backend: TcpStream) -> io::Result<()> {
    let (client_r, backend_r) = (client.try_clone()?, backend.try_clone()?);
    thread::Builder::new()
        .name("splice-up".into())
        .spawn(move || pump(client_r, backend))?;
    thread::Builder::new()
        .name("splice-down".into())
        .spawn(move || pump(backend_r, client))?;
    Ok(())
}

fn pump(from: TcpStream, to: TcpStream) {
    match copy(&from, &to) {
        Ok(_) => {
            let _ = to.shutdown(Shutdown::Write);
        }
        Err(_) => {
            let _ = from.shutdown(Shutdown::Both);
            let _ = to.shutdown(Shutdown::Both);
        }
    }
}

/// Copies until `from` reaches EOF; the bytes moved.
pub fn copy(from: &TcpStream, to: &TcpStream) -> io::Result<u64> {
    match splice_copy(from, to) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => read_write_copy(from, to),
        other => other,
    }
}

/// A pipe (read end, write end) and how many bytes it holds.
fn pipe() -> io::Result<(OwnedFd, OwnedFd, usize)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both fds are open and owned by nobody else.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let capacity = grow(&w);
    Ok((r, w, capacity))
}

/// Grows the pipe to [`PIPE_SIZE`] when allowed (`fs.pipe-max-size` and the per-user pipe
/// limits may refuse it, unprivileged); its capacity either way.
fn grow(pipe: &OwnedFd) -> usize {
    // SAFETY: fcntl on an open pipe fd with an integer argument.
    let size = unsafe {
        libc::fcntl(
            pipe.as_raw_fd(),
            libc::F_SETPIPE_SZ,
            PIPE_SIZE as libc::c_int,
        )
    };
    if size > 0 {
        return size as usize;
    }
    // SAFETY: as above, F_GETPIPE_SZ takes no argument.
    let size = unsafe { libc::fcntl(pipe.as_raw_fd(), libc::F_GETPIPE_SZ) };
    if size > 0 { size as usize } else { CHUNK }
}

fn splice(from: i32, to: i32, len: usize) -> io::Result<usize> {
    loop {
        // SAFETY: plain fds and null offsets (sockets and pipes have no file position).
        let n = unsafe {
            libc::splice(
                from,
                std::ptr::null_mut(),
                to,
                std::ptr::null_mut(),
                len,
                libc::SPLICE_F_MOVE,
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

fn splice_copy(from: &TcpStream, to: &TcpStream) -> io::Result<u64> {
    let (pipe_r, pipe_w, capacity) = pipe()?;
    let mut total = 0u64;
    loop {
        let n = splice(from.as_raw_fd(), pipe_w.as_raw_fd(), capacity)?;
        if n == 0 {
            return Ok(total);
        }
        let mut left = n;
        while left > 0 {
            let m = splice(pipe_r.as_raw_fd(), to.as_raw_fd(), left)?;
            if m == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "the other side stopped taking data",
                ));
            }
            left -= m;
        }
        total += n as u64;
    }
}

fn read_write_copy(mut from: &TcpStream, mut to: &TcpStream) -> io::Result<u64> {
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&buf[..n])?;
        total += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn pipes_grow_to_pipe_size() {
        // 256 KiB is under the default fs.pipe-max-size (1 MiB), even unprivileged.
        let (_r, _w, capacity) = pipe().unwrap();
        assert_eq!(capacity, PIPE_SIZE, "the pipe kept another capacity");
    }

    #[test]
    fn splices_both_ways_and_passes_half_close_on() {
        // Loopback only: a client, the proxy in the middle, an echo-to-EOF backend.
        let backend_listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let backend_addr = backend_listener.local_addr().unwrap();
        let backend = thread::spawn(move || {
            let (mut s, _) = backend_listener.accept().unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).unwrap();
            s.write_all(&got).unwrap();
            got.len()
        });
        let front = TcpListener::bind("127.0.0.1:0").unwrap();
        let front_addr = front.local_addr().unwrap();
        let proxy = thread::spawn(move || {
            let (client, _) = front.accept().unwrap();
            let backend = TcpStream::connect(backend_addr).unwrap();
            proxy_pair(client, backend).unwrap();
        });
        let mut client = TcpStream::connect(front_addr).unwrap();
        let payload: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        client.write_all(&payload).unwrap();
        client.shutdown(Shutdown::Write).unwrap();
        let mut echoed = Vec::new();
        client.read_to_end(&mut echoed).unwrap();
        proxy.join().unwrap();
        assert_eq!(backend.join().unwrap(), payload.len());
        assert!(echoed == payload, "the echo differs from what was sent");
    }
}
