"""The `dropout-lab` command: one entry point for the project's tools (`dropout-lab --help` lists them).

train, pack and data hand their arguments to the tools' own parsers (Hydra's for train), unchanged; plan,
paper and completion are parsed here. Bad input is one `error:` line naming the value and the fix, exit 2.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import yaml

PLAN_USAGE = "dropout-lab plan [--configfile FILE ...] [KEY=VALUE ...]"
ROOT = Path(__file__).resolve().parents[2]  # the checkout, where there is one
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"
HELP_FLAGS = ("-h", "--help")


def version() -> str:
    """The installed package's version; a checkout run without an install reads dropout_lab.__version__."""
    try:
        return metadata.version("dropout-lab")
    except metadata.PackageNotFoundError:
        from dropout_lab import __version__

        return __version__


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is the project's one line (the value and where to look), not usage + error."""

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {message}; see {self.prog} --help\n")


# (name, one-line summary, description): the subcommands in the order --help lists them.
SUBCOMMANDS = (
    ("train", "train one run (Hydra overrides)",
     ("Train one run from Hydra overrides, e.g. `dropout-lab train scale=smoke out=runs/a`; `dropout-lab train "
      "--help` is Hydra's help. Tab completion of the settings: eval \"$(dropout-lab-train -sc install=bash)\".")),
    ("pack", "train several runs together and write DIR/pack.json",
     ("Train runs together in one process (the workflow's train rule); `dropout-lab pack --help` lists its "
      "options.")),
    ("data", "fetch, verify and cache a dataset",
     ("Fetch, verify and cache a dataset, e.g. `dropout-lab data mnist`; `dropout-lab data --help` lists its "
      "options.")),
    ("plan", "the workflow's runs, packs and expected time, checked as the workflow checks them",
     ("Print what the workflow would do in this folder: runs and packs per experiment, how many are finished "
      "(their results/runs/.../metrics.json exists) and how many are left, the device, and the expected training "
      "time (measured on this machine where results/benchmarks/train/ holds timed jobs). The config is "
      "config/config.yaml, then each --configfile, then each KEY=VALUE, as Snakemake merges them; a bad "
      "setting is the workflow's own one line.")),
    ("paper", "run the whole workflow (snakemake --cores all) from a checkout",
     ("Run the checkout's Snakemake workflow to the paper: snakemake -s workflow/Snakefile --cores all with every "
      "argument passed on, e.g. `dropout-lab paper --config scale=quick -n`.")),
    ("completion", "print a shell completion script: eval \"$(dropout-lab completion bash)\"",
     ("Print a completion script of dropout-lab's subcommands and options for bash or zsh; load it with "
      "eval \"$(dropout-lab completion bash)\" (or zsh), e.g. from ~/.bashrc.")),
)


