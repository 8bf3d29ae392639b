import sys

from starcompactor.pipeline.cli import main

sys.exit(main())
