"""The fixed LabelMeFacade re-split for recipe work (issue 21): the authors' split trains on 100 images and tests on
845, with no validation list. This keeps their 100 training images and moves a seeded 445 of the test list to
training, 100 more to validation, and leaves the other 300 as the test split:

    train.txt  545 = train.txt (100) + 445 of test.txt
    val.txt    100 of test.txt (choose recipes and checkpoints here)
    test.txt   300 of test.txt (score the chosen recipe once)

The draw is an order, not `random.shuffle` (whose algorithm Python may change): test.txt's lines sorted by the
SHA-256 of f"{SEED}:{line}", then cut 445 / 100 / 300; each list is written back in the source's order. The
written lists are committed in benchmarks/facade_split/; use them with `layout: lists` and

    seglab train configs/labelmefacade.yaml --set data_root=DATA \\
        "split_lists={train: $PWD/benchmarks/facade_split/train.txt, val: $PWD/benchmarks/facade_split/val.txt, \\
                      test: $PWD/benchmarks/facade_split/test.txt}"

    python benchmarks/facade_split.py --root /work/shared/data/labelmefacade   # writes benchmarks/facade_split/
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

SEED = 21  # the number; changing it changes every list (and makes earlier results incomparable)
TO_TRAIN, TO_VAL, TO_TEST = 445, 100, 300
OUT = Path(__file__).resolve().parent / "facade_split"


def read_list(path: Path) -> list[str]:
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(set(lines)) != len(lines):
        raise SystemExit(f"{path} lists some image twice; expected the authors' list unchanged")
    return lines


def resplit(train: list[str], test: list[str]) -> dict[str, list[str]]:
    """The three lists, each in its source's order."""
    if set(train) & set(test):
        raise SystemExit("train.txt and test.txt share images; expected the authors' disjoint lists")
    if len(test) != TO_TRAIN + TO_VAL + TO_TEST:
        raise SystemExit(f"test.txt has {len(test)} lines, expected {TO_TRAIN + TO_VAL + TO_TEST} (the authors' list)")
    drawn = sorted(test, key=lambda line: hashlib.sha256(f"{SEED}:{line}".encode()).hexdigest())
    moved = set(drawn[:TO_TRAIN])
    val = set(drawn[TO_TRAIN:TO_TRAIN + TO_VAL])
    return {
        "train": train + [line for line in test if line in moved],
        "val": [line for line in test if line in val],
        "test": [line for line in test if line not in moved and line not in val],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="data/labelmefacade", help="LabelMeFacade folder with train.txt, test.txt")
    parser.add_argument("--out", type=Path, default=OUT, help=f"where the lists go (default {OUT})")
    args = parser.parse_args()
    root = Path(args.root)
    lists = resplit(read_list(root / "train.txt"), read_list(root / "test.txt"))
    args.out.mkdir(parents=True, exist_ok=True)
    for split, lines in lists.items():
        (args.out / f"{split}.txt").write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    print(", ".join(f"{split} {len(lines)}" for split, lines in lists.items()) + f" (seed {SEED}) -> {args.out}")


if __name__ == "__main__":
    main()
