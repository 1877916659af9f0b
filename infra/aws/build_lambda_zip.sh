#!/usr/bin/env bash
# Build the dispatcher Lambda zip: the `dispatcher` package + the core dependencies of
# pyproject.toml as manylinux wheels for the Lambda runtime (python3.12). No torch, no trainer.
#
#   infra/aws/build_lambda_zip.sh [--arch x86_64|arm64] [--out build/sweepq-dispatcher.zip] [--no-deps]
#
# --arch must match the stack's LambdaArchitecture (pydantic-core is a native wheel).
# --no-deps packs the dispatcher package alone (layout checks; dependencies from a layer).
# The zip is reproducible (sorted entries, fixed timestamps): its sha256 names the S3 key.
set -euo pipefail

ARCH=x86_64
OUT=build/sweepq-dispatcher.zip
DEPS=1
PY_VERSION=3.12
PYTHON=${PYTHON:-python3}

while [[ $# -gt 0 ]]; do
  case "$1" in
    --arch) ARCH="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --no-deps) DEPS=0; shift ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "build_lambda_zip.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$ARCH" in
  x86_64) PLATFORM=manylinux2014_x86_64 ;;
  arm64) PLATFORM=manylinux2014_aarch64 ;;
  *) echo "build_lambda_zip.sh: --arch $ARCH: use x86_64 or arm64 (the stack's LambdaArchitecture)" >&2; exit 2 ;;
esac

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT

if [[ $DEPS == 1 ]]; then
  "$PYTHON" "$ROOT/docker/requirements.py" --pyproject "$ROOT/pyproject.toml" > "$STAGE/requirements.txt"
  "$PYTHON" -m pip install --quiet --no-compile --target "$STAGE/pkg" \
    --platform "$PLATFORM" --implementation cp --python-version "$PY_VERSION" --only-binary=:all: \
    -r "$STAGE/requirements.txt"
fi
mkdir -p "$STAGE/pkg"
cp -R "$ROOT/dispatcher" "$STAGE/pkg/dispatcher"

mkdir -p "$(dirname "$OUT")"
"$PYTHON" - "$STAGE/pkg" "$OUT" <<'PY'
import os, sys, zipfile
src, out = sys.argv[1], sys.argv[2]
skip_dirs = {"__pycache__", "tests"}
names = []
for base, dirs, files in os.walk(src):
    dirs[:] = sorted(d for d in dirs if d not in skip_dirs)
    for name in sorted(files):
        if not name.endswith((".pyc", ".pyo")):
            names.append(os.path.join(base, name))
with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
    for path in names:
        info = zipfile.ZipInfo(os.path.relpath(path, src), date_time=(1980, 1, 1, 0, 0, 0))
        info.external_attr = 0o644 << 16
        info.compress_type = zipfile.ZIP_DEFLATED
        with open(path, "rb") as fh:
            zf.writestr(info, fh.read())
PY
SHA=$("$PYTHON" -c "import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],'rb').read()).hexdigest()[:16])" "$OUT")
echo "$OUT $(du -h "$OUT" | cut -f1) sha256:$SHA"
echo "upload: aws s3 cp $OUT s3://\$CODE_BUCKET/sweepq/dispatcher-$SHA.zip   (CodeS3Key=sweepq/dispatcher-$SHA.zip)"
