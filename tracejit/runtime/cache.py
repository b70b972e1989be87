"""The disk cache of compiled object code.

Two kinds of entries: a kernel's object code (".o"), keyed by a hash of the LLVM module text
(which determines the code), the target (triple, CPU name and features) and the tracejit
version; and a whole CPU executable's description (".x", runtime/exe_cache.py), keyed by its
graph, which names the kernel entries it runs. Each file holds a magic header, the full key and
a SHA-256 of the payload; anything that does not check out (truncated, corrupted, foreign) is
ignored with a warning, recompiled and rewritten. Writes go to a temporary file renamed into place, so two
processes compiling the same function at once both end up with a valid entry. The directory
is bounded in size: the least recently used entries are evicted.

The directory is a trust boundary: tracejit runs the native code it finds there, and a checksum
only catches accidents, so whoever can write the directory could run code as the user. As
OpenSSH does with ~/.ssh, the cache directory is created private (0700), and an entry is loaded
only if it, its directory and the cache root belong to the current user and are not writable by
group or others. Otherwise the code is compiled in memory, nothing is stored there, and one
warning per offending path says which path and why. A shared TRACEJIT_CACHE_DIR gets the same
check.

One repair, unlike OpenSSH: older versions created the directories with the umask's mode (0775
under umask 002), which the check refuses forever. So the first time a process stores into the
cache, the default root (not a TRACEJIT_CACHE_DIR the user chose: that one may be shared on
purpose, and is only refused) and the entry's shard directory (tracejit's own), if they are
real directories (not symlinks) owned by the current user and writable by group or others, are
tightened to 0700 (see `_tighten_once`). Only then, only once per directory per process, and
only when writing: a directory found too open later (made so after tracejit has used it) is
refused as before, the load check never changes anything (so the first load after an upgrade
still refuses, once), and entries are never repaired (a refused entry is recompiled and
rewritten private). A directory owned by anyone else is never touched."""
from __future__ import annotations

import errno
import hashlib
import os
import stat
import tempfile
import threading
import warnings

from .._version import __version__

MAGIC = b"TJOBJ1\n"
DEFAULT_LIMIT = 256 * 1024 * 1024
EVICT_EVERY = 32                      # stores between scans of the directory
_stores = 0
_warned: set[str] = set()             # paths already warned about, in this process
_warn_lock = threading.Lock()
_opened: set[str] = set()             # directories store has seen (and tightened) this process


def directory() -> str | None:
    d = os.environ.get("TRACEJIT_CACHE_DIR")
    if d is None:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        d = os.path.join(base, "tracejit")
    if d in ("", "0", "off"):
        return None
    return d


def code_hash(subs: tuple[str, ...]) -> str:
    """A hash of the sources of tracejit's subpackages `subs` (each read once per process)."""
    h = _HASHES.get(subs)
    if h is None:
        h = _HASHES[subs] = hashlib.sha256(
            "".join(_sub_hash(sub) for sub in subs).encode()).hexdigest()[:16]
    return h


def _sub_hash(sub: str) -> str:
    h = _SUB_HASHES.get(sub)
    if h is None:
        sha = hashlib.sha256()
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        d = os.path.join(root, sub)
        for name in sorted(os.listdir(d)):
            if name.endswith(".py"):
                with open(os.path.join(d, name), "rb") as f:
                    sha.update(sub.encode() + b"/" + name.encode() + b"\0" + f.read())
        h = _SUB_HASHES[sub] = sha.hexdigest()
    return h


_SUB_HASHES: dict[str, str] = {}
_HASHES: dict[tuple[str, ...], str] = {}


def _code_hash() -> str:
    """A hash of the code that decides what cached objects mean (how kernels are called, the
    ABI of their arguments): tracejit's codegen and runtime sources. The version alone would
    let an edited checkout (or an editable install between releases) load objects built for
    other calling conventions, silently."""
    global _CODE
    if _CODE is None:
        _CODE = code_hash(("codegen", "runtime"))
    return _CODE


_CODE: str | None = None


def key(module_text: str, target: str) -> str:
    h = hashlib.sha256()
    for part in (__version__, _code_hash(), target, module_text):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


OBJ_EXT = ".o"                        # a kernel's object code (llvm_jit)
RUNNER_EXT = ".rt"                    # the runner's (llvm_jit.runner)
EXTS = (OBJ_EXT, RUNNER_EXT, ".x")    # and a whole executable's description (exe_cache)


def path(k: str, ext: str = OBJ_EXT) -> str | None:
    d = directory()
    return None if d is None else os.path.join(d, k[:2], k + ext)


def _untrusted(st: os.stat_result, what: str) -> str | None:
    """Why a file or directory with this status must not be trusted, or None."""
    if not hasattr(os, "getuid"):           # no POSIX owners (Windows): nothing to check
        return None
    if st.st_uid != os.getuid():
        return f"{what} belongs to uid {st.st_uid}, not to the current user (uid {os.getuid()})"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"{what} is writable by group or others (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


