"""`tracejit.nn.init`: in-place initialisers drawing from tracejit's generator (tj.manual_seed)."""
from __future__ import annotations
