//! Tree blobs: a directory's nodes, encoded byte-for-byte as restic (Go) encodes them so that
//! tree ids match restic's. Decoding accepts any valid tree JSON.

use crate::format::{BlobId, FormatError, Id, TreeId, gojson, gotime};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, FixedOffset};
use serde::Deserialize;
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

impl NodeType {
    /// The `type` string restic writes for this kind.
    pub fn as_str(&self) -> &str {
        match self {
            NodeType::File => "file",
            NodeType::Dir => "dir",
            NodeType::Symlink => "symlink",
            NodeType::Dev => "dev",
            NodeType::Chardev => "chardev",
            NodeType::Fifo => "fifo",
            NodeType::Socket => "socket",
            NodeType::Irregular => "irregular",
            NodeType::Other(s) => s,
        }
    }

    /// The kind a `type` string names; unknown strings are kept as [`NodeType::Other`].
    pub fn parse(s: &str) -> NodeType {
        match s {
            "file" => NodeType::File,
            "dir" => NodeType::Dir,
            "symlink" => NodeType::Symlink,
            "dev" => NodeType::Dev,
            "chardev" => NodeType::Chardev,
            "fifo" => NodeType::Fifo,
            "socket" => NodeType::Socket,
            "irregular" => NodeType::Irregular,
            other => NodeType::Other(other.to_string()),
        }
    }
}

impl std::fmt::Display for NodeType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

fn write_key(out: &mut Vec<u8>, key: &str) {
    out.push(b',');
    gojson::write_string(out, key.as_bytes());
    out.push(b':');
}

fn write_uint(out: &mut Vec<u8>, key: &str, value: u64, omit_zero: bool) {
    if omit_zero && value == 0 {
        return;
    }
    write_key(out, key);
    out.extend_from_slice(value.to_string().as_bytes());
}

fn write_str_field(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    if value.is_empty() {
        return;
    }
    write_key(out, key);
    gojson::write_string(out, value);
}

fn write_time(out: &mut Vec<u8>, key: &str, t: &DateTime<FixedOffset>) {
    write_key(out, key);
    gojson::write_string(out, gotime::format(t).as_bytes());
}

impl Node {
    /// A node with zero times, no metadata, `content` null and no subtree.
    pub fn new(name: Vec<u8>, node_type: NodeType) -> Node {
        let zero = gotime::zero();
        Node {
            name,
            node_type,
            mode: 0,
            mtime: zero,
            atime: zero,
            ctime: zero,
            uid: 0,
            gid: 0,
            user: String::new(),
            group: String::new(),
            inode: 0,
            device_id: 0,
            size: 0,
            links: 0,
            linktarget: Vec::new(),
            extended_attributes: Vec::new(),
            generic_attributes: BTreeMap::new(),
            device: 0,
            content: None,
            subtree: None,
        }
    }

    /// Appends the node's compact JSON exactly as restic's Go struct marshals it.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"name\":");
        gojson::write_string(out, gojson::quote_name(&self.name).as_bytes());
        write_key(out, "type");
        gojson::write_string(out, self.node_type.as_str().as_bytes());
        write_uint(out, "mode", u64::from(self.mode), true);
        write_time(out, "mtime", &self.mtime);
        write_time(out, "atime", &self.atime);
        write_time(out, "ctime", &self.ctime);
        write_uint(out, "uid", u64::from(self.uid), false);
        write_uint(out, "gid", u64::from(self.gid), false);
        write_str_field(out, "user", self.user.as_bytes());
        write_str_field(out, "group", self.group.as_bytes());
        write_uint(out, "inode", self.inode, true);
        write_uint(out, "device_id", self.device_id, true);
        write_uint(out, "size", self.size, true);
        write_uint(out, "links", self.links, true);
        write_str_field(out, "linktarget", &self.linktarget);
        // restic 0.16+: the JSON string above turns invalid UTF-8 into U+FFFD, so the raw
        // bytes go alongside, and only then.
        if std::str::from_utf8(&self.linktarget).is_err() {
            write_key(out, "linktarget_raw");
            gojson::write_base64(out, &self.linktarget);
        }
        if !self.extended_attributes.is_empty() {
            write_key(out, "extended_attributes");
            out.push(b'[');
            for (i, attr) in self.extended_attributes.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(b"{\"name\":");
                gojson::write_string(out, attr.name.as_bytes());
                out.extend_from_slice(b",\"value\":");
                gojson::write_base64(out, &attr.value);
                out.push(b'}');
            }
            out.push(b']');
        }
        if !self.generic_attributes.is_empty() {
            write_key(out, "generic_attributes");
            out.push(b'{');
            // BTreeMap iterates in byte order of the keys, as Go sorts map keys.
            for (i, (k, v)) in self.generic_attributes.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                gojson::write_string(out, k.as_bytes());
                out.push(b':');
                gojson::write_value(out, v);
            }
            out.push(b'}');
        }
        write_uint(out, "device", self.device, true);
        write_key(out, "content");
        match &self.content {
            None => out.extend_from_slice(b"null"),
            Some(blobs) => {
                out.push(b'[');
                for (i, id) in blobs.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    gojson::write_string(out, id.to_hex().as_bytes());
                }
                out.push(b']');
            }
        }
        if let Some(subtree) = &self.subtree {
            write_key(out, "subtree");
            gojson::write_string(out, subtree.to_hex().as_bytes());
        }
        out.push(b'}');
    }

    /// The node's JSON on its own (no trailing newline).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        self.encode_into(&mut out);
        out
    }
}

