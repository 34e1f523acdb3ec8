//! Batched UDP for the media worker: `recvmmsg` and `sendmmsg`, one system
//! call for up to [`BATCH`] datagrams each way instead of one per datagram.
//!
//! The scratch space (buffers, addresses, message headers) is allocated
//! once per socket and reused, so a batch costs no allocation.

use std::io;
use std::mem::MaybeUninit;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

use socket2::SockAddr;

/// Most datagrams read or written by one system call.
pub(crate) const BATCH: usize = 32;
/// Largest datagram read (WebRTC keeps packets under the path MTU).
pub(crate) const MAX_DATAGRAM: usize = 2048;

/// Datagrams read in one batch.
pub(crate) struct RecvBatch {
    buffers: Box<[[u8; MAX_DATAGRAM]; BATCH]>,
    lengths: [usize; BATCH],
    sources: [Option<SocketAddr>; BATCH],
    count: usize,
    names: Box<[libc::sockaddr_storage; BATCH]>,
    iovecs: Box<[libc::iovec; BATCH]>,
    headers: Box<[libc::mmsghdr; BATCH]>,
}

// SAFETY: the raw pointers inside the headers point into the batch's own
// boxed fields and are rebuilt before every use; nothing is shared.
unsafe impl Send for RecvBatch {}

impl RecvBatch {
    /// Empty scratch space for one socket.
    pub fn new() -> Self {
        // SAFETY: all-zero is a valid value for these plain C structs.
        let zeroed = || unsafe { MaybeUninit::<libc::mmsghdr>::zeroed().assume_init() };
        RecvBatch {
            buffers: Box::new([[0; MAX_DATAGRAM]; BATCH]),
            lengths: [0; BATCH],
            sources: [None; BATCH],
            count: 0,
            // SAFETY: an all-zero sockaddr_storage is valid.
            names: Box::new(std::array::from_fn(|_| unsafe { MaybeUninit::zeroed().assume_init() })),
            iovecs: Box::new([libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; BATCH]),
            headers: Box::new(std::array::from_fn(|_| zeroed())),
        }
    }

    /// The datagrams of the last read: (source, contents).
    pub fn datagrams(&self) -> impl Iterator<Item = (SocketAddr, &[u8])> {
        (0..self.count).filter_map(|i| self.sources[i].map(|s| (s, &self.buffers[i][..self.lengths[i]])))
    }
}

