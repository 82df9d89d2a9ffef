"""`python -m facectx.cli` (how torchrun and the air-gapped runner start it): the console script's main."""

import sys

from facectx.cli.main import main

sys.exit(main())
