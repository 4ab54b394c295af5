//! Sockets across processes (listeners; HSMS equipment connections at an upgrade): SCM_RIGHTS
//! over a Unix stream (rustix's safe API), and the peer's user (SO_PEERCRED), so only the same
//! user can take them.

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;

use rustix::net::{
    recvmsg, sendmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

/// Sockets one message can carry (public, TLS, admin, HSMS, and room to grow).
pub const MAX_FDS: usize = 8;

/// Sends `payload` and `fds` as one message: the sockets travel with the 4-byte length.
pub fn send(stream: &UnixStream, payload: &[u8], fds: &[BorrowedFd<'_>]) -> std::io::Result<()> {
    let len = u32::try_from(payload.len())
        .map_err(|_| std::io::Error::other("message too large to hand over"))?;
    if fds.len() > MAX_FDS {
        return Err(std::io::Error::other("too many sockets for one message"));
    }
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(std::io::Error::other(
            "socket list does not fit the control buffer",
        ));
    }
    let len = len.to_be_bytes();
    let sent = sendmsg(
        stream,
        &[IoSlice::new(&len), IoSlice::new(payload)],
        &mut control,
        // A successor gone away must give an error here, not a SIGPIPE.
        SendFlags::NOSIGNAL,
    )?;
    // The sockets went with the first bytes; the rest is plain data.
    let mut rest = sent;
    let mut w = stream;
    if rest < len.len() {
        std::io::Write::write_all(&mut w, &len[rest..])?;
        rest = len.len();
    }
    std::io::Write::write_all(&mut w, &payload[rest - len.len()..])
}

/// Receives one message sent by [`send`], reading exactly its bytes (more messages may follow
/// on the stream); `None` when the stream ended cleanly before one began.
pub fn recv(stream: &UnixStream, max: usize) -> std::io::Result<Option<(Vec<u8>, Vec<OwnedFd>)>> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut len = [0u8; 4];
    // Only the length: a longer read could reach the next message and its sockets.
    let got = recvmsg(
        stream,
        &mut [IoSliceMut::new(&mut len)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for msg in control.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = msg {
            fds.extend(rights);
        }
    }
    if got.bytes == 0 {
        return Ok(None);
    }
    let mut r = stream;
    std::io::Read::read_exact(&mut r, &mut len[got.bytes..])?;
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(std::io::Error::other(format!(
            "message of {len} bytes, more than the {max} expected"
        )));
    }
    let mut payload = vec![0u8; len];
    std::io::Read::read_exact(&mut r, &mut payload)?;
    Ok(Some((payload, fds)))
}

/// The user id of the process at the other end of `stream`.
pub fn peer_uid(stream: &UnixStream) -> std::io::Result<u32> {
    Ok(rustix::net::sockopt::socket_peercred(stream)?.uid.as_raw())
}

/// This process's user id.
pub fn own_uid() -> u32 {
    rustix::process::getuid().as_raw()
}

/// The inode of a socket: the same number in two processes means the same socket.
pub fn inode(fd: impl AsFd) -> u64 {
    rustix::fs::fstat(fd).map_or(0, |s| s.st_ino)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_and_manifest_cross_a_unix_stream() {
        let (a, b) = UnixStream::pair().unwrap();
        let l1 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let l2 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addrs = [l1.local_addr().unwrap(), l2.local_addr().unwrap()];
        assert_eq!(peer_uid(&a).unwrap(), own_uid());
        let inodes = [inode(&l1), inode(&l2)];
        let fds = [l1.as_fd(), l2.as_fd()];
        send(&a, br#"{"listeners":["public","admin"]}"#, &fds).unwrap();
        // A second message right behind the first: each read takes only its own.
        send(&a, &[7u8; 50_000], &fds[..1]).unwrap();
        drop(a);
        let (manifest, got) = recv(&b, 1024).unwrap().unwrap();
        assert_eq!(manifest, br#"{"listeners":["public","admin"]}"#);
        assert_eq!(got.len(), 2);
        for (i, fd) in got.into_iter().enumerate() {
            assert_eq!(inode(&fd), inodes[i], "the same socket, not a copy");
            let l = std::net::TcpListener::from(fd);
            assert_eq!(l.local_addr().unwrap(), addrs[i]);
        }
        let (big, one) = recv(&b, 50_000).unwrap().unwrap();
        assert_eq!((big.len(), one.len()), (50_000, 1));
        assert_eq!(inode(&one[0]), inodes[0]);
        assert!(recv(&b, 10).unwrap().is_none(), "a clean end");
    }
}
