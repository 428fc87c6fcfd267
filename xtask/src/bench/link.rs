//! A link emulator for the WAN profiles: a TCP proxy that gives each connection, in each
//! direction, the bandwidth and one-way delay of a path across the internet (toxiproxy's
//! bandwidth and latency toxics, in one place). `tc netem` is not available on these machines.
//!
//! ```text
//! client ──▶ [read ─▶ queue ─▶ serialise at `rate` ─▶ wait `delay` ─▶ write] ──▶ server
//!        ◀── [write ◀─ wait `delay` ◀─ serialise at `rate` ◀─ queue ◀─ read] ◀──
//! ```
//!
//! Each direction of each connection is a reader thread and a writer thread joined by a
//! bounded queue. The queue holds what the link carries at once (rate x delay) plus a router's
//! buffer, so a sender that outruns the link is held back by TCP's own flow control, as on a
//! real path. The schedule (when a chunk is delivered) is a pure function, [`Pacer`], tested
//! with a virtual clock.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// The most one read takes from a socket: small enough that pacing is smooth at 5 MB/s
/// (13 ms of link time), large enough that 16 connections at 50 MB/s cost few wake-ups.
const CHUNK: usize = 64 * 1024;
/// The buffer of the emulated router in front of the link, beyond what is in flight.
const ROUTER_BUFFER: u64 = 256 * 1024;

/// The link one connection gets, in each direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkProfile {
    /// A short name for tables: `5 MB/s, 50 ms RTT`.
    pub name: &'static str,
    /// Bandwidth of each connection in each direction, bytes per second.
    pub bytes_per_second: u64,
    /// Round-trip time: each direction delays by half of it.
    pub rtt: Duration,
}

impl LinkProfile {
    /// 5 MB/s per connection, 50 ms round trip: an upload across a continent.
    pub const SLOW: Self = Self {
        name: "WAN 5 MB/s per connection, 50 ms RTT",
        bytes_per_second: 5_000_000,
        rtt: Duration::from_millis(50),
    };
    /// 50 MB/s per connection, 20 ms round trip: a good link to a nearby region.
    pub const FAST: Self = Self {
        name: "WAN 50 MB/s per connection, 20 ms RTT",
        bytes_per_second: 50_000_000,
        rtt: Duration::from_millis(20),
    };

    fn one_way_delay(&self) -> Duration {
        self.rtt / 2
    }

    /// Chunks the queue of one direction holds: what is in flight plus the router's buffer.
    fn queue_chunks(&self) -> usize {
        let in_flight =
            u128::from(self.bytes_per_second) * self.one_way_delay().as_micros() / 1_000_000;
        let bytes = u64::try_from(in_flight).unwrap_or(u64::MAX) + ROUTER_BUFFER;
        usize::try_from(bytes.div_ceil(CHUNK as u64)).unwrap_or(usize::MAX)
    }
}

/// When each chunk of one direction reaches the far end: it waits for the link to be free,
/// takes `len / rate` to serialise, then `delay` to propagate. Times are offsets from any
/// fixed instant, so a test drives it with a virtual clock.
#[derive(Debug, Clone)]
pub struct Pacer {
    bytes_per_second: u64,
    delay: Duration,
    /// When the link finishes serialising what it was given so far.
    link_free_at: Duration,
}

impl Pacer {
    /// A link that is idle now.
    pub fn new(profile: &LinkProfile) -> Self {
        Self {
            bytes_per_second: profile.bytes_per_second.max(1),
            delay: profile.one_way_delay(),
            link_free_at: Duration::ZERO,
        }
    }

    /// Takes a chunk of `len` bytes that arrived at `arrived`; returns when it is delivered.
    pub fn deliver_at(&mut self, arrived: Duration, len: usize) -> Duration {
        let start = arrived.max(self.link_free_at);
        let nanos = (len as u128) * 1_000_000_000 / u128::from(self.bytes_per_second);
        let serialise = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
        self.link_free_at = start + serialise;
        self.link_free_at + self.delay
    }
}

