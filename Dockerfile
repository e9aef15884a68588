# The mover image: the controller, the mover Jobs, the CLI, and VolSync's restic mover entry
# point (/mover-restic/entry.sh runs `mover volsync "$@"`), so the same image serves mover's
# own CRs and drops into VolSync in place of its restic mover.
#   docker build -t mover:dev .
# Alpine's Rust targets musl, whose binaries are static by default, so the final stage needs no
# C library of its own; it keeps a shell (busybox) for the entry script and the CA bundle.
FROM docker.io/library/rust:1.95-alpine AS build
RUN apk add --no-cache musl-dev
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin mover \
 && install -D -m 0755 target/release/mover /out/mover

FROM docker.io/library/alpine:3.22
RUN apk add --no-cache ca-certificates
COPY --from=build /out/mover /usr/local/bin/mover
COPY --chmod=0755 deploy/image/mover-restic/entry.sh /mover-restic/entry.sh
# Non-root by default; VolSync runs privileged movers as uid 0 itself.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/mover"]
