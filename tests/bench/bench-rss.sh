#!/usr/bin/env bash
# Idle RSS of berthd with every in-tree plugin that loads here, median of several starts.
# Usage: bench-rss.sh BUILD_DIR [RUNS]
set -euo pipefail
build=$(cd "$1" && pwd)
runs=${2:-5}
tmp=$(mktemp -d /tmp/berth-rss-XXXXXX)
trap 'rm -rf "$tmp"' EXIT

# Every in-tree plugin module that berthd can load: the build's plugins plus the test
# hypervisor (the stand-in until the QEMU plugin lands).
mkdir -p "$tmp/plugins"
plugins=""
for so in "$build"/plugins/*/*.so "$build"/tests/plugins/testhv.so; do
    [ -e "$so" ] || continue
    name=$(basename "$so" .so)
    cp "$so" "$tmp/plugins/"
    plugins="$plugins$name;"
done
chmod 755 "$tmp/plugins"

cat > "$tmp/berthd.conf" <<CONF
[agent]
config_dir=$tmp/etc
state_dir=$tmp/state
run_dir=$tmp/run
domains_dir=$tmp/etc/domains
plugin_dir=$tmp/plugins
plugins=$plugins
log_level=warning
[rpc]
unix_socket=$tmp/run/berthd.sock
unix_socket_ro=$tmp/run/berthd-ro.sock
CONF

values=()
for _ in $(seq "$runs"); do
    "$build/agent/berthd" --config "$tmp/berthd.conf" --foreground 2>>"$tmp/log" &
    pid=$!
    for _ in $(seq 200); do [ -S "$tmp/run/berthd.sock" ] && break; sleep 0.02; done
    sleep 1
    rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status")
    values+=("$rss")
    kill "$pid"; wait "$pid" || true
    rm -f "$tmp/run/berthd.sock" "$tmp/run/berthd-ro.sock"
done
sorted=$(printf '%s\n' "${values[@]}" | sort -n)
median=$(echo "$sorted" | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
echo "berthd idle RSS with plugins [$plugins]: runs (KiB): ${values[*]}"
echo "median: $median KiB ($(awk -v m="$median" 'BEGIN {printf "%.2f", m/1024}') MiB); goal < 8 MiB"
if command -v libvirtd >/dev/null 2>&1; then
    echo "(libvirtd is installed; compare with its idle VmRSS by hand: it is not started here)"
fi
