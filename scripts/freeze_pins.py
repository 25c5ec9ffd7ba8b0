"""Print requirements/constraints.txt for this environment: every installed distribution at
its exact version, each pin limited to this Python's minor version (a release proven on 3.11
may not exist for 3.10).  Left out: the course itself, pip and setuptools, and torch with its
CUDA companions (`make` installs torch with TORCH_SPEC; the CPU wheel and a GPU build differ).

    python scripts/freeze_pins.py > requirements/constraints.txt     (`make pins` does this)
"""

from __future__ import annotations

import datetime
import importlib.metadata
import re
import sys

SKIP = re.compile(r"^(superposition-course|pip|setuptools|wheel|torch|triton|nvidia-.*)$")


def pins() -> list[str]:
    versions = {}
    for dist in importlib.metadata.distributions():
        name = re.sub(r"[-_.]+", "-", dist.metadata["Name"]).lower()
        if not SKIP.match(name):
            versions[name] = dist.version
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    return [f'{name}=={version} ; python_version == "{python}"' for name, version in sorted(versions.items())]


def main() -> int:
    print("# The exact versions `make test` was last proven with, for `make lab`, `make test` and binder/.")
    print(f"# Written by `make pins` (scripts/freeze_pins.py) on {datetime.date.today()}, Python "
          f"{sys.version_info.major}.{sys.version_info.minor}; other Pythons get the newest releases that")
    print("# pyproject.toml's lower bounds admit.  torch is not pinned here (TORCH_SPEC picks it).")
    print("\n".join(pins()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
