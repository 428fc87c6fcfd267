//! What a client's sockets hold unacknowledged: the registry of the live TCP sockets a
//! client's connector opened ([`Sockets`]), and the sum, over them, of the bytes written
//! but not yet acknowledged by the peer ([`Sockets::unacknowledged`]), which the drivers
//! report to the core as [`Report::Unacknowledged`](uploads_core::uploader::Report::Unacknowledged).
//!
//! Why: a socket's kernel send buffer takes megabytes at once, so the bytes a client has
//! handed to its sockets run far ahead of those that have left the machine; through a slow
//! link progress would otherwise show hundreds of MiB/s for the first second. The bytes
//! handed over less what the sockets still hold is what the peer has.
//!
//! Linux only (`SIOCOUTQ`, the bytes between the last one the peer acknowledged and the
//! last one written; under TLS, TLS record bytes, a little more than the payload). Elsewhere
//! [`Sockets::unacknowledged`] is `None`, the driver reports nothing, and progress counts the
//! bytes handed to the sockets.
//!
//! The registry is per client: uploads running at once on one client (or its clones) see
//! each other's sockets, and each reports the sum.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use uploads_core::uploader::Uploader;

/// What [`Sockets::register`] takes: a socket's file descriptor (`AsFd`) on Unix, its
/// `AsSocket` on Windows. Both tokio's and std's `TcpStream` are one.
#[cfg(unix)]
pub use std::os::fd::AsFd as AsSocket;
/// What [`Sockets::register`] takes: a socket's file descriptor (`AsFd`) on Unix, its
/// `AsSocket` on Windows. Both tokio's and std's `TcpStream` are one.
#[cfg(windows)]
pub use std::os::windows::io::AsSocket;

/// The live sockets of one client. Cheap to clone: clones share the registry.
#[derive(Debug, Clone, Default)]
pub struct Sockets {
    registry: Arc<Mutex<Registry>>,
}

/// The sockets registered and not yet dropped, by registration.
#[derive(Debug, Default)]
struct Registry {
    next_id: u64,
    /// The raw descriptors; a descriptor leaves before its socket closes (see
    /// [`Registration`]), and is only used under the lock, so it is never one the process
    /// has reused for something else.
    #[cfg(target_os = "linux")]
    sockets: HashMap<u64, std::os::fd::RawFd>,
    #[cfg(not(target_os = "linux"))]
    sockets: HashMap<u64, ()>,
}

impl Sockets {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `socket` until the returned [`Registration`] drops, which MUST happen
    /// before the socket closes: keep it beside the socket, declared before it.
    pub fn register(&self, socket: &impl AsSocket) -> Registration {
        #[cfg(target_os = "linux")]
        let raw = std::os::fd::AsRawFd::as_raw_fd(&socket.as_fd());
        #[cfg(not(target_os = "linux"))]
        let raw = {
            let _ = socket;
        };
        let mut registry = self.lock();
        registry.next_id += 1;
        let id = registry.next_id;
        registry.sockets.insert(id, raw);
        Registration {
            registry: Arc::downgrade(&self.registry),
            id,
        }
    }

    /// How many sockets are registered now.
    pub fn len(&self) -> usize {
        self.lock().sockets.len()
    }

    /// Whether no socket is registered now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes the registered sockets hold written but not yet acknowledged by their
    /// peers, summed; `None` where the system does not say (anywhere but Linux). A socket
    /// that cannot be asked (already reset, say) counts nothing.
    pub fn unacknowledged(&self) -> Option<u64> {
        #[cfg(target_os = "linux")]
        {
            let registry = self.lock();
            Some(
                registry
                    .sockets
                    .values()
                    .map(|&fd| unacknowledged_on(fd))
                    .sum(),
            )
        }
        #[cfg(not(target_os = "linux"))]
        {
            None
        }
    }

