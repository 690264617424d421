//! A bridge between the hub and an MQTT broker (feature `mqtt`, MQTT 5 over rumqttc).
//!
//! - **Inbound**: the bridge subscribes to upstream filters and hands each message to an
//!   [`EventSink`] (the hub) as an event from [`EventSource::Cloud`](fnhub_core::EventSource::Cloud), on the same topic or
//!   under a local prefix, in order. MQTT 5 user properties become event headers, so a
//!   `traceparent` sent by a device continues its trace. A QoS 1 message is acknowledged
//!   to the broker only once the sink has taken it (the hub admitted what it triggers); a
//!   sink that refuses it (the hub is closing) leaves it unacknowledged, and the broker
//!   sends it again on the next connection. A full hub slows the bridge rather than losing
//!   the message: the broker holds back QoS 1 messages past the bridge's receive maximum
//!   (128). A crash of the hub's process loses what it had admitted and not yet run (its
//!   queue). A QoS 0 message that finds the intake (256) full waits in order with the rest,
//!   up to 4 MiB of such payloads; past that, or when the hub stays full for a few short
//!   waits, it is dropped; every drop of any kind is counted in [`BridgeStats::inbound_dropped`], in the
//!   `fnhub_mqtt_inbound_dropped_total{reason}` metric, and logged (at most a line a
//!   second, with the number since the last).
//! - **Outbound**: events on local filters are published upstream, at QoS 0 or 1, with the
//!   event's headers (trace context included) as user properties. Events that came from the
//!   cloud are not sent back. User properties named `fnhub-…` are reserved: `fnhub-depth`
//!   carries an event's chain depth, so that hubs bridged to one broker stop a loop between
//!   them (an inbound message's `fnhub-depth` is taken as its depth); subscribers that are
//!   not hubs can ignore them.
//! - **Offline**: outbound messages wait in a bounded buffer (oldest dropped past it, and
//!   counted) and are sent once connected. A QoS 1 message leaves the buffer only when the
//!   broker acknowledges it: whatever was in flight when a connection broke is sent again,
//!   even when the broker restarted and lost its session (rumqttc alone drops such
//!   messages). Delivery is at least once; duplicates are possible after a reconnect.
//! - **Reconnects** with exponential backoff and jitter (half to all of each wait), and
//!   subscribes again after every connect, whether or not the broker kept the session.
//!   The last connection error is in [`BridgeStats::last_error`]; a broker that refuses
//!   the hub (a wrong password, a client certificate it does not trust) sets
//!   [`BridgeStats::refused`], and the hub's `/healthz` answers `503` naming it.
//! - **Secured brokers**: `mqtts://` with [`MqttTls`] (the broker's CA, and an X.509 client
//!   certificate, as AWS IoT Core requires), and [`MqttConfig::with_credentials`].
//!
//! [`BridgeStats`] counts all of it.

mod connection;
#[cfg(test)]
mod tests;
mod tls;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use fnhub_core::EventSink;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::bus::Subscription;
use crate::topic::{TopicError, TopicFilter};
use connection::{Counters, Message, Outbound, run};
pub use tls::MqttTls;

/// Delivery guarantee of a bridged topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Qos {
    /// QoS 0: sent once, may be lost.
    AtMostOnce,
    /// QoS 1: acknowledged, sent again until it is; may arrive twice.
    #[default]
    AtLeastOnce,
}

impl Qos {
    fn mqtt(self) -> rumqttc::v5::mqttbytes::QoS {
        use rumqttc::v5::mqttbytes::QoS as RQoS;
        match self {
            Qos::AtMostOnce => RQoS::AtMostOnce,
            Qos::AtLeastOnce => RQoS::AtLeastOnce,
        }
    }
}

/// Upstream messages on `remote` become local events on `local_prefix` + their topic.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct InboundRule {
    /// The upstream filter subscribed to.
    pub remote: TopicFilter,
    /// Prepended to the topic locally (empty: the same topic).
    pub local_prefix: String,
    /// The subscription's QoS.
    pub qos: Qos,
}

