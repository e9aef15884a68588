//! Progress reporting for long operations.
