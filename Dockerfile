# Ferry: a federation-only Matrix homeserver.
#
#   docker build -t ferry --build-arg VERSION=$(git describe --tags --always --dirty) .
#   docker run -d --name ferry -p 8448:8448 -v ferry:/data \
#     -e FERRY_SERVER_NAME=example.org ferry
#
# Configuration comes from FERRY_* environment variables, or from
# /data/ferry.toml if present (the working directory is /data). See
# docs/deployment.md and docs/configuration.md. config/deploy_test.go
# checks this file's invariants in CI, where Docker cannot run.

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
# CGO_ENABLED=0: a static binary (SQLite is modernc.org/sqlite, pure Go),
# so the runtime image needs no libc. .ci/run builds with the same flags
# and prints the size: the image is that binary plus the CA bundle.
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/ferry ./cmd/ferry \
 && mkdir -p /out/data /out/tmp \
 && chmod 1777 /out/tmp \
 && cp /etc/ssl/certs/ca-certificates.crt /out/ca-certificates.crt

# scratch: the binary, the CA certificates Go reads for outbound TLS, an
# empty /data owned by the server's user and a /tmp; nothing else (no
# shell, no package manager).
FROM scratch
COPY --from=build /out/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/tmp /tmp
COPY --from=build /out/ferry /usr/local/bin/ferry
COPY --from=build --chown=65532:65532 /out/data /data
# A numeric, non-root user: there is no /etc/passwd to name one in.
USER 65532:65532
WORKDIR /data
# The signing key (signing.key), the database and the generated TLS
# certificate live here: keep it on a volume and back it up.
VOLUME /data
# PATH lets `docker exec <container> ferry ...` run the CLI verbs.
ENV PATH=/usr/local/bin \
    FERRY_DATA_DIR=/data \
    FERRY_FEDERATION_LISTEN=0.0.0.0:8448 \
    FERRY_LOG_FORMAT=json
# The host API stays on the container's loopback (127.0.0.1:8009) unless
# configured: to reach it from outside set FERRY_HOST_LISTEN=0.0.0.0:8009
# and FERRY_HOST_TOKEN, and publish 8009. The health check below probes it
# from inside the container either way.
EXPOSE 8448
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/ferry", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/ferry"]
CMD ["serve"]