impl InboundRule {
    /// Messages on `remote`, at QoS 1, under the same topic locally.
    pub fn new(remote: TopicFilter) -> InboundRule {
        InboundRule {
            remote,
            local_prefix: String::new(),
            qos: Qos::AtLeastOnce,
        }
    }

    /// Puts them under `prefix` locally (`cloud/` turns `cmd/a` into `cloud/cmd/a`).
    pub fn with_local_prefix(mut self, prefix: impl Into<String>) -> InboundRule {
        self.local_prefix = prefix.into();
        self
    }

    /// Sets the QoS.
    pub fn with_qos(mut self, qos: Qos) -> InboundRule {
        self.qos = qos;
        self
    }
}

/// Local events on `local` are published upstream on `remote_prefix` + their topic.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct OutboundRule {
    /// The local filter.
    pub local: TopicFilter,
    /// Prepended to the topic upstream (empty: the same topic).
    pub remote_prefix: String,
    /// The QoS of the publishes.
    pub qos: Qos,
}

impl OutboundRule {
    /// Events on `local`, at QoS 1, on the same topic upstream.
    pub fn new(local: TopicFilter) -> OutboundRule {
        OutboundRule {
            local,
            remote_prefix: String::new(),
            qos: Qos::AtLeastOnce,
        }
    }

    /// Puts them under `prefix` upstream (`hub-a/` turns `alerts/x` into `hub-a/alerts/x`).
    pub fn with_remote_prefix(mut self, prefix: impl Into<String>) -> OutboundRule {
        self.remote_prefix = prefix.into();
        self
    }

    /// Sets the QoS.
    pub fn with_qos(mut self, qos: Qos) -> OutboundRule {
        self.qos = qos;
        self
    }
}

/// A broker address that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MqttConfigError {
    /// Not `mqtt://host[:port]` or `mqtts://host[:port]`.
    #[error("{0:?} is not an mqtt:// or mqtts://host[:port] address")]
    BadUrl(String),
    /// A rule's filter or prefix does not make valid topics.
    #[error("bad topic in a bridge rule: {0}")]
    Topic(#[from] TopicError),
    /// The TLS files cannot be used.
    #[error("TLS: {0}")]
    Tls(String),
}

/// How the bridge connects and what it carries.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct MqttConfig {
    /// Broker host.
    pub host: String,
    /// Broker port. Default 1883.
    pub port: u16,
    /// The client id; also the key of the broker-side session.
    pub client_id: String,
    /// Keep-alive interval. Default 30 s.
    pub keep_alive: Duration,
    /// How long the broker keeps the session (and queues QoS 1 messages for it) while the
    /// hub is away. Default 1 hour.
    pub session_expiry: Duration,
    /// Upstream → local.
    pub inbound: Vec<InboundRule>,
    /// Local → upstream.
    pub outbound: Vec<OutboundRule>,
    /// Outbound messages kept while offline or unacknowledged. Default 10 000.
    pub buffer: usize,
    /// QoS 1 messages in flight at once. Default 64.
    pub window: usize,
    /// First wait before reconnecting; doubles up to `backoff_max`. Default 100 ms.
    pub backoff_min: Duration,
    /// Longest wait before reconnecting. Default 10 s.
    pub backoff_max: Duration,
    /// The largest inbound message payload the hub takes, in bytes. Default 128 KiB, AWS
    /// IoT Core's limit. A larger one is acknowledged, dropped, logged and counted in
    /// [`BridgeStats::inbound_oversized`]; it never stops the messages behind it. The
    /// broker is told (MQTT 5 Maximum Packet Size) not to send packets over twice this
    /// (plus 64 KiB for topic and properties): it discards those itself, as MQTT 5 asks, so
    /// no packet the client cannot read jams the connection.
    pub max_message_bytes: u32,
    /// TLS (`mqtts://`), with a client certificate when the broker wants one.
    pub tls: Option<MqttTls>,
    /// A username and password for the broker.
    pub credentials: Option<(String, String)>,
}

