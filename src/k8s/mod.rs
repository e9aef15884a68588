//! The Kubernetes side: CRD types, the controller's plans and their apply steps, the in-Job
//! status reporter. The only layer that imports kube; it calls `ops` and never the reverse.
//!
//! Each kind has a pure plan (`backup`, `restore`, `repository`: observed objects in,
//! [`apply::Action`]s out) and shares one thin apply step (`apply`). `runner` is what runs
//! inside a mover Job; `controller` wires the watches, leader election and metrics.

pub mod api;
pub mod apply;
pub mod backup;
pub mod controller;
pub mod error;
pub mod jobspec;
pub mod leader;
pub mod metrics;
pub mod names;
pub mod repository;
pub mod restore;
pub mod run;
pub mod runner;

pub use error::{Error, Result};
