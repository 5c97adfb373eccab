//! Integration tests: a real broker on a real socket, driven by independent clients.
#![allow(clippy::unwrap_used, missing_docs)]

mod certs;
mod child;
mod connect;
mod dormant;
mod harness;
mod keepalive;
mod limits;
mod malformed;
mod ops;
mod persistence;
mod probe;
mod publish_qos;
mod retain;
mod rmq;
mod session;
mod shared;
mod shutdown;
mod subscribe;
mod support;
mod takeover;
mod tls;
mod v5_features;
mod will;
mod wire;
mod ws;