/// The default of [`MqttConfig::max_message_bytes`]: AWS IoT Core's 128 KiB.
pub const DEFAULT_MAX_MESSAGE_BYTES: u32 = 128 * 1024;

impl MqttConfig {
    /// A bridge to `host:port` as `client_id`, carrying nothing yet.
    pub fn new(host: impl Into<String>, port: u16, client_id: impl Into<String>) -> MqttConfig {
        MqttConfig {
            host: host.into(),
            port,
            client_id: client_id.into(),
            keep_alive: Duration::from_secs(30),
            session_expiry: Duration::from_secs(3600),
            inbound: Vec::new(),
            outbound: Vec::new(),
            buffer: 10_000,
            window: 64,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            tls: None,
            credentials: None,
        }
    }

    /// Connects with TLS: see [`MqttTls::load`].
    pub fn with_tls(mut self, tls: MqttTls) -> MqttConfig {
        self.tls = Some(tls);
        self
    }

    /// Logs in with `username` and `password`.
    pub fn with_credentials(
        mut self,
        username: impl Into<String>,
        password: impl Into<String>,
    ) -> MqttConfig {
        self.credentials = Some((username.into(), password.into()));
        self
    }

    /// Sets the largest inbound payload taken (at least 1 byte); see
    /// [`MqttConfig::max_message_bytes`].
    pub fn with_max_message_bytes(mut self, bytes: u32) -> MqttConfig {
        self.max_message_bytes = bytes.max(1);
        self
    }

    /// The MQTT 5 Maximum Packet Size the bridge announces: room for a message of
    /// [`max_message_bytes`](Self::max_message_bytes) and more, so that oversized ones
    /// up to it reach the bridge to be counted.
    pub(crate) fn max_packet_bytes(&self) -> u32 {
        self.max_message_bytes
            .saturating_mul(2)
            .saturating_add(64 * 1024)
    }

    /// A bridge to `mqtt://host[:port]` (port 1883 unless given), or `mqtts://host[:port]`
    /// (TLS, port 8883 unless given, trusting the system's root certificates).
    pub fn from_url(
        url: &str,
        client_id: impl Into<String>,
    ) -> Result<MqttConfig, MqttConfigError> {
        let (host, port, tls) = parse_url(url)?;
        let config = MqttConfig::new(host, port, client_id);
        if tls {
            return Ok(config.with_tls(MqttTls::load(None, None, None)?));
        }
        Ok(config)
    }

    /// A bridge to `mqtts://host[:port]` with `tls` (its CA and client certificate).
    pub fn from_url_with_tls(
        url: &str,
        client_id: impl Into<String>,
        tls: MqttTls,
    ) -> Result<MqttConfig, MqttConfigError> {
        match parse_url(url)? {
            (host, port, true) => Ok(MqttConfig::new(host, port, client_id).with_tls(tls)),
            _ => Err(MqttConfigError::Tls(format!(
                "{url:?}: certificates need an mqtts:// address"
            ))),
        }
    }

    /// Adds an inbound rule.
    pub fn inbound(mut self, rule: InboundRule) -> MqttConfig {
        self.inbound.push(rule);
        self
    }

    /// Adds an outbound rule.
    pub fn outbound(mut self, rule: OutboundRule) -> MqttConfig {
        self.outbound.push(rule);
        self
    }

    /// Sets the outbound buffer's size.
    pub fn with_buffer(mut self, messages: usize) -> MqttConfig {
        self.buffer = messages.max(1);
        self
    }

    /// Sets the reconnect backoff.
    pub fn with_backoff(mut self, min: Duration, max: Duration) -> MqttConfig {
        self.backoff_min = min;
        self.backoff_max = max.max(min);
        self
    }
}

