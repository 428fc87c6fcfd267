//! A link emulator for the WAN profiles: a TCP proxy that gives the connections, in each
//! direction, the path of [`uploads_sim::link`]: a per-connection cap, a shared bottleneck
//! with a router buffer, or both, and a one-way delay (toxiproxy's bandwidth and latency
//! toxics, plus a bottleneck they lack). `tc netem` is not available on these machines.
//!
//! ```text
//! client ──▶ [read ─▶ wait for room in the model ─▶ wait until delivered ─▶ write] ──▶ server
//!        ◀── [write ◀─ wait until delivered ◀─ wait for room in the model ◀─ read] ◀──
//! ```
//!
//! Each direction of each connection is a reader thread and a writer thread. The reader takes
//! a chunk from its socket, waits until the direction's [`LinkModel`] (one per direction, for
//! all connections, behind a mutex) has room for it, and hands it over; the writer writes it
//! when the model says it arrives. A sender that outruns the link is held back by TCP's own
//! flow control, as on a real path: the proxy's client-side sockets have a small receive
//! buffer, so the kernel does not acknowledge megabytes the link has not carried yet (a client
//! that counts its socket's unacknowledged bytes sees what truly left).

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use socket2::{Domain, Socket, Type};

pub use uploads_sim::link::{LinkModel, LinkProfile};

/// The most one read takes from a socket: small enough that pacing is smooth at 5 MB/s
/// (13 ms of link time), large enough that 16 connections at 50 MB/s cost few wake-ups.
const CHUNK: usize = 64 * 1024;
/// The receive buffer of the proxy's client-side sockets (the kernel doubles it): what the
/// proxy's kernel acknowledges beyond what the emulated link holds. A default buffer (up to
/// megabytes with autotuning) would make bytes look delivered that have not crossed the link.
const CLIENT_RCVBUF: usize = 64 * 1024;
/// The buffer of the emulated router in front of a per-connection link, beyond what is in
/// flight (today's WAN profiles).
const ROUTER_BUFFER: u64 = 256 * 1024;
/// The buffer of a router in front of a shared bottleneck: a home router's or a cloud
/// gateway's, a few tens of milliseconds at their rates.
const SHARED_ROUTER_BUFFER: u64 = 1024 * 1024;

/// 5 MB/s per connection, 50 ms round trip: an upload across a continent.
pub const WAN_SLOW: LinkProfile = LinkProfile {
    name: "WAN 5 MB/s per connection, 50 ms RTT",
    per_connection: Some(5_000_000),
    shared: None,
    rtt: Duration::from_millis(50),
    router_buffer: ROUTER_BUFFER,
};
/// 50 MB/s per connection, 20 ms round trip: a good link to a nearby region.
pub const WAN_FAST: LinkProfile = LinkProfile {
    name: "WAN 50 MB/s per connection, 20 ms RTT",
    per_connection: Some(50_000_000),
    shared: None,
    rtt: Duration::from_millis(20),
    router_buffer: ROUTER_BUFFER,
};
/// 20 MB/s shared by all connections, 100 ms round trip: a home or office uplink, where more
/// connections add no capacity.
pub const UPLINK: LinkProfile = LinkProfile {
    name: "Uplink 20 MB/s shared, 100 ms RTT",
    per_connection: None,
    shared: Some(20_000_000),
    rtt: Duration::from_millis(100),
    router_buffer: SHARED_ROUTER_BUFFER,
};
/// 100 MB/s shared with a cap of 10 MB/s per connection, 30 ms round trip: a cloud path with
/// per-flow caps, where connections help up to ten.
pub const CLOUD: LinkProfile = LinkProfile {
    name: "Cloud 100 MB/s shared, 10 MB/s per connection, 30 ms RTT",
    per_connection: Some(10_000_000),
    shared: Some(100_000_000),
    rtt: Duration::from_millis(30),
    router_buffer: SHARED_ROUTER_BUFFER,
};

/// The bytes the emulator wrote to the server (the client-to-server direction), with when:
/// what had truly crossed the link at each moment.
#[derive(Debug, Default)]
pub struct Deliveries {
    /// (unix ms, bytes delivered so far), one entry per millisecond that saw a write.
    timeline: Mutex<Vec<(u64, u64)>>,
}

impl Deliveries {
    fn lock(&self) -> MutexGuard<'_, Vec<(u64, u64)>> {
        self.timeline.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Forgets what was delivered so far: the start of a run.
    pub fn reset(&self) {
        self.lock().clear();
    }

    /// What was delivered since the last reset: (unix ms, bytes so far), in time order.
    pub fn timeline(&self) -> Vec<(u64, u64)> {
        self.lock().clone()
    }

