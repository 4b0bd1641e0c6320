# Ferry: a federation-only Matrix homeserver.
#
#   docker build -t ferry .
#   docker run -d --name ferry -p 8448:8448 -v ferry-data:/data \
#     -e FERRY_SERVER_NAME=matrix.example.org ferry
#
# Configuration comes from FERRY_* environment variables (see README.md),
# or from /data/ferry.toml if present (the working directory is /data).

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
# CGO_ENABLED=0: a static binary (SQLite is modernc.org/sqlite, pure Go),
# so the runtime image needs no libc.
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/ferry ./cmd/ferry \
 && mkdir -p /out/data

# distroless/static: CA certificates for outbound TLS and a non-root user
# (uid 65532), nothing else.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/ferry /usr/local/bin/ferry
COPY --from=build --chown=65532:65532 /out/data /data
USER 65532:65532
WORKDIR /data
VOLUME /data
ENV FERRY_DATA_DIR=/data \
    FERRY_FEDERATION_LISTEN=0.0.0.0:8448 \
    FERRY_LOG_FORMAT=json
# The host API stays on the container's loopback unless configured:
# to reach it from outside set FERRY_HOST_LISTEN=0.0.0.0:8009 and
# FERRY_HOST_TOKEN, and publish 8009.
EXPOSE 8448
ENTRYPOINT ["/usr/local/bin/ferry"]
CMD ["serve"]
