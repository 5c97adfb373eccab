//! File descriptors: every connection holds one, so the soft `RLIMIT_NOFILE` (often 1024) and
//! not `limits.max_connections` would cap a broker. At start the soft limit is raised to the
//! hard one, both are logged, and a `max_connections` above it is warned about.

use rlimit::Resource;

/// The soft and hard `RLIMIT_NOFILE` before and after raising.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nofile {
    /// The soft limit the process started with.
    pub was: u64,
    /// The soft limit now.
    pub soft: u64,
    /// The hard limit (the most an unprivileged process may raise the soft one to).
    pub hard: u64,
}

/// Raises this process's soft `RLIMIT_NOFILE` to its hard limit.
pub fn raise_nofile() -> std::io::Result<Nofile> {
    let (was, hard) = rlimit::getrlimit(Resource::NOFILE)?;
    if was < hard {
        rlimit::setrlimit(Resource::NOFILE, hard, hard)?;
    }
    let (soft, hard) = rlimit::getrlimit(Resource::NOFILE)?;
    Ok(Nofile { was, soft, hard })
}

/// [`raise_nofile`], logged; warns when `max_connections` is more than the process can open
/// (each connection is a file descriptor, and the listeners, the store and the log need some).
pub fn raise_and_log(max_connections: usize) {
    match raise_nofile() {
        Ok(n) => {
            tracing::info!(
                soft = n.soft,
                hard = n.hard,
                was = n.was,
                "open file limit (RLIMIT_NOFILE) raised to the hard limit"
            );
            if max_connections as u64 > n.soft {
                tracing::warn!(
                    max_connections,
                    open_file_limit = n.soft,
                    "limits.max_connections is above the open file limit: connections past it \
                     fail at accept; raise the hard limit (LimitNOFILE= in systemd, ulimit -Hn, \
                     docker --ulimit nofile=) or lower max_connections"
                );
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read or raise the open file limit (RLIMIT_NOFILE)")
        }
    }
}

#[cfg(test)]
mod tests {
    /// Raising leaves the soft limit at the hard one, never lower than it was.
    #[test]
    fn soft_limit_reaches_the_hard_one() {
        let n = super::raise_nofile().expect("getrlimit");
        assert_eq!(n.soft, n.hard);
        assert!(n.soft >= n.was);
    }
}
