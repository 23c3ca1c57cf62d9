"""The chaos campaign's tool, run in a real sandbox like any registered tool (standard library only).

Its side effect is a file in the conversation's scratch directory, one per execution of (run, step):
``effect.{run}.{n}.{random}``, made after a pause (so that faults land mid-call) and with ``O_EXCL``, so
an execution that happened twice leaves two files. The bench counts them once the runs are over.
"""

from __future__ import annotations

import os
import random
import time

PAUSE_S = (0.05, 0.4)


def effect(run: str, n: int) -> dict[str, object]:
    """Do something with a side effect.

    Args:
        run: The id of the run that asks for it.
        n: The step number of the effect.
    """
    time.sleep(random.uniform(*PAUSE_S))
    name = f"effect.{run}.{n}.{os.urandom(6).hex()}"
    os.close(os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    return {"done": n}
