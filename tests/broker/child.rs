//! The real `tern` binary as a child process, configured through a file, killed with SIGKILL or
//! stopped with a signal: for the tests of what only a process shows (persistence across
//! `kill -9`, the HTTP listener, signals).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A `tern` process on an ephemeral port.
pub struct ChildBroker {
    child: Child,
    /// Every log line so far.
    log: Arc<Mutex<Vec<String>>>,
    /// The MQTT listener.
    pub addr: SocketAddr,
    /// The HTTP listener (/metrics, /health, /ready).
    pub http: SocketAddr,
}

impl ChildBroker {
    /// Starts the binary with persistence in `dir` (on or off) and waits until it listens.
    pub fn start(dir: &Path, persistence: bool, durability: &str) -> ChildBroker {
        ChildBroker::start_with(dir, persistence, durability, "")
    }

    /// Like [`ChildBroker::start`], with `extra` TOML (other sections) in the config file.
    pub fn start_with(dir: &Path, persistence: bool, durability: &str, extra: &str) -> ChildBroker {
        ChildBroker::start_at(dir, persistence, durability, extra, 0)
    }

    /// Like [`ChildBroker::start_with`], listening on `port` (0: any free one).
    pub fn start_at(
        dir: &Path,
        persistence: bool,
        durability: &str,
        extra: &str,
        port: u16,
    ) -> ChildBroker {
        let config = dir.join("tern.toml");
        std::fs::write(
            &config,
            format!(
                "[listener]\nbind = \"127.0.0.1\"\nport = {port}\n\n[http]\nport = 0\n\n[persistence]\nenabled = {persistence}\npath = {:?}\ndurability = \"{durability}\"\n\n{extra}",
                dir.join("data")
            ),
        )
        .unwrap();
        ChildBroker::spawn(&config, Duration::from_secs(30))
            .unwrap_or_else(|log| panic!("tern did not start:\n{}", log.join("\n")))
    }

    /// Starts the binary with `config` and waits (at most `within`) until it logs both
    /// listeners' addresses; its log instead, if it exits or does not listen in time.
    pub fn spawn(config: &Path, within: Duration) -> Result<ChildBroker, Vec<String>> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tern"))
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let lines = Arc::clone(&log);
        // Reads the log until both listeners' addresses appear, then keeps draining it.
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            let (mut mqtt, mut http) = (None, None);
            let after = |line: &str, key: &str| {
                line.split(key)
                    .nth(1)
                    .and_then(|rest| rest.split(|c: char| c.is_whitespace() || c == '/').next())
                    .and_then(|a| a.parse::<SocketAddr>().ok())
            };
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line.clone());
                mqtt = mqtt.or_else(|| after(&line, " address="));
                http = http
                    .or_else(|| after(&line, "url=http://"))
                    .or_else(|| after(&line, "url=https://"));
                if let (Some(m), Some(h)) = (mqtt, http) {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send((m, h));
                    }
                }
            }
        });
        match rx.recv_timeout(within) {
            Ok((addr, http)) => Ok(ChildBroker {
                child,
                log,
                addr,
                http,
            }),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                let lines = log.lock().unwrap().clone();
                Err(lines)
            }
        }
    }

    /// Sends SIGHUP (reload the configuration).
    pub fn hup(&self) {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-HUP", &pid]).status().unwrap();
    }

    /// Waits (at most 10 s) until the `n`th log line containing `needle` appears; returns it.
    pub fn wait_log(&self, needle: &str, n: usize) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let found: Vec<String> = self
                .log
                .lock()
                .unwrap()
                .iter()
                .filter(|l| l.contains(needle))
                .cloned()
                .collect();
            if found.len() >= n {
                return found[n - 1].clone();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no log line {n} with {needle:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Every log line so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// How many log lines so far contain `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// SIGTERM, then waits (at most 15 s) for the exit; its exit code.
    pub fn terminate(mut self) -> Option<i32> {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "tern still running after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no shutdown path runs.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for ChildBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
