//! This node's reading of the message stream: one durable consumer that routes every QoS 1/2
//! message to the sessions here (noting what each persistent session is owed), opened again
//! when it ends or stalls, and, between two of its messages, the read-back of the queues of
//! sessions resumed here.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use tokio::sync::mpsc;

use super::{js_err, records, subject, wire, Cluster, ClusterError, Resuming};
use crate::broker::{BrokerState, Replayed, Resume};

/// How often the node checks that its consumer still delivers.
const WATCHDOG: Duration = Duration::from_secs(10);

type NodeConsumer = jetstream::consumer::Consumer<jetstream::consumer::pull::Config>;

/// How the node's consumer is to be opened.
#[derive(Debug, Clone, Copy)]
enum Reopen {
    /// At start: the existing consumer, or a new one for what comes from now on.
    Start,
    /// Its stream of messages ended: the existing consumer, or, if it is gone (deleted, timed
    /// out), a new one from the message after the last one read.
    Ended(u64),
    /// It stalled: made anew from its acknowledgement floor.
    Stalled(u64),
}

/// This node's durable consumer on the message stream, opened as `how` says.
async fn node_consumer(
    cluster: &Cluster,
    how: Reopen,
) -> Result<(NodeConsumer, jetstream::consumer::pull::Stream), ClusterError> {
    use jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
    let durable = format!("node-{}", cluster.node);
    let stream = cluster
        .js
        .get_stream(&cluster.names.msgs)
        .await
        .map_err(|e| js_err("open the message stream")(e.to_string()))?;
    let deliver_policy = match how {
        Reopen::Start | Reopen::Ended(0) => DeliverPolicy::New,
        Reopen::Ended(last) => DeliverPolicy::ByStartSequence {
            start_sequence: last + 1,
        },
        Reopen::Stalled(start_sequence) => {
            let _ = stream.delete_consumer(&durable).await;
            DeliverPolicy::ByStartSequence { start_sequence }
        }
    };
    let consumer = stream
        .get_or_create_consumer(
            &durable,
            pull::Config {
                durable_name: Some(durable.clone()),
                deliver_policy,
                ack_policy: AckPolicy::Explicit,
                ack_wait: Duration::from_secs(30),
                max_ack_pending: 20_000,
                inactive_threshold: Duration::from_secs(3600),
                ..pull::Config::default()
            },
        )
        .await
        .map_err(|e| js_err(format!("create consumer {durable}"))(e.to_string()))?;
    let messages = consumer
        .messages()
        .await
        .map_err(|e| js_err(format!("read consumer {durable}"))(e.to_string()))?;
    Ok((consumer, messages))
}

/// Reads every QoS 1/2 message of the stream through this node's durable consumer and routes
/// it here. Acknowledged once routed: the subscribers' sessions have it. Consumers are a known
/// class of JetStream bugs (deliveries that stall after a restart or failover): a consumer
/// that ends is opened again, and one with messages pending whose delivered sequence did not
/// move for [`WATCHDOG`] is made anew from its acknowledgement floor.
pub(super) async fn consume(
    cluster: Arc<Cluster>,
    state: &Arc<BrokerState>,
) -> Result<(), ClusterError> {
    let (mut consumer, mut messages) = node_consumer(&cluster, Reopen::Start).await?;
    let Some(mut resumes) = cluster.resumes_rx.lock().take() else {
        return Ok(());
    };
    if let Ok(info) = consumer.info().await {
        // Where this node starts: every session made here from now on starts there too.
        let at = info
            .delivered
            .stream_sequence
            .max(info.ack_floor.stream_sequence);
        cluster.owners.records.routed.store(at, Ordering::Release);
    }
    let state = Arc::clone(state);
    tokio::spawn(async move {
        let mut last = 0;
        crate::metrics::cluster_consumer(true);
        loop {
            let how = read_stream(
                &cluster,
                &state,
                &mut consumer,
                messages,
                &mut last,
                &mut resumes,
            )
            .await;
            crate::metrics::cluster_consumer_recreated(match how {
                Reopen::Stalled(_) => "stalled",
                _ => "ended",
            });
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                match node_consumer(&cluster, how).await {
                    Ok(opened) => {
                        (consumer, messages) = opened;
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "opening the message stream's consumer again")
                    }
                }
            }
        }
    });
    Ok(())
}

