#!/bin/sh
# Run one libFuzzer target briefly: new inputs go to a build-dir corpus, seeds are read only.
set -eu
exe=$1 work=$2 seeds=$3
mkdir -p "$work"
# Third-party caches that the per-input leak check would count (see lsan.supp).
LSAN_OPTIONS="${LSAN_OPTIONS:+$LSAN_OPTIONS:}suppressions=$(cd "$(dirname "$0")" && pwd)/lsan.supp"
export LSAN_OPTIONS
# -error_exitcode: libFuzzer's default, 77, would read as "skipped" to meson.
exec "$exe" -max_total_time="${FUZZ_SECONDS:-10}" -rss_limit_mb=2048 -timeout=5 -error_exitcode=1 \
	-print_final_stats=1 "$work" "$seeds"
