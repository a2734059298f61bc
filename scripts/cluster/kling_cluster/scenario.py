"""The scenario and its faults: the mapped generations, a worker and a triggerer killed, the API refusing and
then down, the scheduler restarted, PostgreSQL failing over, Redis restarted; then the budget race."""

from __future__ import annotations

import contextlib
import shutil
import signal
import time
from typing import TYPE_CHECKING

import psycopg2

from kling_cluster.observations import (
    CpuMeter,
    Observations,
    query,
    request_ids_of,
    task_states,
    triggers_by_triggerer,
    worker_slot_seconds,
)
from kling_cluster.processes import Cluster, port_open, wait_for
from kling_cluster.settings import GENERATES, HERE, RACE_CAP, RACERS, Shape, layout_of, share

if TYPE_CHECKING:
    from airflow_provider_kling.testing.statsd import StatsdListener
    from kling_cluster.simulator import ClusterSimulator


def run(cluster: Cluster, sim: ClusterSimulator, statsd: StatsdListener, *, faults: bool = True) -> Observations:
    """The generations, with the faults and then the budget race (without ``faults``: the generations alone)."""
    shape, root = cluster.shape, cluster.root
    seen = Observations(statsd=statsd)
    (root / "dags").mkdir()
    (root / "videos").mkdir()
    shutil.copy(HERE / "kling_cluster_dag.py", root / "dags" / "kling_cluster_dag.py")
    shutil.copy(HERE / "kling_budget_race_dag.py", root / "dags" / "kling_budget_race_dag.py")
    print("starting PostgreSQL and Redis", flush=True)
    cluster.start_postgres()
    cluster.start_redis()
    print("migrating the metadata database", flush=True)
    cluster.airflow("db", "migrate")
    slots = str(shape.generations + 50)
    cluster.airflow("pools", "set", "kling_generations", slots, "Kling generations in flight", "--include-deferred")
    print("starting api-server, scheduler, dag-processor, 2 Celery workers, 2 triggerers", flush=True)
    cluster.spawn("api-server", ["api-server", "--port", str(cluster.api_port)])
    cluster.spawn("scheduler", ["scheduler"])
    cluster.spawn("dag-processor", ["dag-processor"])
    for worker in ("worker-1", "worker-2"):
        cluster.spawn(worker, ["celery", "worker", "--celery-hostname", f"{worker}@%h", "--skip-serve-logs"])
    for triggerer in ("triggerer-1", "triggerer-2"):
        cluster.spawn(triggerer, ["triggerer", "--skip-serve-logs"])
    meter = CpuMeter(cluster, ["triggerer-1", "triggerer-2"])
    meter.start()
    wait_for("the api-server", lambda: port_open(cluster.api_port), 120)
    wait_for(
        "the DAG to be parsed",
        lambda: query(cluster, "SELECT 1 FROM serialized_dag WHERE dag_id = 'kling_cluster'"),
        180,
    )
    cluster.airflow("dags", "unpause", "kling_cluster")
    if faults:
        sim.hold_first_status.set()
    cluster.airflow("dags", "trigger", "kling_cluster")
    seen.started = time.time()
    print(f"triggered {shape.generations} generations", flush=True)
    try:
        if faults:
            inject_faults(cluster, sim, seen)
        wait_for_run(cluster, shape, seen)
        seen.slots = worker_slot_seconds(cluster)
        seen.calls = dict(sim.calls)
        if faults:
            budget_race(cluster, seen)
    finally:
        meter.stopped.set()
        meter.join(5)
        seen.triggerer_cpu = dict(meter.cpu)
        cluster.stop_airflow()
    return seen