def build_parser() -> tuple[OneLineParser, dict[str, OneLineParser]]:
    """The command's parser and each subcommand's (the source of --help and of the completion script)."""
    parser = OneLineParser(prog="dropout-lab", description="Reproduce and test the claims of 'the simplified "
                           "math behind dropout' on MNIST and CIFAR-10.", epilog="`dropout-lab COMMAND --help` "
                           "says more about each command.")
    parser.add_argument("--version", action="version", version=f"dropout-lab {version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    subs = {}
    for name, summary, description in SUBCOMMANDS:
        # The wrapped tools answer their own --help, so theirs is not taken here.
        own_help = name not in PASS_THROUGH
        subs[name] = commands.add_parser(name, help=summary, description=description, add_help=own_help)
    subs["plan"].add_argument("--configfile", action="append", default=[], metavar="FILE",
                              help="a YAML file of workflow settings merged over config/config.yaml (repeatable)")
    subs["plan"].add_argument("settings", nargs="*", metavar="KEY=VALUE",
                              help="a workflow setting with a YAML value, as snakemake --config takes it")
    subs["paper"].add_argument("snakemake", nargs="*", metavar="SNAKEMAKE-ARGUMENT",
                               help="passed on to snakemake, e.g. -n, --config scale=quick (snakemake --help)")
    subs["completion"].add_argument("shell", choices=COMPLETION_SHELLS, help="the shell to complete in")
    return parser, subs


class PlanError(ValueError):
    """A plan argument that cannot be read; the message is one line naming it and the fix."""


def _merge(config: dict, overlay: dict) -> None:
    """Merge `overlay` into `config` as Snakemake merges a --configfile or --config: mappings key by key."""
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            _merge(config[key], value)
        else:
            config[key] = value


def _yaml(text: str, source: str, fix: str):
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise PlanError(f"{source} is not YAML{where}: {problem}; {fix}") from None


def _flow(value) -> str:
    """A value as one line of YAML (the example of a fix); a long one as the shape of a mapping or list."""
    text = yaml.safe_dump(value, default_flow_style=True, width=1 << 16).strip().removesuffix("...").strip()
    if len(text) <= 60:
        return text
    return "{key: value, ...}" if isinstance(value, dict) else "[a, b]"


def _configfile(path: str) -> dict:
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise PlanError(f"--configfile {path} cannot be read ({err.strerror or err}); give a YAML file of "
                        "settings such as config/config.yaml") from None
    loaded = _yaml(text, f"--configfile {path}", "fix the YAML at that place (a value holding ': ' or ' #' "
                   "needs quotes)")
    if not isinstance(loaded, dict):
        raise PlanError(f"--configfile {path} holds {type(loaded).__name__}, not a mapping of settings; write "
                        "it as config/config.yaml is, e.g. 'scale: quick'")
    return loaded


def plan_config(configfiles: list[str], settings: list[str]) -> dict:
    """config/config.yaml merged with each --configfile, then each KEY=VALUE (a YAML value), in Snakemake's
    order whatever the order on the command line; a KEY=VALUE with an unknown KEY or an unreadable value
    raises PlanError."""
    from dropout_lab.settings.config import CONFIG_DIR

    config = yaml.safe_load((Path(CONFIG_DIR) / "config.yaml").read_text())
    for path in configfiles:
        _merge(config, _configfile(path))
    for arg in settings:
        key, sep, value = arg.partition("=")
        if not sep or key not in config:
            raise PlanError(f"{arg!r} is not KEY=VALUE with KEY one of {sorted(config)}; usage: {PLAN_USAGE}")
        _merge(config, {key: _yaml(value, repr(arg), f"give a YAML value, quoted whole for the shell, e.g. "
                                   f"'{key}={_flow(config[key])}'")})
    return config


def plan(args: argparse.Namespace) -> int:
    """Print the plan of the workflow config in this folder, after the checks the workflow makes at the same
    point: a bad value is one line, exit 2."""
    from dropout_lab.planning import plan as planning
    from dropout_lab.planning import scales
    from dropout_lab.planning.checks import GridError

    try:
        config = plan_config(args.configfile, args.settings)
        scale_choice = scales.resolve_scale(config)  # scale: auto, as the workflow resolves it (common.smk)
        runs, _, packs, expected = planning.checked_grid(config, SCHEMA if SCHEMA.is_file() else None)
    except (PlanError, GridError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for line in planning.plan_report(config, runs, packs, expected, os.cpu_count() or 1, scale_choice):
        print(line)
    return 0


def paper(rest: list[str], parser: argparse.ArgumentParser) -> int:
    if any(arg in HELP_FLAGS for arg in rest):
        parser.print_help()
        return 0
    # Where Snakemake itself looks, the catalog's layout first (a root Snakefile may only include it).
    snakefile = next((path for path in (ROOT / "workflow" / "Snakefile", ROOT / "Snakefile") if path.is_file()), None)
    if snakefile is None:
        print("error: dropout-lab paper runs the workflow of a checkout (git clone the project); this "
              "installation has no Snakefile", file=sys.stderr)
        return 2
    return subprocess.call([str(Path(sys.executable).parent / "snakemake"), "-s", str(snakefile), "--cores", "all",
                            *rest])


def train(rest: list[str]) -> int:
    from dropout_lab.training.train import cli

    cli()  # Hydra reads sys.argv
    return 0


def pack(rest: list[str]) -> int:
    from dropout_lab.training.pack import cli

    cli()  # reads sys.argv
    return 0


def data(rest: list[str]) -> int:
    from dropout_lab.training.data import main as data_main

    return data_main(rest)  # argparse names sys.argv[0], dropout-lab data, in its usage


PASS_THROUGH = {"train": train, "pack": pack, "data": data}
COMPLETION_SHELLS = ("bash", "zsh")


def _words(parser: argparse.ArgumentParser) -> list[str]:
    """What may follow a (sub)command: its options and the choices of its positionals."""
    words = []
    for action in parser._actions:  # argparse's list of what the parser takes; it has no public accessor
        words += action.option_strings or [str(choice) for choice in action.choices or ()]
    return words


def _extra_words() -> dict[str, list[str]]:
    """Words of the commands whose arguments are not parsed here: the datasets and the plan's settings."""
    from dropout_lab.settings.config import CONFIG_DIR
    from dropout_lab.settings.datasets import SPECS

    keys = yaml.safe_load((Path(CONFIG_DIR) / "config.yaml").read_text())
    return {"data": [*sorted(SPECS), "--help"], "plan": [f"{key}=" for key in keys],
            "train": ["--help"], "pack": ["--help"]}


def completion_script(shell: str) -> str:
    """A completion function for `dropout-lab`, from the parser's own subcommands and options: bash, or zsh
    through its bash-completion layer (bashcompinit)."""
    parser, subs = build_parser()
    extra = _extra_words()
    cases = "\n".join(f"        {name}) words={shlex.quote(' '.join(_words(sub) + extra.get(name, [])))} ;;"
                      for name, sub in subs.items())
    top = " ".join([*subs, *(o for o in _words(parser) if o.startswith("--"))])
    # $2 is the word being completed and $3 the one before it, in bash and in zsh's bashcompinit alike; the
    # subcommand is read by offset, which counts from 0 in both shells where an index does not.
    function = f"""_dropout_lab() {{
    local cur="$2" prev="$3" command="${{COMP_WORDS[@]:1:1}}" words
    if [ "$COMP_CWORD" -eq 1 ]; then
        words={shlex.quote(top)}
    elif [ "$command" = plan ] && [ "$prev" = --configfile ]; then
        COMPREPLY=($(compgen -f -- "$cur"))
        return
    else
        case "$command" in
{cases}
        *) words="" ;;
        esac
    fi
    COMPREPLY=($(compgen -W "$words" -- "$cur"))
    # A setting (KEY=) goes on with its value, not a space.
    if [ "${{#COMPREPLY[@]}}" -eq 1 ] && [ "${{COMPREPLY[0]%=}}" != "${{COMPREPLY[0]}}" ]; then
        type compopt >/dev/null 2>&1 && compopt -o nospace 2>/dev/null
    fi
}}
complete -F _dropout_lab dropout-lab
"""
    if shell == "zsh":
        return f"autoload -U +X bashcompinit && bashcompinit\n{function}"
    return function


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser, subs = build_parser()
    if not argv:
        parser.print_help(sys.stderr)
        return 2
    command, rest = argv[0], argv[1:]
    if command not in subs:  # --help, --version, or a command that does not exist (one line)
        parser.parse_args(argv)
        parser.error(f"the COMMAND ({', '.join(subs)}) comes first, before {argv[0]!r}")
    # The wrapped tools read sys.argv and name it in their usage: as this command, not python -m ...
    sys.argv = [f"dropout-lab {command}", *rest]
    if command in PASS_THROUGH:
        return PASS_THROUGH[command](rest)
    if command == "paper":  # snakemake's options are snakemake's to parse
        return paper(rest, subs["paper"])
    # Options and settings in any order, as KEY=VALUE may come before or after --configfile.
    args = subs[command].parse_intermixed_args(rest)
    if command == "plan":
        return plan(args)
    print(completion_script(args.shell), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
