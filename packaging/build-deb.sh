#!/usr/bin/env bash
# Build a Debian package (.deb) of Hearth from an already compiled binary.
#
# Usage: packaging/build-deb.sh [--target TRIPLE] [--binary PATH] [--out DIR]
#
#   --target TRIPLE  Rust target the binary was built for, for example
#                    aarch64-unknown-linux-gnu (Raspberry Pi, 64-bit OS).
#                    Chooses the default binary path and the Debian
#                    architecture. Without it the host architecture is used.
#   --binary PATH    Use this binary instead of target[/TRIPLE]/release/hearth.
#   --out DIR        Where to write the .deb (default: target/debian).
#
# This script never runs cargo: build the binary first.
# It needs only bash, coreutils, sed, awk and dpkg-deb.

set -euo pipefail

umask 022

prog=${0##*/}
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

die() {
    printf '%s: error: %s\n' "$prog" "$*" >&2
    exit 1
}

warn() {
    printf '%s: warning: %s\n' "$prog" "$*" >&2
}

usage() {
    sed -n '4,13s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
}

target=""
binary=""
out_dir=""

while [ $# -gt 0 ]; do
    case "$1" in
        --target)
            [ $# -ge 2 ] || die "--target needs a value"
            target=$2
            shift 2
            ;;
        --target=*)
            target=${1#*=}
            shift
            ;;
        --binary)
            [ $# -ge 2 ] || die "--binary needs a value"
            binary=$2
            shift 2
            ;;
        --binary=*)
            binary=${1#*=}
            shift
            ;;
        --out)
            [ $# -ge 2 ] || die "--out needs a value"
            out_dir=$2
            shift 2
            ;;
        --out=*)
            out_dir=${1#*=}
            shift
            ;;
        -h|--help)
            usage
            exit 0
            ;;
        *)
            usage >&2
            die "unknown argument: $1"
            ;;
    esac
done

command -v dpkg-deb >/dev/null 2>&1 || die "dpkg-deb not found (install the dpkg package)"

# --- Binary ---------------------------------------------------------------

if [ -z "$binary" ]; then
    if [ -n "$target" ]; then
        binary="$repo_root/target/$target/release/hearth"
        build_cmd="cargo build --release --target $target"
    else
        binary="$repo_root/target/release/hearth"
        build_cmd="cargo build --release"
    fi
    if [ ! -f "$binary" ]; then
        {
            printf '%s: error: binary not found: %s\n' "$prog" "$binary"
            printf 'Build it first, from %s:\n\n    %s\n\n' "$repo_root" "$build_cmd"
            printf 'or pass an existing binary with --binary PATH.\n'
        } >&2
        exit 1
    fi
else
    [ -f "$binary" ] || die "binary not found: $binary"
fi
[ -x "$binary" ] || die "binary is not executable: $binary"

# --- Version from Cargo.toml ([package] section only) ---------------------

cargo_toml="$repo_root/Cargo.toml"
[ -f "$cargo_toml" ] || die "Cargo.toml not found at $cargo_toml"

crate_version=$(awk '
    /^[[:space:]]*\[/ { in_pkg = ($0 ~ /^[[:space:]]*\[package\][[:space:]]*(#.*)?$/); next }
    in_pkg && /^[[:space:]]*version[[:space:]]*=/ {
        if (match($0, /"[^"]*"/)) { print substr($0, RSTART + 1, RLENGTH - 2); exit }
    }
' "$cargo_toml")
[ -n "$crate_version" ] || die "could not read version = \"...\" from the [package] section of $cargo_toml"

# Debian sorts "~" before anything, so 1.0.0-rc.1 must become 1.0.0~rc.1
# to sort below 1.0.0. Build metadata (+...) is dropped.
deb_version=$(printf '%s' "${crate_version%%+*}" | sed 's/-/~/')
case "$deb_version" in
    [0-9]*) ;;
    *) die "version '$crate_version' from Cargo.toml does not start with a digit" ;;
esac

# --- Debian architecture --------------------------------------------------

if [ -n "$target" ]; then
    case "$target" in
        x86_64-*)                 arch=amd64 ;;
        aarch64-*)                arch=arm64 ;;
        armv7-*hf|arm-*hf)        arch=armhf ;;
        i686-*|i586-*)            arch=i386 ;;
        riscv64*)                 arch=riscv64 ;;
        *) die "do not know the Debian architecture for target '$target'" ;;
    esac
else
    command -v dpkg >/dev/null 2>&1 || die "dpkg not found; pass --target to choose the architecture"
    arch=$(dpkg --print-architecture)
fi