/// The running emulator: accepts on 127.0.0.1 and forwards each connection to `upstream`
/// through its own link. Stops accepting when dropped; open connections end with their peers.
pub struct Link {
    addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl Link {
    /// Listens on a free loopback port in front of `upstream`.
    pub fn start(upstream: SocketAddr, profile: LinkProfile) -> io::Result<Self> {
        let listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))?;
        let addr = listener.local_addr()?;
        let stopping = Arc::new(AtomicBool::new(false));
        let stop = Arc::clone(&stopping);
        let accept = thread::Builder::new()
            .name("link-accept".to_owned())
            .spawn(move || {
                for client in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(client) = client else { continue };
                    // A connection the server refuses is dropped, as a real path would.
                    let Ok(server) = TcpStream::connect(upstream) else {
                        continue;
                    };
                    let _ = connect(client, server, profile);
                }
            })?;
        Ok(Self {
            addr,
            stopping,
            accept: Some(accept),
        })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
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

/// Joins a client and the server with one emulated link in each direction.
fn connect(client: TcpStream, server: TcpStream, profile: LinkProfile) -> io::Result<()> {
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    direction(client.try_clone()?, server.try_clone()?, profile)?;
    direction(server, client, profile)
}

/// What the reader hands the writer: a chunk with its arrival time, or the end of the stream.
enum Carried {
    Chunk(Vec<u8>, Instant),
    End,
}

/// One direction: a reader thread and a writer thread joined by a bounded queue.
fn direction(from: TcpStream, to: TcpStream, profile: LinkProfile) -> io::Result<()> {
    let (queue, carried) = mpsc::sync_channel(profile.queue_chunks());
    thread::Builder::new()
        .name("link-read".to_owned())
        .spawn(move || read_side(from, &queue))?;
    thread::Builder::new()
        .name("link-write".to_owned())
        .spawn(move || write_side(&to, &carried, &profile))?;
    Ok(())
}

fn read_side(mut from: TcpStream, queue: &SyncSender<Carried>) {
    loop {
        let mut chunk = vec![0; CHUNK];
        match from.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(len) => {
                chunk.truncate(len);
                if queue.send(Carried::Chunk(chunk, Instant::now())).is_err() {
                    // The writer is gone: the far end closed. Stop reading this side.
                    let _ = from.shutdown(Shutdown::Read);
                    return;
                }
            }
        }
    }
    let _ = queue.send(Carried::End);
}

fn write_side(to: &TcpStream, carried: &Receiver<Carried>, profile: &LinkProfile) {
    let epoch = Instant::now();
    let mut pacer = Pacer::new(profile);
    let mut to = to;
    while let Ok(Carried::Chunk(chunk, arrived)) = carried.recv() {
        let due = epoch + pacer.deliver_at(arrived.duration_since(epoch), chunk.len());
        let now = Instant::now();
        if due > now {
            thread::sleep(due - now);
        }
        if to.write_all(&chunk).is_err() {
            let _ = to.shutdown(Shutdown::Both);
            return;
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

    const PROFILE: LinkProfile = LinkProfile {
        name: "test",
        bytes_per_second: 1_000_000,
        rtt: Duration::from_millis(40),
    };

    #[test]
    fn a_lone_chunk_takes_its_serialisation_then_the_one_way_delay() {
        let mut pacer = Pacer::new(&PROFILE);
        // 1000 bytes at 1 MB/s: 1 ms on the wire, then 20 ms of propagation.
        assert_eq!(
            pacer.deliver_at(Duration::from_millis(5), 1000),
            Duration::from_millis(26)
        );
    }

    #[test]
    fn chunks_queue_behind_each_other_at_the_link_rate() {
        let mut pacer = Pacer::new(&PROFILE);
        let arrived = Duration::ZERO;
        let deliveries: Vec<_> = (0..4).map(|_| pacer.deliver_at(arrived, 100_000)).collect();
        // 100 kB is 100 ms at 1 MB/s: a burst leaves one chunk every 100 ms.
        let expected: Vec<_> = [120, 220, 320, 420]
            .into_iter()
            .map(Duration::from_millis)
            .collect();
        assert_eq!(deliveries, expected);
        // After the link went idle, a new chunk pays only its own time.
        assert_eq!(
            pacer.deliver_at(Duration::from_secs(10), 1000),
            Duration::from_secs(10) + Duration::from_millis(21)
        );
    }

    #[test]
    fn the_queue_holds_what_is_in_flight_plus_a_router_buffer() {
        // 50 MB/s x 10 ms = 500 kB in flight, plus 256 KiB: 12 chunks of 64 KiB.
        assert_eq!(LinkProfile::FAST.queue_chunks(), 12);
        // 5 MB/s x 25 ms = 125 kB, plus 256 KiB: 6 chunks.
        assert_eq!(LinkProfile::SLOW.queue_chunks(), 6);
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
            bytes_per_second: 200_000_000,
            rtt: Duration::from_millis(2),
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
    }
}
