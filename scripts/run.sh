#!/usr/bin/env bash
# The main job of README.md: build mycel, pull the default model on first run, start a local devnet
# (`mycel-node devnet`: three nodes on loopback with a generated genesis and a funded wallet), answer
# chat queries through the network and show the credits they moved:
#   node-0  a gateway: serves no model, forwards queries over libp2p and pays for them from its account,
#   node-1  and node-2 serve the model and earn what node-0 pays.
# The devnet then keeps running until Ctrl-C (or stops at once with --once).
#
#   bash scripts/run.sh [--once] [--model ID] [--nodes N]
#
# Environment: MYCEL_DEVNET_DIR (default ~/.cache/mycel/devnet) keeps keys, genesis, ledgers and the
# model cache between runs; CARGO_TARGET_DIR as usual.
set -euo pipefail
cd "$(dirname "$0")/.."

once=false
model=smollm2-135m-instruct
nodes=3
while [ $# -gt 0 ]; do
  case "$1" in
    --once) once=true ;;
    --model) model="$2"; shift ;;
    --nodes) nodes="$2"; shift ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/mycel/target}"
dir="${MYCEL_DEVNET_DIR:-$HOME/.cache/mycel/devnet}"
mkdir -p "$dir"

echo "== building mycel-node and mycel (the first build takes a while)"
cargo build --locked -p mycel-node -p mycel-wallet
bin="$CARGO_TARGET_DIR/debug"

echo "== model $model (downloaded and verified on the first run, then cached)"
"$bin/mycel-node" --data-dir "$dir" model pull "$model"

echo "== starting the devnet ($nodes nodes) in $dir"
rm -f "$dir/devnet.json"
"$bin/mycel-node" -q devnet --nodes "$nodes" --dir "$dir" --model "$model" >"$dir/devnet.log" 2>&1 &
devnet_pid=$!
stop() { kill -TERM "$devnet_pid" 2>/dev/null || true; wait "$devnet_pid" 2>/dev/null || true; }
trap stop EXIT INT TERM
for _ in $(seq 1 600); do
  [ -s "$dir/devnet.json" ] && break
  if ! kill -0 "$devnet_pid" 2>/dev/null; then
    echo "the devnet exited; its log:" >&2; cat "$dir/devnet.log" >&2; exit 1
  fi
  sleep 0.2
done
[ -s "$dir/devnet.json" ] || { echo "the devnet did not come up; its log:" >&2; cat "$dir/devnet.log" >&2; exit 1; }
sed -n '/^devnet:/,/^written:/p' "$dir/devnet.log"

field() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2], {}, {"d": d}))' "$dir/devnet.json" "$1"; }
gw_rpc="$(field 'd["nodes"][0]["rpc"]')"
gw_did="$(field 'd["nodes"][0]["did"]')"
home="$(field 'd["wallet"]["home"]')"
pwfile="$(field 'd["wallet"]["password_file"]')"
wallet=("$bin/mycel" --rpc "$gw_rpc" --home "$home" --password-file "$pwfile")

# Peers learn each other's models from heartbeats (every 2 s here).
for _ in $(seq 1 50); do
  curl -sf "$gw_rpc/v1/models" | grep -q "\"$model\"" && break
  sleep 0.2
done

echo
echo "== the gateway's balance before (it pays for the queries it forwards)"
"${wallet[@]}" balance "$gw_did"

echo
echo "== asking the gateway through its OpenAI-compatible API (another node runs the model)"
curl -sS --fail-with-body "$gw_rpc/v1/chat/completions" \
  -H 'content-type: application/json' \
  -d "{\"model\":\"$model\",\"messages\":[{\"role\":\"user\",\"content\":\"What is the capital of France? Answer in one word.\"}],\"max_tokens\":48,\"temperature\":0}" \
  | python3 -c '
import json, sys
r = json.load(sys.stdin)
print("answer:   ", r["choices"][0]["message"]["content"].strip())
print("served by:", r.get("mycel", {}).get("served_by", "?"))
print("usage:    ", r["usage"])
'

echo
echo "== asking again with the wallet CLI (streams the answer as it is generated)"
"$bin/mycel" --rpc "$gw_rpc" chat --model "$model" --max-tokens 48 "Name three colors."

echo
echo "== the wallet tops up the gateway with 5 credits (signed locally, confirmed by the nodes' votes)"
"${wallet[@]}" send "$gw_did" 5

echo
echo "== credits moved: escrows, claims and refunds confirm within seconds"
sleep 4
"${wallet[@]}" history "$gw_did" --limit 8
echo
for i in $(seq 0 $((nodes - 1))); do
  did="$(field "d['nodes'][$i]['did']")"
  printf '%s  ' "node-$i"
  "${wallet[@]}" --json balance "$did" \
    | python3 -c 'import json,sys; d=json.load(sys.stdin)["data"]; print("liquid", d["liquid"]["credits"], " bonded", d["bonded"]["credits"])'
done

cat <<TXT

The devnet is up ($dir/devnet.json describes it; log in $dir/devnet.log). Try:
  $bin/mycel --rpc $gw_rpc chat                      # interactive
  ${wallet[*]} balance
  curl -N $gw_rpc/v1/chat/completions -H 'content-type: application/json' \\
    -d '{"model":"$model","stream":true,"messages":[{"role":"user","content":"Tell me a joke"}]}'
  curl $gw_rpc/ -H 'content-type: application/json' -d '{"jsonrpc":"2.0","id":1,"method":"ledger_info"}'
TXT
if $once; then exit 0; fi
echo "Press Ctrl-C to stop the devnet."
wait "$devnet_pid"
