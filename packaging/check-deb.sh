#!/usr/bin/env bash
# Check a Hearth .deb made by packaging/build-deb.sh.
#
# Usage: packaging/check-deb.sh path/to/hearth_VERSION_ARCH.deb
#
# Verifies the control fields, the file list with owners and modes, the
# conffile, the packaged config and unit, and the syntax of the maintainer
# scripts. Prints every problem found and exits 1 if there was any.

set -euo pipefail

prog=${0##*/}

if [ $# -ne 1 ] || [ "$1" = "-h" ] || [ "$1" = "--help" ]; then
    echo "usage: $prog path/to/hearth_VERSION_ARCH.deb" >&2
    exit 2
fi

deb=$1
[ -f "$deb" ] || { echo "$prog: error: no such file: $deb" >&2; exit 1; }
command -v dpkg-deb >/dev/null 2>&1 || { echo "$prog: error: dpkg-deb not found" >&2; exit 1; }

problems=0
fail() {
    printf '%s: FAIL: %s\n' "$prog" "$*" >&2
    problems=$((problems + 1))
}
ok() {
    printf 'ok: %s\n' "$*"
}

work=$(mktemp -d "${TMPDIR:-/tmp}/hearth-check.XXXXXX")
trap 'rm -rf "$work"' EXIT

# --- Control fields -------------------------------------------------------

if ! dpkg-deb --info "$deb" > "$work/info" 2> "$work/info.err"; then
    echo "$prog: error: dpkg-deb --info cannot read $deb:" >&2
    cat "$work/info.err" >&2
    exit 1
fi

field() {
    dpkg-deb --field "$deb" "$1" 2>/dev/null || true
}

check_field() {
    # $1 field name, $2 extended regex the value must match
    local value
    value=$(field "$1")
    if [ -z "$value" ]; then
        fail "control field $1 is missing"
    elif ! printf '%s\n' "$value" | head -n1 | grep -Eq "$2"; then
        fail "control field $1 is '$value', expected to match /$2/"
    else
        ok "$1: $(printf '%s\n' "$value" | head -n1)"
    fi
}

check_field Package '^hearth$'
check_field Version '^[0-9][A-Za-z0-9.+~-]*$'
check_field Architecture '^(amd64|arm64|armhf|i386|riscv64)$'
check_field Maintainer '^Hearth developers <hearth@localhost>$'
check_field Depends '(^|, )adduser(,|$| )'
check_field Depends '(^|, )libc6(,|$| )'
check_field Section '^net$'
check_field Priority '^optional$'
check_field Description '.'

# The file name should agree with the control fields.
expected_name="hearth_$(field Version)_$(field Architecture).deb"
if [ "$(basename "$deb")" != "$expected_name" ]; then
    fail "file is named $(basename "$deb"), expected $expected_name"
fi

# --- Contents, owners and modes -------------------------------------------

if ! dpkg-deb --contents "$deb" > "$work/contents" 2> "$work/contents.err"; then
    echo "$prog: error: dpkg-deb --contents cannot read $deb:" >&2
    cat "$work/contents.err" >&2
    exit 1
fi

# Lines look like: -rwxr-xr-x root/root  12345 2025-01-01 00:00 ./usr/bin/hearth
check_entry() {
    # $1 path, $2 expected ls-style mode
    local line
    line=$(awk -v p="./${1#/}" '$6 == p' "$work/contents")
    if [ -z "$line" ]; then
        fail "missing from package: $1"
        return
    fi
    read -r mode owner _ <<< "$line"
    if [ "$mode" != "$2" ]; then
        fail "$1 has mode $mode, expected $2"
    elif [ "$owner" != "root/root" ]; then
        fail "$1 is owned by $owner, expected root/root"
    else
        ok "$1 $mode $owner"
    fi
}

check_entry /usr/bin/hearth -rwxr-xr-x
check_entry /lib/systemd/system/hearth.service -rw-r--r--
check_entry /etc/hearth/config.toml -rw-r-----
check_entry /usr/share/doc/hearth/copyright -rw-r--r--
if awk '$6 == "./usr/share/doc/hearth/README.md"' "$work/contents" | grep -q .; then
    check_entry /usr/share/doc/hearth/README.md -rw-r--r--
else
    echo "note: no /usr/share/doc/hearth/README.md (the repository had no README.md)"
fi

# Everything must belong to root: the package is built with --root-owner-group.
bad_owner=$(awk '$2 != "root/root" { print $6 " " $2 }' "$work/contents")
if [ -n "$bad_owner" ]; then
    fail "entries not owned by root/root:"$'\n'"$bad_owner"
fi

# The data and TLS directories are made by postinst, never shipped: dpkg
# would reset their owner on every upgrade.
if awk '$6 ~ /^\.\/var\/lib\/hearth/ || $6 ~ /^\.\/etc\/hearth\/tls/' "$work/contents" | grep -q .; then
    fail "package ships /var/lib/hearth or /etc/hearth/tls; postinst must create them"
fi

# --- Control archive: conffiles and maintainer scripts --------------------

mkdir -p "$work/control" "$work/root"
dpkg-deb --control "$deb" "$work/control"
dpkg-deb --extract "$deb" "$work/root"

if [ ! -f "$work/control/conffiles" ]; then
    fail "DEBIAN/conffiles is missing"
elif ! grep -qx '/etc/hearth/config.toml' "$work/control/conffiles"; then
    fail "/etc/hearth/config.toml is not listed in DEBIAN/conffiles"
else
    ok "conffile /etc/hearth/config.toml"
fi

for script in postinst prerm postrm; do
    path="$work/control/$script"
    if [ ! -f "$path" ]; then
        fail "maintainer script $script is missing"
        continue
    fi
    [ -x "$path" ] || fail "maintainer script $script is not executable"
    if [ "$(head -n1 "$path")" != "#!/bin/sh" ]; then
        fail "maintainer script $script does not start with #!/bin/sh"
    fi
    if ! sh -n "$path" 2> "$work/syntax.err"; then
        fail "maintainer script $script has a syntax error: $(cat "$work/syntax.err")"
    else
        ok "sh -n $script"
    fi
done

# --- Packaged config and unit ---------------------------------------------

config="$work/root/etc/hearth/config.toml"
if [ -f "$config" ]; then
    db_path=$(awk '
        /^[[:space:]]*\[/ { in_db = ($0 ~ /^[[:space:]]*\[database\]/); next }
        in_db && /^[[:space:]]*path[[:space:]]*=/ {
            if (match($0, /"[^"]*"/)) { print substr($0, RSTART + 1, RLENGTH - 2); exit }
        }
    ' "$config")
    if [ "$db_path" = "/var/lib/hearth" ]; then
        ok "config.toml: [database] path = \"/var/lib/hearth\""
    else
        fail "config.toml: [database] path is '${db_path:-<not set>}', expected /var/lib/hearth"
    fi
fi

unit="$work/root/lib/systemd/system/hearth.service"
if [ -f "$unit" ]; then
    for want in \
        'ExecStart=/usr/bin/hearth serve --config /etc/hearth/config.toml' \
        'Type=notify' \
        'User=hearth' \
        'Group=hearth' \
        'StateDirectory=hearth' \
        'AmbientCapabilities=CAP_NET_BIND_SERVICE'
    do
        if grep -qxF "$want" "$unit"; then
            ok "hearth.service: $want"
        else
            fail "hearth.service lacks the line: $want"
        fi
    done
fi

if [ -f "$work/root/usr/bin/hearth" ] && [ ! -s "$work/root/usr/bin/hearth" ]; then
    fail "/usr/bin/hearth is empty"
fi

# --- Result ---------------------------------------------------------------

if [ "$problems" -ne 0 ]; then
    echo "$prog: $problems problem(s) found in $deb" >&2
    exit 1
fi
echo "$prog: $deb looks good"
