#!/usr/bin/env bash
# Puts a kube-apiserver for the tests in place and prints its path:
# - in CI and on the team's machines, the prebuilt v1.36.3 beside the repository
#   (../shared/kube-apiserver/install-v1.36.sh, unpacked once into ~/.cache/meridian-kube);
# - in a clone without ../shared, v1.20.2 built from Debian's source (scripts/kube/build-apiserver.sh,
#   5-15 minutes once per machine).
# Both run with Debian's etcd-server. scripts/kube/start-apiserver.sh uses the same binary unless KUBE_APISERVER names another.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
install=$root/../shared/kube-apiserver/install-v1.36.sh
KUBE_WORK=${KUBE_WORK:-${XDG_CACHE_HOME:-$HOME/.cache}/meridian-kube}
if [[ -f $install ]]; then
  bash "$install" "$KUBE_WORK/v1.36.3"
else
  echo "no $install: building kube-apiserver v1.20.2 from Debian's source instead" >&2
  "$root/scripts/kube/build-apiserver.sh"
fi
