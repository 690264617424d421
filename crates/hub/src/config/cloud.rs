//! `[cloud]`: the hub is a node of a cloud runtime deployment (feature `nats`).
//!
//! ```toml
//! [cloud]
//! nats = "nats://127.0.0.1:4222"          # or a list: the servers of one cluster
//! deployment = "prod"                     # optional (default "default"): nodes with the
//!                                         # same deployment share one work stream
//! node = "node-a"                         # optional: the node's name (default: hub.name)
//! replicas = 3                            # optional: copies of each stream in a cluster
//! ack_wait_ms = 10000                     # optional: a dead node's work comes back after
//! in_flight = 64                          # optional: invocations one node takes at once
//! # credentials_file = "nats.creds"       # a NATS user's JWT and seed
//! # ca_file = "ca.pem"                    # TLS: the servers' CA, and the node's client
//! # cert_file = "node.pem"                # certificate and key (PEM)
//! # key_file = "node.key"
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

/// `[cloud]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CloudSection {
    pub(super) nats: Spanned<Servers>,
    pub(super) deployment: Option<Spanned<String>>,
    pub(super) node: Option<Spanned<String>>,
    pub(super) replicas: Option<Spanned<u64>>,
    pub(super) ack_wait_ms: Option<Spanned<u64>>,
    pub(super) in_flight: Option<Spanned<u64>>,
    pub(super) credentials_file: Option<PathBuf>,
    pub(super) ca_file: Option<PathBuf>,
    pub(super) cert_file: Option<PathBuf>,
    pub(super) key_file: Option<PathBuf>,
}

/// One server, or the servers of one cluster.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum Servers {
    One(String),
    Many(Vec<String>),
}

/// A node's part of the config file: how it reaches NATS and which deployment it joins.
#[derive(Debug, Clone)]
#[cfg_attr(not(feature = "nats"), allow(dead_code))]
pub struct CloudNode {
    /// The servers, each `nats://host:port` or `tls://host:port`.
    pub servers: Vec<String>,
    /// The node's name.
    pub node: String,
    /// The deployment, replicas, ack wait and in-flight bound.
    #[cfg(feature = "nats")]
    pub config: crate::cloud::CloudConfig,
    credentials_file: Option<PathBuf>,
    ca_file: Option<PathBuf>,
    client_cert: Option<(PathBuf, PathBuf)>,
}

/// What is wrong with `[cloud]`: the key and the message.
type Refusal = (Option<std::ops::Range<usize>>, String, String);

impl CloudSection {
    /// Checks the section; `hub` is the hub's name (the node's by default), `resolve`
    /// makes paths relative to the file absolute.
    pub(super) fn node(
        &self,
        hub: &str,
        resolve: &dyn Fn(&Path) -> PathBuf,
    ) -> Result<CloudNode, Refusal> {
        let refuse = |span: std::ops::Range<usize>, key: &str, m: String| {
            (Some(span), format!("cloud.{key}"), m)
        };
        let servers = match self.nats.get_ref() {
            Servers::One(s) => vec![s.clone()],
            Servers::Many(list) => list.clone(),
        };
        if servers.is_empty() {
            return Err(refuse(self.nats.span(), "nats", "no server given".into()));
        }
        for s in &servers {
            let rest = s
                .strip_prefix("nats://")
                .or_else(|| s.strip_prefix("tls://"));
            let ok = rest.is_some_and(|r| {
                let host_port = r.rsplit('@').next().unwrap_or(r);
                host_port
                    .rsplit_once(':')
                    .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0))
            });
            if !ok {
                return Err(refuse(
                    self.nats.span(),
                    "nats",
                    format!("{s:?} is not nats://host:port or tls://host:port"),
                ));
            }
        }
        let deployment = match &self.deployment {
            Some(d) => {
                crate::check_deployment(d.get_ref())
                    .map_err(|m| refuse(d.span(), "deployment", m))?;
                d.get_ref().clone()
            }
            None => "default".to_owned(),
        };
        let node = match &self.node {
            Some(n) => n.get_ref().clone(),
            None => hub.to_owned(),
        };
        if node.is_empty() || node.len() > 64 || node.chars().any(|c| c.is_control()) {
            let span = self.node.as_ref().map_or(0..0, Spanned::span);
            return Err(refuse(
                span,
                "node",
                format!("{node:?}: a node name is 1 to 64 printable characters"),
            ));
        }
        let number = |v: &Option<Spanned<u64>>, key: &str, min: u64, max: u64| {
            v.as_ref()
                .map(|v| {
                    super::bounded(*v.get_ref(), min, max).map_err(|m| refuse(v.span(), key, m))
                })
                .transpose()
        };
        let replicas = number(&self.replicas, "replicas", 1, 5)?;
        let ack_wait = number(&self.ack_wait_ms, "ack_wait_ms", 100, 3_600_000)?;
        let in_flight = number(&self.in_flight, "in_flight", 1, 4096)?;
        let file = |p: &Option<PathBuf>, key: &str| -> Result<Option<PathBuf>, Refusal> {
            match p {
                None => Ok(None),
                Some(p) => {
                    let p = resolve(p);
                    if p.is_file() {
                        Ok(Some(p))
                    } else {
                        Err((
                            None,
                            format!("cloud.{key}"),
                            format!("{} not found", p.display()),
                        ))
                    }
                }
            }
        };
        let client_cert = match (
            file(&self.cert_file, "cert_file")?,
            file(&self.key_file, "key_file")?,
        ) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => {
                return Err((
                    None,
                    "cloud.cert_file".into(),
                    "a client certificate needs both cert_file and key_file".into(),
                ));
            }
        };
        #[cfg(feature = "nats")]
        let config = {
            let mut c = crate::cloud::CloudConfig::default().with_deployment(deployment);
            if let Some(r) = replicas {
                c = c.with_replicas(r as usize);
            }
            if let Some(ms) = ack_wait {
                c = c.with_ack_wait(Duration::from_millis(ms));
            }
            if let Some(n) = in_flight {
                c = c.with_in_flight(n as usize);
            }
            c
        };
        #[cfg(not(feature = "nats"))]
        let _ = (deployment, replicas, ack_wait, in_flight, Duration::ZERO);
        Ok(CloudNode {
            servers,
            node,
            #[cfg(feature = "nats")]
            config,
            credentials_file: file(&self.credentials_file, "credentials_file")?,
            ca_file: file(&self.ca_file, "ca_file")?,
            client_cert,
        })
    }
}

#[cfg(feature = "nats")]
impl CloudNode {
    /// Connects to the servers with the section's credentials and TLS. The connection
    /// comes back by itself after a loss (the node keeps serving what it runs meanwhile).
    pub async fn connect(&self) -> Result<async_nats::Client, crate::cloud::CloudError> {
        let connect =
            |e: Box<dyn std::error::Error + Send + Sync>| crate::cloud::CloudError::Connect(e);
        let mut options = async_nats::ConnectOptions::new()
            .name(format!("fnhub-{}", self.node))
            .max_reconnects(None);
        if let Some(path) = &self.credentials_file {
            options = options
                .credentials_file(path)
                .await
                .map_err(|e| connect(e.into()))?;
        }
        if let Some(ca) = &self.ca_file {
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        if let Some((cert, key)) = &self.client_cert {
            options = options
                .add_client_certificate(cert.clone(), key.clone())
                .require_tls(true);
        }
        options
            .connect(self.servers.clone())
            .await
            .map_err(|e| connect(e.into()))
    }
}
