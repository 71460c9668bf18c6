#!/bin/sh
# Run one libFuzzer target briefly: new inputs go to a build-dir corpus, seeds are read only.
set -eu
exe=$1 work=$2 seeds=$3
mkdir -p "$work"
# Third-party caches that the per-input leak check would count (see lsan.supp).
LSAN_OPTIONS="${LSAN_OPTIONS:+$LSAN_OPTIONS:}suppressions=$(cd "$(dirname "$0")" && pwd)/lsan.supp"
export LSAN_OPTIONS
# A target's dictionary, if it has one (test/fuzz/<target>.dict): the tokens of its format.
dict="$(cd "$(dirname "$0")" && pwd)/$(basename "$exe").dict"
if [ -f "$dict" ]; then set -- -dict="$dict"; else set --; fi
# -error_exitcode: libFuzzer's default, 77, would read as "skipped" to meson.
exec "$exe" -max_total_time="${FUZZ_SECONDS:-10}" -rss_limit_mb=2048 -timeout=5 -error_exitcode=1 \
	-print_final_stats=1 "$@" "$work" "$seeds"
