"""Logs, metrics, readiness and retries shared by every evroam server (docs/operations.md).

logs.py: one logging set-up (text or JSON lines on stderr) and what a line may carry;
metrics.py: Prometheus metrics in a registry per app; health.py: the `/ready` checks;
http.py: the access line, `/metrics` and `/ready` installed on an app; retry.py: background
work retried with exponential backoff and jitter.
"""

from evroam.observability.logs import configure_logging

__all__ = ["configure_logging"]
