"""Print the README's Nth fenced ``bash`` block (1 = install + first run, 2 = the test command), as written.

``.ci/run`` runs blocks 1 and 2 through this script, so CI executes the README's commands exactly;
``tests/test_first_use.py`` checks the blocks say what CI expects. Standard library only (it runs before
the install). Usage: ``python3 scripts/readme_commands.py 1``.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def bash_blocks(text: str) -> list[str]:
    """The contents of every fenced ``bash`` block, in order, each stripped."""
    return [m.group(1).strip() for m in re.finditer(r"^```bash\n(.*?)^```", text, flags=re.M | re.S)]


def main(argv: list[str] | None = None) -> int:
    n = int((argv if argv is not None else sys.argv[1:])[0])
    print(bash_blocks(README.read_text(encoding="utf-8"))[n - 1])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
