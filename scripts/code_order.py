#!/usr/bin/env python3
"""Which functions of the release binary run, for the linker's code order (see build.rs).

  code_order.py order MAP OUT RAN...   writes to OUT a linker script placing first in .text
                                       the functions (from LLD's link map MAP) that ran, in
                                       groups in the order of the RAN files: valgrind
                                       exp-bbv `--pc-out-file`s (every basic block that ran)

Run by scripts/code-order.
"""
import bisect
import collections
import re
import sys

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


# Where valgrind loads a position-independent program on x86-64 (its `exp-bbv` tool prints
# addresses as loaded; the link map has them as linked).
VALGRIND_LOAD_BASE = 0x108000


def ran(functions, starts, path):
    """Sections of the functions that ran, from valgrind's `--pc-out-file` at PATH: one
    `F:block:address:name` line for every basic block that ran."""
    with open(path) as file:
        for line in file:
            address = int(line.split(":")[2], 16) - VALGRIND_LOAD_BASE
            i = bisect.bisect_right(starts, address) - 1
            if i >= 0 and address < functions[i][1]:
                yield functions[i]


def order(map_path, out, ran_files):
    """Writes a linker script that puts the functions that ran first in `.text`, grouped by
    RAN file, matching names without their build hashes where that names one function."""
    functions = text_functions(map_path)
    starts = [start for start, _, _ in functions]
    sharing = collections.Counter(stable_pattern(section) for _, _, section in functions)
    seen, groups = set(), []
    for path in ran_files:
        group, size = [], 0
        for start, end, section in ran(functions, starts, path):
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
        for group in filter(None, groups):
            file.write("    *(\n")
            file.writelines(f"      {pattern}\n" for pattern in group)
            file.write("    )\n")
        file.write("  }\n} INSERT BEFORE .fini;\n")


if __name__ == "__main__":
    if sys.argv[1:2] == ["order"] and len(sys.argv) >= 5:
        order(sys.argv[2], sys.argv[3], sys.argv[4:])
    else:
        raise SystemExit(__doc__)
