"""`exit_now`: a process that skips the interpreter's teardown still does what the program asked
of it at exit (threads finished, atexit handlers run, output flushed) and exits with its status."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PROGRAM = """
import atexit, sys, threading, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from vaelab.exiting import exit_now

out = Path(sys.argv[1])
threading.Thread(target=lambda: (time.sleep(0.3), (out / "thread").write_text("done"))).start()
ThreadPoolExecutor(1).submit(lambda: (time.sleep(0.3), (out / "pool").write_text("done")))
atexit.register(lambda: (out / "atexit").write_text("done"))
sys.stdout.write("unflushed line, ")
print("to a pipe", end="")
exit_now(eval(sys.argv[2]))
"""


@pytest.mark.parametrize(("code", "status"), [("0", 0), ("None", 0), ("3", 3), ("'bad input'", 1)])
def test_exit_now_finishes_threads_atexit_and_output_then_exits_with_the_status(tmp_path: Path, code, status):
    buffered = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # as a pipe is by default
    done = subprocess.run([sys.executable, "-c", PROGRAM, str(tmp_path), code], capture_output=True,
                          text=True, timeout=60, env=buffered)
    assert done.returncode == status, done.stderr
    assert done.stdout == "unflushed line, to a pipe"
    assert done.stderr == ("bad input\n" if status == 1 else "")  # sys.exit("...") prints it
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == {"thread": "done", "pool": "done", "atexit": "done"}
