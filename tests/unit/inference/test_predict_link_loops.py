"""Inputs are walked without following a symbolic link into a loop, and the link skipped is named (issue 31,
item 5)."""

from __future__ import annotations

import signal
import time
from contextlib import contextmanager

import pytest

from predict_helpers import write_images
from seglab.inference.files import collect_inputs


class WalkTooLong(Exception):
    """Not an OSError (as TimeoutError is): the glob module swallows those while it walks."""


@contextmanager
def time_limit(seconds: float):
    """Raises in the test, instead of hanging it, when the body runs longer than `seconds`."""
    def expire(signum, frame):
        raise WalkTooLong(f"still walking after {seconds} s: a link loop was followed")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture()
def looped_tree(tmp_path):
    """tree/img0.png, tree/sub/img1.png, and two links to `.` (tree/here, tree/again)."""
    tree = tmp_path / "tree"
    write_images(tree, 1)
    write_images(tree / "sub", 1, prefix="img1")
    (tree / "here").symlink_to(".")
    (tree / "again").symlink_to(".")
    return tree


@pytest.mark.parametrize("as_glob", [True, False], ids=["glob", "folder"])
def test_two_links_to_the_folder_itself_are_skipped_and_named(looped_tree, as_glob):
    entry = str(looped_tree / "**" / "*.png") if as_glob else str(looped_tree)
    started = time.monotonic()
    with time_limit(10):
        items, problems = collect_inputs([entry], recursive=True)
    assert time.monotonic() - started < 10
    assert sorted(item.path.relative_to(looped_tree).as_posix() for item in items) == ["img0.png", "sub/img10.png"]
    skipped = {problem.path.name: str(problem) for problem in problems}
    assert set(skipped) == {"here", "again"}, problems
    assert all(problem.kind == "symlink-loop" for problem in problems)
    assert str(looped_tree) in skipped["here"]  # which folder the link leads back to


def test_a_linked_folder_outside_the_tree_is_walked_once(tmp_path):
    tree, elsewhere = tmp_path / "tree", tmp_path / "elsewhere"
    write_images(tree, 1)
    write_images(elsewhere, 2, prefix="far")
    (tree / "linked").symlink_to(elsewhere)
    (elsewhere / "back").symlink_to(tree)  # a loop through two folders
    with time_limit(10):
        items, problems = collect_inputs([str(tree)], recursive=True)
    assert sorted(item.name.as_posix() for item in items) == ["img0", "linked/far0", "linked/far1"]
    assert [problem.path.name for problem in problems] == ["back"]
