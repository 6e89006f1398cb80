"""The launchers' argument parser: `trl.TrlParser` (YAML recipe + command line) that names the new flag when a command
line or a recipe uses a renamed one."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from typing import Any

from trl import TrlParser


class Parser(TrlParser):
    """`trl.TrlParser` over ``dataclass_types``; a dataclass lists its renamed fields as ``renamed_flags`` (a class
    attribute, old name -> new name), and a recipe or command line that still uses an old name stops with
    "--old was renamed --new" instead of argparse's or TRL's "unrecognized arguments"."""

    def __init__(self, dataclass_types: Iterable[type], **kwargs: Any):
        dataclass_types = list(dataclass_types)
        super().__init__(dataclass_types, **kwargs)
        self.renamed = {
            old: new for dtype in dataclass_types for old, new in getattr(dtype, "renamed_flags", {}).items()
        }

    def set_defaults_with_config(self, **kwargs: Any) -> list[str]:
        """TRL's: the recipe's values become the defaults; a renamed key is a ValueError naming the new one."""
        for key in kwargs:
            if key in self.renamed:
                raise ValueError(f"--{key} was renamed --{self.renamed[key]} (`{key}:` in the YAML recipe)")
        return super().set_defaults_with_config(**kwargs)

    def parse_known_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> Any:
        """argparse's, after a renamed flag (``--old``, ``--old=value`` or ``--o-l-d``) is refused by name."""
        for arg in sys.argv[1:] if args is None else args:
            name = arg[2:].split("=", 1)[0].replace("-", "_") if arg.startswith("--") else None
            if name in self.renamed:
                self.error(f"--{name} was renamed --{self.renamed[name]}")
        return super().parse_known_args(args, namespace)
