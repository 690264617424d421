//! One bridge's connection: the event loop that sends the outbox within the broker's
//! window, takes inbound messages to the sink, reconnects with backoff and resubscribes;
//! and the counters its [`MqttBridge`](super::MqttBridge) reads.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use fnhub_core::{Event, EventSink, EventSource, PublishError};
use rumqttc::Outgoing;
use rumqttc::v5::mqttbytes::QoS as RQoS;
use rumqttc::v5::mqttbytes::v5::{Filter, Packet, Publish, PublishProperties};
use rumqttc::v5::{AsyncClient, ConnectionError, Event as MqttEvent, MqttOptions};
use tokio::sync::{mpsc, watch};

use super::{CORRELATION_HEADER, MqttConfig, OutboundRule, Qos, RESPONSE_TOPIC_HEADER, to_hex};
use crate::bus::Subscription;
use crate::topic::TopicName;

#[derive(Debug, Default)]
pub(super) struct Counters {
    /// Signalled when the buffer empties or the connection drops: see
    /// [`MqttBridge::flushed`].
    pub(super) settled: tokio::sync::Notify,
    /// Signalled on every connect: see [`Connections`](super::Connections).
    pub(super) connected_again: tokio::sync::Notify,
    pub(super) connected: AtomicBool,
    pub(super) connects: AtomicU64,
    pub(super) inbound: AtomicU64,
    pub(super) inbound_dropped: AtomicU64,
    pub(super) inbound_oversized: AtomicU64,
    pub(super) outbound: AtomicU64,
    pub(super) outbound_dropped: AtomicU64,
    pub(super) buffered: AtomicU64,
    /// The last connection error, and whether the broker refused the hub.
    pub(super) last_error: parking_lot::Mutex<Option<(String, bool)>>,
}

/// Upstream messages waiting for the sink, at most; the broker is asked to hold back QoS 1
/// messages past half of it.
const INTAKE: usize = 256;

/// QoS 0 messages (their payload bytes) that wait for the intake at most; past this they
/// are dropped and counted, as QoS 0 allows.
const HELD_QOS0_BYTES: usize = 4 << 20;

/// How long sending waits after finding rumqttc's request queue full, unless an event from
/// its event loop comes first.
const QUEUE_FULL_RETRY: Duration = Duration::from_millis(1);

pub(super) fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Counts an inbound message dropped for `reason`, in the bridge's stats and the
/// `fnhub_mqtt_inbound_dropped_total{reason}` metric, and says so in the log: the first
/// drop at once, then at most one line a second with the number since.
pub(super) fn dropped_inbound(counters: &Counters, reason: &'static str, topic: &str) {
    bump(&counters.inbound_dropped);
    metrics::counter!("fnhub_mqtt_inbound_dropped_total", "reason" => reason).increment(1);
    static LOGGED: AtomicU64 = AtomicU64::new(0);
    static SINCE: AtomicU64 = AtomicU64::new(0);
    let unlogged = SINCE.fetch_add(1, Ordering::Relaxed) + 1;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let last = LOGGED.load(Ordering::Relaxed);
    if now > last
        && LOGGED
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        SINCE.fetch_sub(unlogged, Ordering::Relaxed);
        tracing::warn!(
            reason,
            topic,
            dropped = unlogged,
            "inbound MQTT messages dropped"
        );
    }
}

impl Counters {
    /// Records the buffer's length; its emptying wakes [`MqttBridge::flushed`].
    fn set_buffered(&self, n: usize) {
        let before = self.buffered.swap(n as u64, Ordering::Relaxed);
        metrics::gauge!("fnhub_mqtt_buffered").set(n as f64);
        if n == 0 && before != 0 {
            self.settled.notify_waiters();
        }
    }

    fn set_disconnected(&self) {
        self.connected.store(false, Ordering::Relaxed);
        self.settled.notify_waiters();
    }
}

/// One outbound message.
#[derive(Debug, Clone)]
pub(super) struct Message {
    pub(super) seq: u64,
    pub(super) topic: String,
    pub(super) payload: Bytes,
    pub(super) qos: Qos,
    pub(super) properties: Vec<(String, String)>,
    pub(super) correlation: Option<Bytes>,
}

