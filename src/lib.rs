//! Tern, an MQTT 3.1.1 and 5.0 broker.

pub mod auth;
pub mod bridge;
pub mod broker;
pub mod certs;
pub mod cluster;
pub mod config;
mod connection;
pub mod fds;
mod http;
mod logged;
pub mod metrics;
pub mod protocol;
mod server;
pub mod session;
pub mod store;
mod sys;
pub mod topic;
pub mod transport;

pub use config::Config;
pub use server::{Broker, StartError};
