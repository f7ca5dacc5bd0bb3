import sys

from fptrace.cli import main

sys.exit(main())
