//! Listening sockets bound before the server starts.
//!
//! Pingora binds its listeners inside its own start-up and does not say which
//! port it got, so binding port 0 would leave us unable to report the
//! address. Instead the node binds each socket itself, reads its address,
//! and hands it to pingora through the table of inherited listening sockets
//! that pingora also uses for zero-downtime upgrades: a listener finds its
//! socket there under its address and uses it instead of binding.

use std::net::{SocketAddr, TcpListener};
use std::os::fd::IntoRawFd as _;

use async_trait::async_trait;
use pingora_core::server::{ListenFds, ShutdownWatch};
use pingora_core::services::{ServiceReadyNotifier, ServiceWithDependents};

/// A socket bound and listening, waiting to be handed to pingora.
pub struct BoundSocket {
    socket: TcpListener,
    address: SocketAddr,
}

impl BoundSocket {
    pub fn bind(address: SocketAddr) -> std::io::Result<Self> {
        let socket = TcpListener::bind(address)?;
        // Tokio, which pingora runs on, needs non-blocking sockets.
        socket.set_nonblocking(true)?;
        let address = socket.local_addr()?;
        Ok(Self { socket, address })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The key pingora looks the socket up by: the address string its
    /// listener is configured with.
    pub fn key(&self) -> String {
        self.address.to_string()
    }
}

/// Wraps a listening service, putting its pre-bound sockets in pingora's
/// socket table just before the service starts listening.
pub struct Prebound<S> {
    inner: S,
    sockets: Vec<BoundSocket>,
}

impl<S> Prebound<S> {
    /// `inner` must listen on `socket.key()` for each socket.
    pub fn new(inner: S, sockets: Vec<BoundSocket>) -> Self {
        Self { inner, sockets }
    }
}

#[async_trait]
impl<S: ServiceWithDependents> ServiceWithDependents for Prebound<S> {
    async fn start_service(
        &mut self,
        fds: Option<ListenFds>,
        shutdown: ShutdownWatch,
        listeners_per_fd: usize,
        ready: ServiceReadyNotifier,
    ) {
        if let Some(table) = &fds {
            let mut table = table.lock();
            for socket in self.sockets.drain(..) {
                let key = socket.key();
                table.add(key, socket.socket.into_raw_fd());
            }
        }
        self.inner
            .start_service(fds, shutdown, listeners_per_fd, ready)
            .await;
    }

    fn name(&self) -> &str {
        self.inner.name()
    }

    fn threads(&self) -> Option<usize> {
        self.inner.threads()
    }

    fn listen_addresses(&self) -> Option<Vec<String>> {
        self.inner.listen_addresses()
    }
}
