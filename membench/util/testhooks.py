"""A test hook, inert unless its environment variable is set.

MEMBENCH_TEST_KILL_AT=<label> makes the process send itself SIGKILL (or the signal named
by MEMBENCH_TEST_KILL_SIGNAL, e.g. INT for a Ctrl-C) when it reaches the point called
<label>, so tests can interrupt a real run at an exact place and prove that `--resume`
ends with the same numbers. MEMBENCH_TEST_KILL_GROUP=1 signals the whole process group
(only for a process started in its own session). MEMBENCH_TEST_KILL_ONCE=<file> fires
only while <file> does not exist, creating it first, so a restarted (requeued) process
reaching the same point again runs on. Labels (numbers are 1-based):

    step:<stage>:<epoch>:<step>        before that training step
    checkpoint:<stage>:<epoch>         between writing best.pt and last.pt
    stage-done:<model>:<stage>:<split> a stage finished, the next not started
    result-saved:<model>:<split>       result.json written, leaderboard not yet
    leaderboard:predictions            predictions written, results.csv not yet
    write:<file name>                  a temporary file written, not yet renamed
    job-done:<model>:<split>           a job recorded, the next not started
"""

from __future__ import annotations

import os
import signal


def kill_point(label: str) -> None:
    if os.environ.get("MEMBENCH_TEST_KILL_AT") == label:
        once = os.environ.get("MEMBENCH_TEST_KILL_ONCE")
        if once:
            try:
                os.close(os.open(once, os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                return
        sig = getattr(signal, "SIG" + os.environ.get("MEMBENCH_TEST_KILL_SIGNAL", "KILL"))
        if os.environ.get("MEMBENCH_TEST_KILL_GROUP") == "1":
            os.killpg(os.getpgid(0), sig)  # as a terminal's Ctrl-C: data loader workers too
        else:
            os.kill(os.getpid(), sig)
