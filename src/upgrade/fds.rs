//! Listening sockets across processes: SCM_RIGHTS over a Unix stream (rustix's safe API), and
//! the peer's user (SO_PEERCRED), so only the same user can take the sockets.

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;

use rustix::net::{
    recvmsg, sendmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

/// Listening sockets one message can carry (public, TLS, admin, HSMS, and room to grow).
pub const MAX_FDS: usize = 8;
/// The manifest that travels with the sockets is small JSON.
const MAX_MANIFEST: usize = 16 * 1024;

/// Sends `manifest` and `fds` as one message.
pub fn send(stream: &UnixStream, manifest: &[u8], fds: &[OwnedFd]) -> std::io::Result<()> {
    if fds.len() > MAX_FDS || manifest.len() > MAX_MANIFEST {
        return Err(std::io::Error::other(
            "too many sockets or too large a manifest",
        ));
    }
    let borrowed: Vec<_> = fds.iter().map(|f| f.as_fd()).collect();
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !borrowed.is_empty() && !control.push(SendAncillaryMessage::ScmRights(&borrowed)) {
        return Err(std::io::Error::other(
            "socket list does not fit the control buffer",
        ));
    }
    // The length first, so the receiver knows when the manifest is complete.
    let len = (manifest.len() as u32).to_be_bytes();
    let sent = sendmsg(
        stream,
        &[IoSlice::new(&len), IoSlice::new(manifest)],
        &mut control,
        SendFlags::empty(),
    )?;
    let want = len.len() + manifest.len();
    if sent < want {
        // The sockets went with the first bytes; the rest is plain data.
        std::io::Write::write_all(&mut &*stream, &[&len[..], manifest].concat()[sent..])?;
    }
    Ok(())
}

/// Receives one message sent by [`send`]: the manifest and the sockets, in order.
pub fn recv(stream: &UnixStream) -> std::io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut buf = vec![0u8; 4 + MAX_MANIFEST];
    let got = recvmsg(
        stream,
        &mut [IoSliceMut::new(&mut buf)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for msg in control.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = msg {
            fds.extend(rights);
        }
    }
    let mut have = got.bytes;
    if have < 4 {
        return Err(std::io::Error::other(
            "the old process closed before sending its sockets",
        ));
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len > MAX_MANIFEST {
        return Err(std::io::Error::other("manifest too large"));
    }
    while have < 4 + len {
        let n = std::io::Read::read(&mut &*stream, &mut buf[have..4 + len])?;
        if n == 0 {
            return Err(std::io::Error::other("the old process closed mid-manifest"));
        }
        have += n;
    }
    Ok((buf[4..4 + len].to_vec(), fds))
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
        let inodes = [inode(&l1), inode(&l2)];
        let fds = vec![OwnedFd::from(l1), OwnedFd::from(l2)];
        send(&a, br#"{"listeners":["public","admin"]}"#, &fds).unwrap();
        let (manifest, got) = recv(&b).unwrap();
        assert_eq!(manifest, br#"{"listeners":["public","admin"]}"#);
        assert_eq!(got.len(), 2);
        for (i, fd) in got.into_iter().enumerate() {
            assert_eq!(inode(&fd), inodes[i], "the same socket, not a copy");
            let l = std::net::TcpListener::from(fd);
            assert_eq!(l.local_addr().unwrap(), addrs[i]);
        }
        assert_eq!(peer_uid(&a).unwrap(), own_uid());
    }
}
