#!/usr/bin/env bash
# What the test suite needs besides MariaDB and Redis (which .ci/run starts): the aiosmtpd
# SMTP server that tests/it/helpers.rs starts for the e-mail path. Idempotent.
set -euo pipefail
AIOSMTPD_VERSION=1.4.6
if ! python3 -c 'import aiosmtpd' >/dev/null 2>&1; then
  echo "[deps] installing aiosmtpd==${AIOSMTPD_VERSION}"
  python3 -m pip install --quiet --disable-pip-version-check "aiosmtpd==${AIOSMTPD_VERSION}"
fi
python3 -c 'import aiosmtpd; print("[deps] aiosmtpd", aiosmtpd.__version__)'
