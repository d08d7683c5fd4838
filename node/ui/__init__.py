"""The web dashboard: `/ui/` on every node's HTTP port and `corral web` (docs/UI.md).

`api.py` serves the page and the JSON API, `snapshot.py` the shared, bounded reads,
`history.py` the chart's history in Redis, `metric.py` its action counter, `web.py` the
worker-less `corral web` process, `static/` the page itself (HTML, CSS and plain JavaScript; no
build step, nothing fetched).

`Dashboard` loads on first use: a node imports only `history.py` and `metric.py` at start and
the rest with the first `/ui/` request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .api import Dashboard
    from .history import HistoryRecorder

__all__ = ["Dashboard", "HistoryRecorder"]


def __getattr__(name: str) -> Any:
    if name == "Dashboard":
        from .api import Dashboard

        return Dashboard
    if name == "HistoryRecorder":
        from .history import HistoryRecorder

        return HistoryRecorder
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