/// Reads up to [`BATCH`] datagrams without blocking. `Ok(0)` never happens:
/// an empty socket is `WouldBlock`.
pub(crate) fn recv_batch(socket: &UdpSocket, batch: &mut RecvBatch) -> io::Result<usize> {
    for i in 0..BATCH {
        batch.iovecs[i] = libc::iovec { iov_base: batch.buffers[i].as_mut_ptr().cast(), iov_len: MAX_DATAGRAM };
        let header = &mut batch.headers[i];
        header.msg_hdr.msg_name = (&mut batch.names[i] as *mut libc::sockaddr_storage).cast();
        header.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        header.msg_hdr.msg_iov = &mut batch.iovecs[i];
        header.msg_hdr.msg_iovlen = 1;
        header.msg_hdr.msg_control = std::ptr::null_mut();
        header.msg_hdr.msg_controllen = 0;
        header.msg_hdr.msg_flags = 0;
        header.msg_len = 0;
    }
    // SAFETY: every header points at live buffers and names owned by
    // `batch`, sized as declared; the call writes at most BATCH messages.
    let n = unsafe {
        libc::recvmmsg(
            socket.as_raw_fd(),
            batch.headers.as_mut_ptr(),
            BATCH as libc::c_uint,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    if n < 0 {
        batch.count = 0;
        return Err(io::Error::last_os_error());
    }
    let n = n as usize;
    for i in 0..n {
        batch.lengths[i] = (batch.headers[i].msg_len as usize).min(MAX_DATAGRAM);
        let len = batch.headers[i].msg_hdr.msg_namelen;
        let mut storage = socket2::SockAddrStorage::zeroed();
        // SAFETY: the kernel wrote a socket address of `len` bytes into
        // `names[i]`, a sockaddr_storage; copied into socket2's own storage.
        let name = unsafe {
            *storage.view_as::<libc::sockaddr_storage>() = batch.names[i];
            SockAddr::new(storage, len)
        };
        batch.sources[i] = name.as_socket();
    }
    batch.count = n;
    Ok(n)
}

/// Scratch space for writing batches.
pub(crate) struct SendBatch {
    names: Box<[SockAddr; BATCH]>,
    iovecs: Box<[libc::iovec; BATCH]>,
    headers: Box<[libc::mmsghdr; BATCH]>,
}

// SAFETY: as for `RecvBatch`.
unsafe impl Send for SendBatch {}

impl SendBatch {
    /// Empty scratch space.
    pub fn new() -> Self {
        let unspecified = SockAddr::from(SocketAddr::from(([0, 0, 0, 0], 0)));
        SendBatch {
            names: Box::new(std::array::from_fn(|_| unspecified.clone())),
            iovecs: Box::new([libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; BATCH]),
            // SAFETY: all-zero is a valid mmsghdr.
            headers: Box::new(std::array::from_fn(|_| unsafe { MaybeUninit::zeroed().assume_init() })),
        }
    }
}

/// Writes up to [`BATCH`] of `datagrams` (destination, contents) without
/// blocking; returns how many the kernel took (`WouldBlock` if none).
pub(crate) fn send_batch(
    socket: &UdpSocket,
    scratch: &mut SendBatch,
    datagrams: &[(SocketAddr, &[u8])],
) -> io::Result<usize> {
    let n = datagrams.len().min(BATCH);
    if n == 0 {
        return Ok(0);
    }
    for (i, (destination, contents)) in datagrams.iter().take(n).enumerate() {
        scratch.names[i] = SockAddr::from(*destination);
        scratch.iovecs[i] = libc::iovec { iov_base: contents.as_ptr() as *mut libc::c_void, iov_len: contents.len() };
        let header = &mut scratch.headers[i];
        header.msg_hdr.msg_name = scratch.names[i].as_ptr() as *mut libc::c_void;
        header.msg_hdr.msg_namelen = scratch.names[i].len();
        header.msg_hdr.msg_iov = &mut scratch.iovecs[i];
        header.msg_hdr.msg_iovlen = 1;
        header.msg_hdr.msg_control = std::ptr::null_mut();
        header.msg_hdr.msg_controllen = 0;
        header.msg_hdr.msg_flags = 0;
        header.msg_len = 0;
    }
    // SAFETY: the first `n` headers point at live addresses and at the
    // callers' buffers, which outlive the call; the kernel only reads them.
    let sent = unsafe {
        libc::sendmmsg(socket.as_raw_fd(), scratch.headers.as_mut_ptr(), n as libc::c_uint, libc::MSG_DONTWAIT)
    };
    if sent < 0 { Err(io::Error::last_os_error()) } else { Ok(sent as usize) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_goes_out_and_comes_back_in_one_call_each() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        a.set_nonblocking(true).unwrap();
        b.set_nonblocking(true).unwrap();
        let to = b.local_addr().unwrap();
        let payloads: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; 100 + usize::from(i)]).collect();
        let datagrams: Vec<(SocketAddr, &[u8])> = payloads.iter().map(|p| (to, p.as_slice())).collect();
        let mut scratch = SendBatch::new();
        assert_eq!(send_batch(&a, &mut scratch, &datagrams).unwrap(), 20);
        let mut batch = RecvBatch::new();
        let mut got = Vec::new();
        for _ in 0..100 {
            match recv_batch(&b, &mut batch) {
                Ok(_) => got.extend(batch.datagrams().map(|(s, d)| (s, d.to_vec()))),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if got.len() == 20 {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(got.len(), 20);
        assert!(got.iter().all(|(s, _)| *s == a.local_addr().unwrap()));
        assert_eq!(got.iter().map(|(_, d)| d.clone()).collect::<Vec<_>>(), payloads);
        assert_eq!(recv_batch(&b, &mut batch).unwrap_err().kind(), io::ErrorKind::WouldBlock);
    }
}
