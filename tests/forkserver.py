"""``python -m MODULE ...`` for the tests, without paying MONAI's import (8 s on 2 cores) every time.

The suite starts ``python -m monai.bundle run`` about 130 times; importing torch, MONAI and ignite is most of
each run. A server process per pytest worker imports them once, then forks a child per command: the child
takes the command's working folder, environment and arguments (``sys.path[0]`` the working folder, as
``python -m`` sets it), runs the module as ``__main__`` with its output in files, and exits with its status.
Each command still runs in a process of its own, as a user's would; only the imports are shared. The server
runs nothing but imports before it forks, so no thread pool or open file is inherited.

``run(argv, cwd, env, timeout)`` takes the arguments ``subprocess.run`` would and returns a
``subprocess.CompletedProcess`` with text output; anything but ``[sys.executable, "-m", module, ...]`` goes to
``subprocess.run``.
"""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Mapping, Optional, Sequence

_lock = threading.Lock()
_server: Optional[subprocess.Popen] = None
# what a bundle run imports; nothing here may start a thread or open a file that a fork would share
PRELOAD = (
    "torch",
    "monai",
    "monai.bundle",
    "monai.bundle.scripts",
    "ignite.engine",
    "fire",
    "nibabel",
    "monai_ext",
    "monai_ext.bundle",
    "monai_ext.handlers",
    "monai_ext.transforms",
    "monai_ext.networks",
    "monai_ext.engines",
    "monai_ext.apps",
)


def _start() -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        bufsize=1,
        cwd=str(Path(__file__).resolve().parents[1]),
    )
    atexit.register(proc.kill)
    ready = proc.stdout.readline()
    if ready.strip() != "ready":
        raise RuntimeError(f"the test fork server did not start: {ready!r}")
    return proc


def run(
    argv: Sequence[str], cwd=None, env: Optional[Mapping[str, str]] = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    """Run ``argv`` (``[sys.executable, "-m", module, *args]``) as ``subprocess.run(argv, capture_output=True,
    text=True, ...)`` would; raises ``subprocess.TimeoutExpired`` past ``timeout`` (the command is killed)."""
    global _server
    argv = [str(a) for a in argv]
    if len(argv) < 3 or argv[0] != sys.executable or argv[1] != "-m":
        return subprocess.run(
            argv, cwd=cwd, env=None if env is None else dict(env), capture_output=True, text=True, timeout=timeout
        )
    with _lock, tempfile.TemporaryDirectory(prefix="forkserver_") as tmp:
        if _server is None or _server.poll() is not None:
            _server = _start()
        request = {
            "module": argv[2],
            "args": argv[3:],
            "cwd": str(Path(cwd or os.getcwd()).resolve()),
            "env": dict(os.environ if env is None else env),
            "out": f"{tmp}/out",
            "err": f"{tmp}/err",
            "timeout": timeout,
        }
        _server.stdin.write(json.dumps(request) + "\n")
        _server.stdin.flush()
        reply = json.loads(_server.stdout.readline())
        out = Path(request["out"]).read_text(errors="replace")
        err = Path(request["err"]).read_text(errors="replace")
    if reply["timeout"]:
        raise subprocess.TimeoutExpired(argv, timeout, out, err)
    return subprocess.CompletedProcess(argv, reply["returncode"], out, err)


def _child(request: dict) -> None:
    """In the forked child: become the command, run it, exit with its status (never returns)."""
    import runpy

    code = 1
    try:
        os.setsid()  # its own process group: a timeout kills what it started too
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        for fd, path, mode in (
            (0, os.devnull, os.O_RDONLY),
            (1, request["out"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
            (2, request["err"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
        ):
            opened = os.open(path, mode, 0o644)
            os.dup2(opened, fd)
            os.close(opened)
        sys.stdin = open(0, "r", closefd=False)
        sys.stdout = open(1, "w", buffering=1, closefd=False)
        sys.stderr = open(2, "w", buffering=1, closefd=False)
        sys.argv = [request["module"], *request["args"]]
        sys.path[0] = os.getcwd()  # as ``python -m`` sets it
        runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if not isinstance(e.code, int) and e.code is not None:
            print(e.code, file=sys.stderr)
    except BaseException:  # as the interpreter reports an uncaught exception
        sys.excepthook(*sys.exc_info())
        code = 1
    finally:
        try:
            import atexit

            atexit._run_exitfuncs()  # what the interpreter runs at exit: logging's flush, TensorBoard's writers
        except BaseException:
            pass
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(code)


def _serve() -> None:
    import importlib
    import signal
    import time

    for name in PRELOAD:
        importlib.import_module(name)
    print("ready", flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(request)
        deadline = time.monotonic() + float(request["timeout"])
        timed_out = False
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                timed_out = True
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                os.waitpid(pid, 0)
                status = 0
                break
            time.sleep(0.02)
        code = os.waitstatus_to_exitcode(status) if not timed_out else -9
        print(json.dumps({"returncode": code, "timeout": timed_out}), flush=True)


if __name__ == "__main__" and sys.argv[1:] == ["--serve"]:
    _serve()
