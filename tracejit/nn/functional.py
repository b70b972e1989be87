"""`tracejit.nn.functional` (import it as F): torch.nn.functional's names over tracejit ops."""
from __future__ import annotations
