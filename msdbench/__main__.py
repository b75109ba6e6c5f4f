import sys

from msdbench.cli import main

sys.exit(main())
