//! podnet's Kubernetes-compatible API server.
