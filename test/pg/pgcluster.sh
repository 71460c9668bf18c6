#!/bin/sh
# pgcluster.sh: a throw-away PostgreSQL cluster for tests (start DIR / stop DIR / uri DIR).
#
# start DIR: initdb in DIR/data as an unprivileged user (PostgreSQL refuses root: "nobody"
# when run as root, else the caller), password authentication (scram-sha-256) for role
# tpad, database tpad, a Unix socket in DIR and 127.0.0.1 on a free port,
# synchronous_commit=on, fsync on. Prints the libpq URI; the password is in DIR/password
# (mode 0600, owned by the caller). stop DIR: fast shutdown (the directory is left to the
# caller). With PGCLUSTER_SSL=1 the server also speaks TLS with a certificate for localhost
# and 127.0.0.1 from a CA of its own (DIR/ca.crt). Exit status non-zero with a reason on
# stderr if anything fails.
set -eu

bindir=
for d in "${PG_BINDIR:-}" /usr/lib/postgresql/15/bin /usr/lib/postgresql/*/bin; do
	[ -n "$d" ] && [ -x "$d/initdb" ] && { bindir=$d; break; }
done
[ -n "$bindir" ] || { echo "pgcluster: initdb not found (install postgresql)" >&2; exit 2; }

cmd=${1:-}
dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: pgcluster.sh start|stop|uri DIR" >&2; exit 2; }

as_owner() {
	if [ "$(id -u)" -eq 0 ]; then
		runuser -u nobody -- "$@"
	else
		"$@"
	fi
}

free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

uri() {
	port=$(cat "$dir/port")
	echo "postgresql://tpad@/tpad?host=$dir&port=$port"
}

case $cmd in
start)
	mkdir -p "$dir"
	dir=$(cd "$dir" && pwd)
	umask 077
	python3 -c 'import secrets; print(secrets.token_hex(16))' >"$dir/password"
	free_port >"$dir/port"
	mkdir "$dir/data"
	if [ "$(id -u)" -eq 0 ]; then
		chown nobody "$dir" "$dir/data"
		chmod 0755 "$dir"
		cp "$dir/password" "$dir/.pw"
		chown nobody "$dir/.pw"
	else
		cp "$dir/password" "$dir/.pw"
	fi
	as_owner "$bindir/initdb" -D "$dir/data" -U tpad -A scram-sha-256 \
		--pwfile="$dir/.pw" -E UTF8 --no-locale >"$dir/initdb.log" 2>&1 ||
		{ cat "$dir/initdb.log" >&2; exit 1; }
	rm -f "$dir/.pw"
	if [ "${PGCLUSTER_SSL:-0}" = 1 ]; then
		# TLS with a CA of its own: DIR/ca.crt verifies the server as localhost/127.0.0.1.
		openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=tpad test CA" \
			-keyout "$dir/ca.key" -out "$dir/ca.crt" >/dev/null 2>&1
		openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
			-keyout "$dir/data/server.key" -out "$dir/server.csr" >/dev/null 2>&1
		printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >"$dir/san.ext"
		openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" \
			-CAcreateserial -days 2 -extfile "$dir/san.ext" \
			-out "$dir/data/server.crt" >/dev/null 2>&1
		chmod 0644 "$dir/ca.crt"
		[ "$(id -u)" -eq 0 ] && chown nobody "$dir/data/server.key" "$dir/data/server.crt"
		printf "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n" \
			>>"$dir/data/postgresql.conf"
	fi
	cat >>"$dir/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $(cat "$dir/port")
unix_socket_directories = '$dir'
synchronous_commit = on
fsync = on
max_connections = 100
shared_buffers = 32MB
logging_collector = off
CONF
	as_owner "$bindir/pg_ctl" -D "$dir/data" -l "$dir/data/server.log" -w -t 30 start \
		>/dev/null || { cat "$dir/data/server.log" >&2; exit 1; }
	PGPASSWORD=$(cat "$dir/password") "$bindir/psql" -q -h "$dir" -p "$(cat "$dir/port")" \
		-U tpad -d postgres -c "CREATE DATABASE tpad" >/dev/null
	uri
	;;
stop)
	[ -d "$dir/data" ] || exit 0
	as_owner "$bindir/pg_ctl" -D "$dir/data" -m fast -w -t 30 stop >/dev/null 2>&1 || true
	;;
kill)
	# Stop at once without a checkpoint, as on a crash of the database host.
	as_owner "$bindir/pg_ctl" -D "$dir/data" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
	;;
restart)
	as_owner "$bindir/pg_ctl" -D "$dir/data" -l "$dir/data/server.log" -w -t 30 start \
		>/dev/null || { cat "$dir/data/server.log" >&2; exit 1; }
	;;
uri)
	uri
	;;
*)
	echo "pgcluster: unknown command $cmd" >&2
	exit 2
	;;
esac
