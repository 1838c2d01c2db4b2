"""A restarted agent cleans up after a dead one: its sandbox containers and its job folder."""

import fcntl
import os

import pytest

from evaluator.sandbox import SANDBOX_LABEL
from evaluator.workdirs import WORK_LOCK, sweep_orphans

pytestmark = pytest.mark.docker


def _job_folder(root, name):
    folder = root / name
    folder.mkdir(parents=True)
    (folder / WORK_LOCK).touch()
    return folder


def _sleeper(docker_client, runner_image, folder):
    return docker_client.containers.run(
        runner_image,
        ["python3", "-c", "import time; time.sleep(300)"],
        detach=True,
        network_mode="none",
        labels={SANDBOX_LABEL: "1"},
        volumes={str(folder): {"bind": "/out", "mode": "ro"}},
    )


def test_dead_agents_containers_and_folders_go_and_live_ones_stay(tmp_path, docker_client, runner_image):
    root = tmp_path / "work"
    dead = _job_folder(root, "job-1-dead")
    live = _job_folder(root, "job-2-live")
    held = os.open(live / WORK_LOCK, os.O_RDWR)
    fcntl.flock(held, fcntl.LOCK_EX)  # a live agent of the same site holds its job folder
    orphan = _sleeper(docker_client, runner_image, dead)
    running = _sleeper(docker_client, runner_image, live)
    try:
        assert sweep_orphans(root) == 1
        assert not dead.exists() and live.exists()
        ids = {c.id for c in docker_client.containers.list(all=True, filters={"label": SANDBOX_LABEL}, sparse=True)}
        assert orphan.id not in ids and running.id in ids
    finally:
        os.close(held)
        running.remove(force=True)
        if orphan.id in {c.id for c in docker_client.containers.list(all=True, sparse=True)}:
            orphan.remove(force=True)


def test_a_fresh_folder_without_its_lock_yet_is_left_alone(tmp_path):
    root = tmp_path / "work"
    (root / "job-3-starting").mkdir(parents=True)
    assert sweep_orphans(root, remove_containers=lambda path: 0) == 0
    assert (root / "job-3-starting").exists()
