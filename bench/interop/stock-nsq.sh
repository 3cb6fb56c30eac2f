#!/usr/bin/env bash
# Interoperability checks between ledgerq and the STOCK NSQ tools (nsqd, nsqlookupd, nsqadmin,
# nsq_tail, to_nsq), run as a user would run them, over loopback only.
#
# Usage:
#   NSQ_BIN=/path/to/nsq/bin LEDGERQ=/path/to/ledgerq bench/interop/stock-nsq.sh
#
#   NSQ_BIN    directory holding stock nsqd, nsqlookupd, nsqadmin, nsq_tail, to_nsq (v1.3.0 tested)
#   LEDGERQ    the ledgerq binary (`ledgerq serve`, `ledgerq lookupd`)
#   PORT_BASE  first of the ~60 loopback ports used (default 24150); every port must be free
#   KEEP_WORK  1: keep the temp directory (logs, data) even when every check passed
#
# Needs bash, curl, jq, python3 (for a small raw-TCP consumer that holds messages in flight).
# Scenarios:
#   A  ledgerq serve registers with a stock nsqlookupd
#   B  a stock nsqd registers with ledgerq lookupd
#   C  go-nsq consumer (nsq_tail) discovers two ledgerq nodes through ledgerq lookupd
#   D  go-nsq producer (to_nsq) publishes to a ledgerq node
#   E  stock nsqadmin reads and administers ledgerq (nsqd mode and lookupd mode)
# Prints PASS/FAIL per check and "N passed, N failed"; exits 1 if any check failed.
set -euo pipefail

: "${NSQ_BIN:?set NSQ_BIN to the directory of the stock NSQ binaries}"
: "${LEDGERQ:?set LEDGERQ to the ledgerq binary}"
PORT_BASE=${PORT_BASE:-24150}
for b in nsqd nsqlookupd nsqadmin nsq_tail to_nsq; do
  [[ -x "$NSQ_BIN/$b" ]] || { echo "missing $NSQ_BIN/$b" >&2; exit 2; }
done
[[ -x "$LEDGERQ" ]] || { echo "LEDGERQ=$LEDGERQ is not executable" >&2; exit 2; }
for t in curl jq python3 timeout; do command -v "$t" >/dev/null || { echo "needs $t" >&2; exit 2; }; done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/ledgerq-interop.XXXXXX")
PIDFILE=$WORK/pids
RESULTS=$WORK/results
: >"$PIDFILE"; : >"$RESULTS"
LAST=$WORK/last-response

# ---------------------------------------------------------------- process handling, cleanup
stop_all() {
  local pid name
  [[ -s $PIDFILE ]] || return 0
  while read -r pid name; do kill -TERM "$pid" 2>/dev/null || true; done <"$PIDFILE"
  local deadline=$((SECONDS + 10))
  while read -r pid name; do
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done <"$PIDFILE"
  : >"$PIDFILE"
}
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  stop_all
  if [[ ${KEEP_WORK:-0} == 1 ]] || grep -q FAIL "$RESULTS" 2>/dev/null; then
    echo "logs and data kept in $WORK"
  else
    rm -rf "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start NAME CMD...: runs CMD in the background, output in $WORK/<scenario>-NAME.log
start() {
  local name=$1; shift
  "$@" >"$WORK/$SCEN-$name.log" 2>&1 &
  echo "$! $name" >>"$PIDFILE"
}
pid_of() { awk -v n="$1" '$2 == n { p = $1 } END { print p }' "$PIDFILE"; }
# stop NAME: SIGTERM, then wait (deadline 10 s) for the exit; returns its exit status
stop() {
  local pid; pid=$(pid_of "$1")
  kill -TERM "$pid"
  local deadline=$((SECONDS + 10))
  while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
  wait "$pid"
}
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
datadir() { mktemp -d "$WORK/data.XXXXXX"; }

# ---------------------------------------------------------------- polling and assertions
# wait_for SECONDS CMD...: runs CMD every 0.1 s until it succeeds or the deadline passes
wait_for() {
  local deadline=$((SECONDS + $1)); shift
  until "$@"; do
    ((SECONDS < deadline)) || return 1
    sleep 0.1
  done
}
# jqe URL FILTER [jq args]: GET URL, true if the JSON reply satisfies FILTER (body kept in $LAST)
jqe() {
  local url=$1 filter=$2; shift 2
  curl -s --max-time 5 "$url" >"$LAST" || return 1
  jq -e "$@" "$filter" "$LAST" >/dev/null 2>&1
}
ok_ping() { [[ $(curl -s --max-time 2 "http://127.0.0.1:$1/ping") == OK ]]; }
http_post() { curl -sf --max-time 10 -X POST "$@" >/dev/null; }

