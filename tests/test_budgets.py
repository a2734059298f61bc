"""Budgets hold before the paid submit: caps checked and reserved atomically, in a real SQL database."""

from __future__ import annotations

import json
import multiprocessing
import socket
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_kling import ledger as ledger_module
from airflow_provider_kling.budgets import Budget, read_budgets
from airflow_provider_kling.exceptions import KlingBudgetExceededError, KlingBudgetStoreError, KlingInputError
from airflow_provider_kling.ledger import BudgetLedger
from tests.conftest import states
from tests.postgres_server import postgres_server

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.postgres_server import PostgresServer

DAGS = Path(__file__).parent / "dag_files"
LEDGER = "kling_ledger"


def _ledger(_: object = None) -> BudgetLedger:
    """The ledger of the ``kling_ledger`` connection, opened by its hook as tasks open it."""
    return BudgetLedger.from_connection(LEDGER)


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    with postgres_server() as server:
        yield server


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
def ledger_store(request, tmp_path, monkeypatch) -> str:
    """``kling_ledger``, an empty ledger database: a SQLite file, or a database on a real PostgreSQL."""
    if request.param == "sqlite":
        conn: dict[str, Any] = {"conn_type": "sqlite", "host": str(tmp_path / "ledger.db")}
    else:
        server = request.getfixturevalue("postgres")
        database = f"ledger_{uuid.uuid4().hex[:12]}"
        server.sql("postgres", f"CREATE DATABASE {database}")
        conn = server.connection(database)
    monkeypatch.setenv("AIRFLOW_CONN_KLING_LEDGER", json.dumps(conn))
    return request.param


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts TCP connections and never answers on them: a ledger that hangs."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield listener.getsockname()[1]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"budgets": []}, "budgets: must be an object of budget name to caps"),
        ({"budgets": {"team": {"videos": -1}}}, "budgets.team.videos: must be a number of 0 or more"),
        ({"budgets": {"team": {"videos": 2.5}}}, "budgets.team.videos: must be a whole number"),
        ({"budgets": {"team": {"videos": 2, "period": "week"}}}, "team.period: must be one of day, month, forever"),
        ({"budgets": {"team": {"vidoes": 2}}}, "unknown keys ['vidoes']; allowed: videos, video_seconds, cost, period"),
        ({"budgets": {"team": {"period": "day"}}}, "budgets.team: caps nothing"),
        ({"budget_store": 3}, "budget_store: must be the id of a sqlite or postgres connection"),
    ],
)
def test_a_bad_budget_names_the_field_and_what_is_allowed(extra, message):
    with pytest.raises(KlingInputError, match="Connection 'kling_default' extra") as caught:
        read_budgets(extra, "kling_default")
    assert message in str(caught.value)


def test_a_task_naming_an_unknown_budget_or_no_store_is_refused_clearly():
    config = read_budgets({"budgets": {"team": {"videos": 2}}}, "kling_default")
    with pytest.raises(KlingInputError, match=r"has no budget 'other' \(its budgets: team\)"):
        config.get("other", "kling_default")
    with pytest.raises(KlingInputError, match="sets budgets but no budget_store"):
        config.get("team", "kling_default")


def test_reserve_settle_and_release_keep_the_period_exact(ledger_store):
    ledger = _ledger()
    budget = Budget("team", videos=3, video_seconds=20, cost=1.0)
    first = ledger.reserve(budget, video_seconds=5, holder="a")
    second = ledger.reserve(budget, video_seconds=10, holder="b")
    ledger.attach(first, "req-1")
    ledger.attach(second, "req-2")
    with pytest.raises(KlingBudgetExceededError, match="video_seconds cap 20 would be passed by 10 more") as caught:
        ledger.reserve(budget, video_seconds=10, holder="c")
    assert caught.value.fields["reserved"] == {"videos": 2, "video_seconds": 15.0}
    assert ledger.settle("req-1", spent=True, cost=0.4)
    assert not ledger.settle("req-1", spent=True, cost=0.4)  # settled once, whoever asks again
    assert ledger.settle("req-2", spent=False)  # cancelled while queued: free
    usage = ledger.usage(budget)
    assert (usage.videos, usage.video_seconds, usage.cost, usage.reserved_videos) == (1, 5.0, 0.4, 0)
    third = ledger.reserve(budget, video_seconds=10, holder="c")
    ledger.release(third)  # the submit sent nothing
    assert ledger.usage(budget).reserved_videos == 0


