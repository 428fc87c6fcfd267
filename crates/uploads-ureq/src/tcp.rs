//! The TCP step of the agent's connector chain ([`crate::tls`]): ureq's own TCP connector
//! keeps its socket to itself, so this one connects, registers the socket in the client's
//! [`Sockets`] for as long as the connection lives, and carries its bytes. An upload then
//! reports what its sockets hold unacknowledged and progress counts what has left the
//! machine.
//!
//! It does what ureq's `TcpConnector` does, in fewer lines: each resolved address in turn
//! (the next after a refusal, an unreachable address or a timeout with time left), half the
//! time left for each but the last; `TCP_NODELAY` as configured; the agent's shutdown
//! handle; read and write timeouts set only when they change.

use std::fmt;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use uploads_client_io::unacked::{Registration, Sockets};
use ureq::Timeout;
use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, Either, LazyBuffers, NextTimeout, ShutdownHandle,
    Transport,
};

/// Opens plain TCP connections whose sockets join a [`Sockets`] registry while they live.
#[derive(Debug)]
pub(crate) struct TrackedTcp {
    sockets: Sockets,
}

impl TrackedTcp {
    /// Connects over TCP, registering each socket in `sockets`.
    pub(crate) fn new(sockets: Sockets) -> Self {
        Self { sockets }
    }
}

impl<In: Transport> Connector<In> for TrackedTcp {
    type Out = Either<In, TcpTransport>;

    fn connect(
        &self,
        details: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        // A connection made before this step (a SOCKS proxy's) is the one to use.
        if let Some(transport) = chained {
            return Ok(Some(Either::A(transport)));
        }
        let stream = connect(details)?;
        if details.config.no_delay() {
            stream.set_nodelay(true)?;
        }
        // The agent shuts sockets down through a handle of its own; a second descriptor of
        // the same socket serves, as ureq's transport is not ours to share.
        let shutdown = Arc::new(stream.try_clone()?);
        (details.register_shutdown)(Arc::downgrade(&shutdown) as Weak<dyn ShutdownHandle>)?;
        Ok(Some(Either::B(TcpTransport {
            _registration: self.sockets.register(&stream),
            _shutdown: shutdown,
            stream,
            buffers: LazyBuffers::new(
                details.config.input_buffer_size(),
                details.config.output_buffer_size(),
            ),
            read_timeout: None,
            write_timeout: None,
        })))
    }
}

/// Connects to the first of `details.addrs` that answers within the connection's timeout.
fn connect(details: &ConnectionDetails) -> Result<TcpStream, ureq::Error> {
    let budget = details.timeout.not_zero().map(|budget| *budget);
    let started = Instant::now();
    let mut last_error = None;
    let count = details.addrs.len();
    for (index, address) in details.addrs.iter().enumerate() {
        let left = budget.map(|budget| budget.saturating_sub(started.elapsed()));
        if left.is_some_and(|left| left.is_zero()) {
            return Err(ureq::Error::Timeout(details.timeout.reason));
        }
        // Half of what is left for each address but the last, so that a host whose first
        // address never answers still gets a try at the next.
        let per_address = left.map(|left| {
            if index + 1 < count {
                (left / 2).max(Duration::from_millis(10))
            } else {
                left
            }
        });
        match connect_one(*address, per_address) {
            Ok(stream) => return Ok(stream),
            Err(error) if error.kind() == ErrorKind::TimedOut => {
                if budget.is_some_and(|budget| started.elapsed() >= budget) {
                    return Err(ureq::Error::Timeout(details.timeout.reason));
                }
                last_error = Some(ureq::Error::Timeout(Timeout::Connect));
            }
            Err(error) if concerns_the_address_only(&error) => {
                last_error = Some(ureq::Error::Io(error));
            }
            Err(error) => return Err(error.into()),
        }
    }
    Err(last_error.unwrap_or_else(|| {
        ureq::Error::Io(io::Error::new(
            ErrorKind::ConnectionRefused,
            "connection refused",
        ))
    }))
}

