# A small non-root image holding `mover`: the controller, the mover Jobs and the CLI.
#   docker build -t mover:dev .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin mover

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/mover /usr/local/bin/mover
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/mover"]
