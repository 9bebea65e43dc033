"""A killed hub's services, found by their records and stopped by pid (never by name);
a pid the kernel gave to another process since is left alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from redspot.hub.leftovers import (
    hold_data_folder,
    start_time,
    stop_leftover_services,
)
from tests.helpers import descendants, pid_alive, wait_for

SLEEPER = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', " \
          "'import time; time.sleep(120)']); time.sleep(120)"


def orphan_with_a_child(tmp_path):
    """A process (and its child) as a killed hub's service: its record in its folder."""
    proc = subprocess.Popen([sys.executable, "-c", SLEEPER])
    folder = tmp_path / "sharing"
    folder.mkdir()
    (folder / ".service.json").write_text(
        json.dumps({"pid": proc.pid, "started": start_time(proc.pid)}))
    return proc, folder


def test_a_recorded_service_and_its_children_are_stopped(tmp_path):
    proc, folder = orphan_with_a_child(tmp_path)
    (child,) = wait_for(lambda: descendants(proc.pid), 10, "the service's child")
    said = stop_leftover_services(tmp_path, log=lambda line: None, grace=2)
    proc.wait(10)
    assert said == [f"Stopped the sharing service (pid {proc.pid}, 2 processes) that an "
                    f"earlier redspot up of this data folder left running"]
    wait_for(lambda: not pid_alive(child[0]), 10, "the child to go")
    assert not (folder / ".service.json").exists()


def test_a_pid_given_to_another_process_is_left_alone(tmp_path):
    proc, folder = orphan_with_a_child(tmp_path)
    record = json.loads((folder / ".service.json").read_text())
    (folder / ".service.json").write_text(json.dumps({**record,
                                                      "started": record["started"] - 1}))
    try:
        assert stop_leftover_services(tmp_path, log=lambda line: None) == []
        assert pid_alive(proc.pid)
        assert not (folder / ".service.json").exists()  # a stale record is dropped
    finally:
        proc.kill()
        proc.wait()


def test_a_link_for_a_record_is_not_followed(tmp_path):
    proc, folder = orphan_with_a_child(tmp_path)
    real = tmp_path / "elsewhere.json"
    (folder / ".service.json").rename(real)
    (folder / ".service.json").symlink_to(real)
    try:
        assert stop_leftover_services(tmp_path, log=lambda line: None) == []
        assert pid_alive(proc.pid)
    finally:
        proc.kill()
        proc.wait()


def test_one_redspot_per_data_folder(tmp_path):
    hold_data_folder(tmp_path)
    hold_data_folder(tmp_path)  # again in the same process: it holds it already
    holder = subprocess.run(
        [sys.executable, "-c", "import sys; from pathlib import Path; "
         "from redspot.hub.leftovers import hold_data_folder; "
         "hold_data_folder(Path(sys.argv[1]))", str(tmp_path)],
        capture_output=True, text=True, timeout=60)
    assert holder.returncode == 1
    assert "DataFolderBusy: another redspot up (pid " \
        f"{os.getpid()}) runs on this data folder" in holder.stderr


def test_a_killed_services_orphans_are_stopped_by_its_next_run_and_by_the_next_hub(tmp_path):
    """JupyterHub restarts a service that was killed; what the killed one started (MLflow's
    server, on the port the next run needs) runs on in its process group."""
    import signal

    from redspot.hub.leftovers import record_service, stop_orphans

    for stop in ("next run", "next hub"):
        proc = subprocess.Popen([sys.executable, "-c", SLEEPER], start_new_session=True)
        folder = tmp_path / stop.replace(" ", "-") / "models"
        folder.mkdir(parents=True)
        (folder / ".service.json").write_text(
            json.dumps({"pid": proc.pid, "started": start_time(proc.pid)}))
        (child,) = wait_for(lambda proc=proc: descendants(proc.pid), 10, "the child")
        assert stop_orphans(folder) == 0  # the service runs: not a killed run's
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        assert pid_alive(child[0])  # orphaned, still in the killed one's group
        if stop == "next run":
            assert record_service(folder) == 1
            assert json.loads((folder / ".service.json").read_text())["pid"] == os.getpid()
        else:
            said = stop_leftover_services(folder.parent, log=lambda line: None, grace=2)
            assert said == [f"Stopped 1 process that a killed models service (pid "
                            f"{proc.pid}) left running"]
        wait_for(lambda child=child: not pid_alive(child[0]), 10, "the orphan to go")


def test_a_process_group_is_alive_while_a_member_runs_not_when_only_zombies_are_left():
    """``group_alive`` (a Ray head's group, polled by the hub): a group whose leader is
    a zombie still runs while a member does; one of zombies only, or none, does not."""
    import signal

    from redspot.compute.local import group_alive, proc_stat

    # a leader that starts a child in its group, says its pid, then exits: a zombie
    # until this test reaps it
    leader = subprocess.Popen(
        [sys.executable, "-c", "import subprocess, sys; print(subprocess.Popen([sys.executable,"
         " '-c', 'import time; time.sleep(120)']).pid)"], start_new_session=True,
        stdout=subprocess.PIPE, text=True)
    try:
        child = int(leader.stdout.readline())
        wait_for(lambda: proc_stat(leader.pid)[0] == "Z", 10, "the leader to be a zombie")
        assert group_alive(leader.pid), "the group's child runs"
        os.kill(child, signal.SIGKILL)
        wait_for(lambda: not group_alive(leader.pid), 10, "only the zombie leader left")
    finally:
        leader.wait(10)
        leader.stdout.close()
    assert not group_alive(leader.pid), "no such group"
    assert group_alive(os.getpgid(0)), "this test's own group"
