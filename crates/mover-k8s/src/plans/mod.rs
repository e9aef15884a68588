//! The pure plans: a resource and what was observed of it in, [`crate::controller::apply`]
//! actions out. No I/O; each is unit-tested without an API server.
//!
//! One plan per kind (`backup`, `restore`, `repository`, `schedule`), the run lifecycle they
//! share (`run`), the mover Job and its access objects they ask for (`jobspec`), and the cron
//! schedules (`cron`).

pub mod backup;
pub mod cron;
pub mod jobspec;
pub mod repository;
pub mod restore;
pub mod run;
pub mod schedule;
