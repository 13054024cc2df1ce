"""`python -m trainer`: the command line."""
import sys

from trainer.cli import main

sys.exit(main())
