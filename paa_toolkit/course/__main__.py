"""``python -m paa_toolkit.course`` (``make course``)."""

from .make_course import main

raise SystemExit(main())
