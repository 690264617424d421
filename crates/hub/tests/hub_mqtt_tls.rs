//! The MQTT bridge to secured brokers, against a real mosquitto: a TLS listener that
//! requires an X.509 client certificate (as AWS IoT Core does), with a CA and certificates
//! made for the test by `openssl`, and a listener that wants a username and password. A
//! wrong certificate or password is refused, said in the bridge's stats and `/healthz`,
//! and retried; the right ones carry messages.
#![cfg(all(feature = "mqtt", feature = "http"))]
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fnhub::bridge::Bridge;
use fnhub::http::{HttpConfig, Ops};
use fnhub::{EdgeHub, Event, EventSource, MqttConfig, MqttTls, OutboundRule};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, Event as MqttEvent, MqttOptions};

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA (`{ca}.pem`, `{ca}.key`), and `name`'s key and certificate signed by it, for
/// 127.0.0.1 and localhost.
fn certificate(dir: &Path, ca: &str, name: &str) {
    let ext = dir.join(format!("{name}.ext"));
    std::fs::write(&ext, "subjectAltName=IP:127.0.0.1,DNS:localhost\n").unwrap();
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={name}"),
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            &format!("{name}.pem"),
            "-extfile",
            &format!("{name}.ext"),
        ],
    );
}

fn authority(dir: &Path, ca: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &format!("{ca}.key"),
            "-out",
            &format!("{ca}.pem"),
            "-days",
            "2",
            "-subj",
            &format!("/CN={ca}"),
        ],
    );
}

