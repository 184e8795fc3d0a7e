# radd images, built from this repository (`docker build .` gives the default, last stage).
#
#   radd      (default) debian:12.11-slim + radd at /usr/local/bin/radd, non-root user `radd`
#             (uid 10001); ENTRYPOINT radd, CMD daemon. For hosts that need no PostgreSQL server
#             binaries: file-tree backups, verification, restores of file trees.
#   postgres  postgres:15.18-bookworm + radd: the archiving PostgreSQL of docker-compose.yml
#             (archive_command = radd wal-push %p, run as the image's postgres user, uid 999),
#             and the compose demo's daemon, which reads that cluster's data directory (so it runs
#             as the same uid) and needs initdb/pg_ctl/postgres 15 for restore drills.
#
# Base images are pinned to exact versions; rust matches the toolchain radd is developed and
# tested with (rustc 1.95.0). tests/deploy.rs checks that every FROM is pinned.

FROM rust:1.95.0-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin radd \
    && install -D -m 0755 target/release/radd /out/radd

# The archiving PostgreSQL (and the compose demo's daemon). The directories radd writes are
# created owned by postgres: a new named volume mounted on them starts with this ownership, so
# keys written there are created by, and readable only by, the user that uses them.
FROM postgres:15.18-bookworm AS postgres
COPY --from=build /out/radd /usr/local/bin/radd
RUN install -d -o postgres -g postgres -m 0755 /etc/radd \
    && install -d -o postgres -g postgres -m 0700 /etc/radd-identity /var/lib/radd /var/tmp/radd-drills

# Default image: radd alone, as an unprivileged user.
FROM debian:12.11-slim AS radd
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 radd \
    && useradd --system --uid 10001 --gid radd --home-dir /var/lib/radd --shell /usr/sbin/nologin radd \
    && install -d -o radd -g radd -m 0755 /etc/radd \
    && install -d -o radd -g radd -m 0700 /var/lib/radd /var/tmp/radd-drills
COPY --from=build /out/radd /usr/local/bin/radd
USER radd
WORKDIR /var/lib/radd
ENTRYPOINT ["radd"]
CMD ["daemon"]
