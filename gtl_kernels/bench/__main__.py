"""``python -m gtl_kernels.bench`` is ``gtl-bench``."""

from .cli import main

raise SystemExit(main())