/// `(host, port, tls)` of an `mqtt://` or `mqtts://` address.
fn parse_url(url: &str) -> Result<(String, u16, bool), MqttConfigError> {
    let bad = || MqttConfigError::BadUrl(url.to_owned());
    let (rest, tls) = match (url.strip_prefix("mqtt://"), url.strip_prefix("mqtts://")) {
        (Some(rest), _) => (rest, false),
        (_, Some(rest)) => (rest, true),
        _ => return Err(bad()),
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().map_err(|_| bad())?),
        None => (rest, if tls { 8883 } else { 1883 }),
    };
    if host.is_empty() || host.contains('/') || port == 0 {
        return Err(bad());
    }
    Ok((host.to_owned(), port, tls))
}

/// What a bridge has done since it started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BridgeStats {
    /// Connected to the broker now.
    pub connected: bool,
    /// Successful connects (1 + reconnects).
    pub connects: u64,
    /// Messages received and handed to the sink.
    pub inbound: u64,
    /// Messages received and dropped: a QoS 0 message the intake or the hub had no room
    /// for, a malformed topic, a message for no inbound rule.
    pub inbound_dropped: u64,
    /// Messages received over [`MqttConfig::max_message_bytes`]: acknowledged and dropped.
    pub inbound_oversized: u64,
    /// Messages published upstream: acknowledged (QoS 1) or written (QoS 0).
    pub outbound: u64,
    /// Messages dropped from a full outbound buffer (the oldest go first).
    pub outbound_dropped: u64,
    /// Messages waiting to be sent or acknowledged now.
    pub buffered: u64,
    /// Why the last connection attempt failed or the last connection was lost, until the
    /// next connect.
    pub last_error: Option<String>,
    /// Whether the broker refused the hub (a wrong password or client certificate, not
    /// authorised, a TLS handshake that failed): retrying will not help until the
    /// config changes.
    pub refused: bool,
}

/// The event header carrying an upstream message's MQTT 5 response topic.
pub const RESPONSE_TOPIC_HEADER: &str = "mqtt-response-topic";
/// The event header carrying an upstream message's MQTT 5 correlation data, in hex.
pub const CORRELATION_HEADER: &str = "mqtt-correlation-data";

/// Publishes messages upstream through a bridge's buffer (so they wait out a lost
/// connection like every outbound message). Cheap to clone.
#[derive(Debug, Clone)]
pub struct BridgePublisher {
    tx: mpsc::Sender<Message>,
    seq: Arc<AtomicU64>,
}

/// One message to publish upstream with a [`BridgePublisher`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Upstream {
    /// The topic.
    pub topic: String,
    /// The payload.
    pub payload: Bytes,
    /// The QoS. Default 1.
    pub qos: Qos,
    /// MQTT 5 user properties.
    pub properties: Vec<(String, String)>,
    /// MQTT 5 correlation data (for a reply to a request).
    pub correlation: Option<Bytes>,
}

impl Upstream {
    /// `payload` on `topic` at QoS 1.
    pub fn new(topic: impl Into<String>, payload: impl Into<Bytes>) -> Upstream {
        Upstream {
            topic: topic.into(),
            payload: payload.into(),
            qos: Qos::AtLeastOnce,
            properties: Vec::new(),
            correlation: None,
        }
    }

    /// Adds a user property.
    pub fn with_property(mut self, key: impl Into<String>, value: impl Into<String>) -> Upstream {
        self.properties.push((key.into(), value.into()));
        self
    }

    /// Sets the correlation data.
    pub fn with_correlation(mut self, data: impl Into<Bytes>) -> Upstream {
        self.correlation = Some(data.into());
        self
    }
}

impl BridgePublisher {
    /// Queues `message` for the broker; waits only while the bridge's intake is full.
    /// `false` when the bridge has stopped.
    pub async fn publish(&self, message: Upstream) -> bool {
        let m = Message {
            seq: self.seq.fetch_add(1, Ordering::Relaxed),
            topic: message.topic,
            payload: message.payload,
            qos: message.qos,
            properties: message.properties,
            correlation: message.correlation,
        };
        self.tx.send(m).await.is_ok()
    }
}

/// Tells of a bridge's connects: to ask the broker for what was missed while offline.
#[derive(Debug, Clone)]
pub struct Connections {
    counters: Arc<Counters>,
    seen: u64,
}

