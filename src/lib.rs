//! Tern, an MQTT 3.1.1 and 5.0 broker.

pub mod broker;
pub mod config;
pub mod metrics;
pub mod protocol;
pub mod session;
mod server;
pub mod topic;

pub use config::Config;
pub use server::{Broker, StartError};
