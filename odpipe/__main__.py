import sys

from odpipe.cli import main

sys.exit(main())