/// The local subscriptions of the outbound rules, read by the connection's loop itself
/// (a task per subscription cost every outbound message one more task wake-up).
pub(super) struct Outbound {
    subs: Vec<(Subscription, OutboundRule)>,
    seq: Arc<AtomicU64>,
    /// Where the next poll starts, so that a busy subscription does not starve the rest.
    next: usize,
}

impl Outbound {
    pub(super) fn new(subs: Vec<(Subscription, OutboundRule)>, seq: Arc<AtomicU64>) -> Outbound {
        Outbound { subs, seq, next: 0 }
    }

    /// The next message of any subscription; pending while none has one, and for ever
    /// once every subscription has ended (the bus is gone).
    fn poll_next(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Message> {
        use std::task::Poll;
        let n = self.subs.len();
        let mut i = 0;
        while i < n {
            let at = (self.next + i) % n;
            let (sub, rule) = &mut self.subs[at];
            match sub.poll_recv(cx) {
                Poll::Ready(Some(event)) => {
                    if event.source == EventSource::Cloud {
                        continue; // came from upstream: never echo it back
                    }
                    self.next = (at + 1) % n;
                    return Poll::Ready(Message {
                        seq: self.seq.fetch_add(1, Ordering::Relaxed),
                        topic: format!("{}{}", rule.remote_prefix, event.topic),
                        payload: event.payload,
                        qos: rule.qos,
                        properties: event
                            .headers
                            .iter()
                            .map(|(k, v)| (k.to_owned(), v.to_owned()))
                            .collect(),
                        correlation: None,
                    });
                }
                // Ended: dropped, so it is not polled again.
                Poll::Ready(None) => {
                    self.subs.swap_remove(at);
                    return self.poll_next(cx);
                }
                Poll::Pending => i += 1,
            }
        }
        Poll::Pending
    }

    async fn next(&mut self) -> Message {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }
}

/// The outbound buffer: waiting messages, and those handed to the client but not yet
/// acknowledged, in order.
pub(super) struct Outbox {
    pub(super) waiting: VecDeque<Message>,
    pub(super) capacity: usize,
    /// Handed to the client, not yet written (their packet ids come in this order).
    pub(super) submitted: VecDeque<Message>,
    /// Written at QoS 1, by packet id, until acknowledged.
    pub(super) inflight: HashMap<u16, Message>,
}

impl Outbox {
    pub(super) fn push(&mut self, m: Message, counters: &Counters) {
        if self.waiting.len() + self.submitted.len() + self.inflight.len() >= self.capacity
            && self.waiting.pop_front().is_some()
        {
            bump(&counters.outbound_dropped);
            metrics::counter!("fnhub_mqtt_outbound_dropped_total").increment(1);
        }
        self.waiting.push_back(m);
    }

    /// After a broken connection: everything not acknowledged waits again, oldest first.
    pub(super) fn requeue(&mut self) {
        let mut back: Vec<Message> = self.inflight.drain().map(|(_, m)| m).collect();
        back.extend(self.submitted.drain(..));
        back.sort_by_key(|m| m.seq);
        for m in back.into_iter().rev() {
            self.waiting.push_front(m);
        }
    }

