//! The CNI protocol (spec 1.1.0; configs of 0.4.0, 1.0.0 and 1.1.0 accepted): errors,
//! versions, the plugin environment, network configuration and results. No I/O.

pub mod config;
pub mod env;
pub mod error;
pub mod result;
pub mod version;

pub use config::{
    Attachment, DEFAULT_BRIDGE, DEFAULT_DATA_DIR, DEFAULT_SUBNET_FILE, IpamConf, NetConf,
    NetConfList, PLUGIN_TYPE, Pool, RangeConf, Resolved, RouteConf,
};
pub use env::{CniEnv, Command};
pub use error::CniError;
pub use result::{CniResult, Dns, Interface, IpConfig, Route};
