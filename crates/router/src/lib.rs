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
//! - [`mqtt`] (feature `mqtt`): the bridge to an MQTT broker.
//!
//! Each flow to a function has an [`Overflow`] policy for when the hub is full: reject to
//! the publisher, drop the flow's oldest waiting invocation, or wait (in order) for a
//! while; the hub applies it.
//!
//! Not built yet: the NATS bridge.
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
//! assert_eq!(dispatch.invocations[0].function.to_string(), "smoother");
//! assert_eq!(dashboard.recv().await.map(|e| e.payload), Some("21.5".into()));
//! # Ok(())
//! # }
//! ```
//!
//! # Cargo features
//!
//! - `mqtt`: the MQTT bridge (rumqttc, MQTT 5).

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
pub use flow::{Flow, FlowParseError, Overflow, SourceFilter, Target};
pub use router::{Dispatch, FlowId, RouteError, Routed, Router};
pub use table::{SubscriptionId, SubscriptionTable};
