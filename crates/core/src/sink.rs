//! Where events go.

use crate::event::Event;
use crate::function::BoxFuture;

/// An event could not be published. The event is handed back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// A bounded queue on the way is full.
    #[error("queue full; event on {:?} not accepted", .0.topic)]
    Full(Event),
    /// The sink is shut down.
    #[error("sink closed; event on {:?} not accepted", .0.topic)]
    Closed(Event),
    /// The topic is not a valid topic name.
    #[error("invalid topic {:?}", .0.topic)]
    InvalidTopic(Event),
}

impl PublishError {
    /// The event that was not published.
    pub fn into_event(self) -> Event {
        match self {
            PublishError::Full(e) | PublishError::Closed(e) | PublishError::InvalidTopic(e) => e,
        }
    }
}

/// Takes events: the router's bus, a bridge, a test recorder.
pub trait EventSink: Send + Sync + 'static {
    /// Publishes one event.
    fn publish(&self, event: Event) -> BoxFuture<'_, Result<(), PublishError>>;
}