struct Broker {
    child: Child,
    plain: u16,
    tls: u16,
    password: u16,
    _dir: tempfile::TempDir,
    certs: PathBuf,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// mosquitto with three listeners: plain (for the test's own client), TLS requiring a
/// client certificate of `ca`, and one that wants `hub` / `right-password`. `None` when
/// mosquitto or openssl is missing (a failure under `CI=true`).
fn broker() -> Option<Broker> {
    let mosquitto = fnhub_testkit::installed(
        &["/usr/sbin/mosquitto", "/usr/bin/mosquitto"],
        "apt-get install mosquitto",
    )?;
    let passwd =
        fnhub_testkit::installed(&["/usr/bin/mosquitto_passwd"], "apt-get install mosquitto")?;
    fnhub_testkit::installed(&["/usr/bin/openssl"], "apt-get install openssl")?;
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().to_owned();
    authority(&certs, "ca");
    certificate(&certs, "ca", "server");
    certificate(&certs, "ca", "hub");
    authority(&certs, "rogue");
    certificate(&certs, "rogue", "impostor");
    let status = Command::new(passwd)
        .args(["-b", "-c"])
        .arg(certs.join("passwords"))
        .args(["hub", "right-password"])
        .status()
        .unwrap();
    assert!(status.success());
    let (plain, tls, password) = (
        fnhub_testkit::free_port(),
        fnhub_testkit::free_port(),
        fnhub_testkit::free_port(),
    );
    let c = |f: &str| certs.join(f).display().to_string();
    let conf = format!(
        // Run as root, mosquitto would become user `mosquitto`, who cannot read the test's
        // private folder.
        "user root\nper_listener_settings true\n\
         listener {plain} 127.0.0.1\nallow_anonymous true\n\
         listener {tls} 127.0.0.1\nallow_anonymous true\ncafile {}\ncertfile {}\nkeyfile {}\n\
         require_certificate true\n\
         listener {password} 127.0.0.1\nallow_anonymous false\npassword_file {}\n",
        c("ca.pem"),
        c("server.pem"),
        c("server.key"),
        c("passwords"),
    );
    std::fs::write(certs.join("mosquitto.conf"), conf).unwrap();
    let child = Command::new(mosquitto)
        .arg("-c")
        .arg(certs.join("mosquitto.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    for port in [plain, tls, password] {
        fnhub_testkit::wait_for_port(port, "mosquitto");
    }
    Some(Broker {
        child,
        plain,
        tls,
        password,
        _dir: dir,
        certs,
    })
}

/// A subscriber on the plain listener; what it receives arrives on the channel.
async fn subscriber(port: u16, filter: &str) -> tokio::sync::mpsc::UnboundedReceiver<String> {
    let mut options = MqttOptions::new("watcher", "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut events) = AsyncClient::new(options, 100);
    client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let _client = client;
        while let Ok(event) = events.poll().await {
            match event {
                MqttEvent::Incoming(Packet::Publish(p)) => {
                    let _ = tx.send(String::from_utf8_lossy(&p.payload).into_owned());
                }
                MqttEvent::Incoming(Packet::SubAck(_)) => {
                    let _ = tx.send("subscribed".into());
                }
                _ => {}
            }
        }
    });
    rx
}

async fn hub_with(config: MqttConfig) -> EdgeHub {
    let hub = EdgeHub::builder().build().unwrap();
    Bridge::new(config.outbound(OutboundRule::new("alerts/#".parse().unwrap())))
        .attach(&hub)
        .unwrap();
    hub
}

/// Waits until the bridge is connected, or refused; its stats then.
async fn settled(hub: &EdgeHub) -> fnhub::BridgeStats {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let s = hub.mqtt_stats().unwrap();
        if s.connected || s.refused {
            return s;
        }
        assert!(
            Instant::now() < until,
            "the bridge neither connected nor was refused: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Publishes an alert until the watcher sees it.
async fn delivered(
    hub: &EdgeHub,
    seen: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
    body: &str,
) {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        hub.publish(Event::new(
            "alerts/hot",
            body.to_owned(),
            EventSource::Local,
        ))
        .unwrap();
        if let Ok(Some(got)) = tokio::time::timeout(Duration::from_millis(500), seen.recv()).await
            && got == body
        {
            return;
        }
        assert!(Instant::now() < until, "{body} never arrived");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_gets_in_and_a_wrong_one_is_refused_and_said() {
    let Some(broker) = broker() else { return };
    let mut seen = subscriber(broker.plain, "alerts/#").await;
    assert_eq!(seen.recv().await.as_deref(), Some("subscribed"));
    let c = |f: &str| broker.certs.join(f);

    let tls = MqttTls::load(Some(&c("ca.pem")), Some(&c("hub.pem")), Some(&c("hub.key"))).unwrap();
    let url = format!("mqtts://127.0.0.1:{}", broker.tls);
    let hub = hub_with(MqttConfig::from_url_with_tls(&url, "hub-tls", tls).unwrap()).await;
    let stats = settled(&hub).await;
    assert!(stats.connected && stats.last_error.is_none(), "{stats:?}");
    delivered(&hub, &mut seen, "over tls").await;
    hub.shutdown().await;

    // A certificate of another CA: the broker refuses the handshake; said, and retried.
    let tls = MqttTls::load(
        Some(&c("ca.pem")),
        Some(&c("impostor.pem")),
        Some(&c("impostor.key")),
    )
    .unwrap();
    let impostor = hub_with(
        MqttConfig::from_url_with_tls(&url, "hub-impostor", tls)
            .unwrap()
            .with_backoff(Duration::from_millis(50), Duration::from_millis(200)),
    )
    .await;
    let stats = settled(&impostor).await;
    assert!(!stats.connected && stats.refused, "{stats:?}");
    assert!(stats.last_error.is_some(), "{stats:?}");
    // /healthz says so.
    let server = fnhub::http::serve_with_ops(
        &impostor,
        "127.0.0.1:0".parse().unwrap(),
        HttpConfig::unauthenticated_loopback(),
        Ops::default(),
    )
    .await
    .unwrap();
    let addr = server.local_addr();
    let (status, body) = tokio::task::spawn_blocking(move || get(addr, "/healthz"))
        .await
        .unwrap();
    assert_eq!(status, 503, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["mqtt"]["refused"], true, "{body}");
    assert!(body["mqtt"]["last_error"].is_string(), "{body}");
    server.shutdown().await;
    impostor.shutdown().await;

    // A CA file that is not there is an error when the config is made.
    assert!(MqttTls::load(Some(&c("missing.pem")), None, None).is_err());
    assert!(MqttTls::load(Some(&c("ca.pem")), Some(&c("hub.pem")), None).is_err());
    assert!(
        MqttConfig::from_url_with_tls(
            "mqtt://127.0.0.1:1",
            "x",
            MqttTls::load(Some(&c("ca.pem")), None, None).unwrap()
        )
        .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_gets_in_and_a_wrong_one_is_refused() {
    let Some(broker) = broker() else { return };
    let mut seen = subscriber(broker.plain, "alerts/#").await;
    assert_eq!(seen.recv().await.as_deref(), Some("subscribed"));
    let url = format!("mqtt://127.0.0.1:{}", broker.password);
    let wrong = hub_with(
        MqttConfig::from_url(&url, "hub-wrong")
            .unwrap()
            .with_credentials("hub", "wrong-password")
            .with_backoff(Duration::from_millis(50), Duration::from_millis(200)),
    )
    .await;
    let stats = settled(&wrong).await;
    assert!(!stats.connected && stats.refused, "{stats:?}");
    wrong.shutdown().await;

    let right = hub_with(
        MqttConfig::from_url(&url, "hub-right")
            .unwrap()
            .with_credentials("hub", "right-password"),
    )
    .await;
    let stats = settled(&right).await;
    assert!(stats.connected, "{stats:?}");
    delivered(&right, &mut seen, "with a password").await;
    right.shutdown().await;
}

fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: hub\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let status = raw.split(' ').nth(1).unwrap().parse().unwrap();
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}