/// Tree JSON as read; everything optional because Go leaves missing or null fields at zero.
#[derive(Deserialize)]
struct RawTree {
    #[serde(default)]
    nodes: Option<Vec<RawNode>>,
}

#[derive(Deserialize)]
struct RawNode {
    #[serde(default)]
    name: Option<String>,
    #[serde(default, rename = "type")]
    node_type: Option<String>,
    #[serde(default)]
    mode: Option<u32>,
    #[serde(default)]
    mtime: Option<String>,
    #[serde(default)]
    atime: Option<String>,
    #[serde(default)]
    ctime: Option<String>,
    #[serde(default)]
    uid: Option<u32>,
    #[serde(default)]
    gid: Option<u32>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    group: Option<String>,
    #[serde(default)]
    inode: Option<u64>,
    #[serde(default)]
    device_id: Option<u64>,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default)]
    links: Option<u64>,
    #[serde(default)]
    linktarget: Option<String>,
    #[serde(default)]
    linktarget_raw: Option<String>,
    #[serde(default)]
    extended_attributes: Option<Vec<RawExtendedAttribute>>,
    #[serde(default)]
    generic_attributes: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default)]
    device: Option<u64>,
    #[serde(default)]
    content: Option<Vec<BlobId>>,
    #[serde(default)]
    subtree: Option<TreeId>,
}

#[derive(Deserialize)]
struct RawExtendedAttribute {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    value: Option<String>,
}

fn decode_base64(what: &'static str, name: &[u8], text: &str) -> Result<Vec<u8>, FormatError> {
    STANDARD.decode(text).map_err(|e| {
        FormatError::invalid(
            what,
            format!("node {:?}: bad base64: {e}", String::from_utf8_lossy(name)),
        )
    })
}

fn decode_time(name: &[u8], text: Option<String>) -> Result<DateTime<FixedOffset>, FormatError> {
    match text {
        None => Ok(gotime::zero()),
        Some(t) => gotime::parse(&t).map_err(|e| {
            FormatError::invalid(
                "tree node time",
                format!("node {:?}: {e}", String::from_utf8_lossy(name)),
            )
        }),
    }
}

impl TryFrom<RawNode> for Node {
    type Error = FormatError;

    fn try_from(raw: RawNode) -> Result<Node, FormatError> {
        let name = gojson::unquote_name(raw.name.as_deref().unwrap_or_default());
        let linktarget = match raw.linktarget_raw {
            Some(b64) => decode_base64("tree node linktarget_raw", &name, &b64)?,
            None => raw.linktarget.unwrap_or_default().into_bytes(),
        };
        let extended_attributes = raw
            .extended_attributes
            .unwrap_or_default()
            .into_iter()
            .map(|a| {
                let value = match a.value {
                    Some(v) => decode_base64("tree node extended attribute", &name, &v)?,
                    None => Vec::new(),
                };
                Ok(ExtendedAttribute {
                    name: a.name.unwrap_or_default(),
                    value,
                })
            })
            .collect::<Result<Vec<_>, FormatError>>()?;
        Ok(Node {
            node_type: NodeType::parse(raw.node_type.as_deref().unwrap_or_default()),
            mode: raw.mode.unwrap_or_default(),
            mtime: decode_time(&name, raw.mtime)?,
            atime: decode_time(&name, raw.atime)?,
            ctime: decode_time(&name, raw.ctime)?,
            uid: raw.uid.unwrap_or_default(),
            gid: raw.gid.unwrap_or_default(),
            user: raw.user.unwrap_or_default(),
            group: raw.group.unwrap_or_default(),
            inode: raw.inode.unwrap_or_default(),
            device_id: raw.device_id.unwrap_or_default(),
            size: raw.size.unwrap_or_default(),
            links: raw.links.unwrap_or_default(),
            linktarget,
            extended_attributes,
            generic_attributes: raw.generic_attributes.unwrap_or_default(),
            device: raw.device.unwrap_or_default(),
            content: raw.content,
            subtree: raw.subtree,
            name,
        })
    }
}

