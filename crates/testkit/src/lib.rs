//! What the tests and benchmarks of fnhub share to start real peers: finding an installed
//! program, a free loopback port, waiting for a peer to listen, and a `nats-server` with
//! JetStream in a folder of its own. Not published.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The first of `candidates` that is installed, or `None`. Under `CI=true` a missing
/// program is a failure, since `.ci/run` installs it (`install` says how).
pub fn installed(candidates: &[&str], install: &str) -> Option<PathBuf> {
    let found = candidates.iter().map(PathBuf::from).find(|p| p.exists());
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{} is required under CI ({install})",
            candidates.first().copied().unwrap_or_default()
        );
        eprintln!(
            "skipping: {} is not installed ({install})",
            candidates.first().copied().unwrap_or_default()
        );
    }
    found
}

/// A loopback port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

/// Waits until something accepts connections on `port` (500 tries 20 ms apart: a watchdog
/// of about 10 s).
pub fn wait_for_port(port: u16, what: &str) {
    for _ in 0..500 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{what} did not start");
}

/// The `nats-server` to run: the one `FNHUB_NATS_SERVER` names (another release, say),
/// else the installed one, if there is one (required under `CI=true`).
fn nats_server_program() -> Option<PathBuf> {
    if let Some(path) = std::env::var("FNHUB_NATS_SERVER")
        .ok()
        .filter(|p| !p.is_empty())
    {
        return installed(&[path.as_str()], "FNHUB_NATS_SERVER names a missing file");
    }
    installed(
        &[
            "/usr/sbin/nats-server",
            "/usr/bin/nats-server",
            "/usr/local/bin/nats-server",
        ],
        "apt-get install nats-server",
    )
}

/// A `nats-server -js` on a free loopback port, storing in a temporary folder; killed when
/// dropped.
#[derive(Debug)]
pub struct NatsServer {
    program: PathBuf,
    child: Child,
    port: u16,
    url: String,
    store: tempfile::TempDir,
    /// A configuration file of the test's, given with `-c`.
    config: Option<PathBuf>,
}

impl NatsServer {
    /// Starts one and waits until it listens; `None` when `nats-server` is not installed
    /// (a failure under `CI=true`).
    pub fn start() -> Option<NatsServer> {
        NatsServer::start_with_config("")
    }

    /// The same, with `config` (nats-server's configuration format, such as an
    /// `authorization` block) given with `-c`; the command line's port, address, JetStream
    /// and store still apply.
    pub fn start_with_config(config: &str) -> Option<NatsServer> {
        let program = nats_server_program()?;
        let port = free_port();
        let store = tempfile::tempdir().unwrap_or_else(|e| panic!("no temporary folder: {e}"));
        let config = (!config.is_empty()).then(|| {
            let path = store.path().join("test.conf");
            std::fs::write(&path, config).unwrap_or_else(|e| panic!("no config file: {e}"));
            path
        });
        let child = NatsServer::spawn(&program, port, store.path(), config.as_deref());
        Some(NatsServer {
            program,
            child,
            port,
            url: format!("nats://127.0.0.1:{port}"),
            store,
            config,
        })
    }

