//! `tern cluster status`: what the cluster looks like from NATS, read without joining it: the
//! nodes with a heartbeat, how many client ids each holds, and the streams with the NATS
//! servers that replicate them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use futures_util::StreamExt;

use super::{connect, owner, ClusterError, Names};
use crate::config::ClusterConfig;

/// Reads the cluster's state and renders it as text.
pub async fn status(config: &ClusterConfig) -> Result<String, ClusterError> {
    let client = connect(config, "status").await?;
    let info = client.server_info();
    let js = jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(config.unavailable_timeout_secs.max(1)))
        .build(client);
    let names = Names::new(&config.name);
    let fail = |what: &str| {
        let what = what.to_string();
        move |e: String| ClusterError::JetStream { what, message: e }
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "cluster {} (through NATS server {} {})",
        config.name, info.server_name, info.version
    );
    let nodes = js
        .get_key_value(&names.nodes)
        .await
        .map_err(|e| fail("open the members' bucket")(e.to_string()))?;
    let owners = js
        .get_key_value(&names.owners)
        .await
        .map_err(|e| fail("open the ownership bucket")(e.to_string()))?;
    let held = owner::count_by_node(&owners)
        .await
        .map_err(fail("read the ownership bucket"))?;
    let _ = writeln!(out, "nodes:");
    let mut keys = nodes
        .keys()
        .await
        .map_err(|e| fail("read the members' bucket")(e.to_string()))?;
    let mut listed = Vec::new();
    while let Some(Ok(node)) = keys.next().await {
        listed.push(node);
    }
    listed.sort();
    for node in &listed {
        let Ok(Some(e)) = nodes.entry(node.clone()).await else {
            continue;
        };
        if e.operation != kv::Operation::Put {
            continue;
        }
        let age = owner::age(&e);
        let state = if age < owner::ALIVE {
            "alive"
        } else {
            "silent"
        };
        let _ = writeln!(
            out,
            "  {node:<20} {state:<7} heartbeat {:.1} s ago, run {}, clients {}, persistent sessions {}",
            age.as_secs_f64(),
            String::from_utf8_lossy(&e.value),
            held.get(node).map_or(0, |h| h.0),
            held.get(node).map_or(0, |h| h.1),
        );
    }
    for (node, (n, sessions)) in held.iter().filter(|(n, _)| !listed.contains(n)) {
        let _ = writeln!(
            out,
            "  {node:<20} gone    clients {n}, persistent sessions {sessions}"
        );
    }
    let _ = writeln!(out, "streams:");
    for name in [&names.msgs, &names.retain, &names.owners, &names.nodes] {
        let stream_name = if name == &names.owners || name == &names.nodes {
            format!("KV_{name}")
        } else {
            name.clone()
        };
        let mut stream = js
            .get_stream(&stream_name)
            .await
            .map_err(|e| fail("read the streams")(e.to_string()))?;
        let i = stream
            .info()
            .await
            .map_err(|e| fail("read the streams")(e.to_string()))?;
        let (leader, replicas) = match &i.cluster {
            Some(c) => (
                c.leader.clone().unwrap_or_else(|| "none".into()),
                c.replicas
                    .iter()
                    .map(|p| {
                        let state = if p.offline {
                            "offline"
                        } else if p.current {
                            "current"
                        } else {
                            "behind"
                        };
                        format!("{} ({state})", p.name)
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            None => ("-".into(), String::new()),
        };
        let _ = writeln!(
            out,
            "  {stream_name:<24} messages {:>9}  bytes {:>11}  leader {leader}  replicas {replicas}",
            i.state.messages, i.state.bytes
        );
    }
    queues(&js, &names.msgs, &mut out).await;
    let _ = writeln!(out, "NATS servers (as this one knows them):");
    let _ = writeln!(out, "  {} {} (connected)", info.server_name, info.version);
    for url in &info.connect_urls {
        let _ = writeln!(out, "  {url}");
    }
    Ok(out)
}

/// The queues and shared groups open in the cluster: their consumers on the message stream,
/// with what waits for them (not yet taken by a node) and what nodes hold unacknowledged.
async fn queues(js: &jetstream::Context, msgs: &str, out: &mut String) {
    let Ok(stream) = js.get_stream(msgs).await else {
        return;
    };
    let mut consumers = stream.consumers();
    let mut lines = Vec::new();
    while let Some(Ok(c)) = consumers.next().await {
        if !c.name.starts_with("queue-") {
            continue;
        }
        lines.push(format!(
            "  {:<40} waiting {:>9}  held by nodes {:>7}",
            c.config.description.unwrap_or_default(),
            c.num_pending,
            c.num_ack_pending
        ));
    }
    lines.sort();
    let _ = writeln!(out, "queues and shared groups (by filter):");
    for l in lines {
        let _ = writeln!(out, "{l}");
    }
}

/// Client ids per owning node, and how many of them have a persistent session, for `status`.
pub(super) type Held = BTreeMap<String, (usize, usize)>;