# check DESCRIPTION CMD...: records one PASS or FAIL
check() {
  local desc=$1; shift
  : >"$LAST"
  if "$@"; then
    echo "PASS [$SCEN] $desc"; echo PASS >>"$RESULTS"
  else
    echo "FAIL [$SCEN] $desc"; echo FAIL >>"$RESULTS"
    [[ -s $LAST ]] && echo "      last response: $(head -c 600 "$LAST")"
  fi
  return 0
}
# eventually DESCRIPTION SECONDS CMD...: check that CMD becomes true within SECONDS
eventually() { local desc=$1 secs=$2; shift 2; check "$desc" wait_for "$secs" "$@"; }

# scenario ID TITLE FUNCTION: a setup error aborts the scenario (one FAIL); processes are stopped
scenario() {
  SCEN=$1
  echo "== $1: $2"
  set +e
  (set -e; "$3")
  local rc=$?
  set -e
  if ((rc != 0)); then
    echo "FAIL [$1] scenario aborted (setup step failed, exit $rc); logs in $WORK"
    echo FAIL >>"$RESULTS"
  fi
  stop_all
}

# ledgerq /stats helpers: lq_topic PORT TOPIC FILTER / lq_chan PORT TOPIC CHANNEL FILTER
lq_topic() { jqe "http://127.0.0.1:$1/stats?format=json&topic=$2" ".topics[0] | select(.topic_name == \"$2\") | $3" "${@:4}"; }
lq_chan() { jqe "http://127.0.0.1:$1/stats?format=json&topic=$2" ".topics[0].channels[] | select(.channel_name == \"$3\") | $4" "${@:5}"; }
lq_no_topic() { jqe "http://127.0.0.1:$1/stats?format=json&topic=$2" '.topics == null or .topics == []'; }
lq_no_chan() { jqe "http://127.0.0.1:$1/stats?format=json&topic=$2" "[.topics[0].channels[] | select(.channel_name == \"$3\")] | length == 0"; }

P=$PORT_BASE
for ((p = P; p < P + 60; p++)); do
  port_free "$p" || { echo "port $p is in use; choose another PORT_BASE" >&2; exit 2; }
done
echo "ledgerq: $("$LEDGERQ" --version 2>&1)   stock: $("$NSQ_BIN/nsqd" --version 2>&1)"
echo "work dir: $WORK"

