"""`python -m sandbox_images` is `python -m sandbox_images.build`."""

import sys

from sandbox_images.build import main

sys.exit(main())