def inject_faults(cluster: Cluster, sim: ClusterSimulator, seen: Observations) -> None:
    n = cluster.shape.generations

    # 1. A worker dies while tasks sit between their submit and their deferral (their first status
    # call is held), and none of its generate tasks has a submit in flight: a submit cut off in
    # flight is another fault, after which the retry fails rather than pay again blindly (resume.py).
    # Every first status is held until the kill, and the kill waits until each generate task running
    # on worker-1 is held: a task still on its way could write its submit's mark between the check
    # and the kill (a full run saw one do so, and its retry rightly refused to pay blindly).
    def generation(task_id: str, map_index: int) -> int:
        """The generation number of a mapped generate task (map indexes start at 0 in each layout)."""
        return share(cluster, layout_of(task_id)).start + map_index

    def worker_1_in_the_window() -> bool:
        rows = query(
            cluster,
            "SELECT ti.task_id, ti.map_index, s.value FROM task_instance ti LEFT JOIN task_state_store s "
            "ON s.dag_id = ti.dag_id AND s.run_id = ti.run_id AND s.task_id = ti.task_id "
            "AND s.map_index = ti.map_index AND s.key = 'kling_request' "
            "WHERE ti.dag_id = 'kling_cluster' AND ti.task_id = ANY(%s) AND ti.state = 'running' "
            "AND ti.hostname = 'worker-1'",
            GENERATES,
        )
        held = {sim._index(rid) for rid in set(sim.holding)}
        on_worker = {generation(task, index): value for task, index, value in rows}
        in_flight = [
            i for i, value in on_worker.items() if value is not None and "request_id" not in value and i not in held
        ]
        return not in_flight and bool(on_worker) and all(i in held for i in on_worker)

    deadline = time.monotonic() + 600
    last_raise = time.monotonic()
    while not worker_1_in_the_window():
        if time.monotonic() > deadline:
            raise SystemExit("timed out waiting for worker-1 to hold a task between submit and deferral")
        if len(sim.holding) >= sim.max_held and time.monotonic() - last_raise > 10:
            sim.max_held += 1  # the held ones all went to worker-2: hold one more
            last_raise = time.monotonic()
        time.sleep(0.5)
    running = query(
        cluster,
        "SELECT task_id, map_index FROM task_instance WHERE dag_id = 'kling_cluster' AND task_id = ANY(%s) "
        "AND state = 'running' AND hostname = 'worker-1'",
        GENERATES,
    )
    cluster.kill("worker-1")
    seen.worker_killed_at = time.time()
    sim.released.set()
    on_worker = {generation(task, index) for task, index in running}
    held = {sim._index(rid): rid for rid in set(sim.holding)}
    seen.killed_between_submit_and_deferral = sorted(rid for index, rid in held.items() if index in on_worker)
    print(
        f"SIGKILLed worker-1 with {len(on_worker)} generate tasks on it, "
        f"{len(seen.killed_between_submit_and_deferral)} of them between submit and deferral",
        flush=True,
    )
    if not seen.killed_between_submit_and_deferral:
        seen.notes.append("no task was between submit and deferral on the killed worker")
    sim.hold_first_status.clear()
    time.sleep(5)
    cluster.spawn("worker-1", ["celery", "worker", "--celery-hostname", "worker-1@%h", "--skip-serve-logs"])

    # 2. The API refuses for a while: 429 and 503 on polls, 429 on submits.
    start = time.time()
    sim.refusing_until = start + cluster.shape.refusal_seconds
    seen.refusal = (start, sim.refusing_until)
    print(f"the API refuses for {cluster.shape.refusal_seconds:.0f} s", flush=True)

    # 3. The busier triggerer dies; the other must take its triggers over. Both holding triggers is
    # the usual shape; on a busy machine one triggerer may have claimed them all (it polls first), and
    # after half a minute that one is killed all the same: the takeover is what is tested.
    patience = time.monotonic() + 30

    def busy() -> bool:
        held = triggers_by_triggerer(cluster)
        deferred = sum(len(ids) for ids in held.values())
        return deferred >= max(10, n // 5) and (len(held) == 2 or time.monotonic() > patience)

    wait_for("triggers on the triggerers", lambda: busy() or run_is_over(cluster), 600)
    if run_is_over(cluster):
        seen.notes.append("the run ended before the triggerers held triggers: no triggerer was killed")
        return
    held_now = triggers_by_triggerer(cluster)
    seen.killed_triggerer = max(held_now, key=lambda host: len(held_now[host]))
    seen.moved = request_ids_of(cluster, held_now[seen.killed_triggerer])
    check_trigger_rows_hold_no_token(cluster, seen)
    seen.triggerer_jobs = dict(
        query(cluster, "SELECT hostname, max(id) FROM job WHERE job_type = 'TriggererJob' GROUP BY hostname")
    )
    cluster.kill(seen.killed_triggerer)
    seen.triggerer_killed_at = time.time()
    print(f"SIGKILLed {seen.killed_triggerer} holding {len(seen.moved)} triggers", flush=True)
    survivor = next(name for name in ("triggerer-1", "triggerer-2") if name != seen.killed_triggerer)

    def taken_over() -> bool:
        ids = list(seen.moved.values())
        rows = query(
            cluster,
            "SELECT count(*) FROM trigger JOIN job ON job.id = trigger.triggerer_id "
            "WHERE trigger.id = ANY(%s) AND job.hostname <> %s",
            ids,
            survivor,
        )
        return rows[0][0] == 0

    wait_for("the survivor to take the triggers over", taken_over, 300)
    seen.moved_over_at = time.time()
    print(f"{survivor} took them over after {seen.moved_over_at - seen.triggerer_killed_at:.1f} s", flush=True)

    # 4. The scheduler stops and starts again.
    stopped = time.time()
    cluster.kill("scheduler", signal.SIGTERM)
    time.sleep(5)
    cluster.spawn("scheduler", ["scheduler"])
    seen.scheduler_restarted = (stopped, time.time())
    print("restarted the scheduler", flush=True)

    # 5. The API is down: every call finds its connection dropped, for minutes. It strikes the waits,
    # once every generation has submitted: a submit that meets an outage fails its try in any layout
    # (nothing was created, so the retry submits), and whether the scheduler had started every
    # submit by then was luck, which made one run of a layout unlike the next.
    def deferred() -> int:
        return len(query(cluster, "SELECT 1 FROM task_instance WHERE dag_id = 'kling_cluster' AND state = 'deferred'"))

    wait_for(
        "every generation to have submitted, and waits in the triggerers",
        lambda: (len(sim.submits_by_generation) >= n and deferred() > 0) or run_is_over(cluster),
        600,
    )
    if run_is_over(cluster):
        seen.notes.append("the run ended before the API went down: no generation met the outage")
        return
    in_flight = deferred()
    start = time.time()
    print(f"the API is down for {cluster.shape.api_down_seconds:.0f} s ({in_flight} generations deferred)", flush=True)
    sim.go_down(cluster.shape.api_down_seconds)
    seen.api_down = (start, time.time())
    # Three poll intervals before the next fault: every pending wait's first poll after the API's
    # return (the window's recovery row) is then measured on its own, not through a failover.
    seen.restarted_after["the API"] = cluster.supervise(15)

    # 6. PostgreSQL, the metadata database, goes away (a failover: connections cut at once) and
    # comes back; meanwhile the run's supervisor starts again whatever Airflow process exits, as
    # systemd or Kubernetes would. It is timed when no paid submit is in flight: one cut off by
    # the database (its record not written) is the in-flight fault above, a failed generation
    # that is never paid twice.
    wait_for(
        "every generation to have submitted",
        lambda: len(sim.submits_by_generation) >= n or run_is_over(cluster),
        600,
    )
    start = time.time()
    print(f"PostgreSQL stops for {cluster.shape.database_down_seconds:.0f} s", flush=True)
    cluster.pause_postgres(cluster.shape.database_down_seconds)
    seen.database_down = (start, time.time())
    seen.restarted_after["PostgreSQL"] = cluster.supervise(30)
    print(f"PostgreSQL is back; restarted: {seen.restarted_after['PostgreSQL'] or 'nothing'}", flush=True)

    # 7. Redis, the Celery broker, restarts: it comes back empty.
    cluster.restart_redis()
    seen.broker_restarted_at = time.time()
    seen.restarted_after["Redis"] = cluster.supervise(15)
    print(f"Redis restarted; restarted: {seen.restarted_after['Redis'] or 'nothing'}", flush=True)


def wait_for_run(cluster: Cluster, shape: Shape, seen: Observations) -> None:
    deadline = time.monotonic() + shape.deadline_seconds
    last = ""
    while time.monotonic() < deadline:
        state = query(cluster, "SELECT state FROM dag_run WHERE dag_id = 'kling_cluster'")
        counts = task_states(cluster)
        line = ", ".join(f"{task} {st}: {count}" for (task, st), count in sorted(counts.items()))
        if line != last:
            print(f"  {time.time() - seen.started:5.0f} s  {line}", flush=True)
            last = line
        if state and state[0][0] in ("success", "failed"):
            seen.finished = time.time()
            return
        time.sleep(2)
    seen.finished = time.time()
    seen.notes.append(f"the run did not finish within {shape.deadline_seconds:.0f} s")


def budget_race(cluster: Cluster, seen: Observations) -> None:
    """40 mapped generations against a budget of 25 videos, from both workers at once."""
    print(f"budget race: {RACERS} generations against a budget of {RACE_CAP} videos", flush=True)
    wait_for(
        "the race DAG to be parsed",
        lambda: query(cluster, "SELECT 1 FROM serialized_dag WHERE dag_id = 'kling_budget_race'"),
        180,
    )
    cluster.airflow("dags", "unpause", "kling_budget_race")
    cluster.airflow("dags", "trigger", "kling_budget_race")
    wait_for(
        "the budget race to end",
        lambda: query(
            cluster, "SELECT 1 FROM dag_run WHERE dag_id = 'kling_budget_race' AND state IN ('success', 'failed')"
        ),
        600,
    )
    seen.race_states = dict(
        query(cluster, "SELECT state, count(*) FROM task_instance WHERE dag_id = 'kling_budget_race' GROUP BY state")
    )
    with (
        contextlib.closing(
            psycopg2.connect(host="127.0.0.1", port=cluster.pg_port, user="airflow", dbname="kling_ledger")
        ) as conn,
        conn.cursor() as cur,
    ):
        cur.execute("SELECT videos, reserved_videos FROM kling_budget_usage WHERE budget = 'race'")
        row = cur.fetchone()
    seen.race_ledger = (int(row[0]), int(row[1])) if row else (0, 0)
    refusal = f"Budget 'race' (forever forever) refuses this generation before anything is sent: videos cap {RACE_CAP}"
    seen.race_refusals_logged = sum(
        1
        for log in (cluster.logs / "tasks").rglob("*.log")
        if "dag_id=kling_budget_race" in str(log) and refusal in log.read_text(errors="replace")
    )


def run_is_over(cluster: Cluster) -> bool:
    state = query(cluster, "SELECT state FROM dag_run WHERE dag_id = 'kling_cluster'")
    return bool(state) and state[0][0] in ("success", "failed")


def check_trigger_rows_hold_no_token(cluster: Cluster, seen: Observations) -> None:
    """Trigger kwargs are encrypted in the database: decrypt them to look for the token."""
    from cryptography.fernet import Fernet

    fernet = Fernet(cluster.fernet_key.encode())
    rows = query(cluster, "SELECT kwargs FROM trigger")
    for (kwargs,) in rows:
        text = kwargs if kwargs.startswith("{") else fernet.decrypt(kwargs.encode()).decode()
        if cluster.token in text:
            seen.notes.append("the token is in a trigger's kwargs")
            return
