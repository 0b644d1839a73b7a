# Shared helpers for Hearth's scripts. Source it; do not run it.

# Installs Debian packages that are missing. Needs root (or sudo); `apt-get update` runs once.
ensure_debian_packages() {
    local missing=()
    local package
    for package in "$@"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
            || missing+=("$package")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || { echo "need root to install: ${missing[*]}" >&2; return 1; }
        sudo="sudo"
    fi
    echo "installing Debian packages: ${missing[*]}"
    $sudo apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# Waits until FILE contains "listening on http://ADDR" and prints ADDR. Fails after SECONDS.
wait_for_listener() {
    local file=$1 seconds=$2 pid=$3
    local deadline=$((SECONDS + seconds))
    while [ $SECONDS -lt $deadline ]; do
        local address
        address=$(sed -n 's/.*listening on http:\/\/\([0-9.:]*\).*/\1/p' "$file" | head -n1)
        if [ -n "$address" ]; then
            echo "$address"
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || { cat "$file" >&2; return 1; }
        sleep 0.2
    done
    cat "$file" >&2
    return 1
}

# Prints the JSON answer of GET URL (python3 is on every machine we run on; curl may not be).
http_get() {
    python3 -c 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=30).read().decode())' "$1"
}
