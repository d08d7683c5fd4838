"""The web dashboard: `/ui/` on every node's HTTP port and `corral web` (docs/UI.md).

`api.py` serves the page and the JSON API, `snapshot.py` the shared, bounded reads,
`history.py` the chart's history in Redis, `web.py` the worker-less `corral web` process,
`static/` the page itself (HTML, CSS and plain JavaScript; no build step, nothing fetched).
"""

from __future__ import annotations

from .api import Dashboard
from .history import HistoryRecorder

__all__ = ["Dashboard", "HistoryRecorder"]
