"""Crash points for failure tests: the process kills itself with SIGKILL where a test asks it to."""

from __future__ import annotations

import os
import signal

from kredit_shared.settings import ServiceSettings


def hit(settings: ServiceSettings, name: str) -> None:
    if name in settings.failpoints:
        os.kill(os.getpid(), signal.SIGKILL)
