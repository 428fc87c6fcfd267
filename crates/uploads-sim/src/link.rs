//! A pure model of one direction of a network path, on a virtual clock: when each chunk a
//! sender hands the link reaches the far end, and when a sender may hand it the next one. The
//! bench's link emulator (`xtask/src/bench/link.rs`) runs it on the wall clock between real
//! sockets; a discrete-event simulation runs it on its own clock. Times are [`Duration`]s from
//! any fixed epoch the caller chooses.
//!
//! ```text
//!  connection 0 ─┐                 ┌─▶ per-connection cap 0 ─┐
//!  connection 1 ─┼─▶ router buffer ┼─▶ per-connection cap 1 ─┼─▶ one-way delay ─▶ far end
//!  connection 2 ─┘   + shared rate └─▶ per-connection cap 2 ─┘
//!                   (one FIFO)          (one serialiser each)
//! ```
//!
//! A path has a per-connection cap (each connection serialised at its own rate, today's WAN
//! profiles), a shared bottleneck (one rate for all connections, fed by one FIFO router
//! buffer, so more connections do not add capacity), or both. The shared stage comes first
//! in the model: chunks reach it in the order they are handed over, so it is an exact FIFO on
//! any clock; the per-connection serialiser after it spaces each connection's chunks. Two
//! serialisers in tandem carry the slower of the two rates either way round, so the order
//! changes no throughput, only where a chunk waits.
//!
//! Nothing is dropped: a sender that outruns the link is held back instead (backpressure, as
//! TCP's flow control holds a real sender). A connection may have at most
//! [`LinkModel::queue_limit`] bytes in the link (handed over, not yet delivered: what its
//! window would cover), and the shared router takes a chunk only while what waits ahead of it
//! is within [`LinkProfile::router_buffer`]. [`LinkModel::accepts_at`] says when both hold.
//!
//! The model does not choose between connections waiting for room at the same instant: the
//! caller MUST offer room to them in a fair order (e.g. the one waiting longest first), or one
//! connection may take every slot of the shared router.
//!
//! ```
//! use std::time::Duration;
//! use uploads_sim::link::{LinkModel, LinkProfile};
//!
//! let profile = LinkProfile {
//!     name: "1 MB/s shared, 40 ms RTT",
//!     per_connection: None,
//!     shared: Some(1_000_000),
//!     rtt: Duration::from_millis(40),
//!     router_buffer: 64 * 1024,
//! };
//! let mut link = LinkModel::new(profile);
//! // 1000 bytes at 1 MB/s: 1 ms on the wire, then 20 ms across.
//! assert_eq!(link.deliver_at(0, Duration::ZERO, 1000), Duration::from_millis(21));
//! // The router is nearly empty: connection 1 may hand over a chunk at once.
//! assert_eq!(link.accepts_at(1, Duration::ZERO, 1000), Duration::ZERO);
//! ```

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

/// A path's shape, the same in each direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LinkProfile {
    /// A short name for tables: `5 MB/s per connection, 50 ms RTT`.
    pub name: &'static str,
    /// Each connection's own rate, bytes per second; `None`: no per-connection cap.
    pub per_connection: Option<u64>,
    /// The rate all connections share, bytes per second; `None`: no shared bottleneck.
    pub shared: Option<u64>,
    /// Round-trip time: each direction delays by half of it.
    pub rtt: Duration,
    /// Bytes a router holds beyond what is in flight: the shared FIFO's size, and the room
    /// each connection has beyond its rate x one-way delay.
    pub router_buffer: u64,
}

impl LinkProfile {
    /// Half of the round trip.
    pub fn one_way_delay(&self) -> Duration {
        self.rtt / 2
    }

    /// The most one connection alone can carry, bytes per second: the slower of its cap and
    /// the shared rate; `None` when the path has neither (an unlimited link).
    pub fn connection_rate(&self) -> Option<u64> {
        match (self.per_connection, self.shared) {
            (Some(own), Some(shared)) => Some(own.min(shared)),
            (own, shared) => own.or(shared),
        }
    }

    /// The most `connections` connections together can carry, bytes per second; `None` when
    /// unlimited.
    pub fn rate_for(&self, connections: u64) -> Option<u64> {
        let caps = self
            .per_connection
            .map(|own| own.saturating_mul(connections.max(1)));
        match (caps, self.shared) {
            (Some(caps), Some(shared)) => Some(caps.min(shared)),
            (caps, shared) => caps.or(shared),
        }
    }
}

