# Shared by the end-to-end scripts (source it): PASS/FAIL bookkeeping and waiting for members.
passed=0
failed=0
assert_ok() {  # assert_ok NAME EXIT-STATUS: records a PASS or a FAIL
  # (callers save $? first: a $(...) inside NAME would overwrite it before it is read)
  if [[ "$2" == 0 ]]; then
    echo "PASS $1"
    passed=$((passed + 1))
  else
    echo "FAIL $1"
    failed=$((failed + 1))
  fi
}
wait_listening() {  # wait_listening PORT...: until each port on 127.0.0.1 accepts (at most 10 s)
  python3 - "$@" <<'PY'
import socket, sys, time
deadline = time.time() + 10
for port in map(int, sys.argv[1:]):
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.time() > deadline:
                sys.exit("member on control port %d did not start" % port)
            time.sleep(0.05)
PY
}
verdict() {  # verdict MTCP-PERF-JSON: "VERDICT MIGRATIONS ERROR"
  python3 -c 'import json,sys; e=json.load(open(sys.argv[1]))["end"]; print(e["verdict"], e["migrations_done"], e["error"])' "$1" 2>/dev/null
}
