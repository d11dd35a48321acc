"""Flag parsing of launch/train.py and launch/sweep.py: config mistakes as one-line errors.

ml_collections reports an unknown ``--config.KEY`` as an AttributeError and a missing config
file as an OSError, both as tracebacks. ``parse_flags`` turns them into one line naming the key or
the file, as absl reports a bad flag:

    app.run(main, flags_parser=cli.parse_flags)
"""

from __future__ import annotations

import contextlib
import re
import sys

from absl import app, flags

_NAME = re.compile(r"""['"]+([A-Za-z_][A-Za-z0-9_]*)""")
_SUGGESTION = re.compile(r'Did you mean "([A-Za-z0-9_]+)"')


def _overrides(argv: list[str]) -> list[tuple[str, str]]:
    """``(key path, the argument)`` of every ``--config.KEY=VALUE`` (or ``--config.KEY VALUE``)."""
    out = []
    for arg in argv:
        if arg.startswith("--config."):
            out.append((arg[len("--config.") :].split("=", 1)[0], arg))
    return out


def unknown_key_message(error: Exception, argv: list[str]) -> str:
    """The unknown key, the argument that named it and ml_collections' suggestion, in one line."""
    text = str(error).replace("\\'", "'").replace("\\n", "\n")
    name = _NAME.search(text)
    for path, arg in _overrides(argv):
        if name and path.split(".")[-1] == name.group(1):
            message = f"unknown config key '{path}' ({arg})"
            suggestion = _SUGGESTION.search(text)
            if suggestion:
                message += f"; did you mean '{'.'.join(path.split('.')[:-1] + [suggestion.group(1)])}'?"
            if path.startswith("sweep."):
                message += "; a new sweep axis goes in a config file (copy configs/sweep.py and add it there)"
            return message
    return f"unknown config key in a --config override: {text.strip()}"


TRAINING_MEMORY = "lower config key batch_size, eval_size or num_seeds, or spread the seeds over more devices (num_devices); checkpoints already written are kept"


def out_of_memory_message(error: Exception, remedy: str = TRAINING_MEMORY) -> str | None:
    """One line for XLA's RESOURCE_EXHAUSTED (a device allocation failed) and what sizes memory;
    None for any other error (re-raised as it is)."""
    text = str(error).strip()
    if "RESOURCE_EXHAUSTED" not in text:
        return None
    return f"out of device memory ({text.splitlines()[0][:300]}); {remedy}"


@contextlib.contextmanager
def exit_on_out_of_memory(remedy: str = TRAINING_MEMORY):
    """A device out of memory as one ``error:`` line (``out_of_memory_message``) and exit status 1."""
    try:
        yield
    except RuntimeError as e:  # jax.errors.JaxRuntimeError (jax is not imported here: --help stays fast)
        message = out_of_memory_message(e, remedy)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        sys.exit(1)


@contextlib.contextmanager
def exit_on_error():
    """What the training launchers report as one ``error:`` line and exit status 1, not a
    traceback: config, workdir, mesh and checkpoint errors (ValueError), divergence, OSError (a
    full disk), and a device out of memory."""
    try:
        with exit_on_out_of_memory():
            yield
    except (ValueError, FloatingPointError, OSError) as e:
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)


def _fail(message: str):
    sys.stderr.write(f"FATAL Flags parsing error: {message}\nPass --helpshort or --helpfull to see help on flags.\n")
    sys.exit(1)


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with config-file and config-key mistakes reported as absl reports a bad flag."""
    try:
        rest = app.parse_flags_with_usage(argv)
        if flags.FLAGS["config"].present:
            flags.FLAGS.config.keys()  # a config file that failed to load raises here, not while parsing
        return rest
    except AttributeError as e:
        _fail(unknown_key_message(e, argv))
    except OSError as e:
        _fail(f"cannot load the config file of --config={flags.FLAGS['config'].config_filename}: {str(e).splitlines()[-1].strip()}")
