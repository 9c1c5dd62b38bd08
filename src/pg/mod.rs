//! Everything that talks to PostgreSQL: connection strings, child processes
//! (pg_dump, pg_restore, psql, pg_dumpall) and the pg_dump archive format.

pub mod backup_api;
pub mod checksum;
pub mod config_files;
pub mod conninfo;
pub mod datadir;
pub mod dumpfile;
pub mod process;
pub mod tools;
pub mod wal;
