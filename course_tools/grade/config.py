"""The instructor's grading configuration: limits, hidden seeds, points.

A config file is JSON or TOML (TOML needs Python 3.11+, or the ``tomli`` package)::

    # grading.toml
    hidden_seeds = [1001, 1002]        # extra cases for every exercise, after its defaults
    cell_timeout = 120                 # seconds per cell          (--cell-timeout)
    timeout = 900                      # seconds per notebook      (--timeout)
    memory_mb = 4096                   # per kernel and sandbox    (--memory-mb)
    exercises_only = false             #                           (--exercises-only)

    [exercises.toy_forward]
    hidden_seeds = [2001, 2002, 2003]  # this exercise's own extra cases (added to the above)
    points = 2                         # instead of the exercise's registered points
    time_limit = 30                    # seconds for the whole check (default: the exercise's)

    [exercises."result:pentagon"]      # a result check (what several exercises make together)
    points = 2                         # its points (default: its registered points, 1)
    time_limit = 120                   # seconds for the whole run (default: its own, 60)

Every key is optional.  Command-line options override the file.  An exercise's cases are
its default seeds (``checks.EXERCISES[name].exercise.seeds``, the ones the notebook's own
check runs) followed by the hidden ones; a seed already among the defaults is not repeated.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

DEFAULTS = {"cell_timeout": 120.0, "timeout": 900.0, "memory_mb": 4096.0, "exercises_only": False}
_TOP_KEYS = {"hidden_seeds", "exercises", *DEFAULTS}
_EXERCISE_KEYS = {"hidden_seeds", "points", "time_limit"}
RESULT_PREFIX = "result:"  # the ids of result checks (checks.RESULT_CHECKS); kept here so that
                           # reading a config imports nothing heavy


class ConfigError(Exception):
    """The configuration is invalid; the message says where."""


@dataclass
class ExerciseConfig:
    hidden_seeds: tuple[int, ...] = ()
    points: float | None = None
    time_limit: float | None = None


@dataclass
class GradingConfig:
    hidden_seeds: tuple[int, ...] = ()
    exercises: dict[str, ExerciseConfig] = field(default_factory=dict)
    cell_timeout: float = DEFAULTS["cell_timeout"]
    timeout: float = DEFAULTS["timeout"]
    memory_mb: float = DEFAULTS["memory_mb"]
    exercises_only: bool = False

    def seeds(self, name: str, defaults) -> tuple[list[int], int]:
        """(all seeds for exercise ``name``, how many of them are hidden)."""
        seeds = [int(s) for s in defaults]
        extra = [*self.hidden_seeds, *self.exercises.get(name, ExerciseConfig()).hidden_seeds]
        hidden = [s for s in dict.fromkeys(extra) if s not in seeds]
        return seeds + hidden, len(hidden)

    def points(self, name: str, default: float) -> float:
        override = self.exercises.get(name, ExerciseConfig()).points
        return float(default if override is None else override)

    def time_limit(self, name: str) -> float | None:
        return self.exercises.get(name, ExerciseConfig()).time_limit

    def to_json(self) -> dict:
        return {
            "hidden_seeds": list(self.hidden_seeds),
            "exercises": {name: {"hidden_seeds": list(e.hidden_seeds), "points": e.points,
                                 "time_limit": e.time_limit} for name, e in self.exercises.items()},
            "cell_timeout": self.cell_timeout, "timeout": self.timeout,
            "memory_mb": self.memory_mb, "exercises_only": self.exercises_only,
        }

    @classmethod
    def from_json(cls, data: dict) -> "GradingConfig":
        return _from_mapping(data, "<job>")


def parse_seeds(text: str) -> tuple[int, ...]:
    """"1001,1002 1003" -> (1001, 1002, 1003)."""
    try:
        return tuple(int(part) for part in text.replace(",", " ").split())
    except ValueError:
        raise ConfigError(f"hidden seeds must be integers separated by commas, got {text!r}") from None


def _seed_list(value, where: str) -> tuple[int, ...]:
    if isinstance(value, str):
        return parse_seeds(value)
    if not isinstance(value, (list, tuple)) or not all(isinstance(s, int) and not isinstance(s, bool)
                                                       for s in value):
        raise ConfigError(f"{where}: hidden_seeds must be a list of integers")
    return tuple(value)


def _number(value, where: str, positive: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (positive and value <= 0):
        raise ConfigError(f"{where} must be a {'positive ' if positive else ''}number, got {value!r}")
    return float(value)


def _from_mapping(data: dict, source: str, known_exercises=None) -> GradingConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a table of settings")
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise ConfigError(f"{source}: unknown setting(s) {', '.join(sorted(unknown))}; "
                          f"known: {', '.join(sorted(_TOP_KEYS))}")
    config = GradingConfig()
    if "hidden_seeds" in data:
        config.hidden_seeds = _seed_list(data["hidden_seeds"], source)
    for key in ("cell_timeout", "timeout", "memory_mb"):
        if key in data:
            setattr(config, key, _number(data[key], f"{source}: {key}"))
    if "exercises_only" in data:
        if not isinstance(data["exercises_only"], bool):
            raise ConfigError(f"{source}: exercises_only must be true or false")
        config.exercises_only = data["exercises_only"]
    exercises = data.get("exercises", {})
    if not isinstance(exercises, dict):
        raise ConfigError(f"{source}: exercises must be a table of exercise names")
    for name, settings in exercises.items():
        where = f"{source}: exercises.{name}"
        if known_exercises is not None and name not in known_exercises:
            raise ConfigError(f"{where}: no such exercise; known: {', '.join(sorted(known_exercises))}")
        if not isinstance(settings, dict) or set(settings) - _EXERCISE_KEYS:
            raise ConfigError(f"{where}: expected a table with {', '.join(sorted(_EXERCISE_KEYS))}")
        if name.startswith(RESULT_PREFIX) and settings.get("hidden_seeds"):
            raise ConfigError(f"{where}: a result check has no cases to add seeds to; "
                              "set its points and time_limit only")
        config.exercises[name] = ExerciseConfig(
            hidden_seeds=_seed_list(settings.get("hidden_seeds", []), where),
            points=None if settings.get("points") is None else _number(settings["points"], f"{where}.points", positive=False),
            time_limit=None if settings.get("time_limit") is None else _number(settings["time_limit"], f"{where}.time_limit"),
        )
    return config


def load(path: Path, known_exercises=None) -> GradingConfig:
    """Read a JSON or TOML config file (by its suffix; JSON unless it ends in .toml)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"{path}: cannot read it ({error.strerror or error})") from None
    if path.suffix.lower() == ".toml":
        try:
            import tomllib
        except ImportError:  # Python 3.10
            try:
                import tomli as tomllib  # type: ignore[no-redef]
            except ImportError:
                raise ConfigError(f"{path}: reading TOML needs Python 3.11+ or `pip install tomli`; "
                                  "or write the config as JSON") from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"{path}: not valid TOML ({error})") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ConfigError(f"{path}: not valid JSON ({error})") from None
    return _from_mapping(data, str(path), known_exercises)
