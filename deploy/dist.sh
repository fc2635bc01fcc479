#!/bin/sh
# Builds one self-contained file: `make dist` runs  deploy/dist.sh .venv/bin dist/mailer.pyz
# The zipapp (shiv) holds mailer and every dependency at the versions of constraints.txt, built for this
# machine's platform; it needs only Python 3.12 to run, and unpacks itself into ~/.shiv (or $SHIV_ROOT) on
# its first start.
set -eu
bin=${1:?usage: deploy/dist.sh VENV_BIN OUTPUT}
out=${2:?usage: deploy/dist.sh VENV_BIN OUTPUT}
cd "$(dirname "$0")/.."
mkdir -p "$(dirname "$out")"
# No build isolation: the venv's setuptools builds the mailer wheel, with no download for the build itself.
"$bin/shiv" --compressed --reproducible --python '/usr/bin/env python3.12' --entry-point mailer.cli:main \
    --output-file "$out" -- . --constraint constraints.txt --no-build-isolation --quiet
