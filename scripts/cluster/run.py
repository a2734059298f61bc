"""
``make cluster``: the provider where our users run it, with faults while generations are in flight.

On one machine, from the repository's own files: PostgreSQL (metadata database) and Redis (Celery
broker), real servers in a temporary directory; Airflow 3.3 with the CeleryExecutor: api-server,
scheduler, dag-processor, two Celery workers and two triggerers. A RunComfy simulator with
realistic timelines (seconds in the queue and rendering, with a long tail) serves a mapped DAG of
generations, each waited for in the triggerer and copied to storage. While they are in flight:

1. one Celery worker is SIGKILLed while some tasks are between their submit and their deferral
   (their first status call is held back), and started again;
2. for a while the API refuses: 429 and 503 on polls, 429 on submits;
3. the triggerer holding more triggers is SIGKILLed; the other must take them over;
4. the scheduler is stopped and started again.

Then a budget race: 40 mapped generations against a budget of 25 videos, from both workers at
once, its ledger on the same PostgreSQL. Every Airflow process sends its metrics to a StatsD
listener of this script.

It checks that every generation succeeded and its video landed whole, with exactly one paid submit
each, nothing left queued or running, no cancel sent, the token nowhere in the database or the
logs, exactly the budget's cap submitted in the race, and the submits, cancels and cost the
metrics counted equal to what the simulator recorded; prints a report and writes it to
``docs/cluster.md``. Exits non-zero when a check fails.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the run's package, beside this file

from kling_cluster.main import main

if __name__ == "__main__":
    sys.exit(main())