    fn record(&self, len: usize) {
        let now = unix_ms();
        let mut timeline = self.lock();
        let total = timeline.last().map_or(0, |(_, total)| *total) + len as u64;
        match timeline.last_mut() {
            Some((at, last)) if *at == now => *last = total,
            _ => timeline.push((now, total)),
        }
    }
}

/// Milliseconds since the Unix epoch: the clock the clients' progress lines use.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

/// One direction of the path, shared by every connection: the model on the emulator's clock.
struct Direction {
    model: Mutex<LinkModel>,
    epoch: Instant,
}

impl Direction {
    fn new(profile: LinkProfile, epoch: Instant) -> Self {
        Self {
            model: Mutex::new(LinkModel::new(profile)),
            epoch,
        }
    }

    fn model(&self) -> MutexGuard<'_, LinkModel> {
        self.model.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until the link has room for `len` bytes of `connection`, hands them over, and
    /// returns when they arrive at the far end.
    fn hand_over(&self, connection: usize, len: usize) -> Instant {
        loop {
            let wait = {
                let mut model = self.model();
                // Read under the lock, so the model sees its calls in time order.
                let now = self.epoch.elapsed();
                let at = model.accepts_at(connection, now, len as u64);
                if at <= now {
                    return self.epoch + model.deliver_at(connection, now, len as u64);
                }
                at.saturating_sub(now)
            };
            thread::sleep(wait);
        }
    }
}

/// The running emulator: accepts on 127.0.0.1 and forwards each connection to `upstream`
/// through the path. Stops accepting when dropped; open connections end with their peers.
pub struct Link {
    addr: SocketAddr,
    deliveries: Arc<Deliveries>,
    stopping: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl Link {
    /// Listens on a free loopback port in front of `upstream`.
    pub fn start(upstream: SocketAddr, profile: LinkProfile) -> io::Result<Self> {
        let listener = small_buffer_listener()?;
        let addr = listener.local_addr()?;
        let stopping = Arc::new(AtomicBool::new(false));
        let stop = Arc::clone(&stopping);
        let deliveries = Arc::new(Deliveries::default());
        let delivered = Arc::clone(&deliveries);
        let epoch = Instant::now();
        let up = Arc::new(Direction::new(profile, epoch));
        let down = Arc::new(Direction::new(profile, epoch));
        let accept = thread::Builder::new()
            .name("link-accept".to_owned())
            .spawn(move || {
                let ids = AtomicUsize::new(0);
                for client in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(client) = client else { continue };
                    // A connection the server refuses is dropped, as a real path would.
                    let Ok(server) = TcpStream::connect(upstream) else {
                        continue;
                    };
                    let id = ids.fetch_add(1, Ordering::Relaxed);
                    let _ = connect(client, server, id, [&up, &down], &delivered);
                }
            })?;
        Ok(Self {
            addr,
            deliveries,
            stopping,
            accept: Some(accept),
        })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What the emulator delivered to the server.
    pub fn deliveries(&self) -> &Deliveries {
        &self.deliveries
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        // Wakes the accept loop so that it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

/// A loopback listener whose accepted sockets have a receive buffer of [`CLIENT_RCVBUF`]: set
/// before `listen`, since the window a connection advertises is fixed at its handshake.
fn small_buffer_listener() -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    socket.set_recv_buffer_size(CLIENT_RCVBUF)?;
    socket.bind(&SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 0)).into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// Joins a client and the server with the path in each direction; `directions` is
/// [client to server, server to client].
fn connect(
    client: TcpStream,
    server: TcpStream,
    id: usize,
    [up, down]: [&Arc<Direction>; 2],
    delivered: &Arc<Deliveries>,
) -> io::Result<()> {
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let (a, b) = (client.try_clone()?, server.try_clone()?);
    direction(a, b, id, Arc::clone(up), Some(Arc::clone(delivered)))?;
    direction(server, client, id, Arc::clone(down), None)
}

/// What the reader hands the writer: a chunk with its delivery time, or the end of the stream.
enum Carried {
    Chunk(Vec<u8>, Instant),
    End,
}

/// One direction of one connection: a reader thread and a writer thread. The model bounds
/// what the channel between them holds.
fn direction(
    from: TcpStream,
    to: TcpStream,
    id: usize,
    path: Arc<Direction>,
    delivered: Option<Arc<Deliveries>>,
) -> io::Result<()> {
    let (queue, carried) = mpsc::channel();
    let reader_path = Arc::clone(&path);
    thread::Builder::new()
        .name("link-read".to_owned())
        .spawn(move || read_side(from, id, &reader_path, &queue))?;
    thread::Builder::new()
        .name("link-write".to_owned())
        .spawn(move || {
            write_side(&to, &carried, delivered.as_deref());
            path.model().close(id);
        })?;
    Ok(())
}

fn read_side(mut from: TcpStream, id: usize, path: &Direction, queue: &Sender<Carried>) {
    loop {
        let mut chunk = vec![0; CHUNK];
        match from.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(len) => {
                chunk.truncate(len);
                let due = path.hand_over(id, len);
                if queue.send(Carried::Chunk(chunk, due)).is_err() {
                    // The writer is gone: the far end closed. Stop reading this side.
                    let _ = from.shutdown(Shutdown::Read);
                    return;
                }
            }
        }
    }
    let _ = queue.send(Carried::End);
}

fn write_side(to: &TcpStream, carried: &Receiver<Carried>, delivered: Option<&Deliveries>) {
    let mut to = to;
    while let Ok(Carried::Chunk(chunk, due)) = carried.recv() {
        let now = Instant::now();
        if due > now {
            thread::sleep(due - now);
        }
        if to.write_all(&chunk).is_err() {
            let _ = to.shutdown(Shutdown::Both);
            return;
        }
        if let Some(delivered) = delivered {
            delivered.record(chunk.len());
        }
    }
    // The sender finished (or vanished): pass the half-close on.
    let _ = to.shutdown(Shutdown::Write);
}

/// CPU time (user + system) this process has used so far: the emulator runs in the bench's
/// own process, which does nothing else while a client uploads through it.
pub fn own_cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    crate::bench::report::cpu_time_from_stat(&stat)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_profiles_carry_what_the_issue_names() {
        assert_eq!(WAN_SLOW.rate_for(8), Some(40_000_000));
        assert_eq!(UPLINK.rate_for(32), Some(20_000_000));
        assert_eq!(CLOUD.rate_for(4), Some(40_000_000));
        assert_eq!(CLOUD.rate_for(16), Some(100_000_000));
        // 5 MB/s x 25 ms = 125 kB in flight, plus 256 KiB: what one connection may queue.
        assert_eq!(LinkModel::new(WAN_SLOW).queue_limit(), 125_000 + 256 * 1024);
    }

