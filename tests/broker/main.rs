//! Integration tests: a real broker on a real socket, driven by independent clients.
#![allow(clippy::unwrap_used, missing_docs)]

mod harness;
mod publish_qos;
mod rmq;
mod support;
mod wire;
mod subscribe;
mod shared;
mod retain;
mod will;
mod session;
mod v5_features;
