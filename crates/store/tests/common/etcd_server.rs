//! Starts a private etcd for tests (in progress).