/// A connection to `address`, within `timeout` if given; a timeout is `TimedOut` whatever
/// the platform says.
fn connect_one(address: SocketAddr, timeout: Option<Duration>) -> io::Result<TcpStream> {
    match timeout {
        Some(timeout) => TcpStream::connect_timeout(&address, timeout),
        None => TcpStream::connect(address),
    }
    .map_err(timed_out)
}

/// Whether a failed connect says nothing of the host's other addresses: a refusal, or an
/// address the local network cannot reach (an IPv6 address on a host without IPv6).
fn concerns_the_address_only(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        ErrorKind::ConnectionRefused
            | ErrorKind::HostUnreachable
            | ErrorKind::NetworkUnreachable
            | ErrorKind::AddrNotAvailable
    )
}

/// `WouldBlock` as `TimedOut`: what a socket timeout is on some platforms.
fn timed_out(error: io::Error) -> io::Error {
    if error.kind() == ErrorKind::WouldBlock {
        io::Error::new(ErrorKind::TimedOut, error)
    } else {
        error
    }
}

/// A plain TCP connection [`TrackedTcp`] opened, registered until it drops.
pub(crate) struct TcpTransport {
    // Declared before the stream, so dropped first: the socket leaves the registry before
    // it closes, as the registry requires.
    _registration: Registration,
    /// The agent's shutdown handle holds this weakly.
    _shutdown: Arc<TcpStream>,
    stream: TcpStream,
    buffers: LazyBuffers,
    /// The timeouts set on the socket, so that they are set again only when they change.
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
}

impl fmt::Debug for TcpTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpTransport")
            .field("peer", &self.stream.peer_addr().ok())
            .finish_non_exhaustive()
    }
}

impl Transport for TcpTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        let timeout = timeout.for_write();
        let wanted = remaining(timeout)?;
        if wanted != self.write_timeout {
            self.stream.set_write_timeout(wanted)?;
            self.write_timeout = wanted;
        }
        let output = &self.buffers.output()[..amount];
        self.stream
            .write_all(output)
            .map_err(|error| io_error(error, timeout))
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        let timeout = timeout.for_read();
        let wanted = remaining(timeout)?;
        if wanted != self.read_timeout {
            self.stream.set_read_timeout(wanted)?;
            self.read_timeout = wanted;
        }
        let input = self.buffers.input_append_buf();
        let amount = loop {
            match self.stream.read(input) {
                // A signal cut the read short (Linux does not restart a socket read that
                // has a timeout): read again, within the same timeout.
                Err(error) if error.kind() == ErrorKind::Interrupted => {}
                result => break result.map_err(|error| io_error(error, timeout))?,
            }
        };
        self.buffers.input_appended(amount);
        Ok(amount > 0)
    }

    fn is_open(&mut self) -> bool {
        is_open(&self.stream).unwrap_or(false)
    }
}

/// The socket timeout `timeout` asks for (`None`: none); a timeout already spent is one.
fn remaining(timeout: NextTimeout) -> Result<Option<Duration>, ureq::Error> {
    if timeout.after.is_zero() {
        return Err(ureq::Error::Timeout(timeout.reason));
    }
    Ok(timeout.not_zero().map(|after| *after))
}

/// A failed read or write as ureq's error: a socket timeout as its timeout.
fn io_error(error: io::Error, timeout: NextTimeout) -> ureq::Error {
    match timed_out(error) {
        error if error.kind() == ErrorKind::TimedOut => ureq::Error::Timeout(timeout.reason),
        error => ureq::Error::Io(error),
    }
}

/// Whether a pooled connection is still usable: nothing to read and not closed (a server
/// that sent bytes nobody asked for, or closed, makes it unusable).
fn is_open(stream: &TcpStream) -> io::Result<bool> {
    stream.set_nonblocking(true)?;
    let open = match (&*stream).read(&mut [0]) {
        Err(error) => error.kind() == ErrorKind::WouldBlock,
        Ok(_) => false,
    };
    stream.set_nonblocking(false)?;
    Ok(open)
}
