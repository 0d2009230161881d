"""``python -m sleeve_common`` is the ``sleeve`` command."""

import sys

from sleeve_common.cli import main

sys.exit(main())
