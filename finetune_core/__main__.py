"""`python -m finetune_core ...`: see finetune_core/cli.py for the commands."""
from finetune_core.cli import main

raise SystemExit(main())
