//! Dormant connections. A client that has been quiet for `limits.dormant_after_ms` (1 s by
//! default) gives up its task, its tokio I/O registration, its timer and its buffers, and waits
//! here as one compact record while a single shared epoll set watches its socket. Bytes from the client (or its hang-up), a
//! delivery, a takeover, shutdown, or its keep-alive deadline wake it: it gets a new task and
//! carries on where it was; session, inflight messages, aliases and will never leave it. This
//! is what keeps a fleet of mostly silent devices small (docs/architecture.md, memory).
//!
//! Going dormant and waking cost a few system calls and a task spawn, so only clients quiet for
//! longer than that pay them, once per quiet spell.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token};
use parking_lot::Mutex;
use slab::Slab;
use tokio::io::unix::AsyncFd;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;
use tracing::warn;

use crate::broker::{Bell, BrokerState};

use super::Client;

/// Readiness events taken per `epoll_wait`.
const EVENTS: usize = 256;

/// A dormant connection: its socket, out of tokio's reactor, and what its task held.
pub(super) struct Dormant {
    pub stream: std::net::TcpStream,
    /// Its bed's generation (set by [`Dormitory::admit`]): beside the socket's 4 bytes, where
    /// it takes no room of its own in the slab.
    generation: u32,
    pub client: Client,
}

impl Dormant {
    /// A connection about to go dormant.
    pub fn new(stream: std::net::TcpStream, client: Client) -> Dormant {
        Dormant {
            stream,
            generation: 0,
            client,
        }
    }

    /// When it must wake even if nothing happens: its keep-alive deadline.
    fn deadline(&self) -> Option<Instant> {
        self.client.keep_alive_deadline()
    }
}

/// Where dormant connections wait. Cheap to clone; one per broker.
#[derive(Clone)]
pub struct Dormitory {
    shared: Arc<Shared>,
}

struct Shared {
    registry: Registry,
    inner: Mutex<Inner>,
    /// Beds rung through their mailboxes; also wakes the dormitory's task for new deadlines.
    /// Its lock is its own, taken with no other held but `inner` in `admit` (a mailbox with a
    /// signal pending rings its bed at once, from inside `admit`): sharing `inner` would
    /// deadlock there.
    bell: Arc<Bell>,
}

struct Inner {
    /// Each bed holds a generation, so a late wake-up for a connection that already left (and
    /// whose bed was reused) is recognised and ignored.
    beds: Slab<Dormant>,
    next_generation: u32,
    /// Keep-alive deadlines of connections admitted since the task last looked.
    deadlines: Vec<(Instant, usize)>,
    /// Set at shutdown: no more admissions.
    closed: bool,
}

/// Generations run in 24 bits: a bed's token (index, generation) fits the 56 bits its
/// [`Bell`] carries.
const GENERATIONS: u32 = 0xFF_FFFF;

fn token(index: usize, generation: u32) -> usize {
    (usize::try_from(generation).unwrap_or(0) << 32) | index
}

fn index_of(token: usize) -> usize {
    token & 0xFFFF_FFFF
}

fn generation_of(token: usize) -> u32 {
    u32::try_from(token >> 32).unwrap_or(u32::MAX)
}

impl Dormitory {
    /// An empty dormitory and the epoll set its task will wait on (see [`Dormitory::run`]).
    pub fn new() -> io::Result<(Dormitory, Poll)> {
        let poll = Poll::new()?;
        let registry = poll.registry().try_clone()?;
        let shared = Arc::new(Shared {
            registry,
            inner: Mutex::new(Inner {
                beds: Slab::new(),
                next_generation: 0,
                deadlines: Vec::new(),
                closed: false,
            }),
            bell: Bell::new(),
        });
        Ok((Dormitory { shared }, poll))
    }

    /// Takes in a quiet connection; gives it back if the dormitory is closed or its socket cannot
    /// be watched (the caller then keeps running it).
    pub(super) fn admit(&self, mut dormant: Dormant) -> Result<(), Dormant> {
        let mut inner = self.shared.inner.lock();
        if inner.closed || !self.shared.bell.has_slot() {
            return Err(dormant);
        }
        let index = inner.beds.vacant_key();
        if index > 0xFFFF_FFFF {
            return Err(dormant);
        }
        let generation = inner.next_generation;
        inner.next_generation = generation.wrapping_add(1) & GENERATIONS;
        let token = token(index, generation);
        let fd = dormant.stream.as_raw_fd();
        if let Err(e) =
            self.shared
                .registry
                .register(&mut SourceFd(&fd), Token(token), Interest::READABLE)
        {
            warn!(error = %e, "cannot watch a quiet connection; it stays awake");
            return Err(dormant);
        }
        // Under the lock: a wake-up through the mailbox cannot be handled before the bed is
        // filled, and one that comes at once (something was already pending) is not lost.
        if !dormant
            .client
            .mailbox
            .wake_through(&self.shared.bell, token)
        {
            let _ = self.shared.registry.deregister(&mut SourceFd(&fd));
            return Err(dormant);
        }
        if let Some(deadline) = dormant.deadline() {
            inner.deadlines.push((deadline, token));
            self.shared.bell.nudge();
        }
        dormant.generation = generation;
        inner.beds.insert(dormant);
        Ok(())
    }

    /// Number of dormant connections.
    pub fn len(&self) -> usize {
        self.shared.inner.lock().beds.len()
    }

