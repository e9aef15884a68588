#!/usr/bin/env bash
# Regenerates the restic fixture repositories in testdata/ and their manifests.
#
# Every repository is written by the real restic binary (0.14.x expected). File contents come
# from a seeded SHAKE-256 stream and every timestamp is fixed, so the backed-up trees are the
# same on every run; the repositories themselves differ between runs (restic draws random
# keys and IVs), which is why each archive ships with a manifest made from that archive.
#
# Needs: restic, python3 with the `cryptography` package (Debian: python3-cryptography),
# tar, gzip, mkfifo. Run as root so the uid/gid 1234:5678 file can be made.
#
# Usage: scripts/make-fixtures.sh            (writes testdata/*.tar.gz and *.manifest.json)
set -euo pipefail
export TZ=UTC LC_ALL=C

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$ROOT/testdata"
SPEC_TESTDATA="${SPEC_TESTDATA:-$ROOT/../shared/spec/testdata}"
# Fixed path: restic records the absolute backup path in each snapshot.
WORK=/tmp/mover-fixtures
PY="${PYTHON:-python3}"

export RESTIC_PASSWORD=geheim
export RESTIC_CACHE_DIR="$WORK/cache"

restic_version="$(restic version | awk '{print $2}')"
case "$restic_version" in
0.14.*) ;;
*) echo "warning: restic $restic_version found; the fixtures were made with 0.14.0" >&2 ;;
esac
"$PY" -c 'import cryptography' 2>/dev/null || {
    echo "python3 needs the cryptography package (apt-get install python3-cryptography)" >&2
    exit 1
}

rm -rf "$WORK"
mkdir -p "$WORK" "$OUT"
TOOL="$WORK/fixture_tool.py"

cat >"$TOOL" <<'PYEOF'
"""Helper for make-fixtures.sh: tree generation, cheap re-keying, manifests."""
import base64, calendar, hashlib, json, os, re, subprocess, sys

PASSWORD = b"geheim"
# Cheap KDF for fixtures: opening a repository costs about a millisecond.
NEW_N, NEW_R, NEW_P = 1024, 8, 1


def stream(label, n):
    return hashlib.shake_256(b"mover-fixture:" + label.encode()).digest(n)


def set_time(path, secs, nanos):
    ns = secs * 1_000_000_000 + nanos
    os.utime(path, ns=(ns, ns), follow_symlinks=False)


