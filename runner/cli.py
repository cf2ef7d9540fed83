"""invoke, the zoo's command line, as a user meets it: typed options, their defaults in the help,
one-line errors naming the command typed, a did-you-mean for a mistyped option or task, and
--debug, -q/--quiet and -v/--verbose on every task.

tasks.py declares its tasks with this module's `task` (invoke's, with `ZooTask` as the class):

- Each option has a `Value` (its kind: int, float, path, text, sizes, pairs, fraction; its
  choices; what it defaults to). The task's parameter keeps the default None ("not given": the
  tasks pass on only what was given), but invoke is told the kind: `--limit abc` is refused by
  invoke itself before any environment is created or process started (exit 2, one line:
  `error: invoke run: --limit: 'abc' is not an integer`), and a declared option's bounds and
  choices (zoo/stages/config.py) are checked there too. The help shows `--limit=INT`,
  `--time-budget=FLOAT`, `--out=PATH` and the default ("(default: 1000)") unless the help
  text already says it.
- Every task also takes --debug (DEBUG messages and the traceback of an unexpected error),
  -q/--quiet (warnings and errors only) and -v/--verbose (DEBUG messages): the task's child
  processes get them as ZOO_LOG_LEVEL (DEBUG, INFO, WARNING) and ZOO_DEBUG=1, the shared
  contract with `python -m zoo` (which takes the same three flags). invoke's own core flag
  -d/--debug (invoke's internal log) is the one given before the task name; after it, --debug is
  the task's.
- A task's error line names the command typed (`error: invoke run: ...`), an unexpected error is
  one line (with --debug: its traceback first), exit 2.

invoke 3.0.3 (requirements.txt pins it) derives an argument's kind from the parameter's default
and its help renders only str and int (invoke/parser/context.py ParserContext.help_for), and it
prints its parse errors as they are, exit 1 (invoke/program.py Program.run). `adapt()` wraps three
of its methods, and only for that version (`ADAPTED`): ParserContext.help_for (an argument's
value name, `value_name`), Parser.parse_argv and Program.parse_cleanup (a ParseError becomes the
zoo's one line with a did-you-mean, exit 2). Under another invoke version nothing is wrapped
and no typed kind is given: invoke's own help and messages, the values checked by the tasks and
`python -m zoo` as before."""
from __future__ import annotations

import argparse
import ast
import contextvars
import dataclasses
import functools
import inspect
import math
import os
import re
import traceback
from typing import Any, Callable

import invoke
from invoke import Exit, ParseError, Task
from invoke.exceptions import UnexpectedExit
from invoke.parser import Argument

from zoo.errors import closest

INVOKE_ADAPTED = "3.0.3"  # the invoke version whose help and parse errors adapt() wraps
LOG_FLAGS = ("debug", "quiet", "verbose")  # every task's (and `python -m zoo`'s) output flags
LOG_HELP = {  # the variables are set for the task and its child processes (the model process)
    "debug": "DEBUG messages and the traceback of an unexpected error (ZOO_LOG_LEVEL=DEBUG, ZOO_DEBUG=1)",
    "quiet": "warnings and errors only (ZOO_LOG_LEVEL=WARNING)",
    "verbose": "DEBUG messages too (ZOO_LOG_LEVEL=DEBUG)",
}
REQUIRED = dataclasses.MISSING


# --------------------------------------------------------------------------- values


class BadValue(ValueError):
    """A converter's refusal; its message completes "<flag> must be ...": "a fraction in [0, 1)"."""


def fraction(text: str) -> float:
    """A fraction in [0, 1) (compare's thresholds)."""
    value = float(text)
    if not 0 <= value < 1:  # NaN too
        raise BadValue("a fraction in [0, 1)")
    return value


def _sizes(text: str) -> str:
    """--batch-sizes: checked as zoo.stages.config does, passed on as typed."""
    from zoo.stages.config import batch_sizes
    try:
        batch_sizes(text)
    except argparse.ArgumentTypeError:
        raise BadValue("comma-separated positive integers") from None
    return text


