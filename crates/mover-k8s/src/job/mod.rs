//! The in-Job side: what `mover job ...` runs inside a mover Job's pod (probe, backup,
//! restore, forget, prune, Velero's GC), reporting progress and the result to the run's
//! status.

pub mod runner;
