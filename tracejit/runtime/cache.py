"""The disk cache of compiled object code.

Entries are keyed by a hash of the LLVM module text (which determines the code), the target
(triple, CPU name and features) and the tracejit version. Each file holds a magic header, the
full key and a SHA-256 of the payload; anything that does not check out (truncated, corrupted,
foreign) is ignored and recompiled. Writes go to a temporary file renamed into place, so two
processes compiling the same function at once both end up with a valid entry. The directory
is bounded in size: the least recently used entries are evicted."""
from __future__ import annotations

import hashlib
import os
import tempfile

MAGIC = b"TJOBJ1\n"
DEFAULT_LIMIT = 256 * 1024 * 1024
EVICT_EVERY = 32                      # stores between scans of the directory
_stores = 0


def directory() -> str | None:
    d = os.environ.get("TRACEJIT_CACHE_DIR")
    if d is None:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        d = os.path.join(base, "tracejit")
    if d in ("", "0", "off"):
        return None
    return d


def key(module_text: str, target: str) -> str:
    from .. import __version__
    h = hashlib.sha256()
    for part in (__version__, target, module_text):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def _path(k: str) -> str | None:
    d = directory()
    return None if d is None else os.path.join(d, k[:2], k + ".o")


def load(k: str) -> bytes | None:
    p = _path(k)
    if p is None:
        return None
    try:
        with open(p, "rb") as f:
            data = f.read()
    except OSError:
        return None
    head = MAGIC + k.encode() + b"\n"
    if not data.startswith(head) or len(data) < len(head) + 64:
        return None
    digest, payload = data[len(head):len(head) + 64], data[len(head) + 64:]
    if hashlib.sha256(payload).hexdigest().encode() != digest:
        return None
    try:
        os.utime(p)                   # recency, for eviction
    except OSError:
        pass
    return payload


def store(k: str, payload: bytes) -> None:
    p = _path(k)
    if p is None:
        return
    try:
        os.makedirs(os.path.dirname(p), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(p), suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(MAGIC + k.encode() + b"\n")
            f.write(hashlib.sha256(payload).hexdigest().encode())
            f.write(payload)
        os.replace(tmp, p)
        global _stores
        if _stores % EVICT_EVERY == 0:       # scanning the directory costs; do it now and then
            _evict(os.path.dirname(os.path.dirname(p)))
        _stores += 1
    except OSError:
        pass                          # a read-only or full disk only costs recompiles


def _evict(root: str) -> None:
    limit = int(os.environ.get("TRACEJIT_CACHE_LIMIT", DEFAULT_LIMIT))
    entries = []
    for dirpath, _, files in os.walk(root):
        for f in files:
            if f.endswith(".o"):
                fp = os.path.join(dirpath, f)
                try:
                    st = os.stat(fp)
                except OSError:
                    continue
                entries.append((st.st_mtime, st.st_size, fp))
    total = sum(e[1] for e in entries)
    for _, size, fp in sorted(entries):
        if total <= limit:
            break
        try:
            os.remove(fp)
            total -= size
        except OSError:
            pass


def clear() -> None:
    d = directory()
    if d is None or not os.path.isdir(d):
        return
    for dirpath, _, files in os.walk(d):
        for f in files:
            if f.endswith(".o") or f.endswith(".tmp"):
                try:
                    os.remove(os.path.join(dirpath, f))
                except OSError:
                    pass
