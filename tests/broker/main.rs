//! Integration tests: a real broker on a real socket, driven by independent clients.
#![allow(clippy::unwrap_used, missing_docs)]

mod connect;
mod harness;
mod keepalive;
mod limits;
mod malformed;
mod probe;
mod shutdown;
mod takeover;
mod wire;
