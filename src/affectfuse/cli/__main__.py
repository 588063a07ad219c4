import sys

from affectfuse.cli import main

sys.exit(main())
