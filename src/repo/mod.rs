//! Repository = format + crypto + storage: keys, config, index, packer, locks.
