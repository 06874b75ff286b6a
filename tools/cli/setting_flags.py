"""The ``serve`` settings that other commands take too, as the same flags.

``hearth models`` and ``hearth status`` read the models directory, host, port, key... the way
``hearth serve`` does, so the flags are added from the one settings table rather than declared
again, and :func:`hearth.tools.settings.resolve` applies the same precedence to them.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable

from hearth.tools.settings import OPTIONS, add_config_argument, add_option_argument

__all__ = ["add_setting_flags"]


def add_setting_flags(parser: argparse.ArgumentParser, names: Iterable[str],
                      helps: dict[str, str] | None = None) -> None:
    """Add ``--config`` and the named settings' flags exactly as ``settings.build_parser`` does
    (same dest, default None), so :func:`settings.resolve` applies the same precedence.
    ``helps`` rewords an option's help where ``serve``'s wording would mislead."""
    wanted = set(names)
    helps = helps or {}
    add_config_argument(parser)
    for opt in OPTIONS:
        if opt.name in wanted:
            add_option_argument(parser, opt, helps.get(opt.name))
