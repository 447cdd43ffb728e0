"""The prompt experiment's look-out in `chatbot up`: every interval it looks at the running
experiment (feedback.experiment.status), so that a decision - and, with auto-serve, serving the
winner - happens without an operator running `chatbot prompt experiment status` (and is recorded
in the console's audit log as "chatbot up": no console page looks). Looking often is
safe: the test's error rate holds however many times it is looked at. A look that fails (Redis
restarting) is logged and the next one tries again; `up` never stops for it."""

from __future__ import annotations

import logging
import time

log = logging.getLogger(__name__)
WHO = "chatbot up"  # who the audit log names for a decision this look made


class ExperimentWatch:
    def __init__(self, redis_url: str, prompt_id: str, interval_s: float = 60.0, cluster: bool = False) -> None:
        self.redis_url = redis_url
        self.cluster = cluster
        self.prompt_id = prompt_id
        self.interval_s = interval_s
        self.next_at = time.monotonic() + interval_s

    def tick(self) -> str | None:
        """Look when a look is due; the decision's status ('running', 'winner', ...), or None
        when nothing was looked at (not due, no experiment, or the look failed)."""
        if self.interval_s <= 0 or time.monotonic() < self.next_at:
            return None
        self.next_at = time.monotonic() + self.interval_s
        return self.look()

    def look(self) -> str | None:
        from feedback import experiment as experiments
        from feedback.connection import connect_sync

        try:
            r = connect_sync(self.redis_url, cluster=self.cluster)
            try:
                report = experiments.look(r, self.prompt_id, WHO)  # a decision is recorded in the audit log
            except experiments.ExperimentError:  # none running: nothing to look at
                return None
            finally:
                r.close()
        except Exception as exc:  # a look must never stop `chatbot up`
            log.warning("prompt experiment look failed (%s); trying again in %.0f s", exc, self.interval_s)
            return None
        d = report.decision
        if d.status in ("winner", "no_difference"):
            log.info("prompt experiment %s decided: %s%s", report.experiment.id, d.status, f" ({d.winner})" if d.winner else "")
        return d.status