    pub(super) fn len(&self) -> usize {
        self.waiting.len() + self.submitted.len() + self.inflight.len()
    }
}

pub(super) fn options(config: &MqttConfig) -> MqttOptions {
    let mut o = MqttOptions::new(config.client_id.clone(), config.host.clone(), config.port);
    o.set_keep_alive(config.keep_alive)
        .set_clean_start(false)
        .set_session_expiry_interval(Some(
            u32::try_from(config.session_expiry.as_secs()).unwrap_or(u32::MAX),
        ))
        // A QoS 1 message is acknowledged once the hub has taken it (see `take_inbound`),
        // and the broker sends at most INTAKE of them unacknowledged: so the intake never
        // fills with them, the event loop never waits on it, and rumqttc keeps being
        // polled and sending the acknowledgements (waiting there deadlocked: the
        // acknowledgements sat in rumqttc's request queue, which only polling drains).
        .set_manual_acks(true)
        .set_receive_maximum(Some(INTAKE as u16 / 2))
        .set_connection_timeout(5)
        // Also rumqttc's own limit on what it reads (10 KiB by default, past which one
        // large message broke the connection on every redelivery).
        .set_max_packet_size(Some(config.max_packet_bytes()))
        // rumqttc keeps a slot per packet id up to this limit, made up front: left at its
        // default (65,535) that is ~14 MiB per connection for a bridge that never has more
        // than its window in flight.
        .set_outgoing_inflight_upper_limit(u16::try_from(config.window.max(1)).unwrap_or(u16::MAX));
    if let Some(tls) = &config.tls {
        o.set_transport(rumqttc::Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(tls.client.clone()),
        ));
    }
    if let Some((user, password)) = &config.credentials {
        o.set_credentials(user.clone(), password.clone());
    }
    o
}

