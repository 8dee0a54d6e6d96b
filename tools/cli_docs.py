"""The command-line reference page of the documentation site, generated from the `fastnorm` command's own parsers.

Each subcommand in `fastnorm.cli.COMMANDS` is a fastcore `call_parse` function; `fastcore.script.anno_parser` builds
the same argparse parser that `fastnorm <command> --help` prints, with the description `fastnorm.cli.<command>_help()`
generates from the registries where there is one. The page lists each subcommand's usage, description and every option
with its help text, so it cannot drift from the command (`tests/test_docs.py` checks that nothing is missing)."""
import argparse
import os
import re
from unittest import mock

from fastcore.script import anno_parser

__all__ = ['PAGE', 'WIDTH', 'parser', 'options', 'page']

PAGE = 'cli.md'    # the page's path on the site
WIDTH = 78         # columns of the usage lines: the page's text width, whatever the terminal that builds it


def parser(name:str)->argparse.ArgumentParser:
    "The argparse parser of `fastnorm name`, with the description its `--help` shows"
    from fastnorm import cli
    func = cli.COMMANDS[name][0]
    p = anno_parser(func, f'fastnorm {name}')
    describe = getattr(cli, f'{name}_help', None)   # generated from the registries (compare, adapt)
    p.description = describe() if describe else func.__doc__
    return p


def options(p:argparse.ArgumentParser)->list:
    "The arguments `p` shows in its help (positionals by name, options by their flags), without `-h`"
    acts = [a for a in p._actions if a.help != argparse.SUPPRESS and not isinstance(a, argparse._HelpAction)]
    return [(', '.join(a.option_strings) or a.dest, a) for a in acts]


def _md(s)->str:
    "`s` as Markdown text: `_` and `*` outside code spans are escaped (`{digit}_{speaker}_{take}` is not emphasis)"
    parts = str(s).split('`')
    return '`'.join(re.sub(r'([_*])', r'\\\1', p) if i % 2 == 0 else p for i, p in enumerate(parts))


def _cell(s)->str:
    return _md(s).replace('|', '\\|').replace('\n', ' ')


def _kind(a)->str:
    if a.nargs == 0: return 'flag'
    return getattr(a.type, '__name__', '') or 'str'


def _paragraphs(text:str)->str:
    "`text`'s lines joined, a paragraph ending at each line that ends a sentence (the generated descriptions' parts)"
    pars, cur = [], []
    for line in text.splitlines():
        cur.append(line.strip())
        if line.rstrip().endswith('.'): pars, cur = pars + [' '.join(cur)], []
    return '\n\n'.join(_md(p) for p in pars + [' '.join(cur)] if p.strip())


def _section(name:str, summary:str)->str:
    with mock.patch.dict(os.environ, COLUMNS=str(WIDTH)):
        p = parser(name)
        usage = p.format_usage().strip()
    rows = [f"| `{flag}` | {_kind(a)} | {_cell(a.help or '')}{' (required)' if a.required else ''} |"
            for flag, a in options(p)]
    desc = _paragraphs(p.description or '')
    return '\n'.join([f'## fastnorm {name} {{ #{name} }}', '', f'*{summary}*', '',
                      '```text', usage, '```', '', desc, '',
                      '| argument | type | what |', '|---|---|---|', *rows, ''])


def page()->str:
    "The command-line reference as Markdown: the subcommands, then each one's usage, description and arguments"
    from fastnorm import cli
    head = ['# The `fastnorm` command', '',
            'Generated from the parsers of `fastnorm/cli.py` when the site is built: what `fastnorm <command> --help` '
            'prints. `python -m fastnorm` runs the same command.', '',
            '| command | what |', '|---|---|',
            *[f'| [`fastnorm {k}`](#{k}) | {_cell(line)} |' for k, (_, line) in cli.COMMANDS.items()], '']
    return '\n'.join(head + [_section(k, line) for k, (_, line) in cli.COMMANDS.items()])
