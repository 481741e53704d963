//! Listening sockets: inherited from systemd (socket activation: LISTEN_FDS/LISTEN_PID), so a
//! restart or binary upgrade refuses no connection — the kernel keeps queueing on the socket
//! while the new process starts — or bound here.

use std::net::{SocketAddr, TcpListener};

use listenfd::ListenFd;
use socket2::{Domain, Protocol, Socket, Type};

/// Sockets handed over by systemd, by their local address.
pub struct Inherited(Vec<TcpListener>);

impl Inherited {
    pub fn from_env() -> Inherited {
        let mut fds = ListenFd::from_env();
        let mut listeners = Vec::new();
        for i in 0..fds.len() {
            match fds.take_tcp_listener(i) {
                Ok(Some(l)) => listeners.push(l),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(fd = i + 3, error = %e, "inherited fd is not a TCP listener")
                }
            }
        }
        if !listeners.is_empty() {
            tracing::info!(count = listeners.len(), "using sockets passed by systemd");
        }
        Inherited(listeners)
    }

    /// The inherited socket for `addr`, else a newly bound one.
    pub fn take_or_bind(&mut self, addr: SocketAddr) -> std::io::Result<TcpListener> {
        if let Some(pos) = self
            .0
            .iter()
            .position(|l| l.local_addr().map(|a| a == addr).unwrap_or(false))
        {
            let l = self.0.swap_remove(pos);
            l.set_nonblocking(true)?;
            return Ok(l);
        }
        bind(addr)
    }
}

/// Binds with SO_REUSEADDR and a deep backlog (connections over max_connections wait there).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}