# ---------------------------------------------------------------- A
scen_a() {
  local LQT=$((P + 0)) LQH=$((P + 1)) NLT=$((P + 2)) NLH=$((P + 3))
  local L=http://127.0.0.1:$NLH H=http://127.0.0.1:$LQH
  start nsqlookupd "$NSQ_BIN/nsqlookupd" --tcp-address=127.0.0.1:$NLT --http-address=127.0.0.1:$NLH \
    --broadcast-address=127.0.0.1
  wait_for 10 ok_ping $NLH
  start ledgerq "$LEDGERQ" serve --tcp-address=127.0.0.1:$LQT --http-address=127.0.0.1:$LQH \
    --broadcast-address=127.0.0.1 --lookupd-tcp-address=127.0.0.1:$NLT --data-path="$(datadir)"
  wait_for 20 ok_ping $LQH
  http_post "$H/topic/create?topic=a"
  http_post "$H/channel/create?topic=a&channel=c"
  http_post "$H/channel/create?topic=a&channel=e%23ephemeral"
  eventually "stock nsqlookupd /lookup?topic=a lists the ledgerq node (127.0.0.1, tcp $LQT, http $LQH) and channel c" 10 \
    jqe "$L/lookup?topic=a" '(.producers | length == 1) and (.producers[0] | .broadcast_address == "127.0.0.1" and .tcp_port == $t and .http_port == $h) and (.channels | index("c") != null)' \
    --argjson t $LQT --argjson h $LQH
  check "stock nsqlookupd /nodes lists the ledgerq node with topic a" \
    jqe "$L/nodes" '.producers | length == 1 and .[0].tcp_port == $t and .[0].http_port == $h and (.[0].topics | index("a") != null)' \
    --argjson t $LQT --argjson h $LQH
  http_post "$H/channel/delete?topic=a&channel=c"
  # a stock nsqlookupd keeps a non-ephemeral channel's name in /channels after its producers
  # UNREGISTER it (stock nsqd behaves the same); the UNREGISTER itself is in its log
  eventually "channel delete on ledgerq sends UNREGISTER a c to stock nsqlookupd (its log)" 10 \
    grep -q 'UNREGISTER category:channel key:a subkey:c' "$WORK/A-nsqlookupd.log"
  eventually "ephemeral channel e#ephemeral is listed by stock nsqlookupd /channels" 10 \
    jqe "$L/channels?topic=a" '.channels | index("e#ephemeral") != null'
  http_post "$H/channel/delete?topic=a&channel=e%23ephemeral"
  eventually "channel delete on ledgerq removes e#ephemeral from stock nsqlookupd /channels" 10 \
    jqe "$L/channels?topic=a" '.channels | index("e#ephemeral") == null'
  http_post "$H/topic/create?topic=a2"
  wait_for 10 jqe "$L/lookup?topic=a2" '.producers | length == 1'
  http_post "$H/topic/delete?topic=a2"
  eventually "topic delete on ledgerq removes it from stock nsqlookupd /lookup?topic=a2 producers" 10 \
    jqe "$L/lookup?topic=a2" '.producers == []'
  check "ledgerq exits 0 on SIGTERM" stop ledgerq
  eventually "after ledgerq stops, stock nsqlookupd /lookup?topic=a has no producers" 10 \
    jqe "$L/lookup?topic=a" '.producers == []'
  check "after ledgerq stops, stock nsqlookupd /nodes is empty" jqe "$L/nodes" '.producers == []'
}

# ---------------------------------------------------------------- B
scen_b() {
  local LLT=$((P + 10)) LLH=$((P + 11)) NDT=$((P + 12)) NDH=$((P + 13))
  local L=http://127.0.0.1:$LLH N=http://127.0.0.1:$NDH
  start ledgerq-lookupd "$LEDGERQ" lookupd --tcp-address=127.0.0.1:$LLT --http-address=127.0.0.1:$LLH \
    --broadcast-address=127.0.0.1
  wait_for 20 ok_ping $LLH
  start nsqd "$NSQ_BIN/nsqd" --tcp-address=127.0.0.1:$NDT --http-address=127.0.0.1:$NDH \
    --broadcast-address=127.0.0.1 --lookupd-tcp-address=127.0.0.1:$LLT --data-path="$(datadir)"
  wait_for 10 ok_ping $NDH
  curl -sf -d hello "$N/pub?topic=b" >/dev/null
  http_post "$N/channel/create?topic=b&channel=bc"
  eventually "ledgerq lookupd /lookup?topic=b lists the stock nsqd (127.0.0.1, tcp $NDT, http $NDH) and channel bc" 10 \
    jqe "$L/lookup?topic=b" '(.producers | length == 1) and (.producers[0] | .broadcast_address == "127.0.0.1" and .tcp_port == $t and .http_port == $h and .version == "1.3.0") and .channels == ["bc"]' \
    --argjson t $NDT --argjson h $NDH
  check "ledgerq lookupd /nodes lists the stock nsqd with topic b" \
    jqe "$L/nodes" '.producers | length == 1 and .[0].tcp_port == $t and .[0].topics == ["b"] and .[0].tombstones == [false]' \
    --argjson t $NDT
  check "ledgerq lookupd /topics lists b" jqe "$L/topics" '.topics | index("b") != null'
  check "ledgerq lookupd /channels?topic=b lists bc" jqe "$L/channels?topic=b" '.channels == ["bc"]'
  http_post "$N/channel/create?topic=b&channel=be%23ephemeral"
  eventually "ephemeral channel created on stock nsqd appears in ledgerq lookupd /channels" 10 \
    jqe "$L/channels?topic=b" '.channels | index("be#ephemeral") != null'
  http_post "$N/channel/delete?topic=b&channel=be%23ephemeral"
  eventually "ephemeral channel deleted on stock nsqd disappears from ledgerq lookupd /channels" 10 \
    jqe "$L/channels?topic=b" '.channels | index("be#ephemeral") == null'
  http_post "$N/channel/delete?topic=b&channel=bc"
  # as in stock nsqlookupd the name stays registered; its producer list empties (/debug)
  eventually "channel delete on stock nsqd unregisters the node from channel b/bc (ledgerq lookupd /debug)" 10 \
    jqe "$L/debug" '(.["channel:b:bc"] // []) | length == 0'
  http_post "$N/topic/delete?topic=b"
  eventually "topic delete on stock nsqd empties ledgerq lookupd /lookup?topic=b producers" 10 \
    jqe "$L/lookup?topic=b" '.producers == []'
  check "after topic delete, ledgerq lookupd /nodes shows the nsqd without topics" \
    jqe "$L/nodes" '.producers | length == 1 and .[0].topics == []'
  stop nsqd
  eventually "after stock nsqd stops, ledgerq lookupd /nodes is empty" 10 jqe "$L/nodes" '.producers == []'
}