# kind -> (converter of the typed text, value name in the help, "is not <what>" of a bad text)
KINDS: dict[str, tuple[Callable[[str], Any], str, str]] = {
    "text": (str, "STRING", "a string"),
    "int": (int, "INT", "an integer"),
    "float": (float, "FLOAT", "a number"),
    "fraction": (fraction, "FLOAT", "a number"),
    "path": (str, "PATH", "a path"),
    "sizes": (_sizes, "INTS", "a list of integers"),
    "pairs": (str, "KEY=VALUE", "KEY=VALUE"),  # repeatable: invoke's list kind, the zoo checks each
}


@dataclasses.dataclass(frozen=True)
class Value:
    """How a task option is typed and shown. `default`: what the task does when it is not given
    (shown in the help; the parameter itself defaults to None); `option`: the declared run
    option (zoo.stages.config.Option) whose bounds and choices are checked; `shows_default`
    False: the help adds no default (an old name, whose help points to the new one)."""
    kind: str = "text"
    default: Any = None
    choices: tuple = ()
    metavar: str | None = None
    option: Any = None
    shows_default: bool = True

    @classmethod
    def of(cls, option, shows_default: bool = True) -> "Value":
        """The Value of a declared run option."""
        kind = option.kind if option.kind in KINDS else "text"
        default = option.default() if callable(option.default) else option.default
        return cls(kind, default, tuple(option.choices), option.metavar, option, shows_default)

    @property
    def value_name(self) -> str:
        if self.metavar:
            return self.metavar
        return "CHOICE" if self.choices else KINDS[self.kind][1]


def shown_default(default: Any) -> str | None:
    """The default as the help shows it (None: nothing to show)."""
    if default is REQUIRED:
        return None
    if default is None or default is False or default in ({}, [], ()):
        return None
    if isinstance(default, (list, tuple)):
        return ",".join(map(str, default))
    return str(default)


def help_text(text: str | None, value: Value | None, default: Any = None, required: bool = False) -> str:
    """The help of an option: the declared text, its choices when the text does not name them
    all, and its default ("(default: 1000)") unless the text already says it, or "(required)"."""
    text = text or ""
    value = value or Value()
    if not value.shows_default:
        return text
    if required:
        value = dataclasses.replace(value, default=REQUIRED)
    words = set(re.findall(r"[\w.+-]+", text))
    added = []
    if value.choices and not all(str(c) in words for c in value.choices):
        added.append(f"one of: {', '.join(map(str, value.choices))}")
    if value.default is REQUIRED:
        added += [] if "required" in text.lower() else ["required"]
    else:
        shown = shown_default(value.default if value.default is not None else default)
        if shown is not None and "default" not in text.lower():
            added.append(f"default: {shown}")
    return f"{text} ({'; '.join(added)})" if added else text


def _did_you_mean(word: str, candidates) -> str:
    """' (did you mean X?)' for the closest candidate (difflib), else ''."""
    close = closest(word, candidates)
    return f" (did you mean {close}?)" if close else ""


class Kind:
    """invoke's `kind` of one typed argument: converts the text, or refuses it in one line naming
    the command and the flag (raised as invoke's Exit, code 2: invoke prints it and exits)."""

    def __init__(self, command: str, flag: str, value: Value):
        self.command, self.flag, self.value = command, flag, value
        self.__name__ = value.value_name  # invoke's Argument.__repr__ names its kind

    def refuse(self, message: str):
        raise Exit(f"error: invoke {self.command}: {message}", code=2)

    def __call__(self, text):
        convert, _, what = KINDS[self.value.kind]
        try:
            value = convert(text)
        except BadValue as exc:
            self.refuse(f"{self.flag} must be {exc}, got {text!r}")
        except (TypeError, ValueError):
            self.refuse(f"{self.flag}: {text!r} is not {what}")
        if self.value.choices and value not in self.value.choices:
            shown = ", ".join(map(str, self.value.choices))
            self.refuse(f"{self.flag}: {text!r} is not one of {shown}{_did_you_mean(str(text), self.value.choices)}")
        if self.value.kind == "float" and math.isnan(value) and self.value.option is None:
            self.refuse(f"{self.flag}: {text!r} is not {what}")
        problem = self.value.option.problem(value) if self.value.option is not None else None
        if problem:
            self.refuse(problem)
        return value


# --------------------------------------------------------------------------- the running task


