#!/bin/sh
# The KernelSeal demo, inside the test VM (BPF-LSM on):   cargo xtask demo
# The agent starts on the example config, an app is started through the
# wrapper and reports it has its secret (length only), then root tries to
# read it back and is refused, next to the agent's log lines. It exits 1
# when any of that did not hold (scripts/test runs it as a check).
set -u
BROKEN=""
broken() { BROKEN="$BROKEN
!! $*"; }
CONFIG=/tmp/config.yaml
cat > "$CONFIG" <<'YAML'
version: v1
policy: { mode: enforce, blockEnviron: true, blockMem: true, blockMaps: true, blockPtrace: true }
secrets:
  - name: demo
    selector: { path: /usr/bin/demo-app }
    secretRefs:
      - name: MY_SECRET
        source: { envRef: KernelSeal_MY_SECRET }
YAML
cat > /usr/bin/demo-app <<'APP'
#!/bin/sh
echo "demo-app (PID $$): MY_SECRET is set, ${#MY_SECRET} characters long"
exec sleep 300
APP
chmod +x /usr/bin/demo-app

echo "== starting the agent (mode enforce)"
KernelSeal_MY_SECRET=secret-value-here kernelseal agent --config "$CONFIG" --metrics-addr 127.0.0.1:9090 > /tmp/agent.log 2>&1 &
AGENT=$!
for _ in $(seq 1 100); do grep -q "agent running" /tmp/agent.log && break; sleep 0.2; done

echo "== kernelseal exec -- demo-app"
kernelseal exec -- demo-app > /tmp/app.out 2>&1 &
APP=$!
for _ in $(seq 1 50); do [ -s /tmp/app.out ] && break; sleep 0.1; done
cat /tmp/app.out
grep -q "MY_SECRET is set, 17 characters long" /tmp/app.out || broken "the app did not get its secret"

echo "== root tries to read it back"
echo "\$ cat /proc/$APP/environ"
cat /proc/$APP/environ > /dev/null && broken "root read the environ"; echo "   exit $?"
echo "\$ dd if=/proc/$APP/mem"
dd if=/proc/$APP/mem of=/dev/null bs=1 count=1 2>/tmp/dd.err && broken "root read the memory"
echo "   exit $?"; head -1 /tmp/dd.err
echo "== every vector (ptrace, process_vm_readv, pidfd_getfd included):"
kernelseal-attacks $APP | tee /tmp/attacks.out
grep -q allowed /tmp/attacks.out && broken "a vector was allowed"
echo "== ps still shows it:"
ps | grep "[s]leep 300"
sleep 1
echo "== the agent's log (values never appear in it):"
grep -E "INJECT|PROTECT|LSM BLOCKED|MEMORY|OK\]" /tmp/agent.log | sed 's/^[^ ]* *[A-Z]* //' | cut -c1-120
if grep -q secret-value-here /tmp/agent.log; then broken "the value leaked into the log"; else echo "(the value does not appear in the log)"; fi
kill "$AGENT"; wait "$AGENT" 2>/dev/null
if [ -n "$BROKEN" ]; then echo "$BROKEN"; exit 1; fi
