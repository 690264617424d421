//! The config file's parser and checks, on a sample and on damaged text.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use fnhub_core::Runtime;
use fnhub_router::Overflow;

use super::*;

const SAMPLE: &str = r#"
[hub]
name = "hub-a"
checkpoint_dir = "./data/checkpoints"

[http]
listen = "127.0.0.1:9000"
auth = "none"

[mqtt]
url = "mqtt://127.0.0.1:1883"
client_id = "hub-a"

[[function]]
name = "hello"
runtime = "process"
command = ["python3", "-m", "awslambdaric", "app.handler"]
workdir = "functions/hello"
memory_mb = 128
timeout_ms = 3000

[[flow]]
source = "any"
topic = "sensors/+/temperature"
target = "function:hello"
"#;

#[test]
fn the_sample_loads_with_paths_resolved() {
    let c = HubConfig::parse(SAMPLE, Path::new("/etc/fnhub/hub.toml")).unwrap();
    assert_eq!(c.name(), "hub-a");
    assert_eq!(
        c.checkpoint_dir.as_deref(),
        Some(Path::new("/etc/fnhub/./data/checkpoints"))
    );
    let f = &c.functions()[0];
    assert_eq!(f.resources.timeout, Duration::from_millis(3000));
    match &f.runtime {
        Runtime::Process {
            workdir, command, ..
        } => {
            assert_eq!(
                workdir.as_deref(),
                Some(Path::new("/etc/fnhub/functions/hello"))
            );
            assert_eq!(command[0], "python3");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(c.flows().len(), 1);
}

fn error(text: &str) -> String {
    HubConfig::parse(text, Path::new("hub.toml"))
        .unwrap_err()
        .to_string()
}

#[test]
fn unknown_keys_and_bad_values_name_the_key_and_line() {
    let e = error("[hub]\nname = \"a\"\ncolour = \"red\"\n");
    assert!(e.starts_with("hub.toml:3:") && e.contains("colour"), "{e}");
    let e = error(
        "[hub]\nname = \"a\"\n[[function]]\nname = \"f\"\nruntime = \"process\"\ntimeout_ms = \"soon\"\n",
    );
    assert!(e.starts_with("hub.toml:6:"), "{e}");
    let e = error("[hub]\nname = \"a\"\n\n[[function]]\nname = \"f\"\nruntime = \"lisp\"\n");
    assert!(
        e.contains("hub.toml:4:") && e.contains("function.f.runtime"),
        "{e}"
    );
    let e = error("[hub]\nname = \"a\"\n[[function]]\nname = \"f\"\nruntime = \"process\"\n");
    assert!(e.contains("function.f.command"), "{e}");
    let e = error(
        "[hub]\nname = \"a\"\n[[flow]]\nsource = \"any\"\ntopic = \"a/#/b\"\ntarget = \"function:f\"\n",
    );
    assert!(e.contains("hub.toml:3:") && e.contains("flow[0]"), "{e}");
    let e = error(
        "[hub]\nname = \"a\"\n[[flow]]\nsource = \"any\"\ntopic = \"a\"\ntarget = \"function:f\"\noverflow = \"later\"\n",
    );
    assert!(e.contains("flow[0].overflow"), "{e}");
    let e = error("[hub]\nname = \"a\"\n[http]\nlisten = \"0.0.0.0:80\"\nauth = \"none\"\n");
    assert!(e.contains("hub.toml:4:") && e.contains("loopback"), "{e}");
    let e = error("[hub]\nname = \"a\"\n[http]\nlisten = \"127.0.0.1:80\"\nauth = \"sigv4\"\n");
    assert!(e.contains("http.credentials"), "{e}");
    let e = error("[hub]\nname = \"a\"\n[mqtt]\nurl = \"tcp://x\"\nclient_id = \"a\"\n");
    assert!(e.contains("hub.toml:4:") && e.contains("mqtt.url"), "{e}");
    let e = error("not toml at all [");
    assert!(e.starts_with("hub.toml:1:"), "{e}");
    assert!(
        error("[http]\nlisten = \"x\"\n").contains("hub"),
        "the [hub] table is required"
    );
}

#[test]
fn overflow_values() {
    assert_eq!(
        parse_overflow("wait:5s"),
        Some(Overflow::Wait(Duration::from_secs(5)))
    );
    assert_eq!(
        parse_overflow("wait:250ms"),
        Some(Overflow::Wait(Duration::from_millis(250)))
    );
    assert_eq!(parse_overflow("drop_oldest"), Some(Overflow::DropOldest));
    assert_eq!(parse_overflow("wait:"), None);
    assert_eq!(parse_overflow("wait:5y"), None);
}

/// `SAMPLE` with the bytes in `cut` replaced by `insert` (SAMPLE is ASCII, so every
/// index is a character boundary).
fn spliced(cut: std::ops::Range<usize>, insert: &str) -> String {
    let (start, end) = (cut.start.min(SAMPLE.len()), cut.end.min(SAMPLE.len()));
    let end = end.max(start);
    format!("{}{insert}{}", &SAMPLE[..start], &SAMPLE[end..])
}

proptest::proptest! {
    #[test]
    fn any_text_is_a_config_or_an_error(text in "\\PC{0,300}") {
        let _ = HubConfig::parse(&text, Path::new("/nonexistent/hub.toml"));
    }

    #[test]
    fn a_damaged_sample_is_a_config_or_an_error_that_says_why(
        start in 0usize..600,
        len in 0usize..40,
        insert in "[\\[\\]=\"a-z0-9#\n .{},_+-]{0,12}",
    ) {
        let text = spliced(start..start + len, &insert);
        if let Err(e) = HubConfig::parse(&text, Path::new("/nonexistent/hub.toml")) {
            proptest::prop_assert!(!e.to_string().is_empty());
        }
    }
}

fn with_function(lines: &str) -> String {
    format!(
        "[hub]\nname = \"a\"\n[[function]]\nname = \"f\"\nruntime = \"process\"\ncommand = [\"x\"]\n{lines}\n"
    )
}

#[test]
fn numeric_keys_are_bounded_and_say_their_bounds() {
    for (text, key) in [
        (
            "[hub]\nname = \"a\"\nworkers = 0\n".to_owned(),
            "hub.workers",
        ),
        (
            "[hub]\nname = \"a\"\nworkers = 1000000000000000000\n".to_owned(),
            "hub.workers",
        ),
        (
            "[hub]\nname = \"a\"\nworkers = 4097\n".to_owned(),
            "hub.workers",
        ),
        (
            "[hub]\nname = \"a\"\nqueue_capacity = 0\n".to_owned(),
            "hub.queue_capacity",
        ),
        (
            "[hub]\nname = \"a\"\nqueue_capacity = 1048577\n".to_owned(),
            "hub.queue_capacity",
        ),
        (with_function("memory_mb = 0"), "function.f.memory_mb"),
        (
            with_function("memory_mb = 4294967295"),
            "function.f.memory_mb",
        ),
        (with_function("timeout_ms = 0"), "function.f.timeout_ms"),
        (
            with_function("timeout_ms = 9223372036854775807"),
            "function.f.timeout_ms",
        ),
        (with_function("concurrency = 0"), "function.f.concurrency"),
        (
            with_function("concurrency = 100000"),
            "function.f.concurrency",
        ),
    ] {
        let e = error(&text);
        assert!(e.contains(key) && e.contains("between"), "{text}: {e}");
    }
    // Negative numbers and ones past i64 are refused by the reader itself.
    assert!(error("[hub]\nname = \"a\"\nworkers = -1\n").starts_with("hub.toml:3:"));
    let ok = HubConfig::parse(
        "[hub]\nname = \"a\"\nworkers = 4096\nqueue_capacity = 1048576\n",
        Path::new("hub.toml"),
    )
    .unwrap();
    assert_eq!((ok.workers, ok.queue_capacity), (Some(4096), Some(1 << 20)));
}

#[test]
fn waits_that_overflow_or_outlast_a_day_are_refused() {
    assert_eq!(
        parse_overflow("wait:307445734561825861m"),
        None,
        "wrapped to 44 s before"
    );
    assert_eq!(parse_overflow("wait:18446744073709551616s"), None);
    assert_eq!(parse_overflow("wait:1441m"), None);
    assert_eq!(
        parse_overflow("wait:1440m"),
        Some(Overflow::Wait(Duration::from_secs(24 * 3600)))
    );
}

#[test]
fn grants_of_everything_or_of_the_hubs_own_files_are_refused() {
    let e = error(&with_function("files = [\"/\"]"));
    assert!(
        e.contains("function.f.files") && e.contains("whole filesystem"),
        "{e}"
    );
    let e = error(&with_function("files = [\"/etc/../\"]"));
    assert!(e.contains("whole filesystem"), "{e}");
    // The config file's own folder (its keys), by a file grant or by the workdir.
    let cfg = Path::new("/srv/hub/hub.toml");
    for lines in [
        "files = [\"/srv\"]",
        "workdir = \".\"",
        "files = [\"fn/..\"]",
    ] {
        let e = HubConfig::parse(&with_function(lines), cfg)
            .unwrap_err()
            .to_string();
        assert!(e.contains("own config or checkpoints"), "{lines}: {e}");
    }
    // The checkpoints.
    let text = "[hub]\nname = \"a\"\ncheckpoint_dir = \"/var/lib/fnhub/cp\"\n[[function]]\nname = \"f\"\nruntime = \"process\"\ncommand = [\"x\"]\nfiles = [\"/var/lib\"]\n";
    let e = HubConfig::parse(text, cfg).unwrap_err().to_string();
    assert!(e.contains("own config or checkpoints"), "{e}");
    // A folder beside them is fine.
    let c = HubConfig::parse(
        &with_function("workdir = \"fn\"\nfiles = [\"/usr/share/zoneinfo\"]"),
        cfg,
    )
    .unwrap();
    assert_eq!(c.functions().len(), 1);
}

#[test]
fn duplicate_functions_and_bad_access_keys_are_refused() {
    let twice = "[hub]\nname = \"a\"\n[[function]]\nname = \"f\"\nruntime = \"process\"\ncommand = [\"x\"]\n[[function]]\nname = \"f\"\nruntime = \"process\"\ncommand = [\"x\"]\n";
    let e = error(twice);
    assert!(
        e.contains("function.f") && e.contains("declared twice"),
        "{e}"
    );
    let keys = |a: &str, b: &str| {
        format!(
            "[hub]\nname = \"a\"\n[http]\nlisten = \"127.0.0.1:0\"\nauth = \"sigv4\"\n[[http.credentials]]\naccess_key = \"{a}\"\nsecret_key = \"s\"\nprincipal = \"p\"\n[[http.credentials]]\naccess_key = \"{b}\"\nsecret_key = \"s\"\nprincipal = \"q\"\n"
        )
    };
    assert!(error(&keys("", "k2")).contains("must not be empty"));
    assert!(error(&keys("k1", "k1")).contains("listed twice"));
    let empty_secret = keys("k1", "k2").replacen("secret_key = \"s\"", "secret_key = \"\"", 1);
    assert!(error(&empty_secret).contains("must not be empty"));
    HubConfig::parse(&keys("k1", "k2"), Path::new("hub.toml")).unwrap();
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

    /// Any value of any numeric key gives a config that builds a hub, or an error that
    /// names the key; nothing panics (before, `workers = 10^18` did, at build).
    #[test]
    fn any_numeric_value_loads_and_builds_or_says_why(
        workers in proptest::prop_oneof![0u64..8, 4090u64..4200, proptest::num::u64::ANY],
        queue in proptest::prop_oneof![0u64..8, proptest::num::u64::ANY],
        memory in proptest::num::u32::ANY,
        timeout in proptest::prop_oneof![0u64..10_000, proptest::num::u64::ANY],
        concurrency in proptest::num::u32::ANY,
        version in proptest::num::u32::ANY,
        wait in proptest::num::u64::ANY,
        unit in "(ms|s|m)",
    ) {
        // TOML integers are i64: larger ones are the reader's error, which is fine too.
        let text = format!(
            "[hub]\nname = \"a\"\nworkers = {workers}\nqueue_capacity = {queue}\n[[function]]\nname = \"f\"\nruntime = \"process\"\ncommand = [\"x\"]\nmemory_mb = {memory}\ntimeout_ms = {timeout}\nconcurrency = {concurrency}\nversion = {version}\n[[flow]]\nsource = \"any\"\ntopic = \"t\"\ntarget = \"function:f\"\noverflow = \"wait:{wait}{unit}\"\n"
        );
        match HubConfig::parse(&text, Path::new("/nonexistent/hub.toml")) {
            Err(e) => proptest::prop_assert!(!e.to_string().is_empty()),
            Ok(config) => {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async {
                    let hub = config.builder().unwrap().build().unwrap();
                    hub.shutdown().await;
                });
            }
        }
    }
}

#[test]
fn allow_lists_reach_the_profile_and_the_front_door() {
    let text = with_function(
        "allow = { invoke = [\"double\", \"half:2\"], publish = [\"alerts/#\"], shadows = [\"lamp-1\"] }",
    );
    let c = HubConfig::parse(&text, Path::new("hub.toml")).unwrap();
    let services = &c.functions()[0].capabilities.services;
    assert!(services.may_invoke("double") && !services.may_invoke("other"));
    assert!(services.may_publish("alerts/x") && !services.may_publish("other"));
    assert!(services.may_use_shadow("lamp-1") && !services.may_use_shadow("lamp-2"));
    // Without `allow`, nothing.
    let c = HubConfig::parse(&with_function(""), Path::new("hub.toml")).unwrap();
    assert_eq!(
        c.functions()[0].capabilities.services,
        fnhub_core::ServiceAccess::default()
    );
    // A filter or a name that is not one is refused, naming the key.
    let e = error(&with_function("allow = { publish = [\"a/#/b\"] }"));
    assert!(e.contains("function.f.allow.publish"), "{e}");
    let e = error(&with_function("allow = { invoke = [\"bad name!\"] }"));
    assert!(e.contains("function.f.allow.invoke"), "{e}");
    let e = error(&with_function("allow = { launch = [\"x\"] }"));
    assert!(e.contains("launch"), "{e}");
}

#[cfg(feature = "http")]
#[test]
fn a_key_with_an_allow_list_invokes_only_what_it_lists() {
    let text = "[hub]\nname = \"a\"\n[http]\nlisten = \"127.0.0.1:0\"\nauth = \"sigv4\"\n\
        [[http.credentials]]\naccess_key = \"AK1\"\nsecret_key = \"s1\"\nprincipal = \"a\"\n\
        allow = { invoke = [\"hello\"] }\n\
        [[http.credentials]]\naccess_key = \"AK2\"\nsecret_key = \"s2\"\nprincipal = \"b\"\n";
    let c = HubConfig::parse(text, Path::new("hub.toml")).unwrap();
    let (_, http) = c.http.as_ref().unwrap();
    let allow = http.allow.as_ref().unwrap();
    assert_eq!(
        allow[&fnhub_core::Principal::new("a")],
        vec!["hello".to_owned()]
    );
    assert_eq!(
        allow[&fnhub_core::Principal::new("b")],
        vec!["*".to_owned()]
    );
}

#[cfg(feature = "mqtt")]
#[test]
fn device_shadows_need_the_bridge_and_thing_names() {
    let mqtt = "[mqtt]\nurl = \"mqtt://127.0.0.1:1883\"\nclient_id = \"a\"\n";
    let ok = format!("[hub]\nname = \"a\"\n{mqtt}[shadows]\nmqtt = [\"lamp-1\", \"*\"]\n");
    let c = HubConfig::parse(&ok, Path::new("hub.toml")).unwrap();
    assert_eq!(c.device_shadows, vec!["lamp-1".to_owned(), "*".to_owned()]);
    let e = error("[hub]\nname = \"a\"\n[shadows]\nmqtt = [\"lamp-1\"]\n");
    assert!(e.contains("shadows.mqtt") && e.contains("[mqtt]"), "{e}");
    let e = error(&format!(
        "[hub]\nname = \"a\"\n{mqtt}[shadows]\nmqtt = [\"a/b\"]\n"
    ));
    assert!(e.contains("shadows.mqtt"), "{e}");
}

#[tokio::test]
async fn aliases_name_declared_versions_and_split_by_weight() {
    let two = "[[function]]\nname = \"f\"\nruntime = \"process\"\ncommand = [\"x\"]\nversion = 2\n";
    let text = |alias: &str| format!("{}{two}[[alias]]\n{alias}\n", with_function("version = 1"));
    let c = HubConfig::parse(
        &text("function = \"f\"\nname = \"live\"\nversion = 1\nadditional = { version = 2, weight = 0.1 }"),
        Path::new("hub.toml"),
    )
    .unwrap();
    let hub = c.builder().unwrap().build().unwrap();
    let aliases = hub.aliases(&fnhub_core::FunctionName::new("f").unwrap());
    assert_eq!(aliases.len(), 1);
    assert_eq!(aliases[0].name().as_str(), "live");
    assert_eq!(aliases[0].primary().get(), 1);
    assert_eq!(
        aliases[0].secondary().map(|(v, w)| (v.get(), w)),
        Some((2, 1000))
    );
    hub.shutdown().await;
    for (alias, key) in [
        (
            "function = \"g\"\nname = \"live\"\nversion = 1",
            "alias[0].function",
        ),
        (
            "function = \"f\"\nname = \"live\"\nversion = 3",
            "alias[0].version",
        ),
        (
            "function = \"f\"\nname = \"7\"\nversion = 1",
            "alias[0].name",
        ),
        (
            "function = \"f\"\nname = \"live\"\nversion = 1\nadditional = { version = 2, weight = 1.5 }",
            "alias[0].additional.weight",
        ),
        (
            "function = \"f\"\nname = \"live\"\nversion = 1\nadditional = { version = 1, weight = 0.5 }",
            "alias[0].additional.version",
        ),
    ] {
        let e = error(&text(alias));
        assert!(e.contains(key), "{alias}: {e}");
    }
}

#[test]
fn durable_functions_take_lambda_s_durable_config() {
    let c = HubConfig::parse(
        &with_function("durable = { execution_timeout_s = 900, retention_days = 7 }"),
        Path::new("hub.toml"),
    )
    .unwrap();
    let (name, config) = &c.durables[0];
    assert_eq!(name, "f");
    assert_eq!(config.execution_timeout, Duration::from_secs(900));
    assert_eq!(config.retention, Duration::from_secs(7 * 86_400));
    let c = HubConfig::parse(&with_function("durable = {}"), Path::new("hub.toml")).unwrap();
    assert_eq!(c.durables[0].1, crate::DurableConfig::default());
    for (bad, key) in [
        (
            "durable = { execution_timeout_s = 0 }",
            "durable.execution_timeout_s",
        ),
        (
            "durable = { retention_days = 91 }",
            "durable.retention_days",
        ),
        ("durable = { retention_days = -1 }", "hub.toml:7"),
        ("durable = { kms = \"x\" }", "kms"),
    ] {
        let e = error(&with_function(bad));
        assert!(e.contains(key), "{bad}: {e}");
    }
}

#[cfg(feature = "mqtt")]
#[test]
fn secured_brokers_take_certificates_and_passwords_checked_at_load() {
    let mqtt = |extra: &str| {
        format!(
            "[hub]\nname = \"a\"\n[mqtt]\nurl = \"mqtts://127.0.0.1:8883\"\nclient_id = \"a\"\n{extra}\n"
        )
    };
    let e = error(&mqtt("ca_file = \"/nonexistent/ca.pem\""));
    assert!(
        e.contains("mqtt.tls") && e.contains("/nonexistent/ca.pem"),
        "{e}"
    );
    let e = error(&mqtt("username = \"hub\""));
    assert!(e.contains("mqtt.username"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("empty.pem"), "").unwrap();
    let e = error(&mqtt(&format!(
        "ca_file = \"{}\"",
        dir.path().join("empty.pem").display()
    )));
    assert!(e.contains("no certificate"), "{e}");
    let e = error(
        "[hub]\nname = \"a\"\n[mqtt]\nurl = \"mqtt://127.0.0.1\"\nclient_id = \"a\"\nca_file = \"x.pem\"\n",
    );
    assert!(e.contains("mqtt"), "{e}");
    let c = HubConfig::parse(
        &mqtt("username = \"hub\"\npassword = \"secret\""),
        Path::new("hub.toml"),
    );
    // The system's roots may be absent on a bare machine; the credentials parse either way.
    if let Ok(c) = c {
        let m = c.mqtt.as_ref().unwrap();
        assert!(m.tls.is_some());
        assert_eq!(m.credentials.as_ref().unwrap().0, "hub");
        assert_eq!(m.port, 8883);
    }
}

#[test]
fn a_cloud_section_makes_a_node_and_is_checked() {
    // The shipped node config loads as is (a hub without the cloud runtime says so).
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/node.toml");
    if cfg!(not(feature = "nats")) {
        let e = HubConfig::load(&shipped).unwrap_err().to_string();
        assert!(e.contains("feature `nats`"), "{e}");
        return;
    }
    let c = HubConfig::load(&shipped).unwrap();
    let node = c.cloud().expect("a node");
    assert_eq!(node.node, "node-1");
    assert_eq!(node.servers, vec!["nats://127.0.0.1:4222".to_owned()]);
    #[cfg(feature = "nats")]
    assert_eq!(node.config.deployment, "demo");
    let cloud = |lines: &str| format!("[hub]\nname = \"a\"\n[cloud]\n{lines}\n");
    let c = HubConfig::parse(
        &cloud("nats = [\"nats://a:4222\", \"tls://b:4222\"]\nnode = \"n-7\"\nreplicas = 3"),
        Path::new("hub.toml"),
    )
    .unwrap();
    let node = c.cloud().unwrap();
    assert_eq!(node.servers.len(), 2);
    assert_eq!(node.node, "n-7");
    #[cfg(feature = "nats")]
    {
        assert_eq!(node.config.deployment, "default");
        assert_eq!(node.config.replicas, 3);
    }
    for (lines, key) in [
        ("nats = \"http://a:4222\"", "cloud.nats"),
        ("nats = \"nats://a\"", "cloud.nats"),
        ("nats = []", "cloud.nats"),
        (
            "nats = \"nats://a:1\"\ndeployment = \"a.b\"",
            "cloud.deployment",
        ),
        ("nats = \"nats://a:1\"\nreplicas = 9", "cloud.replicas"),
        ("nats = \"nats://a:1\"\nin_flight = 0", "cloud.in_flight"),
        (
            "nats = \"nats://a:1\"\nack_wait_ms = 5",
            "cloud.ack_wait_ms",
        ),
        (
            "nats = \"nats://a:1\"\ncert_file = \"/etc/hostname\"",
            "cloud.cert_file",
        ),
        (
            "nats = \"nats://a:1\"\nca_file = \"/no/such/ca.pem\"",
            "cloud.ca_file",
        ),
        ("nats = \"nats://a:1\"\nnode = \"\"", "cloud.node"),
    ] {
        let e = error(&cloud(lines));
        assert!(e.contains(key), "{lines}: {e}");
    }
    let e = error(&cloud("nats = \"nats://a:1\"\nstream = \"x\""));
    assert!(e.contains("stream"), "{e}");
}

#[test]
fn the_reservation_policy_is_chosen_by_name_or_with_parameters() {
    let hub = |r: &str| format!("[hub]\nname = \"a\"\nreservation = {r}\n");
    let load = |r: &str| {
        HubConfig::parse(&hub(r), Path::new("hub.toml"))
            .unwrap()
            .reservation()
            .clone()
    };
    let default = HubConfig::parse("[hub]\nname = \"a\"\n", Path::new("hub.toml")).unwrap();
    assert!(matches!(default.reservation(), Reservation::Hybrid { .. }));
    assert_eq!(
        load("\"fixed\""),
        Reservation::Fixed {
            keep_alive: Duration::from_secs(600)
        }
    );
    assert_eq!(
        load("{ policy = \"fixed\", keep_alive_s = 90 }"),
        Reservation::Fixed {
            keep_alive: Duration::from_secs(90)
        }
    );
    assert_eq!(
        load("{ policy = \"forecast\", miss = 0.05, min_s = 30, max_s = 600 }"),
        Reservation::Forecast {
            miss: 0.05,
            min: Duration::from_secs(30),
            max: Duration::from_secs(600)
        }
    );
    assert!(matches!(
        load("{ policy = \"hybrid\", fallback_s = 300 }"),
        Reservation::Hybrid { fallback, .. } if fallback == Duration::from_secs(300)
    ));
    for (r, key) in [
        ("\"lru\"", "hub.reservation"),
        ("{ policy = \"lru\" }", "hub.reservation.policy"),
        ("{ policy = \"fixed\", miss = 0.1 }", "hub.reservation.miss"),
        (
            "{ policy = \"fixed\", keep_alive_s = 0 }",
            "hub.reservation.keep_alive_s",
        ),
        (
            "{ policy = \"forecast\", miss = 1.5 }",
            "hub.reservation.miss",
        ),
        (
            "{ policy = \"forecast\", min_s = 900, max_s = 60 }",
            "hub.reservation.min_s",
        ),
        (
            "{ policy = \"hybrid\", head_percentile = 99, tail_percentile = 5 }",
            "hub.reservation.head_percentile",
        ),
    ] {
        let e = error(&hub(r));
        assert!(e.contains(key) && e.contains("hub.toml:3:"), "{r}: {e}");
    }
    let e = error(&hub("{ policy = \"fixed\", colour = 1 }"));
    assert!(e.contains("hub.toml:3:"), "{e}");
}

/// The policy a file names is the one the running hub keeps environments with: a one-second
/// fixed keep-alive lets an idle environment go (the next call starts cold), the default
/// hybrid (ten minutes while it learns) keeps it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_running_hub_keeps_environments_as_its_reservation_says() {
    let cold_starts = |reservation: &'static str| async move {
        let text = format!("[hub]\nname = \"a\"\n{reservation}\n");
        let config = HubConfig::parse(&text, Path::new("hub.toml")).unwrap();
        let hub = config
            .builder()
            .unwrap()
            .function(
                fnhub_core::FunctionSpec::in_process(fnhub_core::FunctionName::new("f").unwrap()),
                crate::from_fn(
                    |_inv: fnhub_core::Invocation| async move { Ok(bytes::Bytes::new()) },
                ),
            )
            .build()
            .unwrap();
        for _ in 0..2 {
            hub.invoke("f".parse().unwrap(), "").await.unwrap().unwrap();
            // Past a one-second keep-alive and the maintenance pass after it.
            tokio::time::sleep(Duration::from_millis(2600)).await;
        }
        let cold = hub.stats().functions["f"].cold_starts;
        hub.shutdown().await;
        cold
    };
    let (short, default) = tokio::join!(
        cold_starts("reservation = { policy = \"fixed\", keep_alive_s = 1 }"),
        cold_starts("")
    );
    assert_eq!(short, 2, "the environment outlived a one-second keep-alive");
    assert_eq!(default, 1, "the default policy let the environment go");
}

