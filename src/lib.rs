//! lifeboat: PostgreSQL backups you can prove by restoring them.
//!
//! Dependencies point one way: `cli` -> `ops` -> `repo`/`pg` ->
//! `storage`/`codec`/`format`. See ARCHITECTURE.md.

pub mod chunker;
pub mod cli;
pub mod codec;
pub mod config;
pub mod failpoint;
pub mod format;
pub mod ops;
pub mod pg;
pub mod repo;
pub mod retention;
pub mod storage;
pub mod testkit;
