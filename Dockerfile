# barlowd in Docker: Debian 12, built with the same script the README and CI use.
#
#   docker build -t barlowd .
#   docker run -p 8080:8080 -v barlowd-data:/data barlowd
#
# Stage 1 installs the build packages and builds the release binary (scripts/dev build);
# stage 2 installs only the runtime libraries (scripts/dev runtime) and runs as a non-root user.

FROM debian:12-slim AS build
WORKDIR /src
COPY . .
RUN bash scripts/dev build && strip build/barlowd

FROM debian:12-slim
COPY scripts/dev /opt/barlowd/scripts/dev
RUN bash /opt/barlowd/scripts/dev runtime \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin barlowd \
    && mkdir -p /data && chown barlowd:barlowd /data
COPY --from=build /src/build/barlowd /usr/local/bin/barlowd
USER barlowd
# BARLOWD_ADDR_FILE: the server writes the address it really listens on there, so the health
# probe finds it whether the port came from BARLOWD_LISTEN or from `--listen` after the image name
ENV BARLOWD_LISTEN=0.0.0.0:8080 \
    BARLOWD_DB=/data/barlowd.db \
    BARLOWD_MODEL=small \
    BARLOWD_ADDR_FILE=/tmp/barlowd.addr
VOLUME /data
EXPOSE 8080
# barlowd's own probe: no curl in the image
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["barlowd", "health", "--timeout", "4"]
STOPSIGNAL SIGTERM
# exec form: barlowd is PID 1 and gets SIGTERM itself: it drains requests (2 s at most),
# interrupts the training step, checkpoints the last completed one and exits 0, well inside
# `docker stop`'s default 10 s grace
ENTRYPOINT ["barlowd", "serve"]