    /// Takes a connection out of its bed if `token` still names it.
    fn leave(&self, token: usize) -> Option<Dormant> {
        let mut inner = self.shared.inner.lock();
        let index = index_of(token);
        match inner.beds.get(index) {
            Some(d) if d.generation == generation_of(token) => {}
            _ => return None,
        }
        let dormant = inner.beds.remove(index);
        let fd = dormant.stream.as_raw_fd();
        // The socket is closed or handed to tokio next; a failure here changes neither.
        let _ = self.shared.registry.deregister(&mut SourceFd(&fd));
        Some(dormant)
    }

    /// Wakes connections until shutdown, then wakes every one left (they say goodbye) and ends.
    /// Runs as one task in the broker's tracker, so shutdown waits for the goodbyes it starts.
    pub async fn run(
        self,
        poll: Poll,
        state: Arc<BrokerState>,
        tracker: TaskTracker,
        mut shutdown: watch::Receiver<bool>,
    ) {
        // `AsyncFd::new` is deprecated because the fd could be closed while registered; here
        // the fd is the epoll set that the `AsyncFd` itself owns, closed only when it drops.
        #[allow(deprecated)]
        let poll = AsyncFd::new(poll);
        let mut poll = match poll {
            Ok(p) => p,
            Err(e) => {
                warn!(error = %e, "quiet connections cannot go dormant");
                self.shared.inner.lock().closed = true;
                return;
            }
        };
        let mut events = Events::with_capacity(EVENTS);
        let mut timers: BinaryHeap<Reverse<(Instant, usize)>> = BinaryHeap::new();
        let mut due = Vec::new();
        loop {
            let next = timers.peek().map(|Reverse((at, _))| *at);
            tokio::select! {
                _ = shutdown.changed() => break,
                ready = poll.readable_mut() => {
                    let Ok(mut guard) = ready else { break };
                    events.clear();
                    match guard.get_inner_mut().poll(&mut events, Some(Duration::ZERO)) {
                        Ok(()) if events.is_empty() => guard.clear_ready(),
                        Ok(()) => due.extend(events.iter().map(|e| e.token().0)),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            warn!(error = %e, "waiting on quiet connections failed");
                            break;
                        }
                    }
                }
                _ = self.shared.bell.heard() => {
                    self.shared.bell.take_rung(&mut due);
                    timers.extend(self.shared.inner.lock().deadlines.drain(..).map(Reverse));
                }
                _ = sleep_until(next), if next.is_some() => {
                    let now = Instant::now();
                    while let Some(Reverse((at, token))) = timers.peek().copied() {
                        if at > now {
                            break;
                        }
                        timers.pop();
                        due.push(token);
                    }
                }
            }
            for token in due.drain(..) {
                if let Some(d) = self.leave(token) {
                    tracker.spawn(super::resume(d, Arc::clone(&state), self.clone()));
                }
            }
            if timers.capacity() > 64 && timers.len() < timers.capacity() / 4 {
                timers.shrink_to_fit();
            }
        }
        // Shutdown: wake everyone; they see the broker stopping and disconnect.
        let left: Vec<Dormant> = {
            let mut inner = self.shared.inner.lock();
            inner.closed = true;
            inner.beds.drain().collect()
        };
        for d in left {
            let fd = d.stream.as_raw_fd();
            let _ = self.shared.registry.deregister(&mut SourceFd(&fd));
            tracker.spawn(super::resume(d, Arc::clone(&state), self.clone()));
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::broker::Mailbox;
    use crate::connection::outbound::Outbound;
    use crate::connection::{Client, Slot};
    use crate::protocol::ProtocolVersion;
    use crate::session::Session;

    fn client(mailbox: &Arc<Mailbox>) -> Client {
        Client {
            connect_expiry_zero: true,
            bridge: false,
            session: Box::new(Session::new("c".into(), 0, 10)),
            mailbox: Arc::clone(mailbox),
            generation: 1,
            will: None,
            keep_alive: 0,
            last_packet: crate::connection::Moment::of(Instant::now()),
            out: Outbound::new(ProtocolVersion::V311, None, 0, true),
            info: Arc::new(crate::broker::ClientInfo::new(
                "127.0.0.1:1".parse().unwrap(),
                0,
                4,
                0,
                0,
            )),
            _slot: Slot::take(&crate::connection::Limit::broker(1)).unwrap(),
        }
    }

    /// A connection going dormant while its mailbox holds a signal (a delivery, kick or shutdown
    /// that came just after its last look) is woken at once, from inside `admit`: that must
    /// neither deadlock nor lose the wake-up.
    #[test]
    fn admit_with_a_pending_signal_wakes_at_once() {
        let (dormitory, _poll) = Dormitory::new().unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let _peer = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (stream, _) = listener.accept().unwrap();
        stream.set_nonblocking(true).unwrap();
        let mailbox = Arc::new(Mailbox::new(10, false));
        mailbox.wake();
        let dormant = Dormant::new(stream, client(&mailbox));
        let (tx, rx) = std::sync::mpsc::channel();
        let d = dormitory.clone();
        std::thread::spawn(move || {
            let admitted = d.admit(dormant).is_ok();
            let _ = tx.send(admitted);
        });
        let admitted = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("admit deadlocked");
        assert!(admitted);
        assert_eq!(dormitory.len(), 1);
        let mut rung = Vec::new();
        dormitory.shared.bell.take_rung(&mut rung);
        assert_eq!(rung.len(), 1, "wake-up lost");
    }
}