@dataclasses.dataclass(frozen=True)
class Current:
    """The task running now: its command name and output flags."""
    command: str
    debug: bool = False
    quiet: bool = False
    verbose: bool = False

    @property
    def log_level(self) -> str | None:
        """ZOO_LOG_LEVEL for the flags given (None: none given, the environment's or INFO)."""
        return "WARNING" if self.quiet else "DEBUG" if (self.verbose or self.debug) else None

    def env(self) -> dict[str, str]:
        """The contract's variables for the task's child processes."""
        out = {"ZOO_LOG_LEVEL": self.log_level} if self.log_level else {}
        return {**out, **({"ZOO_DEBUG": "1"} if self.debug else {})}

    def zoo_flags(self) -> list[str]:
        """The same flags as `python -m zoo` words (a process that does not inherit the
        environment: the container of --docker)."""
        return [*(["--debug"] if self.debug else []), *(["-q"] if self.quiet else []),
                *(["-v"] if self.verbose else [])]


_current: contextvars.ContextVar[Current | None] = contextvars.ContextVar("zoo_task", default=None)


def current() -> Current:
    """The task running now (a bare Current("?") outside one: a task body called directly)."""
    return _current.get() or Current("?")


def prog() -> str:
    """The command the user typed, as error lines name it: `invoke run`."""
    command = current().command
    return "invoke" if command == "?" else f"invoke {command}"


def named(message: str, command: str) -> str:
    """An `error: ...` line naming the command: `error: invoke run: ...` (other text as it is)."""
    if message.startswith("error: ") and not message.startswith("error: invoke"):
        return f"error: invoke {command}: {message[len('error: '):]}"
    return message


class ZooTask(Task):
    """invoke's Task with typed options (`values`: parameter name -> Value or kind name), each
    option's default in its help, and the output flags --debug, -q/--quiet, -v/--verbose.
    `log_env` False: the flags are not exported to the children (the task reads them itself,
    `current()`); `log_help`: their help, when the task gives them another meaning."""

    def __init__(self, body, values: dict | None = None, log_env: bool = True, log_help: dict | None = None,
                 **kwargs):
        super().__init__(body, **kwargs)
        self.values = {name: Value(v) if isinstance(v, str) else v for name, v in (values or {}).items()}
        self.log_env = log_env
        self.log_help = {**LOG_HELP, **(log_help or {})}
        clash = set(LOG_FLAGS) & set(inspect.signature(body).parameters)
        if clash:
            raise TypeError(f"task {self.name}: parameter(s) {sorted(clash)} are every task's output flags")

    @property
    def command(self) -> str:
        return self.name.replace("_", "-")

    def get_arguments(self, ignore_unknown_help=None) -> list[Argument]:
        saved = dict(self.help)  # invoke pops each help it uses: keep get_arguments repeatable
        try:
            args = super().get_arguments(ignore_unknown_help=ignore_unknown_help)
        finally:
            self.help = saved
        defaults = {p.name: p.default for p in self.argspec(self.body).parameters.values()}
        for arg in args:
            value = self.values.get(arg.name)
            default = defaults.get(arg.name)
            arg.help = help_text(arg.help, value, None if default is inspect.Parameter.empty else default,
                                 required=arg.positional)
            if value is None or not ADAPTED:
                continue
            arg.value_name = value.value_name
            if arg.kind is not list and arg.kind is not bool:  # a repeatable or a switch keeps its kind
                arg.kind = Kind(self.command, "--" + arg.names[0], value)
        for name in LOG_FLAGS:
            names = (name,) if name == "debug" else (name, name[0])
            args.append(Argument(names=names, kind=bool, default=False, help=self.log_help[name]))
        return args

    def __call__(self, *args, **kwargs):
        flags = {name: bool(kwargs.pop(name, False)) for name in LOG_FLAGS}
        here = Current(self.command, **flags)
        if here.quiet and (here.verbose or here.debug):
            raise Exit(f"error: invoke {self.command}: -q/--quiet excludes -v/--verbose and --debug", code=2)
        token = _current.set(here)
        env = here.env() if self.log_env else {}
        saved = {key: os.environ.get(key) for key in env}
        os.environ.update(env)
        try:
            return super().__call__(*args, **kwargs)
        except Exit as exc:
            if exc.message and isinstance(exc.message, str):
                raise Exit(named(exc.message, self.command), code=exc.code) from None
            raise
        except (ParseError, UnexpectedExit):
            raise
        except Exception as exc:  # the last line of defence: one line, the traceback only with --debug
            if here.debug:
                traceback.print_exc()
            text = " ".join(str(exc).split())[:500] or type(exc).__name__
            raise Exit(f"error: invoke {self.command}: {type(exc).__name__}: {text}"
                       + ("" if here.debug else " (--debug shows the traceback)"), code=2) from None
        finally:
            for key, old in saved.items():
                if old is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = old
            _current.reset(token)


