#!/usr/bin/env python3
"""Which functions of the release binary run, for the linker's code order (see build.rs).

  code_order.py sample BINARY OUT      pages of BINARY present in its `serve` processes,
                                       sampled until SIGTERM; OUT gets one hex file offset
                                       per 4 KiB page
  code_order.py order BINARY MAP OUT PAGES...
                                       a linker script placing the functions (from LLD's
                                       link map) that ran on those pages first, in groups
                                       in the order of the PAGES files

Run by scripts/code-order, which arranges that only pages that actually run are read in.
"""
import bisect
import os
import re
import signal
import struct
import subprocess
import sys
import time

PAGE = 4096


def present_pages(pid, binary, touched):
    """Adds the file offsets of BINARY's pages mapped in process PID to TOUCHED."""
    try:
        with open(f"/proc/{pid}/maps") as maps:
            regions = [
                (int(lo, 16), int(hi, 16), int(parts[2], 16))
                for parts in (line.split() for line in maps)
                if len(parts) >= 6 and parts[5] == binary
                for lo, hi in [parts[0].split("-")]
            ]
        with open(f"/proc/{pid}/pagemap", "rb") as pagemap:
            for lo, hi, offset in regions:
                pagemap.seek(lo // PAGE * 8)
                entries = pagemap.read((hi - lo) // PAGE * 8)
                for i in range(len(entries) // 8):
                    if struct.unpack_from("<Q", entries, i * 8)[0] >> 63:
                        touched.add(offset + i * PAGE)
    except OSError:
        pass  # the process ended between the listing and the read


def is_server(pid, binary):
    try:
        if os.readlink(f"/proc/{pid}/exe") != binary:
            return False
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return b"serve" in cmdline.read().split(b"\0")
    except OSError:
        return False


def sample(binary, out):
    binary = os.path.realpath(binary)
    touched, stopping = set(), []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(1))
    while not stopping:
        for pid in filter(str.isdigit, os.listdir("/proc")):
            if is_server(pid, binary):
                present_pages(pid, binary, touched)
        time.sleep(0.1)
    with open(out, "w") as file:
        file.writelines(f"{offset:x}\n" for offset in sorted(touched))
    print(f"{out}: {len(touched)} pages ({len(touched) * PAGE / 2**20:.1f} MiB)", file=sys.stderr)


def text_delta(binary):
    """Virtual address minus file offset of the executable segment."""
    headers = subprocess.run(["readelf", "-lW", binary], capture_output=True, text=True).stdout
    for parts in (line.split() for line in headers.splitlines()):
        if parts[:1] == ["LOAD"] and "E" in parts[6:-1]:
            return int(parts[2], 16) - int(parts[1], 16)
    raise SystemExit(f"{binary}: no executable segment")


FUNCTION_SECTION = re.compile(r":\((\.text\.[^)]+)\)$")
MAP_LINE = re.compile(r"^\s*([0-9a-f]+)\s+[0-9a-f]+\s+([0-9a-f]+)\s+\d+( +)(\S.*)$")


def text_functions(map_path):
    """(start, end, section name) of every function's own section in .text (`.text.SYMBOL`,
    `.text.unlikely.SYMBOL` for cold code), from LLD's -Map output, where output sections,
    input sections and symbols are told apart by their indentation."""
    functions, in_text = [], False
    with open(map_path, errors="replace") as lines:
        for line in lines:
            match = MAP_LINE.match(line.rstrip("\n"))
            if not match:
                continue
            address, size = int(match[1], 16), int(match[2], 16)
            indent, name = len(match[3]), match[4]
            if indent <= 2:
                in_text = name == ".text"
            elif not in_text:
                continue
            elif indent <= 10:
                section = FUNCTION_SECTION.search(name)
                if size and section:
                    functions.append((address, address + size, section[1]))
    return sorted(functions)


# The parts of a symbol that change when nothing in its code did: the hash legacy mangling
# ends a Rust name with (it mixes in the crate's build metadata, which differs between
# `cargo build` and `cargo bench` and with every dependency update) and the suffix LTO gives
# local functions it promotes.
UNSTABLE = [(re.compile(r"17h[0-9a-f]{16}E"), "17h*E"), (re.compile(r"\.llvm\.[0-9]+"), ".llvm.*")]


def stable_pattern(section):
    for unstable, wildcard in UNSTABLE:
        section = unstable.sub(wildcard, section)
    return section


def ran(functions, starts, delta, path):
    """Sections of the functions that may have run: a function that ran was entered at its
    start, so only functions starting on a page that ran count (a long function's later
    pages alone do not)."""
    with open(path) as file:
        pages = sorted(int(line, 16) + delta for line in file if line.strip())
    for page in pages:
        i = bisect.bisect_left(starts, page)
        while i < len(functions) and functions[i][0] < page + PAGE:
            yield functions[i]
            i += 1


def order(binary, map_path, out, page_files):
    """Writes a linker script that puts the functions that ran first in `.text`, grouped by
    PAGES file, matching names without their build hashes where that names one function."""
    functions = text_functions(map_path)
    starts = [start for start, _, _ in functions]
    delta = text_delta(binary)
    sharing = {}
    for _, _, section in functions:
        sharing[stable_pattern(section)] = sharing.get(stable_pattern(section), 0) + 1
    seen, groups = set(), []
    for path in page_files:
        group, size = [], 0
        for start, end, section in ran(functions, starts, delta, path):
            pattern = stable_pattern(section)
            pattern = pattern if sharing[pattern] == 1 else section
            if pattern not in seen:
                seen.add(pattern)
                group.append(pattern)
                size += end - start
        groups.append(group)
        print(f"{path}: {len(group)} functions ({size / 2**20:.2f} MiB)", file=sys.stderr)
    with open(out, "w") as file:
        file.write("/* Written by scripts/code-order: the functions that ran at start, then under\n"
                   "   the workload, placed first in .text (see build.rs). */\nSECTIONS {\n  .text : {\n")
        for group in groups:
            file.write("    *(\n")
            file.writelines(f"      {pattern}\n" for pattern in group)
            file.write("    )\n")
        file.write("  }\n} INSERT BEFORE .fini;\n")


if __name__ == "__main__":
    if sys.argv[1:2] == ["sample"] and len(sys.argv) == 4:
        sample(sys.argv[2], sys.argv[3])
    elif sys.argv[1:2] == ["order"] and len(sys.argv) >= 6:
        order(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:])
    else:
        raise SystemExit(__doc__)
