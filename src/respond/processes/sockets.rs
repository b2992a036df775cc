//! The sockets of a network namespace, from `/proc/<pid>/net/{tcp,tcp6,udp,udp6}`
//! (the tables of the namespace that `<pid>` is in), and the socket inodes a
//! process holds, from its `/proc/<pid>/fd` links.

use serde::Serialize;
use std::{
    collections::HashSet,
    io::{BufRead, BufReader, Read},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

/// One socket as `ss` would show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Socket {
    /// `tcp` or `udp` (either family: the addresses tell IPv4 from IPv6).
    pub protocol: &'static str,
    pub local: String,
    /// `0.0.0.0:0` / `[::]:0` when not connected.
    pub remote: String,
    /// TCP's state (`LISTEN`, `ESTABLISHED`, ...); for UDP `UNCONN` (bound,
    /// not connected: counted as listening) or `ESTABLISHED` (connected).
    pub state: &'static str,
}

impl Socket {
    /// A socket that waits for peers: TCP `LISTEN`, or UDP bound and not connected.
    pub fn is_listening(&self) -> bool {
        self.state == "LISTEN" || self.state == "UNCONN"
    }
}

/// One row of a table, with the inode that ties it to a process's fd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub inode: u64,
    pub socket: Socket,
}

/// The four tables a namespace has: file name and protocol.
pub const TABLES: [(&str, &str); 4] = [("tcp", "tcp"), ("tcp6", "tcp"), ("udp", "udp"), ("udp6", "udp")];

/// Bytes read of one table at most (a node's own namespace may hold many
/// sockets; rows are streamed, not kept, so this bounds time, not memory).
pub const MAX_TABLE_BYTES: u64 = 64 << 20;

fn tcp_state(code: u8) -> &'static str {
    match code {
        0x01 => "ESTABLISHED",
        0x02 => "SYN_SENT",
        0x03 => "SYN_RECV",
        0x04 => "FIN_WAIT1",
        0x05 => "FIN_WAIT2",
        0x06 => "TIME_WAIT",
        0x07 => "CLOSE",
        0x08 => "CLOSE_WAIT",
        0x09 => "LAST_ACK",
        0x0A => "LISTEN",
        0x0B => "CLOSING",
        0x0C => "NEW_SYN_RECV",
        _ => "UNKNOWN",
    }
}

/// `0100007F:1F90` (the kernel prints each 32-bit word of the address as the
/// host reads it, and the port in host order).
fn parse_addr(s: &str) -> Option<SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |h: &str| u32::from_str_radix(h, 16).ok().map(u32::to_ne_bytes);
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(ip)?)),
        32 => {
            let mut b = [0u8; 16];
            for i in 0..4 {
                b[i * 4..i * 4 + 4].copy_from_slice(&word(ip.get(i * 8..i * 8 + 8)?)?);
            }
            IpAddr::V6(Ipv6Addr::from(b))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// One line of a table (`sl local rem st queues tr retrnsmt uid timeout inode ...`);
/// `None` for the header or a line that does not parse.
pub fn parse_row(line: &str, protocol: &'static str) -> Option<Row> {
    let f: Vec<&str> = line.split_whitespace().take(10).collect();
    if f.len() < 10 || !f[0].ends_with(':') {
        return None;
    }
    let (local, remote) = (parse_addr(f[1])?, parse_addr(f[2])?);
    let code = u8::from_str_radix(f[3], 16).ok()?;
    let inode = f[9].parse().ok()?;
    let state = match protocol {
        "udp" if code == 0x07 => "UNCONN",
        "udp" if code == 0x01 => "ESTABLISHED",
        _ => tcp_state(code),
    };
    Some(Row { inode, socket: Socket { protocol, local: local.to_string(), remote: remote.to_string(), state } })
}

/// Streams every row of the tables of `pid`'s network namespace to `each`.
/// False (and nothing streamed) when the tables could not be opened: the
/// process is gone. `truncated` is set when a table was longer than
/// [`MAX_TABLE_BYTES`].
pub fn read_tables(pid: u32, truncated: &mut bool, mut each: impl FnMut(Row)) -> bool {
    let mut open = Vec::with_capacity(TABLES.len());
    for (file, protocol) in TABLES {
        match std::fs::File::open(format!("/proc/{pid}/net/{file}")) {
            Ok(f) => open.push((f, protocol)),
            // No IPv6 in this kernel: no tcp6/udp6, nothing to list.
            Err(_) if file.ends_with('6') => {}
            Err(_) => return false,
        }
    }
    // Open tables keep their namespace: reading them no longer needs `pid`.
    for (f, protocol) in open {
        let mut r = BufReader::new(f.take(MAX_TABLE_BYTES));
        let (mut line, mut read) = (String::new(), 0u64);
        loop {
            line.clear();
            match r.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(n) => read += n as u64,
            }
            if let Some(row) = parse_row(&line, protocol) {
                each(row);
            }
        }
        if read >= MAX_TABLE_BYTES {
            *truncated = true;
        }
    }
    true
}