def _first_warning(path: str) -> bool:
    """Whether this process has not warned about `path` yet (and now counts it as warned)."""
    with _warn_lock:
        if path in _warned:
            return False
        _warned.add(path)
        return True


def _warn_once(path: str, reason: str) -> None:
    if not _first_warning(path):
        return
    warnings.warn(f"tracejit: not loading compiled code from the disk cache: {path}: {reason}; "
                  f"compiling in memory instead. The cache must be yours and private (chmod 700 "
                  f"its directories, chmod 600 its entries), or set TRACEJIT_CACHE_DIR elsewhere.",
                  RuntimeWarning, stacklevel=2)


def _tighten_once(d: str) -> None:
    """The first time this process stores under `d`: if it is a directory of the current user
    open to group or others (an older tracejit made it under the umask), make it 0700. Opened
    with O_NOFOLLOW and changed through the descriptor, so a symlink is never followed."""
    with _warn_lock:
        if d in _opened:
            return
        _opened.add(d)
    if not hasattr(os, "getuid") or not hasattr(os, "fchmod"):
        return
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(d, flags)
    except OSError:
        return                              # a symlink, gone, not ours to open: the check decides
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and \
                st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            os.fchmod(fd, 0o700)
    except OSError:
        pass
    finally:
        os.close(fd)


def _dirs_untrusted(p: str) -> bool:
    """Whether the entry's directory or the cache root fails the check (warning once)."""
    shard = os.path.dirname(p)
    for d in (os.path.dirname(shard), shard):
        try:
            st = os.stat(d)
        except OSError:
            return False                    # not there yet: nothing to load, store creates it
        why = _untrusted(st, "the directory")
        if why is not None:
            _warn_once(d, why)
            return True
    return False


def load(k: str) -> bytes | None:
    """A kernel's object code stored under key k, or None."""
    return load_entry(k, OBJ_EXT)


def store(k: str, payload: bytes) -> None:
    store_entry(k, payload, OBJ_EXT)


def _damaged(p: str, why: str) -> None:
    if not _first_warning(p):
        return
    warnings.warn(f"tracejit: ignoring a damaged disk-cache entry {p} ({why}); compiling "
                  f"again and rewriting it", RuntimeWarning, stacklevel=3)


def load_entry(k: str, ext: str) -> bytes | None:
    """The payload stored under key k with extension ext, or None: absent, untrusted (see the
    module's doc) or damaged (truncated, corrupted, another key's: a warning says so)."""
    p = path(k, ext)
    if p is None or _dirs_untrusted(p):
        return None
    try:
        # a planted symlink is refused and a FIFO cannot block; fstat checks what was opened
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError as e:
        if e.errno == errno.ELOOP:
            _warn_once(p, "the entry is a symbolic link")
        return None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        why = _untrusted(st, "the entry") if stat.S_ISREG(st.st_mode) else "not a regular file"
        if why is not None:
            _warn_once(p, why)
            return None
        try:
            data = f.read()
        except OSError:
            return None
    head = MAGIC + k.encode() + b"\n"
    if not data.startswith(head) or len(data) < len(head) + 64:
        _damaged(p, "empty" if not data else "truncated" if head.startswith(data) else
                 "not a tracejit entry for this key")
        return None
    digest, payload = data[len(head):len(head) + 64], data[len(head) + 64:]
    if hashlib.sha256(payload).hexdigest().encode() != digest:
        _damaged(p, "its checksum does not match: truncated or corrupted")
        return None
    try:
        os.utime(p)                   # recency, for eviction
    except OSError:
        pass
    return payload


def store_entry(k: str, payload: bytes, ext: str) -> None:
    """Store payload under key k with extension ext: written to a private temporary file
    and renamed into place, so a reader sees the old entry or the whole new one."""
    p = path(k, ext)
    if p is None:
        return
    try:
        root = os.path.dirname(os.path.dirname(p))
        os.makedirs(root, mode=0o700, exist_ok=True)        # private, like ~/.ssh
        if "TRACEJIT_CACHE_DIR" not in os.environ:     # a root the user chose is theirs
            _tighten_once(root)               # (the root first: then the shard cannot move)
        os.makedirs(os.path.dirname(p), mode=0o700, exist_ok=True)
        _tighten_once(os.path.dirname(p))
        if _dirs_untrusted(p):
            return                    # an entry written there could be swapped before loading
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(p), suffix=".tmp")   # mode 0600
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
            if f.endswith(EXTS):
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
            if f.endswith(EXTS + (".tmp",)):
                try:
                    os.remove(os.path.join(dirpath, f))
                except OSError:
                    pass
