//! This node's copy of the cluster's retained messages. The retained stream holds the last
//! message per topic; an ordered consumer reads the last of each at start, then every change,
//! into the broker's own retained store, so a SUBSCRIBE matches retained messages locally.
//! Before a SUBSCRIBE is handled the node asks the stream how far it goes and waits until its
//! copy has caught up that far: a retained message acknowledged anywhere before the SUBSCRIBE
//! is sent to it.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use futures_util::StreamExt;
use tokio::sync::watch;

use super::subject::{Subjects, CLASS_RETAINED};
use super::{js_err, wire, ClusterError};
use crate::broker::{BrokerState, Waiting};
use crate::metrics;
use crate::session::Message;

/// How long a starting node waits to copy the retained messages before it gives up.
const CATCH_UP: Duration = Duration::from_secs(120);

pub(super) struct Handle {
    js: jetstream::Context,
    stream: String,
    /// The stream sequence of the last change applied here.
    applied: watch::Sender<u64>,
}

impl Handle {
    pub(super) fn new(js: jetstream::Context, stream: String) -> Handle {
        Handle {
            js,
            stream,
            applied: watch::Sender::new(0),
        }
    }

    /// Starts the copy; returns once it holds everything the stream held at the call.
    pub(super) async fn start(
        &self,
        state: &Arc<BrokerState>,
        subjects: &Subjects,
    ) -> Result<(), ClusterError> {
        let stream = self
            .js
            .get_stream(&self.stream)
            .await
            .map_err(|e| js_err("open the retained stream")(e.to_string()))?;
        let last = stream.cached_info().state.last_sequence;
        let mut messages = open(&stream, subjects).await?;
        let (state, subjects, applied) =
            (Arc::clone(state), subjects.clone(), self.applied.clone());
        tokio::spawn(async move {
            loop {
                copy(&state, &subjects, &applied, messages).await;
                metrics::cluster_error("mirror");
                // Opened again from the last message of each topic: applying them again
                // changes nothing that is current.
                loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    match open(&stream, &subjects).await {
                        Ok(m) => {
                            messages = m;
                            break;
                        }
                        Err(e) => tracing::warn!(error = %e, "opening the retained stream again"),
                    }
                }
            }
        });
        let mut applied = self.applied.subscribe();
        let caught_up = tokio::time::timeout(CATCH_UP, async {
            applied.wait_for(|a| *a >= last).await.is_ok()
        })
        .await;
        match caught_up {
            Ok(true) => Ok(()),
            _ => Err(ClusterError::JetStream {
                what: "copy the retained messages".into(),
                message: format!("not caught up to sequence {last} in {CATCH_UP:?}"),
            }),
        }
    }

    /// Resolves once this copy holds what the stream holds now (or after `timeout`, counted).
    pub(super) fn synced(&self, timeout: Duration) -> Waiting<()> {
        let js = self.js.clone();
        let name = self.stream.clone();
        let mut applied = self.applied.subscribe();
        Box::pin(async move {
            let wait = async {
                let last = js
                    .get_stream(&name)
                    .await
                    .map_err(|e| e.to_string())?
                    .cached_info()
                    .state
                    .last_sequence;
                applied
                    .wait_for(|a| *a >= last)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok::<(), String>(())
            };
            match tokio::time::timeout(timeout, wait).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    metrics::cluster_error("mirror");
                    tracing::debug!(error = %e, "retained copy not checked before SUBSCRIBE");
                }
                Err(_) => {
                    metrics::cluster_error("mirror");
                    tracing::debug!("retained copy not caught up before SUBSCRIBE");
                }
            }
        })
    }
}

/// An ordered consumer over the last message of every retained topic, then every change.
async fn open(
    stream: &jetstream::stream::Stream,
    subjects: &Subjects,
) -> Result<jetstream::consumer::pull::Ordered, ClusterError> {
    use jetstream::consumer::{pull, DeliverPolicy};
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            deliver_policy: DeliverPolicy::LastPerSubject,
            filter_subject: subjects.all(CLASS_RETAINED),
            ..pull::OrderedConfig::default()
        })
        .await
        .map_err(|e| js_err("read the retained stream")(e.to_string()))?;
    consumer
        .messages()
        .await
        .map_err(|e| js_err("read the retained stream")(e.to_string()))
}

/// Applies what `messages` delivers to the broker's retained store until it ends.
async fn copy(
    state: &BrokerState,
    subjects: &Subjects,
    applied: &watch::Sender<u64>,
    mut messages: jetstream::consumer::pull::Ordered,
) {
    while let Some(m) = messages.next().await {
        let m = match m {
            Ok(m) => m,
            Err(e) => {
                metrics::cluster_error("mirror");
                tracing::warn!(error = %e, "reading the retained stream");
                continue;
            }
        };
        let Some(topic) = subjects.topic_of(&m.subject) else {
            continue;
        };
        let mut msg =
            match wire::message(topic.clone(), m.payload.clone(), m.headers.as_ref(), true) {
                Ok(msg) => msg,
                // Expired on the way, or unreadable: not retained here.
                Err(_) => deletion(topic),
            };
        if let Some(msg) = Arc::get_mut(&mut msg) {
            msg.publish.retain = true;
        }
        state.retain_remote(&msg);
        let seq = m.info().map(|i| i.stream_sequence).unwrap_or(0);
        applied.send_if_modified(|a| {
            let newer = seq > *a;
            if newer {
                *a = seq;
            }
            newer
        });
    }
    tracing::warn!("the retained stream's consumer ended; opening it again");
}

/// What deletes `topic`'s retained message here.
fn deletion(topic: String) -> Arc<Message> {
    let publish = crate::protocol::Publish {
        dup: false,
        qos: crate::protocol::QoS::AtMostOnce,
        retain: true,
        topic,
        pkid: 0,
        payload: bytes::Bytes::new(),
        properties: Default::default(),
    };
    Arc::new(Message::new(publish, None, std::time::Instant::now()))
}
