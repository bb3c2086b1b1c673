#!/usr/bin/env bash
# The demo: a fleet of one on this machine. Starts `dockfleet dev` (server,
# embedded store and a local agent in one process), applies
# examples/hello/deployment.yaml, waits until the instance is healthy, shows
# it and asks it for its version, then rolls out hello:v2 and shows the
# rollout history. KEEP=1 leaves the fleet running afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=./bin/dockfleet
dir=${DEMO_DIR:-$(mktemp -d /tmp/dockfleet-demo.XXXXXX)}
api=${DEMO_API_ADDR:-127.0.0.1:7400}
agents=${DEMO_AGENT_ADDR:-127.0.0.1:7401}

"$bin" dev --data-dir "$dir" --api-addr "$api" --agent-addr "$agents" >"$dir/dev.log" 2>&1 &
dev=$!
cleanup() {
	if [ "${KEEP:-0}" = 1 ]; then
		echo
		echo "The fleet keeps running (pid $dev, log $dir/dev.log). Try:"
		echo "  export DOCKFLEET_ADDR=https://$api DOCKFLEET_CACERT=$dir/ca.crt DOCKFLEET_TOKEN_FILE=$dir/admin.token"
		echo "  $bin nodes; $bin describe deployment hello"
		echo "Stop it with: kill $dev"
		return
	fi
	"$bin" delete deployment hello >/dev/null 2>&1 || true
	sleep 2 # let the agent remove the container
	kill "$dev" 2>/dev/null || true
	wait "$dev" 2>/dev/null || true
}
trap cleanup EXIT

export DOCKFLEET_ADDR="https://$api" DOCKFLEET_CACERT="$dir/ca.crt" DOCKFLEET_TOKEN_FILE="$dir/admin.token"

echo "==> dockfleet dev (data in $dir)"
for _ in $(seq 100); do
	if [ -f "$dir/admin.token" ] && "$bin" nodes 2>/dev/null | grep -q ready; then break; fi
	if ! kill -0 "$dev" 2>/dev/null; then cat "$dir/dev.log"; exit 1; fi
	sleep 0.2
done
"$bin" nodes

echo
echo "==> dockfleet apply -f examples/hello/deployment.yaml --wait"
"$bin" apply -f examples/hello/deployment.yaml --wait --timeout 2m

echo
echo "==> waiting until hello is healthy"
for i in $(seq 60); do
	if "$bin" get instances -o json | grep -q '"state": "healthy"'; then break; fi
	if [ "$i" = 60 ]; then echo "hello did not become healthy:"; "$bin" describe deployment hello; exit 1; fi
	sleep 0.5
done
"$bin" get instances
echo
"$bin" describe deployment hello

ask_version() {
	cid=$("$bin" get instances -o json | sed -n 's/.*"containerId": "\([0-9a-f]*\)".*/\1/p' | head -1)
	ip=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$cid")
	echo
	echo "==> the hello container at $ip answers:"
	curl -fsS "http://$ip:8080/version" && echo
}
ask_version

echo
echo "==> rolling out hello:v2 (health-gated batches; apply --wait follows the rollout)"
sed 's/hello:v1/hello:v2/' examples/hello/deployment.yaml | "$bin" apply -f - --wait --timeout 2m
"$bin" rollout history hello
ask_version
