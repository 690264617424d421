//! Topics, event flows and the local bus of fnhub.
//!
//! - [`topic`]: MQTT topic names and filters with the matching rules of MQTT 3.1.1 / 5.0,
//!   and topic templates (`alerts/{1}`).
//! - [`SubscriptionTable`]: topic filters to values, read without locks, changed at run
//!   time.
//! - [`Flow`]s (source + topic filter → target) and the [`Router`] that follows them:
//!   it delivers each event to matching local subscribers, follows republish flows, and
//!   returns the function invocations to start — the scheduler is not its business.
//! - [`LocalBus`]: in-process subscribers with bounded queues; a full queue is counted,
//!   never waited on.
//!
//! Not built yet (see the router issue): shared subscriptions, per-flow overflow policies,
//! the MQTT and NATS bridges, the HTTP front door, metaevents.
//!
//! # Example
//!
//! ```
//! use fnhub_core::{Event, EventSource};
//! use fnhub_router::{Flow, Router};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let router = Router::new();
//! router.add_flow(Flow::parse("device:*", "sensors/+/temperature", "function:smoother")?);
//! let mut dashboard = router.subscribe("sensors/#".parse()?, 16);
//!
//! let event = Event::new("sensors/d1/temperature", "21.5", EventSource::Device("d1".into()));
//! let dispatch = router.dispatch(event)?;
//! assert_eq!(dispatch.invocations[0].0.to_string(), "smoother");
//! assert_eq!(dashboard.recv().await.map(|e| e.payload), Some("21.5".into()));
//! # Ok(())
//! # }
//! ```
//!
//! # Cargo features
//!
//! None yet; `mqtt`, `nats` and `http` come with the bridges.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod bus;
mod flow;
#[cfg(feature = "mqtt")]
pub mod mqtt;
mod router;
mod table;
pub mod topic;

pub use bus::{Delivery, LocalBus, Subscription};
pub use flow::{Flow, FlowParseError, SourceFilter, Target};
pub use router::{Dispatch, FlowId, RouteError, Router};
pub use table::{SubscriptionId, SubscriptionTable};
