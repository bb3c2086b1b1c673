#!/usr/bin/env bash
# fuzz-one.sh DIR TARGET FUZZTIME: fuzz one target. Go 1.26's fuzzing
# coordinator can report a bare "context deadline exceeded" when -fuzztime
# ends while a worker is mid-run, with no failing input (golang/go#75804,
# fixed in Go 1.27). Such a run is tried once more; any other failure, and a
# second one, fails.
set -uo pipefail
dir=$1 target=$2 fuzztime=$3
for attempt in 1 2; do
	out=$(${GO:-go} test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" "$dir" 2>&1)
	status=$?
	printf '%s\n' "$out"
	if [ "$status" -eq 0 ]; then
		exit 0
	fi
	if [ "$attempt" -eq 1 ] && grep -q 'context deadline exceeded' <<<"$out" && ! grep -q 'Failing input written' <<<"$out"; then
		echo "fuzz-one: $target stopped at its -fuzztime boundary with no failing input (golang/go#75804); trying once more"
		continue
	fi
	exit "$status"
done
