"""ragroute: decide, per query and per step, whether and where to retrieve.

The public API is re-exported here; see ``README.md`` for a tour.
"""

from ragroute.errors import RagrouteError
from ragroute.types import Decision, Document, Hit, Query, TraceStep

__all__ = ["Decision", "Document", "Hit", "Query", "RagrouteError", "TraceStep"]
__version__ = "0.1.0"
