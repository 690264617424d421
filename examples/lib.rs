//! The runnable programs of fnhub live beside this file as cargo examples:
//!
//! - `edge_hub`: the edge hub on embedded defaults, or from a config file (`--config FILE
//!   --serve`); the README's main command.
//! - `cloud_runtime` (feature `nats`): nodes sharing a workload through NATS JetStream, or
//!   one node from a config file with `[cloud]` (`--config FILE --serve`).
//! - `migrate`: a suspended durable execution moved from one hub to another.
//! - `policy_sim`: the reservation policies replayed on the shared Azure trace.
//!
//! This package enables the `fnhub` features they need (`edge`: process functions, the
//! config file, the HTTP front door and the MQTT bridge), so the library itself can keep
//! lean defaults. Its modules are what the binaries share: [`logs`], how they log;
//! [`memory`], the start-up code's pages given back; and [`serve`], a hub or cloud runtime
//! node from a config file.

pub mod logs;
pub mod memory;
pub mod serve;