def gen_tree(src, variant, large_bytes):
    """variant 'first' creates the tree; 'second' modifies it in place."""
    t = os.path.join(src, "tree")
    j = lambda *p: os.path.join(t, *p)
    if variant == "first":
        os.makedirs(j("sub", "deeper"))
        os.makedirs(j("empty-dir"))
        open(j("empty"), "wb").close()
        with open(j("hello.txt"), "wb") as f:
            f.write(b"hello restic\n")
        with open(j("large.bin"), "wb") as f:
            f.write(stream("large", large_bytes))
        with open(j("compressible.txt"), "wb") as f:
            f.write(b"".join(b"line %06d of a very compressible file\n" % i for i in range(2500)))
        with open(j("name with spaces \u00fcn\u00efc\u00f8d\u00e9 e\u0301 \u2713.txt"), "wb") as f:
            f.write(stream("unicode", 777))
        with open(j("mode-0600.txt"), "wb") as f:
            f.write(b"private\n")
        os.chmod(j("mode-0600.txt"), 0o600)
        with open(j("exec.sh"), "wb") as f:
            f.write(b"#!/bin/sh\necho hi\n")
        os.chmod(j("exec.sh"), 0o755)
        with open(j("owned-1234.txt"), "wb") as f:
            f.write(b"owned by 1234:5678\n")
        os.chown(j("owned-1234.txt"), 1234, 5678)
        with open(j("xattr.txt"), "wb") as f:
            f.write(b"has an xattr\n")
        os.setxattr(j("xattr.txt"), "user.mover", b"\x00\x01bin\xff")
        with open(j("hardlink-a"), "wb") as f:
            f.write(stream("hardlink", 4096))
        os.link(j("hardlink-a"), j("hardlink-b"))
        os.mkfifo(j("fifo"), 0o644)
        os.symlink("hello.txt", j("link-rel"))
        os.symlink("does/not/exist", j("link-dangling"))
        os.symlink("/nonexistent/absolute/target", j("link-abs"))
        with open(j("sub", "nested.txt"), "wb") as f:
            f.write(stream("nested", 1500))
        with open(j("sub", "deeper", "leaf.txt"), "wb") as f:
            f.write(b"leaf\n")
        base = 1_650_000_000
    else:
        with open(j("hello.txt"), "wb") as f:
            f.write(b"hello again, restic\n")
        with open(j("added.txt"), "wb") as f:
            f.write(stream("added", 2048))
        os.remove(j("compressible.txt"))
        base = 1_660_000_000
    # Fixed times with nanoseconds on everything; directories last, deepest first.
    entries = []
    for d, dirs, files in os.walk(t, topdown=False):
        for name in sorted(files):
            entries.append((os.path.join(d, name), False))
        for name in sorted(dirs):
            p = os.path.join(d, name)
            if os.path.islink(p):
                entries.append((p, False))
    dirs = [d for d, _, _ in os.walk(t, topdown=False)]
    for i, (p, _) in enumerate(sorted(e for e in entries)):
        set_time(p, base + 1000 * i, 123_456_789 + i)
    for i, d in enumerate(dirs):
        set_time(d, base + 500_000 + 1000 * i, 987_654_321 - i)