# Catch the classic mistake of packaging a host binary as arm64 (or the
# reverse) by reading the ELF header's machine field.
elf_magic=$(od -An -tx1 -N4 "$binary" | tr -d ' \n')
if [ "$elf_magic" = "7f454c46" ]; then
    elf_machine=$(od -An -tu2 -j18 -N2 --endian=little "$binary" | tr -d ' \n')
    case "$elf_machine" in
        62)  elf_arch=amd64 ;;
        183) elf_arch=arm64 ;;
        40)  elf_arch=armhf ;;
        3)   elf_arch=i386 ;;
        243) elf_arch=riscv64 ;;
        *)   elf_arch="" ;;
    esac
    if [ -n "$elf_arch" ] && [ "$elf_arch" != "$arch" ]; then
        die "$binary is a $elf_arch binary but the package architecture is $arch (wrong --target or --binary?)"
    fi
else
    warn "$binary is not an ELF executable; packaging it anyway"
fi

# --- Config: config.example.toml with the data directory set --------------

example_config="$repo_root/config.example.toml"
[ -f "$example_config" ] || die "config.example.toml not found at $example_config; it is the template for /etc/hearth/config.toml"

# --- Staging tree ---------------------------------------------------------

stage=$(mktemp -d "${TMPDIR:-/tmp}/hearth-deb.XXXXXX")
trap 'rm -rf "$stage"' EXIT
pkg="$stage/root"

install -d -m 0755 \
    "$pkg/DEBIAN" \
    "$pkg/usr/bin" \
    "$pkg/lib/systemd/system" \
    "$pkg/etc/hearth" \
    "$pkg/usr/share/doc/hearth"

install -m 0755 "$binary" "$pkg/usr/bin/hearth"
install -m 0644 "$repo_root/systemd/hearth.service" "$pkg/lib/systemd/system/hearth.service"

# Point the database at /var/lib/hearth, only inside [database], keeping
# any indentation or trailing comment.
config_out="$pkg/etc/hearth/config.toml"
sed -E '/^[[:space:]]*\[database\]/,/^[[:space:]]*\[/ s|^([[:space:]]*path[[:space:]]*=[[:space:]]*)"hearth-data"|\1"/var/lib/hearth"|' \
    "$example_config" > "$config_out"
if cmp -s "$example_config" "$config_out"; then
    die "config.example.toml has no line 'path = \"hearth-data\"' in its [database] section; cannot point the packaged config at /var/lib/hearth"
fi
# The config may hold secrets: readable by root and (after postinst) group hearth.
chmod 0640 "$config_out"

if [ -f "$repo_root/README.md" ]; then
    install -m 0644 "$repo_root/README.md" "$pkg/usr/share/doc/hearth/README.md"
fi
install -m 0644 "$repo_root/packaging/README.md" "$pkg/usr/share/doc/hearth/PACKAGING.md"

license=$(awk '
    /^[[:space:]]*\[/ { in_pkg = ($0 ~ /^[[:space:]]*\[package\]/); next }
    in_pkg && /^[[:space:]]*license[[:space:]]*=/ {
        if (match($0, /"[^"]*"/)) { print substr($0, RSTART + 1, RLENGTH - 2); exit }
    }
' "$cargo_toml")
{
    printf 'Hearth, a Matrix homeserver.\n\n'
    printf 'License: %s\n' "${license:-see the source repository}"
    case "$license" in
        AGPL-3.0*)
            printf '\nThe GNU Affero General Public License version 3 is published at\n'
            printf '<https://www.gnu.org/licenses/agpl-3.0.txt>.\n'
            ;;
    esac
} > "$pkg/usr/share/doc/hearth/copyright"
chmod 0644 "$pkg/usr/share/doc/hearth/copyright"

# --- Control files --------------------------------------------------------

for script in postinst prerm postrm; do
    install -m 0755 "$repo_root/packaging/debian/$script" "$pkg/DEBIAN/$script"
done

printf '/etc/hearth/config.toml\n' > "$pkg/DEBIAN/conffiles"
chmod 0644 "$pkg/DEBIAN/conffiles"

installed_size=$(du -sk --exclude=DEBIAN "$pkg" | cut -f1)

cat > "$pkg/DEBIAN/control" <<EOF
Package: hearth
Version: $deb_version
Architecture: $arch
Maintainer: Hearth developers <hearth@localhost>
Installed-Size: $installed_size
Depends: adduser, libc6
Section: net
Priority: optional
Description: small Matrix homeserver for a Raspberry Pi
 Hearth is a Matrix homeserver in a single binary, made for one person or
 a family on modest hardware such as a Raspberry Pi. It runs as the
 systemd service hearth under its own user, keeps its data in
 /var/lib/hearth and reads its configuration from /etc/hearth/config.toml.
 .
 The service is not started after installation: edit the configuration,
 then run "systemctl enable --now hearth".
EOF
chmod 0644 "$pkg/DEBIAN/control"

# --- Build ----------------------------------------------------------------

[ -n "$out_dir" ] || out_dir="$repo_root/target/debian"
mkdir -p "$out_dir"
out_dir=$(cd "$out_dir" && pwd)
deb="$out_dir/hearth_${deb_version}_${arch}.deb"

dpkg-deb --build --root-owner-group "$pkg" "$deb" >/dev/null

printf '%s\n' "$deb"
