//! Content-defined chunkers. Pure: a chunker takes `&[u8]` and returns cut points.

pub mod fastcdc;
pub mod polynomial;