/// Routes what `messages` delivers until it ends or stalls; says how to open it again.
/// `last`: the stream sequence of the last message read. Between two messages, it reads back
/// the queues of sessions resumed here.
async fn read_stream(
    cluster: &Cluster,
    state: &BrokerState,
    consumer: &mut NodeConsumer,
    mut messages: jetstream::consumer::pull::Stream,
    last: &mut u64,
    resumes: &mut mpsc::Receiver<Resuming>,
) -> Reopen {
    use futures_util::StreamExt;
    let mut watchdog = tokio::time::interval(WATCHDOG);
    watchdog.tick().await;
    let mut last_delivered = None;
    loop {
        tokio::select! {
            m = messages.next() => {
                let m = match m {
                    Some(Ok(m)) => m,
                    Some(Err(e)) => {
                        use jetstream::consumer::pull::MessagesErrorKind as Kind;
                        crate::metrics::cluster_error("consume");
                        tracing::warn!(error = %e, "reading the message stream");
                        if matches!(e.kind(), Kind::ConsumerDeleted | Kind::PushBasedConsumer | Kind::RequestLimitExceeded) {
                            return Reopen::Ended(*last);
                        }
                        continue;
                    }
                    None => {
                        tracing::warn!("the message stream's consumer ended; opening it again");
                        return Reopen::Ended(*last);
                    }
                };
                let seq = m.info().map_or(0, |info| info.stream_sequence);
                *last = (*last).max(seq);
                let topic = cluster.subjects.topic_of(&m.subject);
                if let Some(topic) = topic.filter(|_| !wire::for_queues_only(m.headers.as_ref())) {
                    match wire::message(topic, m.payload.clone(), m.headers.as_ref(), true) {
                        Ok(msg) => {
                            crate::metrics::cluster_received("stream");
                            let records = &cluster.owners.records;
                            state.route_stream(&msg, &mut records::Noting { records, seq });
                        }
                        Err(e) => {
                            crate::metrics::cluster_error("undecodable");
                            tracing::debug!(subject = %m.subject, error = ?e, "stream message dropped");
                        }
                    }
                }
                cluster.owners.records.routed.fetch_max(*last, Ordering::AcqRel);
                if let Err(e) = m.ack().await {
                    tracing::debug!(error = %e, "stream acknowledgement not sent");
                }
            }
            Some((resume, done)) = resumes.recv() => {
                let upto = cluster.owners.records.routed.load(Ordering::Acquire);
                let read = resume_here(cluster, resume, upto).await;
                let _ = done.send(read);
            }
            _ = watchdog.tick() => {
                let Ok(info) = consumer.info().await else {
                    continue;
                };
                let delivered = info.delivered.stream_sequence;
                if info.num_pending > 0 && last_delivered == Some(delivered) {
                    let floor = info.ack_floor.stream_sequence;
                    tracing::warn!(delivered, pending = info.num_pending, "the message stream's consumer stalled; making it anew");
                    return Reopen::Stalled(floor + 1);
                }
                last_delivered = Some(delivered);
            }
        }
    }
}

/// Reads back the queue of a session resumed here (the stream's messages after its floor, up
/// to `upto`, where this node's routing stands), then installs its subscriptions: from the
/// next message on, routing feeds it.
async fn resume_here(cluster: &Cluster, mut resume: Resume, upto: u64) -> Result<(), String> {
    let records = &cluster.owners.records;
    records.resuming(&resume.client_id, true);
    let read = tokio::time::timeout(cluster.timeout * 2, read_back(cluster, &mut resume, upto))
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "no answer from JetStream in {:?}",
                cluster.timeout * 2
            ))
        });
    if read.is_ok() {
        (resume.install)();
        crate::metrics::cluster_session_resumed();
    } else {
        crate::metrics::cluster_error("resume");
    }
    records.resuming(&resume.client_id, false);
    read
}

/// The messages of the stream after `resume.floor`, up to `upto`, that match its filters, to
/// `resume.deliver`.
async fn read_back(cluster: &Cluster, resume: &mut Resume, upto: u64) -> Result<(), String> {
    use futures_util::StreamExt;
    use jetstream::consumer::{pull, DeliverPolicy};
    if resume.floor >= upto || resume.filters.is_empty() {
        return Ok(());
    }
    let wanted: Vec<String> = resume
        .filters
        .iter()
        .flat_map(|f| cluster.subjects.filter(subject::CLASS_QOS1, f))
        .collect();
    // A consumer takes no overlapping filters: then it reads everything, matched here.
    let filter_subjects = subject::disjoint(&wanted)
        .unwrap_or_else(|| vec![cluster.subjects.all(subject::CLASS_QOS1)]);
    let stream = cluster
        .js
        .get_stream(&cluster.names.msgs)
        .await
        .map_err(|e| e.to_string())?;
    let mut consumer = stream
        .create_consumer(pull::OrderedConfig {
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: resume.floor + 1,
            },
            filter_subjects,
            ..pull::OrderedConfig::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    if consumer
        .info()
        .await
        .map_err(|e| e.to_string())?
        .num_pending
        == 0
    {
        return Ok(());
    }
    let records = &cluster.owners.records;
    let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
    let mut first = true;
    while let Some(m) = messages.next().await {
        let m = m.map_err(|e| e.to_string())?;
        let info = m.info().map_err(|e| e.to_string())?;
        let (seq, left) = (info.stream_sequence, info.pending);
        if seq > upto {
            break;
        }
        if first && seq > resume.floor + 1 && stream_starts_after(&stream, resume.floor).await {
            // The stream let messages go before the session was back (its age or size limit).
            crate::metrics::cluster_error("queue_aged_out");
            tracing::warn!(client_id = %crate::logged::clip(&resume.client_id), floor = resume.floor, "part of a resumed session's queue had left the stream");
        }
        first = false;
        let topic = cluster.subjects.topic_of(&m.subject);
        if let Some(topic) = topic.filter(|_| !wire::for_queues_only(m.headers.as_ref())) {
            if let Ok(msg) = wire::message(topic, m.payload.clone(), m.headers.as_ref(), true) {
                match (resume.deliver)(&msg, seq, seq <= resume.sent) {
                    Replayed::Queued { stored: true } => records.queued(&resume.client_id, seq),
                    Replayed::Full => break,
                    Replayed::Queued { stored: false } | Replayed::Skipped => {}
                }
            }
        }
        if seq >= upto || left == 0 {
            break;
        }
    }
    Ok(())
}

/// Whether the stream's first message comes after `floor + 1`.
async fn stream_starts_after(stream: &jetstream::stream::Stream, floor: u64) -> bool {
    let mut stream = stream.clone();
    stream
        .info()
        .await
        .is_ok_and(|i| i.state.first_sequence > floor + 1)
}
