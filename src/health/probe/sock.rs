//! TCP probe sockets kept from probe to probe, on an epoll set of the
//! prober's own.
//!
//! A TCP probe used to make a socket, register it with tokio, connect, set
//! SO_LINGER 0, close it and deregister it: seven system calls and a tokio
//! registration (an aligned allocation and a lock) for every probe, 38 µs
//! of kernel time in a loop of them. A TCP socket can be connected again
//! once `connect` with `AF_UNSPEC` has dissolved its connection (connect(2):
//! Linux since 2.2), and dissolving an established connection resets it, as
//! SO_LINGER 0 does. So an endpoint keeps one socket, registered once, and
//! a probe is `connect` and, once the event says connected,
//! `connect(AF_UNSPEC)`: two system calls (three when the event is not
//! plain, and `connect` is asked again how it went). A C loop of the old
//! and new sequences took 38 and 28 µs of kernel time a probe
//! (`bench/probe-scale.sh` has the figures at scale).
//!
//! Why an epoll set of its own and not tokio's: tokio takes EPOLLHUP, which
//! epoll reports for a socket between two connections, as the end of the
//! socket, for good; its registration cannot outlive a connection. This set
//! is edge-triggered (mio), its own descriptor is registered with tokio, and
//! one task per thread drains it and wakes the probes waiting on its
//! sockets. A probe registers its waker before each system call it may
//! wait on (the first `connect` too), so an event can never fall between
//! its try and its wait, on whichever thread the task draining the set
//! runs.

use std::cell::RefCell;
use std::io;
use std::mem::MaybeUninit;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use mio::unix::SourceFd;
use slab::Slab;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::Connect;

/// Events taken from the set per `epoll_wait`.
const EVENTS: usize = 256;

/// One thread's set of probe sockets and the probes waiting on them.
#[derive(Debug)]
struct Reactor {
    registry: mio::Registry,
    /// Per socket (its token), the probe waiting on it.
    waiting: Mutex<Slab<Slot>>,
    /// The task draining the set has ended (its runtime shut down): the
    /// thread's next socket makes a new set.
    ended: AtomicBool,
}

/// One socket's entry in the set.
#[derive(Debug, Default)]
struct Slot {
    /// The probe to wake at the socket's next event.
    waker: Option<Waker>,
    /// The socket's last event said writable, with no error and no
    /// hang-up: connected when it was taken. Cleared when a connection
    /// begins, so that it speaks of that connection only.
    established: bool,
}

thread_local! {
    static REACTOR: RefCell<Option<Arc<Reactor>>> = const { RefCell::new(None) };
}

impl Reactor {
    /// This thread's set, made (and its task spawned on the runtime the
    /// caller runs on) when there is none or its runtime is gone.
    fn current() -> io::Result<Arc<Reactor>> {
        REACTOR.with(|cell| {
            let mut cell = cell.borrow_mut();
            if let Some(r) = cell.as_ref().filter(|r| !r.ended()) {
                return Ok(r.clone());
            }
            let poll = mio::Poll::new()?;
            let reactor = Arc::new(Reactor {
                registry: poll.registry().try_clone()?,
                waiting: Mutex::default(),
                ended: AtomicBool::new(false),
            });
            // SAFETY: the mio Poll owns its epoll descriptor, which stays
            // open and the same until the AsyncFd (which owns the Poll) is
            // dropped.
            let set =
                unsafe { AsyncFd::register_with_interest(poll, tokio::io::Interest::READABLE) }
                    .map_err(io::Error::from)?;
            tokio::spawn(drain(set, Ends(reactor.clone())));
            *cell = Some(reactor.clone());
            Ok(reactor)
        })
    }

    fn ended(&self) -> bool {
        self.ended.load(Ordering::Acquire)
    }

    fn waiting(&self) -> MutexGuard<'_, Slab<Slot>> {
        // Nothing panics with the lock held; a poisoned slab is still whole.
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `waker` is woken by the socket's next event. `begin`: a connection
    /// begins, and what earlier events said no longer holds. Err: the set
    /// has ended (checked under the lock that [`Ends`] wakes everyone
    /// under, so a waker is either woken by it or not registered at all).
    fn wait(&self, token: usize, waker: &Waker, begin: bool) -> Result<(), SetEnded> {
        let mut waiting = self.waiting();
        if self.ended() {
            return Err(SetEnded);
        }
        if let Some(slot) = waiting.get_mut(token) {
            match &slot.waker {
                Some(w) if w.will_wake(waker) => {}
                _ => slot.waker = Some(waker.clone()),
            }
            if begin {
                slot.established = false;
            }
        }
        Ok(())
    }

