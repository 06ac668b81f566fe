//! Implementations of the ports. `embedded` runs on SQLite files in one directory.

pub mod embedded;
