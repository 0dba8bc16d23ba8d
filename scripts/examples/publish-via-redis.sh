#!/usr/bin/env bash
# Publishes one event through Redis, as a background job in any language can (the seeds' Hangfire
# job raising TenantCreated): append a draft to the ingest stream; exactly one Switchyard node
# publishes it (offset, history, delivery on every node) and acknowledges it.
#
# One Redis only: on a Redis Cluster a draft goes to its channel's stream `<prefix>:{i<n>}:ingest`
# (docs/cluster.md, "Redis Cluster").
#
# Usage: scripts/examples/publish-via-redis.sh [redis-url] [prefix] [tenant]
#   defaults: redis://127.0.0.1:6379  switchyard  acme
set -euo pipefail
url="${1:-redis://127.0.0.1:6379}"
prefix="${2:-switchyard}"
tenant="${3:-acme}"
# `id` makes the publish idempotent: retrying the job never publishes twice.
draft=$(printf '{"channel":"tenant:%s:admins","event":"TenantCreated","data":{"tenantKey":"%s","name":"Acme Pizza"},"id":"tenant-created-%s"}' \
  "$tenant" "$tenant" "$tenant")
redis-cli -u "$url" XADD "$prefix:ingest" '*' event "$draft"
