# Sourced by the benchmarks: installs the Debian packages a benchmark needs, when missing.

# Installs each of PACKAGES not installed yet. Their services are kept from starting on
# install (policy-rc.d): every benchmark starts its servers itself, on its own ports.
install_packages() { # packages...
    local pkg need=()
    for pkg in "$@"; do
        dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
    done
    ((${#need[@]})) || return 0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
}
