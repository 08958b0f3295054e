"""What each pytest-xdist worker of `make test` owns (config/test_workers.py): its own Redis
database counted down from the suite's, never `make run`'s database 0; its own data directory;
its own slice of the model servers' ports; and nothing changed outside a worker or twice."""

from pathlib import Path

import pytest

from config.test_workers import port_slice, redis_url_for, worker_environment

BASE = {
    "REDIS_URL": "redis://127.0.0.1:6379/15",
    "MLX_PORTAL_DATA_DIR": "/srv/portal/var/test",
    "PYTEST_XDIST_WORKER_COUNT": "4",
}


@pytest.mark.parametrize(
    ("worker", "redis", "data_dir", "ports"),
    [
        ("gw0", "redis://127.0.0.1:6379/15", "/srv/portal/var/test/gw0", "8100-8324"),
        ("gw1", "redis://127.0.0.1:6379/14", "/srv/portal/var/test/gw1", "8325-8549"),
        ("gw3", "redis://127.0.0.1:6379/12", "/srv/portal/var/test/gw3", "8775-8999"),
    ],
)
def test_each_worker_owns_a_database_a_folder_and_ports(worker, redis, data_dir, ports):
    env = worker_environment({**BASE, "PYTEST_XDIST_WORKER": worker})
    assert env == {
        "MLX_PORTAL_TEST_WORKER": worker,
        "REDIS_URL": redis,
        "MLX_PORTAL_DATA_DIR": data_dir,
        "MLX_PORTAL_SERVER_PORTS": ports,
    }


@pytest.mark.parametrize(
    "env",
    [
        pytest.param(BASE, id="not a worker: a plain pytest"),
        pytest.param(
            {**BASE, "PYTEST_XDIST_WORKER": "gw1", "MLX_PORTAL_TEST_WORKER": "gw1"},
            id="a process the worker started: applied already",
        ),
    ],
)
def test_nothing_changes_outside_a_worker_or_twice(env):
    assert worker_environment(env) == {}


def test_what_is_not_given_is_the_suites_own_default():
    env = worker_environment({"PYTEST_XDIST_WORKER": "gw2", "PYTEST_XDIST_WORKER_COUNT": "3"})
    assert env["REDIS_URL"] == "redis://127.0.0.1:6379/13"
    assert Path(env["MLX_PORTAL_DATA_DIR"]).parts[-3:] == ("var", "test", "gw2")
    assert env["MLX_PORTAL_SERVER_PORTS"] == "8700-8999"


@pytest.mark.parametrize(
    ("base", "number", "refused"),
    [
        ("redis://127.0.0.1:6379/3", 3, "would use Redis database 0"),
        ("redis://127.0.0.1:6379/1", 2, "would use Redis database -1"),
        ("redis://127.0.0.1:6379", 0, "would use Redis database 0"),
    ],
)
def test_no_worker_takes_make_runs_database_0(base, number, refused):
    with pytest.raises(ValueError, match=refused):
        redis_url_for(base, number)


def test_the_url_keeps_all_but_its_database():
    url = redis_url_for("redis://:secret@redis.internal:6380/9?socket_timeout=5", 2)
    assert url == "redis://:secret@redis.internal:6380/7?socket_timeout=5"


def test_the_slices_cover_the_range_without_overlap():
    slices = [port_slice("8100-8999", n, 4) for n in range(4)]
    ranges = [range(int(s.split("-")[0]), int(s.split("-")[1]) + 1) for s in slices]
    ports = [p for r in ranges for p in r]
    assert len(ports) == len(set(ports)) == 900 and min(ports) == 8100 and max(ports) == 8999
    with pytest.raises(ValueError, match="cannot be shared by 5 workers"):
        port_slice("8100-8103", 0, 5)