    /// Tells `uploader` what the sockets hold unacknowledged at `now_unix_ms`
    /// ([`Uploader::handle_unacknowledged`]), where the system says: what a driver does at
    /// every wake-up of its loop, before it hands over the report or the timeout that woke it.
    pub fn report_to<E>(&self, uploader: &mut Uploader<E>, now_unix_ms: u64) {
        if let Some(bytes) = self.unacknowledged() {
            uploader.handle_unacknowledged(bytes, now_unix_ms);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        // The registry is a map that every operation leaves whole: a panic elsewhere
        // while it was held leaves nothing half-done.
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A socket's place in its [`Sockets`]; dropping it takes the socket out.
#[must_use = "the socket leaves the registry when this drops"]
#[derive(Debug)]
pub struct Registration {
    registry: Weak<Mutex<Registry>>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(registry) = self.registry.upgrade() {
            registry
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .sockets
                .remove(&self.id);
        }
    }
}

/// `SIOCOUTQ` of the socket `fd`: the bytes written to it that its peer has not
/// acknowledged yet; 0 when the call fails.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn unacknowledged_on(fd: std::os::fd::RawFd) -> u64 {
    let mut queued: libc::c_int = 0;
    // SAFETY: TIOCOUTQ (SIOCOUTQ on a socket) writes one c_int through its argument, which
    // points at `queued`, alive for the whole call. `fd` is open: the caller holds the
    // registry's lock, and a socket leaves the registry before it closes. Were it anything
    // else, the call would fail (ENOTTY, EBADF) without writing.
    let result = unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &raw mut queued) };
    if result == 0 {
        u64::try_from(queued).unwrap_or(0)
    } else {
        0
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::io::{ErrorKind, Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::time::Duration;

    use super::*;

    /// A connected pair on 127.0.0.1: the writer, and the peer that reads when told to.
    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let writer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (peer, _) = listener.accept().unwrap();
        (writer, peer)
    }

    /// Writes to `writer` until its send buffer is full (the peer reads nothing);
    /// how many bytes it took.
    fn fill(writer: &mut TcpStream) -> u64 {
        writer.set_nonblocking(true).unwrap();
        let chunk = vec![7u8; 64 * 1024];
        let mut written = 0u64;
        let mut refused_in_a_row = 0;
        // A full buffer may take a little room again as the peer's side takes segments in;
        // a few refusals in a row say it is full.
        while refused_in_a_row < 50 {
            match writer.write(&chunk) {
                Ok(n) => {
                    written += n as u64;
                    refused_in_a_row = 0;
                }
                Err(error) if error.kind() == ErrorKind::WouldBlock => {
                    refused_in_a_row += 1;
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(error) => panic!("{error}"),
            }
        }
        writer.set_nonblocking(false).unwrap();
        written
    }

    /// Waits until `condition` holds, failing after a bound far beyond what it needs.
    fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
        for _ in 0..2_000 {
            if condition() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("never: {what}");
    }

    #[test]
    fn a_peer_that_does_not_read_leaves_bytes_unacknowledged_until_it_reads() {
        let sockets = Sockets::new();
        let (mut writer, mut peer) = pair();
        let registration = sockets.register(&writer);
        assert_eq!(sockets.unacknowledged(), Some(0));
        let written = fill(&mut writer);
        let held = sockets.unacknowledged().unwrap();
        // The peer's receive buffer took (and acknowledged) some; the rest waits here.
        assert!(held > 0 && held < written, "{held} of {written}");
        let mut read = 0u64;
        let mut buffer = vec![0; 256 * 1024];
        while read < written {
            read += peer.read(&mut buffer).unwrap() as u64;
        }
        eventually("the peer acknowledges everything", || {
            sockets.unacknowledged() == Some(0)
        });
        drop(registration);
        assert!(sockets.is_empty());
    }

    #[test]
    fn a_dropped_registration_takes_its_socket_out_of_the_sum() {
        let sockets = Sockets::new();
        let (mut first, _first_peer) = pair();
        let (mut second, _second_peer) = pair();
        let registrations = (sockets.register(&first), sockets.register(&second));
        fill(&mut first);
        fill(&mut second);
        let both = sockets.unacknowledged().unwrap();
        let first_alone = {
            let alone = Sockets::new();
            let _registration = alone.register(&first);
            alone.unacknowledged().unwrap()
        };
        assert!(
            first_alone > 0 && first_alone < both,
            "{first_alone} of {both}"
        );
        drop(registrations.1);
        assert_eq!(sockets.len(), 1);
        assert_eq!(sockets.unacknowledged(), Some(first_alone));
        drop(registrations.0);
        assert_eq!(sockets.unacknowledged(), Some(0));
    }
}
