//! Listening sockets: inherited from systemd (socket activation: LISTEN_FDS/LISTEN_PID), so a
//! restart or binary upgrade refuses no connection — the kernel keeps queueing on the socket
//! while the new process starts — or bound here.
//!
//! Order at start-up: read the inherited sockets, let each configured address take its own
//! (matched by local address) or bind one, then refuse to start if an inherited socket is left
//! over: connections to it would wait in its backlog forever.

use std::net::{SocketAddr, TcpListener};

use listenfd::ListenFd;
use socket2::{Domain, Protocol, Socket, Type};
use thiserror::Error;

/// Inherited sockets that no configured address claimed.
#[derive(Debug, Error)]
#[error(
    "systemd passed a listening socket for {} that no server.listen[].addr or server.admin_addr names; \
     connections to it would never be answered. Make the ListenStream= lines of moodle-edge.socket \
     and the addresses in the config the same",
    list(.0)
)]
pub struct Unclaimed(pub Vec<SocketAddr>);

fn list(addrs: &[SocketAddr]) -> String {
    addrs
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Sockets handed over by systemd, by their local address.
pub(crate) struct Inherited {
    /// Not yet claimed by a configured address.
    listeners: Vec<TcpListener>,
    /// Whether systemd passed any socket at all: then a configured address without one is
    /// worth a log line, since the socket unit and the config were meant to agree.
    activated: bool,
}

impl Inherited {
    pub(crate) fn from_env() -> Inherited {
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
        let activated = !listeners.is_empty();
        Inherited {
            listeners,
            activated,
        }
    }

    /// The inherited socket for `addr`, else a newly bound one.
    pub(crate) fn take_or_bind(&mut self, addr: SocketAddr) -> std::io::Result<TcpListener> {
        if let Some(pos) = self
            .listeners
            .iter()
            .position(|l| l.local_addr().map(|a| a == addr).unwrap_or(false))
        {
            let l = self.listeners.swap_remove(pos);
            l.set_nonblocking(true)?;
            return Ok(l);
        }
        let l = bind(addr)?;
        if self.activated {
            tracing::info!(
                addr = %addr,
                "systemd passed no socket for this address; bound it here"
            );
        }
        Ok(l)
    }

    /// Ends the hand-over: an inherited socket nobody claimed is an error naming its address.
    pub(crate) fn finish(self) -> Result<(), Unclaimed> {
        let left: Vec<SocketAddr> = self
            .listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect();
        if left.is_empty() {
            Ok(())
        } else {
            Err(Unclaimed(left))
        }
    }
}

/// Binds with SO_REUSEADDR and a deep backlog (connections over max_connections wait there).
pub(crate) fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unclaimed_socket_is_an_error_naming_its_address() {
        let spare = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let spare_addr = spare.local_addr().unwrap();
        let mut inherited = Inherited {
            listeners: vec![spare],
            activated: true,
        };
        let other = inherited
            .take_or_bind("127.0.0.1:0".parse().unwrap())
            .unwrap();
        assert_ne!(other.local_addr().unwrap(), spare_addr);
        let e = inherited.finish().unwrap_err().to_string();
        assert!(e.contains(&spare_addr.to_string()), "{e}");
        assert!(e.contains("ListenStream="), "{e}");
    }

    #[test]
    fn a_claimed_socket_is_taken_not_bound_again() {
        let l = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = l.local_addr().unwrap();
        let mut inherited = Inherited {
            listeners: vec![l],
            activated: true,
        };
        // Binding it again would fail (in use, no SO_REUSEPORT): taking it succeeds.
        assert_eq!(
            inherited.take_or_bind(addr).unwrap().local_addr().unwrap(),
            addr
        );
        inherited.finish().unwrap();
    }
}