def gen_disk(path, size):
    """A disk-image-like stream: zeros with a few pseudo-random extents."""
    buf = bytearray(size)
    for k, off in enumerate(range(0, size, size // 4)):
        chunk = stream("disk%d" % k, 65536)
        buf[off + 4096: off + 4096 + len(chunk)] = chunk
    with open(path, "wb") as f:
        f.write(bytes(buf))


# --- restic crypto (spec section 3), used only to swap the key for a cheap-KDF one ---------

def poly1305(key32, msg):
    r = int.from_bytes(key32[:16], "little") & 0x0FFFFFFC0FFFFFFC0FFFFFFC0FFFFFFF
    s = int.from_bytes(key32[16:], "little")
    p = (1 << 130) - 5
    acc = 0
    for i in range(0, len(msg), 16):
        block = msg[i:i + 16] + b"\x01"
        acc = (acc + int.from_bytes(block, "little")) * r % p
    return ((acc + s) % (1 << 128)).to_bytes(16, "little")


def _aes(key, mode):
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
    return Cipher(algorithms.AES(key), mode)


def _mac(mac_k, mac_r, iv, ct):
    from cryptography.hazmat.primitives.ciphers import modes
    enc = _aes(mac_k, modes.ECB()).encryptor()
    s = enc.update(iv) + enc.finalize()
    return poly1305(mac_r + s, ct)


def open_blob(key64, blob):
    from cryptography.hazmat.primitives.ciphers import modes
    iv, ct, tag = blob[:16], blob[16:-16], blob[-16:]
    if _mac(key64[32:48], key64[48:64], iv, ct) != tag:
        raise SystemExit("MAC mismatch: wrong password?")
    dec = _aes(key64[:32], modes.CTR(iv)).decryptor()
    return dec.update(ct) + dec.finalize()


def seal_blob(key64, msg):
    from cryptography.hazmat.primitives.ciphers import modes
    iv = os.urandom(16)
    enc = _aes(key64[:32], modes.CTR(iv)).encryptor()
    ct = enc.update(msg) + enc.finalize()
    return iv + ct + _mac(key64[32:48], key64[48:64], iv, ct)


def scrypt(salt, n, r, p):
    return hashlib.scrypt(PASSWORD, salt=salt, n=n, r=r, p=p, dklen=64,
                          maxmem=256 * 1024 * 1024)


def rekey(repo):
    keys = os.listdir(os.path.join(repo, "keys"))
    assert len(keys) == 1, keys
    path = os.path.join(repo, "keys", keys[0])
    with open(path, "rb") as f:
        old = json.loads(f.read())
    user = scrypt(base64.b64decode(old["salt"]), old["N"], old["r"], old["p"])
    master = open_blob(user, base64.b64decode(old["data"]))
    salt = os.urandom(64)
    new_user = scrypt(salt, NEW_N, NEW_R, NEW_P)
    new = {
        "created": old["created"], "username": old["username"], "hostname": old["hostname"],
        "kdf": "scrypt", "N": NEW_N, "r": NEW_R, "p": NEW_P,
        "salt": base64.b64encode(salt).decode(),
        "data": base64.b64encode(seal_blob(new_user, master)).decode(),
    }
    raw = json.dumps(new, separators=(",", ":")).encode()
    name = hashlib.sha256(raw).hexdigest()
    os.chmod(path, 0o600)
    os.remove(path)
    newpath = os.path.join(repo, "keys", name)
    with open(newpath, "wb") as f:
        f.write(raw)
    os.chmod(newpath, 0o400)


# --- manifest -------------------------------------------------------------------------------

def go_unquote(s):
    """Reverse of Go strconv.Quote without the surrounding quotes (spec 9.3); raw bytes out."""
    out = bytearray()
    i = 0
    simple = {"a": 7, "b": 8, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11, "\\": 92, '"': 34}
    while i < len(s):
        c = s[i]
        if c != "\\":
            out += c.encode("utf-8", "surrogateescape")
            i += 1
            continue
        e = s[i + 1]
        if e in simple:
            out.append(simple[e]); i += 2
        elif e == "x":
            out.append(int(s[i + 2:i + 4], 16)); i += 4
        elif e == "u":
            out += chr(int(s[i + 2:i + 6], 16)).encode(); i += 6
        elif e == "U":
            out += chr(int(s[i + 2:i + 10], 16)).encode(); i += 10
        elif e in "01234567":
            out.append(int(s[i + 1:i + 4], 8)); i += 4
        else:
            return s.encode("utf-8", "surrogateescape")  # not a quoted name: take it raw
    return bytes(out)


TIME_RE = re.compile(r"^(-?\d{4,})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$")


def parse_time(t):
    m = TIME_RE.match(t)
    if not m:
        raise SystemExit("bad time " + t)
    y, mo, d, h, mi, s = (int(x) for x in m.groups()[:6])
    secs = calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0))
    frac = m.group(7) or ".0"
    nanos = int((frac[1:] + "000000000")[:9])
    z = m.group(8)
    if z != "Z":
        sign = 1 if z[0] == "+" else -1
        secs -= sign * (int(z[1:3]) * 3600 + int(z[4:6]) * 60)
    return {"rfc3339": t, "secs": secs, "nanos": nanos}


def go_mode_to_unix(m):
    v = m & 0o777
    if m & (1 << 23): v |= 0o4000
    if m & (1 << 22): v |= 0o2000
    if m & (1 << 20): v |= 0o1000
    return "%04o" % v


def restic(repo, *args):
    return subprocess.run(["restic", "-r", repo, "--no-lock", *args], check=True,
                          stdout=subprocess.PIPE).stdout


