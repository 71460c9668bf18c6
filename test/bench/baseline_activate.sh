#!/bin/bash
# baseline_activate.sh: what a line admin would script without tpad, timed per device.
#
# stunnel4 runs as the TLS-PSK client in front of the ThingPark Activation endpoint; each
# device is one curl POST of the import JSON through stunnel's plain local port (so one new
# TCP and TLS connection per device), the ownerToken is taken from the answer, and one
# qrencode call writes the TR005 label as PNG. Prints one JSON line:
# {"devices","ok","seconds","rate","p50_ms","p90_ms","max_ms","failed"}.
#
# usage: baseline_activate.sh --upstream HOST:PORT --identity ID --psk-file FILE
#                             --listen-port PORT --count N [--start HEX] [--out DIR]
#                             [--join-eui HEX] [--no-resume]
# stunnel resumes TLS sessions by default (one round trip less per device); --no-resume sets
# sessionResume = no, so every device pays the full handshake.
# The PSK file holds the key as hex (at least 32 digits, as stunnel requires).
set -euo pipefail

upstream= identity= psk_file= listen_port= count= out= start=70B3D5E000000000
join_eui=0000000000000000 resume=yes
while [ $# -gt 0 ]; do
	case "$1" in
	--upstream) upstream=$2; shift 2 ;;
	--identity) identity=$2; shift 2 ;;
	--psk-file) psk_file=$2; shift 2 ;;
	--listen-port) listen_port=$2; shift 2 ;;
	--count) count=$2; shift 2 ;;
	--start) start=$2; shift 2 ;;
	--out) out=$2; shift 2 ;;
	--join-eui) join_eui=$2; shift 2 ;;
	--no-resume) resume=no; shift ;;
	*) echo "baseline_activate.sh: unknown argument $1" >&2; exit 2 ;;
	esac
done
if [ -z "$upstream" ] || [ -z "$identity" ] || [ -z "$psk_file" ] || [ -z "$listen_port" ] ||
	[ -z "$count" ]; then
	sed -n '/^# usage:/,/^# The PSK/p' "$0" | sed 's/^# //' >&2
	exit 2
fi
out=${out:-$(mktemp -d)}
mkdir -p "$out/labels"

# stunnel's configuration: client mode, PSK only, TLS 1.2 as the cloud speaks it.
umask 077
printf '%s:%s\n' "$identity" "$(tr -d ' \n' <"$psk_file")" >"$out/psk.txt"
cat >"$out/stunnel.conf" <<EOF
foreground = yes
pid =
output = $out/stunnel.log
debug = warning
[tpa]
client = yes
accept = 127.0.0.1:$listen_port
connect = $upstream
PSKsecrets = $out/psk.txt
PSKidentity = $identity
ciphers = PSK
sslVersionMax = TLSv1.2
sessionResume = $resume
EOF
stunnel4 "$out/stunnel.conf" &
stunnel_pid=$!
trap 'kill "$stunnel_pid" 2>/dev/null; wait "$stunnel_pid" 2>/dev/null || true' EXIT
for _ in $(seq 100); do
	if [ -n "$(ss -Hltn "sport = :$listen_port")" ]; then
		break
	fi
	sleep 0.05
done

# CRC-16/MODBUS of $1, as 4 upper-case hex digits in $crc (TR005 checksum).
# Assignments use c=$((...)): a bare ((expr)) whose value is 0 returns status 1, which
# set -e takes for a failure.
crc16() {
	local s=$1 c=$((0xFFFF)) i j b
	for ((i = 0; i < ${#s}; i++)); do
		printf -v b '%d' "'${s:i:1}"
		c=$((c ^ b))
		for ((j = 0; j < 8; j++)); do
			if ((c & 1)); then c=$(((c >> 1) ^ 0xA001)); else c=$((c >> 1)); fi
		done
	done
	printf -v crc '%04X' "$c"
}

url="http://127.0.0.1:$listen_port/maker/latest/api/factoryDevices"
ok=0 failed=0
lat=()
t0=$EPOCHREALTIME
for ((n = 0; n < count; n++)); do
	ts=$EPOCHREALTIME
	printf -v dev '%016X' $((0x$start + n))
	tkm="3111$dev"
	resp=$(curl -sS -X POST -H 'Content-Type: application/json' \
		--data "{\"deviceEUI\":\"$dev\",\"joinEUI\":\"$join_eui\",\"tkmInfo\":\"$tkm\"}" \
		"$url") || resp=
	if [[ $resp =~ \"ownerToken\":\"([0-9A-Fa-f]+)\" ]]; then
		token=${BASH_REMATCH[1]^^}
		text="LW:D0:$join_eui:$dev:00000000:O$token"
		crc16 "$text"
		qrencode -l M -s 4 -m 4 -o "$out/labels/$dev.png" "$text:C$crc"
		ok=$((ok + 1))
	else
		failed=$((failed + 1))
		echo "baseline: $dev: no ownerToken in: $resp" >&2
	fi
	te=$EPOCHREALTIME
	lat+=("$((${te/./} - ${ts/./}))")
done
t1=$EPOCHREALTIME

# Results: microsecond arithmetic on $EPOCHREALTIME, percentiles by nearest rank.
us=$((${t1/./} - ${t0/./}))
mapfile -t sorted < <(printf '%s\n' "${lat[@]}" | sort -n)
pct() {
	local r=$((($1 * ${#sorted[@]} + 99) / 100))
	((r < 1)) && r=1
	printf '%d.%03d' $((sorted[r - 1] / 1000)) $((sorted[r - 1] % 1000))
}
printf '{"devices":%d,"ok":%d,"failed":%d,"seconds":%d.%06d,"rate":%s,"p50_ms":%s,"p90_ms":%s,"max_ms":%s,"labels":"%s"}\n' \
	"$count" "$ok" "$failed" $((us / 1000000)) $((us % 1000000)) \
	"$(awk -v n="$ok" -v us="$us" 'BEGIN { printf "%.1f", n * 1e6 / us }')" \
	"$(pct 50)" "$(pct 90)" "$(pct 100)" "$out/labels"