def task(*args, **kwargs):
    """invoke's @task with ZooTask (and no automatic short flags: -q and -v are every task's)."""
    kwargs.setdefault("klass", ZooTask)
    kwargs.setdefault("auto_shortflags", False)
    return invoke.task(*args, **kwargs)


# --------------------------------------------------------------------------- invoke's parse errors


def usage_error(error: ParseError, tasks) -> str:
    """invoke's ParseError as the zoo's one line: the command, what is wrong, a did-you-mean
    (`tasks`: the task names)."""
    message = str(error)
    context = getattr(error, "context", None)
    command = getattr(context, "name", None)
    where = f"invoke {command}" if command else "invoke"
    unknown = re.fullmatch(r"No idea what (.+) is!", message)
    if unknown:
        try:
            token = str(ast.literal_eval(unknown[1]))
        except (ValueError, SyntaxError):
            token = unknown[1]
        if token.startswith("-"):
            flags = [*context.flags, *context.inverse_flags] if context is not None else []
            known = f" (invoke --help {command} lists them)" if command else ""
            return f"error: {where}: no option {token}{_did_you_mean(token, flags) or known}"
        names = [t for t in tasks if t]
        return f"error: invoke: no task {token!r}{_did_you_mean(token, names) or ' (invoke --list shows them)'}"
    needs = re.fullmatch(r"Flag <\w+: ([\w-]+).*> needed value and was not given one!", message)
    if needs:
        return f"error: {where}: --{needs[1].replace('_', '-')} needs a value"
    missing = re.fullmatch(r"'(.+)' did not receive required positional arguments: (.+)", message)
    if missing:
        names = ", ".join(n.strip("'").upper() for n in missing[2].split(", "))
        return f"error: invoke {missing[1]}: missing {names} (invoke --help {missing[1]})"
    return f"error: {where}: {' '.join(message.split())}"


def _as_usage_error(method, tasks_of):
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except ParseError as exc:
            raise Exit(usage_error(exc, tasks_of(self)), code=2) from None
    wrapper.__zoo_adapted__ = True
    return wrapper


def _help_for(method):
    @functools.wraps(method)
    def wrapper(self, flag):
        spec, text = method(self, flag)
        arg = self.flags[flag]
        name = getattr(arg, "value_name", None)
        if name is None:
            return spec, text
        shown = []
        for each in self.names_for(flag):
            if len(each.strip("-")) == 1:
                shown.append(f"{each} [{name}]" if arg.optional else f"{each} {name}")
            else:
                shown.append(f"{each}[={name}]" if arg.optional else f"{each}={name}")
        return ", ".join(sorted(shown, key=len)), text
    wrapper.__zoo_adapted__ = True
    return wrapper


def adapt() -> bool:
    """Wrap invoke's help rendering and parse-error reporting (invoke 3.0.3 only; once)."""
    if getattr(invoke, "__version__", None) != INVOKE_ADAPTED:
        return False
    from invoke.parser import Parser, ParserContext
    from invoke.program import Program
    def program_tasks(program) -> list:
        return list(getattr(getattr(program, "parser", None), "contexts", ()))

    targets = ((ParserContext, "help_for", _help_for),
               (Parser, "parse_argv", lambda m: _as_usage_error(m, lambda parser: list(parser.contexts))),
               (Program, "parse_cleanup", lambda m: _as_usage_error(m, program_tasks)))
    if not all(callable(getattr(cls, name, None)) for cls, name, _ in targets):
        return False
    for cls, name, wrap in targets:
        if not getattr(getattr(cls, name), "__zoo_adapted__", False):
            setattr(cls, name, wrap(getattr(cls, name)))
    return True


ADAPTED = adapt()
