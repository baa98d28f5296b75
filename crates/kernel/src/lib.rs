//! Kernel plumbing for podnet.
//!
//! Everything here is synchronous so that the CNI plugin can use it without an
//! async runtime; the agent calls it from blocking tasks. A netlink socket
//! belongs to the network namespace of the thread that opened it, so
//! [`Netlink::open_in`] opens its socket on a short-lived thread that has
//! entered the target namespace, and the socket stays bound there.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod addr;
pub mod conntrack;
pub mod error;
pub mod link;
pub mod neigh;
pub mod netlink;
pub mod netns;
mod nflisten;
pub mod nflog;
pub mod nft;
pub mod nftnl;
pub mod nftrace;
pub mod preflight;
pub mod route;
pub mod ruleset;
pub mod sysctl;
pub mod vxlan;

pub use error::{KernelError, Result};
pub use link::Link;
pub use netlink::Netlink;
pub use netns::{NetNs, OwnedNetNs};
pub use route::Route;
