//! Reading the store back at start: retained messages, sessions with their subscriptions,
//! flows and wills, and the stored messages each session is still owed.

use super::*;
use crate::logged::clip;

/// Reads every retained message back; returns the deletes for records that expired or could not
/// be read.
pub(super) fn recover(engine: &dyn Engine) -> Result<(Recovered, Vec<Op>), StoreError> {
    let mut recovered = Recovered::default();
    let mut cleanup = Vec::new();
    let now = (Instant::now(), SystemTime::now());
    engine.scan(Space::Retained, b"", &mut |key, value| {
        match decode_message(value, now) {
            Ok(Some(msg)) if msg.topic().as_bytes() == key => {
                recovered.retained.push(Arc::new(msg));
            }
            Ok(None) => cleanup.push(Op::Delete(Space::Retained, key.to_vec())),
            Ok(Some(_)) | Err(_) => {
                warn!(key = %String::from_utf8_lossy(key), "unreadable retained message dropped");
                recovered.unreadable += 1;
                cleanup.push(Op::Delete(Space::Retained, key.to_vec()));
            }
        }
        true
    })?;
    recover_sessions(engine, &mut recovered, &mut cleanup)?;
    Ok((recovered, cleanup))
}

/// Reads persistent sessions and their subscriptions. Sessions whose expiry ran out while Tern
/// was down are forgotten; the downtime counts against the others.
fn recover_sessions(
    engine: &dyn Engine,
    recovered: &mut Recovered,
    cleanup: &mut Vec<Op>,
) -> Result<(), StoreError> {
    let now = SystemTime::now();
    let clock = (Instant::now(), now);
    let mut sessions = Vec::new();
    engine.scan(Space::Sessions, b"", &mut |key, value| {
        match (split_client_key(key), decode_session(value, clock)) {
            (Some((id, [])), Some((expiry, disconnected, will))) => {
                let down = disconnected
                    .and_then(|t| now.duration_since(t).ok())
                    .map_or(0, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX));
                // The will is due: after what is left of its delay, or when the session ends.
                let will = will.and_then(|(delay, msg)| {
                    msg.map(|m| (m, delay.saturating_sub(down), disconnected.unwrap_or(now)))
                });
                if expiry == NEVER_EXPIRES {
                    sessions.push((id.to_string(), expiry, NEVER_EXPIRES, will));
                } else if down < expiry {
                    sessions.push((id.to_string(), expiry, expiry - down, will));
                } else {
                    // Ended while Tern was down: its will, if any, is published at start.
                    if let Some((m, _, t)) = will {
                        recovered.ended_wills.push((m, t));
                    }
                    cleanup.extend(forget_ops(id));
                }
            }
            _ => {
                warn!(key = %String::from_utf8_lossy(key), "unreadable session dropped");
                recovered.unreadable += 1;
                cleanup.push(Op::Delete(Space::Sessions, key.to_vec()));
            }
        }
        true
    })?;
    for (client_id, expiry_interval, remaining, will) in sessions {
        let mut subscriptions = Vec::new();
        engine.scan(
            Space::Subscriptions,
            &client_key(&client_id),
            &mut |key, value| {
                let filter = split_client_key(key).and_then(|(_, f)| std::str::from_utf8(f).ok());
                match (filter, decode_subscription(value)) {
                    (Some(f), Some(sub)) => subscriptions.push((f.to_string(), sub)),
                    _ => {
                        warn!(%client_id, "unreadable subscription dropped");
                        recovered.unreadable += 1;
                        cleanup.push(Op::Delete(Space::Subscriptions, key.to_vec()));
                    }
                }
                true
            },
        )?;
        let (released, sent, inbound_qos2) = recover_flows(engine, &client_id, recovered, cleanup)?;
        recovered.sessions.push(StoredSession {
            client_id,
            expiry_interval,
            remaining,
            subscriptions,
            queue: Vec::new(),
            released,
            inflight: Vec::new(),
            sent,
            inbound_qos2,
            will,
        });
    }
    recover_log(engine, recovered, cleanup)
}

/// A client's outbound flows at PUBREL, sent-unacknowledged packet ids by sequence, and
/// inbound QoS 2 packet ids.
type Flows = (Vec<PacketId>, HashMap<u64, PacketId>, Vec<PacketId>);

fn recover_flows(
    engine: &dyn Engine,
    client_id: &str,
    recovered: &mut Recovered,
    cleanup: &mut Vec<Op>,
) -> Result<Flows, StoreError> {
    let prefix = client_key(client_id);
    let mut pkids = |space: Space, format: u8, what: &str| {
        let mut out = Vec::new();
        engine.scan(space, &prefix, &mut |key, value| {
            let pkid = key
                .get(prefix.len()..)
                .and_then(|s| <[u8; 2]>::try_from(s).ok())
                .and_then(|b| PacketId::new(u16::from_be_bytes(b)));
            match pkid {
                Some(p) if value == [format] => out.push(p),
                _ => {
                    warn!(%client_id, what, "unreadable flow record dropped");
                    recovered.unreadable += 1;
                    cleanup.push(Op::Delete(space, key.to_vec()));
                }
            }
            true
        })?;
        Ok::<_, StoreError>(out)
    };
    let inbound = pkids(Space::InflightIn, INBOUND_RECORD_V1, "inbound QoS 2")?;
    let mut released = Vec::new();
    let mut sent = HashMap::new();
    engine.scan(Space::InflightOut, &prefix, &mut |key, value| {
        let pkid = key
            .get(prefix.len()..)
            .and_then(|s| <[u8; 2]>::try_from(s).ok())
            .and_then(|b| PacketId::new(u16::from_be_bytes(b)));
        match (pkid, value) {
            (Some(p), [RELEASED_RECORD_V1]) => released.push(p),
            (Some(p), [SENT_RECORD_V1, seq @ ..]) if seq.len() == 8 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(seq);
                sent.insert(u64::from_be_bytes(b), p);
            }
            _ => {
                warn!(%client_id, "unreadable outbound flow record dropped");
                recovered.unreadable += 1;
                cleanup.push(Op::Delete(Space::InflightOut, key.to_vec()));
            }
        }
        true
    })?;
    Ok((released, sent, inbound))
}