# ---------------------------------------------------------------- C
scen_c() {
  local LLT=$((P + 20)) LLH=$((P + 21))
  local L=http://127.0.0.1:$LLH
  start ledgerq-lookupd "$LEDGERQ" lookupd --tcp-address=127.0.0.1:$LLT --http-address=127.0.0.1:$LLH \
    --broadcast-address=127.0.0.1
  wait_for 20 ok_ping $LLH
  local i j
  for i in 1 2; do
    start "ledgerq$i" "$LEDGERQ" serve --tcp-address=127.0.0.1:$((P + 22 + 2 * i)) \
      --http-address=127.0.0.1:$((P + 23 + 2 * i)) --broadcast-address=127.0.0.1 \
      --lookupd-tcp-address=127.0.0.1:$LLT --data-path="$(datadir)"
  done
  for i in 1 2; do wait_for 20 ok_ping $((P + 23 + 2 * i)); done
  : >"$WORK/c-expected"
  for i in 1 2; do
    for j in $(seq 1 50); do
      curl -sf -d "node$i-msg$j" "http://127.0.0.1:$((P + 23 + 2 * i))/pub?topic=spread" >/dev/null
      echo "node$i-msg$j" >>"$WORK/c-expected"
    done
  done
  eventually "ledgerq lookupd /lookup?topic=spread lists both ledgerq nodes" 10 \
    jqe "$L/lookup?topic=spread" '[.producers[].tcp_port] | sort == [$a, $b]' --argjson a $((P + 24)) --argjson b $((P + 26))
  timeout 60 "$NSQ_BIN/nsq_tail" --lookupd-http-address=127.0.0.1:$LLH --topic=spread --n=100 \
    >"$WORK/c-tail.out" 2>"$WORK/c-tail.err" || true
  check "nsq_tail via ledgerq lookupd printed exactly the 100 published bodies" \
    cmp -s <(sort "$WORK/c-expected") <(sort "$WORK/c-tail.out")
  check "nsq_tail connected to both nodes" \
    test "$(grep -c 'connecting to nsqd' "$WORK/c-tail.err")" -ge 2
  for i in 1 2; do
    check "node $i: channel of nsq_tail got all 50 messages (message_count 50) and the topic is drained" \
      lq_topic $((P + 23 + 2 * i)) spread '.message_count == 50 and .depth == 0'
  done
  eventually "nsq_tail's ephemeral channel is gone from ledgerq lookupd /channels after it exits" 10 \
    jqe "$L/channels?topic=spread" '.channels == []'
}

# ---------------------------------------------------------------- D
scen_d() {
  local T=$((P + 30)) H=$((P + 31))
  start ledgerq "$LEDGERQ" serve --tcp-address=127.0.0.1:$T --http-address=127.0.0.1:$H \
    --broadcast-address=127.0.0.1 --data-path="$(datadir)"
  wait_for 20 ok_ping $H
  seq 1 100 | sed 's/^/line-/' >"$WORK/d-lines"
  check "to_nsq exits 0 after writing 100 lines" \
    timeout 30 "$NSQ_BIN/to_nsq" --nsqd-tcp-address=127.0.0.1:$T --topic=lines <"$WORK/d-lines" >"$WORK/to_nsq.log" 2>&1
  eventually "ledgerq /stats: topic lines message_count 100, depth 100" 10 \
    lq_topic $H lines '.message_count == 100 and .depth == 100 and .message_bytes == $b' \
    --argjson b "$(tr -d '\n' <"$WORK/d-lines" | wc -c)"
  timeout 30 "$NSQ_BIN/nsq_tail" --nsqd-tcp-address=127.0.0.1:$T --topic=lines --channel=check --n=100 \
    >"$WORK/d-tail.out" 2>"$WORK/d-tail.err" || true
  check "the 100 lines read back with nsq_tail are the ones to_nsq sent" \
    cmp -s <(sort "$WORK/d-lines") <(sort "$WORK/d-tail.out")
}