    fn spawn(
        program: &std::path::Path,
        port: u16,
        store: &std::path::Path,
        config: Option<&std::path::Path>,
    ) -> Child {
        let mut command = Command::new(program);
        if let Some(config) = config {
            command.arg("-c").arg(config);
        }
        let child = command
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(store)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("nats-server did not start: {e}"));
        wait_for_port(port, "nats-server");
        child
    }

    /// Its URL, `nats://127.0.0.1:{port}`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Kills it with SIGKILL and starts it again on the same port and store, after `down`.
    pub fn restart(&mut self, down: Duration) {
        self.kill();
        std::thread::sleep(down);
        self.start_again();
    }

    /// Kills it with SIGKILL (its port and store are kept for [`start_again`](Self::start_again)).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on its port and store, and waits until it listens.
    pub fn start_again(&mut self) {
        self.child = NatsServer::spawn(
            &self.program,
            self.port,
            self.store.path(),
            self.config.as_deref(),
        );
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A JetStream cluster of `nats-server`s on free loopback ports, each storing in a
/// temporary folder of its own; every server killed when dropped.
#[derive(Debug)]
pub struct NatsCluster {
    program: PathBuf,
    /// This cluster's own name, and the prefix of its servers' names: unique in the
    /// machine, so that no server of another cluster (another test's, or an earlier try
    /// of this one's) can join it through a port that changed hands.
    name: String,
    servers: Vec<Member>,
}

#[derive(Debug)]
struct Member {
    child: Option<Child>,
    port: u16,
    route_port: u16,
    /// Its HTTP monitoring port, asked whether the JetStream meta group has a leader.
    monitor_port: u16,
    store: tempfile::TempDir,
}

impl NatsCluster {
    /// Starts `n` servers routed to each other and waits until each listens and each
    /// names the JetStream meta group's leader in a group of all `n`; `None` when
    /// `nats-server` is not installed (a failure under `CI=true`). A leader may still
    /// change just after: a client's first stream may have to be retried.
    ///
    /// A port [`free_port`] found free may be taken before its server binds it (by another
    /// test, or as the local port of an outgoing connection, such as another server's
    /// route): a server that cannot listen exits, and a cluster short of a server cannot
    /// place three replicas. Such a start is made again on other ports, and so is one
    /// whose meta group stays short of a server.
    pub fn start(n: usize) -> Option<NatsCluster> {
        let program = nats_server_program()?;
        for _ in 0..5 {
            let servers = (0..n)
                .map(|_| Member {
                    child: None,
                    port: free_port(),
                    route_port: free_port(),
                    monitor_port: free_port(),
                    store: tempfile::tempdir()
                        .unwrap_or_else(|e| panic!("no temporary folder: {e}")),
                })
                .collect();
            let mut cluster = NatsCluster {
                program: program.clone(),
                name: cluster_name(),
                servers,
            };
            for i in 0..n {
                cluster.spawn(i);
            }
            if !cluster.all_listening() {
                eprintln!("a nats-server of the cluster did not come up; starting on other ports");
                continue;
            }
            if cluster.wait_for_meta_leader() {
                return Some(cluster);
            }
            eprintln!(
                "the cluster's JetStream meta group did not take in every server; starting another"
            );
        }
        panic!("the nats-server cluster did not come up in 5 tries");
    }

    /// Waits (about 20 s at most) until every server names the JetStream meta group's
    /// leader, and counts every server in that group, in its monitoring (`/jsz`). A JetStream request made before that is not
    /// answered: the client waits out its whole timeout (10 s here, every time, for the
    /// first bucket of a new cluster), and a setup with a budget of its own could spend it
    /// on two such waits.
    ///
    /// False when that does not come: a meta group elected while one server had not yet
    /// joined can stay at two peers for good (seen here: three servers up and routed,
    /// `cluster_size` 2 for minutes; the server sizes its meta group from the peers it
    /// sees at start, compare nats-server#2657), and every stream of three replicas then
    /// fails with "no suitable peers for placement".
    fn wait_for_meta_leader(&self) -> bool {
        for _ in 0..200 {
            if self
                .servers
                .iter()
                .all(|m| meta_leader(m.monitor_port, self.servers.len()).is_some())
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// Waits (about 10 s at most) until every server listens for clients and routes;
    /// false as soon as one has exited, or at the end of the wait.
    fn all_listening(&mut self) -> bool {
        let up = |port: u16| std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
        for _ in 0..500 {
            let exited = self.servers.iter_mut().any(|m| {
                m.child
                    .as_mut()
                    .is_none_or(|c| !matches!(c.try_wait(), Ok(None)))
            });
            if exited {
                return false;
            }
            if self
                .servers
                .iter()
                .all(|m| up(m.port) && up(m.route_port) && up(m.monitor_port))
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    fn spawn(&mut self, i: usize) {
        let routes: Vec<String> = self
            .servers
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, m)| format!("nats://127.0.0.1:{}", m.route_port))
            .collect();
        let m = &self.servers[i];
        let child = Command::new(&self.program)
            .args(["-js", "-a", "127.0.0.1", "-p", &m.port.to_string()])
            .args(["--name", &format!("{}-n{i}", self.name)])
            .args(["--cluster_name", &self.name])
            .args(["--cluster", &format!("nats://127.0.0.1:{}", m.route_port)])
            .args(["-m", &m.monitor_port.to_string()])
            .args(["--routes", &routes.join(",")])
            .arg("-sd")
            .arg(m.store.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("nats-server did not start: {e}"));
        self.servers[i].child = Some(child);
    }

    /// Every server's URL, separated by commas (what a client of the cluster connects to).
    pub fn urls(&self) -> String {
        self.servers
            .iter()
            .map(|m| format!("nats://127.0.0.1:{}", m.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Kills server `i` with SIGKILL.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.servers[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts server `i` again, on its ports and store, and waits until it listens.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i);
        wait_for_port(self.servers[i].port, "nats-server");
    }
}

/// The JetStream meta group's leader as the server monitored on `port` names it, if it
/// knows one and counts `size` servers in the group.
fn meta_leader(port: u16, size: usize) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream
        .write_all(b"GET /jsz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    // The first of each key after `meta_cluster` is the meta group's (the leader's view
    // lists its replicas in between, which have neither key).
    let meta = &answer[answer.find("\"meta_cluster\"")?..];
    let counted = value_of(meta, "cluster_size")?;
    let digits = counted
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(counted.len());
    if counted[..digits].parse::<usize>().ok()? != size {
        return None;
    }
    let leader = value_of(meta, "leader")?.strip_prefix('"')?;
    let leader = &leader[..leader.find('"')?];
    (!leader.is_empty()).then(|| leader.to_owned())
}

/// The JSON text after the first `"key":` in `json`, from its value on.
fn value_of<'a>(json: &'a str, key: &str) -> Option<&'a str> {
    let quoted = format!("\"{key}\"");
    let after = &json[json.find(&quoted)? + quoted.len()..];
    Some(after.trim_start().strip_prefix(':')?.trim_start())
}

/// A cluster name no other cluster on this machine has: the process, a count within it,
/// and the time.
///
/// Two clusters that share a name merge when a route reaches the wrong server: a server
/// of a test's cluster is killed, its route port is taken by a server of another test's
/// cluster (each picks [`free_port`]s), and the first cluster's servers, dialling their
/// lost peer again, join the second. Their servers then share names (`n0`, `n1`, `n2`),
/// and JetStream cannot tell its peers apart: every stream asks "no suitable peers for
/// placement" for as long as the test waits (CI, 2026-12-05). Servers of clusters with
/// different names refuse each other's routes.
fn cluster_name() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static CLUSTERS: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "fnhub-{}-{}-{nanos}",
        std::process::id(),
        CLUSTERS.fetch_add(1, Ordering::Relaxed)
    )
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.servers.len() {
            self.kill(i);
        }
    }
}

/// A mosquitto of the test's own on a free loopback port; killed on drop.
#[derive(Debug)]
pub struct Mosquitto {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    /// Starts one with `extra` configuration lines (persistence, queue limits) and waits
    /// until it listens; `None` when mosquitto is not installed (a failure under
    /// `CI=true`).
    pub fn start(extra: &str) -> Option<Mosquitto> {
        let program = installed(
            &[
                "/usr/sbin/mosquitto",
                "/usr/bin/mosquitto",
                "/usr/local/sbin/mosquitto",
            ],
            "apt-get install mosquitto",
        )?;
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("no temporary folder: {e}"));
        let port = free_port();
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!("listener {port} 127.0.0.1\nallow_anonymous true\n{extra}"),
        )
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", conf.display()));
        let child = Command::new(program)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("mosquitto did not start: {e}"));
        wait_for_port(port, "mosquitto");
        Some(Mosquitto {
            child,
            port,
            _dir: dir,
        })
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
