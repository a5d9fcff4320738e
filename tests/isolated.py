"""Run engraft's command line in isolated children, each with a time limit and its memory measured.

A server process imports engraft once, then forks one child per command, so
hundreds of hostile inputs cost milliseconds each rather than an interpreter
start each. A child that runs past its time is killed (a hang is a failure,
not a stuck test suite); its address space is capped so a runaway expansion
fails fast instead of taking the machine's memory. For each command the
server reports the exit code, the wall time, the child's peak resident
memory and the server's own (the child starts as a copy of it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SERVER = r"""
import json, os, resource, sys, time, traceback
from engraft.cli import main
import engraft.simulation, engraft.sweep.runner  # what the commands import, loaded before the forks

def vm_bytes():
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0

extra = int(sys.argv[1])
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    case = json.loads(line)
    base_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    limit = vm_bytes() + extra
    sys.stdout.flush(); sys.stderr.flush()
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        code = 99
        try:
            for fd, name in ((1, "stdout"), (2, "stderr")):
                target = os.open(case[name], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.dup2(target, fd)
                os.close(target)
            os.chdir(case["cwd"])
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
            code = main(case["argv"])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            traceback.print_exc()
            code = 99
        try:
            sys.stdout.flush(); sys.stderr.flush()
        finally:
            os._exit(code)
    timed_out = False
    while True:
        wpid, status, usage = os.wait4(pid, os.WNOHANG)
        if wpid:
            break
        if time.perf_counter() - t0 > case["timeout"]:
            os.kill(pid, 9)
            wpid, status, usage = os.wait4(pid, 0)
            timed_out = True
            break
        time.sleep(0.002)
    print(json.dumps({"code": os.waitstatus_to_exitcode(status), "seconds": time.perf_counter() - t0,
                      "child_rss_kb": usage.ru_maxrss, "server_rss_kb": base_kb, "timed_out": timed_out}),
          flush=True)
"""


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str
    seconds: float
    #: the child's peak resident memory beyond what it started with (the server's), in MiB
    grown_mib: float
    timed_out: bool


class IsolatedCLI:
    """A server that runs ``engraft`` command lines in forked, limited children."""

    def __init__(self, memory_cap_mib: int = 2048):
        env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        self.proc = subprocess.Popen([sys.executable, "-c", SERVER, str(memory_cap_mib << 20)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
                                     cwd=ROOT)
        ready = self.proc.stdout.readline()
        if not ready:
            raise RuntimeError("the isolated engraft server did not start")

    def run(self, argv: list[str], cwd: Path, timeout: float = 30.0) -> Outcome:
        # the capture files live outside what the command may write: in a sibling folder
        capture = cwd.parent / f".{cwd.name}.capture"
        capture.mkdir(exist_ok=True)
        out, err = capture / "stdout", capture / "stderr"
        case = {"argv": argv, "cwd": str(cwd), "stdout": str(out), "stderr": str(err), "timeout": timeout}
        self.proc.stdin.write(json.dumps(case) + "\n")
        self.proc.stdin.flush()
        report = json.loads(self.proc.stdout.readline())
        return Outcome(code=report["code"], stdout=out.read_text(errors="replace"),
                       stderr=err.read_text(errors="replace"), seconds=report["seconds"],
                       grown_mib=max(0, report["child_rss_kb"] - report["server_rss_kb"]) / 1024,
                       timed_out=report["timed_out"])

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)
