//! A NATS cluster that can be split: three nats-server processes whose routes to each other
//! all go through TCP proxies in this process, so one server can be cut off from the other two
//! (its routes dropped and refused) while every client still reaches every server: a network
//! partition between the servers, without privileges (no iptables, no namespaces).
//!
//! Each server routes to each other one through a proxy of its own, named in its `routes`, and
//! advertises a closed port as its route address, so the servers never find direct routes to
//! each other.

use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

/// A route proxy from one server to another.
struct Proxy {
    from: usize,
    to: usize,
    port: u16,
    cut: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn start(from: usize, to: usize, target: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (c, o) = (Arc::clone(&cut), Arc::clone(&open));
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(down) = conn else { continue };
                if c.load(Ordering::Acquire) {
                    let _ = down.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(up) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let _ = (down.set_nodelay(true), up.set_nodelay(true));
                {
                    let mut o = o.lock();
                    o.push(down.try_clone().unwrap());
                    o.push(up.try_clone().unwrap());
                }
                pipe(down.try_clone().unwrap(), up.try_clone().unwrap());
                pipe(up, down);
            }
        });
        Proxy {
            from,
            to,
            port,
            cut,
            open,
        }
    }

    fn set_cut(&self, cut: bool) {
        self.cut.store(cut, Ordering::Release);
        if cut {
            for s in self.open.lock().drain(..) {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
    }
}

/// Copies `from` to `to` on a thread of its own until either side ends.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Three JetStream servers whose routes can be cut.
pub struct Splittable {
    servers: Vec<Child>,
    proxies: Vec<Proxy>,
    _dir: tempfile::TempDir,
    /// `nats://127.0.0.1:PORT`, one per server.
    pub urls: Vec<String>,
}

impl Splittable {
    /// Starts the three servers (`binary`) and waits until each accepts clients.
    pub fn start(binary: &Path) -> Splittable {
        let dir = tempfile::tempdir().unwrap();
        let clients: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let routes: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let mut proxies = Vec::new();
        for from in 0..3 {
            for to in (0..3).filter(|t| *t != from) {
                proxies.push(Proxy::start(from, to, routes[to]));
            }
        }
        let mut servers = Vec::new();
        for i in 0..3 {
            let to_others: Vec<String> = proxies
                .iter()
                .filter(|p| p.from == i)
                .map(|p| format!("nats-route://127.0.0.1:{}", p.port))
                .collect();
            let conf = dir.path().join(format!("n{}.conf", i + 1));
            std::fs::write(
                &conf,
                format!(
                    "server_name: n{n}\nlisten: 127.0.0.1:{client}\n\
                     jetstream {{ store_dir: {store:?} }}\n\
                     cluster {{\n  name: split\n  listen: 127.0.0.1:{route}\n  \
                     advertise: \"127.0.0.1:1\"\n  routes: [{routes}]\n}}\n",
                    n = i + 1,
                    client = clients[i],
                    store = dir.path().join(format!("n{}", i + 1)),
                    route = routes[i],
                    routes = to_others.join(", "),
                ),
            )
            .unwrap();
            let log = std::fs::File::create(dir.path().join(format!("n{}.log", i + 1))).unwrap();
            servers.push(
                Command::new(binary)
                    .arg("-c")
                    .arg(&conf)
                    .stdout(Stdio::null())
                    .stderr(log)
                    .spawn()
                    .unwrap(),
            );
        }
        for port in &clients {
            crate::harness::wait_listening(*port);
        }
        Splittable {
            servers,
            proxies,
            _dir: dir,
            urls: clients
                .iter()
                .map(|p| format!("nats://127.0.0.1:{p}"))
                .collect(),
        }
    }

    /// Cuts server `i` (0-based) off from the other two (`true`), or joins it again.
    pub fn isolate(&self, i: usize, isolated: bool) {
        for p in self.proxies.iter().filter(|p| p.from == i || p.to == i) {
            p.set_cut(isolated);
        }
    }
}

impl Drop for Splittable {
    fn drop(&mut self) {
        for s in &mut self.servers {
            let _ = s.kill();
            let _ = s.wait();
        }
    }
}