/// The time `len` bytes take at `bytes_per_second` (rounded up to the nanosecond, so a
/// schedule never delivers early).
pub fn serialisation(len: u64, bytes_per_second: u64) -> Duration {
    let nanos = (u128::from(len) * 1_000_000_000).div_ceil(u128::from(bytes_per_second.max(1)));
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// Bytes `rate` carries in `time` (rounded down).
fn bytes_in(time: Duration, bytes_per_second: u64) -> u64 {
    let bytes = time.as_nanos() * u128::from(bytes_per_second) / 1_000_000_000;
    u64::try_from(bytes).unwrap_or(u64::MAX)
}

/// One connection's state: when its serialiser is free and what it has in the link.
#[derive(Debug, Clone, Default)]
struct Connection {
    /// When its per-connection serialiser finishes what it was given so far.
    free_at: Duration,
    /// Chunks handed over and not yet known to be delivered: (delivered at, bytes), in
    /// delivery order (a connection's chunks never overtake each other).
    in_link: VecDeque<(Duration, u64)>,
}

impl Connection {
    /// Bytes still in the link at `now`.
    fn queued(&self, now: Duration) -> u64 {
        self.in_link
            .iter()
            .filter(|(delivered, _)| *delivered > now)
            .map(|(_, len)| len)
            .sum()
    }

    /// The earliest time from `now` when `len` more bytes fit within `limit` (a chunk larger
    /// than the limit fits in an empty link).
    fn fits_at(&self, now: Duration, len: u64, limit: u64) -> Duration {
        let mut queued = self.queued(now);
        let mut at = now;
        for (delivered, bytes) in self.in_link.iter().filter(|(d, _)| *d > now) {
            if queued == 0 || queued.saturating_add(len) <= limit {
                break;
            }
            queued -= bytes;
            at = *delivered;
        }
        at
    }
}

/// The schedule of one direction of a path for any number of connections, identified by the
/// caller's numbers. Pure: every answer follows from the calls so far and the times given.
#[derive(Debug, Clone)]
pub struct LinkModel {
    profile: LinkProfile,
    /// When the shared link finishes serialising what it was given so far.
    shared_free_at: Duration,
    connections: BTreeMap<usize, Connection>,
}

impl LinkModel {
    /// An idle path.
    pub fn new(profile: LinkProfile) -> Self {
        Self {
            profile,
            shared_free_at: Duration::ZERO,
            connections: BTreeMap::new(),
        }
    }

    /// The path's shape.
    pub fn profile(&self) -> &LinkProfile {
        &self.profile
    }

    /// The most bytes one connection may have in the link (handed over, not yet delivered):
    /// what its rate keeps in flight over the one-way delay, plus the router's buffer. With
    /// no rate at all, the router's buffer alone.
    pub fn queue_limit(&self) -> u64 {
        let in_flight = self
            .profile
            .connection_rate()
            .map_or(0, |rate| bytes_in(self.profile.one_way_delay(), rate));
        in_flight.saturating_add(self.profile.router_buffer)
    }

    /// Bytes `connection` has in the link at `now`: handed over and not yet delivered.
    pub fn queued(&self, connection: usize, now: Duration) -> u64 {
        self.connections
            .get(&connection)
            .map_or(0, |state| state.queued(now))
    }

    /// Bytes waiting in the shared router at `now`, ahead of a chunk handed over then
    /// (0 without a shared bottleneck).
    pub fn router_backlog(&self, now: Duration) -> u64 {
        self.profile.shared.map_or(0, |rate| {
            bytes_in(self.shared_free_at.saturating_sub(now), rate)
        })
    }

    /// The earliest time, `now` or later, when `connection` may hand over `len` bytes: its
    /// own bytes in the link stay within [`queue_limit`](Self::queue_limit) and the shared
    /// router's backlog is within its buffer. A sender SHOULD wait until then; the answer is
    /// only valid until the next [`deliver_at`](Self::deliver_at) (another connection may take
    /// the room first).
    pub fn accepts_at(&self, connection: usize, now: Duration, len: u64) -> Duration {
        let own = self
            .connections
            .get(&connection)
            .map_or(now, |state| state.fits_at(now, len, self.queue_limit()));
        let router = self.profile.shared.map_or(now, |rate| {
            let wait_allowed = serialisation(self.profile.router_buffer, rate);
            self.shared_free_at.saturating_sub(wait_allowed)
        });
        own.max(router).max(now)
    }

    /// Takes `len` bytes of `connection` handed over at `arrived` and returns when they reach
    /// the far end. Calls MUST come in order of `arrived` (the router is a FIFO in call
    /// order). A chunk handed over before [`accepts_at`](Self::accepts_at) is still carried;
    /// it only overfills the buffers.
    pub fn deliver_at(&mut self, connection: usize, arrived: Duration, len: u64) -> Duration {
        let through_router = match self.profile.shared {
            Some(rate) => {
                self.shared_free_at = arrived.max(self.shared_free_at) + serialisation(len, rate);
                self.shared_free_at
            }
            None => arrived,
        };
        let state = self.connections.entry(connection).or_default();
        let through_cap = match self.profile.per_connection {
            Some(rate) => {
                state.free_at = through_router.max(state.free_at) + serialisation(len, rate);
                state.free_at
            }
            None => through_router,
        };
        let delivered = through_cap + self.profile.one_way_delay();
        // What was delivered by the time this chunk arrived is forgotten: the queue stays
        // as long as the window, however long the connection lives.
        while state.in_link.front().is_some_and(|(at, _)| *at <= arrived) {
            state.in_link.pop_front();
        }
        state.in_link.push_back((delivered, len));
        delivered
    }

    /// Forgets a connection that closed.
    pub fn close(&mut self, connection: usize) {
        self.connections.remove(&connection);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHUNK: u64 = 64 * 1024;

    fn per_connection(rate: u64, rtt_ms: u64) -> LinkProfile {
        LinkProfile {
            name: "per-connection",
            per_connection: Some(rate),
            shared: None,
            rtt: Duration::from_millis(rtt_ms),
            router_buffer: 256 * 1024,
        }
    }

    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    /// Runs `connections` senders that always have data, each handing over a chunk as soon
    /// as the link accepts it; room goes to the sender waiting longest (then the lowest
    /// number). Returns the bytes each connection had delivered by `until`.
    fn saturate(link: &mut LinkModel, connections: usize, until: Duration) -> Vec<u64> {
        let mut waiting_since = vec![Duration::ZERO; connections];
        let mut delivered = vec![0; connections];
        loop {
            let (at, _, connection) = (0..connections)
                .map(|c| {
                    (
                        link.accepts_at(c, waiting_since[c], CHUNK),
                        waiting_since[c],
                        c,
                    )
                })
                .min()
                .expect("at least one connection");
            if at >= until {
                return delivered;
            }
            if link.deliver_at(connection, at, CHUNK) <= until {
                delivered[connection] += CHUNK;
            }
            waiting_since[connection] = at;
        }
    }

    /// Bytes per second from bytes delivered over `seconds`.
    fn rate(bytes: u64, seconds: u64) -> u64 {
        bytes / seconds
    }

    #[test]
    fn a_lone_chunk_takes_its_serialisation_then_the_one_way_delay() {
        let mut link = LinkModel::new(per_connection(1_000_000, 40));
        // 1000 bytes at 1 MB/s: 1 ms on the wire, then 20 ms of propagation.
        assert_eq!(link.deliver_at(0, ms(5), 1000), ms(26));
    }

    #[test]
    fn a_connections_chunks_queue_behind_each_other_at_its_rate() {
        let mut link = LinkModel::new(per_connection(1_000_000, 40));
        let deliveries: Vec<_> = (0..4)
            .map(|_| link.deliver_at(0, Duration::ZERO, 100_000))
            .collect();
        // 100 kB is 100 ms at 1 MB/s: a burst leaves one chunk every 100 ms.
        assert_eq!(deliveries, [ms(120), ms(220), ms(320), ms(420)]);
        // Another connection has its own rate: it does not wait behind the first.
        assert_eq!(link.deliver_at(1, Duration::ZERO, 100_000), ms(120));
        // After the link went idle, a new chunk pays only its own time.
        assert_eq!(
            link.deliver_at(0, Duration::from_secs(10), 1000),
            ms(10_021)
        );
    }

    #[test]
    fn a_connection_may_have_its_flight_plus_the_router_buffer_in_the_link() {
        // 5 MB/s x 25 ms = 125 kB in flight, plus 256 KiB.
        let mut link = LinkModel::new(per_connection(5_000_000, 50));
        assert_eq!(link.queue_limit(), 125_000 + 256 * 1024);
        let mut handed = 0;
        while link.accepts_at(0, Duration::ZERO, CHUNK) == Duration::ZERO {
            link.deliver_at(0, Duration::ZERO, CHUNK);
            handed += CHUNK;
        }
        assert_eq!(handed, 5 * CHUNK, "five chunks fit in 125 kB + 256 KiB");
        assert_eq!(link.queued(0, Duration::ZERO), 5 * CHUNK);
        // The next fits when the first is delivered: 64 KiB at 5 MB/s, then 25 ms.
        let first = serialisation(CHUNK, 5_000_000) + ms(25);
        assert_eq!(link.accepts_at(0, Duration::ZERO, CHUNK), first);
        assert_eq!(link.queued(0, first), 4 * CHUNK);
        // Another connection is not held back by the first one's queue.
        assert_eq!(link.accepts_at(1, Duration::ZERO, CHUNK), Duration::ZERO);
    }

    #[test]
    fn per_connection_caps_add_up_and_a_saturated_connection_keeps_its_rate() {
        let mut link = LinkModel::new(per_connection(5_000_000, 50));
        let delivered = saturate(&mut link, 4, Duration::from_secs(10));
        for bytes in delivered {
            // 10 s at 5 MB/s, less the first 25 ms of propagation and one chunk of rounding.
            assert!(
                rate(bytes, 10) > 4_980_000 && bytes <= 50_000_000,
                "{bytes}"
            );
        }
    }

    #[test]
    fn two_connections_on_a_shared_link_each_get_half() {
        let mut link = LinkModel::new(LinkProfile {
            name: "shared 1 MB/s",
            per_connection: None,
            shared: Some(1_000_000),
            rtt: Duration::from_millis(100),
            router_buffer: 256 * 1024,
        });
        let delivered = saturate(&mut link, 2, Duration::from_secs(20));
        let total: u64 = delivered.iter().sum();
        assert!(rate(total, 20) > 990_000 && total <= 20_000_000, "{total}");
        // Halves, but for the head start of the first burst (connection 0 fills the empty
        // router first): within two chunks of each other.
        assert!(
            delivered[0].abs_diff(delivered[1]) <= 2 * CHUNK,
            "{delivered:?}"
        );
    }

    #[test]
    fn more_connections_on_a_shared_link_add_no_capacity() {
        let profile = LinkProfile {
            name: "shared 20 MB/s",
            per_connection: None,
            shared: Some(20_000_000),
            rtt: Duration::from_millis(100),
            router_buffer: 1024 * 1024,
        };
        let one = saturate(&mut LinkModel::new(profile), 1, Duration::from_secs(5));
        let eight = saturate(&mut LinkModel::new(profile), 8, Duration::from_secs(5));
        let eight_total: u64 = eight.iter().sum();
        // One connection alone fills the link (its window covers the flight) ...
        assert!(rate(one[0], 5) > 19_500_000, "{one:?}");
        // ... and eight share the same 20 MB/s.
        assert!(rate(eight_total, 5) > 19_500_000 && eight_total <= 100_000_000);
        // The router never holds more than its buffer and a chunk.
        let mut link = LinkModel::new(profile);
        for c in 0..8 {
            for _ in 0..100 {
                let at = link.accepts_at(c, Duration::ZERO, CHUNK);
                if at > Duration::ZERO {
                    break;
                }
                link.deliver_at(c, at, CHUNK);
            }
        }
        assert!(link.router_backlog(Duration::ZERO) <= 1024 * 1024 + CHUNK);
    }

    #[test]
    fn sixteen_capped_connections_on_a_shared_link_deliver_the_shared_rate() {
        let cloud = LinkProfile {
            name: "cloud",
            per_connection: Some(10_000_000),
            shared: Some(100_000_000),
            rtt: Duration::from_millis(30),
            router_buffer: 1024 * 1024,
        };
        let sixteen = saturate(&mut LinkModel::new(cloud), 16, Duration::from_secs(2));
        let total: u64 = sixteen.iter().sum();
        assert!(
            rate(total, 2) > 98_000_000 && total <= 200_000_000,
            "{total}"
        );
        // Four connections are held by their caps: 40 MB/s.
        let four = saturate(&mut LinkModel::new(cloud), 4, Duration::from_secs(2));
        let total: u64 = four.iter().sum();
        assert!(
            rate(total, 2) > 39_000_000 && total <= 80_000_000,
            "{total}"
        );
    }

    #[test]
    fn the_profile_says_what_connections_can_carry() {
        let cloud = LinkProfile {
            name: "cloud",
            per_connection: Some(10_000_000),
            shared: Some(100_000_000),
            rtt: Duration::from_millis(30),
            router_buffer: 0,
        };
        assert_eq!(cloud.connection_rate(), Some(10_000_000));
        assert_eq!(cloud.rate_for(4), Some(40_000_000));
        assert_eq!(cloud.rate_for(32), Some(100_000_000));
        let uplink = LinkProfile {
            per_connection: None,
            shared: Some(20_000_000),
            ..cloud
        };
        assert_eq!(uplink.rate_for(8), Some(20_000_000));
        // 20 MB/s x 15 ms in flight.
        assert_eq!(LinkModel::new(uplink).queue_limit(), 300_000);
    }

    #[test]
    fn a_closed_connection_is_forgotten() {
        let mut link = LinkModel::new(per_connection(1_000_000, 40));
        link.deliver_at(3, Duration::ZERO, 1000);
        link.close(3);
        assert_eq!(link.queued(3, Duration::ZERO), 0);
        // Its number starts afresh: no wait behind the old serialiser.
        assert_eq!(link.deliver_at(3, Duration::ZERO, 1000), ms(21));
    }
}
