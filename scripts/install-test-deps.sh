#!/usr/bin/env bash
# What the test suite needs besides MariaDB and Redis (which .ci/run starts), pinned, from
# PyPI: the aiosmtpd SMTP server that tests/it/helpers.rs starts for the e-mail path, and
# schemathesis, which tests/it/apidoc.rs runs against the served OpenAPI document. Idempotent.
set -euo pipefail
AIOSMTPD_VERSION=1.4.6
SCHEMATHESIS_VERSION=4.32.5
pip_install() {
  echo "[deps] installing $1"
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore "$1"
}
if ! python3 -c 'import aiosmtpd' >/dev/null 2>&1; then
  pip_install "aiosmtpd==${AIOSMTPD_VERSION}"
fi
if [ "$(python3 -c 'import importlib.metadata as m; print(m.version("schemathesis"))' 2>/dev/null)" != "${SCHEMATHESIS_VERSION}" ]; then
  pip_install "schemathesis==${SCHEMATHESIS_VERSION}"
fi
python3 -c 'import aiosmtpd; print("[deps] aiosmtpd", aiosmtpd.__version__)'
echo "[deps] $(python3 -m schemathesis.cli --version)"