/// Reads the stored messages in order and queues each for its recipients that still have a
/// session and have not acknowledged it. Messages nobody is owed any more, or expired, go.
fn recover_log(
    engine: &dyn Engine,
    recovered: &mut Recovered,
    cleanup: &mut Vec<Op>,
) -> Result<(), StoreError> {
    let mut acks: HashSet<Vec<u8>> = HashSet::new();
    engine.scan(Space::Acks, b"", &mut |key, _| {
        acks.insert(key.to_vec());
        true
    })?;
    let index: HashMap<String, usize> = recovered
        .sessions
        .iter()
        .enumerate()
        .map(|(i, s)| (s.client_id.clone(), i))
        .collect();
    let now = (Instant::now(), SystemTime::now());
    let mut unreadable = 0;
    engine.scan(Space::Queue, b"", &mut |key, value| {
        let Ok(seq) = <[u8; 8]>::try_from(key).map(u64::from_be_bytes) else {
            unreadable += 1;
            cleanup.push(Op::Delete(Space::Queue, key.to_vec()));
            return true;
        };
        recovered.max_seq = recovered.max_seq.max(seq);
        let parsed = split_log(value)
            .and_then(|(recipients, body)| Ok((recipients, body, message_expired(body, now.1)?)));
        let (recipients, body) = match parsed {
            Ok((_, _, true)) => {
                cleanup.extend(forget_message(seq));
                return true;
            }
            Ok((recipients, body, false)) => (recipients, body),
            Err(e) => {
                warn!(seq, error = %e, "unreadable stored message dropped");
                unreadable += 1;
                cleanup.extend(forget_message(seq));
                return true;
            }
        };
        // Decoded only for deliveries sent before the stop (resent at once); the others are
        // read back when their client drains its queue.
        let mut msg: Option<Arc<Message>> = None;
        let mut bytes: Option<u32> = None;
        let mut owed = 0u32;
        for r in recipients {
            let Some(&i) = index.get(&r.client_id) else {
                continue;
            };
            if acks.contains(&ack_key(seq, &r.client_id)) {
                continue;
            }
            let session = &mut recovered.sessions[i];
            let Some(&pkid) = session.sent.get(&seq) else {
                owed += 1;
                let bytes = *bytes.get_or_insert_with(|| payload_len(body));
                session.queue.push((seq, bytes));
                continue;
            };
            if msg.is_none() {
                match decode_message(body, now) {
                    Ok(Some(m)) => msg = Some(Arc::new(m)),
                    Ok(None) => continue,
                    Err(e) => {
                        warn!(seq, error = %e, "unreadable stored message dropped");
                        unreadable += 1;
                        continue;
                    }
                }
            }
            let Some(m) = &msg else { continue };
            owed += 1;
            let d = Delivery::new(Arc::clone(m), r.qos, r.retain)
                .with_sub_ids(r.sub_ids)
                .with_seq(Seq::new(seq));
            session.inflight.push((Some(pkid), d));
        }
        if owed == 0 {
            cleanup.extend(forget_message(seq));
        } else {
            recovered.pending.insert(seq, i64::from(owed));
        }
        true
    })?;
    recovered.unreadable += unreadable;
    for session in &mut recovered.sessions {
        resend_in_order(engine, session, now, &mut recovered.unreadable)?;
    }
    Ok(())
}

/// Deliveries queued before the last one known to have been sent were most likely sent too
/// (QoS 1 packet ids are not stored): they go out again first, in their order, so a restart
/// never reorders what a client receives.
fn resend_in_order(
    engine: &dyn Engine,
    session: &mut StoredSession,
    now: (Instant, SystemTime),
    unreadable: &mut usize,
) -> Result<(), StoreError> {
    let Some(last_sent) = session
        .inflight
        .iter()
        .filter_map(|(_, d)| d.seq.map(Seq::get))
        .max()
    else {
        return Ok(());
    };
    let earlier = session
        .queue
        .iter()
        .take_while(|(s, _)| *s < last_sent)
        .count();
    let mut qos0 = Vec::new();
    for (seq, bytes) in session.queue.drain(..earlier).collect::<Vec<_>>() {
        let record = engine.get(Space::Queue, &seq.to_be_bytes())?;
        match record.map(|r| delivery_for(&r, &session.client_id, seq, now)) {
            // Nothing to resend for QoS 0: it stays queued, ahead of the rest.
            Some(Ok(Some(d))) if d.qos == QoS::AtMostOnce => qos0.push((seq, bytes)),
            Some(Ok(Some(d))) => session.inflight.push((None, d)),
            Some(Ok(None)) => {}
            _ => {
                warn!(client_id = %clip(&session.client_id), seq, "unreadable stored message dropped");
                *unreadable += 1;
            }
        }
    }
    session.inflight.sort_by_key(|(_, d)| d.seq);
    session.queue.splice(0..0, qos0);
    Ok(())
}
