# syntax=docker/dockerfile:1
#
# wattstream service image: the service compiled to JavaScript (scripts/build.mjs, as `npm start`
# does), with the migrations and the console's sources beside it, and the production dependencies.
#
# Debian slim, not alpine: chdb's native library (@chdb/lib-linux-<arch>-gnu, ~550 MB) needs
# glibc, and it is loaded on import even when CLICKHOUSE_URL points at a server.
# Production pins the base by digest (node:24-bookworm-slim@sha256:...) for reproducible builds.
ARG NODE_IMAGE=node:24-bookworm-slim

# --- dependencies: only package*.json, so this layer is rebuilt only when they change ---
FROM ${NODE_IMAGE} AS deps
WORKDIR /app
COPY package.json package-lock.json ./
# esbuild (the build, and the console's bundle at run time) is a runtime dependency, so --omit=dev
# keeps everything needed. No install script is needed (chdb's is a no-op, esbuild's and
# protobufjs's only check), so none runs.
RUN --mount=type=cache,target=/root/.npm \
    npm ci --omit=dev --ignore-scripts --no-audit --no-fund

# --- build: the TypeScript compiled to dist/, file for file (about a second) ---
FROM deps AS build
COPY tsconfig.json ./
COPY scripts/build.mjs ./scripts/
COPY src ./src
COPY gen ./gen
COPY clickhouse ./clickhouse
COPY web ./web
RUN node scripts/build.mjs

# --- runtime: no npm invocations, nothing writable but DATA_DIR and /tmp ---
FROM ${NODE_IMAGE}
# UV_THREADPOOL_SIZE: each statement on the embedded engine holds one of libuv's threads for its
# whole run, and the service keeps several connections busy at once (see docs/engine.md).
ENV NODE_ENV=production \
    UV_THREADPOOL_SIZE=16 \
    PORT=8080 \
    HOST=0.0.0.0 \
    DATA_DIR=/var/lib/wattstream
WORKDIR /app

# Owned by root and read-only to the `node` user that runs the service.
COPY --from=deps /app/node_modules ./node_modules
COPY package.json package-lock.json ./
# The compiled service, with the migrations it reads at start (dist/clickhouse) and the operator
# console's sources, bundled by the service when first asked for (dist/web).
COPY --from=build /app/dist ./dist

# The embedded engine's data (used only when CLICKHOUSE_URL is unset). Created and chowned before
# VOLUME so a fresh volume starts out owned by `node`.
RUN mkdir -p /var/lib/wattstream && chown node:node /var/lib/wattstream
VOLUME ["/var/lib/wattstream"]

# The `node` user (uid 1000) ships with the base image; nothing here needs root.
USER node
EXPOSE 8080

# node itself, exec form (not `npm start`, not a shell): SIGTERM reaches the process, which
# drains in-flight calls for SHUTDOWN_GRACE (default 10s) before exiting. Give the orchestrator's
# stop timeout a few seconds more than that.
# No HEALTHCHECK here: PORT and TLS are configurable, so the probe belongs to the deployment
# (docker-compose.yml checks GET /readyz; Kubernetes would probe /healthz and /readyz).
CMD ["node", "--enable-source-maps", "dist/src/main.js"]