    /// Nobody waits on the socket: its next events wake no one.
    fn unwait(&self, token: usize) {
        if let Some(slot) = self.waiting().get_mut(token) {
            slot.waker = None;
        }
    }

    /// Whether the connection under way has been seen established (and
    /// then nobody waits any more).
    fn established(&self, token: usize) -> bool {
        let mut waiting = self.waiting();
        let Some(slot) = waiting.get_mut(token) else {
            return false;
        };
        if slot.established {
            slot.waker = None;
        }
        slot.established
    }
}

/// Marks the set ended when its task goes (with its runtime), and wakes
/// whoever still waits on it so that they find out.
struct Ends(Arc<Reactor>);

impl Drop for Ends {
    fn drop(&mut self) {
        let mut waiting = self.0.waiting();
        self.0.ended.store(true, Ordering::Release);
        for (_, slot) in waiting.iter_mut() {
            if let Some(w) = slot.waker.take() {
                w.wake();
            }
        }
    }
}

/// Drains the set whenever tokio says its descriptor is readable, waking
/// the probes waiting on the sockets that had events.
async fn drain(mut set: AsyncFd<mio::Poll>, ends: Ends) {
    let reactor = &ends.0;
    let mut events = mio::Events::with_capacity(EVENTS);
    loop {
        let mut ready = match set.readable_mut().await {
            Ok(ready) => ready,
            Err(e) => {
                tracing::error!(error = %e, "probe sockets: the epoll set failed; the next probes make a new one");
                return;
            }
        };
        loop {
            // Taken and applied under the lock: a connection that begins
            // meanwhile (on another thread of a multi-threaded runtime)
            // clears `established` before or after the whole batch, never
            // between an event's taking and its applying, so the flag never
            // speaks of the connection before.
            let mut waiting = reactor.waiting();
            match ready
                .get_inner_mut()
                .poll(&mut events, Some(Duration::ZERO))
            {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::error!(error = %e, "probe sockets: epoll_wait failed; the next probes make a new set");
                    return;
                }
            }
            let mut n = 0;
            for event in &events {
                n += 1;
                if let Some(slot) = waiting.get_mut(event.token().0) {
                    slot.established = event.is_writable()
                        && !event.is_error()
                        && !event.is_write_closed()
                        && !event.is_read_closed();
                    if let Some(w) = slot.waker.take() {
                        w.wake();
                    }
                }
            }
            drop(waiting);
            if n < EVENTS {
                break;
            }
        }
        // Edge-triggered: the set is empty now, and its next event makes
        // tokio's readiness anew.
        ready.clear_ready();
    }
}

/// The set a socket is in has ended (its runtime is shutting down, or
/// epoll failed): gslb's own error, never the backend's. The next socket
/// goes into a new set.
#[derive(Debug, thiserror::Error)]
#[error("the prober's socket set has ended")]
pub(super) struct SetEnded;

impl From<SetEnded> for io::Error {
    fn from(e: SetEnded) -> io::Error {
        io::Error::other(e)
    }
}

/// How one endpoint's probes connect: the address, the source, and the
/// socket the last probe left, its connection dissolved, for the next.
#[derive(Debug)]
pub(super) struct Connector {
    addr: SocketAddr,
    sockaddr: SockAddr,
    /// `probe-source`, when of the address's family.
    source: Option<IpAddr>,
    /// Set TCP_NODELAY on new sockets (HTTP: a kept connection's next
    /// request must not wait for Nagle).
    nodelay: bool,
    spare: Mutex<Option<ProbeSocket>>,
}

impl Connector {
    pub(super) fn new(addr: SocketAddr, source: Option<IpAddr>, nodelay: bool) -> Connector {
        Connector {
            addr,
            sockaddr: addr.into(),
            source,
            nodelay,
            spare: Mutex::default(),
        }
    }

