# fusou-proxy container image: a static binary on a distroless base, running as non-root.
#
#   docker build -t fusou-proxy .
#   docker run -d --name fusou-proxy -p 127.0.0.1:8050:8050 -v fusou-data:/data fusou-proxy
#   docker exec fusou-proxy fusou-proxy ca export > fusou-ca.pem
#   docker exec -i fusou-proxy fusou-proxy session set < session.json
#
# The proxy listens on 0.0.0.0:8050 inside the container (publish it on the host's loopback
# as above); the control endpoint stays on the container's own loopback, reached with
# `docker exec`. Everything the proxy keeps (CA, control token, pending uploads) is in /data.

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/fusou-proxy ./cmd/fusou-proxy \
 && mkdir -p /out/data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/fusou-proxy /usr/local/bin/fusou-proxy
# A named volume starts as a copy of this folder, so it is owned by the nonroot user (65532).
COPY --from=build --chown=65532:65532 /out/data /data
ENV FUSOU_DATA_DIR=/data \
    FUSOU_PROXY_LISTEN=0.0.0.0:8050 \
    FUSOU_CONTROL_LISTEN=127.0.0.1:8051
USER 65532:65532
VOLUME ["/data"]
EXPOSE 8050
ENTRYPOINT ["/usr/local/bin/fusou-proxy"]
CMD ["run", "--log-format", "json"]
