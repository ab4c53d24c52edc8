#!/usr/bin/env bash
# The raw-QEMU floor for the QEMU plugin: QEMU started and stopped directly, timed through our
# QMP client (qmp-timer), min/median/max in ms over RUNS runs (default 20).
#   start:       launch -> greeting, qmp_capabilities and `cont` answered (running)
#   quit, kill:  `quit` sent / SIGKILL -> process gone (reaped)
# Usage: bench-qemu-raw.sh QMP_TIMER [RUNS]
set -euo pipefail
timer=$1
runs=${2:-20}
qemu=$(command -v qemu-system-x86_64 || true)
if [ -z "$qemu" ]; then
    echo "SKIP: qemu-system-x86_64 is not installed"
    exit 77
fi
accel=tcg
if [ -r /dev/kvm ] && [ -w /dev/kvm ]; then
    accel=kvm
fi
tmp=$(mktemp -d /tmp/berth-qemu-raw-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
sock=$tmp/qmp.sock

: > "$tmp/start"
for stop in quit kill; do
    : > "$tmp/$stop"
    for _ in $(seq "$runs"); do
        rm -f "$sock"
        read -r start stopped < <("$timer" --socket "$sock" --stop "$stop" -- "$qemu" \
            -machine q35 -accel "$accel" -m 128 -nodefaults -display none -S \
            -qmp "unix:$sock,server=on,wait=off" 2>>"$tmp/log")
        echo "$start" >> "$tmp/start"
        echo "$stopped" >> "$tmp/$stop"
    done
done

stats() {
    sort -n "$1" | awk -v name="$2" '{ v[NR] = $1 }
        END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2;
              printf "%-22s min %8.1f  median %8.1f  max %8.1f ms  (n=%d)\n", name, v[1], m, v[NR], NR }'
}
echo "raw QEMU (q35, accel=$accel, -m 128, $runs runs per stop mode)"
stats "$tmp/start" "start-to-running"
stats "$tmp/quit" "quit-to-gone"
stats "$tmp/kill" "SIGKILL-to-gone"
