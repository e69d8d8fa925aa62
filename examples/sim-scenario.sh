#!/usr/bin/env bash
# hexidian by hand against its simulators: `hexidian run` with examples/hexidian.toml pointed at
# guru3-sim, omm-axi-sim and a throwaway PostgreSQL; an extension created in GURU3, a new
# handset subscribing, its token call made with curl, and the handset bound. Each step prints
# what it does and what the peers show; README.md "Trying it by hand" walks through it.
#
#   examples/sim-scenario.sh            # builds the four binaries (debug) first
#
# Settings (all optional):
#   HEXIDIAN_BIN_DIR       where hexidian, hexidian-demo, guru3-sim, omm-axi-sim are (no build)
#   HEXIDIAN_ADMIN         hexidian's admin listener   (default 127.0.0.1:9464)
#   HEXIDIAN_WEBHOOK       its token-call webhook      (default 127.0.0.1:4242)
#   HEXIDIAN_SCENARIO_DIR  where configs and logs go   (default: a new temporary directory)
#   KEEP=1                 keep everything running at the end until Ctrl-C
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bin=${HEXIDIAN_BIN_DIR:-}
if [ -z "$bin" ]; then
  echo "building hexidian, hexidian-demo, guru3-sim and omm-axi-sim ..."
  (cd "$root" && cargo build -q --locked -p hexidian -p hexidian-demo -p guru3-sim -p omm-axi-sim)
  bin=$root/target/debug
fi
admin=${HEXIDIAN_ADMIN:-127.0.0.1:9464}
webhook=${HEXIDIAN_WEBHOOK:-127.0.0.1:4242}
work=${HEXIDIAN_SCENARIO_DIR:-$(mktemp -d)}
mkdir -p "$work"

guru3() { "$bin/guru3-sim" ctl "$@"; }
omm() { "$bin/omm-axi-sim" ctl "$@"; }
step() { printf '\n== %s\n' "$*"; }
# `show COMMAND…`: prints the command as typed by hand, then runs it
show() {
  local shown=("$@")
  case $1 in
    guru3) shown=(guru3-sim ctl "${@:2}") ;;
    omm) shown=(omm-axi-sim ctl "${@:2}") ;;
    "$bin"/*) shown=("${1##*/}" "${@:2}") ;;
  esac
  printf '$'
  printf ' %q' "${shown[@]}"
  printf '\n'
  "$@"
}

