#!/usr/bin/python3
"""Runs a command under the seccomp filter that a systemd unit's SystemCallFilter= lines make.

Usage: seccomp_exec.py UNIT_FILE (kill|errno) COMMAND [ARG...]

systemd is not PID 1 in CI, so the unit cannot be started there. This applies the same filter
to the real binary instead: the groups (@system-service, ...) are expanded with systemd's own
table (`systemd-analyze syscall-filter`), lines are combined as systemd does (an allow list
first, then `~` lines removing from it; @default is always allowed), and the filter is loaded
with libseccomp (Debian: python3-seccomp), which systemd uses too. `kill` kills the process
on any system call outside the list, so a run that works proves none was even tried; `errno`
answers EPERM as the unit's SystemCallErrorNumber=EPERM does.
"""
import os
import subprocess
import sys

import seccomp


def groups():
    """Every @group with its members (names and nested groups), from systemd's table."""
    out = subprocess.run(["systemd-analyze", "syscall-filter"], capture_output=True,
                         text=True, check=True).stdout
    table, current = {}, None
    for line in out.splitlines():
        if line.startswith("@"):
            current = table.setdefault(line.strip(), [])
        elif current is not None and line.strip() and not line.strip().startswith("#"):
            current.append(line.strip())
    return table


def expand(names, table):
    calls = set()
    for name in names:
        if name.startswith("@"):
            calls |= expand(table[name], table)
        else:
            calls.add(name)
    return calls


def allowed_calls(unit_path):
    table = groups()
    allowed = None
    for line in open(unit_path, encoding="utf-8"):
        key, _, value = line.strip().partition("=")
        if key != "SystemCallFilter" or not value:
            continue
        deny = value.startswith("~")
        names = expand(value.lstrip("~").split(), table)
        if allowed is None:
            if deny:
                sys.exit("this helper handles an allow list first, as the unit has")
            allowed = names | expand(["@default"], table)
        elif deny:
            allowed -= names
        else:
            allowed |= names
    if allowed is None:
        sys.exit(f"{unit_path} has no SystemCallFilter=")
    return allowed


def main():
    unit, mode, command = sys.argv[1], sys.argv[2], sys.argv[3:]
    default = seccomp.KILL_PROCESS if mode == "kill" else seccomp.ERRNO(1)
    f = seccomp.SyscallFilter(defaction=default)
    known = 0
    for call in sorted(allowed_calls(unit)):
        try:
            f.add_rule(seccomp.ALLOW, call)
            known += 1
        except (RuntimeError, ValueError):
            pass  # not a system call on this architecture (systemd skips those too)
    print(f"seccomp: {known} system calls allowed, others {mode}", file=sys.stderr, flush=True)
    f.load()
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()