def test_the_cost_cap_refuses_once_the_spend_reached_it(ledger_store):
    ledger = _ledger()
    budget = Budget("team", cost=1.0)
    ledger.attach(ledger.reserve(budget, video_seconds=5, holder="a"), "req-1")
    ledger.settle("req-1", spent=True, cost=1.25)
    with pytest.raises(KlingBudgetExceededError, match=r"cost cap 1 reached \(1.25 spent\)"):
        ledger.reserve(budget, video_seconds=5, holder="b")


def _race(attempts: int, start: Any, won: Any) -> None:
    ledger = _ledger()
    budget = Budget("team", videos=25)
    start.wait()
    for _ in range(attempts):
        try:
            ledger.reserve(budget, video_seconds=5, holder="racer")
            won.put(1)
        except KlingBudgetExceededError:
            won.put(0)


def test_concurrent_reservations_from_many_processes_never_overshoot_the_cap(ledger_store):
    context = multiprocessing.get_context("fork")
    start, won = context.Event(), context.Queue()
    racers = [context.Process(target=_race, args=(5, start, won)) for _ in range(8)]  # 40 attempts, cap 25
    for racer in racers:
        racer.start()
    start.set()
    outcomes = [won.get(timeout=120) for _ in range(40)]
    for racer in racers:
        racer.join(30)
    assert sum(outcomes) == 25
    assert _ledger().usage(Budget("team", videos=25)).reserved_videos == 25


@pytest.mark.integration
def test_the_ledger_on_postgresql_applies_every_extra_of_its_connection(postgres, monkeypatch):
    database = f"ledger_{uuid.uuid4().hex[:12]}"
    postgres.sql("postgres", f"CREATE DATABASE {database}")
    postgres.sql(database, "CREATE SCHEMA budgets")
    conn = postgres.connection(database, options="-c search_path=budgets", application_name="kling-ledger")
    monkeypatch.setenv("AIRFLOW_CONN_KLING_LEDGER", json.dumps(conn))
    ledger = _ledger()
    ledger.reserve(Budget("team", videos=2), video_seconds=5, holder="a")
    # The connection's options put the ledger in its own schema, as they would any Airflow task's SQL.
    tables = postgres.sql(
        database,
        "SELECT table_schema || '.' || table_name FROM information_schema.tables "
        "WHERE table_name LIKE 'kling_%' ORDER BY 1",
    )
    assert tables.split() == [
        "budgets.kling_budget_reservation",
        "budgets.kling_budget_usage",
        "budgets.kling_request_end",
    ]
    # An extra that refuses the server (it speaks no TLS) refuses the ledger, naming it, before anything is sent.
    monkeypatch.setenv("AIRFLOW_CONN_KLING_LEDGER", json.dumps(postgres.connection(database, sslmode="require")))
    with pytest.raises(
        KlingBudgetStoreError, match="The budget ledger 'kling_ledger' \\(postgres\\) did not answer"
    ) as caught:
        _ledger().usage(Budget("team", videos=2))
    assert "SSL" in str(caught.value)


