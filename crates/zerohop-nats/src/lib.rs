//! zerohop's `nats://` transport: hubs that publish and subscribe through a NATS
//! server, on the network-transport core ([`zerohop_net`]).
//!
//! ```text
//!   publish ──► Session (zerohop_proto::nats) ──PUB──► socket ──► nats-server
//!
//!   nats-server ──MSG──► socket ──► engine (I/O thread, or the reader's poll)
//!        ──parse in place──► receive ring (the subject as a number) ──► reader
//! ```
//!
//! `nats://host[:4222]/subject` connects to the server and subscribes to the subject
//! (`*` and `>` wildcards allowed; `group` makes it a queue group member); a hub
//! publishes on its subject. A message's body is exactly the bytes published, so plain
//! NATS clients read what a hub sends and the other way round. Delivery is what core
//! NATS gives: at most once. The connection comes back after it is lost (the
//! `reconnect` schedule, status events as on every connecting transport); what was
//! published meanwhile waits, up to `sendQueueBytes`, and goes after the subscriptions
//! are restored.
//!
//! Requests (`Rpc`) go out with a reply subject in the hub's inbox; a hub that
//! `listen`s answers the requests that come on its subject, on their reply subjects,
//! the body as it is: a plain NATS requester gets the bare answer.

mod engine;
mod options;
mod subjects;
mod transport;

pub use engine::{Counters, SERVICE_ERROR};
pub use options::NatsOptions;
pub use subjects::Subjects;
pub use transport::{NatsProtocol, open, open_nats};
