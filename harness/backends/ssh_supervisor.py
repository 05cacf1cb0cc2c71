"""The harness's own supervisor for a process on an SSH host (stdlib only, standalone).

The SSH backend uploads this file next to a node's work directory and starts it,
detached from the SSH session (``setsid nohup``), with a JSON spec:

    python3 ssh_supervisor.py node.json

    {"argv": [...], "env": {...}, "cwd": "...", "log": "node.log",
     "pid_file": "node.pid", "exit_file": "node.exit"}

It forks the process with stdout and stderr appended to ``log``, writes the
process's own pid to ``pid_file`` (so SIGKILL, SIGSTOP and SIGCONT from the
harness reach the real process, not a wrapper), waits for it, and writes its
exit status to ``exit_file`` in Popen's convention (the exit code, or minus the
signal number). Both files are written whole and renamed, so a reader never sees
half a number. The harness treats "exit file present" as "the process is gone".
"""

from __future__ import annotations

import json
import os
import sys


def write_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def exit_status(status: int) -> int:
    """Popen's returncode for a waitpid status."""
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def supervise(spec: dict) -> int:
    argv = [str(a) for a in spec["argv"]]
    env = dict(os.environ)
    env.update({str(k): str(v) for k, v in spec.get("env", {}).items()})
    cwd = spec.get("cwd") or os.getcwd()
    log_fd = os.open(spec["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    null_fd = os.open(os.devnull, os.O_RDONLY)
    pid = os.fork()
    if pid == 0:  # the supervised process
        try:
            # Its own process group (pgid = its pid): a kill of the group also ends anything it spawned.
            os.setpgid(0, 0)
            os.chdir(cwd)
            os.dup2(null_fd, 0)
            os.dup2(log_fd, 1)
            os.dup2(log_fd, 2)
            os.execvpe(argv[0], argv, env)
        except BaseException as err:  # exec failed: say why in the log the user will read
            os.write(2, f"ssh_supervisor: cannot start {argv!r}: {err}\n".encode())
        finally:
            os._exit(127)
    os.close(log_fd)
    os.close(null_fd)
    write_atomic(spec["pid_file"], f"{pid}\n")
    while True:
        try:
            _, status = os.waitpid(pid, 0)  # no WUNTRACED: a SIGSTOPped process is still running
            break
        except InterruptedError:
            continue
    code = exit_status(status)
    write_atomic(spec["exit_file"], f"{code}\n")
    return 0


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: ssh_supervisor.py SPEC.json", file=sys.stderr)
        return 2
    with open(argv[0]) as f:
        spec = json.load(f)
    return supervise(spec)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
