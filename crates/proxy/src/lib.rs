//! The service proxy that runs on every node (kube-proxy's job).
