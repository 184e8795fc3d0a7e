"""Wall time, CPU seconds and peak RSS of a command's whole process tree.

    python3 bench/treetime.py OUT -- ARGV...

Runs ARGV (stdin, stdout and stderr inherited) as a child subreaper (prctl
PR_SET_CHILD_SUBREAPER), so processes that detach from it (pgBackRest's async archiver, daemons)
are re-parented to this process instead of init: once ARGV has exited, every remaining
descendant is waited for (up to LINGER seconds, default 120, then killed), so the kernel's
RUSAGE_CHILDREN counts all of them. Writes one line to OUT:
    wall_s user_s sys_s peak_rss_kib linger_s
wall is until ARGV itself exits; user/sys are summed over the whole tree; peak RSS is that of the
largest single process of the tree (the kernel's ru_maxrss of reaped children); linger is how
long detached descendants outlived ARGV. Exits with ARGV's exit status.
"""
import ctypes, os, resource, signal, sys, time

PR_SET_CHILD_SUBREAPER = 36


def reap_all(deadline):
    """Waits for every remaining child (they are ours as subreaper); kills them after deadline."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            if time.monotonic() > deadline:
                for child in children():
                    try:
                        os.kill(child, signal.SIGKILL)
                    except OSError:
                        pass
            time.sleep(0.05)


def children():
    """Pids whose parent is this process."""
    me, out = os.getpid(), []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == me:
                        out.append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    return out


def main():
    out, argv = sys.argv[1], sys.argv[sys.argv.index("--") + 1:]
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        sys.exit(f"treetime: prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(ctypes.get_errno())}")
    t0 = time.perf_counter()
    pid = os.posix_spawnp(argv[0], argv, os.environ)
    _, status = os.waitpid(pid, 0)
    wall = time.perf_counter() - t0
    reap_all(time.monotonic() + float(os.environ.get("LINGER", "120")))
    linger = time.perf_counter() - t0 - wall
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(out, "w") as f:
        f.write(f"{wall:.3f} {ru.ru_utime:.3f} {ru.ru_stime:.3f} {ru.ru_maxrss} {linger:.3f}\n")
    code = os.waitstatus_to_exitcode(status)
    sys.exit(code if code >= 0 else 128 - code)  # killed by signal N: 128 + N, as a shell says


if __name__ == "__main__":
    main()
