"""Sandbox policy pieces that need no sandbox: the seccomp program, conversation ids, limits, scratch."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from workers.registry import builtin_registry
from workers.sandbox import scratch_dir, seccomp
from workers.sandbox.policy import Limits, check_conversation


@pytest.mark.parametrize("signal_self", [None, 4242])
def test_seccomp_program_is_well_formed_classic_bpf(signal_self: int | None) -> None:
    program = seccomp.program(signal_self=signal_self)
    assert len(program) % 8 == 0
    instructions = [struct.unpack("<HBBI", program[i : i + 8]) for i in range(0, len(program), 8)]
    assert instructions[0] == (0x20, 0, 0, 4)  # load the architecture first
    assert instructions[-1] == (0x06, 0, 0, 0x7FFF0000)  # and allow what is not denied
    for index, (code, jt, jf, _) in enumerate(instructions):
        if code & 0x07 == 0x05:  # every jump lands inside the program
            assert index + 1 + max(jt, jf) < len(instructions)


def test_seccomp_without_inet_is_stricter() -> None:
    assert seccomp.program(allow_inet=False) != seccomp.program(allow_inet=True)
    assert "ptrace" in seccomp.denied_names() and "mount" in seccomp.denied_names()


@pytest.mark.parametrize("conversation", ["", "..", "a/b", "../etc", "x" * 200, "-rf", "a\x00b"])
def test_conversation_ids_that_could_escape_the_scratch_root_are_refused(conversation: str) -> None:
    with pytest.raises(ValueError):
        check_conversation(conversation)


def test_scratch_dirs_are_private_and_under_the_root(tmp_path: Path) -> None:
    path = scratch_dir("conv-1", tmp_path)
    assert path == tmp_path / "conv-1" and path.stat().st_mode & 0o777 == 0o700


def test_limits_round_trip_through_json() -> None:
    limits = Limits(
        memory_bytes=1, cpu_seconds=2, wall_seconds=3.5, processes=4, open_files=5, output_bytes=6
    )
    assert Limits.from_json(limits.to_json()) == limits


def test_builtin_isolation_classes() -> None:
    registry = builtin_registry()
    assert {name: entry.isolation for name, entry in registry.entries.items()} == {
        "python": "untrusted",
        "calculator": "sandboxed",
        "files": "sandboxed",
        "current_time": "sandboxed",
    }
    trusted = builtin_registry(trusted=["calculator", "python"])
    assert trusted.entries["calculator"].isolation == "trusted"
    assert trusted.entries["python"].isolation == "untrusted", "code from the model never runs in-process"
