//! A TCP proxy on 127.0.0.1 in front of a server that stops reading what clients send once
//! it has read a given number of bytes, until released: a link that stalls. Its sockets
//! take little into their receive buffers, so a held client's bytes wait in the client's
//! own socket, unacknowledged. Blocking threads, so both clients' tests use it.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The receive buffer asked for on the proxy's client-side sockets (the kernel doubles it).
const RECEIVE_BUFFER: usize = 64 * 1024;

/// The running proxy; its threads end with the test process.
pub struct HeldProxy {
    addr: SocketAddr,
    state: Arc<State>,
}

struct State {
    upstream: SocketAddr,
    hold_after: u64,
    released: AtomicBool,
    /// Bytes read from clients, over every connection.
    read: AtomicU64,
    /// The client-side sockets, to ask what their receive buffers hold.
    clients: Mutex<Vec<TcpStream>>,
}

impl HeldProxy {
    /// Listens in front of `upstream`; stops reading from clients once it has read
    /// `hold_after` bytes from them, over all connections, until [`HeldProxy::release`].
    pub fn start(upstream: SocketAddr, hold_after: u64) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        // Accepted sockets take the listener's buffer size, and the window it allows.
        rustix::net::sockopt::set_socket_recv_buffer_size(&listener, RECEIVE_BUFFER).unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            upstream,
            hold_after,
            released: AtomicBool::new(false),
            read: AtomicU64::new(0),
            clients: Mutex::new(Vec::new()),
        });
        let accepting = Arc::clone(&state);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let state = Arc::clone(&accepting);
                std::thread::spawn(move || state.forward(client));
            }
        });
        Self { addr, state }
    }

    /// The base URL clients use.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Every byte the server side of the link has taken from clients: what the proxy read,
    /// and what its sockets hold received but unread (acknowledged to the client).
    pub fn taken(&self) -> u64 {
        let clients = self.state.clients.lock().unwrap();
        let unread: u64 = clients
            .iter()
            .map(|client| rustix::io::ioctl_fionread(client).unwrap_or(0))
            .sum();
        self.state.read.load(Ordering::SeqCst) + unread
    }

    /// Bytes read from clients so far.
    pub fn read(&self) -> u64 {
        self.state.read.load(Ordering::SeqCst)
    }

    /// Reads again, and on.
    pub fn release(&self) {
        self.state.released.store(true, Ordering::SeqCst);
    }
}

impl State {
    fn forward(self: Arc<Self>, client: TcpStream) {
        let Ok(server) = TcpStream::connect(self.upstream) else {
            return;
        };
        self.clients
            .lock()
            .unwrap()
            .push(client.try_clone().unwrap());
        let (mut from_server, mut to_client) =
            (server.try_clone().unwrap(), client.try_clone().unwrap());
        std::thread::spawn(move || {
            let _ = io::copy(&mut from_server, &mut to_client);
            let _ = to_client.shutdown(Shutdown::Write);
        });
        let (mut client, mut server) = (client, server);
        let mut buffer = vec![0; 64 * 1024];
        loop {
            let room = self.room();
            if room == 0 {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            let wanted = buffer
                .len()
                .min(usize::try_from(room).unwrap_or(usize::MAX));
            match client.read(&mut buffer[..wanted]) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    self.read.fetch_add(n as u64, Ordering::SeqCst);
                    if server.write_all(&buffer[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = server.shutdown(Shutdown::Write);
    }

    /// How much more may be read now.
    fn room(&self) -> u64 {
        if self.released.load(Ordering::SeqCst) {
            u64::MAX
        } else {
            self.hold_after
                .saturating_sub(self.read.load(Ordering::SeqCst))
        }
    }
}
