//! SIGTERM of a hub with a QoS 1 backlog on a real mosquitto (with persistence) loses
//! nothing: the bridge acknowledges a message only once the hub has taken it, stops taking
//! (and acknowledging) when the hub starts closing, and the hub drains what it took before
//! it exits. A restarted hub gets the rest from the broker. Before, SIGTERM with a backlog
//! of 5,000 lost 2,347: the bridge acknowledged messages on arrival.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, Event as MqttEvent, MqttOptions};

const MESSAGES: usize = 5_000;

/// The payloads (`{"n":N}` → N) the function ran, with how many runs in all.
fn ran(record: &Path) -> (HashSet<usize>, usize) {
    let text = std::fs::read_to_string(record).unwrap_or_default();
    let mut runs = 0;
    let seen = text
        .lines()
        .filter_map(|l| {
            let payload = l.split_once(' ')?.1;
            let n = serde_json::from_str::<serde_json::Value>(payload).ok()?["n"].as_u64()?;
            runs += 1;
            Some(n as usize)
        })
        .collect();
    (seen, runs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_qos1_backlog_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let persistence = format!(
        "persistence true\npersistence_location {}/\nmax_queued_messages 100000\n",
        dir.path().display()
    );
    let Some(broker) = fnhub_testkit::Mosquitto::start(&persistence) else {
        return;
    };
    let port = broker.port();

    let config = dir.path().join("hub.toml");
    let record = dir.path().join("ran.txt");
    std::fs::write(
        &config,
        format!(
            "[hub]\nname = \"term\"\nworkers = 2\n\n[http]\nlisten = \"127.0.0.1:0\"\nauth = \"none\"\n\n\
             [mqtt]\nurl = \"mqtt://127.0.0.1:{port}\"\nclient_id = \"hub-term\"\ninbound = [\"in/#\"]\n\n\
             [[flow]]\nsource = \"any\"\ntopic = \"in/#\"\ntarget = \"function:record\"\n"
        ),
    )
    .unwrap();
    let (mut hub, _) = common::start_event_hub(&config, &record);

    // A device that publishes at QoS 1 and counts the broker's acknowledgements.
    let mut options = MqttOptions::new("device-term", "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(5));
    let (device, mut events) = AsyncClient::new(options, 10_000);
    let (acked_tx, mut acked) = tokio::sync::watch::channel(0usize);
    tokio::spawn(async move {
        let mut n = 0;
        while let Ok(event) = events.poll().await {
            if let MqttEvent::Incoming(Packet::PubAck(_)) = event {
                n += 1;
                let _ = acked_tx.send(n);
            }
        }
    });
    // Until the hub's subscription is in place upstream, a message may go nowhere: a
    // warm-up message (n = MESSAGES) is sent until it has run.
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        device
            .publish(
                "in/warmup",
                QoS::AtLeastOnce,
                false,
                format!("{{\"n\":{MESSAGES}}}"),
            )
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        if ran(&record).0.contains(&MESSAGES) {
            break;
        }
        assert!(Instant::now() < until, "the hub never took a message");
    }
    let warmups = *acked.borrow();
    for n in 0..MESSAGES {
        device
            .publish("in/data", QoS::AtLeastOnce, false, format!("{{\"n\":{n}}}"))
            .await
            .unwrap();
    }
    let wanted = warmups + MESSAGES;
    tokio::time::timeout(Duration::from_secs(30), acked.wait_for(|n| *n >= wanted))
        .await
        .expect("the broker took every message")
        .unwrap();

    // The hub runs ~400 a second: most of the 5,000 wait on the broker when it is told to
    // stop. It drains what it took and exits.
    let status = Command::new("kill")
        .args(["-TERM", &hub.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || hub.wait().unwrap())
        .await
        .unwrap();
    assert!(exit.success(), "the hub's exit: {exit}");
    let (at_stop, _) = ran(&record);
    let done_at_stop = (0..MESSAGES).filter(|n| at_stop.contains(n)).count();
    assert!(
        done_at_stop < MESSAGES,
        "every message ran before the SIGTERM: the test shows nothing"
    );

    // The restarted hub gets the rest from the broker.
    let (mut hub, _) = common::start_event_hub(&config, &record);
    let until = Instant::now() + Duration::from_secs(60);
    let (seen, runs) = loop {
        let (seen, runs) = ran(&record);
        if (0..MESSAGES).all(|n| seen.contains(&n)) || Instant::now() > until {
            break (seen, runs);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let lost: Vec<usize> = (0..MESSAGES).filter(|n| !seen.contains(n)).collect();
    eprintln!(
        "{MESSAGES} published; {done_at_stop} ran before the SIGTERM; {} lost; {runs} runs in all \
         (warm-ups and messages run twice included)",
        lost.len()
    );
    assert!(
        lost.is_empty(),
        "{} of {MESSAGES} lost: {:?}…",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
    hub.kill().unwrap();
    hub.wait().unwrap();
}
