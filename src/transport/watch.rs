//! TLS files watched on disk: certbot and cert-manager renew a certificate by writing new
//! files and renaming them over the old ones (or swapping a symbolic link), and expect the
//! server to pick them up without a signal. Every few seconds each listener's files are
//! looked at (modification time, size, inode, links followed); when any changed, the acceptor
//! is built again and swapped in for new handshakes. A file that cannot be used (half written,
//! a key that does not match) keeps the running acceptor and is logged once per change.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use super::TlsError;

/// Time a change is given to settle before the files are read: a renewal that replaces the
/// certificate and then the key is read once, whole.
const SETTLE: Duration = Duration::from_millis(300);

/// What is looked at of one file: its modification time (nanoseconds), size, device and inode;
/// `None` while it cannot be read (missing during a swap).
type Stamp = Option<(i64, i64, u64, u64, u64)>;

fn stamps(paths: &[PathBuf]) -> Vec<Stamp> {
    paths
        .iter()
        .map(|p| {
            std::fs::metadata(p)
                .ok()
                .map(|m| (m.mtime(), m.mtime_nsec(), m.size(), m.dev(), m.ino()))
        })
        .collect()
}

/// Watches `paths` every `every` until `shutdown` flips; on a change builds a new acceptor
/// with `build` and stores it in `target`. `name` says which listener in the logs.
pub fn watch_tls_files(
    name: String,
    paths: Vec<PathBuf>,
    every: Duration,
    build: impl Fn() -> Result<TlsAcceptor, TlsError> + Send + 'static,
    target: Arc<ArcSwap<TlsAcceptor>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut seen = stamps(&paths);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.changed() => return,
            }
            if stamps(&paths) == seen {
                continue;
            }
            // Let a renewal finish (the key follows the certificate), then read what is there.
            tokio::time::sleep(SETTLE).await;
            seen = stamps(&paths);
            // A few small files, read as a SIGHUP reload reads them.
            match build() {
                Ok(fresh) => {
                    target.store(Arc::new(fresh));
                    tracing::info!(listener = %name, "TLS certificate and key changed on disk: reloaded for new connections");
                }
                Err(e) => tracing::warn!(
                    listener = %name,
                    error = %e,
                    "TLS files changed on disk but cannot be used; the running certificate stays"
                ),
            }
        }
    });
}
