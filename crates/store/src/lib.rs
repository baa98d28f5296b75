//! The `Store` trait: a versioned key-value store in etcd's revision model.