    #[test]
    fn deliveries_add_up_per_millisecond_and_reset() {
        let deliveries = Deliveries::default();
        deliveries.record(100);
        deliveries.record(50);
        let timeline = deliveries.timeline();
        assert_eq!(timeline.last().map(|(_, total)| *total), Some(150));
        assert!(
            timeline
                .windows(2)
                .all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1)
        );
        deliveries.reset();
        assert!(deliveries.timeline().is_empty());
    }

    #[test]
    fn the_client_side_receive_buffer_is_small() {
        let listener = small_buffer_listener().unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        let size = socket2::SockRef::from(&accepted)
            .recv_buffer_size()
            .unwrap();
        // Linux doubles what was asked for its own bookkeeping.
        assert!(size <= 2 * CLIENT_RCVBUF, "{size}");
        drop(client);
    }

    #[test]
    fn bytes_cross_both_ways_intact_in_order_and_half_closes_pass() {
        // An echo server that answers everything it read, once the client half-closes.
        let echo = TcpListener::bind("127.0.0.1:0").unwrap();
        let upstream = echo.local_addr().unwrap();
        let server = thread::spawn(move || {
            let (mut stream, _) = echo.accept().unwrap();
            let mut received = Vec::new();
            stream.read_to_end(&mut received).unwrap();
            stream.write_all(&received).unwrap();
        });
        let fast = LinkProfile {
            name: "fast test",
            per_connection: Some(200_000_000),
            shared: Some(400_000_000),
            rtt: Duration::from_millis(2),
            router_buffer: ROUTER_BUFFER,
        };
        let link = Link::start(upstream, fast).unwrap();
        let mut client = TcpStream::connect(link.addr()).unwrap();
        let sent: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let writer = {
            let mut client = client.try_clone().unwrap();
            let sent = sent.clone();
            thread::spawn(move || {
                client.write_all(&sent).unwrap();
                client.shutdown(Shutdown::Write).unwrap();
            })
        };
        let mut echoed = Vec::new();
        client.read_to_end(&mut echoed).unwrap();
        writer.join().unwrap();
        server.join().unwrap();
        assert_eq!(echoed.len(), sent.len());
        assert!(echoed == sent, "the bytes came back changed");
        let delivered = link.deliveries().timeline();
        assert_eq!(
            delivered.last().map(|(_, total)| *total),
            Some(sent.len() as u64)
        );
    }
}
