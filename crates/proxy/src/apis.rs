//! The watches of the proxy, as podnet's parts watch: what it does without EndpointSlices
//! (programs the Services without endpoints: their ClusterIPs refuse at once instead of
//! timing out), for the message [`podnet_watch::Trouble`] says once.

use podnet_watch::Watched;

pub const ENDPOINT_SLICES: Watched = podnet_watch::ENDPOINT_SLICES
    .meanwhile("Services get their rules without endpoints until it does");

pub const SERVICES: Watched =
    podnet_watch::SERVICES.meanwhile("no Service gets rules until it does");