def test_a_ledger_store_of_another_type_is_refused_naming_the_types_allowed(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_KLING_LEDGER", json.dumps({"conn_type": "mysql", "host": "127.0.0.1"}))
    with pytest.raises(KlingInputError, match="'kling_ledger' is of type 'mysql'; allowed: sqlite, postgres"):
        _ledger()


def _silent_ledger(monkeypatch: pytest.MonkeyPatch, port: int, **extra: Any) -> None:
    conn = {"conn_type": "postgres", "host": "127.0.0.1", "port": port, "login": "kling", "schema": "ledger"}
    monkeypatch.setenv("AIRFLOW_CONN_KLING_LEDGER", json.dumps({**conn, "extra": extra}))


def test_a_ledger_that_does_not_answer_fails_the_task_within_its_connect_timeout_and_sends_nothing(
    run_dag, sim, silent_port, monkeypatch, capfd
):
    _silent_ledger(monkeypatch, silent_port)  # no connect_timeout: the ledger's own default bounds the wait
    monkeypatch.setattr(ledger_module, "CONNECT_TIMEOUT_S", 1)
    extra = {"budgets": {"team": {"videos": 3, "period": "day"}}, "budget_store": LEDGER}
    monkeypatch.setenv("AIRFLOW_CONN_KLING_DEFAULT", sim.connection_json(extra=extra))
    dag_run = run_dag("kling_budget_store_down", folder=DAGS, file="kling_budget_dags.py")
    assert states(dag_run) == {"generate": "failed"}
    assert sim.calls["submit"] == 0
    assert "The budget ledger 'kling_ledger' (postgres) did not answer within 1 s" in capfd.readouterr().out


def test_kling_submit_with_a_ledger_that_does_not_answer_says_so_and_sends_nothing(
    sim, silent_port, monkeypatch, capsys
):
    from airflow_provider_kling.cli import main

    _silent_ledger(monkeypatch, silent_port, connect_timeout=1)  # the connection's own timeout applies
    extra = {"budgets": {"team": {"videos": 3, "period": "day"}}, "budget_store": LEDGER}
    monkeypatch.setenv("AIRFLOW_CONN_KLING_DEFAULT", sim.connection_json(extra=extra))
    monkeypatch.delenv("RUNCOMFY_API_TOKEN", raising=False)
    capsys.readouterr()
    assert main(["submit", "--prompt", "a kite", "--budget", "team"]) == 1
    err = capsys.readouterr().err
    assert "The budget ledger 'kling_ledger' (postgres) did not answer within 1 s" in err
    assert "Traceback" not in err
    assert sim.calls["submit"] == 0


@pytest.fixture
def budget_connection(sim, tmp_path, monkeypatch):
    """``kling_default`` with a budget of 3 videos a day, its ledger in SQLite."""
    store = tmp_path / "ledger.db"
    monkeypatch.setenv("AIRFLOW_CONN_KLING_LEDGER", json.dumps({"conn_type": "sqlite", "host": str(store)}))
    extra = {"budgets": {"team": {"videos": 3, "period": "day"}}, "budget_store": "kling_ledger"}
    monkeypatch.setenv("AIRFLOW_CONN_KLING_DEFAULT", sim.connection_json(extra=extra))
    return store


def test_mapped_generations_past_the_cap_fail_before_anything_is_sent(run_dag, sim, budget_connection):
    dag_run = run_dag("kling_budget_mapped", folder=DAGS, file="kling_budget_dags.py")
    tis = {ti.map_index: str(ti.state) for ti in dag_run.get_task_instances()}
    assert sorted(tis.values()) == ["failed", "failed", "success", "success", "success"]
    assert sim.calls["submit"] == 3  # exactly the cap: the two refused sent nothing
    usage = _ledger().usage(Budget("team", videos=3))
    assert (usage.videos, usage.reserved_videos, usage.video_seconds) == (3, 0, 15.0)  # settled as they ended
    assert usage.cost == pytest.approx(1.5)  # what RunComfy reported (a budget asks for the cost)


def test_a_model_that_keeps_failing_is_paid_for_at_most_max_paid_submits_times(run_dag, sim, capfd):
    dag_run = run_dag("kling_budget_retries", folder=DAGS, file="kling_budget_dags.py")
    assert states(dag_run) == {"generate": "failed"}
    assert sim.calls["submit"] == 2  # try 3 was refused before anything was sent, and not retried
    assert "already paid for 2 generations across its tries (max_paid_submits=2)" in capfd.readouterr().out


def test_kling_submit_spends_from_a_budget_and_kling_budget_shows_it(sim, budget_connection, capsys, monkeypatch):
    from airflow_provider_kling.cli import main

    monkeypatch.delenv("RUNCOMFY_API_TOKEN", raising=False)
    for _ in range(3):
        assert main(["submit", "--prompt", "a kite [sim:queue=600]", "--budget", "team"]) == 0
    capsys.readouterr()
    assert main(["submit", "--prompt", "a fourth kite", "--budget", "team"]) == 1
    assert "Budget 'team' (day " in capsys.readouterr().err
    assert sim.calls["submit"] == 3
    assert main(["--json", "budget"]) == 0
    shown = json.loads(capsys.readouterr().out)["budgets"]["team"]
    assert shown["cap"]["videos"] == 3
    assert shown["reserved"] == {"videos": 3, "video_seconds": 15.0}  # in flight: they count against the cap
    assert shown["spent"]["videos"] == 0
    assert shown["period"].startswith("day ")


def test_a_budget_needs_a_connection_not_the_environment_token(env_token, capsys):
    from airflow_provider_kling.cli import main

    assert main(["submit", "--prompt", "a kite", "--budget", "team"]) == 1
    assert "budgets live on an Airflow connection: pass --conn-id" in capsys.readouterr().err
    assert env_token.calls["submit"] == 0
