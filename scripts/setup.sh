#!/usr/bin/env bash
# Install everything the demo and the tests need, from a bare machine: Java 17 and Maven
# (for the Apache Kafka broker the tests start), and a virtualenv with the package and its
# dev tools. Idempotent: a second run takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v java >/dev/null || need_apt+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || need_apt+=(maven)
command -v unzip >/dev/null || need_apt+=(unzip)  # the Apicurio Registry build of the real-registry tests
command -v prometheus >/dev/null || need_apt+=(prometheus)  # the server and promtool, for the observability tests
command -v python3 >/dev/null || need_apt+=(python3 python3-venv)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing ${need_apt[*]} with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "setup: please install ${need_apt[*]} (Java 17+ and Maven run the local Kafka broker)" >&2
    exit 1
  fi
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
stamp=.venv/.installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[dev]'
  touch "$stamp"
fi
echo "setup: ready ($(.venv/bin/python --version), $(java -version 2>&1 | head -1), $(mvn -v 2>/dev/null | head -1))"
