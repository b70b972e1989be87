"""Disk-cache keys cover tracejit's own codegen and runtime sources, not just its version: an
edited checkout must not load objects built for another calling convention (a development tree
did, and computed silently wrong results)."""
from __future__ import annotations

from tracejit.runtime import cache


def test_key_changes_with_the_code_hash(monkeypatch):
    k = cache.key("module text", "target")
    assert k == cache.key("module text", "target")
    monkeypatch.setattr(cache, "_CODE", "another-tree")
    assert cache.key("module text", "target") != k


def test_code_hash_reads_the_codegen_and_runtime_sources(monkeypatch):
    monkeypatch.setattr(cache, "_CODE", None)
    h = cache._code_hash()
    assert len(h) == 16 and h == cache._code_hash()
