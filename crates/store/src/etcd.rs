//! The etcd backend (in progress; behind the `etcd` feature).
