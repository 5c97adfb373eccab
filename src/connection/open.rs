//! The first phase of a connection: read the CONNECT by an absolute deadline, apply the
//! handshake rules, attach the session (taking it over if needed) and answer with CONNACK.

use super::*;
use crate::auth::{self, Access, Identity, Login, Verdict};

/// The protocol level of `version`: 3 (3.1), 4 (3.1.1) or 5.
fn level(version: ProtocolVersion) -> u8 {
    match version {
        ProtocolVersion::V31 => 3,
        ProtocolVersion::V311 => 4,
        ProtocolVersion::V5 => 5,
    }
}

impl Connection {
    /// Reads and answers the CONNECT, attaches the session; `None` if the connection ended.
    pub(super) async fn open(
        stream: Stream,
        origin: Origin,
        state: Arc<BrokerState>,
        mut shutdown: watch::Receiver<bool>,
        dormitory: Dormitory,
        slot: Slot,
    ) -> Option<Box<Self>> {
        let mut io = Io::new(stream, state.config().limits.max_packet_size);
        let deadline = Instant::now() + state.config().connect_timeout();
        let read = tokio::select! {
            r = io.read_connect(deadline) => r,
            _ = shutdown.changed() => Err("broker shutting down".to_string()),
        };
        let connect = match read {
            Ok(mut c) => {
                metrics::connect_received();
                if origin.cert_identity.is_some() {
                    // The verified certificate names the user, whatever the CONNECT says.
                    c.username = origin.cert_identity.clone();
                }
                c
            }
            Err(end) => {
                debug!(reason = %end, "closed before CONNECT completed");
                io.close_gracefully().await;
                return None;
            }
        };
        let version = connect.version;
        let admitted = {
            let limits = &state.config().limits;
            let now = Instant::now().into_std();
            origin
                .connect_rate
                .admit(limits.max_connect_rate, limits.connect_burst, now)
        };
        if !admitted {
            // Before authentication: a storm never reaches the password hashing.
            metrics::limit_hit("max_connect_rate");
            debug!(client_id = %clip(&connect.client_id), peer = %origin.peer, "CONNECT refused: limits.max_connect_rate");
            refuse(io, version, ReasonCode::ConnectionRateExceeded).await;
            return None;
        }
        let accepted = match handshake::accept(&connect, &state.config()) {
            Ok(a) => a,
            Err(reason) => {
                info!(client_id = %clip(&connect.client_id), ?reason, "CONNECT refused");
                refuse(io, version, reason).await;
                return None;
            }
        };
        let client_id: Arc<str> = accepted.client_id.as_str().into();
        let login = Login {
            client_id: Arc::clone(&client_id),
            username: connect.username.clone(),
            password: connect.password.as_ref().map(|p| p.to_vec()),
            certified: origin.cert_identity.is_some(),
            allow_anonymous: auth::allow_anonymous(&state.config(), origin.allow_anonymous),
            peer: origin.peer,
            listener: Arc::from(state.listener_name(slot.listener_index())),
            protocol_version: level(version),
            cert_identity: origin.cert_identity.clone(),
        };
        let verdict = tokio::select! {
            v = state.auth().login(login, origin.peer.ip()) => v,
            _ = shutdown.changed() => Err(Verdict::NotAuthorized),
        };
        let refused = match &verdict {
            Ok(_) => None,
            Err(Verdict::BadCredentials) => {
                Some(("bad_credentials", ReasonCode::BadUserNameOrPassword))
            }
            Err(Verdict::NotAuthorized) => Some(("not_authorized", ReasonCode::NotAuthorized)),
            Err(Verdict::Unavailable) => Some(("unavailable", ReasonCode::ServerUnavailable)),
        };
        let grant: auth::Grant = verdict.unwrap_or_default();
        if let Some((why, reason)) = refused {
            warn!(
                client_id = %clip(&client_id),
                username = ?clip(connect.username.as_deref().unwrap_or("")),
                peer = %origin.peer,
                reason = why,
                "login refused"
            );
            metrics::auth_failed(why);
            refuse(io, version, reason).await;
            return None;
        }
        // Keep only what the connection needs: the CONNECT itself is not held across awaits.
        let Connect {
            clean_start,
            mut will,
            properties: props,
            username: connect_username,
            bridge,
            ..
        } = *connect;
        // A token names the user; otherwise the CONNECT (or the certificate) does.
        let connect_username = match &grant.username {
            Some(u) => Some(u.to_string()),
            None => connect_username,
        };
        let identity = Identity {
            client_id: Arc::clone(&client_id),
            username: connect_username.as_deref().map(Arc::from),
            rights: grant.rights.clone(),
        };
        if let (Some(w), Some(hook)) = (&will, state.auth().acl_hook()) {
            // The ACL hook is asked about the will's topic now; the check below reads its answer.
            if !identity.rights.as_ref().is_some_and(|r| r.superuser) {
                let question = [(auth::hook::Action::Publish, w.topic.clone())];
                hook.ask_acl(&identity, &question).await;
            }
        }
        if let (Some(w), Some(acl)) = (&will, state.auth().authorizer()) {
            if !acl.allows(&identity, &w.topic, Access::Write) {
                // Never published; the client is still let in, as Mosquitto does.
                metrics::acl_denied("will");
                info!(client_id = %clip(&client_id), topic = %clip(&w.topic), "will dropped: the ACL forbids its topic");
                will = None;
            }
        }
        let mut out = Outbound::new(
            version,
            props.maximum_packet_size,
            props.topic_alias_maximum.unwrap_or(0),
            props.request_problem_information != Some(0),
        );
        drop(props);
        let probe = handshake::connack(&accepted, version, false, &state.config());
        if !out.fits_control(Packet::ConnAck(Box::new(probe))) {
            // Not even a bare CONNACK fits what the client accepts [MQTT-3.1.2-24]: nothing
            // can be said, so nothing is attached.
            info!(client_id = %clip(&client_id), "CONNECT refused: its Maximum Packet Size is too small for a CONNACK");
            metrics::connect_refused(ReasonCode::PacketTooLarge as u8);
            io.close().await;
            return None;
        }
        tracing::Span::current().record("client_id", tracing::field::display(clip(&client_id)));
        // The store keeps the will of a persistent session, so a crash still publishes it.
        let stored_will = will
            .as_ref()
            .filter(|_| state.config().persistence.enabled && accepted.session_expiry > 0)
            .map(|w| (will_message(w.clone()), w.delay_interval.unwrap_or(0)));
        let mut claim = None;
        let mut kept = None;
        if let Some(remote) = state.remote() {
            // One owner per client id cluster-wide: a connection on another node is told to go.
            // The will goes with the claim: another node publishes it if this one dies.
            let will = will.as_ref().map(|w| crate::broker::ClusterWill {
                msg: Arc::new(will_message(w.clone())),
                delay: w.delay_interval.unwrap_or(0),
                expiry: accepted.session_expiry,
            });
            let claimed = tokio::select! {
                c = remote.claim(&client_id, will, clean_start, accepted.session_expiry) => c,
                _ = shutdown.changed() => Err("broker shutting down".to_string()),
            };
            match claimed {
                Ok(c) => {
                    claim = std::num::NonZeroU64::new(c.claim);
                    if c.elsewhere {
                        state.drop_local(&client_id);
                    }
                    if let Some((msg, delay, died)) = c.orphan_will {
                        // If its node died with the connection, the will is due now, unless
                        // the session goes on within its Will Delay [MQTT-3.1.3-9].
                        if c.session.is_none() || delay == 0 {
                            let state = Arc::clone(&state);
                            tokio::spawn(async move {
                                if died.await {
                                    state.publish_orphaned_will(msg);
                                }
                            });
                        }
                    }
                    kept = c.session;
                }
                Err(e) => {
                    warn!(client_id = %clip(&client_id), error = %e, "CONNECT refused: the cluster cannot take ownership of the client id");
                    refuse(io, version, ReasonCode::ServerUnavailable).await;
                    return None;
                }
            }
        }
        state.set_login(
            &client_id,
            connect_username.as_deref(),
            grant.rights.clone(),
        );
        let mut attached = state
            .attach(
                &client_id,
                clean_start,
                accepted.session_expiry,
                accepted.window,
                stored_will.as_ref().map(|(m, d)| (m, *d)),
            )
            .await;
        attached.session.set_claim(claim);
        if let Some(kept) = kept.filter(|_| !attached.session_present) {
            // Kept by the cluster: its subscriptions and queue come back from there.
            if let Err(e) = state.resume_clustered(&mut attached, kept).await {
                warn!(client_id = %clip(&client_id), error = %e, "CONNECT refused: the session kept by the cluster cannot be read back");
                attached.session.set_claim(None);
                state.detach(
                    &client_id,
                    attached.generation,
                    attached.session,
                    &attached.mailbox,
                    None,
                );
                state.drop_local(&client_id);
                refuse(io, version, ReasonCode::ServerUnavailable).await;
                return None;
            }
        }
        // Again: the session this one took over may have ended during `attach` (a clean start,
        // or an old connection with expiry 0), which forgets the client id's login.
        state.set_login(
            &client_id,
            connect_username.as_deref(),
            grant.rights.clone(),
        );
        if let Some(stored) = attached.stored.take().filter(|_| attached.session_present) {
            // "Session present" is a promise that holds across a crash: the session's record
            // is durable first.
            if let Err(e) = stored.wait().await {
                warn!(error = %e, "session record not stored");
            }
        }
        let ack = Packet::ConnAck(Box::new(handshake::connack(
            &accepted,
            version,
            attached.session_present,
            &state.config(),
        )));
        // Shrunk to the client's Maximum Packet Size if need be (checked above that it can be).
        out.ack(&mut io.outbuf, ack);
        metrics::connected(
            slot.listener_kind(),
            match version {
                ProtocolVersion::V31 => "3.1",
                ProtocolVersion::V311 => "3.1.1",
                ProtocolVersion::V5 => "5",
            },
        );
        info!(
            client_id = %clip(&client_id),
            username = ?clip(connect_username.as_deref().unwrap_or("")),
            peer = %origin.peer,
            version = ?version,
            bridge,
            clean_start,
            present = attached.session_present,
            "client connected"
        );
        let info = Arc::new(ClientInfo::new(
            origin.peer,
            slot.listener_index(),
            level(version),
            accepted.keep_alive,
            accepted.session_expiry,
        ));
        state.client_connected(&client_id, attached.generation, Arc::clone(&info));
        if let Some(at) = grant.expires_at {
            // Ended with DISCONNECT 0xA0 (Maximum connect time) when its token expires.
            state.expire_login(&client_id, attached.generation, &attached.mailbox, at);
        }
        let now = Instant::now();
        let client = Client {
            connect_expiry_zero: accepted.session_expiry == 0,
            bridge,
            session: attached.session,
            mailbox: attached.mailbox,
            generation: attached.generation,
            will: will.map(Box::new),
            keep_alive: accepted.keep_alive,
            last_packet: super::Moment::of(now),
            out,
            info,
            _slot: slot,
        };
        let first_wake = next_wake(&state, &client, io.stream.is_tcp(), now, now);
        Some(Box::new(Connection {
            io,
            state,
            first_wake,
            last_activity: now,
            carrier: crate::broker::Carrier::default(),
            effects: Vec::new(),
            dormitory,
            unsendable: false,
            deferred: None,
            client,
        }))
    }
}

/// Refuses a CONNECT with CONNACK `reason`, the connection's last word.
async fn refuse(mut io: Io, version: ProtocolVersion, reason: ReasonCode) {
    metrics::connect_refused(reason as u8);
    let ack = Packet::ConnAck(Box::new(handshake::refusal(reason)));
    metrics::packet_sent(&ack);
    let _ = protocol::encode(&ack, version, &mut io.outbuf);
    io.close_gracefully().await;
}

/// The will as a message to route.
pub(super) fn will_message(w: LastWill) -> Message {
    let publish = Publish {
        dup: false,
        qos: w.qos,
        retain: w.retain,
        topic: w.topic,
        pkid: 0,
        payload: w.payload,
        properties: w.properties.into(),
    };
    Message::new(publish, None, std::time::Instant::now())
}
