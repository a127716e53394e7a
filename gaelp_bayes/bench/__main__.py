"""``python -m gaelp_bayes.bench ...``: the same as ``gaelp-bayes bench ...``."""

import sys

from . import main

sys.exit(main())