pub(super) async fn run(
    config: MqttConfig,
    sink: Arc<dyn EventSink>,
    mut rx: mpsc::Receiver<Message>,
    mut local: Outbound,
    counters: Arc<Counters>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut outbox = Outbox {
        waiting: VecDeque::new(),
        capacity: config.buffer.max(1),
        submitted: VecDeque::new(),
        inflight: HashMap::new(),
    };
    let mut backoff = config.backoff_min;
    let mut local_open = true;
    loop {
        // A fresh client per connection: what was in flight is ours to send again, so
        // nothing depends on the broker having kept the session.
        let (client, eventloop) =
            AsyncClient::new(options(&config), config.window * 2 + INTAKE + 16);
        // rumqttc's `poll` must not be dropped half-way (it may have taken a request and be
        // writing it), so it runs on a task of its own and hands its events over.
        let (events_tx, mut events) = mpsc::channel(1024);
        let poller = tokio::spawn(poll_events(eventloop, events_tx));
        // Upstream messages are handed to the sink, in order, off the event loop, which
        // keeps answering the broker meanwhile, and a QoS 1 message is acknowledged only
        // once the sink has taken it: one the hub refuses (it is shutting down) stays the
        // broker's, to be sent again on the next connection. The broker holds back QoS 1
        // messages past our receive maximum (see `options`); QoS 0 messages that find the
        // intake full wait with them, up to `HELD_QOS0_BYTES`, past which they are dropped
        // and counted.
        let (inbound, inbound_rx) = mpsc::channel::<Publish>(INTAKE);
        let worker = tokio::spawn(take_inbound(
            config.clone(),
            sink.clone(),
            counters.clone(),
            inbound_rx,
            client.clone(),
        ));
        let mut connected = false;
        let mut window = config.window;
        // Messages the intake had no room for, oldest first. The event loop never waits for
        // the intake: if it did, rumqttc would stop being polled, and the acknowledgements
        // of what the intake took would never leave (a deadlock seen with a backlog of
        // thousands). The broker sends at most our receive maximum of QoS 1 messages
        // unacknowledged, which bounds those; QoS 0 ones are bounded by their bytes.
        let mut held: VecDeque<Publish> = VecDeque::new();
        let mut held_qos0_bytes = 0usize;
        // Set when rumqttc's request queue was full: sending waits for its next event (it
        // drains the queue only as it is polled) or a moment, instead of trying again at
        // once. Trying again at once never yielded: the loop spent tokio's budget, after
        // which it could no longer receive the events that would have freed the queue.
        let mut queue_full: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
        let ended = loop {
            counters.set_buffered(outbox.len());
            let can_send = connected
                && queue_full.is_none()
                && !outbox.waiting.is_empty()
                && outbox.submitted.len() + outbox.inflight.len() < window;
            tokio::select! {
                _ = stopped.changed() => break true,
                permit = inbound.reserve(), if !held.is_empty() => match permit {
                    Ok(permit) => {
                        if let Some(p) = held.pop_front() {
                            if p.qos == RQoS::AtMostOnce {
                                held_qos0_bytes -= p.payload.len();
                            }
                            permit.send(p);
                        }
                    }
                    Err(_) => break false,
                },
                m = rx.recv(), if local_open => match m {
                    Some(m) => outbox.push(m, &counters),
                    None => local_open = false,
                },
                m = local.next() => outbox.push(m, &counters),
                () = std::future::ready(()), if can_send => {
                    if let Some(m) = outbox.waiting.pop_front() {
                        let props = PublishProperties {
                            user_properties: m.properties.clone(),
                            correlation_data: m.correlation.clone(),
                            ..PublishProperties::default()
                        };
                        match client.try_publish_with_properties(
                            m.topic.clone(), m.qos.mqtt(), false, m.payload.clone(), props,
                        ) {
                            Ok(()) => outbox.submitted.push_back(m),
                            Err(_) => {
                                outbox.waiting.push_front(m);
                                queue_full = Some(Box::pin(tokio::time::sleep(QUEUE_FULL_RETRY)));
                            }
                        }
                    }
                }
                // rumqttc made progress (any event) or a moment passed: its queue has room
                // again, most likely.
                () = async { if let Some(wait) = queue_full.as_mut() { wait.await } }, if queue_full.is_some() => {
                    queue_full = None;
                }
                ev = events.recv() => { queue_full = None; match ev.unwrap_or(Err(ConnectionError::RequestsDone)) {
                    Ok(MqttEvent::Incoming(Packet::ConnAck(ack))) => {
                        // Never more in flight than the broker takes: a publish rumqttc
                        // cannot send yet would hold up, in the same queue, the
                        // acknowledgements of what the broker sent us.
                        let receive_max = ack
                            .properties
                            .as_ref()
                            .and_then(|p| p.receive_max)
                            .map_or(u16::MAX as usize, usize::from);
                        window = config.window.min(receive_max).max(1);
                        connected = true;
                        backoff = config.backoff_min;
                        counters.connected.store(true, Ordering::Relaxed);
                        bump(&counters.connects);
                        *counters.last_error.lock() = None;
                        metrics::counter!("fnhub_mqtt_connects_total").increment(1);
                        counters.connected_again.notify_waiters();
                        tracing::info!(host = %config.host, port = config.port, "mqtt bridge connected");
                        let filters: Vec<Filter> = config
                            .inbound
                            .iter()
                            .map(|r| Filter::new(r.remote.as_str(), r.qos.mqtt()))
                            .collect();
                        if !filters.is_empty() {
                            // Every time: a broker that lost the session lost these too.
                            let _ = client.try_subscribe_many(filters);
                        }
                    }
                    Ok(MqttEvent::Incoming(Packet::Publish(p))) => {
                        if p.qos == RQoS::AtMostOnce {
                            // A burst waits (as it would in the broker for a client that
                            // reads no faster), in order with the rest, within a bound.
                            let p = if held.is_empty() {
                                match inbound.try_send(p) {
                                    Ok(()) => continue,
                                    Err(mpsc::error::TrySendError::Full(p)) => p,
                                    Err(mpsc::error::TrySendError::Closed(_)) => break false,
                                }
                            } else {
                                p
                            };
                            if held_qos0_bytes + p.payload.len() <= HELD_QOS0_BYTES {
                                held_qos0_bytes += p.payload.len();
                                held.push_back(p);
                            } else {
                                dropped_inbound(&counters, "intake_full", &String::from_utf8_lossy(&p.topic));
                            }
                        } else if !held.is_empty() {
                            held.push_back(p);
                        } else if let Err(e) = inbound.try_send(p) {
                            match e {
                                mpsc::error::TrySendError::Full(p) => held.push_back(p),
                                mpsc::error::TrySendError::Closed(_) => break false,
                            }
                        }
                    }
                    Ok(MqttEvent::Incoming(Packet::PubAck(ack))) => {
                        if outbox.inflight.remove(&ack.pkid).is_some() {
                            bump(&counters.outbound);
                                metrics::counter!("fnhub_mqtt_messages_total", "direction" => "out").increment(1);
                        }
                    }
                    Ok(MqttEvent::Outgoing(Outgoing::Publish(pkid))) => {
                        if let Some(m) = outbox.submitted.pop_front() {
                            if pkid == 0 || m.qos == Qos::AtMostOnce {
                                bump(&counters.outbound);
                                metrics::counter!("fnhub_mqtt_messages_total", "direction" => "out").increment(1);
                            } else {
                                outbox.inflight.insert(pkid, m);
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(error) => {
                        let refused = refused_by_broker(&error);
                        let was = counters.last_error.lock().replace((error.to_string(), refused));
                        if connected {
                            tracing::warn!(%error, "mqtt bridge lost its connection");
                        } else if refused {
                            // Said once per distinct error, not on every retry.
                            if was.is_none_or(|(e, _)| e != error.to_string()) {
                                tracing::error!(%error, host = %config.host, port = config.port, "the broker refused the mqtt bridge; retrying");
                            }
                        } else {
                            tracing::debug!(%error, "mqtt bridge could not connect");
                        }
                        break false;
                    }
                }},
            }
        };
        counters.set_disconnected();
        // What was received goes on to the sink; its acknowledgements go nowhere, so the
        // broker sends those messages again on the next connection.
        drop(inbound);
        drop(worker);
        outbox.requeue();
        counters.set_buffered(outbox.len());
        if ended {
            let _ = tokio::time::timeout(Duration::from_millis(200), client.disconnect()).await;
            let _ = tokio::time::timeout(Duration::from_millis(200), events.recv()).await;
            poller.abort();
            return;
        }
        poller.abort();
        drop(events);
        // Wait before the next attempt, still taking local events into the buffer.
        // Jitter: between half and all of the backoff, so hubs that lost one broker
        // together do not come back in step.
        let wake = tokio::time::sleep(jittered(backoff));
        tokio::pin!(wake);
        loop {
            tokio::select! {
                () = &mut wake => break,
                _ = stopped.changed() => return,
                m = rx.recv(), if local_open => match m {
                    Some(m) => outbox.push(m, &counters),
                    None => local_open = false,
                },
                m = local.next() => outbox.push(m, &counters),
            }
        }
        backoff = (backoff * 2).min(config.backoff_max);
    }
}

/// Whether the broker (or its TLS side) turned the hub away: a CONNACK refusal (bad
/// username or password, not authorised), a failed TLS handshake, or a TLS alert it sent
/// (an unknown CA, a bad certificate): retrying will not help until the config changes.
fn refused_by_broker(error: &ConnectionError) -> bool {
    if matches!(
        error,
        ConnectionError::ConnectionRefused(_) | ConnectionError::Tls(_)
    ) {
        return true;
    }
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = next {
        if e.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io
                .get_ref()
                .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
        {
            return true;
        }
        next = e.source();
    }
    // rumqttc keeps only the text of an I/O error met while reading packets; a TLS alert
    // the broker sent after the handshake (TLS 1.3 checks client certificates then) shows
    // there.
    error.to_string().contains("fatal alert")
}

/// Between half and all of `backoff`, at random.
fn jittered(backoff: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    // A cheap mix of the clock's low bits: enough to spread reconnects.
    let unit = f64::from(nanos.wrapping_mul(2_654_435_761) % 1_000_000) / 1_000_000.0;
    backoff.mul_f64(0.5 + unit / 2.0)
}

/// Drives one connection's event loop until it fails, handing every event over.
pub(super) async fn poll_events(
    mut eventloop: rumqttc::v5::EventLoop,
    tx: mpsc::Sender<Result<MqttEvent, ConnectionError>>,
) {
    loop {
        let event = eventloop.poll().await;
        let failed = event.is_err();
        if tx.send(event).await.is_err() || failed {
            return;
        }
    }
}

/// Hands upstream messages to the sink one by one, acknowledging each QoS 1 message the
/// sink took (or that can never be taken, so the broker stops sending it).
pub(super) async fn take_inbound(
    config: MqttConfig,
    sink: Arc<dyn EventSink>,
    counters: Arc<Counters>,
    mut rx: mpsc::Receiver<Publish>,
    client: AsyncClient,
) {
    while let Some(p) = rx.recv().await {
        let verdict = receive(&config, &sink, &counters, &p).await;
        if verdict == Verdict::Keep {
            // Not acknowledged: the broker sends it again on the next connection. What
            // follows it is refused too (the hub is closing), and stays unacknowledged.
            continue;
        }
        if p.qos == RQoS::AtMostOnce {
            continue;
        }
        // rumqttc's request queue is full only for a moment while it is being polled
        // (which the event loop never stops doing). Once the connection is gone (the
        // intake is closed), the broker sends the message again instead.
        while client.try_ack(&p).is_err() {
            if rx.is_closed() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

/// What becomes of one upstream message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Taken by the sink: acknowledge it.
    Taken,
    /// Never to be taken (malformed, too large, for no rule): acknowledge and drop it.
    Dropped,
    /// Refused for now (the hub is closing): leave it unacknowledged with the broker.
    Keep,
}

/// Hands one upstream message to the sink.
pub(super) async fn receive(
    config: &MqttConfig,
    sink: &Arc<dyn EventSink>,
    counters: &Counters,
    p: &Publish,
) -> Verdict {
    let Ok(topic) = std::str::from_utf8(&p.topic) else {
        dropped_inbound(counters, "bad_topic", "");
        return Verdict::Dropped;
    };
    let Ok(name) = TopicName::new(topic) else {
        dropped_inbound(counters, "bad_topic", topic);
        return Verdict::Dropped;
    };
    let Some(rule) = config.inbound.iter().find(|r| r.remote.matches(&name)) else {
        // A message for a subscription of an earlier session.
        dropped_inbound(counters, "no_rule", topic);
        return Verdict::Dropped;
    };
    if p.payload.len() > config.max_message_bytes as usize {
        // Acknowledged all the same (the broker stops resending it), and said.
        bump(&counters.inbound_oversized);
        metrics::counter!("fnhub_mqtt_inbound_dropped_total", "reason" => "oversized").increment(1);
        tracing::warn!(
            topic,
            bytes = p.payload.len(),
            limit = config.max_message_bytes,
            "an inbound MQTT message over the size limit was dropped"
        );
        return Verdict::Dropped;
    }
    let mut event = Event::new(
        format!("{}{topic}", rule.local_prefix),
        p.payload.clone(),
        EventSource::Cloud,
    );
    if let Some(props) = &p.properties {
        for (k, v) in &props.user_properties {
            event.headers.insert(k.clone(), v.clone());
        }
        if let Some(topic) = &props.response_topic {
            event.headers.insert(RESPONSE_TOPIC_HEADER, topic.clone());
        }
        if let Some(data) = &props.correlation_data {
            event.headers.insert(CORRELATION_HEADER, to_hex(data));
        }
    }
    // A full queue: a QoS 0 message gets a few short waits before it is dropped; a QoS 1
    // message waits for as long as it takes (the broker holds the rest meanwhile).
    let mut attempt: u32 = 0;
    loop {
        match sink.publish(event).await {
            Ok(()) => {
                bump(&counters.inbound);
                metrics::counter!("fnhub_mqtt_messages_total", "direction" => "in").increment(1);
                return Verdict::Taken;
            }
            Err(PublishError::Full(back)) if p.qos != RQoS::AtMostOnce || attempt < 5 => {
                attempt = attempt.saturating_add(1);
                event = back;
                tokio::time::sleep(Duration::from_millis(10 << attempt.min(4))).await;
            }
            Err(PublishError::Full(_)) => {
                dropped_inbound(counters, "queue_full", topic);
                return Verdict::Dropped;
            }
            Err(PublishError::Closed(_)) if p.qos != RQoS::AtMostOnce => return Verdict::Keep,
            Err(PublishError::Closed(_)) => {
                dropped_inbound(counters, "closed", topic);
                return Verdict::Dropped;
            }
            Err(error) => {
                tracing::warn!(%error, "inbound mqtt message refused");
                dropped_inbound(counters, "invalid", topic);
                return Verdict::Dropped;
            }
        }
    }
}