/// The socket inodes among `pid`'s file descriptors, and how many
/// descriptors were looked at: at most `max_fds` (`truncated` is set when it
/// had more). Empty when it is gone.
pub fn socket_inodes(pid: u32, max_fds: usize, truncated: &mut bool) -> (HashSet<u64>, usize) {
    let mut out = HashSet::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return (out, 0) };
    let mut seen = 0;
    for e in dir.flatten() {
        if seen >= max_fds {
            *truncated = true;
            break;
        }
        seen += 1;
        let Ok(target) = std::fs::read_link(e.path()) else { continue };
        let Some(s) = target.to_str() else { continue };
        if let Some(ino) = s.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')).and_then(|n| n.parse().ok()) {
            out.insert(ino);
        }
    }
    (out, seen)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows() {
        let l = "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0000 100 0 0 10 0";
        let r = parse_row(l, "tcp").unwrap();
        assert_eq!(r.inode, 12345);
        assert_eq!(r.socket.local, "127.0.0.1:8080");
        assert_eq!(r.socket.remote, "0.0.0.0:0");
        assert_eq!(r.socket.state, "LISTEN");
        assert!(r.socket.is_listening());
        let l6 = "   1: 00000000000000000000000001000000:0016 0000000000000000FFFF00000200000A:D431 01 00000000:00000000 00:00000000 00000000 0 0 777 1";
        let r = parse_row(l6, "tcp").unwrap();
        assert_eq!(r.socket.local, "[::1]:22");
        assert_eq!(r.socket.remote, "[::ffff:10.0.0.2]:54321");
        assert_eq!(r.socket.state, "ESTABLISHED");
        assert!(!r.socket.is_listening());
        let u = "  5: 00000000:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000 0 0 99 2 0";
        let r = parse_row(u, "udp").unwrap();
        assert_eq!((r.socket.state, r.socket.local.as_str()), ("UNCONN", "0.0.0.0:53"));
        assert!(r.socket.is_listening());
        let hdr = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode";
        assert!(parse_row(hdr, "tcp").is_none());
        assert!(parse_row("   0: zz:1 00000000:0000 0A 0 0 0 0 0 1", "tcp").is_none());
        assert!(parse_row("", "tcp").is_none());
    }

    #[test]
    fn reads_our_own_listener() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let mut t = false;
        let (mine, seen) = socket_inodes(std::process::id(), 100_000, &mut t);
        assert!(seen >= mine.len() && !t);
        let (_, one) = socket_inodes(std::process::id(), 1, &mut t);
        assert!(one == 1 && t, "stops at the bound and says so");
        t = false;
        let mut found = None;
        assert!(read_tables(std::process::id(), &mut t, |r| {
            if mine.contains(&r.inode) && r.socket.local == format!("127.0.0.1:{port}") {
                found = Some(r.socket);
            }
        }));
        assert!(!t);
        assert_eq!(found.expect("our listener").state, "LISTEN");
    }
}
