"""
The parts of ``make cluster`` (``scripts/cluster/run.py`` runs them), one file each:

- :mod:`~kling_cluster.settings`: the two sizes (full, quick), names and patterns;
- :mod:`~kling_cluster.simulator`: the simulated RunComfy, with the faults the scenario turns on;
- :mod:`~kling_cluster.processes`: PostgreSQL, Redis and Airflow's processes, started, killed, restarted;
- :mod:`~kling_cluster.observations`: what the run reads while it goes on (rows, logs, CPU);
- :mod:`~kling_cluster.scenario`: the generations, the faults in order, the budget race;
- :mod:`~kling_cluster.checks`: what must hold;
- :mod:`~kling_cluster.report`: the tables of docs/cluster.md;
- :mod:`~kling_cluster.main`: the run, start to end.
"""
