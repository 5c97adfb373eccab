//! Load tool for comparing Tern with other brokers (being written).

fn main() {}
