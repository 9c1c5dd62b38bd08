//! Everything that talks to PostgreSQL: connection strings, child processes
//! (pg_dump, pg_restore, psql, pg_dumpall) and the pg_dump archive format.

pub mod conninfo;
pub mod dumpfile;
pub mod process;
pub mod tools;
