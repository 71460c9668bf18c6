#!/usr/bin/env bash
# check.sh: model-check the exactly-once rules with Spin, and show that the checks can fail:
# each mutant breaks one rule and Spin must find a counterexample for it.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
passed=0 failed=0

# run NAME EXPECT(pass|fail) MODE(safety|liveness) [spin -D options...]
run() {
	local name=$1 expect=$2 mode=$3
	shift 3
	rm -f pan pan.* ./*.trail
	spin "$@" -a "$model" >spin.out 2>&1 || { cat spin.out; echo "not ok $name: spin failed"; failed=$((failed + 1)); return; }
	local out
	if [ "$mode" = safety ]; then
		gcc -O2 -w -DSAFETY -DNOCLAIM -DCOLLAPSE -o pan pan.c
		out=$(./pan -m2000000 2>&1)
	else
		gcc -O2 -w -DNFAIR=4 -o pan pan.c
		out=$(./pan -a -f -m2000000 2>&1)
	fi
	local errors states
	errors=$(sed -n 's/.*errors: \([0-9]*\).*/\1/p' <<<"$out" | head -1)
	states=$(sed -n 's/^ *\([0-9.e+]*\) states, stored.*/\1/p' <<<"$out" | head -1)
	if grep -q 'Search not completed' <<<"$out" && [ "$errors" = 0 ]; then
		echo "not ok $name: the search did not complete"; failed=$((failed + 1)); return
	fi
	if { [ "$expect" = pass ] && [ "$errors" = 0 ]; } || { [ "$expect" = fail ] && [ "${errors:-0}" != 0 ]; }; then
		local what
		what=
		[ "$expect" = fail ] &&
			what=$(grep -m1 -E '^pan:1: (assertion violated|acceptance cycle|invalid end state)' <<<"$out" || true)
		echo "ok $name ($mode, $states states${what:+: $what})"
		passed=$((passed + 1))
	else
		echo "$out" | head -20
		echo "not ok $name: expected the check to $expect, errors: ${errors:-?}"
		failed=$((failed + 1))
	fi
}

# tpad (activation.pml). The rules as built: safety with every fault bound at 2, liveness
# with bounds of 1.
model=$here/activation.pml
run "rules hold: no duplicate, tokens are the cloud's, FAILED means not imported" pass safety
run "rules hold: no row stays PENDING with a reachable cloud" pass liveness \
	-DMAXLOSS=1 -DMAXREFUSE=1 -DMAXQFAIL=1
# Each mutant breaks one rule; Spin must find the counterexample.
run "mutant 1 (not-found trusted at once) is caught" fail safety -DMUTANT=1
run "mutant 2 (a 409 adopted whatever its origin) is caught" fail safety -DMUTANT=2
run "mutant 3 (attempt recorded after sending) is caught" fail safety -DMUTANT=3
run "mutant 4 (PENDING settled only by a new request) is caught" fail liveness -DMUTANT=4 \
	-DMAXLOSS=1 -DMAXREFUSE=1 -DMAXQFAIL=2
run "mutant 5 (an import that left taken for never sent) is caught" fail safety -DMUTANT=5
# tpas (tpas.pml): uplinks, the stream and downlinks, with two crashes, a lost answer and a
# resend while the first request is handled.
model=$here/tpas.pml
run "tpas rules hold: each 200 journaled under its seq, once, handed to the application once, no FCntDn twice" pass safety
run "tpas mutant 1 (200 before the commit) is caught" fail safety -DMUTANT=1
run "tpas mutant 2 (no unique index: replays found only in memory) is caught" fail safety -DMUTANT=2
run "tpas mutant 3 (downlink sent before its FCntDn is committed) is caught" fail safety -DMUTANT=3
run "tpas mutant 4 (streams told before the commit) is caught" fail safety -DMUTANT=4
run "tpas mutant 15 (a device's later downlink posted before an earlier one) is caught" fail \
	safety -DMUTANT=15
run "tpas mutant 6 (a session per AppSKey field, not per key) is caught" fail safety -DMUTANT=6 \
	-DMAXCRASH=1
