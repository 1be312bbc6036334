import sys

from trianflow.cli import main

sys.exit(main())