impl Connections {
    /// Waits until the bridge has connected since this handle last looked (at once if it
    /// already has), and returns how many connects it has made in all. Pending for ever
    /// once the bridge has stopped.
    pub async fn next(&mut self) -> u64 {
        loop {
            let again = self.counters.connected_again.notified();
            let now = self.counters.connects.load(Ordering::Relaxed);
            if now > self.seen {
                self.seen = now;
                return now;
            }
            again.await;
        }
    }
}

/// A running bridge. Dropping it stops it; [`shutdown`](Self::shutdown) also says goodbye
/// to the broker and waits for the task.
#[derive(Debug)]
pub struct MqttBridge {
    counters: Arc<Counters>,
    publisher: BridgePublisher,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl Drop for MqttBridge {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

impl MqttBridge {
    /// Starts the bridge on the current tokio runtime: inbound messages go to `sink`, and
    /// `outbound` pairs each outbound rule of `config` (in order) with a local subscription
    /// to its filter, made by the caller (the hub's `subscribe`).
    ///
    /// It connects in the background and keeps trying; [`stats`](Self::stats) says
    /// whether it is connected.
    pub fn start(
        config: MqttConfig,
        sink: Arc<dyn EventSink>,
        outbound: Vec<Subscription>,
    ) -> MqttBridge {
        let counters = Arc::new(Counters::default());
        let (stop, stopped) = watch::channel(false);
        let (tx, rx) = mpsc::channel::<Message>(config.buffer.clamp(1, 4096));
        let seq = Arc::new(AtomicU64::new(0));
        let local = Outbound::new(
            outbound.into_iter().zip(config.outbound.clone()).collect(),
            seq.clone(),
        );
        let publisher = BridgePublisher { tx, seq };
        let task = tokio::spawn(run(config, sink, rx, local, counters.clone(), stopped));
        MqttBridge {
            counters,
            publisher,
            stop,
            task: Some(task),
        }
    }

    /// A handle to publish messages of one's own upstream (replies, reports).
    pub fn publisher(&self) -> BridgePublisher {
        self.publisher.clone()
    }

    /// A handle that tells of each connect, the first included.
    pub fn connections(&self) -> Connections {
        Connections {
            seen: 0,
            counters: self.counters.clone(),
        }
    }

    /// What it has done so far.
    pub fn stats(&self) -> BridgeStats {
        let c = &self.counters;
        let last_error = c.last_error.lock().clone();
        BridgeStats {
            connected: c.connected.load(Ordering::Relaxed),
            connects: c.connects.load(Ordering::Relaxed),
            inbound: c.inbound.load(Ordering::Relaxed),
            inbound_dropped: c.inbound_dropped.load(Ordering::Relaxed),
            inbound_oversized: c.inbound_oversized.load(Ordering::Relaxed),
            outbound: c.outbound.load(Ordering::Relaxed),
            outbound_dropped: c.outbound_dropped.load(Ordering::Relaxed),
            buffered: c.buffered.load(Ordering::Relaxed),
            refused: last_error.as_ref().is_some_and(|(_, r)| *r),
            last_error: last_error.map(|(e, _)| e),
        }
    }

    /// Resolves once nothing is buffered (every message sent, and every QoS 1 message
    /// acknowledged) or the bridge is not connected, so nothing more would go out now: what
    /// a shutdown waits for (bounded by a timeout of its own) before it stops the bridge.
    pub async fn flushed(&self) {
        loop {
            let settled = self.counters.settled.notified();
            let c = &self.counters;
            if c.buffered.load(Ordering::Relaxed) == 0 || !c.connected.load(Ordering::Relaxed) {
                return;
            }
            settled.await;
        }
    }

    /// Stops it: disconnects from the broker and waits for the task. Messages still
    /// buffered are dropped (and stay counted in `buffered`).
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

/// Lowercase hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// The bytes of lowercase or uppercase hex; `None` for anything else.
pub fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}