#[test]
fn python_templates_are_on_unless_the_file_turns_them_off() {
    let parse = |text: &str| HubConfig::parse(text, Path::new("hub.toml")).unwrap();
    assert!(parse("[hub]\nname = \"a\"\n").python_templates());
    assert!(parse("[hub]\nname = \"a\"\npython_templates = true\n").python_templates());
    assert!(!parse("[hub]\nname = \"a\"\npython_templates = false\n").python_templates());
    let e = HubConfig::parse(
        "[hub]\nname = \"a\"\npython_templates = \"yes\"\n",
        Path::new("hub.toml"),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("hub.toml:3") && e.contains("boolean"), "{e}");
    let e = HubConfig::parse(
        "[hub]\nname = \"a\"\npython_templates_max_mb = 0\n",
        Path::new("hub.toml"),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("python_templates_max_mb"), "{e}");
    parse("[hub]\nname = \"a\"\npython_templates_max_mb = 64\n");
}

#[test]
fn max_warm_mb_is_bounded() {
    let parse = |text: &str| HubConfig::parse(text, Path::new("hub.toml"));
    assert!(parse("[hub]\nname = \"a\"\nmax_warm_mb = 512\n").is_ok());
    for bad in ["0", "2000000000", "-1"] {
        let e = parse(&format!("[hub]\nname = \"a\"\nmax_warm_mb = {bad}\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("hub.toml:3"), "{bad}: {e}");
    }
}
