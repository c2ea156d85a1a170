#!/bin/sh
# The hospital container's entrypoint: this site's SuperNode, started by the same code, with the
# same flags, as deploy/launch.py starts it (python -m deploy.launch supernode).
#
# Required: SUPERLINK (the operator's SuperLink, host:port) and SITE_NAME (this site's name; its
# key is $CERTS_DIR/supernodes/$SITE_NAME.key). Folders default to the image's mount points.
# Extra arguments are passed on, e.g. --print-command to print the flower-supernode command.
set -eu

: "${SUPERLINK:?set SUPERLINK to the SuperLink address as host:port, e.g. -e SUPERLINK=fl.example.org:9091}"
: "${SITE_NAME:?set SITE_NAME to the name of this site, e.g. -e SITE_NAME=site-01}"
STATE_DIR="${STATE_DIR:-/state}"

cd "${FEDSYNTH_HOME:-/opt/fedsynth}"
exec python -m deploy.launch supernode \
    --superlink "$SUPERLINK" \
    --site "$SITE_NAME" \
    --certs "${CERTS_DIR:-/certs}" \
    --data "${DATA_DIR:-/data}" \
    --cache "${CACHE_DIR:-$STATE_DIR/cache}" \
    --ledger "${LEDGER_DIR:-$STATE_DIR/ledger}" \
    --flwr-home "${FLWR_HOME_DIR:-$STATE_DIR/flwr}" \
    "$@"