pids=()
finish() {
  local rc=$?
  if [ "$rc" != 0 ]; then
    echo "FAILED (exit $rc); logs in $work:" >&2
    tail -n 20 "$work"/*.log >&2 || true
  fi
  [ ${#pids[@]} -gt 0 ] && kill "${pids[@]}" 2>/dev/null
  wait 2>/dev/null || true
}
trap finish EXIT

# `until_true SECONDS WHAT COMMAND…`: runs COMMAND until it succeeds, at most SECONDS
until_true() {
  local limit=$1 what=$2 t=0
  shift 2
  until "$@" >/dev/null 2>&1; do
    t=$((t + 1))
    if [ "$t" -gt $((limit * 5)) ]; then
      echo "gave up after ${limit} s waiting for: $what" >&2
      return 1
    fi
    sleep 0.2
  done
}

step "1. the GURU3 and OMM simulators and a throwaway PostgreSQL"
"$bin/guru3-sim" --env-file "$work/guru3.env" >"$work/guru3.log" 2>&1 &
pids+=($!)
"$bin/omm-axi-sim" --env-file "$work/omm.env" >"$work/omm.log" 2>&1 &
pids+=($!)
"$bin/hexidian-demo" --database-only --env-file "$work/db.env" >"$work/db.log" 2>&1 &
pids+=($!)
for f in guru3 omm db; do
  until_true 60 "$f to start (see $work/$f.log)" test -s "$work/$f.env"
  # shellcheck disable=SC1090
  . "$work/$f.env"
done
cat "$work/guru3.log" "$work/omm.log" "$work/db.log"

step "2. examples/hexidian.toml pointed at them"
printf '%s' "$OMM_AXI_SIM_PASSWORD" >"$work/omm-password"
sed -e "s|^url = \"https://guru3.example.org\"|url = \"$GURU3_SIM_URL\"|" \
  -e "s|^# ca_file = \"/etc/hexidian/guru3-ca.pem\".*|ca_file = \"$GURU3_SIM_CA\"|" \
  -e "s|^host = \"10.0.0.2\"|host = \"$OMM_AXI_SIM_HOST\"|" \
  -e "s|^# port = 12622|port = $OMM_AXI_SIM_PORT|" \
  -e "s|^user = \"hexidian\"|user = \"$OMM_AXI_SIM_USER\"|" \
  -e "s|^password_file = .*|password_file = \"$work/omm-password\"|" \
  -e "s|^fingerprints = .*|fingerprints = [\"$OMM_AXI_SIM_FINGERPRINT\"]|" \
  -e "s|^url = \"host=/run/postgresql.*|url = \"$HEXIDIAN_DEMO_PG_URL\"|" \
  -e "s|^listen = \"127.0.0.1:9464\".*|listen = \"$admin\"|" \
  -e "s|^listen = \"10.21.42.11:4242\".*|listen = \"$webhook\"|" \
  "$root/examples/hexidian.toml" >"$work/hexidian.toml"
for want in "url = \"$GURU3_SIM_URL\"" "ca_file = \"$GURU3_SIM_CA\"" \
  "host = \"$OMM_AXI_SIM_HOST\"" "port = $OMM_AXI_SIM_PORT" "user = \"$OMM_AXI_SIM_USER\"" \
  "password_file = \"$work/omm-password\"" "fingerprints = [\"$OMM_AXI_SIM_FINGERPRINT\"]" \
  "url = \"$HEXIDIAN_DEMO_PG_URL\"" "listen = \"$admin\"" "listen = \"$webhook\""; do
  if ! grep -qxF "$want" "$work/hexidian.toml"; then
    echo "examples/hexidian.toml changed shape: no line $want after the edits" >&2
    exit 1
  fi
done
diff "$root/examples/hexidian.toml" "$work/hexidian.toml" | grep '^>' || true

step "3. hexidian run"
export HEXIDIAN_GURU3_KEY=$GURU3_SIM_KEY
export HEXIDIAN_WEBHOOK_KEY=scenario-webhook-key
"$bin/hexidian" run --config "$work/hexidian.toml" >"$work/hexidian.log" 2>&1 &
pids+=($!)
until_true 60 "hexidian to be ready (see $work/hexidian.log)" \
  "$bin/hexidian" status --config "$work/hexidian.toml"
show "$bin/hexidian" status --config "$work/hexidian.toml"

step "4. a person creates the DECT extension 4711 in GURU3"
show guru3 create 4711 --type DECT --name "Ada Lovelace" --location "Hall 2"
token=$(guru3 --get /token show 4711)
echo "its token: $token"
# (a function: its condition is asked again each time, not once)
drained() { [ "$(guru3 --get /pending queue)" = 0 ]; }
if ! until_true 30 "GURU3's queue to drain" drained; then
  guru3 queue >&2 || true
  "$bin/hexidian" status --config "$work/hexidian.toml" >&2 || true
  exit 1
fi
uid=$(omm --get /uid number 4711)
echo "hexidian created OMM user $uid for it (\`omm-axi-sim ctl number 4711\` shows all of it):"
for field in name num hierarchy1 relType; do
  echo "  $field: $(omm --get /$field number 4711)"
done

step "5. a new handset subscribes (the OMM creates devices for the system's code)"
show omm subscription --auto-create true
ipei="03074 0220259 3"
ppn=$(omm --get /ppn subscribe "$ipei")
echo "device $ppn; hexidian gives it a temporary user:"
temp_uid() { local u; u=$(omm --get /uid device "$ppn") && [ "$u" != 0 ] && echo "$u"; }
until_true 30 "a temporary user for the handset" temp_uid
temp=$(omm --get /num user "$(temp_uid)")
echo "the handset rings as $temp"

step "6. it dials 9955 + the token: Asterisk's token call, made here with curl"
body="{\"callerid\":\"$temp\",\"token\":\"$token\"}"
echo "\$ curl -H 'Content-Type: application/json' -H 'X-Hexidian-Key: …' -d '$body' http://$webhook/token-call"
answer=$(curl -sS --max-time 10 -H 'Content-Type: application/json' \
  -H "X-Hexidian-Key: $HEXIDIAN_WEBHOOK_KEY" -d "$body" "http://$webhook/token-call")
echo "hexidian answers: $answer"
[ "$answer" = OK ]

step "7. the handset is bound to 4711, and GURU3 is told"
bound() { [ "$(omm --get /uid device "$ppn")" = "$uid" ]; }
until_true 30 "the handset bound to user $uid" bound
for field in ipei uid relType uak; do
  echo "  device $ppn $field: $(omm --get /$field device "$ppn")"
done
told() { guru3 inbound | grep -q '"status": "OK"'; }
until_true 30 "GURU3 to hear ASSIGN_HANDSET" told
show guru3 inbound
show guru3 --get /handset/ipei show 4711
echo
echo "scenario complete: handset $ipei is extension 4711"

if [ "${KEEP:-}" = 1 ]; then
  step "everything keeps running until Ctrl-C (status page http://$admin/)"
  echo "  export GURU3_SIM_CONTROL=$GURU3_SIM_CONTROL OMM_AXI_SIM_CONTROL=$OMM_AXI_SIM_CONTROL"
  wait
fi
