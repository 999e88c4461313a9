# Sourced by the benchmarks: start a command pinned to one CPU at the same autogroup
# priority as everything else in the run, and hold a server to its CPU.

# CMD pinned to CPU $1, nice -20 in an autogroup of its own at nice -20; waits for CMD.
# `setsid` alone would give CMD a fresh nice-0 autogroup that loses to everything else on
# the machine, and the ratio would then measure the scheduler, not the server.
pinned() { # cpu cmd...
    local cpu=$1
    shift
    setsid -w bash -c 'echo -20 > /proc/self/autogroup; cpu=$1; shift; exec nice -n -20 taskset -c "$cpu" "$@"' pinned "$cpu" "$@"
}

# Every thread of process ROOT and its descendants, as "pid tid".
tree_threads() { # root
    python3 - "$1" <<'PY'
import os, sys
root = int(sys.argv[1])
children = {}
for entry in os.listdir('/proc'):
    if entry.isdigit():
        try:
            with open(f'/proc/{entry}/stat') as f:
                ppid = int(f.read().rsplit(')', 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
        except OSError:
            pass
todo = [root]
while todo:
    pid = todo.pop()
    todo.extend(children.get(pid, []))
    try:
        for tid in os.listdir(f'/proc/{pid}/task'):
            print(pid, tid)
    except OSError:
        pass
PY
}

# Holds every thread of ROOT's process tree to CPU: `taskset` at start is not enough, since
# a server may set its threads' affinity itself (Knot pins UDP worker i to CPU i modulo the
# online CPUs, which put its only worker on the load generator's CPU 0). Says which threads
# had moved, then checks that none is left elsewhere.
hold_to_cpu() { # root cpu
    local root=$1 cpu=$2 pid tid allowed moved=0
    while read -r pid tid; do
        allowed=$(awk '/^Cpus_allowed_list:/ {print $2}' "/proc/$pid/task/$tid/status" 2>/dev/null) || continue
        if [ -n "$allowed" ] && [ "$allowed" != "$cpu" ]; then
            echo "  $(cat "/proc/$pid/task/$tid/comm" 2>/dev/null) thread $tid had set its CPUs to $allowed; pinned to $cpu" >&2
            taskset -cp "$cpu" "$tid" >/dev/null
            moved=1
        fi
    done < <(tree_threads "$root")
    [ "$moved" = 0 ] || check_on_cpu "$root" "$cpu"
}

# Fails if any thread of ROOT's process tree may run on a CPU other than CPU.
check_on_cpu() { # root cpu
    local root=$1 cpu=$2 pid tid allowed
    while read -r pid tid; do
        allowed=$(awk '/^Cpus_allowed_list:/ {print $2}' "/proc/$pid/task/$tid/status" 2>/dev/null) || continue
        if [ -n "$allowed" ] && [ "$allowed" != "$cpu" ]; then
            echo "thread $tid of $root runs on CPUs $allowed, not $cpu: the run is void" >&2
            return 1
        fi
    done < <(tree_threads "$root")
}
