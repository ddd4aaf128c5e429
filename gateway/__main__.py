"""``python -m gateway`` and the ``videoberatung`` console script."""

from __future__ import annotations

import sys

from gateway.main import main

if __name__ == "__main__":
    sys.exit(main())
