//! Integration tests: a real broker on a real socket, driven by independent clients.

mod harness;
