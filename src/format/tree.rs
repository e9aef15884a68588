//! Tree blobs: a directory's nodes, encoded byte-for-byte as restic (Go) encodes them so that
//! tree ids match restic's. Decoding accepts any valid tree JSON.

use crate::format::{BlobId, TreeId};
use chrono::{DateTime, FixedOffset};
use std::collections::BTreeMap;

/// Node kinds, as the `type` field names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeType {
    File,
    Dir,
    Symlink,
    /// Block device (`dev`).
    Dev,
    /// Character device (`chardev`).
    Chardev,
    Fifo,
    Socket,
    Irregular,
    /// A type this version does not know; kept so that re-encoding loses nothing.
    Other(String),
}

/// One extended attribute; `value` is raw bytes (base64 in JSON).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtendedAttribute {
    pub name: String,
    pub value: Vec<u8>,
}

/// One entry of a directory. Field order and omission rules follow restic's Go struct.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Raw name bytes (Unix file names are bytes, not necessarily UTF-8).
    pub name: Vec<u8>,
    pub node_type: NodeType,
    /// Go `os.FileMode` bits (not st_mode), see `fs` for the conversion.
    pub mode: u32,
    pub mtime: DateTime<FixedOffset>,
    pub atime: DateTime<FixedOffset>,
    pub ctime: DateTime<FixedOffset>,
    pub uid: u32,
    pub gid: u32,
    pub user: String,
    pub group: String,
    pub inode: u64,
    pub device_id: u64,
    pub size: u64,
    pub links: u64,
    /// Raw symlink target bytes.
    pub linktarget: Vec<u8>,
    pub extended_attributes: Vec<ExtendedAttribute>,
    /// restic 0.17+ generic attributes, kept as raw JSON values.
    pub generic_attributes: BTreeMap<String, serde_json::Value>,
    /// st_rdev of device nodes.
    pub device: u64,
    /// Data blobs of a file, in order (`Some(vec![])` for an empty file, `None` otherwise).
    pub content: Option<Vec<BlobId>>,
    /// Tree blob of a directory.
    pub subtree: Option<TreeId>,
}

/// A directory listing, nodes sorted by raw name bytes.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Tree {
    pub nodes: Vec<Node>,
}
