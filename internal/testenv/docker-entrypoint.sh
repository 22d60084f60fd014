#!/bin/sh
# The entrypoint of orphanwatch's PostgreSQL test images, after the official
# postgres image's docker-entrypoint.sh: as root it prepares the directories
# and re-executes itself as postgres (same pid); initdb on the first start;
# then it execs the postmaster, which thereby becomes PID 1 of the container
# (unless docker run --init), logging to stderr, i.e. to docker logs.
set -eu

if [ "${1:-}" = postgres ] && [ "$(id -u)" = 0 ]; then
	mkdir -p "$PGDATA" /var/run/postgresql
	chown postgres:postgres "$PGDATA" /var/run/postgresql
	chmod 700 "$PGDATA"
	chmod 2775 /var/run/postgresql
	exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

if [ "${1:-}" = postgres ]; then
	if [ ! -s "$PGDATA/PG_VERSION" ]; then
		initdb -D "$PGDATA" -U postgres -A trust --no-sync >/dev/null
		# Unix socket only, in the directory Debian's psql uses by default.
		cat >>"$PGDATA/postgresql.conf" <<-EOF
			listen_addresses = ''
			unix_socket_directories = '/var/run/postgresql'
		EOF
	fi
	# A helper the entrypoint starts before it execs the server, as
	# entrypoints that start a background job do: the postmaster inherits it
	# as a child it never forked.
	if [ -n "${OW_ENTRYPOINT_HELPER:-}" ]; then
		sh -c "$OW_ENTRYPOINT_HELPER" &
	fi
fi

exec "$@"
