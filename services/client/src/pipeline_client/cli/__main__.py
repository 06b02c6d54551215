"""``python -m pipeline_client.cli``: the ``pipelines`` command."""

import sys

from .commands import main

sys.exit(main())
