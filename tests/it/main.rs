//! mover's integration tests: the `mover` binary against the real `restic` binary, on local
//! directories and on a real S3 server (moto) started on 127.0.0.1.

mod support;

mod bad_input;
mod block;
mod block_cbt;
mod controller;
mod dedup_restic;
mod everyday;
mod faults;
mod fixtures;
mod forget_policy;
mod incremental;
mod interop_local;
mod interop_s3;
mod kills;
mod locks;
mod maintenance;
mod pipeline;
mod volsync_entry;
mod volsync_script;
mod volsync_sequence;
