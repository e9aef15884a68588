//! The controller against a real control plane (etcd, kube-apiserver, kube-controller-manager
//! built from their Go modules) with a test node playing kubelet, scheduler and CSI. Each
//! scenario asserts the data that lands, not only phases.

mod faults;
mod first_hour;
mod harness;
mod node;
mod node_logs;
mod node_security;
mod outages;
mod plane;
mod populator;
mod runs;
mod scenarios;
mod schedules;
mod shipped_rbac;
mod velero;
mod velero_faults;
mod velero_gc;
mod velero_server;
mod velero_tls;
pub(crate) mod volsync;
