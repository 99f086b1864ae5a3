#!/usr/bin/env bash
# make fleet-nats: bench/fleet against a three-node nats-server cluster (-broker nats), N
# sites (100 by default), one node killed and restarted mid-run. The result goes to
# bench/report/recorded/fleet-nats.md and into docs/BENCHMARKS.md (scripts/record.sh).
# FLEET_LOG=info puts every site's connects and disconnects on stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
n=${1:-100}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
set +e
$GO run ./bench/fleet -broker nats -n "$n" | tee "$out"
rc=${PIPESTATUS[0]}
set -e
verdict="0 seqs missing"
[ "$rc" = 0 ] || verdict="FAILED: $(grep -E '^fleet failed: ' "$out" | tail -1 || echo "exit status $rc")"
{
	echo "## Fleet on a NATS cluster"
	echo
	echo "\`make fleet-nats N=$n\` at $(bash scripts/commitref.sh), $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores: $verdict."
	echo
	echo "bench/fleet with \`-broker nats\`: $n whole sites in one process (as in *Fleet* above, plus an"
	echo "inlet over its rule's threshold 20 s of every minute, so incidents flow too) against three"
	echo "nats-server nodes in one cluster, each with JetStream (its own store dir) and MQTT on its own"
	echo "port (\`stream_replicas: 3\`). Site i lists all three nodes starting at node i mod 3; the"
	echo "watcher (persistent session, QoS 1) lists nodes 2 and 3. Once all are online node 1 is"
	echo "SIGKILLed: *failover* is every site's fresh \`online\` (its ts: when the site got its CONNACK) from the kill until none"
	echo "has come for 10 s. The node is started again (same store) then: *return* is the same from"
	echo "its start, until the sites that list it first are back on it (the uplink probes earlier"
	echo "brokers every 30 s) and none has come for 10 s. Then every site"
	echo "stops and the seqs the watcher saw are checked against each site's database, a lost"
	echo "tail counted as missing (as *Fleet* does)."
	echo
	echo '```'
	grep -vE '^\s*$' "$out"
	echo '```'
	echo
	cat bench/fleet/nats-notes.md
} >bench/report/recorded/fleet-nats.md
bash scripts/record.sh fleet-nats
exit "$rc"