run "tpas mutant 12 (uplink_seen not filled at open: the recent set lost at a crash) is caught" \
	fail safety -DMUTANT=12
run "tpas mutant 13 (a failed batch's uplinks kept in the recent set) is caught" fail safety \
	-DMUTANT=13
run "tpas mutant 14 (a session's highest FCntUp not raised by an insert) is caught" fail safety \
	-DMUTANT=14
# The recent set dropped while moves fail (one crash, a smaller state space).
run "tpas rules hold with the recent set dropped while moves fail" pass safety -DDROP -DMAXCRASH=1
run "tpas mutant 16 (the dropped set still trusted) is caught" fail safety -DDROP -DMAXCRASH=1 \
	-DMUTANT=16
# With the LRC's FCntDn in every uplink (a larger state space: one crash).
run "tpas rules hold with the LRC's FCntDn in uplinks" pass safety -DREPORT -DPLAINKEY -DMAXFAIL=0 -DMAXCRASH=1
run "tpas mutant 5 (the counter set to the LRC's FCntDn, not raised to it) is caught" fail \
	safety -DREPORT -DPLAINKEY -DMAXFAIL=0 -DMAXCRASH=1 -DMUTANT=5
# tpas's session of an uplink (session.pml): a rejoin, POSTs delayed across it, a crash, a
# lost answer and resends while an earlier POST is out. An uplink without the AppSKey field
# is refused (503) when no session had begun by its frame or the session's DevAddr is not
# its own; a session begins at the earliest frame of its committed uplinks with the key.
model=$here/session.pml
run "tpas session rule holds with the LRC's order: each uplink journaled once, under its own session" \
	pass safety -DNF=2
run "tpas session rule holds with POSTs in any order (EARLY), each uplink answered 200 in the end" \
	pass safety -DNF=2 -DEARLY -DMAXDUP=1
run "tpas session rule holds with POSTs in any order, three uplinks a session (one crash)" pass \
	safety -DNF=3 -DEARLY -DMAXDUP=0 -DMAXLOSS=0
run "tpas session rule holds with the old DevAddr after the rejoin, the old session's POSTs in any order" \
	pass safety -DNF=2 -DSAMEADDR -DEARLYOLD -DMAXDUP=1
run "known limit: the old DevAddr after the rejoin and POSTs in any order (SAMEADDR) fails" fail \
	safety -DNF=2 -DSAMEADDR -DEARLY -DMAXDUP=1
run "tpas mutant 7 (an uplink without the AppSKey field takes the newest session) is caught" fail \
	safety -DNF=2 -DMUTANT=7
run "tpas mutant 8 (a session begun when tpas got its key, not at its frame's time) is caught" fail \
	safety -DNF=2 -DMUTANT=8
run "tpas mutant 9 (no DevAddr check) is caught" fail safety -DNF=2 -DEARLY -DMAXDUP=1 -DMUTANT=9
run "tpas mutant 10 (no session begun by the frame: the newest taken) is caught" fail safety \
	-DNF=2 -DSAMEADDR -DEARLYOLD -DMAXDUP=1 -DMUTANT=10
run "tpas mutant 11 (a session never begins earlier than its first key's frame) is caught" fail \
	safety -DNF=3 -DEARLY -DMAXDUP=0 -DMAXLOSS=0 -DMUTANT=11
# tpas's journal seq counter and retention (retention.pml): the host's clock stepping back,
# removals emptying the table, a webhook or a resuming stream.
model=$here/retention.pml
run "tpas retention holds: no seq given twice, old rows only, one run of seqs left, the webhook gets every seq" \
	pass safety
run "tpas mutant 17 (the table emptied, no uplink_seq written) is caught" fail safety -DMUTANT=17
run "tpas mutant 18 (every old row removed wherever it is, as schema 3's index did) is caught" \
	fail safety -DMUTANT=18
run "tpas mutant 19 (the webhook's cursor not honoured) is caught" fail safety -DMUTANT=19
echo "model: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
