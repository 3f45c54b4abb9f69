//! The launcher of the infrastructure the project runs on: a PostgreSQL
//! cluster of its own ([`postgres`]) and Apache Kafka in KRaft mode
//! ([`kafka`]), installed where missing ([`install`]). `./dev` drives it
//! through the `stack` command; the chaos run starts a replicated Kafka
//! cluster and a Postgres cluster of its own with it.

#![warn(missing_docs)]

pub mod install;
pub mod kafka;
pub mod postgres;
pub mod process;
