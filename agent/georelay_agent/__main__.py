"""`python -m georelay_agent` is the console script `georelay-agent`."""

import sys

from georelay_agent.cli import main

sys.exit(main())
