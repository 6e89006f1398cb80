"""Imported first by every launch script: takes launch/ off sys.path.

`python launch/sft.py` puts launch/ first on sys.path, where sft.py shadows the `sft` package and trace.py the standard
library's `trace`. Installing the toolkit does not help (sys.path[0] is searched first) and renaming the scripts would
change the documented commands, so launch/ leaves sys.path before anything else is imported; the packages, `launch`
included, import from the installed checkout (`launch/setup.sh`).
"""

import sys
from pathlib import Path

_LAUNCH = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != _LAUNCH]
