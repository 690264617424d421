//! The function endpoint with real clients: Python functions under `awslambdaric` call the
//! hub with boto3, unmodified — Lambda `Invoke` of another function, IoT `Publish` onto the
//! hub's router, device shadows — each allowed only as the function's allow-list says, and
//! signed with the credentials the hub minted for it.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{json, python_with_ric};
use fnhub::{EdgeHub, FunctionSpec, Invocation};
use fnhub_core::ServiceAccess;
use serde_json::{Value, json};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/python")
}

fn function(
    python: &std::path::Path,
    name: &str,
    handler: &str,
    access: ServiceAccess,
) -> FunctionSpec {
    common::python_function(python, name, handler, access, Duration::from_secs(20))
}

async fn call(hub: &EdgeHub, function: &str, event: Value) -> Value {
    let inv = Invocation::new(function.parse().unwrap(), event.to_string());
    let completion = hub.call(inv).await.unwrap();
    json(
        &completion
            .outcome
            .unwrap_or_else(|e| panic!("{function}: {e}")),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn functions_call_the_hub_with_boto3() {
    let Some(python) = python_with_ric() else {
        return;
    };
    let mut access = ServiceAccess::default();
    access.invoke = vec!["child".into()];
    access.publish = vec!["alerts/#".into()];
    access.shadows = vec!["lamp-1".into()];
    let hub = EdgeHub::builder()
        .deploy(function(&python, "caller", "aws_client.handle", access))
        .deploy(function(
            &python,
            "child",
            "aws_client.child",
            ServiceAccess::default(),
        ))
        .build()
        .unwrap();
    let mut alerts = hub.subscribe("alerts/#", 16).unwrap();

    // Lambda Invoke of another function: a child of the caller's invocation.
    let out = call(
        &hub,
        "caller",
        json!({"op": "invoke", "target": "child", "payload": {"x": 2}}),
    )
    .await;
    assert_eq!(out["status"], 200, "{out}");
    assert_eq!(out["function_error"], Value::Null, "{out}");
    assert_eq!(out["payload"]["event"], json!({"x": 2}), "{out}");
    // The same trace, and a deadline no later than the caller's.
    let root = |t: &Value| t.as_str().unwrap().split(';').next().unwrap().to_owned();
    assert_eq!(root(&out["payload"]["trace"]), root(&out["trace"]), "{out}");
    assert!(
        out["payload"]["remaining_ms"].as_u64().unwrap() <= out["remaining_ms"].as_u64().unwrap(),
        "the child's deadline is past its caller's: {out}"
    );

    // IoT Publish reaches the hub's router.
    let out = call(
        &hub,
        "caller",
        json!({"op": "publish", "topic": "alerts/hot", "payload": {"t": 99}}),
    )
    .await;
    assert_eq!(out["published"], "alerts/hot", "{out}");
    let event = tokio::time::timeout(Duration::from_secs(5), alerts.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(event.topic, "alerts/hot");
    assert_eq!(
        serde_json::from_slice::<Value>(&event.payload).unwrap(),
        json!({"t": 99})
    );

    // Shadows: update, then get; a stale version is a conflict; a 9 KB document too large.
    let out = call(
        &hub,
        "caller",
        json!({"op": "shadow_update", "thing": "lamp-1",
        "document": r#"{"state":{"desired":{"on":true}}}"#}),
    )
    .await;
    assert_eq!(out["state"]["desired"]["on"], true, "{out}");
    let out = call(
        &hub,
        "caller",
        json!({"op": "shadow_get", "thing": "lamp-1"}),
    )
    .await;
    assert_eq!(out["state"]["desired"]["on"], true, "{out}");
    assert_eq!(out["state"]["delta"]["on"], true, "{out}");
    let out = call(
        &hub,
        "caller",
        json!({"op": "shadow_update", "thing": "lamp-1",
        "document": r#"{"state":{"reported":{"on":false}},"version":99}"#}),
    )
    .await;
    assert_eq!(out, json!({"error": "ConflictException", "status": 409}));
    let big = format!(
        r#"{{"state":{{"reported":{{"x":"{}"}}}}}}"#,
        "a".repeat(9 * 1024)
    );
    let out = call(
        &hub,
        "caller",
        json!({"op": "shadow_update", "thing": "lamp-1", "document": big}),
    )
    .await;
    assert_eq!(out["status"], 413, "{out}");
    let out = call(
        &hub,
        "caller",
        json!({"op": "shadow_update", "thing": "lamp-1", "document": "{not json"}),
    )
    .await;
    assert_eq!(
        out,
        json!({"error": "InvalidRequestException", "status": 400})
    );
    let out = call(
        &hub,
        "caller",
        json!({"op": "shadow_get", "thing": "lamp-1"}),
    )
    .await;
    assert_eq!(
        out["version"], 1,
        "the refused updates changed nothing: {out}"
    );

    // Named shadows: apart from the classic one, listed over two pages by boto3, deleted
    // with AWS's answer; each change announced locally with its documents.
    let mut documents = hub
        .subscribe("$aws/things/lamp-1/shadow/name/+/update/documents", 16)
        .unwrap();
    for name in ["config", "alarm", "firmware"] {
        let out = call(
            &hub,
            "caller",
            json!({"op": "shadow_update", "thing": "lamp-1", "name": name,
            "document": format!(r#"{{"state":{{"desired":{{"mode":"{name}"}}}},"clientToken":"c-{name}"}}"#)}),
        )
        .await;
        assert_eq!(out["version"], 1, "{out}");
        assert_eq!(out["clientToken"], format!("c-{name}"), "{out}");
        assert!(
            out["metadata"]["desired"]["mode"]["timestamp"].is_u64(),
            "{out}"
        );
        let event = tokio::time::timeout(Duration::from_secs(5), documents.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            event.topic.as_ref(),
            format!("$aws/things/lamp-1/shadow/name/{name}/update/documents")
        );
        let docs: Value = serde_json::from_slice(&event.payload).unwrap();
        assert_eq!(docs["current"]["state"]["desired"]["mode"], name, "{docs}");
    }
    let out = call(
        &hub,
        "caller",
        json!({"op": "shadow_list", "thing": "lamp-1", "page": 2}),
    )
    .await;
    assert_eq!(
        out,
        json!({"names": ["alarm", "config", "firmware"], "pages": 2})
    );
    let out = call(
        &hub,
        "caller",
        json!({"op": "shadow_delete", "thing": "lamp-1", "name": "alarm"}),
    )
    .await;
    assert_eq!(out["version"], 1, "{out}");
    let out = call(
        &hub,
        "caller",
        json!({"op": "shadow_get", "thing": "lamp-1", "name": "alarm"}),
    )
    .await;
    assert_eq!(
        out,
        json!({"error": "ResourceNotFoundException", "status": 404})
    );
    let out = call(
        &hub,
        "caller",
        json!({"op": "shadow_get", "thing": "lamp-1", "name": "bad name"}),
    )
    .await;
    assert_eq!(
        out,
        json!({"error": "InvalidRequestException", "status": 400})
    );
    let out = call(
        &hub,
        "caller",
        json!({"op": "shadow_get", "thing": "lamp-1"}),
    )
    .await;
    assert_eq!(out["version"], 1, "the classic shadow is its own: {out}");
    let out = call(
        &hub,
        "caller",
        json!({"op": "shadow_list", "thing": "lamp-2"}),
    )
    .await;
    assert_eq!(out, json!({"error": "ForbiddenException", "status": 403}));

    // Outside the allow-list: refused with AWS's codes.
    let out = call(&hub, "caller", json!({"op": "invoke", "target": "caller"})).await;
    assert_eq!(
        out,
        json!({"error": "AccessDeniedException", "status": 403})
    );
    let out = call(&hub, "caller", json!({"op": "publish", "topic": "other/x"})).await;
    assert_eq!(out, json!({"error": "ForbiddenException", "status": 403}));
    let out = call(
        &hub,
        "caller",
        json!({"op": "shadow_get", "thing": "lamp-2"}),
    )
    .await;
    assert_eq!(out, json!({"error": "ForbiddenException", "status": 403}));

    // Credentials other than the minted ones are refused.
    let out = call(&hub, "caller", json!({"op": "forged", "target": "child"})).await;
    assert_eq!(out["status"], 403, "{out}");

    // Confined, it reaches its endpoint but no other port on the host's loopback.
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = other.local_addr().unwrap().port();
    let out = call(&hub, "caller", json!({"op": "connect", "port": port})).await;
    assert_eq!(out["connected"], false, "{out}");
    hub.shutdown().await;
}

/// One `RequestResponse` invocation over the hub's front door (no authentication).
fn invoke_http(addr: &str, function: &str, event: &Value) -> Value {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let body = event.to_string();
    write!(
        s,
        "POST /2015-03-31/functions/{function}/invocations HTTP/1.1\r\nHost: hub\r\n\
         Connection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    serde_json::from_str(body).unwrap()
}

/// A shadow a function updated is there after the hub is killed with SIGKILL and started
/// again from the same config file.
#[test]
fn shadows_survive_a_sigkill_of_the_hub() {
    let Some(python) = python_with_ric() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hub.toml");
    std::fs::write(
        &config,
        format!(
            "[hub]\nname = \"shadows\"\ncheckpoint_dir = \"{}\"\n\n\
             [http]\nlisten = \"127.0.0.1:0\"\nauth = \"none\"\n\n\
             [[function]]\nname = \"lamp\"\nruntime = \"process\"\n\
             command = [\"{}\", \"-m\", \"awslambdaric\", \"aws_client.handle\"]\n\
             workdir = \"{}\"\ntimeout_ms = 20000\nallow = {{ shadows = [\"lamp-1\"] }}\n",
            dir.path().join("state").display(),
            python.display(),
            fixtures().display()
        ),
    )
    .unwrap();
    let record = dir.path().join("ran.txt");
    let (mut hub, addr) = common::start_event_hub(&config, &record);
    let update = json!({"op": "shadow_update", "thing": "lamp-1",
        "document": r#"{"state":{"desired":{"on":true},"reported":{"on":false}}}"#});
    let accepted = invoke_http(&addr, "lamp", &update);
    assert_eq!(accepted["version"], 1, "{accepted}");
    hub.kill().unwrap();
    hub.wait().unwrap();

    let (mut hub, addr) = common::start_event_hub(&config, &record);
    let doc = invoke_http(
        &addr,
        "lamp",
        &json!({"op": "shadow_get", "thing": "lamp-1"}),
    );
    assert_eq!(doc["version"], 1, "{doc}");
    assert_eq!(doc["state"]["desired"]["on"], true, "{doc}");
    assert_eq!(doc["state"]["delta"]["on"], true, "{doc}");
    hub.kill().unwrap();
    hub.wait().unwrap();
}

/// A shadow a function updated with boto3 is what a device on the broker gets on
/// `$aws/things/lamp-1/shadow/get`; the device's update is what the function then reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn functions_and_devices_share_shadows_over_mqtt() {
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::mqttbytes::v5::Packet;
    use rumqttc::v5::{AsyncClient, Event as MqttEvent, MqttOptions};

    let Some(python) = python_with_ric() else {
        return;
    };
    let Some(broker) = fnhub_testkit::Mosquitto::start("") else {
        return;
    };
    let port = broker.port();

    let mut access = ServiceAccess::default();
    access.shadows = vec!["lamp-1".into()];
    let hub = EdgeHub::builder()
        .deploy(function(&python, "lamp", "aws_client.handle", access))
        .build()
        .unwrap();
    fnhub::bridge::Bridge::new(fnhub::MqttConfig::new("127.0.0.1", port, "hub-shadows"))
        .device_shadows(vec!["lamp-1".into()])
        .attach(&hub)
        .unwrap();
    let out = call(
        &hub,
        "lamp",
        json!({"op": "shadow_update", "thing": "lamp-1",
        "document": r#"{"state":{"desired":{"on":true}}}"#}),
    )
    .await;
    assert_eq!(out["version"], 1, "{out}");

    let mut options = MqttOptions::new("lamp-1", "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(5));
    let (device, mut events) = AsyncClient::new(options, 100);
    device
        .subscribe("$aws/things/lamp-1/shadow/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    let (tx, mut received) = tokio::sync::mpsc::unbounded_channel::<(String, Value)>();
    tokio::spawn(async move {
        while let Ok(event) = events.poll().await {
            if let MqttEvent::Incoming(Packet::Publish(p)) = event {
                let topic = String::from_utf8_lossy(&p.topic).into_owned();
                let body = serde_json::from_slice(&p.payload).unwrap_or(Value::Null);
                let _ = tx.send((topic, body));
            }
        }
    });
    // The bridge's subscription may not be in place at first: ask until answered.
    let until = std::time::Instant::now() + Duration::from_secs(20);
    let doc = loop {
        device
            .publish(
                "$aws/things/lamp-1/shadow/get",
                QoS::AtLeastOnce,
                false,
                "{}",
            )
            .await
            .unwrap();
        if let Ok(Some((t, body))) =
            tokio::time::timeout(Duration::from_millis(500), received.recv()).await
            && t == "$aws/things/lamp-1/shadow/get/accepted"
        {
            break body;
        }
        assert!(
            std::time::Instant::now() < until,
            "the hub never answered a get"
        );
    };
    assert_eq!(doc["state"]["desired"]["on"], true, "{doc}");
    assert_eq!(doc["state"]["delta"]["on"], true, "{doc}");

    // The device reports; the delta is gone; its client token comes back.
    device
        .publish(
            "$aws/things/lamp-1/shadow/update",
            QoS::AtLeastOnce,
            false,
            r#"{"state":{"reported":{"on":true}},"clientToken":"t-1"}"#,
        )
        .await
        .unwrap();
    let accepted = expect_on(&mut received, "$aws/things/lamp-1/shadow/update/accepted").await;
    assert_eq!(accepted["clientToken"], "t-1", "{accepted}");
    assert_eq!(accepted["version"], 2, "{accepted}");
    // A stale version is rejected with 409, and changes nothing.
    device
        .publish(
            "$aws/things/lamp-1/shadow/update",
            QoS::AtLeastOnce,
            false,
            r#"{"state":{"reported":{"on":false}},"version":1}"#,
        )
        .await
        .unwrap();
    let rejected = expect_on(&mut received, "$aws/things/lamp-1/shadow/update/rejected").await;
    assert_eq!(rejected["code"], 409, "{rejected}");

    // A function changes what it wants: the device hears the delta and the documents.
    let out = call(
        &hub,
        "lamp",
        json!({"op": "shadow_update", "thing": "lamp-1",
        "document": r#"{"state":{"desired":{"on":false}}}"#}),
    )
    .await;
    assert_eq!(out["version"], 3, "{out}");
    let delta = expect_on(&mut received, "$aws/things/lamp-1/shadow/update/delta").await;
    assert_eq!(delta["state"], json!({"on": false}), "{delta}");
    let docs = expect_on(&mut received, "$aws/things/lamp-1/shadow/update/documents").await;
    assert_eq!(docs["previous"]["state"]["desired"]["on"], true, "{docs}");
    assert_eq!(docs["current"]["state"]["desired"]["on"], false, "{docs}");

    // A named shadow, from the device's side, read back by the function.
    device
        .publish(
            "$aws/things/lamp-1/shadow/name/config/update",
            QoS::AtLeastOnce,
            false,
            r#"{"state":{"reported":{"firmware":"1.2"}},"clientToken":"t-2"}"#,
        )
        .await
        .unwrap();
    let accepted = expect_on(
        &mut received,
        "$aws/things/lamp-1/shadow/name/config/update/accepted",
    )
    .await;
    assert_eq!(accepted["clientToken"], "t-2", "{accepted}");
    let out = call(
        &hub,
        "lamp",
        json!({"op": "shadow_get", "thing": "lamp-1", "name": "config"}),
    )
    .await;
    assert_eq!(out["state"]["reported"]["firmware"], "1.2", "{out}");

    let out = call(&hub, "lamp", json!({"op": "shadow_get", "thing": "lamp-1"})).await;
    assert_eq!(out["state"]["reported"]["on"], true, "{out}");
    assert_eq!(out["version"], 3, "{out}");
    assert_eq!(out["state"]["delta"], json!({"on": false}), "{out}");
    hub.shutdown().await;
}

/// The next message on `topic` (others skipped), within ten seconds.
async fn expect_on(
    received: &mut tokio::sync::mpsc::UnboundedReceiver<(String, Value)>,
    topic: &str,
) -> Value {
    loop {
        let (t, body) = tokio::time::timeout(Duration::from_secs(10), received.recv())
            .await
            .unwrap_or_else(|_| panic!("nothing on {topic}"))
            .unwrap();
        if t == topic {
            return body;
        }
    }
}

/// Accepts every publish.
struct Accepting;

impl fnhub_core::LocalServices for Accepting {
    fn publish<'a>(
        &'a self,
        _caller: &'a fnhub_core::ServiceCaller,
        _topic: &'a str,
        _payload: bytes::Bytes,
    ) -> fnhub_core::BoxFuture<'a, Result<(), fnhub_core::ServiceError>> {
        Box::pin(async { Ok(()) })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_rotate_with_the_environment() {
    use fnhub_core::Sandbox;
    let Some(python) = python_with_ric() else {
        return;
    };
    let mut access = ServiceAccess::default();
    access.publish = vec!["#".into()];
    // Used for one second, then valid for the timeout (two seconds) more.
    let spec = function(&python, "rotating", "aws_client.handle", access)
        .with_timeout(Duration::from_secs(2));
    let sandbox = fnhub_sandbox::ProcessSandbox::new()
        .with_services(std::sync::Arc::new(Accepting))
        .with_credential_lifetime(Duration::from_secs(1));
    let minted = std::time::Instant::now();
    let env = sandbox.prepare(&spec).await.unwrap();
    let run = |event: Value| {
        let inv = Invocation::new(spec.name.clone().into(), event.to_string());
        let env = &env;
        async move { json(&env.invoke(inv).await.unwrap()) }
    };
    let publish = json!({"op": "publish", "topic": "a/b"});
    assert_eq!(run(publish.clone()).await["published"], "a/b");
    let first = run(json!({"op": "whoami"})).await["key"].clone();
    assert!(env.is_healthy());

    // Past its lifetime: retired, so a pool replaces it; its calls still work a while.
    tokio::time::sleep(Duration::from_millis(1200).saturating_sub(minted.elapsed())).await;
    assert!(!env.is_healthy(), "the environment is not retired");
    assert_eq!(run(publish.clone()).await["published"], "a/b");

    // Past the grace: the credentials are refused.
    tokio::time::sleep(Duration::from_millis(3200).saturating_sub(minted.elapsed())).await;
    assert_eq!(
        run(publish.clone()).await,
        json!({"error": "ExpiredTokenException", "status": 403})
    );

    // The environment that replaces it has credentials of its own.
    let next = sandbox.prepare(&spec).await.unwrap();
    let inv = Invocation::new(
        spec.name.clone().into(),
        json!({"op": "whoami"}).to_string(),
    );
    let second = json(&next.invoke(inv).await.unwrap())["key"].clone();
    assert!(first.as_str().unwrap().starts_with("ASIA"), "{first}");
    assert_ne!(first, second);
    assert!(next.is_healthy());
    env.shutdown().await;
    next.shutdown().await;
}
