#!/usr/bin/env bash
# The main job of README.md: build mycel, pull the default model on first run, start a local devnet
# of three nodes on loopback, and answer a chat query through the network:
#   node a  serves the model (smollm2-135m-instruct),
#   node b  and node c serve nothing and forward queries to a over libp2p.
# The query goes to node b's OpenAI-compatible endpoint; the answer says which node served it.
# The devnet then keeps running until Ctrl-C (or exits at once with --once).
#
#   bash scripts/run.sh [--once] [--model ID]
#
# Environment: MYCEL_DEVNET_DIR (default ~/.cache/mycel/devnet) keeps data dirs and the model cache
# between runs; CARGO_TARGET_DIR as usual.
set -euo pipefail
cd "$(dirname "$0")/.."

once=false
model=smollm2-135m-instruct
while [ $# -gt 0 ]; do
  case "$1" in
    --once) once=true ;;
    --model) model="$2"; shift ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/mycel/target}"
devnet="${MYCEL_DEVNET_DIR:-$HOME/.cache/mycel/devnet}"
mkdir -p "$devnet"

echo "== building mycel-node and mycel (first build takes a while)"
cargo build --locked -p mycel-node -p mycel-wallet
bin="$CARGO_TARGET_DIR/debug"

echo "== model $model (downloaded and verified on first run)"
"$bin/mycel-node" --data-dir "$devnet/a" model pull "$model"

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

start_node() { # name http-port extra-args…
  local name="$1" port="$2"; shift 2
  rm -f "$devnet/$name/node.json"
  "$bin/mycel-node" --data-dir "$devnet/$name" up --no-mdns \
    --listen /ip4/127.0.0.1/tcp/0 --http "127.0.0.1:$port" "$@" >"$devnet/$name.log" 2>&1 &
  pids+=("$!")
  for _ in $(seq 1 600); do
    [ -s "$devnet/$name/node.json" ] && return 0
    if ! kill -0 "${pids[-1]}" 2>/dev/null; then
      echo "node $name exited; its log:" >&2; cat "$devnet/$name.log" >&2; exit 1
    fi
    sleep 0.2
  done
  echo "node $name did not come up; its log:" >&2; cat "$devnet/$name.log" >&2; exit 1
}

p2p_addr() { # first listen multiaddr (with /p2p/) from node.json
  python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["listen_addrs"][0])' "$1/node.json"
}

echo "== starting node a (serves $model)"
start_node a 7401 --model "$model"
boot="$(p2p_addr "$devnet/a")"
echo "== starting nodes b and c (no model; bootstrap $boot)"
start_node b 7402 --no-model --bootstrap "$boot"
start_node c 7403 --no-model --bootstrap "$boot"
sleep 1

echo "== asking node b (which has no model) through its OpenAI-compatible API"
curl -sS --fail-with-body http://127.0.0.1:7402/v1/chat/completions \
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
echo "== asking node c with the wallet CLI (streams the answer as it is generated)"
"$bin/mycel" --rpc http://127.0.0.1:7403 chat --max-tokens 48 "Name three colors."

cat <<TXT

The devnet is up (logs and data in $devnet):
  node a  http://127.0.0.1:7401  serves $model
  node b  http://127.0.0.1:7402  forwards over libp2p
  node c  http://127.0.0.1:7403  forwards over libp2p
Try:
  $bin/mycel --rpc http://127.0.0.1:7402 chat            # interactive
  $bin/mycel --rpc http://127.0.0.1:7402 node status
  curl -N http://127.0.0.1:7403/v1/chat/completions -H 'content-type: application/json' \\
    -d '{"model":"$model","stream":true,"messages":[{"role":"user","content":"Tell me a joke"}]}'
  curl http://127.0.0.1:7402/ -H 'content-type: application/json' \\
    -d '{"jsonrpc":"2.0","id":1,"method":"mycel_nodeInfo","params":[]}'
TXT
if $once; then exit 0; fi
echo "Press Ctrl-C to stop the devnet."
wait