def walk(repo, tree_id, prefix, restored, out):
    tree = json.loads(restic(repo, "cat", "blob", tree_id))
    for n in tree["nodes"] or []:
        name = go_unquote(n["name"])
        path = prefix + name if not prefix else prefix + b"/" + name
        e = {"path": path.decode("utf-8", "surrogateescape")}
        try:
            path.decode("utf-8")
        except UnicodeDecodeError:
            e["path_b64"] = base64.b64encode(path).decode()
        e["type"] = n["type"]
        gm = n.get("mode", 0)
        e["mode"] = go_mode_to_unix(gm)
        e["go_mode"] = gm
        e["uid"] = n.get("uid", 0)
        e["gid"] = n.get("gid", 0)
        e["mtime"] = parse_time(n["mtime"])
        if n["type"] == "file":
            e["size"] = n.get("size", 0)
            with open(os.path.join(restored, path.decode("utf-8", "surrogateescape")), "rb") as f:
                data = f.read()
            if len(data) != e["size"]:
                raise SystemExit("size mismatch for %r" % path)
            e["sha256"] = hashlib.sha256(data).hexdigest()
            e["content"] = n.get("content") or []
        if n["type"] == "symlink":
            e["linktarget"] = n.get("linktarget", "")
        for k in ("links", "inode", "device"):
            if n.get(k):
                e[k] = n[k]
        if n.get("extended_attributes"):
            e["xattrs"] = [{"name": x["name"], "value_b64": x["value"]}
                           for x in n["extended_attributes"]]
        out.append(e)
        if n["type"] == "dir":
            walk(repo, n["subtree"], path, restored, out)


def manifest(repo, name, archive, note, work):
    cfg = json.loads(restic(repo, "cat", "config"))
    with open(os.path.join(repo, "keys", os.listdir(os.path.join(repo, "keys"))[0])) as f:
        key = json.load(f)
    snaps = sorted(json.loads(restic(repo, "snapshots", "--json")), key=lambda s: s["time"])
    out_snaps = []
    for idx, s in enumerate(snaps):
        restored = os.path.join(work, "restore-" + name + "-" + s["id"][:8])
        restic(repo, "restore", s["id"], "--target", restored)
        nodes = []
        walk(repo, s["tree"], b"", restored, nodes)
        out_snaps.append({
            "index": idx, "id": s["id"], "time": s["time"], "tree": s["tree"],
            "paths": s.get("paths", []), "hostname": s.get("hostname", ""),
            "tags": s.get("tags") or [], "nodes": nodes,
        })
    doc = {
        "fixture": name, "archive": archive, "repo_dir": "repo", "password": "geheim",
        "restic_version": subprocess.run(["restic", "version"], check=True,
                                         stdout=subprocess.PIPE).stdout.decode().split()[1],
        "repository_version": cfg["version"], "repository_id": cfg["id"],
        "chunker_polynomial": cfg["chunker_polynomial"],
        "kdf": {"N": key["N"], "r": key["r"], "p": key["p"]},
        "note": note, "snapshots": out_snaps,
    }
    json.dump(doc, sys.stdout, indent=1, ensure_ascii=False)
    sys.stdout.write("\n")


cmd = sys.argv[1]
if cmd == "gen-tree":
    gen_tree(sys.argv[2], sys.argv[3], int(sys.argv[4]))
elif cmd == "gen-disk":
    gen_disk(sys.argv[2], int(sys.argv[3]))
elif cmd == "rekey":
    rekey(sys.argv[2])
elif cmd == "manifest":
    manifest(*sys.argv[2:7])
else:
    raise SystemExit("unknown command " + cmd)
PYEOF

LARGE=$((3 * 1024 * 1024 + 12345))

# pack NAME: testdata/NAME.tar.gz from $WORK/NAME/repo, reproducible tar metadata.
pack() {
    local name="$1"
    tar -C "$WORK/$name" --sort=name --owner=0 --group=0 --numeric-owner \
        --mtime='2022-01-01 00:00:00Z' -cf - repo | gzip -9n >"$OUT/$name.tar.gz"
}

write_manifest() {
    local name="$1" note="$2"
    restic -r "$WORK/$name/repo" check --read-data -q
    "$PY" "$TOOL" manifest "$WORK/$name/repo" "$name" "$name.tar.gz" "$note" "$WORK" \
        >"$OUT/$name.manifest.json"
}

