"""`python -m ptq` = the `ptq` command."""
import sys

from ptq.cli import main

sys.exit(main())
