//! https for ureq with the roots this workspace's clients trust ([`uploads_client_io::trust`]:
//! Mozilla's and those `SSL_CERT_FILE` / `SSL_CERT_DIR` name).
//!
//! ureq's own rustls connector trusts either Mozilla's roots or a list of certificates, not
//! both, so the agent's connector chain is ureq's HTTP `CONNECT` proxy, then our TCP step
//! ([`crate::tcp`], which registers its sockets), ending in this TLS step, which runs rustls with the workspace's client configuration. Its handshake
//! and its errors are ureq's: the connection's timeout bounds the handshake, and a refused
//! certificate is an I/O error carrying rustls' error, as with ureq's connector.

use std::fmt;
use std::io::{Read, Write};
use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use uploads_client_io::trust::{self, ExtraRoots};
use uploads_client_io::unacked::Sockets;
use ureq::Agent;
use ureq::config::Config;
use ureq::unversioned::resolver::DefaultResolver;
use ureq::unversioned::transport::{
    Buffers, ConnectProxyConnector, ConnectionDetails, Connector, Either, LazyBuffers, NextTimeout,
    Transport, TransportAdapter,
};

use crate::tcp::TrackedTcp;

/// A ureq agent with ureq's defaults, whose https trusts Mozilla's roots and the certificates
/// `extra` names, and whose TCP sockets join `sockets` while they live.
pub(crate) fn agent(extra: &ExtraRoots, sockets: Sockets) -> Agent {
    let tls = TrustingTls {
        config: Arc::new(trust::client_config(extra.root_store())),
    };
    let connector =
        ().chain(ConnectProxyConnector::default())
            .chain(TrackedTcp::new(sockets))
            .chain(tls);
    Agent::with_parts(Config::default(), connector, DefaultResolver::default())
}

/// Wraps an https connection's transport in rustls with the workspace's configuration.
struct TrustingTls {
    config: Arc<ClientConfig>,
}

impl fmt::Debug for TrustingTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustingTls").finish_non_exhaustive()
    }
}

impl<In: Transport> Connector<In> for TrustingTls {
    type Out = Either<In, TlsTransport>;

    fn connect(
        &self,
        details: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        let Some(transport) = chained else {
            return Ok(None);
        };
        if !details.needs_tls() || transport.is_tls() {
            return Ok(Some(Either::A(transport)));
        }
        let host = details.uri.host().unwrap_or_default();
        // An IPv6 literal comes bracketed in a URI.
        let host = host
            .strip_prefix('[')
            .and_then(|host| host.strip_suffix(']'))
            .unwrap_or(host);
        let name = ServerName::try_from(host.to_owned())
            .map_err(|_| ureq::Error::Tls("the host is not a valid TLS server name"))?;
        let mut connection = ClientConnection::new(Arc::clone(&self.config), name)?;
        let mut socket = TransportAdapter::new(transport.boxed(), details.current_time.clone());
        socket.set_timeout(details.timeout);
        connection.complete_io(&mut socket)?;
        Ok(Some(Either::B(TlsTransport {
            buffers: LazyBuffers::new(
                details.config.input_buffer_size(),
                details.config.output_buffer_size(),
            ),
            stream: StreamOwned::new(connection, socket),
        })))
    }
}

/// An https connection: rustls over the transport below.
pub(crate) struct TlsTransport {
    buffers: LazyBuffers,
    stream: StreamOwned<ClientConnection, TransportAdapter>,
}

impl fmt::Debug for TlsTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsTransport").finish_non_exhaustive()
    }
}

impl Transport for TlsTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        self.stream.get_mut().set_timeout(timeout);
        let output = &self.buffers.output()[..amount];
        self.stream.write_all(output)?;
        Ok(())
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        self.stream.get_mut().set_timeout(timeout);
        let input = self.buffers.input_append_buf();
        let amount = self.stream.read(input)?;
        self.buffers.input_appended(amount);
        Ok(amount > 0)
    }

    fn is_open(&mut self) -> bool {
        self.stream.get_mut().get_mut().is_open()
    }

    fn is_tls(&self) -> bool {
        true
    }
}