impl Tree {
    /// The tree blob bytes: `{"nodes":[...]}` and a newline, byte-identical to restic's.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + 320 * self.nodes.len());
        out.extend_from_slice(b"{\"nodes\":[");
        for (i, node) in self.nodes.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            node.encode_into(&mut out);
        }
        out.extend_from_slice(b"]}\n");
        out
    }

    /// Parses a tree blob. Unknown fields are ignored; node order is kept as stored.
    pub fn decode(bytes: &[u8]) -> Result<Tree, FormatError> {
        let raw: RawTree = serde_json::from_slice(bytes).map_err(|source| FormatError::Json {
            what: "tree",
            source,
        })?;
        let nodes = raw
            .nodes
            .unwrap_or_default()
            .into_iter()
            .map(Node::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Tree { nodes })
    }

    /// The tree's blob id: SHA-256 of [`Tree::encode`].
    pub fn id(&self) -> TreeId {
        TreeId(Id::hash(&self.encode()))
    }

    /// Orders nodes by raw name bytes, as restic requires.
    pub fn sort(&mut self) {
        self.nodes.sort_by(|a, b| a.name.cmp(&b.name));
    }

    /// The node called `name`. The nodes must be sorted by name (restic writes them so, and
    /// [`Tree::sort`] does), because the lookup is a binary search.
    pub fn find(&self, name: &[u8]) -> Option<&Node> {
        self.nodes
            .binary_search_by(|n| n.name.as_slice().cmp(name))
            .ok()
            .and_then(|i| self.nodes.get(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id(hex: &str) -> Id {
        Id::from_hex(hex).unwrap()
    }

    fn time(s: &str) -> DateTime<FixedOffset> {
        gotime::parse(s).unwrap()
    }

    fn text(node: &Node) -> String {
        String::from_utf8(node.encode()).unwrap()
    }

    const T: &str = "2022-08-25T17:55:00.123456789Z";

    fn base(name: &str, node_type: NodeType, mode: u32) -> Node {
        let mut n = Node::new(name.as_bytes().to_vec(), node_type);
        n.mode = mode;
        n.mtime = time(T);
        n.atime = time(T);
        n.ctime = time(T);
        n.user = "root".into();
        n.group = "root".into();
        n
    }

    const TIMES: &str = r#""mtime":"2022-08-25T17:55:00.123456789Z","atime":"2022-08-25T17:55:00.123456789Z","ctime":"2022-08-25T17:55:00.123456789Z""#;

    #[test]
    fn empty_tree_matches_restic() {
        let tree = Tree::default();
        assert_eq!(tree.encode(), b"{\"nodes\":[]}\n");
        assert_eq!(
            tree.id().to_hex(),
            "ac08ce34ba4f8123618661bef2425f7028ffb9ac740578a3ee88684d2523fee8"
        );
    }

    #[test]
    fn hello_tree_matches_restic_id() {
        let mut n = base("hello.txt", NodeType::File, 420);
        n.ctime = time("2026-11-21T13:28:03.610117032Z");
        n.inode = 10232098;
        n.device_id = 65024;
        n.size = 13;
        n.links = 1;
        n.content = Some(vec![BlobId(id(
            "fbbd69198637d5360353c39796181175de6311c2a61abe2fe6392c938018660f",
        ))]);
        assert_eq!(
            text(&n),
            r#"{"name":"hello.txt","type":"file","mode":420,"mtime":"2022-08-25T17:55:00.123456789Z","atime":"2022-08-25T17:55:00.123456789Z","ctime":"2026-11-21T13:28:03.610117032Z","uid":0,"gid":0,"user":"root","group":"root","inode":10232098,"device_id":65024,"size":13,"links":1,"content":["fbbd69198637d5360353c39796181175de6311c2a61abe2fe6392c938018660f"]}"#
        );
        let tree = Tree { nodes: vec![n] };
        assert_eq!(tree.encode().len(), 360);
        assert_eq!(
            tree.id().to_hex(),
            "759f39d8a0570c0feafa2001f80de1100c9bfadbf8b75178c6dfcf5d352177bc"
        );
        assert_eq!(Tree::decode(&tree.encode()).unwrap(), tree);
    }

    #[test]
    fn stdin_tree_matches_restic_id() {
        let t = time("2026-11-21T13:28:03.625254101Z");
        let mut n = Node::new(b"data.txt".to_vec(), NodeType::File);
        n.mode = 420;
        n.mtime = t;
        n.atime = t;
        n.ctime = t;
        n.size = 14;
        n.content = Some(vec![BlobId(id(
            "325df6953df4b63fa228579c0d8fe4c8a47192846d5258e3aa5d95b35b3ac642",
        ))]);
        let tree = Tree { nodes: vec![n] };
        assert_eq!(tree.encode().len(), 285);
        assert_eq!(
            tree.id().to_hex(),
            "49f0bd6eb9aad31e2676d73e839328cc09031c1109ae03f99f3e3831b42f9c50"
        );
    }

    #[test]
    fn node_examples_from_spec() {
        let mut dir = base("dir", NodeType::Dir, 2147484141);
        dir.inode = 10231831;
        dir.device_id = 65024;
        dir.subtree = Some(TreeId(id(
            "759f39d8a0570c0feafa2001f80de1100c9bfadbf8b75178c6dfcf5d352177bc",
        )));
        assert_eq!(
            text(&dir),
            format!(
                r#"{{"name":"dir","type":"dir","mode":2147484141,{TIMES},"uid":0,"gid":0,"user":"root","group":"root","inode":10231831,"device_id":65024,"content":null,"subtree":"759f39d8a0570c0feafa2001f80de1100c9bfadbf8b75178c6dfcf5d352177bc"}}"#
            )
        );

        let mut empty = base("empty", NodeType::File, 420);
        empty.device_id = 65024;
        empty.links = 1;
        empty.content = Some(vec![]);
        assert_eq!(
            text(&empty),
            format!(
                r#"{{"name":"empty","type":"file","mode":420,{TIMES},"uid":0,"gid":0,"user":"root","group":"root","device_id":65024,"links":1,"content":[]}}"#
            )
        );

        let mut link = base("link", NodeType::Symlink, 134218239);
        link.links = 1;
        link.linktarget = b"hello.txt".to_vec();
        assert_eq!(
            text(&link),
            format!(
                r#"{{"name":"link","type":"symlink","mode":134218239,{TIMES},"uid":0,"gid":0,"user":"root","group":"root","links":1,"linktarget":"hello.txt","content":null}}"#
            )
        );

        let mut fifo = base("fifo", NodeType::Fifo, 33554852);
        fifo.device_id = 65024;
        assert_eq!(
            text(&fifo),
            format!(
                r#"{{"name":"fifo","type":"fifo","mode":33554852,{TIMES},"uid":0,"gid":0,"user":"root","group":"root","device_id":65024,"content":null}}"#
            )
        );

        let mut null = base("null", NodeType::Chardev, 69206454);
        null.inode = 3;
        null.device_id = 6;
        null.links = 1;
        null.device = 259;
        assert_eq!(
            text(&null),
            format!(
                r#"{{"name":"null","type":"chardev","mode":69206454,{TIMES},"uid":0,"gid":0,"user":"root","group":"root","inode":3,"device_id":6,"links":1,"device":259,"content":null}}"#
            )
        );

        let mut xattr = base("hello.txt", NodeType::File, 8389101);
        xattr.links = 2;
        xattr.extended_attributes = vec![ExtendedAttribute {
            name: "user.test".into(),
            value: b"value\x00\xff".to_vec(),
        }];
        xattr.content = Some(vec![]);
        assert_eq!(
            text(&xattr),
            format!(
                r#"{{"name":"hello.txt","type":"file","mode":8389101,{TIMES},"uid":0,"gid":0,"user":"root","group":"root","links":2,"extended_attributes":[{{"name":"user.test","value":"dmFsdWUA/w=="}}],"content":[]}}"#
            )
        );

        for node in [dir, empty, link, fifo, null, xattr] {
            let tree = Tree { nodes: vec![node] };
            assert_eq!(Tree::decode(&tree.encode()).unwrap(), tree);
        }
    }

    #[test]
    fn name_table_from_spec() {
        let rows: &[(&[u8], &str)] = &[
            (b"a\"quote", r#"a\\\"quote"#),
            (b"back\\slash", r"back\\\\slash"),
            (b"new\nline", r"new\\nline"),
            (b"tab\tx", r"tab\\tx"),
            (b"\x01ctl", r"\\x01ctl"),
            (b"bell\x07", r"bell\\a"),
            (b"del\x7f", r"del\\x7f"),
            (b"bad\xff\xfename", r"bad\\xff\\xfename"),
            (b"lt<gt>amp&", r"lt\u003cgt\u003eamp\u0026"),
            ("café".as_bytes(), "café"),
            ("nbsp\u{a0}x".as_bytes(), r"nbsp\\u00a0x"),
            ("ls\u{2028}x".as_bytes(), r"ls\\u2028x"),
            ("bom\u{feff}x".as_bytes(), r"bom\\ufeffx"),
            ("zw\u{200b}sp".as_bytes(), r"zw\\u200bsp"),
            ("ctl80\u{85}".as_bytes(), r"ctl80\\u0085"),
            (b"sq'x", "sq'x"),
        ];
        for (raw, json) in rows {
            let node = Node::new(raw.to_vec(), NodeType::Fifo);
            let expected = format!(
                r#"{{"name":"{json}","type":"fifo","mtime":"0001-01-01T00:00:00Z","atime":"0001-01-01T00:00:00Z","ctime":"0001-01-01T00:00:00Z","uid":0,"gid":0,"content":null}}"#
            );
            assert_eq!(text(&node), expected, "name {raw:?}");
            let tree = Tree { nodes: vec![node] };
            assert_eq!(Tree::decode(&tree.encode()).unwrap(), tree);
        }
    }

    #[test]
    fn linktarget_encoding() {
        let mut n = Node::new(b"l".to_vec(), NodeType::Symlink);
        n.linktarget = b"\x01tgt<&>\xff".to_vec();
        let s = text(&n);
        assert!(
            s.contains(r#","linktarget":"\u0001tgt\u003c\u0026\u003e\ufffd","linktarget_raw":"AXRndDwmPv8=","content":null"#),
            "{s}"
        );
        let back = Tree::decode(
            &Tree {
                nodes: vec![n.clone()],
            }
            .encode(),
        )
        .unwrap();
        assert_eq!(back.nodes[0].linktarget, n.linktarget);

        n.linktarget = "ok\u{8}<".as_bytes().to_vec();
        let s = text(&n);
        assert!(
            s.contains(r#","linktarget":"ok\u0008\u003c","content":null"#),
            "{s}"
        );
    }

    #[test]
    fn generic_attributes_sorted_and_escaped() {
        let mut n = Node::new(b"w".to_vec(), NodeType::File);
        n.generic_attributes
            .insert("windows.file_attributes".into(), serde_json::json!("AgA<"));
        n.generic_attributes.insert(
            "windows.creation_time".into(),
            serde_json::json!({"b": 1, "a": [true, null]}),
        );
        n.content = Some(vec![]);
        assert!(text(&n).ends_with(
            r#","generic_attributes":{"windows.creation_time":{"a":[true,null],"b":1},"windows.file_attributes":"AgA\u003c"},"content":[]}"#
        ));
    }

    #[test]
    fn decode_is_lenient_like_go() {
        let json = br#"{"extra":1,"nodes":[{"name":"a","type":"weird","future":{"a":1},"inode":18446744073709551615,"content":null},{"name":"bad\\q","type":"file","mtime":"2015-01-02T18:10:50.895208559+01:00","content":[]}]}"#;
        let tree = Tree::decode(json).unwrap();
        let a = &tree.nodes[0];
        assert_eq!(a.node_type, NodeType::Other("weird".into()));
        assert_eq!(a.inode, u64::MAX);
        assert_eq!(a.mtime, gotime::zero());
        assert_eq!(a.content, None);
        let b = &tree.nodes[1];
        assert_eq!(b.name, br"bad\q");
        assert_eq!(b.content, Some(vec![]));
        assert_eq!(
            gotime::format(&b.mtime),
            "2015-01-02T18:10:50.895208559+01:00"
        );
        assert!(tree.find(b"a").is_some());

        assert_eq!(Tree::decode(b"{}").unwrap(), Tree::default());
        assert_eq!(
            Tree::decode(b"{\"nodes\":null}\n").unwrap(),
            Tree::default()
        );
        assert!(Tree::decode(br#"{"nodes":[{"size":1.5}]}"#).is_err());
        assert!(Tree::decode(br#"{"nodes":[{"mtime":"never"}]}"#).is_err());
        assert!(Tree::decode(br#"{"nodes":[{"linktarget_raw":"!!"}]}"#).is_err());
        assert!(Tree::decode(b"not json").is_err());
    }

    #[test]
    fn sort_and_find_use_raw_bytes() {
        let mut tree = Tree {
            nodes: [&b"b"[..], b"\xff", b"a", b"B", b"a\x00"]
                .iter()
                .map(|n| Node::new(n.to_vec(), NodeType::File))
                .collect(),
        };
        tree.sort();
        let names: Vec<&[u8]> = tree.nodes.iter().map(|n| n.name.as_slice()).collect();
        assert_eq!(names, vec![&b"B"[..], b"a", b"a\x00", b"b", b"\xff"]);
        assert_eq!(tree.find(b"\xff").unwrap().name, b"\xff");
        assert!(tree.find(b"c").is_none());
    }

    fn arb_time() -> impl Strategy<Value = DateTime<FixedOffset>> {
        (
            -62_135_596_800i64..253_402_300_799,
            0u32..1_000_000_000,
            -(23 * 60 + 59)..(23 * 60 + 59),
        )
            .prop_filter_map("year in range", |(secs, nanos, off)| {
                let offset = FixedOffset::east_opt(off * 60)?;
                let t = DateTime::from_timestamp(secs, nanos)?.with_timezone(&offset);
                use chrono::Datelike;
                (0..=9999).contains(&t.year()).then_some(t)
            })
    }

    fn arb_id() -> impl Strategy<Value = Id> {
        any::<[u8; 32]>().prop_map(Id)
    }

    fn arb_node() -> impl Strategy<Value = Node> {
        let bytes = || proptest::collection::vec(any::<u8>(), 0..24);
        let node_type = prop_oneof![
            Just(NodeType::File),
            Just(NodeType::Dir),
            Just(NodeType::Symlink),
            Just(NodeType::Dev),
            Just(NodeType::Chardev),
            Just(NodeType::Fifo),
            Just(NodeType::Socket),
            Just(NodeType::Irregular),
            "[A-Z][a-z<&]{0,6}".prop_map(NodeType::Other),
        ];
        let xattrs = proptest::collection::vec(
            (any::<String>(), bytes()).prop_map(|(name, value)| ExtendedAttribute { name, value }),
            0..3,
        );
        let generic = proptest::collection::btree_map(
            any::<String>(),
            any::<String>().prop_map(serde_json::Value::String),
            0..3,
        );
        (
            (
                bytes(),
                node_type,
                any::<u32>(),
                arb_time(),
                arb_time(),
                arb_time(),
            ),
            (any::<u32>(), any::<u32>(), any::<String>(), any::<String>()),
            (
                any::<u64>(),
                any::<u64>(),
                any::<u64>(),
                any::<u64>(),
                any::<u64>(),
            ),
            (bytes(), xattrs, generic),
            (
                proptest::option::of(proptest::collection::vec(arb_id(), 0..3)),
                proptest::option::of(arb_id()),
            ),
        )
            .prop_map(
                |(
                    (name, node_type, mode, mtime, atime, ctime),
                    (uid, gid, user, group),
                    (inode, device_id, size, links, device),
                    (linktarget, extended_attributes, generic_attributes),
                    (content, subtree),
                )| Node {
                    name,
                    node_type,
                    mode,
                    mtime,
                    atime,
                    ctime,
                    uid,
                    gid,
                    user,
                    group,
                    inode,
                    device_id,
                    size,
                    links,
                    linktarget,
                    extended_attributes,
                    generic_attributes,
                    device,
                    content: content.map(|c| c.into_iter().map(BlobId).collect()),
                    subtree: subtree.map(TreeId),
                },
            )
    }

    proptest! {
        #[test]
        fn encode_decode_roundtrip(nodes in proptest::collection::vec(arb_node(), 0..4)) {
            let mut tree = Tree { nodes };
            tree.sort();
            let bytes = tree.encode();
            let back = Tree::decode(&bytes).unwrap();
            prop_assert_eq!(back.encode(), bytes);
            prop_assert_eq!(back, tree);
        }
    }
}
