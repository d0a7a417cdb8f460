"""Hostile YAML documents shared by the config and store tests."""

from __future__ import annotations


def bomb(levels: int, width: int = 9) -> str:
    """The classic "billion laughs": each level names the previous one `width` times.

    About width**levels nodes once expanded, in a few hundred bytes."""
    lines = [f"l0: &l0 [{', '.join(['lol'] * width)}]"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]")
    return "\n".join(lines) + "\n"


def deep(levels: int) -> str:
    """A flow sequence nested `levels` deep."""
    return "[" * levels + "]" * levels
