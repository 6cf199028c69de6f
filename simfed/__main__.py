"""`python -m simfed ...` — the same as the `simfed` command."""
import sys

from simfed.cli import main

sys.exit(main())
