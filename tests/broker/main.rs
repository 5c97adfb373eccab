//! Integration tests: a real broker on a real socket, driven by independent clients.
#![allow(clippy::unwrap_used, missing_docs)]

mod harness;
mod publish_qos;
mod retain;
mod rmq;
mod session;
mod shared;
mod subscribe;
mod support;
mod v5_features;
mod will;
mod wire;
