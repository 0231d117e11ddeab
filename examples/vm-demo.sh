#!/bin/sh
# The quick start, inside the test VM (BPF-LSM on):
#   cargo xtask vm-run examples/vm-demo.sh
# Starts the agent on the example config, protects a process, and shows
# root being refused next to the agent's log lines.
set -u
CONFIG=/tmp/config.yaml
cat > "$CONFIG" <<'YAML'
version: v1
policy: { mode: enforce, blockEnviron: true, blockMem: true, blockPtrace: true }
YAML
kernelseal agent --config "$CONFIG" > /tmp/agent.log 2>&1 &
AGENT=$!
for _ in $(seq 1 100); do grep -q "agent running" /tmp/agent.log && break; sleep 0.2; done

KernelSeal_MY_SECRET=secret-value-here sleep 300 &
SLEEP_PID=$!
echo "== protecting PID $SLEEP_PID"
kernelseal protect "$SLEEP_PID"
echo "== root tries: cat /proc/$SLEEP_PID/environ"
cat /proc/$SLEEP_PID/environ; echo "   exit $?"
echo "== root tries: dd if=/proc/$SLEEP_PID/mem"
dd if=/proc/$SLEEP_PID/mem of=/dev/null bs=1 count=1 2>&1; echo "   exit $?"
echo "== ps still works:"
ps | grep "[s]leep 300"
sleep 1
echo "== the agent's log:"
grep -E "LSM BLOCKED|ALLOW|OK\]" /tmp/agent.log
kill "$AGENT"; wait "$AGENT"
