//! Reading a file tree into nodes and writing nodes back to disk.
