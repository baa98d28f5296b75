//! podnet's cluster DNS: the Kubernetes DNS-based service discovery specification
//! (github.com/kubernetes/dns, `docs/specification.md`, schema 1.1.0) served from memory.
//!
//! - [`index`]: the cluster as DNS needs it, changed one watched object at a time;
//! - [`answer`]: what the zone answers, a pure function of the index (the spec, with
//!   CoreDNS's kubernetes plugin where the spec leaves room);
//! - [`wire`]: queries read straight from the packet, answers encoded once with
//!   hickory-proto and replayed with the client's own question, size limits and TC;
//! - [`handler`]: one packet in, one reply or forwarding job out, through a per-thread
//!   answer cache;
//! - [`forward`]: names outside the zone sent upstream, cached, loops found;
//! - [`server`]: UDP threads, TCP and the health endpoint;
//! - [`watch`]: the kube-rs watches that feed the index.
//!
//! Why not hickory-server's `RequestHandler`: it decodes every request into a message and
//! runs a task per request; a cluster DNS answers the same few names over and over, and
//! replaying an encoded answer behind the client's question is several times cheaper
//! (see BENCHMARKS.md). hickory-proto still writes every answer.

pub mod answer;
pub mod forward;
pub mod handler;
pub mod index;
pub mod resolv;
pub mod server;
pub mod watch;
pub mod wire;

pub use answer::{PodMode, ZoneConfig};
pub use forward::Forwarder;
pub use handler::{ReplyConfig, Shared};
pub use index::Index;
pub use server::{Bound, ServerConfig, bind};