# make_tree_repo NAME VERSION COMPRESSION
make_tree_repo() {
    local name="$1" version="$2" comp="$3" repo="$WORK/$1/repo" src="$WORK/$1/src"
    mkdir -p "$src"
    restic -r "$repo" init --repository-version "$version" -q
    "$PY" "$TOOL" rekey "$repo"
    local copt=()
    [ "$version" = 2 ] && copt=(--compression "$comp")
    "$PY" "$TOOL" gen-tree "$src" first "$LARGE"
    (cd "$src" && restic -r "$repo" backup "${copt[@]}" --host fixture --tag first \
        --time '2022-04-15 05:20:00' tree -q)
    "$PY" "$TOOL" gen-tree "$src" second "$LARGE"
    (cd "$src" && restic -r "$repo" backup "${copt[@]}" --host fixture --tag second \
        --time '2022-08-08 23:06:40' tree -q)
}

# large_chunks NAME: how many chunks tree/large.bin has in the first snapshot.
large_chunks() {
    "$PY" -c 'import json,sys
d = json.load(open(sys.argv[1]))
print(next(len(e["content"]) for e in d["snapshots"][0]["nodes"] if e["path"] == "tree/large.bin"))' \
        "$OUT/$1.manifest.json"
}

# build NAME VERSION COMPRESSION NOTE [extra step]: the chunker polynomial is random per
# repository, so retry until large.bin is cut into at least 3 chunks.
build() {
    local name="$1" version="$2" comp="$3" note="$4" extra="${5:-}" try
    for try in 1 2 3 4 5 6 7 8; do
        rm -rf "${WORK:?}/$name"
        make_tree_repo "$name" "$version" "$comp"
        [ -n "$extra" ] && "$extra" "$WORK/$name/repo"
        write_manifest "$name" "$note"
        if [ "$(large_chunks "$name")" -ge 3 ]; then
            pack "$name"
            return 0
        fi
        echo "$name: large.bin got fewer than 3 chunks (try $try), rebuilding" >&2
    done
    echo "$name: could not get 3 chunks for large.bin" >&2
    return 1
}

# A disk-image-like stream for the --stdin snapshot.
stdin_snapshot() {
    "$PY" "$TOOL" gen-disk "$WORK/disk.img" $((2 * 1024 * 1024))
    restic -r "$1" backup --stdin --stdin-filename disk.img \
        --host fixture --tag stdin --time '2022-09-01 12:00:00' -q <"$WORK/disk.img"
}

# 1. v1 repository.
build restic-0.14-v1-tree 1 auto \
    "restic init --repository-version 1; two backups of the generated tree (tags first, second)"

# 2. v2 repository, default compression, plus a --stdin snapshot of a disk-like image.
build restic-0.14-v2-tree 2 auto \
    "restic init --repository-version 2; two backups of the generated tree (tags first, second; compression auto); backup --stdin --stdin-filename disk.img (tag stdin)" \
    stdin_snapshot

# 3. v2 repository, all backups with --compression off.
build restic-0.14-v2-nocomp-tree 2 off \
    "restic init --repository-version 2; two backups of the generated tree with --compression off (tags first, second)"

# 4. Repositories from the format spec, copied unchanged; manifests made from them here.
for name in restic-0.14-v2-tiny-repo restic-testdata-small-repo-v1; do
    if [ -f "$SPEC_TESTDATA/$name.tar.gz" ]; then
        cp "$SPEC_TESTDATA/$name.tar.gz" "$OUT/$name.tar.gz"
        chmod 0644 "$OUT/$name.tar.gz"
    fi
    mkdir -p "$WORK/$name"
    tar -C "$WORK/$name" -xzf "$OUT/$name.tar.gz"
    write_manifest "$name" "copied from the format spec's testdata (see README.md)"
done

echo "fixtures written to $OUT:"
ls -l "$OUT"
