"""`python -m buildgen`."""

import sys

from .cli import main

sys.exit(main())
