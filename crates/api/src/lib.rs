//! Shared types and validation for podnet. No I/O lives here.