    fn spare(&self) -> MutexGuard<'_, Option<ProbeSocket>> {
        self.spare.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A new connection, on the spare socket when there is one. A refused
    /// or failed connection leaves its socket for the next one too (the
    /// kernel has dissolved it in reporting why); one cut short by the
    /// timeout is closed, and the next connection makes a new socket.
    pub(super) async fn connect(&self) -> Result<ProbeSocket, Connect> {
        // A spare socket outlives its set only when the set ends.
        let spare = self.spare().take().filter(|s| !s.reactor.ended());
        let socket = match spare {
            Some(socket) => socket,
            None => {
                let socket = ProbeSocket::new(&self.addr, self.source)?;
                if self.nodelay {
                    socket.socket.set_tcp_nodelay(true).map_err(Connect::Io)?;
                }
                socket
            }
        };
        match socket.connect(&self.sockaddr).await {
            Ok(()) => Ok(socket),
            Err(e) => {
                self.done(socket);
                Err(Connect::Io(e))
            }
        }
    }

    /// Ends `socket`'s connection (with a reset, if it was established) and
    /// keeps the socket for the next connection; probes that overlapped
    /// close theirs.
    pub(super) fn done(&self, socket: ProbeSocket) {
        // Its reset's event is no news to the probe that last waited on it.
        socket.reactor.unwait(socket.token);
        if socket.disconnect().is_ok() {
            self.spare().get_or_insert(socket);
        }
    }

    /// Closes the spare socket, if any (its endpoint keeps a connection
    /// instead).
    pub(super) fn forget_spare(&self) {
        let spare = self.spare().take();
        drop(spare);
    }

    /// The descriptor of the spare socket, for tests that check it is kept.
    #[cfg(test)]
    pub(super) fn spare_fd(&self) -> Option<i32> {
        self.spare().as_ref().map(|s| s.socket.as_raw_fd())
    }
}

/// A TCP socket of one endpoint's probes, kept from one connection to the
/// next. Dropping it takes it out of the set and closes it (with a reset,
/// if connected).
#[derive(Debug)]
pub(super) struct ProbeSocket {
    socket: Socket,
    reactor: Arc<Reactor>,
    token: usize,
}

impl ProbeSocket {
    /// A socket for connecting to `addr`, bound to `source` (the
    /// `probe-source` setting) when given.
    fn new(addr: &SocketAddr, source: Option<IpAddr>) -> Result<ProbeSocket, Connect> {
        let reactor = Reactor::current().map_err(Connect::Io)?;
        let socket = Socket::new(
            Domain::for_address(*addr),
            Type::STREAM.nonblocking(),
            Some(Protocol::TCP),
        )
        .map_err(Connect::Io)?;
        // Dropped while connected (a probe cut short, an HTTP connection
        // not kept), it closes with a reset too.
        socket
            .set_linger(Some(Duration::ZERO))
            .map_err(Connect::Io)?;
        if let Some(source) = source {
            socket
                .bind(&SocketAddr::new(source, 0).into())
                .map_err(|e| Connect::Bind(source, e))?;
        }
        let token = reactor.waiting().insert(Slot::default());
        let registered = reactor.registry.register(
            &mut SourceFd(&socket.as_raw_fd()),
            mio::Token(token),
            mio::Interest::READABLE | mio::Interest::WRITABLE,
        );
        // From here on, dropping it frees the token.
        let socket = ProbeSocket {
            socket,
            reactor,
            token,
        };
        registered.map_err(Connect::Io)?;
        Ok(socket)
    }

    /// Connects to `addr`: Ok once connected, or why not.
    ///
    /// Woken by an event that said writable with no error and no hang-up,
    /// it is connected: no socket in this set is writable without a
    /// hang-up before its connection is established, and the flag was
    /// cleared when this one began. Otherwise `connect` asked again tells
    /// how it went, as SO_ERROR would (0 or EISCONN: connected; EALREADY:
    /// not yet; else why not).
    async fn connect(&self, addr: &SockAddr) -> io::Result<()> {
        let mut begun = false;
        std::future::poll_fn(|cx| {
            if begun && self.reactor.established(self.token) {
                return Poll::Ready(Ok(()));
            }
            let begin = !begun;
            begun = true;
            self.poll_io(cx, begin, |s| match s.connect(addr) {
                Err(e) if begin && e.raw_os_error() == Some(libc::EINPROGRESS) => {
                    Err(io::ErrorKind::WouldBlock.into())
                }
                Err(e) if !begin && e.raw_os_error() == Some(libc::EISCONN) => Ok(()),
                Err(e) if !begin && e.raw_os_error() == Some(libc::EALREADY) => {
                    Err(io::ErrorKind::WouldBlock.into())
                }
                r => r,
            })
        })
        .await
    }

