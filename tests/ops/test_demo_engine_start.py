"""`VAULTBENCH_DEMO_EXIT=1 bash .ci/demo/run` returns even where the script itself started the
Docker engine: .ci/lib/docker-engine.sh starts dockerd detached in a session of its own, and the
demo's cleanup waits for its own children only. Runs the real script with a stand-in `dockerd`
(and `docker`, `debootstrap`) on PATH; the machine's engine is not touched. About 2 s."""

import os
import signal
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STUB_DOCKERD = """#!/bin/bash
echo $$ >"{state}/dockerd.pid"
touch "{state}/up"
exec sleep 300
"""
STUB_DOCKER = """#!/bin/bash
[ "$1" = info ] && [ -f "{state}/up" ]
"""


def test_a_script_that_started_the_engine_still_returns_and_ctrl_c_spares_the_engine(tmp_path):
    bin_dir, state = tmp_path / "bin", tmp_path / "state"
    bin_dir.mkdir()
    state.mkdir()
    for name, text in (("dockerd", STUB_DOCKERD), ("docker", STUB_DOCKER), ("debootstrap", "#!/bin/bash\n")):
        (bin_dir / name).write_text(text.format(state=state))
        (bin_dir / name).chmod(0o755)
    # What the demo does: source the engine script, start children, clean up with its own wait.
    script = (
        "set -euo pipefail\n"
        f"source {ROOT}/.ci/lib/docker-engine.sh\n"
        "PIDS=()\n"
        "sleep 30 & PIDS+=($!)\n"
        + (ROOT / ".ci/demo/run").read_text().split("cleanup() {", 1)[1].split("\n}\n", 1)[0].join(
            ["cleanup() {", "\n}\n"]
        )
        + "trap cleanup EXIT INT TERM\n"
        "echo ready\n"
        "wait\n"  # like the demo serving until Ctrl-C
    )
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}",
           "VAULTBENCH_DOCKERD_LOG": str(tmp_path / "dockerd.log"),
           "VAULTBENCH_DOCKERD_PIDFILE": str(tmp_path / "docker.pid")}  # fmt: skip
    process = subprocess.Popen(["bash", "-c", script], env=env, stdout=subprocess.PIPE, text=True,
                               start_new_session=True)  # fmt: skip
    try:
        assert process.stdout.readline() == "ready\n"  # the engine answered; the demo runs
        engine = int((state / "dockerd.pid").read_text())
        os.killpg(process.pid, signal.SIGINT)  # Ctrl-C on the demo: its whole process group
        out, _ = process.communicate(timeout=20)  # it used to wait for dockerd for ever
        assert process.returncode is not None and out == ""  # interrupted, cleaned up, gone
        assert os.getsid(engine) != os.getsid(0) and os.getsid(engine) != process.pid  # a session of its own
        os.kill(engine, 0)  # the engine outlived the demo's Ctrl-C
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        if (state / "dockerd.pid").exists():
            try:
                os.kill(int((state / "dockerd.pid").read_text()), signal.SIGTERM)
            except ProcessLookupError:
                pass
