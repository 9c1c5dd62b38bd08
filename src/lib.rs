//! lifeboat: PostgreSQL backups you can prove by restoring them.
//!
//! Dependencies point one way: `cli` -> `ops` -> `repo`/`pg`/`catalog` ->
//! `storage`/`codec`/`format`. See ARCHITECTURE.md.

pub mod config;
pub mod pg;
pub mod storage;
pub mod testkit;