# ---------------------------------------------------------------- E
write_holder() {
  # A raw NSQ-protocol consumer (not NSQ code): IDENTIFY with msg_timeout, SUB, RDY n; once n
  # messages arrived, RDY 0 and REQ the first `req` of them with `req_delay`; never FINs.
  cat >"$WORK/holder.py" <<'EOF'
import json, socket, struct, sys
host, port = sys.argv[1].split(":"); topic, channel = sys.argv[2], sys.argv[3]
msg_timeout, rdy, nreq, req_delay = (int(x) for x in sys.argv[4:8])
s = socket.create_connection((host, int(port)))
s.sendall(b"  V2")
def send(cmd, body=None):
    s.sendall(cmd.encode() + b"\n" + (struct.pack(">I", len(body)) + body if body is not None else b""))
def recv(n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c: sys.exit(0)
        b += c
    return b
def frame():
    size, = struct.unpack(">I", recv(4)); data = recv(size)
    return struct.unpack(">I", data[:4])[0], data[4:]
send("IDENTIFY", json.dumps({"client_id": "holder-" + channel, "hostname": "holder",
                             "user_agent": "interop-holder/1.0", "msg_timeout": msg_timeout}).encode())
frame()
send("SUB %s %s" % (topic, channel)); t, d = frame(); assert d == b"OK", d
send("RDY %d" % rdy); ids = []
while True:
    t, d = frame()
    if t == 0 and d == b"_heartbeat_": send("NOP"); continue
    if t == 2:
        ids.append(d[10:26].decode())
        if len(ids) == rdy:
            send("RDY 0")
            for mid in ids[:nreq]: send("REQ %s %d" % (mid, req_delay))
EOF
}

# admin METHOD PATH [JSON]: an nsqadmin API call as its web UI makes it; true if 200 and message ""
admin() {
  local method=$1 path=$2 body=${3:-}
  local args=(-s --max-time 10 -o "$LAST" -w '%{http_code}' -X "$method" -H 'Content-Type: application/json')
  [[ -n $body ]] && args+=(-d "$body")
  [[ $(curl "${args[@]}" "$ADMIN$path") == 200 ]] && jq -e '.message == ""' "$LAST" >/dev/null
}
api() { jqe "$ADMIN$1" "(.message == \"\") and ($2)" "${@:3}"; }

scen_e() {
  local LLT=$((P + 40)) LLH=$((P + 41)) A1=$((P + 46)) A2=$((P + 47))
  local T1=$((P + 42)) H1=$((P + 43)) T2=$((P + 44)) H2=$((P + 45))
  write_holder
  start ledgerq-lookupd "$LEDGERQ" lookupd --tcp-address=127.0.0.1:$LLT --http-address=127.0.0.1:$LLH \
    --broadcast-address=127.0.0.1
  wait_for 20 ok_ping $LLH
  start ledgerq1 "$LEDGERQ" serve --tcp-address=127.0.0.1:$T1 --http-address=127.0.0.1:$H1 \
    --broadcast-address=127.0.0.1 --lookupd-tcp-address=127.0.0.1:$LLT --data-path="$(datadir)"
  start ledgerq2 "$LEDGERQ" serve --tcp-address=127.0.0.1:$T2 --http-address=127.0.0.1:$H2 \
    --broadcast-address=127.0.0.1 --lookupd-tcp-address=127.0.0.1:$LLT --data-path="$(datadir)"
  wait_for 20 ok_ping $H1; wait_for 20 ok_ping $H2
  start nsqadmin-nsqd "$NSQ_BIN/nsqadmin" --http-address=127.0.0.1:$A1 --nsqd-http-address=127.0.0.1:$H1
  start nsqadmin-lookupd "$NSQ_BIN/nsqadmin" --http-address=127.0.0.1:$A2 --lookupd-http-address=127.0.0.1:$LLH
  wait_for 10 ok_ping $A1; wait_for 10 ok_ping $A2

  # --- E1: nsqadmin --nsqd-http-address=<ledgerq node 1>, topic t on node 1
  local N1=http://127.0.0.1:$H1 j c
  http_post "$N1/topic/create?topic=t"
  for c in c_tail c_hold c_to c_idle; do http_post "$N1/channel/create?topic=t&channel=$c"; done
  for j in $(seq 1 10); do curl -sf -d "t-msg$j" "$N1/pub?topic=t" >/dev/null; done
  curl -sf -d deferred "$N1/pub?topic=t&defer=600000" >/dev/null
  start tail-c_tail "$NSQ_BIN/nsq_tail" --nsqd-tcp-address=127.0.0.1:$T1 --topic=t --channel=c_tail
  start holder-c_hold python3 "$WORK/holder.py" 127.0.0.1:$T1 t c_hold 600000 3 1 600000
  start holder-c_to python3 "$WORK/holder.py" 127.0.0.1:$T1 t c_to 1000 1 0 0
  # ready: c_tail drained, c_hold: 2 in flight + 1 requeued (deferred), c_to: 1 timeout
  wait_for 20 lq_chan $H1 t c_tail '.depth == 0 and .client_count == 1'
  wait_for 20 lq_chan $H1 t c_hold '.in_flight_count == 2 and .requeue_count == 1'
  wait_for 20 lq_chan $H1 t c_to '.timeout_count >= 1'
  SCEN=E1; ADMIN=http://127.0.0.1:$A1
  check "GET /api/topics lists t" api /api/topics '.topics | index("t") != null'
  check "GET /api/topics/t: message_count 11, depth 0, 4 channels, 1 node" \
    api /api/topics/t '.message_count == 11 and .depth == 0 and (.channels | length == 4) and (.nodes | length == 1)'
  check "GET /api/topics/t: c_tail depth 0 deferred 1 clients 1; c_idle depth 10 deferred 1" \
    api /api/topics/t '[.channels[] | select(.channel_name == "c_tail")][0] as $a | [.channels[] | select(.channel_name == "c_idle")][0] as $b | $a.depth == 0 and $a.deferred_count == 1 and $a.client_count == 1 and $b.depth == 10 and $b.deferred_count == 1 and $b.client_count == 0'
  check "GET /api/topics/t/c_hold: depth 7, in_flight 2, deferred 2, requeue 1, message_count 11, 1 client" \
    api /api/topics/t/c_hold '.depth == 7 and .in_flight_count == 2 and .deferred_count == 2 and .requeue_count == 1 and .message_count == 11 and .client_count == 1'
  check "GET /api/topics/t/c_hold: client holder-c_hold with in_flight 2, requeue 1, message_count 3, ready 0" \
    api /api/topics/t/c_hold '.clients | length == 1 and .[0].client_id == "holder-c_hold" and .[0].in_flight_count == 2 and .[0].requeue_count == 1 and .[0].message_count == 3 and .[0].ready_count == 0 and .[0].user_agent == "interop-holder/1.0"'
  check "GET /api/topics/t/c_to: timeout_count >= 1, depth 10, in_flight 0" \
    api /api/topics/t/c_to '.timeout_count >= 1 and .depth == 10 and .in_flight_count == 0'
  check "GET /api/topics/t/c_tail: nsq_tail client (go-nsq user agent) finished 10" \
    api /api/topics/t/c_tail '.clients | length == 1 and (.[0].user_agent | test("go-nsq")) and .[0].finish_count == 10'
  check "GET /api/nodes: the ledgerq node (127.0.0.1, tcp $T1, http $H1, not out of date) with topic t" \
    api /api/nodes '.nodes | length == 1 and .[0].broadcast_address == "127.0.0.1" and .[0].tcp_port == $t and .[0].http_port == $h and .[0].out_of_date == false and ([.[0].topics[].topic] | index("t") != null)' \
    --argjson t $T1 --argjson h $H1
  check "GET /api/nodes/127.0.0.1:$H1: total_messages 11, total_clients 3, topic t with 4 channels" \
    api "/api/nodes/127.0.0.1:$H1" '.total_messages == 11 and .total_clients == 3 and ([.topics[] | select(.topic_name == "t")][0].channels | length == 4)'

  check "POST /api/topics/t {action:pause}" admin POST /api/topics/t '{"action":"pause"}'
  eventually "  -> ledgerq topic t paused" 5 lq_topic $H1 t '.paused == true'
  curl -sf -d p1 "$N1/pub?topic=t" >/dev/null; curl -sf -d p2 "$N1/pub?topic=t" >/dev/null
  eventually "  -> messages published while paused wait in the topic (depth 2)" 5 lq_topic $H1 t '.depth == 2'
  check "GET /api/topics/t shows paused and depth 2" api /api/topics/t '.paused == true and .depth == 2'
  check "POST /api/topics/t {action:empty}" admin POST /api/topics/t '{"action":"empty"}'
  eventually "  -> ledgerq topic t depth 0, channels keep theirs (c_idle depth 10)" 5 \
    jqe "$N1/stats?format=json&topic=t" '.topics[0].depth == 0 and ([.topics[0].channels[] | select(.channel_name == "c_idle")][0].depth == 10)'
  check "POST /api/topics/t {action:unpause}" admin POST /api/topics/t '{"action":"unpause"}'
  eventually "  -> ledgerq topic t not paused" 5 lq_topic $H1 t '.paused == false'
  check "POST /api/topics/t/c_idle {action:pause}" admin POST /api/topics/t/c_idle '{"action":"pause"}'
  eventually "  -> ledgerq channel c_idle paused" 5 lq_chan $H1 t c_idle '.paused == true'
  check "GET /api/topics/t/c_idle shows paused" api /api/topics/t/c_idle '.paused == true'
  check "POST /api/topics/t/c_idle {action:unpause}" admin POST /api/topics/t/c_idle '{"action":"unpause"}'
  eventually "  -> ledgerq channel c_idle not paused" 5 lq_chan $H1 t c_idle '.paused == false'
  check "POST /api/topics/t/c_hold {action:empty}" admin POST /api/topics/t/c_hold '{"action":"empty"}'
  eventually "  -> ledgerq c_hold depth 0, in_flight 0, deferred 0, consumer still subscribed" 5 \
    lq_chan $H1 t c_hold '.depth == 0 and .in_flight_count == 0 and .deferred_count == 0 and .client_count == 1'
  check "DELETE /api/topics/t/c_idle" admin DELETE /api/topics/t/c_idle
  eventually "  -> ledgerq channel c_idle gone" 5 lq_no_chan $H1 t c_idle
  check "DELETE /api/topics/t" admin DELETE /api/topics/t
  eventually "  -> ledgerq topic t gone" 5 lq_no_topic $H1 t

  stop tail-c_tail || true   # go-nsq would reconnect in 60 s and SUB would create t again

  # --- E2: nsqadmin --lookupd-http-address=<ledgerq lookupd>, topic u on both nodes
  SCEN=E2; ADMIN=http://127.0.0.1:$A2
  local i H
  for i in 1 2; do
    H=http://127.0.0.1:$((P + 41 + 2 * i))
    http_post "$H/topic/create?topic=u"; http_post "$H/channel/create?topic=u&channel=uc"
    for j in $(seq 1 $((3 * i))); do curl -sf -d "u$i-$j" "$H/pub?topic=u" >/dev/null; done
    curl -sf -d deferred "$H/pub?topic=u&defer=600000" >/dev/null
    http_post "$H/topic/create?topic=v"
  done
  wait_for 10 jqe "http://127.0.0.1:$LLH/lookup?topic=u" '(.producers | length == 2) and .channels == ["uc"]'
  wait_for 10 jqe "http://127.0.0.1:$LLH/lookup?topic=v" '.producers | length == 2'
  check "GET /api/topics lists u and v" api /api/topics '(.topics | index("u") != null) and (.topics | index("v") != null)'
  check "GET /api/topics/u: message_count 11 over 2 nodes (4 + 7)" \
    api /api/topics/u '.message_count == 11 and ([.nodes[] | .message_count] | sort == [4, 7])'
  check "GET /api/topics/u/uc: depth 9, deferred 2, in_flight 0, message_count 11, 2 nodes" \
    api /api/topics/u/uc '.depth == 9 and .deferred_count == 2 and .in_flight_count == 0 and .message_count == 11 and (.nodes | length == 2)'
  check "GET /api/nodes: both ledgerq nodes with their ports, 1 lookupd connection each" \
    api /api/nodes '([.nodes[] | [.tcp_port, .http_port]] | sort == [[$t1, $h1], [$t2, $h2]]) and all(.nodes[]; (.remote_addresses | length) == 1 and .out_of_date == false)' \
    --argjson t1 $T1 --argjson h1 $H1 --argjson t2 $T2 --argjson h2 $H2
  check "GET /api/nodes/127.0.0.1:$H2: topics u and v, total_messages 7" \
    api "/api/nodes/127.0.0.1:$H2" '([.topics[].topic_name] | sort == ["u", "v"]) and .total_messages == 7'
  check "POST /api/topics/u {action:pause}" admin POST /api/topics/u '{"action":"pause"}'
  eventually "  -> topic u paused on both nodes" 5 eval 'lq_topic $H1 u ".paused == true" && lq_topic $H2 u ".paused == true"'
  check "POST /api/topics/u {action:unpause}" admin POST /api/topics/u '{"action":"unpause"}'
  eventually "  -> topic u unpaused on both nodes" 5 eval 'lq_topic $H1 u ".paused == false" && lq_topic $H2 u ".paused == false"'
  check "POST /api/topics/u/uc {action:pause}" admin POST /api/topics/u/uc '{"action":"pause"}'
  eventually "  -> channel uc paused on both nodes" 5 eval 'lq_chan $H1 u uc ".paused == true" && lq_chan $H2 u uc ".paused == true"'
  check "POST /api/topics/u/uc {action:unpause}" admin POST /api/topics/u/uc '{"action":"unpause"}'
  eventually "  -> channel uc unpaused on both nodes" 5 eval 'lq_chan $H1 u uc ".paused == false" && lq_chan $H2 u uc ".paused == false"'
  check "POST /api/topics/u/uc {action:empty}" admin POST /api/topics/u/uc '{"action":"empty"}'
  eventually "  -> channel uc depth 0, deferred 0 on both nodes" 5 \
    eval 'lq_chan $H1 u uc ".depth == 0 and .deferred_count == 0" && lq_chan $H2 u uc ".depth == 0 and .deferred_count == 0"'
  check "DELETE /api/topics/u/uc" admin DELETE /api/topics/u/uc
  eventually "  -> channel uc gone from both nodes and from ledgerq lookupd /channels" 5 \
    eval 'lq_no_chan $H1 u uc && lq_no_chan $H2 u uc && jqe "http://127.0.0.1:$LLH/channels?topic=u" ".channels == []"'
  check "DELETE /api/topics/u" admin DELETE /api/topics/u
  eventually "  -> topic u gone from both nodes and from ledgerq lookupd /topics" 5 \
    eval 'lq_no_topic $H1 u && lq_no_topic $H2 u && jqe "http://127.0.0.1:$LLH/topics" ".topics | index(\"u\") == null"'
  check "DELETE /api/nodes/127.0.0.1:$H2 {topic:v} (tombstone topic v on node 2)" \
    admin DELETE "/api/nodes/127.0.0.1:$H2" '{"topic":"v"}'
  eventually "  -> ledgerq lookupd /lookup?topic=v lists only node 1; v deleted on node 2" 5 \
    eval 'jqe "http://127.0.0.1:$LLH/lookup?topic=v" "[.producers[].tcp_port] == [$T1]" && lq_no_topic $H2 v'
  check "nsqadmin logged no upstream errors" eval '! grep -E "ERROR|WARN" "$WORK"/E-nsqadmin-*.log'
}

scenario A "ledgerq serve registers with a stock nsqlookupd" scen_a
scenario B "a stock nsqd registers with ledgerq lookupd" scen_b
scenario C "nsq_tail (go-nsq) finds two ledgerq nodes through ledgerq lookupd" scen_c
scenario D "to_nsq (go-nsq producer) publishes to ledgerq" scen_d
scenario E "stock nsqadmin on ledgerq (E1: --nsqd-http-address, E2: --lookupd-http-address)" scen_e

passed=$(grep -c PASS "$RESULTS" || true)
failed=$(grep -c FAIL "$RESULTS" || true)
echo "$passed passed, $failed failed"
((failed == 0))
