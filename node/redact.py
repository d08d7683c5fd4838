"""What /status may show of a running job: its task and queue; its params only when the node runs
with `status_payloads`, and even then never a secret.

    job_view({"queue": "mail", "payload": '{"class":"send","args":[{"token":"x"}]}'}, show_params=True)
    # {"queue": "mail", "task": "send", "payload": '{"class":"send","args":[{"token":"***"}]}'}

A value is hidden when its key looks secret (password, token, api_key, secret, auth, cookie, ...,
any key ending in "key") or when the value itself looks like a credential (a bearer token, a JWT,
a URL with a password). A payload that is not JSON is not shown at all.
"""

from __future__ import annotations

import json
import re
from typing import Any

from cluster.redis_settings import redact_url

PAYLOAD_LIMIT = 500
HIDDEN = "***"
_SECRET_KEY = re.compile(r"pass|pwd|secret|token|auth|credential|cookie|session|signature|private|key$", re.I)
_SECRET_VALUE = re.compile(r"^(bearer|basic)\s+\S+|^eyJ[\w-]+\.[\w-]+\.[\w-]*$", re.I)
_URL_WITH_USERINFO = re.compile(r"^[a-z][a-z0-9+.-]*://[^/?#]*@", re.I)


def _scrub(value: Any, depth: int = 0) -> Any:
    if depth > 50:
        return HIDDEN
    if isinstance(value, dict):
        return {k: HIDDEN if _SECRET_KEY.search(str(k)) else _scrub(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v, depth + 1) for v in value]
    if isinstance(value, str):
        if _SECRET_VALUE.search(value.strip()):
            return HIDDEN
        if _URL_WITH_USERINFO.search(value):
            return redact_url(value)
    return value


def redacted_payload(payload: str, limit: int = PAYLOAD_LIMIT) -> str:
    """The payload with secrets replaced, at most `limit` characters."""
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError):
        return f"<not JSON, {len(payload)} characters>"
    text = json.dumps(_scrub(data), separators=(",", ":"), ensure_ascii=False)
    return text if len(text) <= limit else text[:limit] + "..."


def task_name(payload: str) -> str | None:
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    name = data.get("class") if isinstance(data, dict) else None
    return name if isinstance(name, str) else None


def job_view(current: dict[str, Any], show_params: bool) -> dict[str, Any]:
    """A running job as /status shows it."""
    payload = str(current.get("payload", ""))
    view: dict[str, Any] = {"queue": current.get("queue"), "task": task_name(payload)}
    if show_params:
        view["payload"] = redacted_payload(payload)
    return view