    /// Dissolves the connection, resetting it when it was established (an
    /// RST, no FIN handshake, no TIME_WAIT), and leaves the socket ready for
    /// the next one. Err: the socket is of no further use.
    fn disconnect(&self) -> io::Result<()> {
        let unspec = libc::sockaddr {
            sa_family: libc::AF_UNSPEC as libc::sa_family_t,
            sa_data: [0; 14],
        };
        // SAFETY: a valid `sockaddr` of the length given, on our socket.
        let rc = unsafe {
            libc::connect(
                self.socket.as_raw_fd(),
                &unspec,
                std::mem::size_of::<libc::sockaddr>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Resolves once the idle connection has something to say: the end of
    /// the stream, an error, or bytes nobody asked for. Either way it will
    /// not serve the next probe. Nothing is read.
    pub(super) async fn closed(&self) {
        let mut byte = [MaybeUninit::<u8>::uninit()];
        let _ = std::future::poll_fn(|cx| {
            self.poll_io(cx, false, |s| s.recv_with_flags(&mut byte, libc::MSG_PEEK))
        })
        .await;
    }

    /// One system call on the socket, the waker registered first: an event
    /// between the call's WouldBlock and the wait cannot be missed.
    fn poll_io<R>(
        &self,
        cx: &mut Context<'_>,
        begin: bool,
        mut op: impl FnMut(&Socket) -> io::Result<R>,
    ) -> Poll<io::Result<R>> {
        if let Err(e) = self.reactor.wait(self.token, cx.waker(), begin) {
            return Poll::Ready(Err(e.into()));
        }
        loop {
            match op(&self.socket) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => {
                    self.reactor.unwait(self.token);
                    return Poll::Ready(r);
                }
            }
        }
    }
}

impl Drop for ProbeSocket {
    fn drop(&mut self) {
        // Out of the set before its token is freed for another socket. The
        // close alone would not do it while a forked child (an exec check
        // between fork and exec) holds a copy of the descriptor: a late
        // event of this socket (the SYN-ACK of a probe cut short) would
        // then reach the token's next owner and read as its connection
        // established. One system call, on this rare path only.
        let _ = self
            .reactor
            .registry
            .deregister(&mut SourceFd(&self.socket.as_raw_fd()));
        self.reactor.waiting().try_remove(self.token);
    }
}

impl AsyncRead for ProbeSocket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        // SAFETY: `recv` only writes initialized bytes into what it is
        // given, and reports how many.
        let unfilled: &mut [MaybeUninit<u8>] = unsafe { buf.unfilled_mut() };
        match self.poll_io(cx, false, |s| s.recv(unfilled)) {
            Poll::Ready(Ok(n)) => {
                // SAFETY: `recv` initialized `n` bytes.
                unsafe { buf.assume_init(n) };
                buf.advance(n);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncWrite for ProbeSocket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        // MSG_NOSIGNAL: a peer's reset is an error here, never SIGPIPE.
        self.poll_io(cx, false, |s| s.send_with_flags(buf, libc::MSG_NOSIGNAL))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.socket.shutdown(std::net::Shutdown::Write))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket dropped while a copy of its descriptor lives on (an exec
    /// check's child between fork and exec) must leave the set: its late
    /// events would reach the next owner of its token. Here the copy
    /// connects after the token went to a socket whose SYNs a full listener
    /// drops; that socket must go on waiting, not read as connected.
    #[tokio::test]
    async fn a_dropped_socket_still_open_elsewhere_wakes_no_one() {
        // A listener whose accept queue (backlog 0: one connection) is
        // full drops every further SYN.
        let full = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
        full.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .unwrap();
        full.listen(0).unwrap();
        let full_addr = full.local_addr().unwrap().as_socket().unwrap();
        let _queued = std::net::TcpStream::connect(full_addr).unwrap();
        let open = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let open_addr = open.local_addr().unwrap();

        let old = ProbeSocket::new(&open_addr, None).unwrap();
        let copy = old.socket.try_clone().unwrap();
        let token = old.token;
        drop(old);
        let new = ProbeSocket::new(&full_addr, None).unwrap();
        assert_eq!(new.token, token, "the token is reused");

        let to: SockAddr = full_addr.into();
        let connecting = new.connect(&to);
        tokio::pin!(connecting);
        assert!(futures_util::poll!(connecting.as_mut()).is_pending());
        // The old socket's file connects (on loopback the handshake ends
        // inside the call): an event, under the old token if still in the set.
        let _ = copy.connect(&open_addr.into());
        let r = tokio::time::timeout(Duration::from_millis(300), connecting).await;
        assert!(r.is_err(), "still connecting, not {r:?}");
    }
}
